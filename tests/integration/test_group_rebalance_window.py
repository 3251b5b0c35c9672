"""What a member does while aiokafka's assignment callback runs (Apache Kafka).

aiokafka installs a new assignment, starts fetching from the committed offsets, and
only then awaits the listener; the listener awaits offset lookups and each gained
partition's restore (seconds for a large one, in a thread). Found in review: records of a
partition the member KEPT were fetched from the committed offset meanwhile and applied,
so a commit left behind the state (a revoke whose commit timed out) counted them twice.
Also here: a damaged checkpoint is skipped for the next older one, never aborting the
assignment (it left the gained partition unread and the lost one counted)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.ingest import group as group_mod
from riskguard.ingest.runtime import Sidecar
from riskguard.snapshot import MAGIC
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_scale_out import until

LIMITS = rules_toml(
    'name = "r"\nmetric = "order_qty"\nscope = "account"\nmax = 1000\naction = "halt"'
)


def order(p: int, i: int) -> bytes:
    return wire.encode(
        wire.NewOrder(ts=time.time_ns(), order_id=f"p{p}-{i}", account=f"a{p}", strategy="s",
                      symbol="X", side="buy", qty=1, price=1)
    )  # fmt: skip


async def test_a_kept_partition_is_not_read_again_while_a_gained_one_restores(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = apache_kafka.bootstrap_servers
    base = group_settings(bootstrap, tmp_path, LIMITS, 2, **{"runtime.snapshot_interval_s": 0.5})
    slow_restore = group_mod.GroupOwnership._restored

    def slowly(self: Any, *args: Any) -> Any:
        time.sleep(2.0)  # a large partition's restore: the callback awaits it
        return slow_restore(self, *args)

    monkeypatch.setattr(group_mod.GroupOwnership, "_restored", slowly)
    s = Sidecar(instance_settings(base, tmp_path / "rg-a", "rg-a"))
    await s.start()
    run = asyncio.create_task(s.run())
    topic = base.kafka.input_topics[0]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    other = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=base.kafka.group_id,
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
    )  # fmt: skip
    try:
        await until("both partitions owned", lambda: len(s.assigned) == 2, 60)
        for p in (0, 1):
            for i in range(5):
                await producer.send_and_wait(topic, order(p, i), partition=p)
        await until("10 applied", lambda: s.flow.events_applied == 10, 30)
        await asyncio.sleep(1.0)  # a checkpoint of each
        await other.start()

        async def poll() -> None:
            while True:
                await other.getmany(timeout_ms=100)

        polling = asyncio.create_task(poll())

        def restored() -> bool:
            return s.group is not None and s.group.ownership.restored_s is not None

        await until("the other member took one", lambda: len(s.assigned) == 1 and restored(), 60)
        (kept,) = s.assigned
        # what a revoke whose commit timed out leaves: the broker's offset behind the state
        assert s.consumer is not None
        await s.consumer.commit({kept: OffsetAndMetadata(0, "")})
        events_before = s.flow.events_applied
        polling.cancel()
        await other.stop()  # it leaves: this member keeps `kept` and gains the other back
        await until("both owned again", lambda: len(s.assigned) == 2 and restored(), 60)
        await asyncio.sleep(1.0)
        duplicates = s.metrics.registry.get_sample_value("riskguard_duplicate_events_total") or 0
        assert duplicates == 0, f"{duplicates} events of the kept partition read again"
        assert s.flow.events_applied == events_before + 5  # the gained one's 5 only
        assert s.checkpoints.applied[kept] == 5
        for p in (0, 1):
            await producer.send_and_wait(topic, order(p, 9), partition=p)
        await until("the next events applied once", lambda: s.flow.events_applied == 12, 30)
    finally:
        await producer.stop()
        s.request_stop()
        await run


async def test_a_damaged_checkpoint_is_skipped_for_the_one_before(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """The newest checkpoint of a partition has a header that is valid JSON but not a
    checkpoint's (no events_applied): the restore falls back to the one before it, and the
    assignment completes (partition gained, read on, counted once)."""
    bootstrap = apache_kafka.bootstrap_servers
    shared = {"runtime.snapshot_interval_s": 0.3, "scale.checkpoint_dir": str(tmp_path / "cp")}
    base = group_settings(bootstrap, tmp_path, LIMITS, 1, **shared)
    topic = base.kafka.input_topics[0]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    first = Sidecar(instance_settings(base, tmp_path / "rg-a", "rg-a"))
    await first.start()
    run = asyncio.create_task(first.run())
    tp = TopicPartition(topic, 0)
    try:
        await until("owned", lambda: len(first.assigned) == 1, 60)
        for i in range(4):
            await producer.send_and_wait(topic, order(0, i), partition=0)
        await until("4 applied", lambda: first.flow.events_applied == 4, 30)
        store = first.checkpoints.partition_store(tp)
        await until("a checkpoint at offset 4", lambda: store.furthest() == 4, 30)
        first.request_stop()
        await run
        newest = store.paths()[0]
        data = newest.read_bytes()  # MAGIC, the header's length (8 bytes), header, body
        at = len(MAGIC)
        n = int.from_bytes(data[at : at + 8], "big")
        meta = orjson.loads(data[at + 8 : at + 8 + n])
        meta.pop("events_applied")  # valid JSON, checksum still right: not a checkpoint's
        head = orjson.dumps(meta)
        newest.write_bytes(data[:at] + len(head).to_bytes(8, "big") + head + data[at + 8 + n :])
        for i in range(4, 6):
            await producer.send_and_wait(topic, order(0, i), partition=0)
        second = Sidecar(instance_settings(base, tmp_path / "rg-b", "rg-b"))
        await second.start()
        run = asyncio.create_task(second.run())
        await until("owned and restored", lambda: len(second.assigned) == 1, 60)
        await until("every event once", lambda: second.flow.events_applied == 6, 30)
        assert second.group is not None
        used = second.group.ownership.checkpoints_restored[f"{topic}/0"]
        assert used is not None and used != newest.name  # the one before, not from the start
        duplicates = second.metrics.registry.get_sample_value("riskguard_duplicate_events_total")
        assert not duplicates
        second.request_stop()
        await run
    finally:
        await producer.stop()


async def test_a_burst_while_nobody_owned_the_partition_halts_once_it_is_taken_over(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """Found in review: a partition restored from a checkpoint was treated as judged up to
    the survivor's own clock (live on its other partitions, so ahead of everything the
    dead member had read). A runaway burst produced while the group had not yet noticed
    the death was then never judged. Restored from a checkpoint, a partition judges every
    event after the checkpoint."""
    bootstrap = apache_kafka.bootstrap_servers
    rate = rules_toml(
        'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
        'max = 5\naction = "halt"'
    )
    shared = {"runtime.snapshot_interval_s": 0.3, "scale.checkpoint_dir": str(tmp_path / "cp")}
    base = group_settings(bootstrap, tmp_path, rate, 2, **shared)
    topic = base.kafka.input_topics[0]
    a = Sidecar(instance_settings(base, tmp_path / "rg-a", "rg-a"))
    b = Sidecar(instance_settings(base, tmp_path / "rg-b", "rg-b"))
    await asyncio.gather(a.start(), b.start())
    runs = [asyncio.create_task(s.run()) for s in (a, b)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await until("one partition each", lambda: len(a.assigned) == len(b.assigned) == 1, 60)
        ((victim,),) = (a.assigned,)
        ((survivor,),) = (b.assigned,)
        await producer.send_and_wait(topic, order(victim.partition, 0), partition=victim.partition)
        store = a.checkpoints.partition_store(victim)
        await until("the victim's partition checkpointed", lambda: store.furthest() == 1, 30)
        await a.close()  # dies: no last checkpoint, no leave (static membership)
        for i in range(1, 9):  # 8 orders in ms: over 5 a second, while nobody owns it
            await producer.send_and_wait(
                topic, order(victim.partition, i), partition=victim.partition
            )
        await producer.send_and_wait(
            topic, order(survivor.partition, 0), partition=survivor.partition
        )
        await until(
            "the survivor read its own, later event", lambda: b.flow.events_applied == 1, 30
        )
        scope = f"account:a{victim.partition}"
        await until("taken over", lambda: len(b.assigned) == 2, 30)
        await until(
            "the burst halted its account", lambda: b.engine.killswitch.state(scope) == "HALTED", 30
        )
        halt = b.engine.killswitch.standing()[scope]
        assert (halt.rule, halt.instance) == ("acct-rate", "rg-b")
    finally:
        await producer.stop()
        b.request_stop()
        await asyncio.gather(*runs, return_exceptions=True)
