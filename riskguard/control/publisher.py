"""Publish transitions and heartbeats to the control topic, with ``acks=all``.

A publish waits at most the producer's ``request_timeout_ms`` (1.5 s by default),
never aiokafka's 40 s. A transition that could not be published stays pending
and is re-sent every second until the broker takes it; the newest state per
scope wins, which is what a compacted topic keeps anyway.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from riskguard import log
from riskguard.control.records import HeartbeatRecord, heartbeat_message, state_message
from riskguard.metrics import Metrics
from riskguard.vocabulary import Transition


class ControlPublisher:
    """Owns the control topic's producer side."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, metrics: Metrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.pending: dict[str, Transition] = {}
        self._log = log.get("control")
        self.last_ok_mono = time.monotonic()

    async def publish(self, transitions: list[Transition]) -> bool:
        """Publish state changes (alerts are skipped). True when all were acknowledged."""
        items = [tr for tr in transitions if not tr.is_alert]
        if not items:
            return True
        try:
            futures = []
            for tr in items:
                key, value = state_message(tr)
                futures.append(await self.producer.send(self.topic, value, key=key))
            await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.metrics.control_failures.inc()
            for tr in items:
                self.pending[tr.scope] = tr
            self._log.error(
                "control publish failed; will retry",
                error=repr(exc),
                scopes=[t.scope for t in items],
            )
            return False
        self.last_ok_mono = time.monotonic()
        for tr in items:
            if self.pending.get(tr.scope) is tr:
                del self.pending[tr.scope]
        now = time.time_ns()
        for tr in items:
            self.metrics.decision_latency.observe(max(0, now - tr.ts) / 1e9)
        return True

    async def retry_pending(self) -> None:
        """Re-send what failed earlier (newest per scope)."""
        if self.pending:
            items = list(self.pending.values())
            if await self.publish(items):
                self._log.info("control publish recovered", scopes=[t.scope for t in items])

    async def heartbeat(self, record: HeartbeatRecord) -> bool:
        """Publish one heartbeat; False (logged at debug) if the broker did not take it."""
        key, value = heartbeat_message(record)
        try:
            await (await self.producer.send(self.topic, value, key=key))
        except (KafkaError, TimeoutError, OSError) as exc:
            self._log.debug("heartbeat publish failed", error=repr(exc))
            return False
        self.last_ok_mono = time.monotonic()
        self.metrics.heartbeats.inc()
        return True
