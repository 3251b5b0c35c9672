"""A windowed alert or warning resolves at the first clock tick after its window empties.

Windows (docs/limits.md, Windows) are 10 buckets of ``window_ms / 10`` plus the current
one: with ``window_ms = 1000`` the buckets are 100 ms wide, and an order counted in the
bucket of time t leaves the window once the clock reaches the bucket 11 after it. T0 is
a multiple of 100 ms, so the orders at 0..50 ms are all in bucket B0 = T0 / 100 ms: at
a tick at 500 ms (bucket B0 + 5) and at 1,050 ms (B0 + 10) the window still holds B0;
at 1,100 ms (B0 + 11) it holds B0 + 1 .. B0 + 11, none of them. Before, only the next
event moving the counter re-judged it: the incident stayed open for ever once the
strategy stopped sending orders.
"""

from __future__ import annotations

from pathlib import Path

from riskguard.engine import Engine
from riskguard.killswitch import Transition
from riskguard.limits import Limits, parse
from riskguard.snapshot import capture, decode, restore
from tests.builders import MS, T0, new, rules_toml

RATE_ALERT = (
    'name="burst"\nmetric="order_rate"\nscope="strategy"\nwindow_ms=1000\nmax=5\naction="alert"'
)
RATE_WARNED = (
    'name="rate"\nmetric="order_rate"\nscope="strategy"\nwindow_ms=1000\nmax=10\n'
    'warn_at=[0.5]\naction="halt"'
)
RATE_REARM = (
    'name="slow"\nmetric="order_rate"\nscope="strategy"\nwindow_ms=1000\nmax=5\nrearm=0.5\n'
    'action="alert"'
)


def limits(*rules: str) -> Limits:
    return parse(rules_toml(*rules))


def pages(transitions: list[Transition]) -> list[tuple[str, str | None, float | None, float]]:
    return [(t.kind, t.rule, t.level, t.value) for t in transitions]


def burst(engine: Engine, n: int, start_ms: int = 0) -> list[Transition]:
    """``n`` new orders of strategy S, 10 ms apart from ``start_ms``."""
    orders = [new(f"o{start_ms}-{i}", (start_ms + 10 * i) * MS) for i in range(n)]
    return engine.apply(orders).transitions


def test_an_order_rate_alert_resolves_at_the_first_tick_after_its_window_empties() -> None:
    """Six orders at 0, 10 .. 50 ms: the sixth makes 6 > 5, the alert pages (value 6).
    Tick at 500 ms: the window (B0 - 5 .. B0 + 5) holds the six: 6 > 5, still raised.
    Tick at 1,050 ms (B0 .. B0 + 10): still the six. Tick at 1,100 ms (B0 + 1 ..
    B0 + 11): 0 orders, within the limit (rearm 0): resolved, naming the alert, at the
    tick's time. Tick at 1,200 ms: nothing more."""
    engine = Engine(limits(RATE_ALERT), event_time=True)
    raised = burst(engine, 6)
    assert pages(raised) == [("alert", "burst", None, 6.0)]
    assert engine.tick(T0 + 500 * MS) == []
    assert engine.tick(T0 + 1_050 * MS) == []
    done = engine.tick(T0 + 1_100 * MS)
    assert pages(done) == [("resolve", "burst", None, 0.0)]
    assert done[0].ends == raised[0].id and done[0].scope == "strategy:S"
    assert done[0].ts == T0 + 1_100 * MS
    assert engine.tick(T0 + 1_200 * MS) == []
    assert engine.raised_alerts() == []


