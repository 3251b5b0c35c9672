"""Read the control topic: the standing state of every scope, and riskguard's pulse.

Used by the sidecar on start (to re-assert halts latched before a restart) and by
the gate (to answer ``allows``). The view (:mod:`riskguard.control.view`, re-exported
here) keeps the latest record per scope.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskguard.control.view import ControlView

__all__ = ["ControlView", "partitions", "read_to_end"]


async def partitions(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float
) -> list[TopicPartition]:
    """The topic's partitions, waiting for its metadata up to ``timeout_s``.

    The consumer is made to track the topic and refresh its own metadata. (aiokafka's
    ``consumer.topics()`` fills a throwaway copy; Tansu happens to answer a consumer's
    first metadata request with every topic, Apache Kafka, as the protocol says, with
    none, so waiting on ``topics()`` never ended there.) Raises ``TimeoutError`` when
    the topic does not appear in time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    client = consumer._client  # aiokafka has no public call for this on a consumer
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic!r} not found within {timeout_s} s")
        await client.add_topic(topic)
        await client.force_metadata_update()
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
