"""The consume step: fetch, decode, apply to the engine, dead-letter, hand out transitions.

Hot path (one task): ``getmany`` -> decode -> ``Engine.apply`` -> advance the
applied offsets -> the outbox (control topic first, awaited) -> the cancel
confirmation (:mod:`riskguard.ingest.cancels`: orders of halts that closed, orders
opened in halted scopes, the ``cancel-incomplete`` alert). The engine is driven by
exactly two things, both here: input batches and the clock tick.

By default every partition of every input topic is assigned by hand: a kill switch
must see the whole firm's flow, and a consumer group would split partitions between
instances (silently breaking firm-wide limits) and stall starts on rebalances. In
group mode (``[scale] mode = "group"``) the consumer group shares them instead, and
:class:`~riskguard.ingest.group.GroupOwnership` rebuilds the state on a rebalance
under :attr:`ConsumeLoop.lock`, never during a batch. (aiokafka itself drops records
fetched before a seek or for a partition no longer assigned; a batch it returned before
the partitions were positioned again is left out here: :attr:`ConsumeLoop.positioned`.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.control.reader import partitions
from riskguard.engine import Engine
from riskguard.events import BadEvent, Event, decode
from riskguard.events import _decoder as _event_decoder
from riskguard.ingest.cancels import CancelTracker
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.flow import FlowReport
from riskguard.ingest.health import Liveness
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.ports import TransitionSink
from riskguard.ingest.producers import Producer
from riskguard.metrics import Metrics
from riskguard.settings import KafkaSettings

Batch = Mapping[TopicPartition, Sequence[Any]]
"""One ``getmany`` result: per partition, its messages in offset order."""


class DeadLetters:
    """Counts, logs and forwards bad events to the dead-letter topic."""

    def __init__(self, topic: str, metrics: Metrics) -> None:
        self.topic = topic
        self.metrics = metrics
        self.count = 0
        self._producer: Producer | None = None
        self._log = log.get("sidecar")

    def open(self, producer: Producer) -> None:
        """Forward through ``producer`` from now on (before that, bad events are only
        counted and logged)."""
        self._producer = producer

    async def send(self, bad: BadEvent, value: bytes, key: bytes | None) -> None:
        """Count, log and forward one bad event; a failed send is logged, never raised."""
        self.count += 1
        self.metrics.bad_events.labels(bad.reason).inc()
        self._log.warning(
            "bad event", reason=bad.reason, detail=bad.detail[:300], position=bad.position
        )
        if self._producer is None:
            return
        headers = [
            ("riskguard.reason", bad.reason.encode()),
            ("riskguard.detail", bad.detail[:1000].encode()),
            ("riskguard.position", bad.position.encode()),
        ]
        try:
            await self._producer.send(self.topic, value, key=key, headers=headers)
        except KafkaError as exc:  # counted and logged above; the event itself is in the log
            self._log.error("dead-letter publish failed", error=repr(exc), position=bad.position)


@dataclass(eq=False)
class ConsumeLoop:
    """Drives one engine (group mode: a member's engines, one per owned partition) from
    the input topics and the clock.

    Reads and advances offsets through ``checkpoints``, reports every poll to
    ``liveness``, and hands every transition to ``outbox``.
    """

    kafka: KafkaSettings
    engine: Engine | PartitionEngines
    outbox: TransitionSink
    checkpoints: Checkpoints
    liveness: Liveness
    metrics: Metrics
    session_start_ns: int | None = None
    """Events stamped earlier are skipped (ns since the epoch); None skips nothing."""
    cancels: CancelTracker | None = None
    """Confirms halts' cancels after every batch and tick (None: not tracked)."""
    dead_letters: DeadLetters = field(init=False)
    flow: FlowReport = field(init=False)
    """Duplicates, skewed and late events seen, and the clock-skew alerts."""
    assigned: set[TopicPartition] = field(init=False, default_factory=set)
    """The input partitions assigned."""
    before_session: int = field(init=False, default=0)
    """Events skipped because they were stamped before the session start."""
    lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    """Held while a batch is applied, and by a rebalance while it rebuilds the state."""
    positioned: int = field(init=False, default=0)
    """Times the consumer was positioned again under :attr:`lock` (group mode: every
    assignment seeks each owned partition to the offset its state reflects). A batch
    fetched before that is not applied: its records are fetched again from there."""
    after_batch: Callable[[AIOKafkaConsumer], None] | None = field(init=False, default=None)
    """Called with the consumer after every poll, empty or not (group mode: restore
    progress; an owned partition with nothing to read is at its end all the same)."""
    catching_up: float | None = field(init=False, default=None)
    """Single mode: since when (``time.perf_counter``) newly assigned partitions are
    being read to their end (None: read). Until then events count in windows at their
    own time (:meth:`~riskguard.engine.Engine.count_at_own_time`): partitions are read
    at different speeds, and the backlog of one read behind another is history, not a
    late delivery; counted as now it would fill the current windows (a false breach on
    the first live event after a restart)."""
    caught_up_s: float | None = field(init=False, default=None)
    """Seconds the latest catch-up took (None: none finished yet)."""

    def __post_init__(self) -> None:
        self.dead_letters = DeadLetters(self.kafka.dead_letter_topic, self.metrics)
        self.flow = FlowReport(
            self.metrics, self.engine.killswitch, self.engine.settings.max_clock_skew_ms
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._lag_shown: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._fetching = False
        self._log = log.get("sidecar")
        self._fetch_errors = log.RepeatLimiter()

    def open(self, consumer: AIOKafkaConsumer, producer: Producer) -> None:
        """Consume with ``consumer`` (started, no subscription); dead-letter with ``producer``."""
        self._consumer = consumer
        self.dead_letters.open(producer)

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the consume loop has no consumer yet: call open() first")
        return self._consumer

    # assignment ----------------------------------------------------------------
    async def assign(self) -> list[str]:
        """Assign every input partition; each starts where the state left it.

        That is the snapshot's offset when one was loaded, else the session start
        (``offsets_for_times``) or the partition's beginning (state is rebuilt by
        replay). Breaches the previous instance already judged are not decided twice
        (``judge_until`` and per-scope judged times). Partitions gone from the topic (it
        was re-created with fewer) are no longer read, nor committed. Returns the
        partitions newly assigned (``"topic/partition"``), empty when none.

        Raises :class:`RuntimeError` before :meth:`open`, and aiokafka's
        ``KafkaError`` or :class:`TimeoutError` when the broker cannot say which
        partitions there are.
        """
        consumer = self._require_consumer()
        tps: list[TopicPartition] = []
        for topic in self.kafka.input_topics:
            tps += await partitions(consumer, topic, timeout_s=10.0)
        if set(tps) == self.assigned:
            return []
        gone = (self.assigned | set(self.checkpoints.applied)) - set(tps)
        if gone:  # a topic re-created with fewer (the topic-shape alert says so)
            self.checkpoints.forget(gone)
            self._log.error("input partitions gone: no longer read", partitions=_labels(gone))
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        applied = self.checkpoints.applied
        if self.session_start_ns is not None:  # start of day, where the broker can find it
            found = await consumer.offsets_for_times(
                {tp: self.session_start_ns // 1_000_000 for tp in tps if tp not in applied}
            )
            for tp, hit in found.items():
                if hit is not None and hit.offset > begin[tp]:
                    begin[tp] = hit.offset
        for tp in tps:
            start = applied.get(tp, begin[tp])
            if start < begin[tp]:
                self._log.error(
                    "input retention passed the snapshot: events were lost to state",
                    partition=f"{tp.topic}/{tp.partition}",
                    snapshot_offset=start,
                    beginning=begin[tp],
                )
                start = begin[tp]
            self.checkpoints.start_at(tp, start)
            consumer.seek(tp, start)
        new = _labels(set(tps) - self.assigned)
        self.assigned = set(tps)
        if new:
            self.engine.count_at_own_time(True)  # until every partition is read to its end
            self.catching_up = time.perf_counter()
        self.metrics.owned_partitions.set(len(tps))
        self._log.info("partitions assigned", partitions=new)
        return new

    # the loop ------------------------------------------------------------------
    def start(self, stop: asyncio.Event) -> asyncio.Task[None]:
        """Run the consume loop in a task until ``stop`` is set; returns the task.

        Raises :class:`RuntimeError` before :meth:`open`.
        """
        self._require_consumer()
        self._task = asyncio.create_task(self._run(stop), name="consume")
        return self._task

    async def finish(self) -> None:
        """After ``stop`` was set: finish the batch in hand, then return.

        A loop waiting on the broker has nothing in hand and is cancelled at once.
        """
        if self._task is None:
            return
        if self._fetching:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, stop: asyncio.Event) -> None:
        consumer = self._require_consumer()
        while not stop.is_set():
            self._fetching = True
            positioned = self.positioned
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=self.kafka.max_records)
            except KafkaError as exc:
                self.liveness.failed(repr(exc))
                left_out = self._fetch_errors.admit(type(exc).__name__)
                if left_out is not None:  # every 0.2 s while it lasts: once per 10 s
                    self._log.error("fetch failed", error=repr(exc), **log.repeats(left_out))
                await asyncio.sleep(0.2)
                continue
            finally:
                self._fetching = False
            self.liveness.polled()
            async with self.lock:
                batch = self._current(consumer, batch, positioned)
                if batch:
                    await self.apply(batch)
                if self.after_batch is not None:  # an empty poll too: empty partitions end
                    self.after_batch(consumer)
                self.report_lag(consumer)
                if self.catching_up is not None and read_to_end(consumer, self):
                    self._caught_up()
                self.checkpoints.maybe_snapshot()  # between batches: state and offsets agree

    def _current(self, consumer: AIOKafkaConsumer, batch: Batch, positioned: int) -> Batch:
        """What of ``batch`` is to be applied, it being polled when the consumer had been
        positioned ``positioned`` times: nothing when it was positioned again since (a
        rebalance sought the owned partitions to their state's offsets: a record polled
        before may lie past events the state lacks, or be applied twice), else the
        records of the partitions :attr:`assigned` (a partition gained whose state is not
        restored yet is positioned by its restore; one lost is not ours). Each owned
        partition left out is sought back to the offset its state reflects, so its
        records are fetched again from there (aiokafka drops what it holds of it)."""
        if not batch:
            return batch
        if positioned == self.positioned and all(tp in self.assigned for tp in batch):
            return batch
        keep = positioned == self.positioned
        applied = self.checkpoints.applied
        out: dict[TopicPartition, Sequence[Any]] = {}
        for tp, records in batch.items():
            if keep and tp in self.assigned:
                out[tp] = records
            elif tp in self.assigned and tp in applied:
                consumer.seek(tp, applied[tp])
        self._log.debug(
            "records polled before the partitions were positioned left out",
            partitions=_labels(set(batch) - set(out)),
        )
        return out

    def _caught_up(self) -> None:
        """Every assigned partition is read to its end: late events count as now again."""
        self.caught_up_s = time.perf_counter() - (self.catching_up or 0.0)
        self.catching_up = None
        self.engine.count_at_own_time(False)
        self._log.info(
            "input read to its end",
            partitions=len(self.assigned),
            seconds=round(self.caught_up_s, 3),
            events=self.engine.events_applied,
        )

    async def apply(self, batch: Batch) -> None:
        """Decode and apply one batch, then advance offsets and send transitions out.

        Bad events (undecodable, or refused by the engine) go to the dead-letter
        topic and never stop the batch; events stamped before the session start are
        counted and skipped. Redeliveries, skewed and late events are counted
        (:class:`~riskguard.ingest.flow.FlowReport`); skewed ones raise a rate-limited
        ``clock-skew`` system alert after the batch's transitions. Raises
        :class:`RuntimeError` before :meth:`open`.
        """
        self._require_consumer()
        started = time.perf_counter()
        events, where = await self._decode(batch)
        wall_ns = time.time_ns()
        result = self.engine.apply(events, where, wall_ns=wall_ns)
        # Offsets advance only now that the state reflects them: the commit and
        # snapshot tasks may run during the awaits above and must never see them early.
        self.checkpoints.advance(batch)
        for bad in result.bad:
            await self.dead_letters.send(bad, *where.message_at(bad.position))
        self.metrics.count_events(result.type_counts)
        alerts = self.flow.record(result, wall_ns)
        if result.transitions or alerts:  # state changes first: gates hear of them first
            await self.outbox.send([*result.transitions, *alerts])
        if self.cancels is not None:
            confirmed = self.cancels.check(events, time.time_ns())
            if confirmed:
                await self.outbox.send(confirmed)
        if events:
            self.metrics.last_event.set(max(e.ts for e in events[-64:]) / 1e9)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """``riskguard_consumer_lag_messages`` (high watermark minus the next offset to
        apply) of every assigned partition, after every poll, empty ones too: a broker
        answering with no records while a partition holds more is lag, never quiet (a
        gauge set only from batches would hold its last value, or never be set). A
        partition no longer assigned (a rebalance, a topic re-created) has no series.
        The consumer's own assignment is asked (a group's may move under the loop)."""
        applied, gauge = self.checkpoints.applied, self.metrics.consumer_lag
        shown: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None and tp in applied:
                gauge.labels(tp.topic, str(tp.partition)).set(max(0, high - applied[tp]))
                shown.add((tp.topic, str(tp.partition)))
        for labels in self._lag_shown - shown:
            gauge.remove(*labels)
        self._lag_shown = shown

    async def _decode(self, batch: Batch) -> tuple[list[Event], Coordinates]:
        """The batch's good events of this session, and where each came from."""
        events: list[Event] = []
        where = Coordinates()
        session = self.session_start_ns
        for tp, messages in batch.items():
            label = f"{tp.topic}/{tp.partition}"
            where.partition(label)
            for m in messages:
                value = m.value or b""
                try:  # the fast path; decode() below explains a failure
                    item = _event_decoder.decode(value)
                except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
                    bad = decode(value, f"{label}@{m.offset}")
                    assert isinstance(bad, BadEvent)
                    await self.dead_letters.send(bad, value, m.key)
                    continue
                if session is not None and item.ts < session:
                    self.before_session += 1  # yesterday's flow: not part of this session
                    continue
                events.append(item)
                where.add(m.offset, value, m.key)
        return events, where

    # the clock -----------------------------------------------------------------
    async def clock(self, interval_ms: int) -> None:
        """Forever: tick the engine's clock every ``interval_ms`` (time-based rules),
        send what it decides, check the cancel deadlines, and track event lag."""
        while True:
            await asyncio.sleep(interval_ms / 1000)
            now = time.time_ns()
            transitions = self.engine.tick(now)
            if transitions:
                await self.outbox.send(transitions)
            if self.cancels is not None:
                confirmed = self.cancels.check((), time.time_ns())
                if confirmed:
                    await self.outbox.send(confirmed)
            last = self.engine.last_event_ns
            if last > 0:
                self.metrics.event_lag.set(max(0.0, (now - last) / 1e9))


def read_to_end(consumer: AIOKafkaConsumer, intake: ConsumeLoop) -> bool:
    """Whether every partition ``intake`` has assigned is applied up to its high
    watermark as ``consumer``'s latest fetch reported it. Not while the consumer's
    assignment differs from ``intake``'s (a rebalance under way: a partition no longer
    assigned has no high watermark to ask for)."""
    if consumer.assignment() != intake.assigned:
        return False
    applied = intake.checkpoints.applied
    for tp in intake.assigned:
        high = consumer.highwater(tp)
        if high is None or applied.get(tp, 0) < high:
            return False
    return True


def _labels(tps: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
