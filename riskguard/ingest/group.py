"""Group mode: instances share the input partitions through Kafka's consumer group.

``[scale] mode = "group"`` (docs/deployment.md, Scale-out). Input is keyed by account,
so an instance that owns a partition owns the accounts in it. Membership and failure
detection are Kafka's own (``subscribe`` with a ``ConsumerRebalanceListener``; a
member silent for ``scale.session_timeout_ms`` is declared dead by the broker); none is
written here.

Each owned partition's state is an engine of its own
(:class:`~riskguard.ingest.partitions.PartitionEngines`, decision 54), checkpointed on its
own into ``scale.checkpoint_dir`` with its offset. On every assignment, before any new
event is applied (under :attr:`~riskguard.ingest.consume.ConsumeLoop.lock`, no batch
half applied):

1. a partition no longer assigned is dropped (its engine, its offsets): its accounts
   are no longer counted;
2. a partition kept goes on from the offset its engine reflects, untouched;
3. a partition gained is restored from its newest checkpoint of this session (written
   by whichever member owned it: every member writes into the same folder, so on
   several hosts it must be shared storage), then read on from the checkpoint's offset;
   with none usable it is read from its start (the session start when
   ``runtime.start_of_day`` is set, else the beginning of the topic). Its engine holds
   every standing state and judged time at once
   (:meth:`~riskguard.killswitch.KillSwitch.attach`). Restored from a checkpoint, it
   judges every event after the checkpoint's own clock: the previous owner may have died
   before reading them (a breach it had decided after its checkpoint is decided again:
   its state stands already, an alert goes out again under the same id); read from its
   start, events up to the latest event time this instance or any other had judged
   (their heartbeats' ``last_event_ns``) decide nothing twice. Until every owned
   partition is read to its end, a gained partition's events count in windows at their
   own time however far behind the clock
   (:meth:`~riskguard.engine.Engine.count_at_own_time`): history counted "as now" would
   fill the current windows (a false breach on the first live event).

aiokafka installs an assignment before it calls the listener, and fetches from the
committed offsets meanwhile: before its first await the listener positions every kept
partition at the offset its engine reflects (they go on being read while the gained ones
are restored) and bumps :attr:`~riskguard.ingest.consume.ConsumeLoop.positioned`, so that
nothing fetched before is applied. A "kept" partition a checkpoint shows another member
moved further (this member was fenced out of the group meanwhile) is restored instead.

A member gives up partitions with a checkpoint of each at the offset it applied
(:meth:`~riskguard.ingest.checkpoint.Checkpoints.hand_over`), so the next owner reads on
from there; a member that died leaves its latest periodic one
(``runtime.snapshot_interval_s``). Nothing is lost or counted twice: a partition's
state and its offset are always written and restored together.

Rules whose scope spans partitions (firm, strategy, symbol or venue, except rules
judged on one order at a time) would be judged on a partial sum by each instance, which
can be wrong either way; :func:`riskguard.limits.scale.check_group_limits` refuses them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.engine import Engine
from riskguard.ingest.consume import ConsumeLoop, read_to_end
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.ports import TransitionSink
from riskguard.settings import ScaleSettings
from riskguard.snapshot import Snapshot, decode, restore
from riskguard.vocabulary import Transition


class Renumbered(Protocol):
    """A part holding engine ids (scope, order) across batches."""

    def reindexed(self) -> None:
        """The engine's ids were renumbered: forget the ones held."""

    def restored(self) -> None:
        """The state holds every event of the partitions owned again."""


