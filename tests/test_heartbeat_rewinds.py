"""A control topic re-created under riskguard is noticed from its heartbeats' offsets.

Seen under load in CI: a broker back empty re-created the control topic with its own
default number of partitions (Tansu's), the heartbeat key then hashed to partition 1,
whose offsets had no earlier heartbeat to go back from: nothing was noticed, and the
standing halt was never published again to the new topic (gates failed closed)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import RecordMetadata

from riskguard.control.publisher import ControlPublisher
from riskguard.metrics import Metrics


def acked(publisher: ControlPublisher, partition: int, offset: int) -> None:
    loop = asyncio.new_event_loop()
    try:
        future: asyncio.Future[Any] = loop.create_future()
        future.set_result(
            RecordMetadata(
                topic="riskguard.control",
                partition=partition,
                topic_partition=None,
                offset=offset,
                timestamp=0,
                timestamp_type=0,
                log_start_offset=0,
            )
        )
        publisher._beat_acked(future)
    finally:
        loop.close()


def test_heartbeats_in_another_partition_or_lower_offsets_are_a_re_created_topic() -> None:
    publisher = ControlPublisher(producer=None, topic="riskguard.control", metrics=Metrics())  # type: ignore[arg-type]
    for offset in (20, 21, 22):
        acked(publisher, 0, offset)
    assert publisher.rewinds == 0
    acked(publisher, 1, 186)  # the topic came back with more partitions
    assert publisher.rewinds == 1
    acked(publisher, 1, 187)
    assert publisher.rewinds == 1
    acked(publisher, 1, 0)  # and again, one partition, offsets from 0
    assert publisher.rewinds == 2
