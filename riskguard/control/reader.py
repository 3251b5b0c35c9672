"""Read the control topic: the standing state of every scope, and riskguard's pulse.

Used by the sidecar on start (to re-assert halts latched before a restart) and by
the gate (to answer ``allows``). The view keeps the latest record per scope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskguard.control.records import HeartbeatRecord, StateRecord, decode_record


@dataclass
class ControlView:
    """Latest state per scope plus the latest heartbeat, as read from the topic."""

    states: dict[str, StateRecord] = field(default_factory=dict)
    heartbeat: HeartbeatRecord | None = None
    heartbeat_seen_mono: float = 0.0  # local monotonic time the heartbeat was read
    records: int = 0
    unreadable: int = 0

    def apply(self, values: Iterable[bytes | None]) -> list[StateRecord]:
        """Fold messages in offset order; returns the state records among them."""
        changed = []
        for value in values:
            record = decode_record(value)
            if record is None:
                self.unreadable += value is not None
                continue
            self.records += 1
            if isinstance(record, HeartbeatRecord):
                self.heartbeat = record
                self.heartbeat_seen_mono = time.monotonic()
            else:
                self.states[record.scope] = record
                changed.append(record)
        return changed

    def standing(self) -> dict[str, StateRecord]:
        """Scopes whose latest state is not ACTIVE."""
        return {s: r for s, r in self.states.items() if r.state != "ACTIVE"}


async def partitions(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float
) -> list[TopicPartition]:
    """The topic's partitions (waits for metadata up to ``timeout_s``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic!r} not found within {timeout_s} s")
        await consumer.topics()  # refreshes cluster metadata
        await asyncio.sleep(0.05)


async def read_to_end(
    consumer: AIOKafkaConsumer, topic: str, view: ControlView, timeout_s: float = 10.0
) -> ControlView:
    """Assign every partition, read from the beginning up to the current end."""
    tps = await partitions(consumer, topic, timeout_s)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end: dict[Any, int] = await consumer.end_offsets(tps)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
        if not behind:
            break
        if loop.time() > deadline:
            raise TimeoutError(f"could not read {topic!r} to its end within {timeout_s} s")
        batch = await consumer.getmany(timeout_ms=200)
        for msgs in batch.values():
            view.apply(m.value for m in msgs)
    return view
