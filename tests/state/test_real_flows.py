"""Properties of real flows (issue 10), each the general form of a case in tests/cases/.

- Redelivery (cases 01, 02): redelivering any subset of a stream's events, anywhere later
  in the same partition, gives the same positions, P&L, exposures, open orders, metric
  peaks and transitions. Streams carry reference data too: symbols priced in other
  currencies with exchange rates that move, and contract sizes set before a symbol
  trades (and changes refused once it does), so a late copy of an older rate or
  instrument must not move anything back.
- Revaluation (case 11): whenever no revaluation is waiting, P&L and exposures equal
  those of ``revalue_ms = 0`` on the same stream, and the drawdown and its high-water
  mark never exceed them: a lagged valuation can delay exposure, never invent P&L.
- Decimal quantities (cases 08, 12): fills that sum to an order's or parent's quantity
  close it and give a ratio of exactly 1.0; positions are the exact decimal sums; a
  flattened position is exactly zero; a real overfill still breaches.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine, Result
from riskguard.limits import Limits, parse
from tests.builders import MS, T0, rules_toml
from tests.state.test_kernel_vs_reference import RULES, STRATEGIES, SYMBOLS

MARK_PRICES = [9.5, 10.0, 10.5, 11.0]  # at most 4 distinct: the mark ring's size
TRADE_PRICES = [9.5, 10.0, 10.5, 11.0, 12.25, -2.5]
QTYS = [1.0, 5.0, 10.0, 0.1, 0.3, 2.5]
#: exchange rates (base USD per unit), at most 4 distinct per currency: the rate ring's size
RATES = {"EUR": [1.1, 1.25, 0.95, 1.05], "JPY": [0.0067, 0.0072, 0.0069]}
LATE = st.sampled_from([0, 0, 0, 61 * MS])
MULTIPLIERS = [1.0, 10.0, 0.5]
QUOTED_IN = [None, "USD", "EUR", "JPY"]  # None: the base currency
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def limits(revalue_ms: int) -> Limits:
    return parse(
        rules_toml(*RULES).replace("version = 1", f"version = 1\nrevalue_ms = {revalue_ms}")
    )


def reference_data(draw: Any, ts: int) -> wire.Event:
    """An exchange rate, or an instrument: a symbol's contract size and currency."""
    if draw(st.booleans()):
        code = draw(st.sampled_from(sorted(RATES)))
        return wire.Fx(ts=ts, currency=code, rate=draw(st.sampled_from(RATES[code])))
    return wire.Instrument(
        ts=ts,
        symbol=draw(st.sampled_from(SYMBOLS)),
        multiplier=draw(st.sampled_from(MULTIPLIERS)),
        currency=draw(st.sampled_from(QUOTED_IN)),
    )


