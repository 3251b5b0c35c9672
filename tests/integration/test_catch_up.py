"""Single mode, reading a backlog at start: history counts at its own time.

riskguard started (no snapshot) with two minutes of backlog on two partitions, the same
on each: a router's heartbeats, then ten orders of the partition's account a minute
ago, never more than four in any second. Partitions are read at different speeds: the
orders of the partition read second arrived seconds behind the other's, were "late",
and counted as now put six or more orders in the current second against a limit of
five: a false halt on start. Until every
partition is read to its end, events now count in windows at their own time
(``ConsumeLoop.catching_up``); then the live lateness rule is back.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from riskguard import events as wire
from riskguard.broker import Broker
from riskguard.events import encode
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.settings import Settings
from tests.builders import rules_toml
from tests.integration.test_scale_out import until

RATE = parse(
    rules_toml(
        'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
        'max = 5\naction = "halt"'
    )
)
S = 1_000_000_000
ACCOUNTS = ("A1", "A2")


async def test_a_backlog_read_at_start_counts_at_its_own_time_not_as_now(
    broker: Broker, settings: Settings
) -> None:
    [topic] = settings.kafka.input_topics
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    now = time.time_ns()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        for p, account in enumerate(ACCOUNTS):  # the same history on both partitions
            for i in range(1190):  # a minute of its router's heartbeats
                beat = wire.Heartbeat(ts=now - 120 * S + i * 50_000_000, source=f"r{p}")
                await producer.send(topic, encode(beat), key=account.encode(), partition=p)
            for i in range(10):  # then ten orders 300 ms apart, a minute ago
                order = wire.NewOrder(ts=now - 60 * S + i * 300_000_000, order_id=f"{p}-{i}",
                                      account=account, strategy="s", symbol="X", side="buy",
                                      qty=1.0, price=10.0)  # fmt: skip
                await producer.send(topic, encode(order), key=account.encode(), partition=p)
        await producer.flush()
    finally:
        await producer.stop()

    sidecar = Sidecar(settings, RATE)
    await sidecar.start()
    try:
        await until(
            "the backlog read",
            lambda: sidecar.status()["input_read_to_end_seconds"] is not None,
            30,
        )
        assert sidecar.engine.events_applied == 2400
        assert sidecar.intake.flow.late == 0, "history is not a late delivery"
        for account in ACCOUNTS:
            assert sidecar.engine.killswitch.state(f"account:{account}") == "ACTIVE"
        live = sidecar.engine.settings.lateness_ns
        assert sidecar.engine.rulebook.rules.lateness_ns == live, "the live rule is back"
    finally:
        await sidecar.stop()