class GroupOwnership(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """The rebalance listener of group mode (see the module), for ``intake``'s engines
    (:class:`~riskguard.ingest.partitions.PartitionEngines`).

    ``progress`` returns the latest event time (ns) any instance reported as judged (the
    peers' heartbeats). Partitions are read from ``intake.session_start_ns`` (None: their
    beginning). After every change of the partitions owned, each of ``renumbered``
    forgets the engine ids it held, and ``ready("partitions_assigned")`` is called.
    ``instance`` is this member's static group membership id when
    ``scale.static_membership`` is on. ``sink`` sends the resolves a checkpoint restore
    finds (alerts of rules the limits no longer hold as they were:
    :func:`~riskguard.snapshot.restore`).
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
        if not isinstance(intake.engine, PartitionEngines):
            raise TypeError("group mode reads into PartitionEngines")
        self.parts: PartitionEngines = intake.engine
        self.checkpoints = intake.checkpoints
        self.metrics = intake.metrics
        self.progress = progress
        self.session_start_ns = intake.session_start_ns
        self.renumbered = renumbered
        self.ready = ready
        self.consumer: AIOKafkaConsumer | None = None
        self.assignments = 0
        """Assignments taken."""
        self.rebuilds = 0
        """Partitions gained that were read from their start (no checkpoint usable)."""
        self.snapshot_restores = 0
        """Partitions gained that were restored from a checkpoint."""
        self.last_rebuild_s = 0.0
        """Seconds the latest assignment held the consume loop (replay not included)."""
        self.restored_from: str | None = None
        """The checkpoint the latest partition restored at the latest assignment came from
        (None: none restored then)."""
        self.checkpoints_restored: dict[str, str | None] = {}
        """Per partition gained at the latest assignment: its checkpoint (None: read
        from its start)."""
        self.restored_s: float | None = None
        """Seconds from the latest assignment until every owned partition was read to
        its high watermark (None while restoring)."""
        self._assigned_at = 0.0
        intake.after_batch = self._progress
        self.metrics.unmarked_symbols.set_function(
            lambda: float(self.parts.mark_coverage(names=0)["unmarked"])
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
        monitoring) and checkpoint each of them at that offset
        (:meth:`~riskguard.ingest.checkpoint.Checkpoints.hand_over`), so whichever
        member gets one reads on from there. Their engines stay until the new assignment
        arrives (it may give them back). Failures are logged, never raised."""
        if not revoked:
            return
        async with self.intake.lock:
            await self.checkpoints.commit(self.consumer)
            await self.checkpoints.hand_over([tp for tp in revoked if tp in self.parts.engines])
        self._log.info("partitions revoked", partitions=_labels(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """After the group assigned ``assigned`` (every partition this instance owns
        now): drop the partitions lost, restore the ones gained (see the module), and
        position the consumer on every owned partition at the offset its state reflects.

        Offsets are looked up before the state is touched; a lookup that fails is
        retried by the next rebalance only, so it is logged and the partitions start at
        their beginning (never later: nothing is lost, the session filter still applies).
        """
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError("group ownership: call open() with the consumer first")
        owned, assigned_at = set(assigned), time.perf_counter()
        # Before the first await: aiokafka installed the assignment and fetches from the
        # committed offsets while this runs. A kept partition goes on at once from the
        # offset its engine reflects; nothing fetched before now is applied. One another
        # member moved on meanwhile (its checkpoint is further: this member was fenced)
        # is not kept but restored.
        applied = self.checkpoints.applied
        kept = {tp for tp in owned & self.parts.owned() if tp in applied and not self._moved(tp)}
        self.restored_s = None  # restoring: no sums published (aggregation) meanwhile
        self.metrics.restoring.set(1)
        self.intake.positioned += 1
        self.intake.assigned = kept
        for tp in kept:
            consumer.seek(tp, applied[tp])
        gained = owned - kept
        starts, ends = await self._starts(consumer, gained)
        # read, decoded and restored off the event loop (seconds for a large partition:
        # heartbeats to the group and to the gates go on, and so do the kept partitions)
        found = {
            tp: await asyncio.to_thread(self._restored, tp, starts[tp], ends.get(tp))
            for tp in gained
        }
        began = time.perf_counter()
        async with self.intake.lock:
            lost = self.parts.owned() - kept
            for tp in lost:
                self.parts.drop(tp)
            self.checkpoints.forget(lost)
            judged = max(self.parts.last_event_ns, self.parts.judged_ns, self.progress())
            resolves: list[Transition] = []
            restored: dict[str, str | None] = {}
            self.restored_from = None
            for tp in sorted(gained):
                engine, snap, carried = found[tp]
                resolves += carried
                if engine.limits.digest != self.parts.limits.digest:  # reloaded meanwhile
                    resolves += engine.replace_limits(self.parts.limits)
                if snap is not None:
                    starts[tp] = int(snap.offsets[f"{tp.topic}/{tp.partition}"])
                self.parts.add(tp, engine)
                if snap is None and judged > 0:  # a checkpoint judged up to its own clock:
                    engine.judge_until(judged)  # later events were maybe never read
                engine.count_at_own_time(True)  # until restored: history, not lateness
                self.checkpoints.start_at(tp, starts[tp])
                restored[f"{tp.topic}/{tp.partition}"] = snap.path.name if snap else None
                self.rebuilds += snap is None
                self.snapshot_restores += snap is not None
                if snap is not None:
                    self.restored_from = snap.path.name
                (self.metrics.group_rebuilds if snap is None else self.metrics.group_restores).inc()
            self.checkpoints.handed_over -= owned  # ours again: checkpointed here
            applied = self.checkpoints.applied
            for tp in owned:
                consumer.seek(tp, applied[tp])
            self.intake.positioned += 1  # a batch fetched before: fetched again from here
            self.intake.assigned = owned
            if gained or lost or not self.assignments:
                for part in self.renumbered:
                    part.reindexed()
            self.assignments += 1
            self.checkpoints_restored = restored
        self.last_rebuild_s = time.perf_counter() - began
        if resolves and self.sink is not None:
            state = self.parts.killswitch.state
            await self.sink.send(
                [
                    msgspec.structs.replace(tr, from_=state(tr.scope), to=state(tr.scope))
                    for tr in resolves
                ]
            )
        self._assigned_at, self.restored_s = assigned_at, None
        self.metrics.restoring.set(1)
        self.metrics.owned_partitions.set(len(owned))
        self._log.info(
            "partitions assigned",
            partitions=_labels(owned),
            kept=_labels(owned - gained),
            lost=_labels(lost - owned),
            gained={f"{t.topic}/{t.partition}": starts[t] for t in sorted(gained)},
            checkpoints=restored,
            judged_until_ns=judged,
        )
        self.ready("partitions_assigned")
        if not owned:  # nothing to read: restored at once
            self.restored_s = 0.0
            self.metrics.restoring.set(0)
            self.metrics.restore_seconds.set(0.0)
            self.parts.count_at_own_time(False)
            for part in self.renumbered:
                part.restored()

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
        self.parts.count_at_own_time(False)
        for part in self.renumbered:
            part.restored()
        self._log.info(
            "partitions restored",
            partitions=_labels(self.intake.assigned),
            seconds=round(self.restored_s, 3),
            events=self.parts.events_applied,
        )

    def _moved(self, tp: TopicPartition) -> bool:
        """Whether a checkpoint of ``tp`` is further into it than this member's engine
        (another member owned it meanwhile: this one had been fenced out of the group)."""
        furthest = self.checkpoints.partition_store(tp).furthest()
        return furthest is not None and furthest > self.checkpoints.applied.get(tp, 0)

    def _restored(
        self, tp: TopicPartition, start: int, end: int | None
    ) -> tuple[Engine, Snapshot | None, list[Transition]]:
        """A new engine for gained partition ``tp``: restored from its newest usable
        checkpoint of this session, at or after its session start ``start`` and not past
        its end offset ``end`` (a topic re-created), with the resolves
        :func:`~riskguard.snapshot.restore` found; else empty. A checkpoint that cannot be
        read, decoded or restored (damaged, another build's) is logged and the next older
        one tried. Runs in a thread: the engine is shared with nothing yet."""
        if self.checkpoints.interval_s <= 0:
            return self.parts.fresh(), None, []
        name = f"{tp.topic}/{tp.partition}"
        for path in self.checkpoints.partition_store(tp).paths():
            engine = self.parts.fresh()
            try:
                snap = decode(path.read_bytes(), path)
                offset = int(snap.offsets[name])
                if set(snap.offsets) != {name} or not snap.of_session(self.session_start_ns):
                    continue  # another partition's, or taken under another start of day
                if offset < start or (end is not None and offset > end):
                    continue  # before the session, passed by retention, or another topic's
                return engine, snap, restore(engine, snap)
            except Exception as exc:
                self._log.error("checkpoint skipped", file=str(path), reason=repr(exc))
        return self.parts.fresh(), None, []

    async def _starts(
        self, consumer: AIOKafkaConsumer, owned: Collection[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Where each partition's history starts (session start, else beginning), and its
        end offset now (a checkpoint past it is of a topic since re-created)."""
        if not owned:
            return {}, {}
        tps = sorted(owned)
        try:
            begin: dict[TopicPartition, int] = dict(await consumer.beginning_offsets(tps))
            ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
            if self.session_start_ns is not None:
                found = await consumer.offsets_for_times(
                    dict.fromkeys(tps, self.session_start_ns // 1_000_000)
                )
                for tp, hit in found.items():
                    if hit is not None and hit.offset > begin[tp]:
                        begin[tp] = hit.offset
        except (KafkaError, TimeoutError) as exc:  # the group retries on its next rebalance
            self._log.error("offset lookup failed; reading from 0", error=repr(exc))
            return dict.fromkeys(tps, 0), {}
        return begin, ends

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
            "checkpoints": self.checkpoints_restored,
            "last_rebuild_seconds": round(self.last_rebuild_s, 3),
            "restored_seconds": None if self.restored_s is None else round(self.restored_s, 4),
            "marks": self.parts.mark_coverage(),
        }


def _labels(tps: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