@st.composite
def flows(draw: Any) -> list[wire.Event]:
    """Streams with distinct timestamps (some late, never skewed) and no order id reuse.

    (A reused id's earlier life cannot be told from a new order by its redelivered new;
    docs/events.md, Redelivery, says so.)

    Reference data comes first (up to 4 rates and instruments, before anything trades)
    and then after about one event in four, on top of the trading events, 5 ms after
    them (some late): rates move, and instruments repeat the applied values or change
    them, which is refused once the symbol is held or worked. Trading events are stamped
    on multiples of 10 ms (less 61 ms when late), reference data 5 ms off them, so every
    timestamp is distinct.
    """
    n = draw(st.integers(0, 4))
    out: list[wire.Event] = [
        reference_data(draw, T0 - (n - j) * 10 * MS + 5 * MS) for j in range(n)
    ]
    fills: list[wire.Fill] = []
    orders: list[tuple[str, dict[str, str]]] = []
    sides: dict[str, str] = {}  # a replace keeps its order's side (FIX)
    t = 0
    for i in range(draw(st.integers(1, 80))):
        t += draw(st.sampled_from([10, 20, 50])) * MS
        ts = T0 + t - draw(LATE)  # some late, all distinct
        strategy = draw(st.sampled_from(sorted(STRATEGIES)))
        keys = {
            "account": STRATEGIES[strategy],
            "strategy": strategy,
            "symbol": draw(st.sampled_from(SYMBOLS)),
        }
        kind = draw(
            st.sampled_from(["new", "new", "fill", "fill", "amend", "cancel", "replace", "mark"])
        )
        qty = draw(st.sampled_from(QTYS))
        price = draw(st.sampled_from(TRADE_PRICES))
        side = draw(st.sampled_from(["buy", "sell"]))
        if kind == "new" or (not orders and kind in ("cancel", "replace")):
            oid = f"o{i}"
            parent = draw(st.sampled_from([None, "P0"]))
            ev: wire.Event = wire.NewOrder(
                ts=ts, order_id=oid, side=side, qty=qty, price=price, parent_id=parent, **keys
            )
            orders.append((oid, keys))
            sides[oid] = side
        elif kind == "cancel":
            oid, k = draw(st.sampled_from(orders))
            ev = wire.CancelOrder(ts=ts, order_id=oid, **k)
        elif kind == "replace":
            oid, k = draw(st.sampled_from(orders))
            ev = wire.ReplaceOrder(ts=ts, order_id=oid, side=sides[oid], qty=qty, price=price, **k)
        elif kind == "mark":
            ev = wire.Mark(ts=ts, symbol=keys["symbol"], price=draw(st.sampled_from(MARK_PRICES)))
        elif kind == "amend" and fills:
            orig = draw(st.sampled_from(fills))
            bust = draw(st.booleans())
            ev = wire.Fill(
                ts=ts,
                order_id=orig.order_id,
                exec_id=f"x{i}",
                account=orig.account,
                strategy=orig.strategy,
                symbol=orig.symbol,
                exec_type="bust" if bust else "correct",
                ref_exec_id=orig.exec_id,
                side=None if bust else orig.side,
                qty=None if bust else qty,
                price=None if bust else price,
            )
        else:
            oid, k = (
                draw(st.sampled_from(orders))
                if orders and draw(st.booleans())
                else (
                    f"u{i}",
                    keys,
                )
            )
            ev = wire.Fill(
                ts=ts,
                order_id=oid,
                exec_id=f"e{i}",
                side=side,
                qty=qty,
                price=price,
                fee=draw(st.sampled_from([None, 0.5])),
                **k,
            )
            fills.append(ev)
        out.append(ev)
        if draw(st.sampled_from([False, False, False, True])):
            out.append(reference_data(draw, T0 + t + 5 * MS - draw(LATE)))
    if draw(st.booleans()):
        out.append(wire.ParentOrder(ts=T0 + t + MS, parent_id="P0", side="buy", qty=10.0, **keys))
    return out


