"""Append-only audit log: one JSON object per line, fsynced, written off the hot path.

Every transition (automatic, manual, alert) and every operator action lands here
with its evidence. ``riskguard audit FILE`` prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from riskguard import durable, log

_encoder = msgspec.json.Encoder()


class AuditLog:
    """Queue records and write them in order from a background task."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._log = log.get("audit")
        self.written = 0

    def record(self, kind: str, body: Any) -> None:
        """Queue one record (never blocks the caller)."""
        self._queue.put_nowait(
            {"kind": kind, "logged_ns": time.time_ns(), "record": msgspec.to_builtins(body)}
        )

    async def start(self) -> None:
        """Start the writer task (creates the file's folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._writer(), name="audit-writer")

    async def _writer(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(self._write, batch)
                self.written += len(batch)
            except OSError as exc:  # keep the records: retry on the next wake-up
                self._log.error("audit write failed", path=str(self.path), error=str(exc))
                for item in batch:
                    self._queue.put_nowait(item)
                await asyncio.sleep(1.0)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        durable.append(self.path, b"".join(_encoder.encode(item) + b"\n" for item in batch))

    async def stop(self) -> None:
        """Write everything queued, then stop."""
        if self._task is None:
            return
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def read(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of an audit log, oldest first (unreadable lines are skipped)."""
    with Path(path).open("rb") as f:
        for line in f:
            try:
                yield msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
