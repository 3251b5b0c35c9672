"""Cancel on halt on a real broker: every halt publishes the scope's working orders on the
control topic, in bounded parts, right after its state record; an unconfirmed cancel
pages and resolves; an order opened in a halted scope after the halt is named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskguard import audit
from riskguard.brokers import BrokerKind
from riskguard.control.reader import partitions
from riskguard.control.records import (
    CANCEL_PART_MAX,
    CancelRecord,
    Record,
    StateRecord,
    decode_record,
)
from riskguard.ingest.runtime import Sidecar
from riskguard.ingest.topics import ensure_topics
from riskguard.limits import Limits, parse
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL, fresh_broker, local_settings
from tests.integration.test_notifiers import Recorder, recorder, with_sinks

__all__ = ["control_records", "ev", "eventually", "produce", "recorder", "until"]


def ev(**fields: object) -> bytes:
    base = {"ts": time.time_ns(), "account": "A", "strategy": "smars", "symbol": "RSHYY"}
    return orjson.dumps({**base, **fields})


def order(oid: str, **fields: object) -> bytes:
    return ev(**{"type": "new", "order_id": oid, "side": "buy", "qty": 10, "price": 5, **fields})


async def produce(settings: Settings, *values: bytes) -> None:
    """Send every value (keyed by account: one partition per account), then wait for all."""
    await ensure_topics(settings.kafka)
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await p.start()
    try:
        futures = []
        for v in values:
            key = orjson.loads(v).get("account", "-").encode()
            futures.append(await p.send(settings.kafka.input_topics[0], v, key=key))
        await asyncio.gather(*futures)
    finally:
        await p.stop()


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def control_records(settings: Settings) -> list[tuple[str, Record]]:
    """Every readable record on the control topic, in topic order, with its key."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await c.start()
    try:
        tps = await partitions(c, settings.kafka.control_topic, timeout_s=10)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[tuple[str, Record]] = []
        deadline = time.monotonic() + 15
        while any([await c.position(tp) < end[tp] for tp in tps]):
            assert time.monotonic() < deadline, "control topic not read to its end"
            for msgs in (await c.getmany(timeout_ms=200)).values():
                for m in msgs:
                    record = decode_record(m.value)
                    if record is not None:
                        out.append((m.key.decode(), record))
        return out
    finally:
        await c.stop()


async def eventually(
    settings: Settings, done: Callable[[list[tuple[str, Record]]], bool], timeout: float = 15.0
) -> list[tuple[str, Record]]:
    """The control topic's records, read again until ``done`` says they are complete."""
    deadline = time.monotonic() + timeout
    while not done(records := await control_records(settings)):
        assert time.monotonic() < deadline, "records not on the control topic in time"
        await asyncio.sleep(0.1)
    return records


def cancels_of(records: list[tuple[str, Record]], halt_id: str) -> list[CancelRecord]:
    parts = [r for _, r in records if isinstance(r, CancelRecord) and r.halt_id == halt_id]
    return sorted(parts, key=lambda r: r.part)


def with_limits(settings: Settings, **runtime: Any) -> Settings:
    base = msgspec.to_builtins(settings)
    base["runtime"].update(runtime)
    return msgspec.convert(base, Settings)


async def started(settings: Settings, limits: Limits = OVERFILL) -> Sidecar:
    sidecar = Sidecar(settings, limits)
    await sidecar.start()
    return sidecar


