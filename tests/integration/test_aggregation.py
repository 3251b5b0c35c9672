"""The aggregation topic on Apache Kafka. Around one group member that owns every input
partition (so it publishes, follows and judges): another group's records and unreadable
ones are left out; a record that would count a partition twice stops the sums, raises
``sums-incomplete`` after ``scale.aggregate_alert_ms``, and ``sums-complete`` ends it
once the records cover the input again. With two members: a REDUCE_ONLY strategy
trading on both is judged by gates on its summed position."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from riskguard import events as wire
from riskguard.aggregate.records import Contribution, RaisedEdge, encode
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.builders import T0, rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_scale_out import produce, until

LIMITS = rules_toml(
    'name = "firm-open"\nmetric = "open_orders"\nscope = "firm"\nmax = 1000\naction = "halt"'
)


def three_orders() -> list[wire.Event]:
    """Three working orders of acct-00 (partition 0), stamped now."""
    now = time.time_ns()
    return [
        wire.NewOrder(ts=now + i, order_id=f"o{i}", account="acct-00", strategy="s",
                      symbol="X", side="buy", qty=1.0, price=1.0)
        for i in range(3)
    ]  # fmt: skip


def audited(settings: Settings, rule: str) -> list[dict[str, Any]]:
    """The transitions of ``rule`` in the sidecar's audit log."""
    path = settings.runtime.audit_path
    lines = path.read_text().splitlines() if path.exists() else []
    records = [json.loads(line)["record"] for line in lines]
    return [r for r in records if r.get("rule") == rule]


async def test_records_that_do_not_add_up_stop_the_sums_and_page_until_they_do(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    settings = group_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        LIMITS,
        2,
        **{"scale.aggregate_interval_ms": 50, "scale.aggregate_alert_ms": 500},
    )
    sidecar = Sidecar(settings)

    def sent(rule: str) -> list[dict[str, Any]]:  # the transitions audited, of ``rule``
        return audited(settings, rule)

    await sidecar.start()
    task = asyncio.create_task(sidecar.run())
    topic, group = settings.scale.aggregate_topic, settings.kafka.group_id
    agg = sidecar.group.aggregation if sidecar.group else None
    assert agg is not None
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
    await producer.start()
    try:
        now = time.time_ns()
        await produce(settings, three_orders())

        def sums() -> dict[str, float]:
            return dict(agg.judge.values.get("firm-open", {}))

        await until("the member's own record summed", lambda: sums() == {"firm": 3.0}, 20)
        assert agg.judging and agg.cover.complete
        whole = sorted(agg.cover.records[0].partitions)
        other = Contribution(group="another-group", instance="x", partitions=tuple(whole),
                             limits_digest=sidecar.limits.digest, as_of_ns=now, sent_ns=now,
                             parts={"firm-open": [{"firm": [5000.0]}]})  # fmt: skip
        await producer.send_and_wait(topic, encode(other), key=b"another-group/x")
        await producer.send_and_wait(topic, b"{not json", key=f"{group}/broken".encode())
        bad = "riskguard_aggregate_records_bad_total"
        await until(
            "the unreadable record counted",
            lambda: sidecar.metrics.registry.get_sample_value(bad) == 1,
            10,
        )
        assert sums() == {"firm": 3.0}, "another group's record is not summed"
        assert sidecar.engine.killswitch.state("firm") == "ACTIVE"
        await producer.send_and_wait(topic, None, key=f"{group}/broken".encode())  # tombstone

        ghost = Contribution(group=group, instance="ghost", partitions=(whole[0],),
                             limits_digest=sidecar.limits.digest, as_of_ns=now, sent_ns=now,
                             parts={"firm-open": [{"firm": [5000.0]}]})  # fmt: skip
        await producer.send_and_wait(topic, encode(ghost), key=f"{group}/ghost".encode())
        await until("the sums stopped", lambda: not agg.cover.complete, 10)
        assert agg.cover.split == {sidecar.instance}  # its record is superseded in part
        assert sidecar.engine.killswitch.state("firm") == "ACTIVE", "never a sum counted twice"
        await until("sums-incomplete raised", lambda: sent("sums-incomplete"), 10)

        await producer.send_and_wait(topic, None, key=f"{group}/ghost".encode())  # tombstone
        # the member republishes when its parts change: a new order does that
        await produce(settings, [wire.NewOrder(ts=time.time_ns(), order_id="o9",
                                               account="acct-00", strategy="s", symbol="X",
                                               side="buy", qty=1.0, price=1.0)])  # fmt: skip
        await until("sums whole again", lambda: sums() == {"firm": 4.0}, 20)
        await until("sums-complete raised", lambda: sent("sums-complete"), 10)
        [incomplete], [complete] = sent("sums-incomplete"), sent("sums-complete")
        assert complete["ends"] == incomplete["id"]
        assert "not judged" in incomplete["reason"]
        sidecar.request_stop()
        assert await task
    finally:
        await producer.stop()
        if not sidecar.stopping:
            await sidecar.stop()


