"""Group mode's cross-partition rules over Kafka: publish this instance's parts, follow
everyone's, and (on one instance) judge the sums.

Every group-mode instance whose limits have summed rules
(:func:`riskguard.limits.scale.is_summed`):

- **publishes** its parts (:func:`riskguard.aggregate.contributions.contributions`) to
  ``scale.aggregate_topic`` (compacted, one partition) every
  ``scale.aggregate_interval_ms`` when they changed or events were applied, once the
  partitions it owns are restored (while restoring, its previous record keeps speaking
  for what it owned);
- **follows** the topic from its beginning and keeps each member's latest record (of
  its own group: the key is ``<group id>/<instance>``), decoded only where judged;
- **judges** the sums (:class:`riskguard.aggregate.judge.SumJudge`) when it owns the
  first input partition (the lowest ``topic/partition``; the group gives it to exactly
  one member), each time a record arrives and the records cover every input partition
  once (:func:`riskguard.aggregate.records.cover`). Its decisions go out through the
  outbox like the kernel's; the other instances adopt them from the control topic.

A decision on a summed rule therefore comes at most ``aggregate_interval_ms`` plus one
produce-to-consume hop after the events that cause it (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import (
    Contribution,
    Cover,
    Held,
    RaisedEdge,
    cover,
    decode,
    encode,
    position_sums,
)
from riskguard.ingest.consume import ConsumeLoop
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.ports import TransitionSink
from riskguard.ingest.pretrade import Held as Position
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.ingest.producers import Producer
from riskguard.limits.scale import summed_rules
from riskguard.metrics import Metrics
from riskguard.settings import ScaleSettings
from riskguard.vocabulary import Transition, system_alert

#: The largest record a member publishes (bytes, before compression): the aggregation
#: topic is created with it as ``max.message.bytes``, and the members' producer and
#: reader are sized for it. About 25 bytes per scope part: some 300,000 scope-rule pairs.
MAX_RECORD_BYTES = 8 << 20
#: The aggregation topic's settings: compacted, with one-minute segments so the cleaner
#: keeps it to about a minute of records plus the latest of each member (a member
#: starting reads it from the beginning).
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "60000",
    "max.message.bytes": str(MAX_RECORD_BYTES),
}

Whole = Callable[[], frozenset[str]]


class _AsOf(msgspec.Struct):
    """The part of a member's record every member reads: its latest event time."""

    as_of_ns: int = 0


_as_of = msgspec.json.Decoder(_AsOf)
"""Every input partition (``"topic/partition"``), from the input consumer's metadata."""


