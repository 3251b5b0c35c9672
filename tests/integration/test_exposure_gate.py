"""Exposure reaches the gate, on a real broker: the restricted list refused pre-trade, a
futures order valued with its contract size and FX rate (before any price too), a venue
halt that stops one venue only, an order sent anyway in a restricted symbol halting
its strategy, and a reduce-only venue judged by the firm's position."""

from __future__ import annotations

import time
from pathlib import Path

from riskguard.control.records import InstrumentRecord, MarkRecord
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_cancel_on_halt import (
    cancels_of,
    control_records,
    ev,
    order,
    produce,
    until,
)
from tests.integration.test_gate_feed import with_runtime

LIMITS = """version = 1
base_currency = "USD"

[[rule]]
name = "notional"
metric = "order_notional"
scope = "account"
max = 1000000
action = "halt"

[[rule]]
name = "xnas-rate"
metric = "order_rate"
scope = "venue"
match = { venue = "XNAS" }
window_ms = 60000
max = 2
action = "halt"

[[restricted]]
name = "deal-XYZ"
symbols = ["XYZ"]
reason = "MNPI: deal team wall-crossed"
"""


async def test_the_gate_refuses_restricted_and_oversized_orders_and_honours_a_venue_halt(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(LIMITS)
    sidecar = Sidecar(with_runtime(settings, path, watch_limits=False, gate_publish_interval_ms=20))
    await sidecar.start()
    gate = Gate(settings.kafka.bootstrap_servers, settings.kafka.control_topic)
    await gate.start()
    try:
        await produce(
            settings,
            ev(type="instrument", symbol="FESX", multiplier=50, currency="EUR"),
            ev(type="fx", currency="EUR", rate=1.1),
            ev(type="mark", symbol="FESX", price=4000),
            ev(type="instrument", symbol="ES", multiplier=50),  # never traded nor marked
        )

        def mark_seen() -> bool:
            mark = gate.view.marks.get("FESX")
            return isinstance(mark, MarkRecord) and mark.rate == 1.1 and mark.multiplier == 50

        await until(lambda: gate.health().allowed and gate.view.rules is not None)
        await until(mark_seen)
        await until(lambda: isinstance(gate.view.instruments.get("ES"), InstrumentRecord))
        # before any ES price: 10 x 6,000 x 50 = 3,000,000 (valued at 60,000 without
        # the instrument record, and allowed)
        es = gate.check("A", "smars", "ES", "buy", 10.0, 6000.0)
        assert (es.allowed, es.rule, es.value) == (False, "notional", 3_000_000.0)
        restricted = gate.check("A", "smars", "XYZ", "buy", 1.0, 10.0)
        assert (restricted.allowed, restricted.rule, restricted.scope) == (
            False,
            "deal-XYZ",
            "strategy:smars",
        )
        assert "MNPI" in restricted.reason
        # 4 x 4,000 x 50 x 1.1 = 880,000 USD: allowed; 5 lots = 1,100,000: refused
        assert gate.check("A", "smars", "FESX", "buy", 4.0, 4000.0).allowed
        big = gate.check("A", "smars", "FESX", "buy", 5.0, 4000.0)
        assert (big.rule, big.value, big.limit) == ("notional", 1_100_000.0, 1_000_000.0)
        # three orders to XNAS breach the venue's rate: only XNAS is halted
        await produce(
            settings,
            *(order(f"x{i}", symbol="AAPL", venue="XNAS", ts=time.time_ns()) for i in range(3)),
        )
        await until(lambda: not gate.check("A", "smars", "AAPL", "buy", 1.0, 10.0, venue="XNAS"))
        halted = gate.check("A", "smars", "AAPL", "buy", 1.0, 10.0, venue="XNAS")
        assert (halted.state, halted.scope) == ("HALTED", "venue:XNAS")
        assert gate.check("A", "smars", "AAPL", "buy", 1.0, 10.0, venue="ARCX").allowed
        assert gate.check("A", "smars", "AAPL", "buy", 1.0, 10.0).allowed
        # sent anyway: riskguard halts the ordering strategy
        await produce(settings, order("r1", symbol="XYZ"))
        await until(lambda: not gate.allows("A", "smars", "MSFT", "buy", False))
        assert gate.allows("A", "smars", "MSFT", "buy", False).scope == "strategy:smars"
    finally:
        await gate.stop()
        await sidecar.stop()


async def test_a_reduce_only_venue_lets_only_orders_reducing_the_firms_position_through(
    settings: Settings,
) -> None:
    """The firm is long 100 RSHYY (bought on ARCX): an operator's reduce-only of XNAS
    cancels the XNAS orders that would increase it, and the gate lets an order to XNAS
    through only if it reduces it. Before, every XNAS order was cancelled and refused
    (no position published for a venue: 0), and a venue halt named no order at all."""
    sidecar = Sidecar(with_runtime(settings, gate_publish_interval_ms=20), OVERFILL)
    await sidecar.start()
    gate = Gate(settings.kafka.bootstrap_servers, settings.kafka.control_topic)
    await gate.start()
    try:
        flow = [
            order("long", qty=100, venue="ARCX"),
            ev(type="fill", order_id="long", exec_id="xl", side="buy", qty=100, price=5),
            order("up", venue="XNAS"),  # would increase the firm's long
            order("down", account="B", side="sell", qty=30, venue="XNAS"),  # reduces it
            order("arcx", venue="ARCX"),  # another venue: not in the scope
        ]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.events_applied == len(flow))
        tr = await sidecar.manual("reduce_only", "venue:XNAS", "alice", "venue degraded")
        assert tr is not None
        (part,) = cancels_of(await control_records(settings), tr.id)
        assert (part.kind, [o.order_id for o in part.orders]) == ("reduce_only", ["up"])
        sell = ("A", "smars", "RSHYY", "sell", 40.0, 5.0)
        await until(lambda: gate.check(*sell, venue="XNAS").allowed)
        verdict = gate.check(*sell, venue="XNAS")
        assert (verdict.state, verdict.scope) == ("REDUCE_ONLY", "venue:XNAS")
        # B's sale of 30 to XNAS is working: 70 left to sell (docs/gate.md, session 22)
        assert verdict.reason.endswith(
            "sell 40 reduces the firm's position 100 to 60 (30 once the working sells of 30 "
            "fill too)"
        )
        assert gate.check("A", "smars", "RSHYY", "sell", 70.0, 5.0, venue="XNAS").allowed
        assert not gate.check("A", "smars", "RSHYY", "sell", 71.0, 5.0, venue="XNAS").allowed
        buy = gate.check("A", "smars", "RSHYY", "buy", 1.0, 5.0, venue="XNAS")
        assert not buy.allowed and buy.reason.endswith(
            "would increase the firm's position 100 to 101"
        )
        assert gate.check("A", "smars", "RSHYY", "buy", 1.0, 5.0, venue="ARCX").allowed
        halt = await sidecar.manual("halt", "venue:XNAS", "alice", "venue down")
        assert halt is not None
        (part,) = cancels_of(await control_records(settings), halt.id)
        assert (part.kind, sorted(o.order_id for o in part.orders)) == ("halt", ["down", "up"])
    finally:
        await gate.stop()
        await sidecar.stop()
