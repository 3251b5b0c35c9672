"""Exposure reaches the gate, on a real broker: the restricted list refused pre-trade, a
futures order valued with its contract size and FX rate (before any price too), a venue
halt that stops one venue only, and an order sent anyway in a restricted symbol halting
its strategy."""

from __future__ import annotations

import time
from pathlib import Path

from riskguard.control.records import InstrumentRecord, MarkRecord
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.test_cancel_on_halt import ev, order, produce, until
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