async def test_a_reduce_only_strategy_across_members_is_judged_on_its_summed_position(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """Strategy s1 is long 10 X in acct-00 (partition 0) and 5 in acct-01 (partition 1),
    held by two members. Put REDUCE_ONLY through one of them: gates must judge s1's
    orders by 15, not by either member's part (which one published last would win)."""
    limits = rules_toml(
        'name = "acct-open"\nmetric = "open_orders"\nscope = "account"\nmax = 1000\naction = "halt"'
    )
    base = group_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        limits,
        2,
        **{"scale.aggregate_interval_ms": 50},
    )
    members = [Sidecar(instance_settings(base, tmp_path / n, n)) for n in ("rg-a", "rg-b")]
    await asyncio.gather(*(m.start() for m in members))
    tasks = [asyncio.create_task(m.run()) for m in members]
    try:
        await until(
            "each member owns one partition",
            lambda: all(len(m.assigned) == 1 and m.status()["scale"]["restored_seconds"]
                        is not None for m in members),
            60,
        )  # fmt: skip
        now = time.time_ns()
        fills = [
            wire.Fill(ts=now + i, order_id=f"o{i}", exec_id=f"x{i}", account=acct,
                      strategy="s1", symbol="X", side="buy", qty=qty, price=100.0)
            for i, (acct, qty) in enumerate((("acct-00", 10.0), ("acct-01", 5.0)))
        ]  # fmt: skip
        topic = base.kafka.input_topics[0]
        producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
        await producer.start()
        try:
            for partition, ev in enumerate(fills):  # one account per partition, per member
                await producer.send_and_wait(
                    topic, wire.encode(ev), key=ev.account.encode(), partition=partition
                )
        finally:
            await producer.stop()
        await until(
            "each member holds its account's fill",
            lambda: sum(m.flow.events_applied for m in members) == 2,
            20,
        )
        await members[0].manual("reduce_only", "strategy:s1", "ops", "desk over its limit")
        async with Gate(
            apache_kafka.bootstrap_servers, base.kafka.control_topic, heartbeat_timeout_ms=2000
        ) as gate:
            await until(
                "the gate holds s1's summed position",
                lambda: gate.view.position("strategy:s1", "X") == 15.0,
                20,
            )
            assert gate.state("strategy:s1") == "REDUCE_ONLY"
            assert not gate.check("acct-00", "s1", "X", "buy", 1.0, 100.0)  # increases 15
            assert gate.check("acct-01", "s1", "X", "sell", 12.0, 100.0)  # 15 -> 3: reduces
            flip = gate.check("acct-00", "s1", "X", "sell", 20.0, 100.0)
            assert not flip and "flip position 15" in flip.reason
            # Session 22: sales of 6 (acct-00) and 4 (acct-01) go to work, one per member:
            # the judge sums their leaves (sell_leaves 10) with the position, and a gate
            # lets through only what the 15 net of them allows: 5, not 12.
            sales = [
                wire.NewOrder(ts=time.time_ns() + i, order_id=f"s{i}", account=acct,
                              strategy="s1", symbol="X", side="sell", qty=qty, price=100.0)
                for i, (acct, qty) in enumerate((("acct-00", 6.0), ("acct-01", 4.0)))
            ]  # fmt: skip
            producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
            await producer.start()
            try:
                for partition, ev in enumerate(sales):
                    await producer.send_and_wait(
                        topic, wire.encode(ev), key=ev.account.encode(), partition=partition
                    )
            finally:
                await producer.stop()
            await until(
                "the gate holds s1's summed working sales",
                lambda: gate.view.leaves("strategy:s1", "X") == (0.0, 10.0),
                20,
            )
            assert gate.check("acct-01", "s1", "X", "sell", 5.0, 100.0)  # 15 - 10 - 5 = 0
            assert not gate.check("acct-01", "s1", "X", "sell", 12.0, 100.0)
        for m in members:
            m.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        for m in members:
            if not m.stopping:
                await m.stop()


async def test_a_new_judge_takes_over_the_alert_its_predecessor_raised(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """The previous judge ("rg-old", gone) raised the firm's open-orders alert and said so
    in its last record. The member judging now takes that over: the sum still above the
    limit raises nothing again, and once it falls back the resolve names the old alert."""
    limits = rules_toml(
        'name = "firm-open-alert"\nmetric = "open_orders"\nscope = "firm"\nmax = 2\n'
        'action = "alert"'
    )
    settings = group_settings(
        apache_kafka.bootstrap_servers, tmp_path, limits, 2,
        **{"scale.aggregate_interval_ms": 50},
    )  # fmt: skip
    sidecar = Sidecar(settings)
    old_alert = f"firm@{T0}:ALERT:firm-open-alert"
    old = Contribution(
        group=settings.kafka.group_id,
        instance="rg-old",
        partitions=(),
        limits_digest=sidecar.limits.digest,
        as_of_ns=T0,
        sent_ns=T0,
        parts={},
        judge_since_ns=T0,
        raised=(RaisedEdge("firm-open-alert", 0, "firm", -1, old_alert, 2.0),),
    )
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.scale.aggregate_topic,
            encode(old),
            key=f"{settings.kafka.group_id}/rg-old".encode(),
        )
    finally:
        await producer.stop()

    def sent(rule: str) -> list[dict[str, Any]]:
        return audited(settings, rule)

    await sidecar.start()
    task = asyncio.create_task(sidecar.run())
    agg = sidecar.group.aggregation if sidecar.group else None
    assert agg is not None
    try:
        await produce(settings, three_orders())
        await until("the sums judged", lambda: agg.judge.values.get("firm-open-alert"), 20)
        assert agg.judge.values["firm-open-alert"] == {"firm": 3.0}
        assert agg.status()["took_over_from"] == "rg-old"
        await asyncio.sleep(0.5)  # a few judging rounds
        assert sent("firm-open-alert") == [], "the standing alert is not raised again"
        cancels = [
            wire.CancelOrder(ts=time.time_ns() + i, order_id=f"o{i}", account="acct-00",
                             strategy="s", symbol="X")
            for i in range(3)
        ]  # fmt: skip
        await produce(settings, cancels)
        await until("resolved", lambda: sent("firm-open-alert"), 20)
        [resolve] = sent("firm-open-alert")
        assert (resolve["kind"], resolve["ends"]) == ("resolve", old_alert)
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()
