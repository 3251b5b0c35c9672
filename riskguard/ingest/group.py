"""Group mode: instances share the input partitions through Kafka's consumer group.

``[scale] mode = "group"`` (docs/deployment.md, Scale-out). Input is keyed by account,
so an instance that owns a partition owns the accounts in it. Membership and failure
detection are Kafka's own (``subscribe`` with a ``ConsumerRebalanceListener``; a
member silent for ``scale.session_timeout_ms`` is declared dead by the broker); none is
written here.

On every assignment that differs from the one the state reflects, the instance
restores its state for exactly the partitions it now owns, before applying any new
event from them. When its newest snapshot (written every ``runtime.snapshot_interval_s``,
state plus offsets, as in single mode) holds exactly those partitions, within this
session, it is loaded and each partition is read from the snapshot's offset (a member
restarted and given its partitions back: with ``scale.static_membership`` the group
gives them back without a rebalance). Otherwise it rebuilds:

1. under :attr:`~riskguard.ingest.consume.ConsumeLoop.lock` (no batch half applied),
   the engine's state arrays are emptied (a pristine engine's state restored in
   place) and every standing state and judged time is latched again
   (:meth:`~riskguard.killswitch.KillSwitch.reassert`);
2. each owned partition is read again from its start (the session start when
   ``runtime.start_of_day`` is set, else the beginning of the topic); events up to the
   latest event time this instance or any other had judged (their heartbeats'
   ``last_event_ns``) decide nothing twice;
3. aiokafka returns no record fetched before the seek, nor of a partition no longer
   assigned;
4. until every owned partition is read to its end, events count in windows at their own
   time however far behind the clock (:meth:`~riskguard.engine.Engine.count_at_own_time`):
   partitions are read at different speeds, and history counted "as now" would fill
   the current windows (a false breach on the first live event).

A lost partition is thereby no longer counted (its accounts leave the state with the
rebuild), and a gained one is counted once (from its start, in order). A snapshot is
whole-engine: it cannot be split by partition, so it serves only an assignment equal to
the one it was taken under.

Rules whose scope spans partitions (firm, strategy, symbol or venue, except rules
judged on one order at a time) would be judged on a partial sum by each instance, which
can be wrong either way; :func:`riskguard.limits.scale.check_group_limits` refuses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.engine import Engine
from riskguard.ingest.consume import ConsumeLoop, read_to_end
from riskguard.ingest.ports import TransitionSink
from riskguard.settings import ScaleSettings
from riskguard.snapshot import Snapshot, SnapshotError, freeze, restore
from riskguard.vocabulary import Transition


class Renumbered(Protocol):
    """A part holding engine ids (scope, order) across batches."""

    def reindexed(self) -> None:
        """The engine's ids were renumbered: forget the ones held."""

    def restored(self) -> None:
        """The state holds every event of the partitions owned again."""


def rebuild(engine: Engine) -> None:
    """Empty ``engine``'s state in place (same limits, same objects), keeping every
    latched state, resume and judged time its kill switch holds.

    ``events_applied`` restarts at 0: afterwards it counts the events in the state.
    """
    fresh = Engine(
        engine.limits,
        clock=engine.clock,
        settings=engine.settings,
        warm=False,
        values_only=engine.values_only,
    )
    frozen = freeze(fresh, {})
    judged = int(engine.store.state.globals["judged_ns"][0])
    restore(engine, Snapshot(Path("<pristine>"), frozen.meta, frozen.arrays))
    engine.killswitch.reassert()
    if judged > 0:
        engine.judge_until(judged)