async def test_a_halt_names_every_working_order_of_its_scope_and_only_those(
    settings: Settings,
) -> None:
    sidecar = await started(settings)
    try:
        flow = [
            order("s1"),
            order("s2", account="B", side="sell", qty=7),  # the strategy in another account
            order("s3", qty=10),
            ev(type="fill", order_id="s3", exec_id="x3", side="buy", qty=4, price=5),
            order("done"),
            ev(type="cancel", order_id="done"),
            order("filled", qty=2),
            ev(type="fill", order_id="filled", exec_id="xf", side="buy", qty=2, price=5),
            order("other", strategy="peg"),
        ]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.events_applied == len(flow))
        tr = await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
        assert tr is not None
        records = await control_records(settings)  # the publish was awaited: already there
    finally:
        await sidecar.stop()
    (part,) = cancels_of(records, tr.id)
    keys = [k for k, _ in records if k != "__heartbeat__" and not k.startswith("home:")]
    state_at = keys.index("strategy:smars")
    assert keys[state_at + 1] == "cancel:strategy:smars:0"  # right after the state record
    assert [r for k, r in records if k == "strategy:smars"] == [StateRecord(tr.scope, tr.to, tr)]
    assert (part.scope, part.kind, part.part, part.parts) == ("strategy:smars", "halt", 0, 1)
    assert part.reason == "by alice: runaway"
    by_id = {o.order_id: o for o in part.orders}
    assert set(by_id) == {"s1", "s2", "s3"}
    assert (by_id["s2"].account, by_id["s2"].side, by_id["s2"].open_qty) == ("B", "sell", 7.0)
    assert (by_id["s3"].symbol, by_id["s3"].open_qty) == ("RSHYY", 6.0)


async def test_an_automatic_halt_publishes_its_cancel_request(settings: Settings) -> None:
    limits = parse(
        'version = 1\n[[rule]]\nname = "resting"\nmetric = "open_orders"\nscope = "strategy"\n'
        'match = { strategy = "smars" }\nmax = 3\naction = "halt"\n'
    )
    sidecar = await started(settings, limits)
    try:
        flow = [order(f"o{i}", account="AB"[i % 2]) for i in range(4)] + [
            order("p", strategy="peg")
        ]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")
        tr = sidecar.engine.killswitch.standing()["strategy:smars"]
        records = await eventually(settings, lambda recs: bool(cancels_of(recs, tr.id)))
    finally:
        await sidecar.stop()
    (part,) = cancels_of(records, tr.id)
    assert tr.kind == "auto" and part.reason.startswith("rule resting: open_orders 4 vs limit 3")
    assert {o.order_id for o in part.orders} == {"o0", "o1", "o2", "o3"}


async def test_reduce_only_names_only_the_orders_that_increase_the_position(
    settings: Settings,
) -> None:
    sidecar = await started(settings)
    try:
        flow = [
            order("long", qty=100),
            ev(type="fill", order_id="long", exec_id="xl", side="buy", qty=100, price=5),
            order("more"),  # increases the long position
            order("less", side="sell", qty=30),  # reduces it
            order("flip", side="sell", qty=500),  # reduces first: not cancelled
            order("flat", symbol="Y"),  # no position in Y: any order increases it
            order("b", account="B"),  # another account: not in the scope
        ]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.events_applied == len(flow))
        tr = await sidecar.manual("reduce_only", "account:A", "alice", "loss limit near")
        assert tr is not None
        records = await control_records(settings)
    finally:
        await sidecar.stop()
    (part,) = cancels_of(records, tr.id)
    assert part.kind == "reduce_only"
    assert {o.order_id for o in part.orders} == {"more", "flat"}


async def test_a_firm_halt_over_many_orders_is_split_into_bounded_parts(
    settings: Settings,
) -> None:
    n = 2 * CANCEL_PART_MAX + 3
    sidecar = await started(settings)
    try:
        flow = [order(f"o{i}", account=f"acct{i % 7}", symbol=f"S{i % 13}") for i in range(n)]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.events_applied == n, timeout=60)
        tr = await sidecar.manual("halt", "firm", "ops", "kill everything")
        assert tr is not None
        records = await control_records(settings)
    finally:
        await sidecar.stop()
    parts = cancels_of(records, tr.id)
    assert [(p.part, p.parts) for p in parts] == [(0, 3), (1, 3), (2, 3)]
    assert all(len(p.orders) <= CANCEL_PART_MAX for p in parts)
    named = [o.order_id for p in parts for o in p.orders]
    assert sorted(named) == sorted(f"o{i}" for i in range(n))
    keys = [k for k, _ in records if k != "__heartbeat__" and not k.startswith("home:")]
    state_at = keys.index("firm")
    assert keys[state_at + 1 : state_at + 4] == [f"cancel:firm:{i}" for i in range(3)]


