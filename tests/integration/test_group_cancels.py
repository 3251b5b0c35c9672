"""Group mode on Apache Kafka: a firm halt asked through ONE member's API cancels the
working orders of EVERY member. Two members share four input partitions; each holds
the orders of its own accounts. The member the operator asked publishes the halt and
its cancel request (its own orders); the other adopts the halt and asks for its own
orders, in parts tagged with its name. A gate's ``on_cancel`` receives every working
order of both, each once; once cancel events close them, both members confirm their
requests and neither pages ``cancel-incomplete``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.events import encode
from riskguard.gate import CancelRequest, Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_scale_out import until

PARTITIONS = 4
ACCOUNTS = [f"acct-{i}" for i in range(PARTITIONS)]  # acct-i on partition i
ORDERS_PER_ACCOUNT = 3
DEADLINE_MS = 3000  # the cancels go gate -> test -> input -> members well within it
LIMITS = rules_toml(
    'name = "account-order-rate"\nmetric = "order_rate"\nscope = "account"\n'
    'window_ms = 1000\nmax = 1000\naction = "halt"'
).replace("version = 1\n", f"version = 1\ncancel_deadline_ms = {DEADLINE_MS}\n")


async def produce(settings: Settings, events: list[wire.Event]) -> None:
    """Each event to its account's partition (acct-i on partition i), keyed by account."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        topic = settings.kafka.input_topics[0]
        for ev in events:
            account = getattr(ev, "account", "")
            assert isinstance(account, str)
            partition = ACCOUNTS.index(account)
            await producer.send(topic, encode(ev), key=account.encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def keys(account: str, n: int) -> dict[str, str]:
    return {"account": account, "strategy": f"s{n % 2}", "symbol": "XYZ"}


async def test_a_firm_halt_through_one_member_cancels_every_members_orders(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    base = group_settings(apache_kafka.bootstrap_servers, tmp_path, LIMITS, PARTITIONS)
    members = [Sidecar(instance_settings(base, tmp_path / name, name)) for name in ("rg-a", "rg-b")]
    received: list[CancelRequest] = []
    gate = Gate(
        apache_kafka.bootstrap_servers,
        base.kafka.control_topic,
        on_cancel=received.append,
        fetch_max_wait_ms=50,
    )
    tasks: list[asyncio.Task[bool]] = []
    try:
        await asyncio.gather(*(m.start() for m in members))
        tasks = [asyncio.create_task(m.run()) for m in members]
        await until(
            "four partitions spread over two members",
            lambda: all(len(m.status()["scale"]["owned"]) == 2 for m in members),
            30,
        )
        await gate.start()
        t0 = time.time_ns()
        orders = [
            wire.NewOrder(
                ts=t0 + (i * ORDERS_PER_ACCOUNT + n) * 1_000_000,
                order_id=f"{account}-o{n}",
                side="buy" if n % 2 else "sell",
                qty=10.0 + n,
                price=100.0,
                **keys(account, n),
            )
            for i, account in enumerate(ACCOUNTS)
            for n in range(ORDERS_PER_ACCOUNT)
        ]
        await produce(base, orders)

        def working(m: Sidecar) -> set[str]:
            ids = m.flow.working_order_ids("firm")
            return {o.order_id for o in m.flow.describe_orders(ids)}

        await until(
            "every order working on the member owning its account",
            lambda: sum(len(working(m)) for m in members) == len(orders),
            15,
        )
        held = {m.instance: working(m) for m in members}
        assert all(held.values()), f"each member holds working orders: {held}"

        halt = await members[0].manual("halt", "firm", "ops", "group cancel drill")
        assert halt is not None
        everything = {o.order_id for o in orders}

        def named() -> list[str]:
            return [o.order_id for r in received if r.halt_id == halt.id for o in r.orders]

        await until(
            "the gate handed over every member's orders", lambda: set(named()) == everything, 10
        )
        await asyncio.sleep(0.3)  # nothing more may come: each part is handed over once
        assert sorted(named()) == sorted(everything), "every working order named once"
        by_source = {
            r.source: {o.order_id for o in r.orders} for r in received if r.halt_id == halt.id
        }
        assert by_source == held, "each member named exactly the orders it holds"
        assert all(r.kind == "halt" and r.scope == "firm" for r in received)
        assert set(gate.view.cancels["firm"]) == {("rg-a", 0), ("rg-b", 0)}
        assert all(m.engine.killswitch.state("firm") == "HALTED" for m in members)

        for m in members:  # each asked for its own orders: one request each
            sample = m.metrics.registry.get_sample_value
            assert sample("riskguard_cancel_requests_total", {"kind": "halt"}) == 1.0
            assert sample("riskguard_cancel_orders_requested_total") == len(held[m.instance])

        # the router cancels what it was asked to: both members see their orders close
        await produce(
            base,
            [
                wire.CancelOrder(
                    ts=time.time_ns(),
                    order_id=o.order_id,
                    account=o.account,
                    strategy=o.strategy,
                    symbol=o.symbol,
                )
                for r in received
                for o in r.orders
                if r.halt_id == halt.id
            ],
        )
        await until(
            "both members confirmed their requests",
            lambda: all(not m.cancels.requests and m.cancels.confirmed for m in members),
            DEADLINE_MS / 1000,
        )
        for m in members:
            report = m.cancels.status()
            assert report["requests"] == [] and report["incomplete"]["alert_id"] is None
            paged = m.metrics.registry.get_sample_value(
                "riskguard_transitions_total", {"rule": "cancel-incomplete", "action": "alert"}
            )
            assert paged is None, f"{m.instance} paged cancel-incomplete"
        for m in members:
            m.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        await gate.stop()
        for m in members:
            if not m.stopping:
                await m.stop()
