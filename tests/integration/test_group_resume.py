"""A summed rule's breach standing after an operator's resume, on Apache Kafka.

Firm open_orders, max 2, one group member owning every input partition. Three working
orders halt the firm (3 > 2). An operator resumes it. Then, within one aggregation
interval, a fourth order arrives and the first is cancelled: the member's part is 3
again. One instance reading everything halts again at the new order (4 > 2; the kernel
judges open_orders at every order event newer than the resume). The member used to
publish only when its parts changed, and the judge skipped an unchanged sum: the firm
stayed ACTIVE with 3 working orders over a limit of 2. A record now goes out when events
were applied, and the same sum on evidence newer than the resume is judged again.
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
