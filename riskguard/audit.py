"""Append-only audit log: one JSON object per line, fsynced, written off the hot path.

Every transition (automatic, manual, alert) and every operator action lands here
with its evidence. A record is ``{"kind", "logged_ns", "logged_at", "record"}``:
``logged_ns`` is ns since the epoch, ``logged_at`` the same instant as ISO 8601 in
UTC with milliseconds (``2026-11-27T14:03:07.412Z``). ``riskguard audit FILE`` prints
it (gzip-compressed logs too, e.g. rotated ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from riskguard import durable, log

_encoder = msgspec.json.Encoder()
_GZIP_MAGIC = b"\x1f\x8b"


def utc_ms(ns: int, sep: str = "T", zone: str = "Z") -> str:
    """``ns`` since the epoch as UTC with milliseconds: ``2026-11-27T14:03:07.412Z``
    (``sep`` between date and time, ``zone`` after it, e.g. ``" "`` and ``" UTC"``)."""
    when = datetime.fromtimestamp(ns // 1_000_000 / 1000, tz=UTC)
    return when.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f")[:-3] + zone


class AuditFormatError(ValueError):
    """A file, or one of its lines, that is not a riskguard audit log; the message says
    which line and why."""


class AuditLog:
    """Queue records and write them in order from a background task."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._log = log.get("audit")
        self.written = 0
        self._writing = False  # a batch is being written (in a thread)

    def record(self, kind: str, body: Any) -> None:
        """Queue one record (never blocks the caller)."""
        now = time.time_ns()
        self._queue.put_nowait(
            {
                "kind": kind,
                "logged_ns": now,
                "logged_at": utc_ms(now),
                "record": msgspec.to_builtins(body),
            }
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
            self._writing = True
            try:
                await asyncio.to_thread(self._write, batch)
                self.written += len(batch)
            except OSError as exc:  # keep the records: retry on the next wake-up
                self._log.error("audit write failed", path=str(self.path), error=str(exc))
                for item in batch:
                    self._queue.put_nowait(item)
                await asyncio.sleep(1.0)
            finally:
                self._writing = False

    def _write(self, batch: list[dict[str, Any]]) -> None:
        durable.append(self.path, b"".join(_encoder.encode(item) + b"\n" for item in batch))

    async def stop(self) -> None:
        """Write everything queued, then stop."""
        if self._task is None:
            return
        while not self._queue.empty() or self._writing:  # a batch taken is in a thread
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def read(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of an audit log, oldest first (unreadable lines are skipped).

    Raises :class:`OSError` when the file cannot be opened, and :class:`AuditFormatError`
    when it is not an audit log (see :func:`lines`).
    """
    for _number, rec in lines(path):
        if rec is not None:
            yield rec


_JSON_NAMES = {list: "array", str: "string", int: "number", float: "number"}


def _why_not(rec: Any) -> str:
    """Why a decoded line is not an audit record ("" when it is one)."""
    if isinstance(rec, bool) or rec is None:
        return f"JSON {'null' if rec is None else str(rec).lower()}, not an object"
    if not isinstance(rec, dict):
        return f"a JSON {_JSON_NAMES.get(type(rec), 'value')}, not an object"
    missing = [k for k in ("kind", "logged_ns", "record") if k not in rec]
    if missing:
        return f"an object without {', '.join(missing)}"
    if not isinstance(rec["kind"], str) or not isinstance(rec["logged_ns"], int):
        return "kind must be a string and logged_ns an integer"
    return ""


def lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line number, record)`` for each line of an audit log (gzip-compressed or not);
    the record is None for a line that is not JSON (a torn write after a crash).

    Raises :class:`OSError` when the file cannot be read, and :class:`AuditFormatError`
    when the first line is not an audit record (not an audit log at all) or a later
    line is JSON of another shape.
    """
    p = Path(path)
    with p.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener: Any = gzip.open if compressed else open
    with opener(p, "rb") as f:
        number = 0
        first = True
        try:
            for line in f:
                number += 1
                if not line.strip():
                    continue
                try:
                    rec = msgspec.json.decode(line)
                    why = _why_not(rec)
                except msgspec.DecodeError:
                    rec, why = None, "not JSON"
                if first and why:
                    raise AuditFormatError(
                        f"{p} is not a riskguard audit log (line {number} is {why})"
                    )
                first = False
                if rec is None:
                    yield number, None
                    continue
                if why:
                    raise AuditFormatError(f"{p} line {number} is not an audit record ({why})")
                yield number, rec
        except (EOFError, gzip.BadGzipFile) as exc:  # a truncated or corrupt gzip
            raise AuditFormatError(f"{p}: unreadable gzip after line {number}: {exc}") from exc
