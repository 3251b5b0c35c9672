"""The sidecar: consume events from Kafka, apply them, act on transitions within ms.

:class:`Sidecar` is only the lifecycle (start, run, stop) wiring the parts
together, and :meth:`Sidecar.status` assembling their reports:

- :class:`~riskguard.ingest.consume.ConsumeLoop`: fetch, decode, apply to the
  engine, dead letters; the engine's clock tick (the hot path, one task); its
  :class:`~riskguard.ingest.flow.FlowReport` counts redeliveries, clock skew and
  late events, and raises the clock-skew alerts;
- :class:`~riskguard.ingest.outbox.Outbox`: the one place a transition goes out
  (control topic awaited, then journal, metrics, audit, notifiers, log); a halt's
  cancel request follows its state record;
- :class:`~riskguard.ingest.cancels.CancelTracker`: builds each halt's cancel
  request and confirms its orders close (the ``cancel-incomplete`` alert);
- :class:`~riskguard.ingest.pretrade.PreTradeFeed`: per-order rules, marks, REDUCE_ONLY
  positions on the control topic for the gates' ``check()``;
- :class:`~riskguard.ingest.checkpoint.Checkpoints`: applied and committed offsets, snapshots;
- :class:`~riskguard.ingest.health.Health`: readiness, liveness, heartbeats, broker watch;
- :class:`~riskguard.ingest.peers.Peers`: the other instances of an active-active pair,
  followed on the control topic (their transitions adopted, four-eyes steps shared);
- :class:`~riskguard.ingest.scaleout.GroupMode` (group mode only): the partitions owned
  (one engine each, :class:`~riskguard.ingest.partitions.PartitionEngines`), and the
  cross-partition rules summed through the aggregation topic;
- :func:`~riskguard.ingest.recovery.recover`, :class:`~riskguard.ingest.reload.LimitsReloader`,
  :class:`~riskguard.ingest.manual.ManualActions`, :class:`~riskguard.control.api.ControlApi`,
  each against narrow interfaces (:mod:`riskguard.ingest.ports`).

On start the API answers first (``/livez`` alive, ``/readyz`` not ready with
``kernels_warm`` false while numba compiles, in a thread, beside the broker
connection). Then, before the first event is applied, riskguard loads its newest
snapshot and reads the control topic back: every standing halt is re-asserted, and
breaches the previous instance had already judged are not re-decided when input is
replayed to rebuild state. Every wait on the way is bounded (:class:`StartError`
says what failed, in one line); so is :meth:`Sidecar.stop`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import __version__, log
from riskguard.audit import AuditLog
from riskguard.control.api import ControlApi
from riskguard.control.overview import feeds
from riskguard.control.publisher import ControlPublisher
from riskguard.engine import Engine
from riskguard.ingest import report
from riskguard.ingest.cancels import CancelTracker
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.closing import stop_consumer
from riskguard.ingest.connect import (
    StartError,
    idempotence_refused,
    make_state_folders,
    wait_for_broker,
)
from riskguard.ingest.consume import ConsumeLoop
from riskguard.ingest.health import Health
from riskguard.ingest.manual import ManualActions
from riskguard.ingest.naming import default_instance
from riskguard.ingest.outbox import Outbox
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.peers import Peers, control_reader
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.ingest.producers import RenewingProducer
from riskguard.ingest.recovery import Recovered, recover, republish
from riskguard.ingest.reload import LimitsReloader
from riskguard.ingest.scaleout import GroupMode
from riskguard.ingest.tasks import TaskWatch
from riskguard.ingest.topic_shape import TopicWatch
from riskguard.ingest.topics import ensure_topics
from riskguard.ingest.warming import warm_in_thread
from riskguard.journal import HaltJournal
from riskguard.limits import Limits, load
from riskguard.limits.scale import check_group_limits, is_summed
from riskguard.metrics import Metrics
from riskguard.notify.dispatch import Notifier
from riskguard.settings import Settings, session_start_ns
from riskguard.vocabulary import Transition

__all__ = ["Sidecar", "StartError"]

#: Each part closed at a stop or after a failed start gets at most this long.
CLOSE_TIMEOUT_S = 3.0


class Sidecar:
    """One riskguard instance. ``await start()``, then ``await run()`` until stopped."""

    def __init__(self, settings: Settings, limits: Limits | None = None) -> None:
        """Build every part; nothing connects before :meth:`start`.

        Raises :class:`~riskguard.limits.LimitsError` when ``limits`` is not given and the
        limits file is unusable, :class:`~riskguard.settings.SettingsError` for a bad
        ``runtime.start_of_day``."""
        rt = settings.runtime
        self.settings = settings
        self.log = log.get("sidecar")
        self.metrics = Metrics()
        grouped = settings.scale.group  # summed rules: counted here, judged on the sums
        self.engine = Engine(
            limits or load(settings.limits),
            settings=settings.engine,
            warm=False,
            values_only=is_summed if grouped else None,
        )
        if grouped:  # rules neither local nor summed would be judged on partial sums
            check_group_limits(self.engine.limits)
        self.metrics.limits_rules.set(len(self.limits.rules))
        self.instance = rt.instance or default_instance()  # the host name
        self.engine.killswitch.instance = self.instance  # named on every decision
        #: what the input is applied to: the engine, or in group mode one per partition
        self.flow = PartitionEngines(self.engine) if grouped else self.engine
        self.audit = AuditLog(rt.audit_path)
        self.journal = HaltJournal(rt.journal_path)
        self.notifier = Notifier(settings.notifier, self.metrics, source=self.instance)
        self.cancels = CancelTracker(self.flow, self.metrics)
        self.outbox = Outbox(self.journal, self.metrics, self.audit, self.notifier, self.cancels)
        self.outbox.instance = self.instance  # named on system alerts
        self.feed = PreTradeFeed(self.engine, self.metrics, rt.gate_publish_interval_ms)
        self.health = Health(rt, self.instance, self.flow, self.outbox, self.metrics)
        self.health.checks["kernels_warm"] = False
        standing = self.engine.killswitch.standing  # re-published when the broker is back
        self.health.on_recovered = lambda: republish(
            standing().values(), self.outbox, self.feed, self._ensure_topics
        )
        self.checkpoints = Checkpoints(rt, self.engine, self.metrics)
        if isinstance(self.flow, PartitionEngines):
            self.checkpoints.by_partition(self.flow, rt.resolve(settings.scale.checkpoint_dir))
        self.intake = ConsumeLoop(
            settings.kafka,
            self.flow,
            self.outbox,
            self.checkpoints,
            self.health.liveness,
            self.metrics,
            session_start_ns(rt.start_of_day),
            cancels=self.cancels,
        )
        ks = self.engine.killswitch
        self.reloader = LimitsReloader(
            self.limits.source,
            self.flow,
            ks,
            self.outbox,
            self.audit,
            self.metrics,
            rules=self.feed,
            check=check_group_limits if grouped else None,
        )
        self.desk = ManualActions(ks, self.audit, self.outbox)
        self.api = ControlApi(
            settings.http,
            self.desk,
            self.health,
            self.status,
            self.metrics,
            facts=lambda: feeds(self.engine, self.metrics),  # console: silence, lag
        )
        self.peers = Peers(self.instance, ks, self.journal, self.audit, self.metrics, self.cancels)
        digest = lambda: self.limits.digest  # noqa: E731 - the limits in force, read late
        self.peers.join(self.outbox, self.health.sent, digest, self.api.four_eyes)
        self.group: GroupMode | None = None
        if isinstance(self.flow, PartitionEngines):  # ready once partitions are owned
            self.outbox.source = self.cancels.member = self.instance  # cancels of its own
            self.feed.books, self.feed.fill_prices = self.flow.all, self.flow.fill_prices
            self.peers.asks = self.outbox
            parts, ready = (self.feed, self.cancels), self.health.passed
            self.group = GroupMode(
                settings, self.instance, self.intake, self.peers.progress, parts, ready,
                self.outbox, self.feed, self.metrics,
            )  # fmt: skip
        extra = self.group.topics() if self.group is not None else {}
        self.topics = TopicWatch(settings.kafka, extra, self.outbox, ks.state, self.metrics)
        self.api_url = ""
        self.recovered = Recovered()
        self.producer: RenewingProducer | None = None
        self.data_producer: RenewingProducer | None = None  # gate data: never ahead of a halt
        self.consumer: AIOKafkaConsumer | None = None
        self.control_reader: AIOKafkaConsumer | None = None  # recovery, then peers
        self._stop = asyncio.Event()
        self.tasks = TaskWatch(self._stop)  # background tasks; one that fails stops riskguard
        self._refresh_failures = log.RepeatLimiter()
        self._phase = "created"
        self._stopping: asyncio.Future[bool] | None = None

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Connect, restore state and standing halts, and start consuming.

        Raises :class:`StartError` (one line: what, where, and what to do) when the
        API cannot bind, no broker answers within ``runtime.broker_wait_s`` or the
        broker refuses an idempotent producer; aiokafka's ``KafkaError`` or
        :class:`TimeoutError` for other broker failures (e.g. a refused login, a control
        topic that cannot be read to its end). Call :meth:`close` after a failed start.
        """
        k, rt = self.settings.kafka, self.settings.runtime
        client_id = f"riskguard-{self.instance}"
        make_state_folders(self.settings)
        try:  # /livez and /readyz answer during start-up, warm-up included
            self.api_url = await self.api.start()
        except OSError as exc:
            where = f"{self.settings.http.host}:{self.settings.http.port}"
            raise StartError(
                f"cannot serve the API on {where} (http.host, http.port): "
                f"{os.strerror(exc.errno or 0) if (exc.errno or 0) > 0 else (exc.strerror or exc)}"
            ) from exc
        self._phase = "starting"
        warm = warm_in_thread(self.log, lambda: self.health.passed("kernels_warm"))
        await wait_for_broker(k.bootstrap_servers, rt.broker_wait_s)
        await self._ensure_topics()
        options = {
            **k.client_options(),
            "acks": "all",
            "linger_ms": 0,
            "enable_idempotence": k.idempotent_producer,
        }
        self.producer = RenewingProducer(self.metrics, **options, client_id=client_id)
        try:
            await self.producer.start()
        except KafkaError as exc:
            if idempotence_refused(k, exc):
                raise StartError(
                    f"the broker at {k.bootstrap_servers} refused an idempotent producer "
                    f"({type(exc).__name__}): set kafka.idempotent_producer = false "
                    "for brokers without it (the bundled one)"
                ) from exc
            raise
        gate_data = f"{client_id}-gate-data"
        self.data_producer = RenewingProducer(self.metrics, **options, client_id=gate_data)
        await self.data_producer.start()
        control = ControlPublisher(
            self.producer,
            k.control_topic,
            self.metrics,
            data_producer=self.data_producer,
            ack_timeout_s=k.request_timeout_ms / 1000,
        )
        self.outbox.open(control)
        self.feed.open(control)
        await self.audit.start()
        await self.notifier.start()
        await warm  # the engine is used from here on
        if self.group is None:
            self.checkpoints.load()  # the snapshot first, then standing states on top
        self.control_reader = await control_reader(k, f"{client_id}-control")
        try:
            self.recovered = await recover(
                k, "", self.journal, self.flow, self.outbox, self.control_reader
            )
        except TimeoutError as exc:
            raise StartError(
                f"cannot restore standing states from the control topic {k.control_topic!r} "
                f"on {k.bootstrap_servers}: {exc}. If the broker restarted and lost its "
                "topics, delete that topic (or restart the broker empty) and start again: "
                f"the journal {self.journal.path} keeps the standing states and they are "
                "published again"
            ) from exc
        self.health.passed("control_topic_read")
        await self.outbox.send(self.checkpoints.take_resolves(self.engine.killswitch.state))
        await self.topics.check()  # standing states are in: a page can say what is wrong
        # from where recovery stopped reading: the other instances' records
        self.peers.open(self.control_reader, self.recovered.view, control)
        await self.feed.publish_round()  # the gates' rules (retried by the feed if not taken)
        # Single mode: partitions assigned by hand, the group id only commits offsets (lag
        # monitoring, restarts); group mode: the group shares them (riskguard.ingest.group)
        self.consumer = AIOKafkaConsumer(
            **k.client_options(consumer=True),
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            client_id=client_id,
            **(self.group.consumer_options() if self.group else {}),
        )
        await self.consumer.start()
        self.intake.open(self.consumer, self.producer)
        if self.group is not None:  # joins on the first fetch; ready once assigned
            for name, coro in await self.group.start(self.consumer, client_id):
                self.tasks.start(coro, name)
        else:
            try:
                await self.intake.assign()
            except TimeoutError as exc:
                raise StartError(
                    f"cannot assign the input topics {', '.join(k.input_topics)} on "
                    f"{k.bootstrap_servers}: {exc}"
                ) from exc
            self.health.passed("partitions_assigned")
        self.health.liveness.begin()  # alive from here means polling within the budget
        self.tasks.adopt(self.intake.start(self._stop))
        if rt.watch_limits:
            self.reloader.start_watching()
        for name, coro in (
            ("heartbeat", self.health.heartbeats(control)),
            ("tick", self.intake.clock(rt.tick_interval_ms)),
            ("broker-watch", self.health.watch_broker()),
            ("maintenance", self._maintenance()),
            ("gate-feed", self.feed.run()),
            ("peers", self.peers.run()),
            ("four-eyes-steps", self.peers.publish_steps()),
            ("topic-watch", self.topics.run()),
        ):
            self.tasks.start(coro, name)
        self._phase = "running"
        self.log.info(
            "riskguard started",
            instance=self.instance,
            version=__version__,
            limits=self.limits.source,
            rules=len(self.limits.rules),
            restored=self.restored,
            state_dir=str(rt.state_path),
            settings=repr(self.settings),
        )

    async def run(self) -> bool:
        """Run until :meth:`request_stop` (or SIGTERM via the CLI), then stop.

        Returns what :meth:`stop` returns, False also when a background task failed."""
        await self._stop.wait()
        return await self.stop() and not self.tasks.failed

    def request_stop(self) -> None:
        """Ask the sidecar to stop after the batch in hand."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was requested."""
        return self._stop.is_set()

    async def stop_requested(self) -> None:
        """Return once a stop is requested."""
        await self._stop.wait()

    async def stop(self) -> bool:
        """Finish the batch in hand, commit, snapshot, flush, and close everything.

        Bounded by ``runtime.stop_timeout_s`` whatever the broker does: past it, what is
        left is abandoned and logged. True: all finished in time, applied offsets committed.
        A second call while stopping waits for the first (one final snapshot, not two).
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_once())
        return await asyncio.shield(self._stopping)

    async def _stop_once(self) -> bool:
        self._stop.set()
        self._phase = "stopping"
        budget = self.settings.runtime.stop_timeout_s
        try:
            graceful = committed = await asyncio.wait_for(self._stop_gracefully(), budget)
        except TimeoutError:
            self.log.error(
                "graceful stop did not finish in time; closing anyway",
                stop_timeout_s=budget,
                committed=False,
            )
            await self.close()
            graceful = committed = False
        self._phase = "stopped"
        self.metrics.ready.set(0)
        applied = self.flow.events_applied
        self.log.info(
            "riskguard stopped", events_applied=applied, graceful=graceful, committed=committed
        )
        return graceful

    async def _stop_gracefully(self) -> bool:
        """The stop's steps in order; returns whether the final commit left nothing behind."""
        await self.intake.finish()
        await self.reloader.stop()
        await self.tasks.cancel()
        committed = await self.checkpoints.commit(self.consumer)
        await self.checkpoints.final()
        if self.consumer:
            await stop_consumer(self.consumer)
            self.consumer = None
        if self.control_reader:
            await stop_consumer(self.control_reader)
        if self.group is not None:
            await self.group.stop()
        await self.outbox.retry_pending()
        await self.notifier.drain(2.0)
        await self.notifier.stop()
        await self.audit.stop()
        for producer in (self.data_producer, self.producer):
            if producer:
                await producer.stop()
        self.data_producer = self.producer = None
        await self.api.stop()
        return committed

    async def close(self) -> None:
        """Release whatever was started, without committing or snapshotting: after a failed
        start, or a graceful stop out of time. Each part: :data:`CLOSE_TIMEOUT_S`; no raise."""
        self._stop.set()
        self.checkpoints.abandon_writer()  # its reaper thread would hold the exit
        await self.intake.finish()
        await self.reloader.stop()
        await self.tasks.cancel()
        parts: list[tuple[str, Any]] = [
            ("consumer", self.consumer and partial(stop_consumer, self.consumer)),
            ("control reader", self.control_reader and partial(stop_consumer, self.control_reader)),
            ("aggregation reader", self.group.stop if self.group else None),
            ("notifier", self.notifier.stop),
            ("audit", self.audit.stop),
            ("producer", self.producer.stop if self.producer else None),
            ("gate-data producer", self.data_producer.stop if self.data_producer else None),
            ("api", self.api.stop),
        ]
        for name, closer in parts:
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer(), CLOSE_TIMEOUT_S)
            except Exception as exc:  # closing is best effort; say what was left open
                self.log.warning("could not close cleanly", part=name, error=repr(exc))
        self.consumer = self.producer = self.data_producer = self.control_reader = None

    async def _ensure_topics(self) -> list[str]:
        """riskguard's topics, created if missing (at start), then, when the broker is
        back after an outage, checked (:class:`TopicWatch`)."""
        created = await ensure_topics(self.settings.kafka, self.topics.extra)
        if self._phase == "running":
            await self.topics.check()
        return created

    async def _maintenance(self) -> None:
        """Every commit interval: commit offsets, retry failed control publishes, and
        pick up partitions added to the input topics."""
        while True:
            await asyncio.sleep(self.settings.runtime.commit_interval_ms / 1000)
            await self.checkpoints.commit(self.consumer)
            await self.outbox.retry_pending()
            if self.group is not None:
                continue  # the group follows new partitions itself (a rebalance)
            try:
                await self.intake.assign()
            except (KafkaError, TimeoutError) as exc:
                left_out = self._refresh_failures.admit("partition refresh failed")
                if left_out is not None:
                    self.log.warning(
                        "partition refresh failed", error=repr(exc), **log.repeats(left_out)
                    )

    # operators ---------------------------------------------------------------
    async def manual(
        self, action: str, scope: str, operator: str, reason: str
    ) -> Transition | None:
        """An operator's halt, reduce_only or resume: the same path as automatic ones.

        See :meth:`riskguard.ingest.manual.ManualActions.manual` for what it raises.
        """
        return await self.desk.manual(action, scope, operator, reason)

    # reports -----------------------------------------------------------------
    @property
    def phase(self) -> str:
        """``created``, ``warming`` (kernels compiling during start), ``starting``,
        ``running``, ``stopping`` or ``stopped`` (in ``/v1/status``)."""
        if self._phase == "starting" and not self.health.checks["kernels_warm"]:
            return "warming"
        return self._phase

    @property
    def limits(self) -> Limits:
        """The limits in force (swapped by a reload)."""
        return self.engine.limits

    @property
    def checks(self) -> Mapping[str, bool]:
        """The readiness checks by name (see :data:`~riskguard.ingest.health.READY_CHECKS`)."""
        return self.health.checks

    def healthy(self) -> bool:
        """The consume loop polled recently (it is not stalled)."""
        return self.health.healthy()

    def ready(self) -> bool:
        """Every readiness check passes and the loop is healthy."""
        return self.health.ready()

    @property
    def bad_events(self) -> int:
        """Events that could not be applied (dead-lettered) since start."""
        return self.intake.dead_letters.count

    @property
    def before_session(self) -> int:
        """Events skipped because they were stamped before the session start."""
        return self.intake.before_session

    @property
    def assigned(self) -> set[TopicPartition]:
        """The input partitions being consumed."""
        return self.intake.assigned

    @property
    def restored(self) -> list[str]:
        """Scopes whose standing state was re-asserted at start."""
        return self.recovered.restored

    @property
    def republished(self) -> list[str]:
        """Scopes re-published at start because the control topic had lost them."""
        return self.recovered.republished

    def status(self) -> dict[str, Any]:
        """Standing scopes with evidence and each part's health (GET /v1/status)."""
        return report.status(self)