def test_a_warning_level_of_a_halt_rule_resolves_at_a_tick_and_the_halt_stays() -> None:
    """`rate` warns at 50 % of 10: the fifth order (5 / 10 = 0.5, at the level) raises
    it. Tick at 1,100 ms: 0 orders, utilisation 0 < 0.5 - 0.05: resolved. A second
    strategy T sends eleven orders at 2,000 .. 2,100 ms: the fifth warns, the eleventh
    (11 > 10) halts T. T's orders are in B0 + 20 (2,000 .. 2,090 ms) and B0 + 21 (2,100
    ms). Tick at 3,050 ms (B0 + 20 .. B0 + 30): 11, still raised. Tick at 3,100 ms
    (B0 + 21 .. B0 + 31): 1 order, 0.1 < 0.45, the warning resolves; the halt latches."""
    engine = Engine(limits(RATE_WARNED), event_time=True)
    raised = burst(engine, 6)
    assert pages(raised) == [("alert", "rate", 0.5, 5.0)]
    assert engine.tick(T0 + 1_050 * MS) == []
    done = engine.tick(T0 + 1_100 * MS)
    assert pages(done) == [("resolve", "rate", 0.5, 0.0)] and done[0].ends == raised[0].id
    orders = [new(f"t{i}", (2_000 + 10 * i) * MS, strategy="T") for i in range(11)]
    halted = engine.apply(orders).transitions
    assert [(t.kind, t.to, t.value) for t in halted] == [
        ("alert", "ACTIVE", 5.0),
        ("auto", "HALTED", 11.0),
    ]
    assert engine.tick(T0 + 3_050 * MS) == []
    done = engine.tick(T0 + 3_100 * MS)
    assert pages(done) == [("resolve", "rate", 0.5, 1.0)] and done[0].ends == halted[0].id
    assert engine.killswitch.state("strategy:T") == "HALTED"


def test_a_tick_resolves_only_once_the_value_is_back_below_the_rearm_point() -> None:
    """`slow`: max 5, rearm 0.5, so the alert re-arms below 50 % of 5 (under 2.5). Six
    orders at 0 .. 50 ms page (6 > 5); three more at 500 .. 520 ms (bucket B0 + 5) keep
    it raised (7, 8, 9). Tick at 1,100 ms: B0 left, 3 orders: within the limit but 3 / 5
    = 0.6 is not below 0.5, still raised. Tick at 1,600 ms (B0 + 6 .. B0 + 16): 0,
    resolved."""
    engine = Engine(limits(RATE_REARM), event_time=True)
    raised = burst(engine, 6)
    assert pages(raised) == [("alert", "slow", None, 6.0)]
    assert burst(engine, 3, 500) == []
    assert engine.tick(T0 + 1_100 * MS) == []
    done = engine.tick(T0 + 1_600 * MS)
    assert pages(done) == [("resolve", "slow", None, 0.0)] and done[0].ends == raised[0].id


def test_a_windowed_alert_restored_from_a_snapshot_or_kept_by_a_reload_resolves_at_a_tick(
) -> None:  # fmt: skip
    """The `burst` alert (6 > 5) is raised; a snapshot of it restored into a second
    engine, and a reload of the first that keeps `burst` (adding an unrelated rule, so
    its row moves), both re-read it at the tick at 1,100 ms (0 orders): resolved, naming
    the alert raised before."""
    first = Engine(limits(RATE_ALERT), event_time=True)
    raised = burst(first, 6)
    snap = decode(capture(first, {"t/0": 6}), Path("snapshot-1.rgs"))
    second = Engine(limits(RATE_ALERT), event_time=True)
    assert restore(second, snap) == []
    unrelated = 'name="q"\nmetric="order_qty"\nscope="account"\nmax=1e6\naction="halt"'
    assert first.replace_limits(limits(unrelated, RATE_ALERT)) == []
    for engine in (first, second):
        assert engine.tick(T0 + 1_050 * MS) == []
        done = engine.tick(T0 + 1_100 * MS)
        assert pages(done) == [("resolve", "burst", None, 0.0)]
        assert done[0].ends == raised[0].id


def test_the_resolves_of_one_tick_come_in_rule_order_then_scope_name() -> None:
    """`burst` and `rate` (warning at 5 of 10) on strategies S7, S6 .. S0 (raised in that
    order): the tick at 1,100 ms resolves `burst` for S0 .. S7, then `rate`'s warning for
    S0 .. S7 (file order of the rules, then scope names sorted)."""
    engine = Engine(limits(RATE_ALERT, RATE_WARNED), event_time=True)
    names = [f"S{k}" for k in range(8)]
    for strategy in reversed(names):
        orders = [new(f"{strategy}-{i}", 10 * i * MS, strategy=strategy) for i in range(6)]
        engine.apply(orders)
    done = engine.tick(T0 + 1_100 * MS)
    assert [(t.rule, t.scope) for t in done] == [
        (rule, f"strategy:{name}") for rule in ("burst", "rate") for name in names
    ]