def known(x: Any) -> Any:
    """``x`` with every NaN (an unvalued amount, no broker position) as the string "nan",
    so that equal outcomes compare equal."""
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, dict):
        return {k: known(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(known(v) for v in x)
    return x


def outcome(engine: Engine, transitions: list[Any]) -> dict[str, Any]:
    """Everything a redelivery must not change (not evaluation counts: a copy is skipped):
    also each position's money in its own currency, and the contract sizes, currencies
    and exchange rates in force.

    The ``fx-rate-missing`` system alert is raised after the batch in which a currency
    first met no rate, at the engine's clock then, so its time follows the batch
    boundaries (which copies shift): of it, which currencies were alerted is compared.
    """
    rules = {r.name for r in engine.limits.all_rules}
    scopes = sorted(set(engine.keys.scope_names))
    positions = engine.positions()
    symbols = engine.store.state.symbols
    rates = engine.store.state.currencies
    seen: dict[str, Any] = known(
        {
            "transitions": [
                (t.scope, t.rule, t.from_, t.to, t.kind, t.ts, round(t.value, 6))
                for t in transitions
                if t.rule in rules
            ],
            "system alerts": sorted(
                (t.rule, t.reason.split()[1])
                if t.rule == "fx-rate-missing"
                else (t.rule, t.ts, t.reason)
                for t in transitions
                if t.rule not in rules
            ),
            "positions": positions,
            "books": {
                (o, y): engine.book(o, y.removeprefix("symbol:")) for o, y in sorted(positions)
            },
            "values": {s: engine.scope_values(s) for s in scopes},
            "peaks": [(p.rule.name, p.high, p.low) for p in engine.peaks()],
            "instruments": {
                y: (
                    float(symbols["multiplier"][sid]),
                    engine.keys.currency_names[int(symbols["currency"][sid])],
                )
                for y in SYMBOLS
                if (sid := engine.keys.find_scope(f"symbol:{y}")) is not None
            },
            "rates": {
                code: (float(rates["rate"][c]), int(rates["known"][c]))
                for c, code in enumerate(engine.keys.currency_names)
            },
        }
    )
    return seen


def run(stream: list[wire.Event], revalue_ms: int = 100, batch: int = 7) -> tuple[Engine, Result]:
    """``stream`` applied in batches of ``batch``; a bad event's ``position`` is its index."""
    engine = Engine(limits(revalue_ms), event_time=True)
    total = Result()
    for k in range(0, len(stream), batch):
        part = stream[k : k + batch]
        r = engine.apply(part, origins=[str(k + j) for j in range(len(part))])
        total.transitions += r.transitions
        total.duplicates += r.duplicates
        total.bad += r.bad
    return engine, total


@PROPERTY
@given(flows(), st.data())
def test_redelivering_any_events_later_changes_nothing(stream: list[wire.Event], data: Any) -> None:
    slots: list[tuple[bool, int]] = [(False, i) for i in range(len(stream))]
    copies = data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=12))
    refdata = [i for i, ev in enumerate(stream) if isinstance(ev, wire.Fx | wire.Instrument)]
    if refdata:  # and more copies of rates and instruments, on top
        copies += data.draw(st.lists(st.sampled_from(refdata), max_size=6))
    for j in copies:
        first = slots.index((False, j))
        slots.insert(data.draw(st.integers(first + 1, len(slots))), (True, j))  # anywhere later
    redelivered = [stream[i] for _, i in slots]
    batch = data.draw(st.sampled_from([1, 7, 500]))
    once, r1 = run(stream, batch=batch)
    twice, r2 = run(redelivered, batch=batch)
    assert outcome(twice, r2.transitions) == outcome(once, r1.transitions)
    # The same events are bad, at the same places. A refused instrument was never applied,
    # so a copy of it is no redelivery: it is refused again, unless an instrument applied
    # since makes it older (ignored). A copy of a bad fill is a redelivery (its exec_id is
    # remembered).
    bad_once = {int(b.position): b.reason for b in r1.bad}
    assert len(bad_once) == len(r1.bad)
    bad_twice = [(slots[int(b.position)], b.reason) for b in r2.bad]
    assert sorted((i, why) for (copy, i), why in bad_twice if not copy) == sorted(bad_once.items())
    for (copy, i), why in bad_twice:
        if copy:
            assert (why, bad_once.get(i)) == ("refdata_changed", "refdata_changed")
    assert r2.duplicates <= r1.duplicates + len(copies)


