"""Exposure as risk officers count it (issue 13), on hand-built streams.

Every expected number is derived by hand in the test from the events it feeds: contract
sizes and FX rates, opening and broker positions, working orders, graduated warnings,
re-arming, venue and side, the restricted list.
"""

from __future__ import annotations

import math

import pytest

from riskguard.engine import Engine
from riskguard.evidence import evidence
from riskguard.limits import parse
from riskguard.notify import sinks
from riskguard.settings import NotifierSettings
from riskguard.vocabulary import Transition
from tests.builders import (
    MS,
    bust,
    cancel,
    fill,
    fx,
    instrument,
    mark,
    new,
    position,
    rules_toml,
)


def engine(*rules: str, top: str = "", tail: str = "") -> Engine:
    text = rules_toml(*rules).replace("version = 1", f"version = 1\nrevalue_ms = 0\n{top}")
    return Engine(parse(text + tail), event_time=True)


def run(e: Engine, events: list) -> list[Transition]:  # type: ignore[type-arg]
    result = e.apply(events)
    assert not result.bad, result.bad
    return result.transitions


def decided(out: list[Transition]) -> list[tuple[str, str, str, float | None]]:
    """(scope, kind, to, value) of each transition, system alerts left out."""
    return [(t.scope, t.kind, t.to, t.value) for t in out if t.rule != "fx-rate-missing"]


# contract size and currency --------------------------------------------------------------
def test_futures_position_in_eur_is_valued_in_usd() -> None:
    e = engine(
        'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=300000\naction="halt"',
        top='base_currency = "USD"',
    )
    fesx = {"symbol": "FESX"}
    run(e, [instrument("FESX", multiplier=10, currency="EUR"), fx("EUR", 1.10)])
    run(e, [fill("o1", qty=5, price=5000.0, fee=2.5, **fesx)])
    v = e.scope_values("account:A")
    # 5 contracts x 5,000 x 10 (contract size) x 1.10 USD per EUR
    assert v["gross_notional"] == 275_000.0
    assert v["fees"] == 2.75  # 2.5 EUR at 1.10
    assert v["pnl"] == -2.75
    run(e, [mark(5200.0, t=MS, symbol="FESX")])
    v = e.scope_values("account:A")
    assert v["gross_notional"] == 286_000.0  # 5 x 5,200 x 10 x 1.10
    assert v["pnl"] == 11_000.0 - 2.75  # (5,200 - 5,000) x 5 x 10 x 1.10, less the fee
    out = run(e, [fx("EUR", 1.20, t=2 * MS)])
    # the rate move revalues the open position: 5 x 5,200 x 10 x 1.20 = 312,000 > 300,000
    assert decided(out) == [("account:A", "auto", "HALTED", 312_000.0)]
    v = e.scope_values("account:A")
    assert v["pnl"] == 12_000.0 - 2.75  # the fee stays at the rate it was paid at
    assert e.book("account:A", "FESX")["gross"] == 260_000.0  # EUR x contract size


def test_a_currency_without_a_rate_is_unknown_never_one() -> None:
    e = engine('name="gross"\nmetric="gross_notional"\nscope="firm"\nmax=1000\naction="halt"')
    out = run(
        e, [instrument("NK", currency="JPY"), fill("o1", qty=100, price=15_000.0, symbol="NK")]
    )
    alerts = [t for t in out if t.rule == "fx-rate-missing"]
    assert len(alerts) == 1 and "no JPY exchange rate" in (alerts[0].reason or "")
    assert "NK" in (alerts[0].reason or "")
    v = e.scope_values("firm")
    assert v["unvalued"] == 1.0 and math.isnan(v["gross_notional"]) and math.isnan(v["pnl"])
    assert decided(out) == []  # unknown is not evaluated: 1,500,000 JPY is not 1,500,000 USD
    assert run(e, [fill("o2", t=MS, qty=1, price=15_000.0, symbol="NK")]) == []  # alerted once
    out = run(e, [fx("JPY", 0.0067, t=2 * MS)])
    # 101 x 15,000 x 0.0067 = 10,150.5 USD, now known: over 1,000
    assert decided(out) == [("firm", "auto", "HALTED", 10_150.5)]
    assert e.scope_values("firm")["unvalued"] == 0.0


