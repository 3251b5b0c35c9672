"""The sidecar's background tasks, watched: one that fails stops riskguard, loudly.

The consume loop, the clock tick, heartbeats, the broker watch and the rest run as
asyncio tasks for the life of the process. Each catches what it expects (a broker
error, a bad event); anything else is a bug, and a task that died of one would leave
riskguard up but blind: heartbeats still going out while no event is applied, and the
readiness checks blaming the broker. :class:`TaskWatch` turns that into one critical
log line naming the task and the error (with its traceback) and a stop request, so
that ``riskguard run`` ends with exit code 1 and its supervisor (systemd, Kubernetes)
restarts it: a restart rebuilds the state from the snapshot and the input, and gates
fail closed on the silence in between, as for any crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from riskguard import log


class TaskWatch:
    """Starts and watches background tasks; sets ``stop`` when one fails.

    ``running`` holds the tasks :meth:`start` made (the caller cancels them at its stop);
    ``failed`` lists ``"<task name>: <error repr>"`` of every task that ended with an
    exception other than :class:`asyncio.CancelledError`.
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.running: list[asyncio.Task[None]] = []
        self.failed: list[str] = []
        self._log = log.get("sidecar")

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task called ``name``, watched (:meth:`adopt`), in :attr:`running`."""
        task = self.adopt(asyncio.create_task(coro, name=name))
        self.running.append(task)
        return task

    def adopt(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Watch ``task``: if it fails, log it and request the stop. Returns it."""
        task.add_done_callback(self._ended)
        return task

    async def cancel(self) -> None:
        """Cancel the tasks :meth:`start` made and wait for them to end.

        A task still running half a second after its cancel is cancelled again: a
        library call may swallow a cancellation (an aiokafka commit cancelled inside
        ``wait_for`` once did), and the task would sleep on, holding up the stop."""
        pending = set(self.running)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self.failed.append(f"{task.get_name()}: {exc!r}")
        self._log.critical(
            "background task failed: riskguard stops so that a restart rebuilds it",
            task=task.get_name(),
            error=repr(exc),
            exc_info=exc,
        )
        self.stop.set()
