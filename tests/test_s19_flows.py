"""Trading flows a FIX/OMS feed really produces, with every number derived by hand.

Each test writes its events inline and states, in comments, how the expected value is
derived (average cost, docs/limits.md "P&L, fees and drawdown" and "Currencies and
contract sizes"); none is computed with the code under test. ``revalue_ms = 0``: every
price move is applied at once, so the values after each event are the documented ones.

The fee tests pin one rule: a bust or correction takes the fee of the execution it
amends back **at the rate it was booked at** (fees "stay at the rate they were booked
at"), so busting every trade leaves fees of exactly 0 whatever the rate did meanwhile.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from tests.builders import MS, T0, assert_judged_values_were_had, fill, mark, rules_toml

LIMITS = parse(
    "revalue_ms = 0\n"
    + rules_toml(
        'name="pnl"\nmetric="pnl"\nscope="strategy"\nmin=-1e12\naction="alert"',
        'name="dd"\nmetric="drawdown"\nscope="strategy"\nmax=1e12\naction="alert"',
        'name="gross"\nmetric="gross_notional"\nscope="strategy"\nmax=1e12\naction="alert"',
    )
)
SCOPES = ("firm", "account:A", "strategy:S", "symbol:X")


def eur() -> list[wire.Event]:
    """Symbol X priced in EUR (base USD), contract size 1."""
    return [wire.Instrument(ts=T0, symbol="X", currency="EUR", tick_size=0.01)]


def fx(rate: float, t: int) -> wire.Fx:
    return wire.Fx(ts=T0 + t, currency="EUR", rate=rate)


def bust(ref: str, t: int, **kw: Any) -> wire.Fill:
    return wire.Fill(
        ts=T0 + t,
        order_id=kw.pop("order_id", "O"),
        exec_id=f"bust-{ref}-{t}",
        account="A",
        strategy="S",
        symbol="X",
        exec_type="bust",
        ref_exec_id=ref,
        **kw,
    )


def correct(ref: str, t: int, qty: float, price: float, fee: float | None) -> wire.Fill:
    return wire.Fill(
        ts=T0 + t,
        order_id="O",
        exec_id=f"corr-{ref}-{t}",
        account="A",
        strategy="S",
        symbol="X",
        side="buy",
        qty=qty,
        price=price,
        exec_type="correct",
        ref_exec_id=ref,
        fee=fee,
    )


def run(events: list[wire.Event]) -> tuple[Engine, ReferenceModel]:
    """The kernel, one event per batch, and the reference model on the same events."""
    engine = Engine(LIMITS, event_time=True)
    ref = ReferenceModel(LIMITS)
    for event in events:
        engine.apply([event])
        ref.apply_one(event)
    return engine, ref


def near(expected: float) -> Any:
    return pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_bust_after_rate_move_takes_the_fee_back_as_booked() -> None:
    # EUR at 1.1: buy 10 @100 (E1, no fee), sell 5 @110 with a fee of 2 EUR (E2).
    #   E2 realises 5 x (110 - 100) = 50 EUR = 55 USD; its fee 2 EUR = 2.2 USD.
    # EUR moves to 1.2, then E2 is busted: its fee goes back as booked, 2.2 USD
    # (before the fix it went back at 1.2 = 2.4 USD: fees -0.2 with no fee left at all).
    events = [
        *eur(),
        fx(1.1, 0),
        fill("O1", 1 * MS, qty=10, price=100.0, exec_id="E1"),
        fill("O2", 2 * MS, qty=5, price=110.0, side="sell", exec_id="E2", fee=2.0),
        fx(1.2, 3 * MS),
    ]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["fees"] == near(2.2)
    engine, ref = run([*events, bust("E2", 4 * MS, order_id="O2")])
    for scope in SCOPES:
        values = engine.scope_values(scope)
        assert values["fees"] == near(0.0), scope  # no execution with a fee is left
        assert ref.book(scope).fees == near(0.0), scope
        # the book is E1 alone: 10 long at cost 1,000 EUR valued at 100 (the price before
        # E2, docs/events.md "Corrections and busts"): gross 10 x 100 x 1.2 = 1,200 USD
        assert values["gross_notional"] == near(1200.0), scope


def test_fees_booked_unvalued_go_back_at_the_first_rate() -> None:
    # No EUR rate yet: E1 buy 10 @100 fee 4 EUR, E2 buy 10 @100 fee 2 EUR (unvalued).
    # EUR 1.1 arrives: both fees are converted at it, 6 x 1.1 = 6.6 USD. EUR 1.3.
    # E1 corrected with fee 3: 4 EUR goes back at 1.1 (4.4), 3 EUR is booked at 1.3
    #   (3.9): fees 6.6 - 4.4 + 3.9 = 6.1. EUR 1.2.
    # E1 busted: 3 EUR back at 1.3 (3.9): fees 2.2 (= E2's 2 x 1.1).
    # E2 busted: 2 EUR back at 1.1 (2.2): fees 0.
    events = [
        *eur(),
        fill("O1", 1 * MS, qty=10, price=100.0, exec_id="E1", fee=4.0),
        fill("O2", 2 * MS, qty=10, price=100.0, exec_id="E2", fee=2.0),
        fx(1.1, 3 * MS),
        fx(1.3, 4 * MS),
    ]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["fees"] == near(6.6)
    events.append(correct("E1", 5 * MS, qty=10, price=100.0, fee=3.0))
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["fees"] == near(6.1)
    events += [fx(1.2, 6 * MS), bust("E1", 7 * MS)]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["fees"] == near(2.2)
    engine, ref = run([*events, bust("E2", 8 * MS)])
    for scope in SCOPES:
        values = engine.scope_values(scope)
        assert values["fees"] == near(0.0), scope
        assert values["pnl"] == near(0.0), scope  # flat, nothing traded: no P&L at all
        assert ref.book(scope).fees == near(0.0), scope


def test_futures_flip_with_fees_then_bust_of_the_pre_flip_trade() -> None:
    # Contract size 50, USD. E1 buy 4 @4,000 fee 8: cost 800,000; pnl -8.
    # mark 4,010: unrealised 4 x 10 x 50 = 2,000; pnl 1,992.
    # E2 sell 6 @4,020 fee 12 (flip): closes 4, realises 4 x 20 x 50 = 4,000; opens -2
    #   @4,020 (cost -402,000) valued at the mark 4,010: -401,000, unrealised +1,000;
    #   pnl 4,000 + 1,000 - 20 = 4,980.
    # mark 4,015: unrealised 500, pnl 4,480. Bust E1: a sell of 4 @4,000 adds to the
    #   short: -6, cost -1,202,000, valued -6 x 4,015 x 50 = -1,204,500; fees 12;
    #   pnl 4,000 - 2,500 - 12 = 1,488 = E2 alone: 6 x (4,020 - 4,015) x 50 - 12.
    # mark 4,005: 6 x 15 x 50 - 12 = 4,488; drawdown from the high 4,980: 492.
    events: list[wire.Event] = [
        wire.Instrument(ts=T0, symbol="X", multiplier=50.0, tick_size=0.25),
        fill("O1", 2 * MS, qty=4, price=4000.0, exec_id="E1", fee=8.0),
        mark(4010.0, 3 * MS),
        fill("O2", 5 * MS, qty=6, price=4020.0, side="sell", exec_id="E2", fee=12.0),
    ]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["pnl"] == near(4980.0)
    assert engine.positions()[("strategy:S", "symbol:X")] == near((-2, -402000, 4000))
    events += [mark(4015.0, 6 * MS), bust("E1", 7 * MS, order_id="O1")]
    engine, _ = run(events)
    values = engine.scope_values("strategy:S")
    assert (values["pnl"], values["fees"]) == (near(1488.0), near(12.0))
    assert values["gross_notional"] == near(1204500.0)
    engine, _ = run([*events, mark(4005.0, 8 * MS)])
    values = engine.scope_values("strategy:S")
    assert (values["pnl"], values["drawdown"]) == (near(4488.0), near(492.0))


def test_fee_of_a_fill_booked_in_a_moved_currency() -> None:
    # EUR: E1 buy 10 @100 fee 1 and E2 sell 5 @110 fee 1, both unvalued. EUR 1.1:
    #   realised 5 x 10 = 50 EUR = 55 USD; fees 2.2; 5 left at cost 500 valued at 110
    #   (the last trade): unrealised 50 EUR = 55; pnl 55 + 55 - 2.2 = 107.8.
    # EUR 1.2: unrealised 60, pnl 112.8 (realised and fees stay at 1.1).
    # mark 120: unrealised 5 x 20 x 1.2 = 120, pnl 172.8.
    # E3 sell 10 @90 fee 2 at 1.2: closes 5, realises 5 x (90 - 100) x 1.2 = -60 (realised
    #   -5); opens -5 @90 (cost -450 EUR) valued at the mark 120: -720 USD, unrealised
    #   -180; fees 4.6; pnl -5 - 180 - 4.6 = -189.6; drawdown 172.8 + 189.6 = 362.4.
    events = [
        *eur(),
        fill("O1", 2 * MS, qty=10, price=100.0, exec_id="E1", fee=1.0),
        fill("O2", 4 * MS, qty=5, price=110.0, side="sell", exec_id="E2", fee=1.0),
        fx(1.1, 5 * MS),
    ]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["pnl"] == near(107.8)
    events += [fx(1.2, 6 * MS), mark(120.0, 7 * MS)]
    engine, _ = run(events)
    assert engine.scope_values("strategy:S")["pnl"] == near(172.8)
    engine, _ = run([*events, fill("O3", 9 * MS, qty=10, price=90.0, side="sell", fee=2.0)])
    values = engine.scope_values("strategy:S")
    assert values["realised_pnl"] == near(-5.0)
    assert (values["fees"], values["pnl"]) == (near(4.6), near(-189.6))
    assert values["drawdown"] == near(362.4)


@st.composite
def fee_streams(draw: st.DrawFn) -> tuple[list[wire.Event], float]:
    """Trades with fees in EUR, rates arriving late and moving, busts and corrections;
    and the fees they leave, in USD: each execution's fee at the rate it was booked at
    (booked before any rate: the first rate)."""
    events: list[wire.Event] = eur()
    rate: float | None = None
    first: float | None = None
    live: dict[str, tuple[float, float | None]] = {}  # exec id -> (fee, rate booked at)
    t = 0
    for i in range(draw(st.integers(1, 25))):
        t += MS
        kind = draw(st.sampled_from(["trade", "trade", "fx", "bust", "correct"]))
        if kind == "fx":
            rate = draw(st.sampled_from([0.9, 1.1, 1.2, 1.35]))
            first = rate if first is None else first
            events.append(fx(rate, t))
        elif kind == "trade" or not live:
            fee = draw(st.sampled_from([0.0, 1.0, 2.5, -0.5]))
            side = draw(st.sampled_from(["buy", "sell"]))
            events.append(fill(f"O{i}", t, qty=5, price=100.0, side=side, exec_id=f"E{i}", fee=fee))
            live[f"E{i}"] = (fee, rate)
        else:
            ref = draw(st.sampled_from(sorted(live)))
            if kind == "bust":
                events.append(bust(ref, t))
                del live[ref]
            else:
                fee = draw(st.sampled_from([0.0, 3.0]))
                events.append(correct(ref, t, qty=5, price=101.0, fee=fee))
                live[ref] = (fee, rate)
    if first is None:
        return events, math.nan
    return events, sum(fee * (first if at is None else at) for fee, at in live.values())


@settings(max_examples=150, deadline=None)
@given(fee_streams())
def test_fees_are_each_executions_fee_at_the_rate_it_was_booked_at(
    case: tuple[list[wire.Event], float],
) -> None:
    events, want = case
    engine, ref = run(events)
    for scope in SCOPES:
        got = engine.scope_values(scope)["fees"]
        if math.isnan(want):  # no rate ever: unvalued, never a partial sum
            assert math.isnan(got) or got == 0.0, scope
            continue
        assert got == near(round(want, 6)), (scope, got, want)
        assert ref.book(scope).fees == near(want), scope


def limits_at(revalue_ms: int, *rules: str) -> Any:
    return parse(f"revalue_ms = {revalue_ms}\n" + rules_toml(*rules))


@pytest.mark.parametrize(("revalue_ms", "gap_ms"), [(0, 1), (100, 150)])
def test_a_sale_that_flattens_the_book_halts_nothing(revalue_ms: int, gap_ms: int) -> None:
    # Buy 100 @10 (gross 1,000, pnl 0), later sell all 100 @11 with a fee of 5: flat,
    # realised 100, pnl 95, gross 0. Gross went 1,000 -> 0 and pnl 0 -> 95: neither the
    # gross limit 1,050 nor the drawdown limit 4 is ever breached. (Before the fix the
    # account was halted on gross 1,100 and the strategy on drawdown 5: the sale's price
    # first revalued the 100 still held, 100 x 11 = 1,100 and pnl 100, judged and taken
    # as the session high before the sale and its fee were booked.) The second run has the
    # default epochs with the sale in a later epoch than the buy.
    limits = limits_at(
        revalue_ms,
        'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=1050\naction="halt"',
        'name="dd"\nmetric="drawdown"\nscope="strategy"\nmax=4\naction="halt"',
    )
    engine = Engine(limits, event_time=True)
    result = engine.apply(
        [
            fill("O1", 1 * MS, qty=100, price=10.0, exec_id="E1"),
            fill("O2", (1 + gap_ms) * MS, qty=100, price=11.0, side="sell", exec_id="E2", fee=5.0),
        ]
    )
    result.transitions += engine.settle()
    assert [t for t in result.transitions if t.kind != "resolve"] == []
    values = engine.scope_values("strategy:S")
    assert (values["pnl"], values["drawdown"], values["gross_notional"]) == (95, 0, 0)
    peaks = {p.rule.name: p for p in engine.peaks()}
    assert peaks["gross"].high == near(1000.0)  # the largest gross the book had
    assert peaks["dd"].high == near(0.0)


def test_partial_sale_at_a_higher_price_then_a_buy() -> None:
    # revalue_ms = 0. Buy 100 @10. Sell 50 @11 fee 5: realised 50, 50 left valued at 11
    #   (550, cost 500): pnl 50 + 50 - 5 = 95, the session high (not 100: the 100 shares
    #   were never worth 1,100 with the fee unpaid). Buy 10 @12 fee 1: 60 valued at 12
    #   (720, cost 620): pnl 50 + 100 - 6 = 144, the new high; drawdown 0 throughout.
    limits = limits_at(
        0,
        'name="pnl"\nmetric="pnl"\nscope="strategy"\nmin=-1e9\naction="alert"',
        'name="dd"\nmetric="drawdown"\nscope="strategy"\nmax=1e9\naction="alert"',
    )
    engine = Engine(limits, event_time=True)
    engine.apply(
        [
            fill("O1", 1 * MS, qty=100, price=10.0, exec_id="E1"),
            fill("O2", 2 * MS, qty=50, price=11.0, side="sell", exec_id="E2", fee=5.0),
        ]
    )
    assert engine.scope_values("strategy:S")["pnl"] == near(95.0)
    engine.apply([fill("O3", 3 * MS, qty=10, price=12.0, exec_id="E3", fee=1.0)])
    values = engine.scope_values("strategy:S")
    assert (values["pnl"], values["drawdown"]) == (near(144.0), near(0.0))
    peaks = {p.rule.name: p for p in engine.peaks()}
    assert (peaks["pnl"].high, peaks["dd"].high) == (near(144.0), near(0.0))


BOOK_RULES = [
    f'name="{m}-{s}"\nmetric="{m}"\nscope="{s}"\n{b}\naction="alert"'
    for m, b in (
        ("gross_notional", "max=1e12"),
        ("net_notional", "max=1e12\nmin=-1e12"),
        ("pnl", "max=1e12\nmin=-1e12"),
        ("drawdown", "max=1e12"),
    )
    for s in ("firm", "account", "strategy", "symbol")
]


@st.composite
def book_streams(draw: st.DrawFn) -> list[wire.Event]:
    """Trades (with fees) by two accounts and strategies in two symbols, and marks."""
    events: list[wire.Event] = []
    for i in range(draw(st.integers(1, 30))):
        t = (i + 1) * MS
        symbol = draw(st.sampled_from(["X", "Y"]))
        if draw(st.integers(0, 4)) == 0:
            events.append(mark(draw(st.sampled_from([9.0, 10.0, 11.5])), t, symbol=symbol))
            continue
        account, strategy = draw(st.sampled_from([("A", "S"), ("B", "S"), ("B", "T")]))
        events.append(
            fill(
                f"O{i}",
                t,
                qty=draw(st.sampled_from([5.0, 10.0, 25.0])),
                price=draw(st.sampled_from([8.0, 10.0, 11.0, 12.5])),
                side=draw(st.sampled_from(["buy", "sell"])),
                fee=draw(st.sampled_from([0.0, 1.0, -0.5])),
                exec_id=f"E{i}",
                account=account,
                strategy=strategy,
                symbol=symbol,
            )
        )
    return events


@settings(max_examples=150, deadline=None)
@given(book_streams())
def test_every_value_judged_is_one_the_book_had_between_events(events: list[wire.Event]) -> None:
    """revalue_ms = 0: the highs and lows of every exposure and P&L rule are those of the
    values the scopes had after some event, never of a moment inside one (a fill's price
    applied to the book before the fill itself), and drawdown is the high of those pnl
    values (from 0) minus pnl."""
    engine = Engine(limits_at(0, *BOOK_RULES), event_time=True)
    scopes = ["firm", "account:A", "account:B", "strategy:S", "strategy:T", "symbol:X", "symbol:Y"]
    assert_judged_values_were_had(
        engine, events, scopes, ("gross_notional", "net_notional", "pnl", "drawdown")
    )