def test_reference_data_is_fixed_once_the_symbol_is_held() -> None:
    e = engine('name="q"\nmetric="order_qty"\nscope="firm"\nmax=1e9\naction="alert"')
    run(e, [instrument("X", multiplier=50), fill("o1", qty=2, price=10.0)])
    result = e.apply([instrument("X", multiplier=50, t=MS)])  # the same values: fine
    assert result.bad == []
    result = e.apply([instrument("X", multiplier=100, t=2 * MS)])
    assert [b.reason for b in result.bad] == ["refdata_changed"]
    assert e.book("account:A", "X")["gross"] == 1_000.0  # still 2 x 10 x 50


# opening and broker positions ------------------------------------------------------------
def test_opening_position_is_booked_at_its_average_cost() -> None:
    e = engine('name="pnl"\nmetric="pnl"\nscope="account"\nmin=-1000\naction="halt"')
    run(e, [position(100, price=50.0)])
    assert e.position("account:A", "X") == 100.0
    assert e.position("strategy:S", "X") == 100.0
    assert e.scope_values("account:A")["pnl"] == 0.0
    out = run(e, [mark(39.0, t=MS)])  # (39 - 50) x 100 = -1,100 < -1,000
    assert decided(out) == [("account:A", "auto", "HALTED", -1_100.0)]
    assert e.apply([position(100, price=50.0, t=2 * MS)]).duplicates == 1  # re-sent
    run(e, [position(120, price=50.0, t=3 * MS)])  # replaces the opening position
    assert e.position("account:A", "X") == 120.0
    assert e.scope_values("account:A")["pnl"] == (39.0 - 50.0) * 120


def test_opening_position_without_price_needs_a_reference() -> None:
    e = engine('name="q"\nmetric="order_qty"\nscope="firm"\nmax=1e9\naction="alert"')
    result = e.apply([position(10, strategy=None)])
    assert [b.reason for b in result.bad] == ["no_price"]
    run(e, [mark(20.0, t=MS), position(10, t=2 * MS, strategy=None)])
    assert e.position("account:A", "X") == 10.0
    assert e.position("strategy:S", "X") == 0.0  # no strategy named: the account's only
    assert e.scope_values("account:A")["gross_notional"] == 200.0


def test_position_break_appears_and_clears() -> None:
    e = engine('name="break"\nmetric="position_break_qty"\nscope="account"\nmax=0\naction="alert"')
    broker = {"kind": "broker", "strategy": None}  # the broker's view of the account
    assert run(e, [fill("o1", qty=100), position(100, t=MS, **broker)]) == []
    out = run(e, [position(120, t=2 * MS, **broker)])  # the broker sees 20 more
    assert [(t.kind, t.value, t.symbol) for t in out] == [("alert", 20.0, "X")]
    assert run(e, [fill("o2", t=3 * MS, qty=20)]) == []  # judged when the broker reports
    out2 = run(e, [position(120, t=4 * MS, **broker)])  # its next report: 120 = 120
    assert [(t.kind, t.value, t.ends) for t in out2] == [("resolve", 0.0, out[0].id)]


# working orders ------------------------------------------------------------------------
def test_working_orders_push_potential_gross_over_its_limit_while_gross_is_under() -> None:
    e = engine(
        'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=150000\naction="halt"',
        'name="potential"\nmetric="potential_gross_notional"\nscope="account"\nmax=150000\n'
        'action="halt"',
    )
    run(e, [fill("o1", qty=1000, price=100.0), mark(100.0)])
    v = e.scope_values("account:A")
    assert (v["gross_notional"], v["potential_gross_notional"]) == (100_000.0, 100_000.0)
    out = run(e, [new("o2", t=MS, qty=600, price=100.0)])
    # worst side: |1,000 + 600 working buys| x 100 = 160,000 > 150,000; gross is 100,000
    assert [(t.rule, t.to, t.value) for t in out] == [("potential", "HALTED", 160_000.0)]
    v = e.scope_values("account:A")
    assert (v["gross_notional"], v["open_order_notional"]) == (100_000.0, 60_000.0)
    run(e, [new("o3", t=2 * MS, qty=2500, price=99.0, side="sell")])
    # sells: |1,000 - 2,500| = 1,500 < 1,600: the buy side is still the worst
    assert e.scope_values("account:A")["potential_gross_notional"] == 160_000.0
    assert e.scope_values("account:A")["open_order_notional"] == 60_000.0 + 2500 * 99.0


