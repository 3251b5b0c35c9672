"""Data for the gates' pre-trade checks on a real broker: the per-order rules on start and
after a reload, marks (throttled, latest wins), positions of REDUCE_ONLY scopes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec

from riskguard.control.records import MarkRecord, PositionRecord, Record, RulesRecord
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import load
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_cancel_on_halt import ev, eventually, order, produce, until

LIMITS = """version = 1

[[rule]]
name = "fat"
metric = "order_qty"
scope = "strategy"
match = {{ strategy = "smars" }}
max = {max}
action = "halt"

[[rule]]
name = "collar"
metric = "price_deviation"
scope = "symbol"
max = 0.05
action = "reduce_only"

[[rule]]
name = "overfill"
metric = "parent_overfill_ratio"
scope = "strategy"
max = 1.0
action = "halt"
"""


def latest(records: list[tuple[str, Record]], key: str) -> Record | None:
    return next((r for k, r in reversed(records) if k == key), None)


def of_kind(records: list[tuple[str, Record]], key: str) -> list[Record]:
    return [r for k, r in records if k == key]


def with_runtime(settings: Settings, limits: Path | None = None, **runtime: object) -> Settings:
    base = msgspec.to_builtins(settings)
    base["runtime"].update(runtime)
    if limits is not None:
        base["limits"] = str(limits)
    return msgspec.convert(base, Settings)


async def test_rules_are_published_on_start_and_after_a_reload(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(LIMITS.format(max=500))
    sidecar = Sidecar(with_runtime(settings, path, watch_limits=False))
    await sidecar.start()
    try:
        first = await eventually(settings, lambda r: latest(r, "__rules__") is not None)
        rules = latest(first, "__rules__")
        assert isinstance(rules, RulesRecord)
        assert rules.limits_sha256 == load(path).digest
        assert [(r.name, r.metric, r.max) for r in rules.rules] == [
            ("fat", "order_qty", 500.0),
            ("collar", "price_deviation", 0.05),
        ]  # parent_overfill_ratio is judged by riskguard, not before the order
        assert rules.rules[0].match == {"strategy": ("smars",)}
        assert rules.rules[1].action == "reduce_only"
        tmp = path.with_name(".limits.tmp")
        tmp.write_text(LIMITS.format(max=50))
        os.replace(tmp, path)
        assert await sidecar.reloader.reload("SIGHUP") is True
        again = await eventually(settings, lambda r: len(of_kind(r, "__rules__")) == 2)
        status = sidecar.status()["gate_feed"]
    finally:
        await sidecar.stop()
    newer = latest(again, "__rules__")
    assert isinstance(newer, RulesRecord)
    assert newer.limits_sha256 == load(path).digest != rules.limits_sha256
    assert newer.rules[0].max == 50.0
    assert status["rules_sha256"] == newer.limits_sha256 and status["rules_pending"] is False


async def test_marks_are_throttled_and_the_latest_price_wins(settings: Settings) -> None:
    interval_ms = 1000
    sidecar = Sidecar(with_runtime(settings, gate_publish_interval_ms=interval_ms), OVERFILL)
    await sidecar.start()
    try:
        began = time.monotonic()
        prices = [100.0 + i for i in range(30)]
        await produce(
            settings,
            *(ev(type="mark", price=p) for p in prices),
            ev(type="mark", symbol="Q", price=-3.5),
        )
        await until(lambda: sidecar.engine.events_applied == len(prices) + 1)

        def settled(records: list[tuple[str, Record]]) -> bool:
            mark = latest(records, "mark:RSHYY")
            return isinstance(mark, MarkRecord) and mark.price == prices[-1]

        records = await eventually(settings, settled)
        elapsed_ms = (time.monotonic() - began) * 1000
    finally:
        await sidecar.stop()
    marks = of_kind(records, "mark:RSHYY")
    assert all(isinstance(m, MarkRecord) and m.symbol == "RSHYY" for m in marks)
    assert len(marks) <= 2 + elapsed_ms / interval_ms < len(prices)  # at most one per interval
    (q,) = of_kind(records, "mark:Q")
    assert isinstance(q, MarkRecord) and (q.symbol, q.price) == ("Q", -3.5)


async def test_a_reduce_only_scope_publishes_its_positions(settings: Settings) -> None:
    sidecar = Sidecar(with_runtime(settings, gate_publish_interval_ms=50), OVERFILL)
    await sidecar.start()
    try:
        flow = [
            ev(type="fill", order_id="f1", exec_id="x1", side="buy", qty=100, price=5),
            ev(type="fill", order_id="f2", exec_id="x2", side="sell", qty=8, price=2, symbol="Y"),
            ev(type="fill", order_id="f3", exec_id="x3", side="buy", qty=1, price=2, account="B"),
        ]
        await produce(settings, *flow)
        await until(lambda: sidecar.engine.events_applied == len(flow))
        tr = await sidecar.manual("reduce_only", "account:A", "alice", "loss limit near")
        assert tr is not None

        def entered(records: list[tuple[str, Record]]) -> bool:
            return latest(records, "position:account:A:Y") is not None

        records = await eventually(settings, entered)
        x = latest(records, "position:account:A:RSHYY")
        assert isinstance(x, PositionRecord) and (x.scope, x.symbol, x.qty) == (
            "account:A",
            "RSHYY",
            100.0,
        )
        y = latest(records, "position:account:A:Y")
        assert isinstance(y, PositionRecord) and (y.qty, y.scope, y.symbol) == (
            -8.0,
            "account:A",
            "Y",
        )
        assert y.ts >= tr.decided_ns
        assert not any(k.startswith("position:account:B") for k, _ in records)
        await produce(
            settings, ev(type="fill", order_id="f4", exec_id="x4", side="sell", qty=30, price=5)
        )

        def reduced(records: list[tuple[str, Record]]) -> bool:
            now = latest(records, "position:account:A:RSHYY")
            return isinstance(now, PositionRecord) and now.qty == 70.0

        records = await eventually(settings, reduced)
    finally:
        await sidecar.stop()
    assert len(of_kind(records, "position:account:A:Y")) == 1  # unchanged: not re-sent


async def test_a_reduce_only_scopes_working_orders_go_out_with_its_positions(
    settings: Settings,
) -> None:
    # account:A is long 100 RSHYY and REDUCE_ONLY; a sale of 80 is sent. The position does
    # not change, but what its working orders may still fill does: the record goes out
    # again with sell_leaves 80, and a gate reading it refuses a second sale of 80
    # (docs/gate.md). 50 of the sale fill: long 50, sell_leaves 30.
    sidecar = Sidecar(with_runtime(settings, gate_publish_interval_ms=50), OVERFILL)
    await sidecar.start()
    try:
        buy = ev(type="fill", order_id="f1", exec_id="x1", side="buy", qty=100, price=5)
        await produce(settings, buy)
        await until(lambda: sidecar.engine.events_applied == 1)
        assert await sidecar.manual("reduce_only", "account:A", "alice", "drill") is not None
        await produce(settings, order("s1", side="sell", qty=80))

        def working(qty: float, sells: float) -> Any:
            def seen(records: list[tuple[str, Record]]) -> bool:
                now = latest(records, "position:account:A:RSHYY")
                return isinstance(now, PositionRecord) and (now.qty, now.leaves) == (
                    qty,
                    (0.0, sells),
                )

            return seen

        await eventually(settings, working(100.0, 80.0))
        fill = ev(type="fill", order_id="s1", exec_id="x2", side="sell", qty=50, price=5)
        await produce(settings, fill)
        await eventually(settings, working(50.0, 30.0))
    finally:
        await sidecar.stop()