class GroupOwnership(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """The rebalance listener of group mode (see the module), for ``intake``'s engine.

    ``progress`` returns the latest event time (ns) any instance reported as judged (the
    peers' heartbeats). Partitions are read from ``intake.session_start_ns`` (None: their
    beginning). After every rebuild, each of ``renumbered`` forgets the engine ids it
    held, and ``ready("partitions_assigned")`` is called. ``instance`` is this member's
    static group membership id when ``scale.static_membership`` is on. ``sink`` sends the
    resolves a snapshot restore finds (alerts of rules the limits no longer hold as they
    were: :func:`~riskguard.snapshot.restore`), once the standing states are back.
    """

    def __init__(
        self,
        scale: ScaleSettings,
        intake: ConsumeLoop,
        progress: Callable[[], int],
        renumbered: Sequence[Renumbered],
        ready: Callable[[str], None],
        instance: str = "",
        sink: TransitionSink | None = None,
    ) -> None:
        self.scale = scale
        self.sink = sink
        self.instance = instance
        self.intake = intake
        self.engine = intake.engine
        self.checkpoints = intake.checkpoints
        self.metrics = intake.metrics
        self.progress = progress
        self.session_start_ns = intake.session_start_ns
        self.renumbered = renumbered
        self.ready = ready
        self.consumer: AIOKafkaConsumer | None = None
        self.assignments = 0
        """Assignments taken (each restored from a snapshot or rebuilt)."""
        self.rebuilds = 0
        """Times the state was rebuilt from the partitions' start for a new assignment."""
        self.snapshot_restores = 0
        """Times an assignment was restored from this member's snapshot."""
        self.last_rebuild_s = 0.0
        """Seconds the latest rebuild held the consume loop (replay not included)."""
        self.restored_from: str | None = None
        """The snapshot the latest assignment was restored from (None: rebuilt from the
        partitions' start)."""
        self.restored_s: float | None = None
        """Seconds from the latest assignment until every owned partition was read to
        its high watermark (None while restoring)."""
        self._assigned_at = 0.0
        intake.after_batch = self._progress
        self.metrics.unmarked_symbols.set_function(
            lambda: float(self.engine.mark_coverage(names=0)["unmarked"])
        )
        self._log = log.get("sidecar")

    def consumer_options(self) -> dict[str, Any]:
        """aiokafka consumer options of a group member: liveness towards the broker, and
        its static membership id (KIP-345) when ``scale.static_membership`` is on."""
        options: dict[str, Any] = {
            "session_timeout_ms": self.scale.session_timeout_ms,
            "heartbeat_interval_ms": self.scale.heartbeat_interval_ms,
            "max_poll_interval_ms": max(300_000, self.scale.session_timeout_ms),
        }
        if self.scale.static_membership and self.instance:
            options["group_instance_id"] = self.instance
        return options

    def subscribe(self, consumer: AIOKafkaConsumer, topics: Collection[str]) -> None:
        """Join the group on ``topics`` with ``consumer`` (started, built with
        :meth:`consumer_options`); it joins on its first fetch, and this listener
        positions it on every assignment."""
        self.consumer = consumer
        consumer.subscribe(list(topics), listener=self)

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Before the group reassigns: commit what was applied of ``revoked`` (lag
        monitoring); their state is dropped when the new assignment arrives. A failed
        commit is logged by :meth:`Checkpoints.commit`, never raised."""
        if not revoked:
            return
        async with self.intake.lock:
            await self.checkpoints.commit(self.consumer)
        self._log.info("partitions revoked", partitions=_labels(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """After the group assigned ``assigned`` (every partition this instance owns
        now): rebuild the state for them unless it already reflects exactly them.

        Offsets are looked up before the state is touched; a lookup that fails is
        retried by the next rebalance only, so it is logged and the partitions start at
        their beginning (never later: nothing is lost, the session filter still applies).
        """
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("group ownership: call open() with the consumer first")
        owned = set(assigned)
        if owned == self.intake.assigned and self.assignments:
            self._log.info("partitions kept", partitions=_labels(owned))
            return
        starts = await self._starts(consumer, owned)
        began = time.perf_counter()
        async with self.intake.lock:
            judged = max(self.engine.last_event_ns, self.progress())
            snap = self._snapshot_for(starts)
            resolves: list[Transition] = []
            if snap is not None:
                try:
                    resolves = restore(self.engine, snap)
                except SnapshotError as exc:  # does not fit this build: rebuild instead
                    self._log.error("snapshot skipped", reason=str(exc))
                    snap = None
            if snap is not None:
                self.engine.killswitch.reassert()
                starts = {tp: int(snap.offsets[f"{tp.topic}/{tp.partition}"]) for tp in starts}
            else:
                rebuild(self.engine)
            if judged > 0:
                self.engine.judge_until(judged)
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
            self.engine.count_at_own_time(True)  # until restored: history, not lateness
            self.checkpoints.own(starts)
            self.intake.assigned = owned
            for part in self.renumbered:
                part.reindexed()
            self.assignments += 1
            self.rebuilds += snap is None
            self.snapshot_restores += snap is not None
            self.restored_from = snap.path.name if snap is not None else None
        self.last_rebuild_s = time.perf_counter() - began
        if resolves and self.sink is not None:
            state = self.engine.killswitch.state
            await self.sink.send(
                [
                    msgspec.structs.replace(tr, from_=state(tr.scope), to=state(tr.scope))
                    for tr in resolves
                ]
            )
        self._assigned_at, self.restored_s = began, None
        self.metrics.restoring.set(1)
        self.metrics.owned_partitions.set(len(owned))
        (self.metrics.group_rebuilds if snap is None else self.metrics.group_restores).inc()
        self._log.info(
            "partitions assigned",
            partitions=_labels(owned),
            starts={f"{t.topic}/{t.partition}": o for t, o in starts.items()},
            snapshot=self.restored_from,
            judged_until_ns=judged,
        )
        self.ready("partitions_assigned")
        if not owned:
            self.restored_s = 0.0
            self.metrics.restoring.set(0)

    def _progress(self, consumer: AIOKafkaConsumer) -> None:
        """After every poll (an empty one too: partitions with nothing to read are at
        their end as soon as a fetch reported their high watermark): note when the owned
        partitions were first read to the end. Nothing is noted while the consumer's
        assignment differs from the one the state reflects (a rebalance under way: a
        partition no longer assigned has no high watermark to ask for)."""
        if self.restored_s is not None or not read_to_end(consumer, self.intake):
            return
        self.restored_s = time.perf_counter() - self._assigned_at
        self.metrics.restore_seconds.set(self.restored_s)
        self.metrics.restoring.set(0)
        self.engine.count_at_own_time(False)
        for part in self.renumbered:
            part.restored()
        self._log.info(
            "partitions restored",
            partitions=_labels(self.intake.assigned),
            seconds=round(self.restored_s, 3),
            events=self.engine.events_applied,
        )

    def _snapshot_for(self, starts: Mapping[TopicPartition, int]) -> Snapshot | None:
        """The newest snapshot holding exactly the partitions of ``starts`` (their
        session starts), each at or after its start (taken this session, and not
        passed by retention); None when there is none (rebuild). A snapshot that does
        not fit this build is logged and left out."""
        if not starts or self.checkpoints.interval_s <= 0:
            return None
        wanted = {f"{tp.topic}/{tp.partition}": off for tp, off in starts.items()}
        snap = self.checkpoints.store.latest()
        for reason in self.checkpoints.store.skipped:
            self._log.error("snapshot skipped", reason=reason)
        if snap is None or set(snap.offsets) != set(wanted):
            return None
        if not snap.of_session(self.session_start_ns):
            return None  # taken under another start of day
        if any(int(snap.offsets[key]) < start for key, start in wanted.items()):
            return None  # an earlier session's state, or events retention removed
        return snap

    async def _starts(
        self, consumer: AIOKafkaConsumer, owned: Collection[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Where each owned partition's history starts (session start, else beginning)."""
        if not owned:
            return {}
        tps = sorted(owned)
        try:
            begin: dict[TopicPartition, int] = dict(await consumer.beginning_offsets(tps))
            if self.session_start_ns is not None:
                found = await consumer.offsets_for_times(
                    dict.fromkeys(tps, self.session_start_ns // 1_000_000)
                )
                for tp, hit in found.items():
                    if hit is not None and hit.offset > begin[tp]:
                        begin[tp] = hit.offset
        except (KafkaError, TimeoutError) as exc:  # the group retries on its next rebalance
            self._log.error("offset lookup failed; reading from 0", error=repr(exc))
            return dict.fromkeys(tps, 0)
        return begin

    def status(self) -> dict[str, object]:
        """For ``/v1/status``: the partitions owned, the rebuilds and snapshot restores so
        far, and whether the
        symbols in play here are marked (:meth:`~riskguard.engine.Engine.mark_coverage`)."""
        return {
            "mode": "group",
            "assigned": self.assignments > 0,
            "owned": _labels(self.intake.assigned),
            "rebuilds": self.rebuilds,
            "snapshot_restores": self.snapshot_restores,
            "restored_from": self.restored_from,
            "last_rebuild_seconds": round(self.last_rebuild_s, 3),
            "restored_seconds": None if self.restored_s is None else round(self.restored_s, 4),
            "marks": self.engine.mark_coverage(),
        }


def _labels(tps: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