def test_working_orders_in_a_symbol_with_no_price_count_at_their_limits() -> None:
    """A symbol never marked nor traded: the growth of the worst side is valued at the
    working limits (the first fill sets the price), then at the mark once one arrives."""
    e = engine(
        'name="potential"\nmetric="potential_gross_notional"\nscope="firm"\nmax=40000000\n'
        'action="halt"',
        tail='\n[[rule]]\nname="working"\nmetric="open_order_notional"\nscope="firm"\n'
        'max=1e12\naction="alert"\n',
    )
    out = run(e, [new("b1", qty=1_000_000, price=50.0)])
    # buy side: 1,000,000 x 50 = 50,000,000 > 40,000,000 (before: 0, no halt)
    assert [(t.rule, t.to, t.value) for t in out] == [("potential", "HALTED", 50_000_000.0)]
    v = e.scope_values("firm")
    assert (v["open_order_notional"], v["potential_gross_notional"]) == (50e6, 50e6)
    run(e, [new("s1", t=MS, qty=300_000, price=60.0, side="sell")])
    # open: 50,000,000 + 300,000 x 60 = 68,000,000; the worst side by money is the buys:
    # max(50,000,000, 18,000,000) = 50,000,000
    v = e.scope_values("firm")
    assert (v["open_order_notional"], v["potential_gross_notional"]) == (68e6, 50e6)
    run(e, [new("s2", t=2 * MS, qty=700_000, price=80.0, side="sell")])
    # sells: 300,000 x 60 + 700,000 x 80 = 18,000,000 + 56,000,000 = 74,000,000 > 50,000,000
    v = e.scope_values("firm")
    assert (v["open_order_notional"], v["potential_gross_notional"]) == (124e6, 74e6)
    run(e, [new("m1", t=3 * MS, qty=500_000, price=None, side="sell")])
    # a market sell adds 500,000 units worth 0 with no price (as open notional counts it):
    # the sells' growth 1,500,000 x (74,000,000 / 1,500,000) is still 74,000,000
    assert e.scope_values("firm")["potential_gross_notional"] == 74e6
    run(e, [mark(40.0, t=4 * MS)])
    # a price: the worst side by quantity, 1,500,000 sells x 40 = 60,000,000; open
    # notional 124,000,000 + the market sell 500,000 x 40 = 144,000,000
    v = e.scope_values("firm")
    assert (v["open_order_notional"], v["potential_gross_notional"]) == (144e6, 60e6)


def test_open_order_notional_values_market_orders_at_the_mark_and_rearms() -> None:
    e = engine(
        'name="working"\nmetric="open_order_notional"\nscope="firm"\nmax=5500\naction="alert"'
    )
    run(e, [mark(100.0), new("m1", qty=50, price=None)])
    assert e.scope_values("firm")["open_order_notional"] == 5_000.0  # 50 x 100
    out = run(e, [mark(120.0, t=MS)])  # a market order is worth 50 x 120 = 6,000 now
    assert [(t.kind, t.value) for t in out] == [("alert", 6_000.0)]
    out2 = run(e, [cancel("m1", t=2 * MS)])
    assert [(t.kind, t.value, t.ends) for t in out2] == [("resolve", 0.0, out[0].id)]
    assert e.scope_values("firm")["open_order_notional"] == 0.0


