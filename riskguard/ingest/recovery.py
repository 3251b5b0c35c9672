"""Getting back to where we were: snapshot, then standing states, before any event.

Order on start:

1. the newest valid snapshot (engine state and the input offsets it reflects);
   corrupt or incompatible ones are reported and skipped, never half-loaded; with
   none, state is rebuilt by replaying input from the beginning;
2. standing states, merged from the local journal and the control topic (newest
   decision per scope wins) and re-asserted; states the topic lost are re-published;
3. the previous instance's progress (``last_event_ns`` of its last heartbeat) marks
   breaches up to then as already judged, so replay decides nothing twice.

While running, :class:`Snapshotter` writes a snapshot every ``snapshot_interval_s``
between batches (so state and offsets agree), and a last one on graceful stop.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from riskguard.control.reader import ControlView, read_to_end
from riskguard.snapshot import Frozen, SnapshotStore, freeze, restore, serialise
from riskguard.vocabulary import Transition

if TYPE_CHECKING:
    from riskguard.ingest.runtime import Sidecar


async def recover(s: Sidecar) -> None:
    """Everything that must happen before the first batch is consumed."""
    s.snapshotter.load()
    k = s.settings.kafka
    journal = s.journal.load()
    if s.journal.unreadable:
        s.log.warning(
            "journal lines unreadable, skipped",
            count=s.journal.unreadable,
            path=str(s.journal.path),
        )
    reader = AIOKafkaConsumer(
        **k.client_options(consumer=True),
        enable_auto_commit=False,
        client_id=f"riskguard-{s.instance}-restore",
    )
    await reader.start()
    try:
        view = await read_to_end(reader, k.control_topic, ControlView())
    finally:
        await reader.stop()
    merged = {scope: rec.transition for scope, rec in view.states.items()}
    stale: list[Transition] = []
    for scope, tr in journal.items():
        published = merged.get(scope)
        if published is None or tr.decided_ns > published.decided_ns:
            merged[scope] = tr
            stale.append(tr)
    for tr in merged.values():
        if s.engine.killswitch.restore(tr):
            s.restored.append(tr.scope)
            s.metrics.transition(tr)
    if stale and s.control is not None:
        await s.control.publish(stale)
        s.republished = sorted(t.scope for t in stale)
        s.log.warning("re-published states the control topic had lost", scopes=s.republished)
    await asyncio.to_thread(s.journal.compact, merged)
    if view.heartbeat is not None and view.heartbeat.last_event_ns > 0:
        s.engine.judge_until(view.heartbeat.last_event_ns)
    s.checks["control_topic_read"] = True


class Snapshotter:
    """Periodic and final snapshots of one sidecar's engine."""

    def __init__(self, sidecar: Sidecar) -> None:
        rt = sidecar.settings.runtime
        self.sidecar = sidecar
        self.store = SnapshotStore(rt.snapshot_dir, keep=rt.snapshot_keep)
        self.interval_s = rt.snapshot_interval_s
        self.last_mono = time.monotonic()
        self.last_path = ""
        self.last_events = -1
        self.loaded_from = ""
        self.load_seconds = 0.0
        self._writing: asyncio.Task[Any] | None = None

    def load(self) -> None:
        """Restore the newest valid snapshot, if any, and the offsets it reflects."""
        s = self.sidecar
        started = time.perf_counter()
        snap = self.store.latest()
        for reason in self.store.skipped:
            s.log.error("snapshot skipped", reason=reason)
        if snap is None:
            s.log.info("no usable snapshot: rebuilding state from the start of input")
            return
        restore(s.engine, snap)
        for key, offset in snap.offsets.items():
            topic, _, part = key.rpartition("/")
            s.applied[TopicPartition(topic, int(part))] = int(offset)
        self.loaded_from = snap.path.name
        self.last_events = s.engine.events_applied
        self.load_seconds = time.perf_counter() - started
        s.log.info(
            "snapshot loaded",
            snapshot=snap.path.name,
            offsets=snap.offsets,
            events_applied=s.engine.events_applied,
            seconds=round(self.load_seconds, 3),
        )

    def _freeze(self) -> Frozen:
        offsets = {f"{tp.topic}/{tp.partition}": off for tp, off in self.sidecar.applied.items()}
        return freeze(self.sidecar.engine, offsets)

    def maybe(self) -> None:
        """Between batches: start a snapshot write if one is due and none is running."""
        if self.interval_s <= 0 or time.monotonic() - self.last_mono < self.interval_s:
            return
        if self._writing is not None and not self._writing.done():
            return
        if self.sidecar.engine.events_applied == self.last_events:
            return  # nothing changed since the last snapshot
        self.last_mono = time.monotonic()
        self.last_events = self.sidecar.engine.events_applied
        frozen = self._freeze()  # consistent with `applied`: copied between batches
        self._writing = asyncio.create_task(self._write(frozen), name="snapshot-write")

    async def _write(self, frozen: Frozen) -> None:
        try:  # serialising in the thread too: the event loop only paid for the copies
            path = await asyncio.to_thread(lambda: self.store.write(serialise(frozen)))
            self.last_path = path.name
            self.sidecar.metrics.last_snapshot.set(time.time())
        except OSError as exc:
            self.sidecar.log.error("snapshot write failed", error=str(exc))

    async def final(self) -> None:
        """On graceful stop: wait for a write in flight, then write the final state."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        if self.interval_s > 0 and self.sidecar.applied:
            await self._write(self._freeze())

    def status(self) -> dict[str, Any]:
        """For ``/v1/status``."""
        return {
            "last_written": self.last_path or None,
            "loaded_from": self.loaded_from or None,
            "load_seconds": round(self.load_seconds, 3),
            "dir": str(self.store.folder),
        }
