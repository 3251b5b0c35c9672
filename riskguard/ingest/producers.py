"""riskguard's Kafka producers, built again when aiokafka's sender dies.

aiokafka 0.14's sender routine ends for good on some produce errors of an idempotent
producer (``OutOfOrderSequenceNumber``, ``ProducerFenced``): it re-raises them, its
done-callback stores the error in the producer's accumulator, and from then on every
``send`` raises it at once. Nothing recovers such a producer. A riskguard holding one
publishes no heartbeat, no halt and no gate data again: its broker watch calls the
broker lost, gates fail closed and stay so until a restart (the fresh-user verifier saw
one such start on Apache Kafka, 46 s without a heartbeat).

:class:`RenewingProducer` is the producer riskguard's parts send through (control
topic, gate data, dead letters, aggregation records). A send that fails with one of
:data:`FATAL` builds a new ``AIOKafkaProducer`` with the same options in its place (the
broken one is closed in the background) and re-raises: the caller's own retry (pending
transitions, the next heartbeat, the next aggregation interval) goes out through the
new one. Each rebuild is logged at error and counted
(``riskguard_producer_renewals_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, ProducerFenced

from riskguard import log
from riskguard.metrics import Metrics

FATAL: tuple[type[KafkaError], ...] = (OutOfOrderSequenceNumber, ProducerFenced)
"""Errors after which aiokafka's producer never sends again."""
CLOSE_TIMEOUT_S = 3.0
"""A broken producer's close gets at most this long (in the background)."""


class RenewingProducer:
    """An ``AIOKafkaProducer`` (built from ``options``) that is replaced by a new one
    when a send fails with one of :data:`FATAL`. Offers what riskguard's parts use:
    :meth:`start`, :meth:`send`, :meth:`send_and_wait`, :meth:`stop`."""

    def __init__(self, metrics: Metrics | None = None, **options: Any) -> None:
        self._options = options
        self._producer = AIOKafkaProducer(**options)
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.renewals = 0
        """Times the producer was built again after a fatal error."""
        self._log = log.get("control")

    async def start(self) -> None:
        """Connect (aiokafka's ``start``; raises its ``KafkaError`` as it does)."""
        await self._producer.start()

    async def send(self, topic: str, value: bytes | None = None, **kwargs: Any) -> Any:
        """aiokafka's ``send``: the future of the record's acknowledgement. A fatal error
        rebuilds the producer, then is raised (send again to use the new one)."""
        producer = self._producer
        try:
            return await producer.send(topic, value, **kwargs)
        except FATAL as exc:
            await self._renew(producer, exc)
            raise

    async def send_and_wait(self, topic: str, value: bytes | None = None, **kwargs: Any) -> Any:
        """:meth:`send`, then wait for the acknowledgement (its ``RecordMetadata``). A
        fatal error, at the send or in the acknowledgement, rebuilds the producer."""
        producer = self._producer
        future = await self.send(topic, value, **kwargs)
        try:
            return await future
        except FATAL as exc:
            await self._renew(producer, exc)
            raise

    async def stop(self) -> None:
        """Close the producer (and finish closing broken ones, bounded)."""
        await self._producer.stop()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, CLOSE_TIMEOUT_S)

    async def _renew(self, broken: AIOKafkaProducer, exc: BaseException) -> None:
        """Replace ``broken`` (unless another send did already): a new producer, started;
        the broken one closed in the background. A new one that cannot start is
        dropped; the next fatal send tries again."""
        async with self._lock:
            if self._producer is not broken:
                return  # renewed by a send that failed at the same time
            fresh = AIOKafkaProducer(**self._options)
            try:
                await fresh.start()
            except (KafkaError, OSError, TimeoutError) as start_exc:
                self._log.error(
                    "producer broken, and a new one could not start; tried again at the next send",
                    error=repr(exc),
                    start_error=repr(start_exc),
                )
                with contextlib.suppress(Exception):
                    await fresh.stop()
                return
            self._producer = fresh
            self.renewals += 1
            if self._metrics is not None:
                self._metrics.producer_renewals.inc()
            self._log.error(
                "producer broken by a fatal send error: a new one replaces it",
                error=repr(exc),
                client_id=self._options.get("client_id"),
            )
            task = asyncio.create_task(self._close(broken))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)


Producer = AIOKafkaProducer | RenewingProducer
"""What riskguard's parts send through (a plain aiokafka producer in tests and tools)."""