class Aggregation:
    """The aggregation topic's publisher, follower and judge for one group member."""

    def __init__(
        self,
        scale: ScaleSettings,
        group_id: str,
        instance: str,
        intake: ConsumeLoop,
        restored: Callable[[], bool],
        outbox: TransitionSink,
        feed: PreTradeFeed,
        metrics: Metrics,
    ) -> None:
        """``restored`` tells whether the partitions owned are read to their end
        (:attr:`riskguard.ingest.group.GroupOwnership.restored_s` set); ``feed``
        publishes the summed positions of REDUCE_ONLY scopes spanning partitions (and
        leaves them to this, publishing only accounts')."""
        self.scale = scale
        self.group_id = group_id
        self.instance = instance
        self.key = f"{group_id}/{instance}".encode()
        """The records' key: one record per member of the group stays after compaction."""
        self.intake = intake
        if not isinstance(intake.engine, PartitionEngines):
            raise TypeError("group mode reads into PartitionEngines")
        self.parts = intake.engine
        """The member's engines, one per owned partition: its parts are their sums."""
        self.engine = self.parts.home
        """The home engine: limits, rulebook, clock and the kill switch the sums are
        judged for."""
        self.restored = restored
        self.outbox = outbox
        self.feed = feed
        feed.accounts_only = True
        self.metrics = metrics
        self._positions_sent: dict[str, tuple[str, dict[str, Position]]] = {}
        self.judge = SumJudge(self.engine)
        self.incomplete_since: float | None = None
        """Monotonic time the judging member last found the sums not whole (None: whole)."""
        self._alert: Transition | None = None
        self.held: dict[str, Held] = {}
        """Each member's latest record, decoded (by the judging instance only)."""
        self._raw: dict[str, tuple[int, bytes, int]] = {}
        """Each member's latest record: offset, bytes, wall clock here when read."""
        self.group_clock_ns = 0
        """The latest event time in the other members' records (ns): this engine's clock
        follows it (:meth:`~riskguard.engine.Engine.follow_clock`), so that lateness is
        measured as one instance reading every partition measures it."""
        self._ahead: dict[str, int] = {}
        """Per member, the least (wall clock here when a record of it was read, less the
        record's ``sent_ns``) seen: how far this clock is ahead of its clock, plus the
        quickest transit (ns)."""
        self._unreadable: set[int] = set()
        self.cover = Cover(False)
        self.judging = False
        self.due = False
        """Whether there is anything to sum (summed rules, or a REDUCE_ONLY scope spanning
        partitions): with nothing to sum the sums are whole, and nothing pages."""
        """Whether this instance owns the first input partition (it judges the sums)."""
        self.other_limits: list[str] = []
        """Members whose latest record counts under limits other than ours (the judging
        member: nothing is judged until they agree)."""
        self.published = 0
        self._sent: tuple[object, ...] | None = None
        self.judge_since_ns = 0
        """Wall clock when this member last became the judge (0: never)."""
        self._raised: tuple[RaisedEdge, ...] = ()
        """The edges raised as of this member's last judging round (published)."""
        self._take_over = False
        """Just became the judge: take over the newest judge's raised edges first."""
        self._prior_since = 0
        """When this member's previous turn as the judge began (0: none)."""
        self.took_over_from: str | None = None
        """The member whose raised alerts this one took over (None: none)."""
        self._producer: Producer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._whole: Whole = frozenset
        self._log = log.get("aggregation")

    @property
    def rules(self) -> list[str]:
        """Names of the summed rules of the limits in force."""
        return [r.name for r in summed_rules(self.engine.limits)]

    async def open(self, producer: Producer, consumer: AIOKafkaConsumer, whole: Whole) -> None:
        """Publish with ``producer``; follow the topic from its beginning with
        ``consumer`` (started, no group); ``whole`` lists every input partition."""
        self._producer, self._consumer, self._whole = producer, consumer, whole
        tp = TopicPartition(self.scale.aggregate_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)

    # publishing ------------------------------------------------------------------
    async def publish(self) -> None:
        """Forever: every ``aggregate_interval_ms``, send this instance's parts if they
        changed (not while its partitions are restoring). A failed send is logged and
        retried at the next interval."""
        while True:
            await asyncio.sleep(self.scale.aggregate_interval_ms / 1000)
            try:
                await self.publish_once()
            except (KafkaError, TimeoutError) as exc:  # the sums wait; sums-incomplete pages
                retriable = isinstance(exc, TimeoutError) or getattr(exc, "retriable", False)
                say = self._log.warning if retriable else self._log.error
                say("aggregation record not sent", error=repr(exc), retried=True)

    async def publish_once(self) -> bool:
        """Send the parts now if they changed or events were applied since the last
        record (its ``as_of_ns`` moved: new evidence, on which the judge decides a breach
        still standing after an operator's resume, even if the parts came out the same);
        True if a record was sent."""
        names = self.rules
        spanning = self._reduce_only_spanning()
        if self._producer is None or not (names or spanning) or not self.restored():
            return False
        async with self.intake.lock:  # between batches: parts and partitions agree
            self.parts.follow_clock(self.group_clock_ns)
            read = self.engine.clock()
            parts = self.parts.contributions(names, read)
            positions = {scope: self.parts.scope_positions(scope) for scope in spanning}
            leaves = {scope: self.parts.scope_leaves(scope) for scope in spanning}
            owned = tuple(sorted(f"{t.topic}/{t.partition}" for t in self.intake.assigned))
            as_of = self.parts.last_event_ns
        digest = self.engine.limits.digest
        key = (parts, owned, digest, positions, leaves, self.judge_since_ns, self._raised, as_of)
        if key == self._sent:
            return False
        record = Contribution(
            group=self.group_id,
            instance=self.instance,
            partitions=owned,
            limits_digest=digest,
            as_of_ns=as_of,
            sent_ns=time.time_ns(),
            parts=parts,
            positions=positions,
            judge_since_ns=self.judge_since_ns,
            raised=self._raised,
            read_ns=read,
            leaves=leaves,
        )
        await self._producer.send_and_wait(  # partition 0, the one read: a topic re-created
            self.scale.aggregate_topic, encode(record), key=self.key, partition=0
        )  # with more partitions would otherwise hash members' records out of sight
        self._sent = key
        self.published += 1
        self.metrics.aggregate_published.inc()
        return True

    # following and judging --------------------------------------------------------
    async def follow(self) -> None:
        """Forever: read the topic's new records; take the sums after a batch of them,
        at most once per ``aggregate_interval_ms`` (records arriving meanwhile wait for
        the next round: a round costs the same for one record as for all). A fetch that
        fails is logged and retried."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("aggregation: call open() first")
        interval = self.scale.aggregate_interval_ms / 1000
        last = 0.0
        waiting = False
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=round(interval * 1000))
            except KafkaError as exc:
                self._log.warning("aggregation fetch failed", error=repr(exc), retried=True)
                await asyncio.sleep(0.2)
                continue
            for messages in batch.values():
                for m in messages:
                    self._take(m.offset, m.key, m.value)
                    waiting = True
            if waiting:
                wait = interval - (time.monotonic() - last)
                if wait > 0:  # records arriving meanwhile are read after this round
                    await asyncio.sleep(wait)
                waiting, last = False, time.monotonic()
                await self.judge_now()
            await self._watch()

    def _take(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Keep the latest record of each member of this group, undecoded (only the
        judging instance reads them). Another group's records are left alone."""
        group, _, instance = (key or b"").decode(errors="replace").partition("/")
        if group != self.group_id:
            return
        if value is None:  # a tombstone: that member's record is gone
            self._raw.pop(instance, None)
            self.held.pop(instance, None)
            self._ahead.pop(instance, None)
        else:
            self._raw[instance] = (offset, value, time.time_ns())
            if instance != self.instance:
                try:
                    as_of = _as_of.decode(value).as_of_ns
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return  # unreadable: the judge counts and logs it
                self.group_clock_ns = max(self.group_clock_ns, as_of)

    def _decoded(self) -> dict[str, Held]:
        """The records held, decoded once each. One that cannot be read is counted,
        logged and left out (the cover then misses its partitions: nothing is judged on
        a partial sum)."""
        for instance, (offset, value, received) in self._raw.items():
            held = self.held.get(instance)
            if held is not None and held.offset == offset:
                continue
            self.held.pop(instance, None)
            try:
                record = decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if offset not in self._unreadable:
                    self._unreadable.add(offset)
                    self.metrics.aggregate_bad.inc()
                    self._log.error(
                        "aggregation record unreadable; left out",
                        instance=instance,
                        offset=offset,
                        error=str(exc),
                    )
                continue
            self.held[instance] = Held(offset, record)
            ahead = received - record.sent_ns
            self._ahead[instance] = min(ahead, self._ahead.get(instance, ahead))
        return self.held

    @property
    def lag(self) -> dict[str, int]:
        """Per member, how far this instance's clock is ahead of its clock (ns), for the
        expiry of a silent member's window counts: the least gap between a record's
        ``sent_ns`` and when it was read here. A gap beyond the clock skew the engine
        tolerates (``engine.max_clock_skew_ms``) is a record older than this reader (read from the
        topic's beginning), not a clock: that member's clock is taken as this one's."""
        bound = int(self.engine.rulebook.rules.skew_ns)
        return {k: v for k, v in self._ahead.items() if abs(v) <= bound}

    async def judge_now(self) -> None:
        """When this instance judges: take the cover of the records held, and judge it.

        The sums are *due* while the limits have summed rules or a scope spanning
        partitions is REDUCE_ONLY; while due and not whole (a partition not counted once,
        or members counting under other limits) nothing is judged and
        :attr:`incomplete_since` runs (the ``sums-incomplete`` alert)."""
        whole = self._whole()
        self._note_judging(whole)
        due = self.due = bool(self.rules or self._reduce_only_spanning())
        if not self.judging or not due:
            self.incomplete_since = None
            return
        limits = self.engine.limits
        self.cover = cover(self._decoded(), whole)
        self.other_limits = sorted(
            r.instance for r in self.cover.records if r.limits_digest != limits.digest
        )
        whole_here = self.cover.complete and not self.other_limits
        self.metrics.aggregate_complete.set(1 if whole_here else 0)
        if not whole_here:
            if self.incomplete_since is None:
                self.incomplete_since = time.monotonic()
            return
        self.incomplete_since = None
        self.metrics.aggregate_age.set(max(0.0, (time.time_ns() - self.cover.oldest_ns) / 1e9))
        if self._take_over:
            self._take_over_edges(limits.digest)
        transitions = self.judge.judge(
            self.cover, summed_rules(limits), limits.digest, lag=self.lag
        )
        self._raised = self.judge.raised_edges()
        if transitions:
            await self.outbox.send(transitions)
        await self._publish_positions()

    def _note_judging(self, whole: frozenset[str]) -> None:
        """Whether this member owns the first input partition (it judges the sums)."""
        first = min(whole) if whole else None
        owned = {f"{t.topic}/{t.partition}" for t in self.intake.assigned}
        judging = first is not None and first in owned
        if judging and not self.judging:  # raised edges are taken over at the first round
            self._prior_since = self.judge_since_ns  # this member's previous turn, if any
            self.judge_since_ns, self._take_over = time.time_ns(), True
        self.judging = judging
        self.metrics.aggregate_judging.set(1 if self.judging else 0)

    def _take_over_edges(self, digest: str) -> None:
        """Hold as raised the alerts and warnings of the newest other judge's record (of
        the same limits), unless this member's own previous turn came later (its edges
        are still here): one standing at the handover is not raised again."""
        self._take_over = False
        previous = max(
            (
                h.record
                for h in self.held.values()
                if h.record.instance != self.instance and h.record.judge_since_ns > 0
            ),
            key=lambda r: r.judge_since_ns,
            default=None,
        )
        if previous is None or previous.judge_since_ns < self._prior_since:
            return  # no judge before, or this member's own last turn came later (kept)
        if previous.limits_digest != digest:
            self._log.warning(
                "raised alerts not taken over: the previous judge counted under other limits",
                previous=previous.instance,
            )
            return
        self.judge.take_over(previous.raised, digest)
        self.took_over_from = previous.instance
        self._log.info(
            "judging the sums: took over the previous judge's raised alerts",
            previous=previous.instance,
            raised=len(previous.raised),
        )

    def _reduce_only_spanning(self) -> dict[str, Transition]:
        """REDUCE_ONLY scopes spanning partitions (not accounts), with their transition."""
        return {
            scope: tr
            for scope, tr in self.engine.killswitch.standing().items()
            if tr.to == "REDUCE_ONLY" and not scope.startswith("account:")
        }

    async def _publish_positions(self) -> None:
        """The judging member: publish the summed positions of every REDUCE_ONLY scope
        spanning partitions that every member has reported, those that changed since
        published in the same REDUCE_ONLY episode (all of them on entering it)."""
        spanning = self._reduce_only_spanning()
        for scope in [s for s in self._positions_sent if s not in spanning]:
            del self._positions_sent[scope]
        sums = position_sums(self.cover.records, spanning)
        due: dict[str, dict[str, Position]] = {}
        for scope, by_symbol in sums.items():
            tid = spanning[scope].id
            known = self._positions_sent.get(scope)
            before = known[1] if known is not None and known[0] == tid else None
            changed = {y: q for y, q in by_symbol.items() if before is None or before.get(y) != q}
            if changed or before is None:
                due[scope] = changed
        if due and await self.feed.publish_positions(due):
            for scope, changed in due.items():
                known = self._positions_sent.get(scope)
                tid = spanning[scope].id
                if known is None or known[0] != tid:
                    self._positions_sent[scope] = (tid, dict(changed))
                else:
                    known[1].update(changed)

    async def _watch(self) -> None:
        """The judging member: raise ``sums-incomplete`` once the sums have not been
        whole for ``scale.aggregate_alert_ms``; ``sums-complete`` (naming it) once
        they are again."""
        self._note_judging(self._whole())  # the gauge follows the assignment, records or not
        self.due = bool(self.rules or self._reduce_only_spanning())
        if self.judging and not self.due:  # nothing to sum is whole: nothing pages
            self.incomplete_since = None
            self.metrics.aggregate_complete.set(1)
        now = time.monotonic()
        firm = self.engine.killswitch.state("firm")
        late = self.incomplete_since is not None and (
            now - self.incomplete_since >= self.scale.aggregate_alert_ms / 1000
        )
        if late and self._alert is None and self.judging:
            c = self.cover
            self._alert = system_alert(
                "sums-incomplete",
                "aggregate_incomplete_ms",
                firm,
                value=round((now - (self.incomplete_since or now)) * 1000, 1),
                limit=float(self.scale.aggregate_alert_ms),
                reason=(
                    f"cross-partition rules ({', '.join(self.rules) or 'none'}) and REDUCE_ONLY "
                    "positions across members are not judged: "
                    + (
                        f"members {', '.join(self.other_limits)} count under other limits "
                        "(a limits file that differs between members)"
                        if c.complete
                        else "the aggregation records do not count every input partition "
                        f"once (missing: {', '.join(sorted(c.missing)) or 'none'}; superseded "
                        f"in part: {', '.join(sorted(c.split)) or 'none'}); a rebalance or "
                        "restore under way, or a member that cannot publish"
                    )
                ),
            )
            await self.outbox.send([self._alert])
        elif self._alert is not None and self.incomplete_since is None:
            ended, self._alert = self._alert, None
            why = (
                f"cross-partition rules judged again, on {len(self.cover.records)} members"
                if self.judging
                else "another member judges the cross-partition rules now"
            )
            done = system_alert("sums-complete", "aggregate_incomplete_ms", firm, reason=why)
            await self.outbox.send([msgspec.structs.replace(done, ends=ended.id)])

    def status(self) -> dict[str, Any]:
        """For ``/v1/status`` (``scale.aggregate``): the summed rules, whether the
        records cover the input, who judges, and the latest sums judged."""
        c = self.cover
        return {
            "topic": self.scale.aggregate_topic,
            "interval_ms": self.scale.aggregate_interval_ms,
            "rules": self.rules,
            "judging": self.judging,
            "members": sorted(self._raw),
            "due": self.due,
            "complete": (c.complete if self.due else True) if self.judging else None,
            "other_limits": self.other_limits if self.judging else [],
            "instances": [r.instance for r in c.records] if self.judging else [],
            "missing": sorted(c.missing) if self.judging else [],
            "split": sorted(c.split) if self.judging else [],
            "as_of_ns": (c.as_of_ns or None) if self.judging else None,
            "incomplete_alert": self._alert.id if self._alert else None,
            "published": self.published,
            "sums": self.judge.values if self.judging else {},
            "unsummed": list(self.judge.unsummed),
            "positions_published": sorted(self._positions_sent) if self.judging else [],
            "raised": len(self._raised) if self.judging else 0,
            "took_over_from": self.took_over_from,
        }
