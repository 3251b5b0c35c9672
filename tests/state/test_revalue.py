"""Revaluation epochs: marks move holders' exposures at most once per symbol per epoch.

A symbol's first price move in an epoch (``revalue_ms`` of event time) revalues
its holders at once; later moves in the same epoch wait, and the first event (or
clock tick) of a later epoch applies all of them together before evaluating.
"""

from __future__ import annotations

import pytest

from riskguard.engine import Engine
from riskguard.limits import LimitsError, parse
from tests.builders import MS, T0, fill, heartbeat, mark, rules_toml

GROSS = 'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=1500\naction="halt"'
NET = 'name="net"\nmetric="net_notional"\nscope="account"\nmax=1500\nmin=-1500\naction="halt"'


def engine(*rules: str, revalue_ms: int | None = None) -> Engine:
    text = rules_toml(*rules)
    if revalue_ms is not None:
        text = text.replace("version = 1", f"version = 1\nrevalue_ms = {revalue_ms}")
    return Engine(parse(text), event_time=True)


def gross(e: Engine) -> float:
    return e.scope_values("account:A")["gross_notional"]


def test_first_mark_of_an_epoch_applies_at_once_later_ones_wait() -> None:
    e = engine(GROSS)
    assert e.apply([fill("a", 0, qty=10, price=100.0)]).transitions == []
    assert gross(e) == 1000.0
    assert e.apply([mark(120.0, 100 * MS)]).transitions == []  # epoch 1: applied now
    assert gross(e) == 1200.0
    assert e.apply([mark(160.0, 120 * MS)]).transitions == []  # same epoch: waits
    assert gross(e) == 1200.0
    assert e.killswitch.state("account:A") == "ACTIVE"
    # the first event of epoch 2, of any kind, applies it and judges the holders
    (tr,) = e.apply([heartbeat("router", 200 * MS)]).transitions
    assert (tr.scope, tr.rule, tr.to, tr.value) == ("account:A", "gross", "HALTED", 1600.0)
    assert tr.ts == T0 + 200 * MS
    assert gross(e) == 1600.0


def test_a_clock_tick_applies_waiting_marks_without_any_event() -> None:
    e = engine(GROSS)
    e.apply([fill("a", 0, qty=10, price=100.0), mark(120.0, 10 * MS), mark(170.0, 20 * MS)])
    assert gross(e) == 1000.0  # the fill set this epoch's price; both marks wait
    assert e.tick(T0 + 99 * MS) == []  # still epoch 0
    (tr,) = e.tick(T0 + 100 * MS)
    assert (tr.rule, tr.value, tr.ts) == ("gross", 1700.0, T0 + 100 * MS)
    assert e.killswitch.state("account:A") == "HALTED"


def test_revalue_ms_zero_applies_every_mark() -> None:
    e = engine(GROSS, revalue_ms=0)
    e.apply([fill("a", 0, qty=10, price=100.0), mark(120.0, 1 * MS)])
    assert gross(e) == 1200.0
    (tr,) = e.apply([mark(160.0, 2 * MS)]).transitions
    assert (tr.rule, tr.value, tr.ts) == ("gross", 1600.0, T0 + 2 * MS)


def test_a_holder_of_two_waiting_symbols_is_judged_once_fully_revalued() -> None:
    """Long X, short Y: both marked up in one epoch; net stays flat, so no halt.

    Judging after moving only X would see net +2000 and halt a hedged book.
    """
    e = engine(NET)
    e.apply(
        [
            fill("a", 0, qty=10, price=100.0),
            fill("b", 1 * MS, qty=10, price=100.0, side="sell", symbol="Y"),
            mark(300.0, 10 * MS),
            mark(300.0, 11 * MS, symbol="Y"),
        ]
    )
    assert e.apply([heartbeat("router", 100 * MS)]).transitions == []
    values = e.scope_values("account:A")
    assert (values["net_notional"], values["gross_notional"]) == (0.0, 6000.0)
    assert e.killswitch.state("account:A") == "ACTIVE"


def test_a_fill_is_valued_at_its_own_price_until_the_epoch_moves() -> None:
    """Issue 10: a fill valued at a stale epoch price invented P&L (case 11). Until the
    next epoch the new lot is valued at its own fill price, never at one it did not
    trade at; the old lot keeps the epoch's price."""
    e = engine(GROSS)
    e.apply([fill("a", 0, qty=10, price=100.0), fill("b", 5 * MS, qty=5, price=110.0)])
    assert gross(e) == 1550.0  # 10 at 100 (the epoch's price) + 5 at 110 (its own)
    assert e.scope_values("account:A")["pnl"] == 0.0  # no P&L that did not exist
    e.tick(T0 + 100 * MS)
    assert gross(e) == 1650.0  # now at the last fill, 110
    assert e.killswitch.state("account:A") == "HALTED"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "'revalue_ms' must be between 0 and 60000, got -1"),
        ("60001", "'revalue_ms' must be between 0 and 60000, got 60001"),
        ('"100"', "'revalue_ms' must be an integer number of milliseconds, got '100'"),
        ("1.5", "'revalue_ms' must be an integer number of milliseconds, got 1.5"),
        ("true", "'revalue_ms' must be an integer number of milliseconds, got true"),
    ],
)
def test_bad_revalue_ms_is_rejected_with_its_name(value: str, message: str) -> None:
    with pytest.raises(LimitsError) as info:
        parse(f"version = 1\nrevalue_ms = {value}\n")
    assert message in str(info.value)


def test_revalue_ms_defaults_to_100() -> None:
    assert parse("version = 1").revalue_ms == 100
