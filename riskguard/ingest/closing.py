"""Stopping an aiokafka consumer whatever the broker does, without a stray cancellation.

aiokafka's ``AIOKafkaConsumer.stop()`` (0.11 to 0.14 at least; aio-libs/aiokafka
issue 647) can raise :class:`asyncio.CancelledError` although nobody cancelled the
caller: its fetcher's ``close()`` cancels each fetch request still in flight and
awaits it, and a request that failed (the broker is down: ``NodeNotReadyError``,
a refused connection) sleeps out its retry backoff *inside* its error handler, where
the cancellation is not caught; the awaited task ends cancelled and ``close()``
re-raises that. The consumer is then marked closed with its network client still open,
and the caller's own stop is aborted half-way (``riskguard run`` printed two
tracebacks and aiokafka's ``Unclosed`` complaints, and exited 1 at once).

:func:`stop_consumer` tells that stray cancellation from a real one (the caller's
task asked to cancel, e.g. by ``asyncio.wait_for`` at ``runtime.stop_timeout_s``),
finishes closing what aiokafka left open, and lets a real one through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from riskguard import log

_log = log.get("sidecar")


async def stop_consumer(consumer: Any) -> None:
    """``await consumer.stop()`` for an aiokafka ``AIOKafkaConsumer``, tolerating the
    :class:`asyncio.CancelledError` its fetcher leaks (see the module docstring).

    After such a leak the fetch requests still in flight are cancelled and awaited, and
    the consumer's connections closed. A cancellation of the calling task propagates,
    as does any other error of ``stop()`` (aiokafka raises none when the broker is
    down)."""
    task = asyncio.current_task()
    asked = task.cancelling() if task is not None else 0
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if task is None or task.cancelling() > asked:
            raise  # the caller was cancelled: a real cancellation
        _log.debug("aiokafka's consumer stop leaked a cancellation; closing the rest")
        await _close_what_is_left(consumer)


async def _close_what_is_left(consumer: Any) -> None:
    """What ``AIOKafkaConsumer.stop()`` skipped when its fetcher's ``close()`` raised:
    the other fetch requests, then the client (its connections). Private aiokafka
    attributes, read defensively: none missing means nothing left to close."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        tasks = [getattr(fetcher, "_fetch_task", None), *getattr(fetcher, "_pending_tasks", ())]
        running = [t for t in tasks if isinstance(t, asyncio.Task) and not t.done()]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    client = getattr(consumer, "_client", None)
    if client is not None:
        await client.close()