async def test_an_unconfirmed_cancel_pages_then_resolves(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    limits = parse(
        "version = 1\ncancel_deadline_ms = 300\n"
        '[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e6\n'
        'action = "halt"\n'
    )
    sidecar = await started(with_sinks(settings, recorder.url, tmp_path), limits)
    hook = recorder.received.setdefault("hook", [])

    def alerts(rule: str) -> list[dict[str, Any]]:
        return [a for a in hook if a.get("rule") == rule]

    try:
        await produce(settings, order("w1"), order("w2", side="sell", qty=3))
        await until(lambda: sidecar.engine.events_applied == 2)
        tr = await sidecar.manual("halt", "account:A", "alice", "drill")
        assert tr is not None
        await until(lambda: len(alerts("cancel-incomplete")) == 1)
        (incident,) = alerts("cancel-incomplete")
        status = sidecar.status()["cancels"]
        assert status["incomplete"]["count"] == 2 and status["incomplete"]["alert_id"]
        assert {o["order_id"] for o in status["incomplete"]["orders"]} == {"w1", "w2"}
        await produce(settings, ev(type="cancel", order_id="w1"))
        await asyncio.sleep(0.5)
        assert alerts("cancel-complete") == []  # w2 still works
        await produce(settings, ev(type="reject", order_id="w2"))
        await until(lambda: len(alerts("cancel-complete")) == 1)
        pd = recorder.received.setdefault("pd", [])
        await until(lambda: len(pd) >= 3)  # the halt, the page, its resolution
    finally:
        await sidecar.stop()
    reason = incident["reason"]
    assert reason.startswith("2 order(s) still working after riskguard asked for their cancel")
    assert "w1 (A/smars RSHYY buy 10; halt of account:A)" in reason
    assert "w2 (A/smars RSHYY sell 3; halt of account:A)" in reason
    (done,) = alerts("cancel-complete")
    assert done["ends"] == incident["id"]
    page = next(
        p for p in pd if p["dedup_key"] == incident["id"] and p["event_action"] == "trigger"
    )
    assert page["payload"]["severity"] == "critical"
    assert "cancel-incomplete" in page["payload"]["summary"]
    assert {
        "routing_key": "R0UTING-KEY",
        "event_action": "resolve",
        "dedup_key": incident["id"],
    } in pd
    logged = [
        r["record"]["rule"]
        for r in audit.read(settings.runtime.audit_log)
        if r["kind"] == "transition" and r["record"]["kind"] == "alert"
    ]
    assert logged == ["cancel-incomplete", "cancel-complete"]


async def test_an_order_opened_in_a_halted_scope_after_the_halt_is_named(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    limits = parse(
        "version = 1\ncancel_deadline_ms = 200\n"
        '[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e6\n'
        'action = "halt"\n'
    )
    sidecar = await started(with_sinks(settings, recorder.url, tmp_path), limits)
    hook = recorder.received.setdefault("hook", [])
    try:
        tr = await sidecar.manual("halt", "strategy:smars", "alice", "drill")
        assert tr is not None
        records = await control_records(settings)
        (part,) = cancels_of(records, tr.id)
        assert part.orders == ()  # nothing was working: one empty part
        await produce(settings, order("rogue", account="B"), order("fine", strategy="peg"))
        await until(lambda: any(a.get("rule") == "cancel-incomplete" for a in hook))
        (incident,) = [a for a in hook if a.get("rule") == "cancel-incomplete"]
        await produce(settings, ev(type="cancel", order_id="rogue", account="B"))
        await until(lambda: any(a.get("rule") == "cancel-complete" for a in hook))
    finally:
        await sidecar.stop()
    assert (
        "rogue (B/smars RSHYY buy 10; opened after the halt of strategy:smars)"
        in incident["reason"]
    )
    assert "fine" not in incident["reason"]
    assert "1 of them opened in the halted scope after the halt was decided" in incident["reason"]


async def test_a_router_ignoring_the_halt_pages_once_not_once_per_order(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    # a router not asking the gate keeps trading a halted strategy: every order opens
    # after the halt's deadline (so is overdue at once) and fills at the next batch
    limits = parse(
        "version = 1\ncancel_deadline_ms = 200\n"
        '[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e6\n'
        'action = "halt"\n'
    )
    sidecar = await started(with_sinks(settings, recorder.url, tmp_path), limits)
    hook = recorder.received.setdefault("hook", [])
    pd = recorder.received.setdefault("pd", [])

    def alerts(rule: str) -> list[dict[str, Any]]:
        return [a for a in hook if a.get("rule") == rule]

    try:
        assert await sidecar.manual("halt", "strategy:smars", "alice", "drill") is not None
        await asyncio.sleep(0.3)  # past the halt's deadline
        for i in range(5):
            await produce(settings, order(f"rogue{i}"))
            await until(lambda n=2 * i + 1: sidecar.engine.events_applied == n)
            await until(lambda: len(alerts("cancel-incomplete")) >= 1)
            await asyncio.sleep(0.1)  # a tick or two with the order working
            qty = {"qty": 10, "price": 5, "side": "buy", "exec_id": f"x{i}"}
            await produce(settings, ev(type="fill", order_id=f"rogue{i}", **qty))
            await until(lambda n=2 * i + 2: sidecar.engine.events_applied == n)
            await asyncio.sleep(0.1)
        assert len(alerts("cancel-incomplete")) == 1 and alerts("cancel-complete") == []
        await until(lambda: len(alerts("cancel-complete")) == 1)  # quiet for 5 s
        await until(lambda: len([p for p in pd if p["event_action"] == "resolve"]) == 1)
    finally:
        await sidecar.stop()
    (incident,), (done,) = alerts("cancel-incomplete"), alerts("cancel-complete")
    assert (
        "rogue0 (A/smars RSHYY buy 10; opened after the halt of strategy:smars)"
        in (incident["reason"])
    )
    assert done["ends"] == incident["id"] and "held open" in done["reason"]
    triggers = [p for p in pd if p["dedup_key"] == incident["id"]]
    assert [p["event_action"] for p in triggers] == ["trigger", "resolve"]


async def test_a_request_the_broker_did_not_take_goes_out_with_its_halt_later(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    broker = fresh_broker(broker_kind)  # its own: it is frozen (SIGSTOP) for a while
    settings = local_settings(broker, tmp_path, **{"runtime.commit_interval_ms": 200})
    sidecar = await started(settings)
    try:
        await produce(settings, order("w1"), order("w2", account="B"))
        await until(lambda: sidecar.engine.events_applied == 2)
        broker.pause()
        try:
            tr = await sidecar.manual("halt", "account:A", "alice", "broker trouble")
            assert tr is not None and sidecar.outbox.pending() == ["account:A"]
        finally:
            broker.resume()
        await until(lambda: sidecar.outbox.pending() == [], timeout=30)
        records = await control_records(settings)
    finally:
        await sidecar.stop()
        broker.stop()
    (part,) = cancels_of(records, tr.id)
    assert [o.order_id for o in part.orders] == ["w1"]
    keys = [k for k, _ in records if k != "__heartbeat__" and not k.startswith("home:")]
    assert keys.index("cancel:account:A:0") > keys.index("account:A")