# graduated warnings --------------------------------------------------------------------
def test_warnings_fire_once_each_on_a_rising_value_and_not_while_it_hovers() -> None:
    e = engine(
        'name="gross"\nmetric="gross_notional"\nscope="firm"\nmax=1000000\n'
        'warn_at=[0.5, 0.75, 0.9]\naction="halt"'
    )
    run(e, [fill("o1", qty=1000, price=100.0)])  # 100,000: 10 %
    seen: list[tuple[str, float | None, float | None, str]] = []
    for i, px in enumerate([500, 520, 490, 510, 760, 740, 910, 905, 1001, 440]):
        for t in run(e, [mark(float(px), t=(i + 1) * MS)]):
            seen.append((t.kind, t.level, t.value, t.to))
    assert seen == [
        ("alert", 0.5, 500_000.0, "ACTIVE"),  # 50 % crossed once; 520, 490, 510 hover
        ("alert", 0.75, 760_000.0, "ACTIVE"),  # 740 is within the 5 % re-arm band
        ("alert", 0.9, 910_000.0, "ACTIVE"),
        ("auto", None, 1_001_000.0, "HALTED"),  # the limit itself
        # 440,000 is 44 %: below every level by more than 5 %, each re-arms (resolves)
        ("resolve", 0.5, 440_000.0, "HALTED"),
        ("resolve", 0.75, 440_000.0, "HALTED"),
        ("resolve", 0.9, 440_000.0, "HALTED"),
    ]


def test_rearm_stops_an_alert_flapping_around_its_limit() -> None:
    def alerts(rearm: str) -> list[tuple[str, float]]:
        e = engine(
            f'name="net"\nmetric="net_notional"\nscope="firm"\nmax=1000\n{rearm}action="alert"'
        )
        run(e, [fill("o1", qty=10, price=100.0)])
        out = []
        for i, px in enumerate([101, 99, 101, 99, 94, 101]):
            out += [(t.kind, t.value) for t in run(e, [mark(float(px), t=(i + 1) * MS)])]
        return out

    # rearm 0 (the default for a rule's own alert): every crossing pages and resolves
    assert alerts("") == [
        ("alert", 1010.0),
        ("resolve", 990.0),
        ("alert", 1010.0),
        ("resolve", 990.0),
        ("alert", 1010.0),
    ]
    # rearm 0.05: only back below 950 (5 % of 1,000 under it) re-arms it
    assert alerts("rearm=0.05\n") == [("alert", 1010.0), ("resolve", 940.0), ("alert", 1010.0)]


# venue and side ------------------------------------------------------------------------
def test_a_venue_halt_stops_that_venue_only() -> None:
    e = engine(
        'name="xnas-rate"\nmetric="order_rate"\nscope="venue"\nmatch={venue="XNAS"}\n'
        'window_ms=1000\nmax=2\naction="halt"'
    )
    out = run(e, [new(f"a{i}", t=i * MS, venue="ARCX") for i in range(5)])
    assert out == []  # another venue's orders do not count
    out = run(e, [new(f"n{i}", t=(10 + i) * MS, venue="XNAS") for i in range(3)])
    assert decided(out) == [("venue:XNAS", "auto", "HALTED", 3.0)]
    assert e.killswitch.state("venue:XNAS") == "HALTED"
    assert e.killswitch.state("account:A") == "ACTIVE"


def test_match_side_counts_one_side_only() -> None:
    e = engine(
        'name="sells"\nmetric="order_rate"\nscope="account"\nmatch={side="sell"}\n'
        'window_ms=1000\nmax=1\naction="halt"'
    )
    assert run(e, [new("b1"), new("b2", t=MS), new("b3", t=2 * MS)]) == []
    out = run(e, [new("s1", t=3 * MS, side="sell"), new("s2", t=4 * MS, side="sell")])
    assert decided(out) == [("account:A", "auto", "HALTED", 2.0)]


