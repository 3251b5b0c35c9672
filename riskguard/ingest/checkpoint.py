"""Checkpointing: the input offsets the engine's state reflects, commits, snapshots.

``applied`` holds, per input partition, the next offset to apply. It advances only
after a batch's events are in the engine's state, so a commit or a snapshot taken
during a batch's awaits never claims events the state does not reflect yet.

Snapshots (engine state plus ``applied``) are written every
``runtime.snapshot_interval_s``, strictly between batches, by a forked child
(:mod:`riskguard.ingest.forked`: the event loop pauses for the fork only), and once more
on a graceful stop (copied, then written from a thread); the newest valid one is loaded
on start.

In group mode (:mod:`riskguard.ingest.partitions`) each owned partition's engine is
checkpointed on its own, with its partition's offset, into
``<scale.checkpoint_dir>/<topic>.<partition>/``: the checkpoint a member that gains the
partition restores (:mod:`riskguard.ingest.group`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from riskguard import log
from riskguard.engine import Engine
from riskguard.ingest.forked import (
    CAN_FORK,
    SnapshotWriterError,
    Unit,
    Writer,
    fork_writers,
    safe_to_fork,
    wait_writer,
)
from riskguard.ingest.partitions import PartitionEngines
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings, session_start_ns
from riskguard.snapshot import Frozen, SnapshotStore, chunks, freeze, restore
from riskguard.vocabulary import Transition

HAND_OVER_WAIT_S = 5.0
"""A rebalance waits at most this long (s) for the checkpoints of the partitions a member
gives up; a write past it lands later (the next owner meanwhile restores an older one
and reads more again)."""


class Checkpoints:
    """Applied and committed offsets of the input, and snapshots of one engine."""

    def __init__(self, runtime: RuntimeSettings, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.store = SnapshotStore(runtime.snapshot_path, keep=runtime.snapshot_keep)
        self.interval_s = runtime.snapshot_interval_s
        self.session_start_ns = session_start_ns(runtime.start_of_day)
        """The session snapshots are of (``runtime.start_of_day``, ns; None: unset)."""
        self._applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._log = log.get("sidecar")
        self.last_mono = time.monotonic()
        self.last_path = ""
        self.last_events = -1
        self.loaded_from = ""
        self.resolves: list[Transition] = []
        """Resolves of the alerts of rules removed or changed since the loaded snapshot
        (:func:`riskguard.snapshot.restore`), to send once standing states are in."""
        self.load_seconds = 0.0
        self._writing: asyncio.Task[Any] | None = None
        self._writer: Writer | None = None
        """The forked writer in flight, if any (:meth:`abandon_writer` ends it)."""
        self._abandoned = False
        self._superseded = False
        self._in_flight: dict[str, int] = {}
        """``topic/partition`` -> offset of the snapshots being written."""
        self._checkpointed: dict[str, int] = {}
        """``topic/partition`` -> offset of its latest snapshot written here."""
        self._commit_failures = log.RepeatLimiter()
        self.fork = CAN_FORK
        """Whether periodic snapshots are written by a forked child (else copied in the
        event loop and written from a thread)."""
        self.failing = 0
        """Snapshots not written since the last one written (or since the start)."""
        self.last_error: str | None = None
        self.last_pause_s = 0.0
        self.last_write_s = 0.0
        self.last_bytes = 0
        self.partitions: PartitionEngines | None = None
        """Group mode: the member's engines, checkpointed one per partition."""
        self.partition_dir: Path | None = None
        """Group mode: where each partition's checkpoints go (``scale.checkpoint_dir``)."""
        self.handed_over: set[TopicPartition] = set()
        """Group mode: partitions checkpointed for the next owner and not written again
        here (until assigned here again: :meth:`start_at`)."""
        keys = engine.keys  # loaded in place on a restore: the same object throughout
        metrics.remembered.labels(kind="order").set_function(lambda: len(keys.closed_orders))
        metrics.remembered.labels(kind="execution").set_function(lambda: len(keys.exec_times))

    # offsets ------------------------------------------------------------------
    @property
    def applied(self) -> Mapping[TopicPartition, int]:
        """The next offset to apply, per input partition (read-only view)."""
        return self._applied

    @property
    def committed(self) -> Mapping[TopicPartition, int]:
        """The offset last committed to the consumer group, per input partition."""
        return self._committed

    def start_at(self, tp: TopicPartition, offset: int) -> None:
        """Where partition ``tp`` starts once assigned (its events before are in state)."""
        self._applied[tp] = offset
        self.handed_over.discard(tp)

    def forget(self, gone: Collection[TopicPartition]) -> None:
        """Partitions ``gone`` from the input (a topic re-created with fewer): neither
        advanced nor committed again."""
        for tp in gone:
            self._applied.pop(tp, None)
            self._committed.pop(tp, None)

    def advance(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """A consumed batch is in the engine's state: move past its last messages.

        ``batch`` maps a partition to its messages (each with an ``offset``), as
        ``AIOKafkaConsumer.getmany`` returns them.
        """
        for tp, messages in batch.items():
            self._applied[tp] = messages[-1].offset + 1

    async def commit(self, consumer: AIOKafkaConsumer | None, timeout_s: float = 2.0) -> bool:
        """Commit the applied offsets not committed yet (never beyond what state reflects).

        Waits at most ``timeout_s``: aiokafka retries a commit the broker refuses
        (e.g. a topic it lost, a broker down) forever, which must not hold up a stop. A
        failed or timed-out commit is logged (repeats at most every 10 s, with their
        count) and tried again next time; nothing is raised. Returns False when applied
        offsets are left uncommitted (always False without a ``consumer`` then).
        """
        todo = {
            tp: OffsetAndMetadata(off, "")
            for tp, off in self._applied.items()
            if self._committed.get(tp) != off
        }
        if not todo:
            return True
        if consumer is None:
            return False
        try:
            await asyncio.wait_for(consumer.commit(todo), timeout_s)
            self._committed.update({tp: meta.offset for tp, meta in todo.items()})
            return True
        except (KafkaError, TimeoutError) as exc:
            left_out = self._commit_failures.admit("commit failed")
            if left_out is not None:
                self._log.warning(
                    "commit failed",
                    error=repr(exc) if str(exc) else f"no answer within {timeout_s:g} s",
                    **log.repeats(left_out),
                )
            return False

    # snapshots ----------------------------------------------------------------
    def by_partition(self, partitions: PartitionEngines, folder: Path) -> None:
        """Group mode: checkpoint each of ``partitions``' engines on its own into
        ``folder`` (see the module); nothing is loaded at start (:meth:`load`)."""
        self.partitions, self.partition_dir = partitions, folder
        remembered = self.metrics.remembered
        remembered.labels(kind="order").set_function(
            lambda: sum(len(e.keys.closed_orders) for e in partitions.all())
        )
        remembered.labels(kind="execution").set_function(
            lambda: sum(len(e.keys.exec_times) for e in partitions.all())
        )

    def partition_store(self, tp: TopicPartition) -> SnapshotStore:
        """The checkpoints of input partition ``tp`` (group mode). Raises
        :class:`RuntimeError` outside group mode."""
        if self.partition_dir is None:
            raise RuntimeError("checkpoints by partition: call by_partition() first")
        folder = self.partition_dir / f"{tp.topic}.{tp.partition}"
        return SnapshotStore(folder, keep=2, shared=True)

    def units(self, only: Collection[TopicPartition] | None = None) -> list[Unit]:
        """The snapshots to write now: the engine with every applied offset, or in group
        mode each owned partition's engine (those of ``only``, when given) with its own."""
        if self.partitions is None:
            return [(self.engine, self._offsets(), self.store)]
        out: list[Unit] = []
        for tp, engine in sorted(self.partitions.engines.items()):
            if tp in self.handed_over or tp not in self._applied:
                continue
            if only is None or tp in only:
                store = self.partition_store(tp)
                try:
                    store.folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # the shared volume gone or read-only: say so, go on
                    self._failed(
                        "checkpoint folder unusable", folder=str(store.folder), error=str(exc)
                    )
                    continue
                out.append((engine, {f"{tp.topic}/{tp.partition}": self._applied[tp]}, store))
        return out

    def _events(self) -> int:
        flow = self.partitions if self.partitions is not None else self.engine
        return flow.events_applied

    async def hand_over(self, revoked: Collection[TopicPartition]) -> None:
        """Group mode, before ``revoked`` go to other members: checkpoint each at the
        offset applied, so that the next owner reads on from there. Failures are logged
        and counted; nothing is raised."""
        if self.partitions is None or self.interval_s <= 0:
            return
        await self._end_writer()  # an older image of these must not land after this one
        units = [
            unit
            for unit in self.units(only=set(revoked))
            if self._checkpointed.get(next(iter(unit[1]))) != next(iter(unit[1].values()))
        ]  # a partition already checkpointed at the offset applied is not written again
        self.handed_over |= set(revoked)
        if not units:
            return
        self._start_write(units)
        if self._writing is not None:  # the rebalance waits this long at most; a write
            await asyncio.wait({self._writing}, timeout=HAND_OVER_WAIT_S)  # past it lands later

    async def _end_writer(self) -> None:
        """End the periodic write in flight, if any: a forked one is killed (its
        snapshot is superseded), a copied one awaited."""
        writer, writing = self._writer, self._writing
        if writer is not None:
            self._superseded = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer.pid, signal.SIGKILL)
        if writing is not None:  # a copied write in a thread cannot be ended: bounded wait
            await asyncio.wait({writing}, timeout=HAND_OVER_WAIT_S)
        self._superseded = False

    def load(self) -> None:
        """Restore the newest valid snapshot, if any, and the offsets it reflects.

        Corrupt or incompatible snapshots are logged and skipped, never half-loaded;
        with none, state is rebuilt by replaying input. So is it when the snapshot is of
        another session (``runtime.start_of_day`` changed since it was taken:
        :meth:`~riskguard.snapshot.Snapshot.of_session`): the day's P&L and drawdown
        start again from the session start, not from yesterday's book.
        """
        started = time.perf_counter()
        with contextlib.suppress(OSError):  # a folder not there yet holds none
            for tmp in self.store.remove_leftovers():
                self._log.info("unfinished snapshot removed", file=tmp.name)
        snap = self.store.latest()
        for reason in self.store.skipped:
            self._log.error("snapshot skipped", reason=reason)
        if snap is None:
            self._log.info("no usable snapshot: rebuilding state from the start of input")
            return
        if not snap.of_session(self.session_start_ns):
            self._log.warning(
                "snapshot of another session: rebuilding state from the start of day",
                snapshot=snap.path.name,
                snapshot_session_start_ns=snap.meta.get("session_start_ns"),
                session_start_ns=self.session_start_ns,
            )
            return
        self.resolves = restore(self.engine, snap)
        for key, offset in snap.offsets.items():
            topic, _, part = key.rpartition("/")
            self._applied[TopicPartition(topic, int(part))] = int(offset)
        self.loaded_from = snap.path.name
        self.last_events = self.engine.events_applied
        self.load_seconds = time.perf_counter() - started
        self._log.info(
            "snapshot loaded",
            snapshot=snap.path.name,
            offsets=snap.offsets,
            events_applied=self.engine.events_applied,
            seconds=round(self.load_seconds, 3),
        )

    def take_resolves(self, state: Callable[[str], str]) -> list[Transition]:
        """The resolves :meth:`load` found (alerts of rules the limits no longer hold as
        they were), stamped with their scopes' standing ``state`` (restored after the
        snapshot); forgets them."""
        out = [
            msgspec.structs.replace(tr, from_=state(tr.scope), to=state(tr.scope))
            for tr in self.resolves
        ]
        self.resolves = []
        return out

    def _offsets(self) -> dict[str, int]:
        return {f"{tp.topic}/{tp.partition}": off for tp, off in self._applied.items()}

    def _paused(self, began: float) -> None:
        self.last_pause_s = time.perf_counter() - began
        self.metrics.snapshot_pause.set(self.last_pause_s)

    def _freeze(self, units: Sequence[Unit] | None = None) -> list[tuple[Frozen, SnapshotStore]]:
        """The copies (of ``units``, default all) taken between batches: the part of a
        snapshot the event loop pays for (``riskguard_snapshot_pause_seconds``)."""
        began = time.perf_counter()
        todo = self.units() if units is None else units
        frozen = [(freeze(e, o, self.session_start_ns), s) for e, o, s in todo]
        self._paused(began)
        return frozen

    def maybe_snapshot(self) -> None:
        """Between batches: start a snapshot write if one is due and none is running."""
        if self.interval_s <= 0 or time.monotonic() - self.last_mono < self.interval_s:
            return
        if self._writing is not None and not self._writing.done():
            return
        if self._events() == self.last_events:
            return  # nothing changed since the last snapshot
        self.last_mono = time.monotonic()
        self.last_events = self._events()
        units = self.units()
        if units:
            self._start_write(units)

    def _start_write(self, units: Sequence[Unit]) -> None:
        """Write ``units`` in the background: forked (the loop pauses for the fork), else
        copied here and written from a thread."""
        self._in_flight = {key: off for _, offsets, _ in units for key, off in offsets.items()}
        if self.fork and safe_to_fork():
            began = time.perf_counter()
            try:  # the child's image is consistent with `applied`: forked between batches
                writer = fork_writers(units, self.session_start_ns)
            except OSError as exc:
                self._log.error("snapshot fork failed; copying instead", error=str(exc))
            else:
                self._paused(began)
                self._writer = writer
                self._writing = asyncio.create_task(self._reap(writer), name="snapshot-write")
                return
        frozen = self._freeze(units)  # consistent with `applied`: copied between batches
        self._writing = asyncio.create_task(self._write(frozen), name="snapshot-write")

    async def _reap(self, writer: Writer) -> None:
        """Wait for a forked writer; one still running after :attr:`deadline_s` is
        killed (a lock held at the fork: it would never finish) and logged."""
        began = time.perf_counter()
        waiting = asyncio.ensure_future(asyncio.to_thread(wait_writer, writer))
        try:
            path = await asyncio.wait_for(asyncio.shield(waiting), self.deadline_s)
        except SnapshotWriterError as exc:
            if self._abandoned or self._superseded:
                self._log.info("snapshot writer ended: its snapshot is superseded")
            elif exc.stopped_by is None:
                self._failed("snapshot write failed", error=str(exc))
            else:  # Ctrl-C or a stop of the whole group: the stop writes its own snapshot
                self._log.info(
                    "snapshot writer stopped: no snapshot from it", signal=exc.stopped_by
                )
            return
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer.pid, signal.SIGKILL)
            self._failed("snapshot writer stuck: killed", pid=writer.pid, seconds=self.deadline_s)
            await asyncio.gather(waiting, return_exceptions=True)
            return
        except OSError as exc:
            self._failed("snapshot write failed", error=str(exc))
            return
        finally:
            self._writer = None
        self._written(path, began)

    def abandon_writer(self) -> None:
        """On a stop: end the forked writer in flight (SIGKILL), if any. The stop writes
        its own snapshot, and a writer that never finishes (a lock held at the fork) held
        the process past its stop for ever: its reaper thread is one the interpreter
        joins at exit. Its temp file is never renamed: no snapshot from it."""
        writer = self._writer
        if writer is None:
            return
        self._abandoned = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer.pid, signal.SIGKILL)

    @property
    def deadline_s(self) -> float:
        """How long a forked writer may take: 20 times the last write, at least 120 s."""
        return max(120.0, 20.0 * self.last_write_s)

    async def _write(self, frozen: Sequence[tuple[Frozen, SnapshotStore]]) -> None:
        if not frozen:
            return
        try:  # serialising in the thread too: the event loop only paid for the copies
            began = time.perf_counter()
            path = await asyncio.to_thread(
                lambda: [store.write(chunks(f), f.meta["offsets"]) for f, store in frozen][-1]
            )
        except OSError as exc:
            self._failed("snapshot write failed", error=str(exc))
            return
        self._written(path, began)

    def _failed(self, event: str, **fields: Any) -> None:
        """A snapshot not written: logged at error, counted (``RiskguardSnapshotFailing``),
        and shown by ``riskguard status`` until one is written again."""
        self.metrics.snapshot_failures.inc()
        self.failing += 1
        self.last_error = f"{event}: {fields.get('error', fields)}"
        self._log.error(event, **fields)

    def _written(self, path: Path, began: float) -> None:
        self._checkpointed.update(self._in_flight)
        self.failing, self.last_error = 0, None
        self.last_path = path.name
        self.metrics.last_snapshot.set(time.time())
        self.last_write_s = time.perf_counter() - began
        try:
            self.last_bytes = path.stat().st_size
        except OSError:  # pruned already by a newer one, or the folder removed
            self.last_bytes = 0
        self.metrics.snapshot_write.set(self.last_write_s)
        self.metrics.snapshot_size.set(self.last_bytes)

    async def final(self) -> None:
        """On graceful stop: end a forked write in flight (:meth:`abandon_writer`) or wait
        for a copied one, then write the final state.

        A failed write is logged; nothing is raised.
        """
        self.abandon_writer()
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        if self.interval_s > 0 and self._applied:
            await self._write(self._freeze())

    def status(self) -> dict[str, Any]:
        """For ``/v1/status``: last snapshot written (the event loop's pause for its copy,
        the write's seconds, its bytes), the one loaded, the folder, and the snapshots not
        written since the last one (``failing``, ``last_error``)."""
        return {
            "last_written": self.last_path or None,
            "failing": self.failing,
            "last_error": self.last_error,
            "last_pause_seconds": round(self.last_pause_s, 4),
            "last_write_seconds": round(self.last_write_s, 3),
            "last_bytes": self.last_bytes,
            "loaded_from": self.loaded_from or None,
            "load_seconds": round(self.load_seconds, 3),
            "dir": str(self.partition_dir or self.store.folder),
        }
