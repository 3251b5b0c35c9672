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
- :class:`~riskguard.ingest.pretrade.PreTradeFeed`: per-order rules, marks and
  REDUCE_ONLY positions on the control topic for the gates' ``check()``;
- :class:`~riskguard.ingest.checkpoint.Checkpoints`: applied and committed
  offsets, snapshots;
- :class:`~riskguard.ingest.health.Health`: readiness, loop liveness, heartbeats,
  the broker watch;
- :func:`~riskguard.ingest.recovery.recover`, :class:`~riskguard.ingest.reload.LimitsReloader`,
  :class:`~riskguard.ingest.manual.ManualActions` and the
  :class:`~riskguard.control.api.ControlApi`, each against narrow interfaces
  (:mod:`riskguard.ingest.ports`).

On start, before the first event is applied, riskguard loads its newest snapshot
and reads the control topic back: every standing halt is re-asserted, and breaches
the previous instance had already judged are not re-decided when input is
replayed to rebuild state.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from riskguard import __version__, log
from riskguard.audit import AuditLog
from riskguard.control.api import ControlApi
from riskguard.control.overview import feeds
from riskguard.control.publisher import ControlPublisher
from riskguard.engine import Engine
from riskguard.ingest.cancels import CancelTracker
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.consume import ConsumeLoop
from riskguard.ingest.health import Health
from riskguard.ingest.manual import ManualActions
from riskguard.ingest.outbox import Outbox
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.ingest.recovery import Recovered, recover
from riskguard.ingest.reload import LimitsReloader
from riskguard.ingest.topics import ensure_topics
from riskguard.journal import HaltJournal
from riskguard.limits import Limits, load
from riskguard.metrics import Metrics
from riskguard.notify.dispatch import Notifier
from riskguard.settings import Settings, session_start_ns
from riskguard.vocabulary import Transition


