"""The sidecar: consume events from Kafka, apply them, act on transitions within ms.

Hot path (one task): ``getmany`` -> decode -> ``Engine.apply`` -> publish state
changes to the control topic (acks=all, awaited). Everything else hangs off it:
notifiers and the audit log are queues, metrics are counted per batch, and the
heartbeat, clock tick, commit and retry loops are separate tasks.

On start, before the first event is applied, riskguard reads the control topic
back: every standing halt is re-asserted, and breaches the previous instance had
already judged are not re-decided when input is replayed to rebuild state.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from riskguard import __version__, log
from riskguard.audit import AuditLog
from riskguard.control.api import ControlApi
from riskguard.control.publisher import ControlPublisher
from riskguard.control.reader import partitions
from riskguard.control.records import HeartbeatRecord
from riskguard.engine import Engine
from riskguard.events import BadEvent, Event, decode
from riskguard.events import _decoder as _event_decoder
from riskguard.ingest.health import BrokerWatch, Edge
from riskguard.ingest.positions import Positions
from riskguard.ingest.recovery import Snapshotter, recover
from riskguard.ingest.reload import LimitsReloader
from riskguard.ingest.topics import ensure_topics
from riskguard.journal import HaltJournal
from riskguard.limits import Limits, load
from riskguard.metrics import Metrics
from riskguard.notify.dispatch import Notifier
from riskguard.settings import Settings, session_start_ns
from riskguard.vocabulary import Transition

READY_CHECKS = (
    "limits_loaded",
    "kernels_warm",
    "control_topic_read",
    "partitions_assigned",
    "broker_reachable",
)


class Sidecar:
    """One riskguard instance. ``await start()``, then ``await run()`` until stopped."""

    def __init__(self, settings: Settings, limits: Limits | None = None) -> None:
        self.settings = settings
        self.log = log.get("sidecar")
        self.metrics = Metrics()
        self.limits = limits or load(settings.limits)
        self.engine = Engine(self.limits)  # compiles or loads the kernels: warm before events
        self.checks = dict.fromkeys(READY_CHECKS, False)
        self.checks["limits_loaded"] = self.checks["kernels_warm"] = True
        self.checks["broker_reachable"] = True
        self.broker = BrokerWatch(settings.runtime.broker_budget_ms)
        self.reloader = LimitsReloader(self, self.limits.source)
        self.metrics.limits_rules.set(len(self.limits.rules))
        self.instance = settings.runtime.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.audit = AuditLog(settings.runtime.audit_log)
        self.journal = HaltJournal(settings.runtime.journal)
        self.republished: list[str] = []
        self.notifier = Notifier(settings.notifier, self.metrics, source=self.instance)
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.control: ControlPublisher | None = None
        self.applied: dict[TopicPartition, int] = {}  # next offset to apply, per partition
        self.assigned: set[TopicPartition] = set()
        self.session_start_ns = session_start_ns(settings.runtime.start_of_day)
        self.before_session = 0
        self.snapshotter = Snapshotter(self)
        self.committed: dict[TopicPartition, int] = {}
        self.restored: list[str] = []
        self.last_poll_mono = time.monotonic()
        self.started_ns = time.time_ns()
        self.bad_events = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consume_task: asyncio.Task[None] | None = None
        self._fetching = False
        self.api = ControlApi(self)
        self.api_url = ""

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Connect, restore standing halts, and start consuming."""
        k = self.settings.kafka
        self.api_url = await self.api.start()  # /livez and /readyz answer during start-up
        await ensure_topics(k)
        self.producer = AIOKafkaProducer(
            **k.client_options(),
            acks="all",
            linger_ms=0,
            enable_idempotence=k.idempotent_producer,
            client_id=f"riskguard-{self.instance}",
        )
        await self.producer.start()
        self.control = ControlPublisher(self.producer, k.control_topic, self.metrics)
        await self.audit.start()
        await self.notifier.start()
        await self._restore()
        # Every partition of every input topic, assigned by hand: a kill switch must see
        # the whole firm's flow, and a consumer group would split partitions between
        # instances (silently breaking firm-wide limits) and stall starts on rebalances.
        # The group id is used only to commit offsets (lag monitoring, restarts).
        self.consumer = AIOKafkaConsumer(
            **k.client_options(consumer=True),
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            client_id=f"riskguard-{self.instance}",
        )
        await self.consumer.start()
        await self._assign()
        self._consume_task = asyncio.create_task(self._consume(), name="consume")
        if settings_watch(self):
            self.reloader.start_watching()
        for name, coro in (
            ("heartbeat", self._heartbeats()),
            ("tick", self._ticks()),
            ("maintenance", self._maintenance()),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))
        self.log.info(
            "riskguard started",
            instance=self.instance,
            version=__version__,
            limits=self.limits.source,
            rules=len(self.limits.rules),
            restored=self.restored,
            settings=repr(self.settings),
        )

    async def _restore(self) -> None:
        """Snapshot first, then standing states; see :mod:`riskguard.ingest.recovery`."""
        await recover(self)

    async def run(self) -> None:
        """Run until :meth:`request_stop` (or SIGTERM via the CLI), then stop gracefully."""
        await self._stop.wait()
        await self.stop()

    def request_stop(self) -> None:
        """Ask the sidecar to stop after the batch in hand."""
        self._stop.set()

    async def stop(self) -> None:
        """Finish the batch in hand, commit, flush, and close everything."""
        self._stop.set()
        if self._consume_task:
            if self._fetching:  # waiting on the broker, nothing in hand: safe to cancel
                self._consume_task.cancel()
            await asyncio.gather(self._consume_task, return_exceptions=True)
        await self.reloader.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.commit()
        await self.snapshotter.final()
        if self.consumer:
            await self.consumer.stop()
        if self.control:
            await self.control.retry_pending()
        await self.notifier.drain(2.0)
        await self.notifier.stop()
        await self.audit.stop()
        if self.producer:
            await self.producer.stop()
        await self.api.stop()
        self.metrics.ready.set(0)
        self.log.info("riskguard stopped", events_applied=self.engine.events_applied)

    # hot path ----------------------------------------------------------------
    async def _consume(self) -> None:
        assert self.consumer is not None
        k = self.settings.kafka
        while not self._stop.is_set():
            self._fetching = True
            try:
                batch = await self.consumer.getmany(timeout_ms=100, max_records=k.max_records)
            except KafkaError as exc:
                self.log.error("fetch failed", error=repr(exc))
                await asyncio.sleep(0.2)
                continue
            finally:
                self._fetching = False
            self.last_poll_mono = time.monotonic()
            if batch:
                await self._apply(batch)
            self.snapshotter.maybe()  # between batches only: state and offsets agree

    async def _assign(self) -> None:
        """Assign every input partition; each starts where the state left it.

        That is the snapshot's offset when one was loaded, else the partition's
        beginning (state is rebuilt by replay). Breaches the previous instance already
        judged are not decided twice (``judge_until`` and per-scope judged times).
        """
        assert self.consumer is not None
        tps: list[TopicPartition] = []
        for topic in self.settings.kafka.input_topics:
            tps += await partitions(self.consumer, topic, timeout_s=10.0)
        if set(tps) <= self.assigned:
            return
        self.consumer.assign(tps)
        begin = await self.consumer.beginning_offsets(tps)
        if self.session_start_ns is not None:  # start of day, where the broker can find it
            found = await self.consumer.offsets_for_times(
                {tp: self.session_start_ns // 1_000_000 for tp in tps if tp not in self.applied}
            )
            for tp, hit in found.items():
                if hit is not None and hit.offset > begin[tp]:
                    begin[tp] = hit.offset
        for tp in tps:
            start = self.applied.get(tp, begin[tp])
            if start < begin[tp]:
                self.log.error(
                    "input retention passed the snapshot: events were lost to state",
                    partition=f"{tp.topic}/{tp.partition}",
                    snapshot_offset=start,
                    beginning=begin[tp],
                )
                start = begin[tp]
            self.applied[tp] = start
            self.consumer.seek(tp, start)
        new = sorted(f"{t.topic}/{t.partition}" for t in tps if t not in self.assigned)
        self.assigned = set(tps)
        self.checks["partitions_assigned"] = True
        self.log.info("partitions assigned", partitions=new)

    async def _apply(self, batch: dict[TopicPartition, Sequence[Any]]) -> None:
        started = time.perf_counter()
        events: list[Event] = []
        where = Positions()
        session = self.session_start_ns
        for tp, messages in batch.items():
            where.partition(f"{tp.topic}/{tp.partition}")
            for m in messages:
                value = m.value or b""
                try:  # the fast path; decode() below explains a failure
                    item = _event_decoder.decode(value)
                except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
                    bad = decode(value, f"{tp.topic}/{tp.partition}@{m.offset}")
                    assert isinstance(bad, BadEvent)
                    await self._dead_letter(bad, value, m.key)
                    continue
                if session is not None and item.ts < session:
                    self.before_session += 1  # yesterday's flow: not part of this session
                    continue
                events.append(item)
                where.add(m.offset, value)
        result = self.engine.apply(events, where, wall_ns=time.time_ns())
        # Offsets advance only now that the state reflects them: the commit and
        # snapshot tasks may run during the awaits above and must never see them early.
        for tp, messages in batch.items():
            self.applied[tp] = messages[-1].offset + 1
        for bad in result.bad:
            await self._dead_letter(bad, where.value_at(bad.position), None)
        self.metrics.count_events(result.type_counts)
        if result.transitions:
            await self.dispatch(result.transitions)
        if events:
            self.metrics.last_event.set(max(e.ts for e in events[-64:]) / 1e9)
        assert self.consumer is not None
        for tp in batch:
            high = self.consumer.highwater(tp)
            if high is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - self.applied[tp])
                )
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _dead_letter(self, bad: BadEvent, value: bytes, key: bytes | None) -> None:
        """Count, log and forward a bad event; the consumer always moves on."""
        self.bad_events += 1
        self.metrics.bad_events.labels(bad.reason).inc()
        self.log.warning(
            "bad event", reason=bad.reason, detail=bad.detail[:300], position=bad.position
        )
        assert self.producer is not None
        headers = [
            ("riskguard.reason", bad.reason.encode()),
            ("riskguard.detail", bad.detail[:1000].encode()),
            ("riskguard.position", bad.position.encode()),
        ]
        try:
            await self.producer.send(
                self.settings.kafka.dead_letter_topic, value, key=key, headers=headers
            )
        except KafkaError as exc:  # counted and logged above; the event itself is in the log
            self.log.error("dead-letter publish failed", error=repr(exc), position=bad.position)

    async def dispatch(self, transitions: list[Transition]) -> None:
        """Act on transitions: control topic (awaited), then metrics, audit, notifiers."""
        assert self.control is not None
        await self.control.publish(transitions)
        try:
            await asyncio.to_thread(self.journal.append, transitions)
        except OSError as exc:  # the control topic still has it; say so loudly
            self.log.error("journal write failed", path=str(self.journal.path), error=str(exc))
        for tr in transitions:
            self.metrics.transition(tr)
            self.audit.record("transition", tr)
            self.notifier.submit(tr)
            self.log.warning(
                "transition",
                scope=tr.scope,
                from_state=tr.from_,
                to=tr.to,
                kind=tr.kind,
                rule=tr.rule,
                value=tr.value,
                limit=tr.limit,
                operator=tr.operator,
                reason=tr.reason,
                id=tr.id,
            )

    async def manual(
        self, action: str, scope: str, operator: str, reason: str
    ) -> Transition | None:
        """An operator's halt, reduce_only or resume: the same path as automatic ones."""
        ks = self.engine.killswitch
        if action == "resume":
            tr = ks.resume(scope, operator, reason)
        else:
            tr = ks.halt(scope, operator, reason, action=action)
        self.audit.record(
            "manual",
            {
                "action": action,
                "scope": scope,
                "operator": operator,
                "reason": reason,
                "changed": tr is not None,
            },
        )
        if tr is not None:
            await self.dispatch([tr])
        return tr

    # side loops --------------------------------------------------------------
    def healthy(self) -> bool:
        """The consume loop polled recently (it is not stalled)."""
        budget = self.settings.runtime.stall_budget_ms / 1000
        return time.monotonic() - self.last_poll_mono < budget

    def ready(self) -> bool:
        """Every readiness check passes and the loop is healthy."""
        return all(self.checks.values()) and self.healthy()

    async def _heartbeats(self) -> None:
        rt = self.settings.runtime
        while True:
            ready = self.ready()
            self.metrics.ready.set(1 if ready else 0)
            if self.healthy() and self.control is not None:
                ok = await self.control.heartbeat(
                    HeartbeatRecord(
                        ts=time.time_ns(),
                        instance=self.instance,
                        ready=ready,
                        interval_ms=rt.heartbeat_interval_ms,
                        last_event_ns=self.engine.last_event_ns,
                        events_applied=self.engine.events_applied,
                    )
                )
                self._broker_edge(self.broker.observe(ok))
            await asyncio.sleep(rt.heartbeat_interval_ms / 1000)

    def _broker_edge(self, edge: Edge | None) -> None:
        """Not ready (and alert) when the broker has taken nothing for the budget."""
        self.checks["broker_reachable"] = self.broker.reachable
        self.metrics.broker_reachable.set(1 if self.broker.reachable else 0)
        if edge is None:
            return
        alert = self.broker.alert(edge, self.engine.killswitch.state("firm"))
        log_at = self.log.error if edge == "lost" else self.log.warning
        log_at(f"broker {edge}", silent_ms=alert.value, budget_ms=self.broker.budget_ms)
        self.metrics.transition(alert)
        self.audit.record("transition", alert)
        self.notifier.submit(alert)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.settings.runtime.tick_interval_ms / 1000)
            now = time.time_ns()
            self._broker_edge(self.broker.check())
            transitions = self.engine.tick(now)
            if transitions:
                await self.dispatch(transitions)
            last = self.engine.last_event_ns
            if last > 0:
                self.metrics.event_lag.set(max(0.0, (now - last) / 1e9))

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(self.settings.runtime.commit_interval_ms / 1000)
            await self.commit()
            if self.control is not None:
                await self.control.retry_pending()
            try:
                await self._assign()  # picks up partitions added to the input topics
            except (KafkaError, TimeoutError) as exc:
                self.log.warning("partition refresh failed", error=repr(exc))

    async def commit(self) -> None:
        """Commit the offsets of applied events (never beyond what state reflects)."""
        todo = {
            tp: OffsetAndMetadata(off, "")
            for tp, off in self.applied.items()
            if self.committed.get(tp) != off
        }
        if not todo or self.consumer is None:
            return
        try:
            await self.consumer.commit(todo)
            self.committed.update({tp: meta.offset for tp, meta in todo.items()})
        except KafkaError as exc:
            self.log.warning("commit failed", error=repr(exc))

    def status(self) -> dict[str, Any]:
        """Standing scopes with evidence, plus a health summary (for GET /v1/status)."""
        standing = {
            scope: msgspec.to_builtins(tr)
            for scope, tr in self.engine.killswitch.standing().items()
        }
        last = self.engine.last_event_ns
        return {
            "instance": self.instance,
            "version": __version__,
            "ready": self.ready(),
            "checks": {**self.checks, "loop_healthy": self.healthy()},
            "standing": standing,
            "events_applied": self.engine.events_applied,
            "bad_events": self.bad_events,
            "skipped_before_session": self.before_session,
            "last_event_ns": last if last > 0 else None,
            "limits": {
                "last_reload_error": self.reloader.last_error or None,
                "source": self.limits.source,
                "sha256": self.limits.digest,
                "rules": len(self.limits.rules),
            },
            "control_pending": sorted(self.control.pending) if self.control else [],
            "notifiers": self.notifier.status(),
            "restored_at_start": self.restored,
            "snapshot": self.snapshotter.status(),
            "republished_at_start": self.republished,
            "journal": str(self.journal.path),
        }


def settings_watch(sidecar: Sidecar) -> bool:
    """Watch the limits file only when it is a real file and watching is enabled."""
    return sidecar.settings.runtime.watch_limits and Path(sidecar.limits.source).is_file()