@PROPERTY
@given(flows(), st.sampled_from([7, 100]))
def test_revaluation_never_invents_pnl(stream: list[wire.Event], revalue_ms: int) -> None:
    """At every consistent moment (no revaluation waiting) P&L and exposures equal those
    of revalue_ms = 0; the high-water mark and drawdown never exceed them."""
    # Money is reported rounded to a millionth, as it is judged: the same amount summed in
    # another order (1e-14 apart) can round to the neighbouring millionth when it ends in
    # half a millionth (rates of 1.05 or 0.0067 make such amounts), so amounts agree
    # within one millionth.
    tol = 1.5e-6
    now = Engine(limits(0), event_time=True)
    lagged = Engine(limits(revalue_ms), event_time=True)
    checked = 0
    for ev in stream:
        now.apply([ev])
        lagged.apply([ev])
        if lagged.store.state.globals["first_pending"][0] >= 0:
            continue  # a revaluation is waiting: exposure may lag, by at most one epoch
        checked += 1
        for scope in set(now.keys.scope_names) | set(lagged.keys.scope_names):
            a, b = now.scope_values(scope), lagged.scope_values(scope)
            assert a["unvalued"] == b["unvalued"], scope  # no rate yet: unknown in both
            if a["unvalued"]:
                continue
            for name in ("pnl", "net_notional", "gross_notional", "fees", "realised_pnl"):
                assert math.isclose(a[name], b[name], rel_tol=1e-9, abs_tol=tol), (scope, name)
            assert b["drawdown"] <= a["drawdown"] + tol, scope
    lagged.settle()
    for scope in set(now.keys.scope_names):  # the end of the stream is consistent
        a, b = now.scope_values(scope), lagged.scope_values(scope)
        assert a["unvalued"] == b["unvalued"], scope
        assert a["unvalued"] or math.isclose(a["pnl"], b["pnl"], abs_tol=tol), scope


DECIMALS = st.integers(1, 10**6).map(lambda n: Decimal(n) / Decimal(10**8))  # <= 0.01, 8 dp


@settings(max_examples=300, deadline=None)
@given(st.lists(DECIMALS, min_size=1, max_size=25), st.data())
def test_decimal_fills_add_up_exactly(parts: list[Decimal], data: Any) -> None:
    total = sum(parts, Decimal(0))
    qty = float(total)  # what a producer writes for the order's and the parent's qty
    k = {"account": "A", "strategy": "S", "symbol": "BTC-USD"}
    engine = Engine(
        parse(
            rules_toml(
                'name="over"\nmetric="parent_overfill_ratio"\nscope="strategy"\nmax=1.0\naction="halt"',
                'name="open"\nmetric="open_orders"\nscope="strategy"\nmax=1\naction="alert"',
            )
        ),
        event_time=True,
    )
    events: list[wire.Event] = [
        wire.ParentOrder(ts=T0, parent_id="P", side="buy", qty=qty, **k),
        wire.NewOrder(
            ts=T0 + 1, order_id="B", side="buy", qty=qty, price=40_000.0, parent_id="P", **k
        ),
    ]
    order = data.draw(st.permutations(parts))
    events += [
        wire.Fill(
            ts=T0 + 2 + i,
            order_id="B",
            exec_id=f"b{i}",
            side="buy",
            qty=float(p),
            price=40_000.0,
            **k,
        )
        for i, p in enumerate(order)
    ]
    result = engine.apply(events)
    assert result.transitions == []  # ratio exactly 1.0, the order closed: no alert, no halt
    assert engine.position("strategy:S", "BTC-USD") == qty  # the exact decimal sum
    assert engine.scope_values("strategy:S")["open_orders"] == 0.0
    assert engine.peaks()[0].high == 1.0
    # sell it back in other chunks: flat is exactly zero, and gross is exactly zero
    sells = data.draw(st.permutations(parts))
    engine.apply(
        [
            wire.Fill(
                ts=T0 + 100 + i,
                order_id="S",
                exec_id=f"s{i}",
                side="sell",
                qty=float(p),
                price=40_000.0,
                **k,
            )
            for i, p in enumerate(sells)
        ]
    )
    assert engine.position("strategy:S", "BTC-USD") == 0.0
    assert engine.scope_values("strategy:S")["gross_notional"] == 0.0
    # one smallest unit more on the parent is a real overfill, and halts
    (tr,) = engine.apply(
        [
            wire.Fill(
                ts=T0 + 200,
                order_id="B",
                exec_id="over",
                side="buy",
                qty=1e-8,
                price=40_000.0,
                parent_id="P",
                **k,
            )
        ]
    ).transitions
    assert (tr.rule, tr.to) == ("over", "HALTED") and tr.value > 1.0