class Sidecar:
    """One riskguard instance. ``await start()``, then ``await run()`` until stopped."""

    def __init__(self, settings: Settings, limits: Limits | None = None) -> None:
        """Build every part; nothing connects before :meth:`start`.

        Raises :class:`~riskguard.limits.LimitsError` when ``limits`` is not given and
        the settings' limits file is unusable, and
        :class:`~riskguard.settings.SettingsError` for a bad ``runtime.start_of_day``.
        """
        rt = settings.runtime
        self.settings = settings
        self.log = log.get("sidecar")
        self.metrics = Metrics()
        # warm before events; settings.engine bounds clock skew, lateness, redelivery memory
        self.engine = Engine(limits or load(settings.limits), settings=settings.engine)
        self.metrics.limits_rules.set(len(self.limits.rules))
        self.instance = rt.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.audit = AuditLog(rt.audit_log)
        self.journal = HaltJournal(rt.journal)
        self.notifier = Notifier(settings.notifier, self.metrics, source=self.instance)
        self.cancels = CancelTracker(self.engine, self.metrics)
        self.outbox = Outbox(self.journal, self.metrics, self.audit, self.notifier, self.cancels)
        self.feed = PreTradeFeed(self.engine, self.metrics, rt.gate_publish_interval_ms)
        self.health = Health(rt, self.instance, self.engine, self.outbox, self.metrics)
        self.checkpoints = Checkpoints(rt, self.engine, self.metrics)
        self.intake = ConsumeLoop(
            settings.kafka,
            self.engine,
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
            self.engine,
            ks,
            self.outbox,
            self.audit,
            self.metrics,
            rules=self.feed,
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
        self.api_url = ""
        self.recovered = Recovered()
        self.producer: AIOKafkaProducer | None = None
        #: the gates' data (rules, marks, positions) goes through its own producer, so a
        #: batch of marks in flight never holds a halt's state record back
        self.data_producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Connect, restore state and standing halts, and start consuming.

        Raises :class:`OSError` when the API cannot bind, and aiokafka's
        ``KafkaError`` or :class:`TimeoutError` when the broker cannot be reached.
        """
        k = self.settings.kafka
        client_id = f"riskguard-{self.instance}"
        self.api_url = await self.api.start()  # /livez and /readyz answer during start-up
        await ensure_topics(k)
        options = {
            **k.client_options(),
            "acks": "all",
            "linger_ms": 0,
            "enable_idempotence": k.idempotent_producer,
        }
        self.producer = AIOKafkaProducer(**options, client_id=client_id)
        await self.producer.start()
        self.data_producer = AIOKafkaProducer(**options, client_id=f"{client_id}-gate-data")
        await self.data_producer.start()
        control = ControlPublisher(
            self.producer, k.control_topic, self.metrics, data_producer=self.data_producer
        )
        self.outbox.open(control)
        self.feed.open(control)
        await self.audit.start()
        await self.notifier.start()
        self.checkpoints.load()  # the snapshot first, then standing states on top
        self.recovered = await recover(
            k, f"{client_id}-restore", self.journal, self.engine, self.outbox
        )
        self.health.passed("control_topic_read")
        await self.feed.publish_round()  # the gates' rules (retried by the feed if not taken)
        # The group id is used only to commit offsets (lag monitoring, restarts):
        # partitions are assigned by hand (see riskguard.ingest.consume).
        self.consumer = AIOKafkaConsumer(
            **k.client_options(consumer=True),
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            client_id=client_id,
        )
        await self.consumer.start()
        self.intake.open(self.consumer, self.producer)
        await self.intake.assign()
        self.health.passed("partitions_assigned")
        self.intake.start(self._stop)
        if self.settings.runtime.watch_limits:
            self.reloader.start_watching()
        rt = self.settings.runtime
        for name, coro in (
            ("heartbeat", self.health.heartbeats(control)),
            ("tick", self.intake.clock(rt.tick_interval_ms)),
            ("broker-watch", self.health.watch_broker()),
            ("maintenance", self._maintenance()),
            ("gate-feed", self.feed.run()),
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

    async def run(self) -> None:
        """Run until :meth:`request_stop` (or SIGTERM via the CLI), then stop gracefully."""
        await self._stop.wait()
        await self.stop()

    def request_stop(self) -> None:
        """Ask the sidecar to stop after the batch in hand."""
        self._stop.set()

    async def stop(self) -> None:
        """Finish the batch in hand, commit, snapshot, flush, and close everything."""
        self._stop.set()
        await self.intake.finish()
        await self.reloader.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.checkpoints.commit(self.consumer)
        await self.checkpoints.final()
        if self.consumer:
            await self.consumer.stop()
        await self.outbox.retry_pending()
        await self.notifier.drain(2.0)
        await self.notifier.stop()
        await self.audit.stop()
        if self.data_producer:
            await self.data_producer.stop()
        if self.producer:
            await self.producer.stop()
        await self.api.stop()
        self.metrics.ready.set(0)
        self.log.info("riskguard stopped", events_applied=self.engine.events_applied)

    async def _maintenance(self) -> None:
        """Every commit interval: commit offsets, retry failed control publishes, and
        pick up partitions added to the input topics."""
        while True:
            await asyncio.sleep(self.settings.runtime.commit_interval_ms / 1000)
            await self.checkpoints.commit(self.consumer)
            await self.outbox.retry_pending()
            try:
                await self.intake.assign()
            except (KafkaError, TimeoutError) as exc:
                self.log.warning("partition refresh failed", error=repr(exc))

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
            "checks": dict(self.health.readiness()),
            "standing": standing,
            "events_applied": self.engine.events_applied,
            "bad_events": self.bad_events,
            "skipped_before_session": self.before_session,
            "flow": self.intake.flow.status(),
            "last_event_ns": last if last > 0 else None,
            "limits": {
                "last_reload_error": self.reloader.last_error or None,
                "source": self.limits.source,
                "sha256": self.limits.digest,
                "rules": len(self.limits.rules),
            },
            "control_pending": self.outbox.pending(),
            "cancels": self.cancels.status(),
            "gate_feed": self.feed.status(),
            "notifiers": self.notifier.status(),
            "restored_at_start": self.restored,
            "snapshot": self.checkpoints.status(),
            "republished_at_start": self.republished,
            "journal": str(self.journal.path),
        }
