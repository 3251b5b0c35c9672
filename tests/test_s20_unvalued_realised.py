"""Realised money in a currency with no exchange rate yet is unknown, whatever the lot holds.

The unknown-money rule (docs/limits.md, "Currencies and contract sizes") counted a lot in
its scopes' ``unvalued`` only while it held a position or working orders: once the lot
was flat, the P&L it had realised (and the fees it had paid) in a currency with no rate
was dropped from the count, and the scope's P&L was judged as if that money were a known
0. One instance halted a firm at -600 USD whose P&L was -600 USD + 100 EUR. A flat lot
with realised P&L or fees in a currency with no rate now stays unvalued until the rate
arrives, and its money is then booked at that first rate, like everything else booked
unvalued.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from riskguard.vocabulary import Transition, money
from tests.builders import MS, T0, fill, fx, instrument, mark, rules_toml

FIRM_LOSS = 'name="firm-loss"\nmetric="pnl"\nscope="firm"\nmin=-500\naction="halt"'
ACCOUNT_LOSS = 'name="acct-loss"\nmetric="pnl"\nscope="account"\nmin=-500\naction="halt"'


def engine(*rules: str) -> Engine:
    text = rules_toml(*rules).replace("version = 1", "version = 1\nrevalue_ms = 0")
    return Engine(parse(text), event_time=True)


def decided(out: list[Transition]) -> list[tuple[str, str, float | None]]:
    """(scope, to, value) of each transition, the fx-rate-missing alert left out."""
    return [(t.scope, t.to, t.value) for t in out if t.rule != "fx-rate-missing"]


def test_a_flat_lot_with_realised_pnl_in_a_currency_with_no_rate_is_unknown() -> None:
    e = engine(FIRM_LOSS, ACCOUNT_LOSS)
    a = {"account": "A", "strategy": "SA"}
    b = {"account": "B", "strategy": "SB"}
    result = e.apply(
        [
            instrument("EX", currency="EUR"),
            fill("a1", qty=10, price=100.0, symbol="EX", **a),  # A buys 10 EX at 100 EUR
            fill("b1", t=MS, qty=10, price=110.0, side="sell", symbol="EX", **b),
            # the firm's EX lot: +10 at 100, then -10 at 110: flat, realised
            # 10 x (110 - 100) = +100 EUR, and EUR has no rate
            fill("a2", t=2 * MS, qty=10, price=100.0, symbol="US", **a),  # in USD
            mark(40.0, t=3 * MS, symbol="US"),  # A's US: 10 x (40 - 100) = -600 USD
        ]
    )
    assert result.bad == []
    # firm: -600 USD + 100 EUR, unknown in USD: not judged (it was judged -600 and HALTED)
    # A: -600 USD + 10 x (110 - 100) EUR unrealised (EX valued at its last trade, 110)
    # B: 10 x (110 - 110) = 0 EUR: unknown too, its lot is in EUR
    assert decided(result.transitions) == []
    for scope in ("firm", "account:A", "account:B"):
        v = e.scope_values(scope)
        assert v["unvalued"] == 1.0, scope  # the firm's flat EX lot still counts
        assert math.isnan(v["pnl"]) and math.isnan(v["realised_pnl"]), scope
    assert e.positions()[("firm", "symbol:EX")] == (0.0, 0.0, 100.0)  # in EUR, flat
    out = e.apply([fx("EUR", 1.10, t=4 * MS)]).transitions
    # the rate books everything at once: firm -600 + 100 x 1.10 = -490 (not below -500);
    # A -600 + 100 x 1.10 = -490; B 0
    assert decided(out) == []
    firm = e.scope_values("firm")
    assert (firm["unvalued"], firm["realised_pnl"], firm["pnl"]) == (0.0, 110.0, -490.0)
    assert e.scope_values("account:A")["pnl"] == -490.0
    assert e.scope_values("account:B")["pnl"] == 0.0
    out = e.apply([fx("EUR", 0.50, t=5 * MS)]).transitions
    # realised P&L stays at the rate it was booked at (the first rate, 1.10): the firm
    # stays at -490; A's open EX position moves: -600 + 10 x (110 - 100) x 0.50 = -550
    assert decided(out) == [("account:A", "HALTED", -550.0)]
    assert e.scope_values("firm")["pnl"] == -490.0
    assert e.scope_values("account:B")["pnl"] == 0.0  # 0 EUR at any rate


def test_the_first_rate_judges_a_scope_whose_lot_in_that_currency_is_flat() -> None:
    e = engine(FIRM_LOSS)
    out = e.apply(
        [
            instrument("EX", currency="EUR"),
            fill("b", qty=10, price=110.0, symbol="EX"),
            fill("s", t=MS, qty=10, price=100.0, side="sell", symbol="EX"),
            # flat EX, realised 10 x (100 - 110) = -100 EUR: unknown
            fill("u", t=2 * MS, qty=10, price=100.0, symbol="US"),
            mark(55.0, t=3 * MS, symbol="US"),  # 10 x (55 - 100) = -450 USD
        ]
    ).transitions
    assert decided(out) == []  # -450 USD - 100 EUR: unknown, not judged
    out = e.apply([fx("EUR", 1.10, t=4 * MS)]).transitions
    # the first rate books the realised loss, -100 x 1.10 = -110, and judges it at once:
    # -450 - 110 = -560, below -500 (no position left in EX, no later event needed)
    assert decided(out) == [("firm", "HALTED", -560.0)]


def test_fees_of_a_flat_lot_in_a_currency_with_no_rate_are_unknown_too() -> None:
    e = engine(FIRM_LOSS)
    out = e.apply(
        [
            instrument("EX", currency="EUR"),
            fill("b", qty=10, price=100.0, fee=3.0, symbol="EX"),
            fill("s", t=MS, qty=10, price=100.0, fee=3.0, side="sell", symbol="EX"),
            # flat, realised 10 x (100 - 100) = 0, but fees 3 + 3 = 6 EUR: unknown
        ]
    )
    assert out.bad == []
    v = e.scope_values("firm")
    assert v["unvalued"] == 1.0 and math.isnan(v["pnl"])
    e.apply([fx("EUR", 1.5, t=2 * MS)])
    v = e.scope_values("firm")
    assert (v["unvalued"], v["fees"], v["pnl"]) == (0.0, 9.0, -9.0)  # 6 EUR x 1.5


def test_a_flat_round_trip_with_no_money_leaves_nothing_unknown() -> None:
    e = engine(FIRM_LOSS)
    e.apply(
        [
            instrument("EX", currency="EUR"),
            fill("b", qty=10, price=100.0, symbol="EX"),
            fill("s", t=MS, qty=10, price=100.0, side="sell", symbol="EX"),
        ]
    )
    v = e.scope_values("firm")  # 0 EUR is 0 at any rate: known
    assert (v["unvalued"], v["pnl"]) == (0.0, 0.0)


# the general form ---------------------------------------------------------------------
ACCOUNTS = ("A", "B")
SYMBOLS = ("EX", "JX", "US")  # EX in EUR, JX in JPY, US in the base currency
PRICES = (90.0, 100.0, 110.0, 125.5)


@st.composite
def flows(draw: st.DrawFn) -> list[wire.Event]:
    """Instruments first, then fills, marks and (sometimes) rates, in time order."""
    events: list[wire.Event] = [
        wire.Instrument(ts=T0, symbol="EX", multiplier=1.0, currency="EUR"),
        wire.Instrument(ts=T0, symbol="JX", multiplier=2.0, currency="JPY"),
    ]
    n = draw(st.integers(1, 25))
    for i in range(n):
        ts = T0 + (i + 1) * MS
        kind = draw(st.sampled_from(["fill", "fill", "fill", "mark", "fx"]))
        symbol = draw(st.sampled_from(SYMBOLS))
        if kind == "mark":
            events.append(wire.Mark(ts=ts, symbol=symbol, price=draw(st.sampled_from(PRICES))))
        elif kind == "fx":
            code = draw(st.sampled_from(["EUR", "JPY"]))
            rate = draw(st.sampled_from([0.5, 1.1, 0.0067]))
            events.append(wire.Fx(ts=ts, currency=code, rate=rate))
        else:
            account = draw(st.sampled_from(ACCOUNTS))
            events.append(
                wire.Fill(
                    ts=ts,
                    order_id=f"o{i}",
                    exec_id=f"x{i}",
                    account=account,
                    strategy=f"S{account}",
                    symbol=symbol,
                    side=draw(st.sampled_from(["buy", "sell"])),
                    qty=draw(st.sampled_from([1.0, 5.0, 10.0])),
                    price=draw(st.sampled_from(PRICES)),
                    fee=draw(st.sampled_from([0.0, 0.0, 1.25])),
                )
            )
    return events


def money_without_rate(ref: ReferenceModel, scope: str) -> bool:
    """Whether ``scope``'s P&L includes money (a position, realised P&L or fees) in a
    currency with no rate yet, whatever its lots' quantities (the reference model's lots)."""
    for (owner, symbol), lot in ref.lots.items():
        if scope not in ((owner, symbol) if owner == "firm" else (owner,)):
            continue
        code = ref.currency.get(symbol, ref.base)
        if code in ref.rates:
            continue
        if lot.qty != 0.0 or money(lot.real) != 0.0 or money(lot.fees) != 0.0:
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(flows())
def test_a_scope_with_money_in_a_currency_with_no_rate_is_unknown(
    events: list[wire.Event],
) -> None:
    """A scope whose P&L includes money in a currency with no rate (held, realised or
    paid in fees, flat or not) is unvalued, its P&L unknown, and no P&L rule is judged on
    it; every other scope's P&L is known, and judged at once: a known P&L below the
    limit has halted its scope by the end of the event that made it known (a rate's
    first arrival included)."""
    e = engine(*(rule.replace("-500", "-50") for rule in (FIRM_LOSS, ACCOUNT_LOSS)))
    ref = ReferenceModel(e.limits)
    halted: set[str] = set()
    for k, ev in enumerate(events):
        result = e.apply([ev])
        assert result.bad == []
        ref.apply_one(ev)
        judged = {t.scope for t in result.transitions if t.rule != "fx-rate-missing"}
        halted |= {t.scope for t in result.transitions if t.to == "HALTED"}
        for scope in ("firm", *(f"account:{a}" for a in ACCOUNTS)):
            v = e.scope_values(scope)
            unknown = money_without_rate(ref, scope)
            assert (v["unvalued"] > 0) == unknown, (k, scope)
            assert math.isnan(v["pnl"]) == unknown, (k, scope)
            if unknown:
                assert scope not in judged, (k, scope)
            elif v["pnl"] < -50.0:
                assert scope in halted, (k, scope, v["pnl"])