def test_fill_count_counts_executions_and_a_bust_takes_one_back() -> None:
    e = engine(
        'name="fills"\nmetric="fill_count"\nscope="strategy"\nwindow_ms=1000\nmax=3\naction="alert"'
    )
    out = run(e, [fill("o1", t=i * MS, qty=1, exec_id=f"e{i}") for i in range(3)])
    assert out == []
    run(e, [bust("o1", "e0", t=3 * MS)])  # 2 executions in the window now
    assert run(e, [fill("o1", t=4 * MS, qty=1, exec_id="e4")]) == []  # 3: at the limit
    out = run(e, [fill("o1", t=5 * MS, qty=1, exec_id="e5")])
    assert [(t.kind, t.value) for t in out] == [("alert", 4.0)]


# restricted list -------------------------------------------------------------------------
RESTRICTED = """
[[restricted]]
symbols = ["XYZ"]
reason = "MNPI: deal team wall-crossed"
"""


def test_an_order_in_a_restricted_symbol_halts_its_strategy() -> None:
    e = engine(
        'name="q"\nmetric="order_qty"\nscope="firm"\nmax=1e9\naction="alert"', tail=RESTRICTED
    )
    assert run(e, [new("o1", symbol="ABC")]) == []
    out = run(e, [new("o2", t=MS, symbol="XYZ")])
    assert [(t.scope, t.to, t.rule, t.symbol) for t in out] == [
        ("strategy:S", "HALTED", "restricted-1", "XYZ")
    ]
    assert evidence(out[0]) == (
        "rule restricted-1: order or fill in restricted symbol XYZ; MNPI: deal team wall-crossed"
    )


@pytest.mark.parametrize("field", ["accounts", "strategies"])
def test_restricted_entries_may_name_accounts_or_strategies(field: str) -> None:
    names = '["B"]' if field == "accounts" else '["S2"]'
    tail = RESTRICTED + f"{field} = {names}\n"
    e = engine('name="q"\nmetric="order_qty"\nscope="firm"\nmax=1e9\naction="alert"', tail=tail)
    assert run(e, [new("o1", symbol="XYZ")]) == []  # account A, strategy S: not named
    other = {"account": "B"} if field == "accounts" else {"strategy": "S2"}
    out = run(e, [new("o2", t=MS, symbol="XYZ", **other)])
    assert [t.to for t in out] == ["HALTED"]


def test_a_warning_and_its_resolve_page_and_close_an_incident() -> None:
    e = engine(
        'name="gross"\nmetric="gross_notional"\nscope="firm"\nmax=1000\nwarn_at=[0.5]\n'
        'action="halt"'
    )
    (warning,) = run(e, [fill("o1", qty=6, price=100.0)])  # 600: 60 % of 1,000
    (resolve,) = run(e, [mark(40.0, t=MS)])  # 240: below 45 %
    assert (warning.kind, warning.level, resolve.kind, resolve.ends) == (
        "alert",
        0.5,
        "resolve",
        warning.id,
    )
    assert evidence(warning) == "rule gross: gross_notional 600 reached 50% of limit 1,000"
    assert evidence(resolve) == (
        "rule gross: gross_notional back to 240, below the 50% warning of limit 1,000"
    )
    e2 = engine('name="open"\nmetric="open_orders"\nscope="firm"\nmax=1\naction="alert"')
    alert = run(e2, [new("o1"), new("o2", t=MS)])[0]
    (back,) = run(e2, [cancel("o2", t=2 * MS)])
    assert (back.limit, back.ends) == (1.0, alert.id)
    assert evidence(back) == "rule open: open_orders back to 1, within limit 1"
    pd = NotifierSettings(kind="pagerduty", url="http://pd")
    fired = sinks.build(pd, warning, "key", "rg")
    assert fired["event_action"] == "trigger" and fired["dedup_key"] == warning.id
    assert fired["payload"]["severity"] == "warning"
    assert sinks.build(pd, resolve, "key", "rg") == {
        "routing_key": "key",
        "event_action": "resolve",
        "dedup_key": warning.id,
    }
    am = NotifierSettings(kind="alertmanager", url="http://am")
    (fire,), (end,) = sinks.build(am, warning, None, "rg"), sinks.build(am, resolve, None, "rg")
    assert end["labels"] == fire["labels"] and "endsAt" in end and "endsAt" not in fire
    assert sinks.summary(resolve).startswith("riskguard: firm RESOLVED - rule gross:")
