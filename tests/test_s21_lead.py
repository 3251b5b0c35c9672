"""Session 21, found by the lead: faults a risk officer would call wrong, each hand-derived.

Windows (docs/limits.md, Windows): ``window_ms = 1000`` gives buckets of 100 ms; an event
in bucket B leaves the window once the clock reaches bucket B + 11. T0 is a multiple of
100 ms, so events at 0..99 ms are in bucket B0.
"""

from __future__ import annotations

from riskguard.engine import Engine
from riskguard.killswitch import Transition
from riskguard.limits import parse
from tests.builders import MS, T0, cancel, fill, new, rules_toml

CXL_RATIO = (
    'name="cxl"\nmetric="cancel_ratio"\nscope="strategy"\nwindow_ms=1000\nmax=0.5\n'
    'min_orders=2\naction="alert"'
)


def pages(transitions: list[Transition]) -> list[tuple[str, float]]:
    return [(t.kind, t.value) for t in transitions]


def test_a_cancel_ratio_alert_resolves_once_its_window_holds_no_cancel() -> None:
    """Orders o1, o2 at 0 and 10 ms, cancelled at 20 and 30 ms: 1 / 2 = 0.5 (not above
    0.5), then 2 / 2 = 1.0 > 0.5, the alert pages. The strategy then stops. At the tick
    at 1,050 ms the window still holds B0: raised. At 1,100 ms it holds none of them: no
    cancel in the window reads 0 (0 / 0 before, "not evaluated": the alert stayed raised
    for ever once the flow stopped). Resolved at the tick, value 0."""
    engine = Engine(parse(rules_toml(CXL_RATIO)), event_time=True)
    out = engine.apply([new("o1", 0), new("o2", 10 * MS), cancel("o1", 20 * MS),
                        cancel("o2", 30 * MS)]).transitions  # fmt: skip
    assert pages(out) == [("alert", 1.0)]
    assert engine.tick(T0 + 1_050 * MS) == []
    assert pages(engine.tick(T0 + 1_100 * MS)) == [("resolve", 0.0)]
    assert engine.tick(T0 + 1_200 * MS) == []


def test_cancels_still_arriving_without_new_orders_keep_a_cancel_ratio_alert_raised() -> None:
    """Orders o1..o4 at 0..30 ms; o1..o3 cancelled at 40, 50, 60 ms: 1/4, 2/4 (not above),
    3/4 = 0.75 > 0.5: alert. o4 cancelled at 900 ms (bucket B0 + 9): 4/4, raised already.
    Tick at 1,100 ms: B0 has left; the window holds 1 cancel and 0 new orders, fewer than
    min_orders 2: not evaluated, and a storm of cancels of older orders is still going:
    still raised. Tick at 1,950 ms (B0 + 19): still holds the 900 ms cancel. Tick at
    2,000 ms (B0 + 20): no cancel left, reads 0: resolved."""
    engine = Engine(parse(rules_toml(CXL_RATIO)), event_time=True)
    orders = [new(f"o{i}", 10 * i * MS) for i in range(1, 5)]
    cancels = [cancel(f"o{i}", (30 + 10 * i) * MS) for i in range(1, 4)]
    assert pages(engine.apply([*orders, *cancels]).transitions) == [("alert", 0.75)]
    assert engine.apply([cancel("o4", 900 * MS)]).transitions == []
    assert engine.tick(T0 + 1_100 * MS) == []
    assert engine.tick(T0 + 1_950 * MS) == []
    assert pages(engine.tick(T0 + 2_000 * MS)) == [("resolve", 0.0)]


WATCH = '\n[[restricted]]\nname="watch"\nsymbols=["XYZ"]\nreason="wall"\naction="alert"\n'


def test_a_restricted_list_alert_pages_again_at_the_next_listed_order_after_a_clean_one() -> None:
    """Entry `watch` (XYZ, action alert). Strategy S buys XYZ: page (value 1). S buys
    ABC, which no entry lists: the watch alert re-arms (value 0), as an order_notional
    alert re-arms at the next order within the limit. S buys XYZ again: a second page
    (before, the alert stayed raised for the session, value always 1: compliance never
    heard of the second order). Strategy T's order in ABC re-arms nothing of S's."""
    engine = Engine(parse(rules_toml() + WATCH), event_time=True)
    first = engine.apply([new("o1", 0, symbol="XYZ")]).transitions
    assert [(t.kind, t.rule, t.symbol, t.value) for t in first] == [("alert", "watch", "XYZ", 1.0)]
    assert engine.apply([new("t1", MS, symbol="ABC", strategy="T")]).transitions == []
    clean = engine.apply([new("o2", 2 * MS, symbol="ABC")]).transitions
    assert [(t.kind, t.rule, t.scope, t.value) for t in clean] == [
        ("resolve", "watch", "strategy:S", 0.0)
    ]
    again = engine.apply([new("o3", 3 * MS, symbol="XYZ")]).transitions
    assert [(t.kind, t.rule, t.value) for t in again] == [("alert", "watch", 1.0)]
    # two listed orders in a row: one incident, as any alert edge
    assert engine.apply([new("o4", 4 * MS, symbol="XYZ")]).transitions == []


def test_positions_and_book_give_money_as_it_is_judged() -> None:
    """Buy 3 @ 100.1, sell 1 @ 100.1: realised 0, cost 2 x 100.1 = 200.2. The kernel's
    realised is 300.3 / 3 - 100.1 in binary floats, 1.4210854715202004e-14, which
    positions() and book() showed while the scope's pnl showed 0."""
    engine = Engine(parse(rules_toml()), event_time=True)
    engine.apply([new("o1", 0, qty=3, price=100.1), fill("o1", MS, qty=3, price=100.1),
                  new("o2", 2 * MS, qty=1, price=100.1, side="sell"),
                  fill("o2", 3 * MS, qty=1, price=100.1, side="sell")])  # fmt: skip
    assert engine.positions()[("strategy:S", "symbol:X")] == (2.0, 200.2, 0.0)
    book = engine.book("strategy:S", "X")
    assert book is not None and (book["realised"], book["cost"], book["qty"]) == (0.0, 200.2, 2.0)


def test_a_limits_file_with_one_problem_is_refused_in_one_line() -> None:
    """`riskguard run` prints a LimitsError as its one-line reason: with one problem the
    message is that problem (it was a count line and the problem on a second line)."""
    from riskguard.limits.load import LimitsError  # noqa: PLC0415

    one = LimitsError("limits.toml", ["rule 's': field 'max' must be a number"])
    assert str(one) == "limits.toml: rule 's': field 'max' must be a number"
    two = LimitsError("limits.toml", ["a", "b"])
    assert str(two) == "limits.toml: 2 problem(s):\n  a\n  b"
