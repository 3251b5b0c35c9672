"""The sidecar on a real broker: halts reach a gate, survive restarts; bad events dead-letter."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL


def ev(**fields: object) -> bytes:
    base = {"ts": time.time_ns(), "account": "A", "strategy": "smars", "symbol": "RSHYY"}
    return orjson.dumps({**base, **fields})


async def produce(settings: Settings, *values: bytes) -> None:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await p.start()
    try:
        for v in values:
            await p.send_and_wait(settings.kafka.input_topics[0], v, key=b"A")
    finally:
        await p.stop()


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


RUNAWAY = [
    ev(type="parent", parent_id="P1", side="buy", qty=100),
    *[
        ev(
            type="fill",
            order_id=f"c{i}",
            exec_id=f"e{i}",
            side="buy",
            qty=30,
            price=10,
            parent_id="P1",
        )
        for i in range(4)
    ],
]


async def test_automatic_halt_reaches_a_gate(sidecar: Sidecar, settings: Settings) -> None:
    async with Gate(
        settings.kafka.bootstrap_servers, settings.kafka.control_topic, heartbeat_timeout_ms=1000
    ) as gate:
        await wait_for(lambda: bool(gate.allows("A", "smars", "RSHYY", "buy", False)))
        await produce(settings, *RUNAWAY)
        await wait_for(lambda: not gate.allows("A", "smars", "RSHYY", "buy", False))
        verdict = gate.allows("A", "smars", "RSHYY", "buy", False)
        assert verdict.scope == "strategy:smars" and verdict.state == "HALTED"
        assert "rule overfill" in verdict.reason
        assert gate.allows("A", "other", "RSHYY", "buy", False)


async def test_halt_survives_a_restart(settings: Settings) -> None:
    first = Sidecar(settings, OVERFILL)
    await first.start()
    await first.manual("halt", "account:A", "alice", "drill")
    await first.stop()
    second = Sidecar(settings, OVERFILL)
    await second.start()
    try:
        assert second.engine.killswitch.state("account:A") == "HALTED"
        assert second.restored == ["account:A"]
    finally:
        await second.stop()


async def test_a_stop_asked_twice_stops_once(settings: Settings) -> None:
    """A test's finally, or a second SIGTERM, calling stop() while the first stop runs:
    both wait for the one stop, which writes one final snapshot (two raced in one folder,
    one deleting the other's temp file: 'snapshot write failed')."""
    s = Sidecar(settings, OVERFILL)
    await s.start()
    await produce(settings, *RUNAWAY[:3])
    await wait_for(lambda: s.flow.events_applied >= 3)
    folder = settings.runtime.snapshot_path
    before = set(folder.glob("snapshot-*.rgs"))
    assert await asyncio.gather(s.stop(), s.stop()) == [True, True]
    assert len(set(folder.glob("snapshot-*.rgs")) - before) == 1
    assert s.checkpoints.failing == 0


async def test_bad_events_land_in_the_dead_letter_topic(
    sidecar: Sidecar, settings: Settings
) -> None:
    await produce(
        settings,
        b"{not json",
        ev(type="new", order_id="o", side="buy", qty="100", price=1),
        ev(type="heartbeat", source="r"),
    )
    await wait_for(lambda: sidecar.engine.events_applied >= 1 and sidecar.bad_events >= 2)
    c = AIOKafkaConsumer(
        settings.kafka.dead_letter_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await c.start()
    try:
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                got += msgs
    finally:
        await c.stop()
    reasons = [dict(m.headers)["riskguard.reason"] for m in got]
    assert reasons == [b"malformed_json", b"wrong_type"]
    assert got[0].value == b"{not json"
    assert b"$.qty" in dict(got[1].headers)["riskguard.detail"]


async def test_poison_message_at_partition_head_does_not_stop_the_partition(
    sidecar: Sidecar, settings: Settings
) -> None:
    """A message that can never decode sits first in a partition: it is dead-lettered once,
    the consumer moves past it, and later events of the same partition are applied."""
    poison = b"\xff\xfe" + b"[" * 50_000
    await produce(settings, poison, *RUNAWAY)  # same key: same partition, poison first
    await wait_for(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")
    assert sidecar.bad_events == 1
    assert sidecar.engine.events_applied == len(RUNAWAY)
    await asyncio.sleep(0.3)
    assert sidecar.bad_events == 1  # not re-read in a loop


async def test_start_of_day_skips_earlier_flow(settings: Settings) -> None:
    import msgspec  # noqa: PLC0415

    session = time.time_ns() - 60 * 10**9
    yesterday = session - 3600 * 10**9
    old = [
        orjson.dumps(
            {
                "type": "fill",
                "ts": yesterday,
                "order_id": f"y{i}",
                "exec_id": f"y{i}",
                "account": "A",
                "strategy": "smars",
                "symbol": "X",
                "side": "buy",
                "qty": 10,
                "price": 1,
            }
        )
        for i in range(5)
    ]
    new = [
        orjson.dumps(
            {
                "type": "fill",
                "ts": session + i,
                "order_id": f"t{i}",
                "exec_id": f"t{i}",
                "account": "A",
                "strategy": "smars",
                "symbol": "X",
                "side": "sell",
                "qty": 1,
                "price": 1,
            }
        )
        for i in range(3)
    ]
    from riskguard.ingest.topics import ensure_topics  # noqa: PLC0415

    await ensure_topics(settings.kafka)
    await produce(settings, *old, *new)
    base = msgspec.to_builtins(settings)
    base["runtime"]["start_of_day"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(session / 1e9)
    )
    sidecar = Sidecar(msgspec.convert(base, Settings), OVERFILL)
    await sidecar.start()
    try:
        await wait_for(lambda: sidecar.engine.events_applied == 3)
        assert sidecar.engine.position("account:A", "X") == -3.0  # yesterday's +50 excluded
        assert sidecar.before_session in (0, 5)  # 0 where the broker seeks by time
    finally:
        await sidecar.stop()
