"""A planned handover on Apache Kafka (issue 14): member a owns all six partitions and
has applied events in each; member b joins. The group moves three partitions to b: a
checkpoints each at the offset it applied as it gives them up, and b restores each from
that checkpoint and reads on from its offset (nothing of the partition read again); a
stops counting them (its engines and positions no longer hold them). The positions the
two hold together equal one engine's over the same events, and every event is applied
once in all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.engine import Engine
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.snapshot import SnapshotStore
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_group_restart import RATE
from tests.integration.test_scale_out import (
    ACCOUNTS,
    PARTITIONS,
    account_positions,
    events_total,
    flow,
    partition_of,
    produce,
    until,
)

LIMITS = rules_toml(RATE)


def engines(s: Sidecar) -> PartitionEngines:
    assert isinstance(s.flow, PartitionEngines)
    return s.flow


def accounts_in(parts: set[TopicPartition]) -> set[str]:
    """The accounts of ``parts`` (account i is on partition i % 6)."""
    numbers = {tp.partition for tp in parts}
    return {a for i, a in enumerate(ACCOUNTS) if i % PARTITIONS in numbers}


async def test_partitions_handed_to_a_member_that_joins_are_restored_from_checkpoints(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    base = group_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        LIMITS,
        PARTITIONS,
        # shared by both members; periodic checkpoints only after the test (30 s): the
        # ones restored here are the hand-over's
        **{"scale.checkpoint_dir": str(tmp_path / "checkpoints")},
    )
    a = Sidecar(instance_settings(base, tmp_path / "rg-a", "rg-a"))
    b = Sidecar(instance_settings(base, tmp_path / "rg-b", "rg-b"))
    await a.start()
    tasks = [asyncio.create_task(a.run())]
    started_b = False
    try:

        def restored(m: Sidecar) -> bool:
            return m.status()["scale"]["restored_seconds"] is not None

        await until("a owns all six", lambda: len(a.assigned) == PARTITIONS and restored(a), 60)
        first = flow(time.time_ns(), 10, "a")
        await produce(base, first)
        await until("a applied every event", lambda: a.flow.events_applied == len(first), 30)
        assert len(engines(a).owned()) == PARTITIONS

        await b.start()
        started_b = True
        tasks.append(asyncio.create_task(b.run()))
        began = time.monotonic()

        def spread() -> bool:
            return len(a.assigned) == len(b.assigned) == 3 and restored(a) and restored(b)

        handover = await until("three partitions each, restored", spread, 60)
        moved, kept = set(b.assigned), set(a.assigned)
        assert not moved & kept
        print(
            f"\nplanned handover: {sorted(tp.partition for tp in moved)} owned and restored "
            f"by b {handover:.2f} s after it started (restore "
            f"{b.status()['scale']['restored_seconds']} s)"
        )

        # b restored each partition it gained from a's hand-over checkpoint: at the offset
        # a applied (every event of the partition), holding those events
        scale = b.status()["scale"]
        names = {f"{tp.topic}/{tp.partition}" for tp in moved}
        assert set(scale["checkpoints"]) == names, scale["checkpoints"]
        assert scale["snapshot_restores"] == 3 and scale["rebuilds"] == 0, scale
        for tp in moved:
            label = f"{tp.topic}/{tp.partition}"
            name = scale["checkpoints"][label]
            assert name is not None, f"{label} read from its start, not restored"
            store = SnapshotStore(Path(base.scale.checkpoint_dir) / f"{tp.topic}.{tp.partition}")
            [snap] = [s for s in [store.latest()] if s is not None and s.path.name == name]
            mine = sum(partition_of(ev) == tp.partition for ev in first)
            assert snap.offsets == {label: mine}, "handed over at the offset a applied"
            assert int(snap.meta["events_applied"]) == mine
            assert engines(b).engines[tp].events_applied == mine
        assert events_total(b) == 0, "nothing of the moved partitions read again"

        # a stops counting them: its engines, positions and count hold its three only
        assert engines(a).owned() == kept
        assert engines(b).owned() == moved
        held_a = {owner.removeprefix("account:") for owner, _ in account_positions(a.flow)}
        held_b = {owner.removeprefix("account:") for owner, _ in account_positions(b.flow)}
        assert held_a == accounts_in(kept) and held_b == accounts_in(moved)
        assert a.flow.events_applied + b.flow.events_applied == len(first)

        second = flow(time.time_ns(), 5, "b")
        await produce(base, second)
        everything = first + second

        def applied() -> int:
            return a.flow.events_applied + b.flow.events_applied

        await until("the new events applied", lambda: applied() == len(everything), 30)
        await asyncio.sleep(0.5)  # several polls: nothing more may be counted
        assert applied() == len(everything), "nothing counted twice"
        ours = sum(partition_of(ev) in {tp.partition for tp in moved} for ev in second)
        assert events_total(b) == ours, "b read its partitions on from the checkpoints only"
        reference = Engine(parse(LIMITS), event_time=True)
        reference.apply(everything)
        got_a, got_b = account_positions(a.flow), account_positions(b.flow)
        assert not set(got_a) & set(got_b), "an account counted by both members"
        assert {**got_a, **got_b} == account_positions(reference)
        assert {o.removeprefix("account:") for o, _ in got_a} == accounts_in(kept)
        assert len(got_a) + len(got_b) == len(ACCOUNTS) * 3
        print(f"positions whole {time.monotonic() - began:.2f} s after b started")
        a.request_stop()
        b.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        for m in (a, b):
            if (m is a or started_b) and not m.stopping:
                await m.stop()


async def test_a_batch_polled_before_a_rebalance_positioned_the_partitions_is_read_again(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """A rebalance seeks every owned partition to the offset its state reflects, under the
    consume loop's lock. A batch the consumer returned before that seek, applied after it,
    would be read twice (or, on a partition restored from an older checkpoint, skip the
    events between the checkpoint and the batch): it is left out and read again from
    the state's offset, once."""
    base = group_settings(apache_kafka.bootstrap_servers, tmp_path, LIMITS, 1)
    s = Sidecar(instance_settings(base, tmp_path / "rg-a", "rg-a"))
    await s.start()
    task = asyncio.create_task(s.run())
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
    await producer.start()
    try:
        assert s.group is not None and s.consumer is not None
        consumer = s.consumer
        await until("the partition owned", lambda: len(s.assigned) == 1, 60)
        [tp] = s.assigned

        async def send(tag: str) -> None:
            for i in range(5):
                keys = {"account": "a0", "strategy": "s", "symbol": "X", "side": "buy"}
                order = wire.NewOrder(
                    ts=time.time_ns(), order_id=f"{tag}{i}", qty=1, price=1, **keys
                )
                await producer.send_and_wait(tp.topic, wire.encode(order), partition=tp.partition)

        await send("a")
        await until("the first five applied", lambda: s.flow.events_applied == 5, 30)
        # a rebalance comes while a batch is applied; the consumer holds new records: the
        # loop, woken after the rebalance queued for the lock, takes them at once and
        # queues behind it; the rebalance seeks the partition back to what the state holds
        async with s.intake.lock:
            await asyncio.sleep(0.3)  # the loop polled (nothing) and waits for the lock
            rebalance = asyncio.create_task(s.group.ownership.on_partitions_assigned({tp}))
            await asyncio.sleep(0.3)  # no broker call for a partition kept: it waits too
            await send("b")
            began = time.monotonic()
            while (consumer.highwater(tp) or 0) <= 5:  # fetched: the consumer holds some
                assert time.monotonic() - began < 10, f"never fetched: {consumer.highwater(tp)}"
                await asyncio.sleep(0.05)
            assert s.flow.events_applied == 5
        await rebalance
        await until("every event applied", lambda: s.flow.events_applied == 10, 30)
        await asyncio.sleep(1.0)  # several polls more
        dupes = s.metrics.registry.get_sample_value("riskguard_duplicate_events_total")
        assert not dupes, f"{dupes} events read twice"
        assert events_total(s) == 10 and s.checkpoints.applied[tp] == 10
        s.request_stop()
        assert await task
    finally:
        await producer.stop()
        if not s.stopping:
            await s.stop()
