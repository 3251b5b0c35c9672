"""Properties of exposure as risk officers count it (issue 13), in their general form.

- An opening position of q at price p, followed by any stream, is the same book as
  starting flat and filling q at p first: same positions, cost, realised P&L, exposure,
  P&L and drawdown for every scope.
- Contract size and FX: after any stream of trades, marks and rate moves ending with a
  mark, a scope's gross and net notional are |position| x mark x multiplier x the latest
  rate (every lot revalued at the last mark, converted at the last rate).
- Working orders never make the potential gross smaller than the gross, and with no
  order working the two are equal.
- In a symbol with no price yet (never marked nor traded) a scope's potential gross is
  its worst side's open notional: the larger of its working buys' and working sells'
  qty x |limit| x multiplier (market orders at 0, as open notional counts them); once
  a mark arrives, the larger working quantity x |mark| x multiplier.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.limits import parse
from tests.builders import MS, T0

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACCOUNTS = ("A", "B")
PRICES = (9.5, 10.0, 10.25, 11.0, 12.5)
QTYS = (1.0, 2.5, 5.0, 0.1, 10.0)
NO_RULES = "version = 1\nrevalue_ms = {revalue}\n"


def engine(revalue: int) -> Engine:
    return Engine(parse(NO_RULES.format(revalue=revalue)), event_time=True)


@st.composite
def trades(draw: Any, symbol: str = "X") -> list[wire.Event]:
    """Fills, orders and marks in one symbol, two accounts, distinct increasing times."""
    out: list[wire.Event] = []
    for i in range(draw(st.integers(0, 40))):
        ts = T0 + (i + 1) * 7 * MS
        account = draw(st.sampled_from(ACCOUNTS))
        keys = {"account": account, "strategy": f"s-{account}", "symbol": symbol}
        side = draw(st.sampled_from(["buy", "sell"]))
        qty, price = draw(st.sampled_from(QTYS)), draw(st.sampled_from(PRICES))
        kind = draw(st.sampled_from(["fill", "fill", "mark", "new", "cancel"]))
        if kind == "fill":
            out.append(
                wire.Fill(
                    ts=ts,
                    order_id=f"o{i}",
                    exec_id=f"e{i}",
                    side=side,
                    qty=qty,
                    price=price,
                    **keys,
                )
            )
        elif kind == "mark":
            out.append(wire.Mark(ts=ts, symbol=symbol, price=price))
        elif kind == "new":
            out.append(
                wire.NewOrder(ts=ts, order_id=f"w{i % 5}", side=side, qty=qty, price=price, **keys)
            )
        else:
            out.append(wire.CancelOrder(ts=ts, order_id=f"w{i % 5}", **keys))
    return out


def book(e: Engine) -> dict[str, Any]:
    scopes = ("firm", "account:A", "account:B", "strategy:s-A", "strategy:s-B", "symbol:X")
    return {
        "positions": e.positions(),
        "values": {s: e.scope_values(s) for s in scopes},
    }


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@PROPERTY
@given(
    st.sampled_from([10.0, -7.5, 0.3]),
    st.sampled_from(PRICES),
    trades(),
    st.sampled_from([0, 100]),
)
def test_an_opening_position_is_a_first_fill(
    q: float, price: float, stream: list[wire.Event], revalue: int
) -> None:
    keys = {"account": "A", "strategy": "s-A", "symbol": "X"}
    opened, filled = engine(revalue), engine(revalue)
    opened.apply([wire.Position(ts=T0, qty=q, kind="open", price=price, **keys)])
    side = "buy" if q > 0 else "sell"
    first = wire.Fill(
        ts=T0, order_id="open", exec_id="open", side=side, qty=abs(q), price=price, **keys
    )
    filled.apply([first])
    for e in (opened, filled):
        e.apply(stream)
        e.settle()
    assert same(book(opened), book(filled))


@PROPERTY
@given(
    trades(symbol="X"),
    st.lists(st.sampled_from([0.9, 1.1, 1.25]), min_size=1, max_size=4),
    st.sampled_from([1.0, 10.0, 50.0]),
    st.sampled_from(PRICES),
)
def test_gross_and_net_are_position_times_mark_times_size_times_rate(
    stream: list[wire.Event], rates: list[float], multiplier: float, last_mark: float
) -> None:
    e = engine(0)
    e.apply([wire.Instrument(ts=T0, symbol="X", multiplier=multiplier, currency="EUR")])
    e.apply([wire.Fx(ts=T0, currency="EUR", rate=rates[0])])
    third = max(1, len(stream) // len(rates))
    for k, rate in enumerate(rates):  # the rate moves while the book trades
        e.apply(stream[k * third : (k + 1) * third] if k < len(rates) - 1 else stream[k * third :])
        e.apply([wire.Fx(ts=T0 + 900 * MS + k, currency="EUR", rate=rate)])
    e.apply([wire.Mark(ts=T0 + 999 * MS, symbol="X", price=last_mark)])
    for account in ACCOUNTS:
        qty = e.position(f"account:{account}", "X")
        v = e.scope_values(f"account:{account}")
        money = qty * last_mark * multiplier * rates[-1]
        assert math.isclose(v["net_notional"], money, rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(v["gross_notional"], abs(money), rel_tol=1e-9, abs_tol=1e-6)


@PROPERTY
@given(trades(), st.sampled_from([0, 100]))
def test_potential_gross_is_never_below_gross(stream: list[wire.Event], revalue: int) -> None:
    e = engine(revalue)
    for k in range(0, len(stream), 5):
        e.apply(stream[k : k + 5])
        for scope in ("firm", "account:A", "account:B", "symbol:X"):
            v = e.scope_values(scope)
            assert v["potential_gross_notional"] >= v["gross_notional"] - 1e-6
            if v["open_orders"] == 0:
                assert v["potential_gross_notional"] == v["gross_notional"]
                assert v["open_order_notional"] == 0.0


@st.composite
def unpriced_orders(draw: Any) -> list[tuple[int, str, str, float, float | None]]:
    """(order slot, account, side, qty, limit or None for market) steps in one symbol:
    a step on a working slot replaces (same kind of price) or cancels it, else opens it."""
    steps = []
    for _ in range(draw(st.integers(1, 30))):
        market = draw(st.integers(0, 5)) == 0
        price = None if market else draw(st.sampled_from((*PRICES, -3.0)))
        steps.append(
            (
                draw(st.integers(0, 5)),
                draw(st.sampled_from(ACCOUNTS)),
                draw(st.sampled_from(["buy", "sell"])),
                draw(st.sampled_from(QTYS)),
                price,
            )
        )
    return steps


@PROPERTY
@given(unpriced_orders(), st.sampled_from([1.0, 50.0]), st.sampled_from(PRICES))
def test_potential_gross_of_an_unpriced_symbol_is_its_worst_sides_open_notional(
    steps: list[tuple[int, str, str, float, float | None]], multiplier: float, last_mark: float
) -> None:
    e = engine(0)
    e.apply([wire.Instrument(ts=T0, symbol="Y", multiplier=multiplier)])
    working: dict[str, tuple[str, str, float, float | None]] = {}
    opened = [0] * 6  # a slot opens a fresh id each time: a closed id may be a redelivery
    for i, (slot, account, side, qty, price) in enumerate(steps):
        oid, ts = f"w{slot}-{opened[slot]}", T0 + (i + 1) * MS
        if oid in working and i % 3 == 0:
            a, sd, _, px = working.pop(oid)
            opened[slot] += 1
            ev: wire.Event = wire.CancelOrder(
                ts=ts, order_id=oid, account=a, strategy=f"s-{a}", symbol="Y"
            )
        elif oid in working:
            a, sd, _, px = working[oid]
            px = None if px is None else (price if price is not None else px)
            working[oid] = (a, sd, qty, px)
            ev = wire.ReplaceOrder(
                ts=ts, order_id=oid, side=sd, qty=qty, price=px,
                account=a, strategy=f"s-{a}", symbol="Y",
            )  # fmt: skip
        else:
            working[oid] = (account, side, qty, price)
            ev = wire.NewOrder(
                ts=ts, order_id=oid, side=side, qty=qty, price=price,
                account=account, strategy=f"s-{account}", symbol="Y",
            )  # fmt: skip
        assert not e.apply([ev]).bad
        for scope in ("firm", "account:A", "account:B", "symbol:Y"):
            mine = [w for w in working.values() if scope in ("firm", "symbol:Y", f"account:{w[0]}")]
            side_money = {
                sd: sum(q * abs(px or 0.0) * multiplier for _, s2, q, px in mine if s2 == sd)
                for sd in ("buy", "sell")
            }
            v = e.scope_values(scope)
            close = dict(rel_tol=1e-9, abs_tol=1e-6)
            assert math.isclose(v["potential_gross_notional"], max(side_money.values()), **close)
            assert math.isclose(v["open_order_notional"], sum(side_money.values()), **close)
    e.apply([wire.Mark(ts=T0 + 999 * MS, symbol="Y", price=last_mark)])
    for account in ACCOUNTS:
        mine = [w for w in working.values() if w[0] == account]
        qty = {sd: sum(q for _, s2, q, _ in mine if s2 == sd) for sd in ("buy", "sell")}
        expected = max(qty.values()) * abs(last_mark) * multiplier
        potential = e.scope_values(f"account:{account}")["potential_gross_notional"]
        assert math.isclose(potential, expected, rel_tol=1e-9, abs_tol=1e-6)
