"""Summed rules of group mode on Apache Kafka, against one instance reading everything.

- A breach standing after an operator's resume: firm open_orders, max 2, one member
  owning every input partition. Three working orders halt the firm (3 > 2); an
  operator resumes it; then, within one aggregation interval, a fourth order arrives
  and the first is cancelled: the member's part is 3 again. One instance halts again
  at the new order (4 > 2). The member used to publish only when its parts changed,
  and the judge skipped an unchanged sum: the firm stayed ACTIVE over its limit. A
  record now goes out when events were applied, and the same sum on evidence newer
  than the resume is judged again.
- A partition delivered behind the others (see its test).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.ingest.runtime import Sidecar
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_scale_out import produce, until


def order(i: int) -> wire.NewOrder:
    return wire.NewOrder(ts=time.time_ns(), order_id=f"o{i}", account="acct-00", strategy="s",
                         symbol="X", side="buy", qty=1.0, price=1.0)  # fmt: skip


async def test_the_same_sum_in_breach_after_a_resume_halts_again_on_newer_events(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    limits = rules_toml(
        'name = "firm-open"\nmetric = "open_orders"\nscope = "firm"\nmax = 2\naction = "halt"'
    )
    settings = group_settings(apache_kafka.bootstrap_servers, tmp_path, limits, 2,
                              **{"scale.aggregate_interval_ms": 400})  # fmt: skip
    sidecar = Sidecar(settings)
    await sidecar.start()
    task = asyncio.create_task(sidecar.run())
    agg = sidecar.group.aggregation if sidecar.group else None
    assert agg is not None
    ks = sidecar.engine.killswitch
    try:
        await produce(settings, [order(i) for i in range(3)])
        await until("the firm halted on the sum 3", lambda: ks.state("firm") == "HALTED", 20)
        assert agg.judge.values["firm-open"] == {"firm": 3.0}

        def settled() -> bool:  # its record names its turn as the judge: nothing else to send
            own = agg.held.get(sidecar.instance)
            return own is not None and own.record.judge_since_ns == agg.judge_since_ns

        await until("the member's record names its turn as the judge", settled, 5)
        published = agg.published
        assert abs(agg.lag[sidecar.instance]) < 1_000_000_000  # one host, one clock
        ks.resume("firm", "ops", "checked")
        await asyncio.sleep(0.05)
        # one more order and one cancel, in one batch: the part is 3 again, on newer events
        cancel = wire.CancelOrder(ts=time.time_ns() + 1, order_id="o0", account="acct-00",
                                  strategy="s", symbol="X")  # fmt: skip
        await produce(settings, [order(3), cancel])
        await until("the firm halted again", lambda: ks.state("firm") == "HALTED", 5)
        assert ks.standing()["firm"].value == 3.0
        assert agg.published == published + 1  # the same parts, on newer events
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()


async def test_a_partition_delivered_behind_counts_as_now_on_its_member(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """Firm order_rate, max 10, window 5 s, lateness 1 s; two members, one partition
    each. Six orders on partition 0 stamped now (t); then six on partition 1 stamped
    t - 7 s (a producer delivering 7 s behind). One instance reading both counts the
    late six as now (7 s behind its clock, the latest event of any partition): 12 > 10,
    halt. The member of partition 1 knew only its own times: it counted them at t - 7 s,
    out of the 5.5 s its window holds, and the sums said 6. It now follows the other
    members' latest event time, read from their records: 6 + 6 = 12, halted."""
    limits = rules_toml(
        'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 5000\n'
        'max = 10\naction = "halt"'
    )
    base = group_settings(apache_kafka.bootstrap_servers, tmp_path, limits, 2,
                          **{"scale.aggregate_interval_ms": 50})  # fmt: skip
    members = [Sidecar(instance_settings(base, tmp_path / n, n)) for n in ("rg-a", "rg-b")]
    tasks: list[asyncio.Task[bool]] = []
    try:
        await asyncio.gather(*(m.start() for m in members))
        tasks = [asyncio.create_task(m.run()) for m in members]

        def owner(p: int) -> Sidecar:
            return next(m for m in members if f"/{p}" in "".join(m.status()["scale"]["owned"]))

        await until(
            "one partition each",
            lambda: all(len(m.status()["scale"]["owned"]) == 1 for m in members),
            30,
        )
        first, second = owner(0), owner(1)
        t = time.time_ns()
        await produce(base, [order_in("acct-00", t + i, f"a{i}") for i in range(6)])
        agg = first.group.aggregation if first.group else None
        assert agg is not None
        await until("the owner of partition 0 judges", lambda: agg.judging, 10)
        await until(
            "a's six summed", lambda: agg.judge.values.get("firm-rate") == {"firm": 6.0}, 10
        )
        await asyncio.sleep(0.3)  # six intervals: b has read a's record and published
        behind = t - 7_000_000_000
        await produce(base, [order_in("acct-01", behind + i, f"b{i}") for i in range(6)])
        ks = first.engine.killswitch
        await until("the firm halted on 6 + 6", lambda: ks.state("firm") == "HALTED", 10)
        assert ks.standing()["firm"].value == 12.0
        assert second.flow.last_event_ns >= t + 5  # b's clock: a's latest order
        for m in members:
            m.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        for m in members:
            if not m.stopping:
                await m.stop()


def order_in(account: str, ts: int, oid: str) -> wire.NewOrder:
    return wire.NewOrder(ts=ts, order_id=oid, account=account, strategy="s", symbol="X",
                         side="buy", qty=1.0, price=1.0)  # fmt: skip
