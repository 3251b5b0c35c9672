"""Money across the start of day on a real broker (session 21): the contract sizes and
FX rates in force when the session began come from the reference-data topic."""

from __future__ import annotations

import asyncio
import time

import msgspec
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from riskguard.ingest.runtime import Sidecar
from riskguard.ingest.topics import ensure_topics
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def send(settings: Settings, topic: str, *events: dict[str, object]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for event in events:
            key = str(event.get("account") or event.get("symbol") or event.get("currency"))
            await producer.send_and_wait(topic, orjson.dumps(event), key=key.encode())
    finally:
        await producer.stop()


async def test_reference_data_from_before_the_start_of_day_is_in_force(
    settings: Settings,
) -> None:
    """The FESX contract (10 x, in EUR) and the EUR rate (1.10) were published yesterday
    on a compacted reference-data topic riskguard reads besides the flow; riskguard
    starts today with `runtime.start_of_day` set. Today's buy of 5 FESX at 5,000 is a
    gross of 5 x 5,000 x 10 x 1.10 = 275,000 USD (docs/limits.md, Currencies and
    contract sizes). An `instrument` stamped yesterday on the flow topic (NQ, 20 x) is
    yesterday's flow: skipped, NQ stays at 1 x: a buy of 1 at 100 adds 100. (The
    reference data was skipped with yesterday's flow: FESX at 1 x in USD, 25,000.)"""
    run_topic = settings.kafka.input_topics[0]
    reference = f"{run_topic}-refdata"
    base = msgspec.to_builtins(settings)
    session = time.time_ns() - 60 * 10**9
    yesterday = session - 20 * 3600 * 10**9
    base["kafka"]["input_topics"] = [run_topic, reference]
    base["runtime"]["start_of_day"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(session / 1e9)
    )
    today = msgspec.convert(base, Settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(reference, 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    await ensure_topics(today.kafka)
    await send(
        today,
        reference,
        {
            "type": "instrument",
            "ts": yesterday,
            "symbol": "FESX",
            "multiplier": 10,
            "currency": "EUR",
        },
        {"type": "fx", "ts": yesterday + 1, "currency": "EUR", "rate": 1.1},
    )
    await send(
        today,
        run_topic,
        {"type": "instrument", "ts": yesterday + 2, "symbol": "NQ", "multiplier": 20},
    )
    sidecar = Sidecar(today, OVERFILL)
    await sidecar.start()
    try:
        await wait_for(lambda: sidecar.engine.events_applied == 2)
        now = time.time_ns()
        fill = {"type": "fill", "account": "A", "strategy": "s", "side": "buy"}
        await send(
            today,
            run_topic,
            {
                **fill,
                "ts": now,
                "order_id": "o1",
                "exec_id": "e1",
                "symbol": "FESX",
                "qty": 5,
                "price": 5000,
            },
            {
                **fill,
                "ts": now + 1,
                "order_id": "o2",
                "exec_id": "e2",
                "symbol": "NQ",
                "qty": 1,
                "price": 100,
            },
        )
        await wait_for(lambda: sidecar.engine.events_applied == 4)
        assert sidecar.engine.scope_values("symbol:FESX")["gross_notional"] == 275_000.0
        assert sidecar.engine.scope_values("symbol:NQ")["gross_notional"] == 100.0
        assert sidecar.before_session == 1
    finally:
        await sidecar.stop()
