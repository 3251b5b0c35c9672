"""Order flows hunted for wrong counts: orders seen in an unusual order, redelivered.

Every expected value is derived by hand in the comments from docs/events.md (Redelivery,
Order lifecycle, Clock skew) and docs/limits.md (Windows). Each scenario runs the numba
kernel (one event per batch) and the plain-Python reference model on the same events.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from tests.builders import (
    MS,
    T0,
    bust,
    cancel,
    fill,
    heartbeat,
    new,
    reject,
    replace,
    rules_toml,
)


def rule(
    name: str, metric: str, scope: str, bound: str, extra: str = "", action: str = "halt"
) -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="{scope}"\n{bound}\naction="{action}"\n{extra}'


def run(
    events: list[wire.Event], *rules: str
) -> tuple[Engine, ReferenceModel, list[Transition], int]:
    """The kernel, one event per batch, and the reference model: (engine, model,
    transitions but resolves, redeliveries the kernel recognised)."""
    lim = parse(rules_toml(*rules))
    engine = Engine(lim, event_time=True)
    ref = ReferenceModel(lim)
    out: list[Transition] = []
    duplicates = 0
    for event in events:
        result = engine.apply([event])
        out += result.transitions
        duplicates += result.duplicates
        ref.apply_one(event)
    out += engine.settle()
    ref.settle()
    return engine, ref, [t for t in out if t.kind != "resolve"], duplicates


def highs(engine: Engine) -> dict[str, Any]:
    return {p.rule.name: p.high for p in engine.peaks()}


ORDERS = rule("orders", "order_rate", "strategy", "max=1", "window_ms=1000")
OPEN = rule("open", "open_orders", "strategy", "max=0", action="alert")


@pytest.mark.parametrize("closing", [reject, cancel])
def test_redelivered_late_new_of_an_order_closed_before_it(closing: Any) -> None:
    # A reject (cancel) of A arrives 1 ms before A's new; then A's new is redelivered.
    # The late new opens nothing (the order is closed) and counts once in order_rate: 1.
    # Its copy repeats the new field for field: a redelivery (docs/events.md, Redelivery:
    # "closed and still remembered, and the new repeats that order's new"), counted
    # apart, changing nothing. order_rate stays 1 (max 1: no breach); open_orders 0.
    # (Before the fix the record kept the reject's side, none, so the copy did not
    # "repeat" the new: it was taken as a new order reusing a closed id, counted again
    # (order_rate 2 > 1, a halt) and left working (open_orders 1, an alert, and a
    # phantom order named in every cancel request).)
    events = [closing("A", 1 * MS), new("A", 2 * MS), new("A", 3 * MS)]
    engine, ref, out, duplicates = run(events, ORDERS, OPEN)
    assert out == []
    assert duplicates == 1
    assert highs(engine) == {"orders": 1.0, "open": 0.0}
    assert ref.orders["A"].status == "closed"
    assert ref.duplicates == 1


HOUR = 3_600_000 * MS
DUPS = rule("dups", "duplicate_orders", "strategy", "max=1", "window_ms=1000")


def test_duplicates_right_after_a_gap_are_counted_whole() -> None:
    # Replay, default max_clock_skew_ms 5,000. An order P (price 50) at 0, then an hour's
    # gap, then three identical orders A, B, C (10 @100) at 1 h, 1 h + 1 ms, 1 h + 2 ms.
    # A and B are more than 5 s ahead of the clock (0): applied at the clock; C is the
    # third in a row, so the feed jumped (docs/events.md, Clock skew) and "what they
    # counted in rate windows moves to the jump's time, so a burst right after a gap is
    # counted whole". duplicate_orders (window 1 s): B repeats A 1 ms earlier, C repeats
    # B 1 ms earlier: 2 at C > max 1, a halt at C (1 h + 2 ms). P differs in price.
    # (Before the fix duplicate counts were left where they were counted: B's count in
    # the bucket of 0, gone once the window moved to 1 h, and A and B stamped 0 in the
    # duplicate memory, so C was an hour away from them: 0 at C, 1 at most, no halt.)
    events = [new("P", 0, price=50), new("A", HOUR), new("B", HOUR + MS), new("C", HOUR + 2 * MS)]
    engine, ref, out, _ = run(events, DUPS)
    assert [(t.scope, t.rule, t.value, t.ts - events[0].ts) for t in out] == [
        ("strategy:S", "dups", 2.0, HOUR + 2 * MS)
    ]
    assert highs(engine) == {"dups": 2.0}
    assert ref.peaks["dups"][1] == 2.0


def test_two_duplicates_ahead_then_back_on_time_stay_where_counted() -> None:
    # The same A and B an hour ahead, then an order D back on time (at 2 ms, other
    # price): A and B were skewed after all and stay at the clock (0), where B counted
    # one duplicate of A: 1, no breach; an identical E at 3 ms repeats them (stamped 0,
    # 3 ms earlier): 2 > 1, a halt at 3 ms.
    events = [
        new("P", 0, price=50),
        new("A", HOUR),
        new("B", HOUR + MS),
        new("D", 2 * MS, price=60),
        new("E", 3 * MS),
    ]
    engine, ref, out, _ = run(events, DUPS)
    assert [(t.rule, t.value, t.ts - events[0].ts) for t in out] == [("dups", 2.0, 3 * MS)]
    assert highs(engine) == {"dups": 2.0}
    assert ref.peaks["dups"][1] == 2.0


NEW_ORDER_RULES = (
    rule("rate", "order_rate", "strategy", "max=1000", "window_ms=1000"),
    rule("msgs", "message_rate", "account", "max=1000", "window_ms=1000"),
    rule("dup", "duplicate_orders", "strategy", "max=1000", "window_ms=1000"),
    rule("dupx", "duplicate_orders", "firm", "max=1000", "window_ms=1000\nmatch={side='sell'}"),
    rule("cxl", "cancel_ratio", "symbol", "max=1000", "window_ms=1000"),
)


@st.composite
def bursts(draw: st.DrawFn) -> list[wire.Event]:
    """Orders (a few identical ones) and cancels within one 100 ms bucket of 1 s windows."""
    n = draw(st.integers(3, 9))
    offsets = sorted(draw(st.lists(st.integers(0, 99), min_size=n, max_size=n)))
    events: list[wire.Event] = []
    for i, ms in enumerate(offsets):
        if i > 0 and draw(st.booleans()) and draw(st.booleans()):
            events.append(cancel(f"o{draw(st.integers(0, i - 1))}", HOUR + ms * MS))
            continue
        qty = draw(st.sampled_from([10.0, 20.0]))
        side = draw(st.sampled_from(["buy", "sell"]))
        events.append(new(f"o{i}", HOUR + ms * MS, qty=qty, side=side))
    return events


@settings(max_examples=60, deadline=None)
@given(bursts())
def test_a_burst_after_a_gap_counts_as_the_same_burst_alone(burst: list[wire.Event]) -> None:
    """A burst of new orders and cancels an hour after the last event (a heartbeat, which
    counts in no window) reaches the same window values as the burst replayed alone: the
    first two events are applied at the old clock, and the jump moves what they counted
    (every counter, duplicate orders too) to the jump's time. The burst sits in one
    bucket, so no count can leave a window sooner one way than the other."""
    alone, _, _, _ = run(burst, *NEW_ORDER_RULES)
    after_gap, ref, _, _ = run([heartbeat("r1", 0), *burst], *NEW_ORDER_RULES)
    assert highs(after_gap) == highs(alone)
    model = {name: None if high == -math.inf else high for name, (_, high, _) in ref.peaks.items()}
    assert model == highs(alone)  # the model's -inf: never evaluated


VENUE_REJECTS = rule(
    "venue-rejects", "reject_rate", "venue", "max=1", 'window_ms=1000\nmatch={venue="XNAS"}'
)
BUY_REJECTS = rule(
    "buy-rejects", "reject_rate", "strategy", "max=1", 'window_ms=1000\nmatch={side="buy"}'
)
BUY_CANCELS = rule(
    "buy-cancels", "cancel_ratio", "strategy", "max=0.5", 'window_ms=1000\nmatch={side="buy"}'
)


def test_rejects_that_come_before_their_new_count_at_its_venue() -> None:
    # A venue rejecting everything, its rejects on a drop copy that beats the router's
    # news: reject A (1 ms), new A to XNAS (2 ms), reject B (3 ms), new B to XNAS (4 ms).
    # A reject's venue and side are its order's (docs/limits.md), known from the new:
    # at new A the XNAS window (1 s) holds A's reject, 1; at new B, 2 > max 1: the venue
    # halts at 4 ms, value 2. The buy-side window of the strategy likewise: 2 > 1 at 4 ms.
    # (Before the fix neither window ever counted a reject: each was counted with no
    # venue and no side, and the new never made up for it; XNAS was never halted.)
    events = [
        reject("A", 1 * MS),
        new("A", 2 * MS, venue="XNAS"),
        reject("B", 3 * MS),
        new("B", 4 * MS, venue="XNAS"),
    ]
    engine, ref, out, _ = run(events, VENUE_REJECTS, BUY_REJECTS)
    assert [(t.scope, t.rule, t.value, t.ts - T0) for t in out] == [
        ("venue:XNAS", "venue-rejects", 2.0, 4 * MS),
        ("strategy:S", "buy-rejects", 2.0, 4 * MS),
    ]
    assert highs(engine) == {"venue-rejects": 2.0, "buy-rejects": 2.0}
    assert (ref.peaks["venue-rejects"][1], ref.peaks["buy-rejects"][1]) == (2.0, 2.0)


def test_a_cancel_before_its_new_counts_once_in_a_side_window() -> None:
    # cancel_ratio of buys (1 s, max 0.5, min_orders 1): new A buy (1 ms, ratio 0/1),
    # cancel B (2 ms, its order unknown: no side), new B buy (3 ms): B's cancel counts
    # now, ratio 1/2 = 0.5, within; cancel A (4 ms, a buy): 2/2 = 1 > 0.5, a halt at
    # 4 ms. B's cancel counts once: a redelivered new B (5 ms) changes nothing, 1 stays.
    # (Before the fix B's cancel never counted in the buy window: 1/2 at cancel A, no
    # halt, while both buys were cancelled.)
    events = [
        new("A", 1 * MS),
        cancel("B", 2 * MS),
        new("B", 3 * MS),
        cancel("A", 4 * MS),
        new("B", 5 * MS),
    ]
    engine, ref, out, duplicates = run(events, BUY_CANCELS)
    assert [(t.rule, t.value, t.ts - T0) for t in out] == [("buy-cancels", 1.0, 4 * MS)]
    assert duplicates == 1
    assert highs(engine) == {"buy-cancels": 1.0}
    assert ref.peaks["buy-cancels"][1] == 1.0


FILTERED_RATES = (
    rule("venue-rej", "reject_rate", "venue", "max=1000", "window_ms=1000"),
    rule("buy-rej", "reject_rate", "strategy", "max=1000", 'window_ms=1000\nmatch={side="buy"}'),
    rule("venue-msg", "message_rate", "venue", "max=1000", "window_ms=1000"),
    rule(
        "xnas-sell-msg",
        "message_rate",
        "account",
        "max=1000",
        'window_ms=1000\nmatch={side="sell", venue="XNAS"}',
    ),
    rule("venue-fills", "fill_count", "venue", "max=1000", "window_ms=1000"),
    rule(
        "xnas-notional",
        "fill_notional_rate",
        "strategy",
        "max=1e9",
        'window_ms=1000\nmatch={venue="XNAS"}',
    ),
)


@st.composite
def closed_orders(draw: st.DrawFn) -> list[tuple[str, str | None, bool]]:
    """Orders (side, venue or none, cancelled rather than rejected)."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["buy", "sell"]),
                st.sampled_from(["XNAS", "XLON", None]),
                st.booleans(),
            ),
            min_size=1,
            max_size=8,
        )
    )


def _stream(orders: list[tuple[str, str | None, bool]], close_first: bool) -> list[wire.Event]:
    """Each order's new, a replace and a partial fill (neither naming a venue: theirs is
    their order's) and its cancel (or reject); in that order, or all before the new. Then probes
    that judge every window with what it holds (the stream sits in one 100 ms bucket of
    1 s windows, so a count-type window only grows and its peak is its total)."""
    events: list[Any] = []
    for i, (side, venue, cancelled) in enumerate(orders):
        order = new(f"o{i}", 0, side=side, venue=venue)
        part = fill(f"o{i}", 0, qty=4, price=100.0 + i, side=side, exec_id=f"x{i}")
        amend = replace(f"o{i}", 0, qty=12, price=99.0, side=side)
        closing = (cancel if cancelled else reject)(f"o{i}", 0)
        events += [amend, closing, part, order] if close_first else [order, amend, part, closing]
    for j, (side, venue) in enumerate([("buy", "XNAS"), ("sell", "XLON"), ("sell", "XNAS")]):
        events += [new(f"p{j}", 0, side=side, venue=venue), reject(f"p{j}", 0)]
        events += [new(f"q{j}", 0, side=side, venue=venue), cancel(f"q{j}", 0)]
        events += [new(f"r{j}", 0, side=side, venue=venue)]
        events += [fill(f"r{j}", 0, qty=1, price=1.0, side=side, exec_id=f"y{j}")]
    return [ev.__class__(**{**_fields(ev), "ts": ev.ts + k * MS}) for k, ev in enumerate(events)]


def _fields(ev: Any) -> dict[str, Any]:
    return {f: getattr(ev, f) for f in ev.__struct_fields__}


@settings(max_examples=60, deadline=None)
@given(closed_orders())
def test_order_events_before_their_new_count_as_after_it(
    orders: list[tuple[str, str | None, bool]],
) -> None:
    """Side- and venue-limited message, reject and fill windows, and the venue scope,
    count a replace, cancel, reject or fill that came before its order's new exactly as
    one that came after."""
    in_order, _, _, _ = run(_stream(orders, False), *FILTERED_RATES)
    closed_first, ref, _, _ = run(_stream(orders, True), *FILTERED_RATES)
    assert highs(closed_first) == highs(in_order)
    model = {name: None if high == -math.inf else high for name, (_, high, _) in ref.peaks.items()}
    assert model == highs(in_order)


VENUE_FILLS = rule("venue-fills", "fill_count", "venue", "max=2", "window_ms=1000")
VENUE_NOTIONAL = rule("venue-notional", "fill_notional_rate", "venue", "max=2500", "window_ms=1000")


def test_fills_before_their_new_are_to_its_venue() -> None:
    # Fills carry no venue: theirs is their order's (docs/events.md), known from the new.
    # 1 ms fill A 10 @100 (A unknown yet). 2 ms new A 30 to XNAS: the fill is to XNAS:
    #   fill_count 1, notional 1,000 (judged on the new: within 2 and 2,500).
    # 3 ms fill A 10 @100: 2, 2,000 (2 is not > 2). 4 ms bust of the first fill: it is
    #   taken back at XNAS too: 1, 1,000. 5 ms fill A 10 @101: 2, 2,010.
    # 6 ms fill B 5 @100 (B unknown yet). 7 ms new B 5 to XNAS: B's fill is to XNAS:
    #   3 > 2, venue:XNAS halts at 7 ms with value 3 (notional 2,510 > 2,500 too, the
    #   same scope: no second transition).
    # (Before the fix the fills before their news never counted at XNAS, and the bust
    # took nothing back there: 1, 1, 2 and no halt.)
    events = [
        fill("A", 1 * MS, qty=10, price=100.0, exec_id="e1"),
        new("A", 2 * MS, qty=30, venue="XNAS"),
        fill("A", 3 * MS, qty=10, price=100.0, exec_id="e2"),
        bust("A", "e1", 4 * MS),
        fill("A", 5 * MS, qty=10, price=101.0, exec_id="e3"),
        fill("B", 6 * MS, qty=5, price=100.0, exec_id="e4"),
        new("B", 7 * MS, qty=5, venue="XNAS"),
    ]
    engine, ref, out, _ = run(events, VENUE_FILLS, VENUE_NOTIONAL)
    assert [(t.scope, t.rule, t.value, t.ts - T0) for t in out] == [
        ("venue:XNAS", "venue-fills", 3.0, 7 * MS)
    ]
    assert highs(engine) == {"venue-fills": 3.0, "venue-notional": 2510.0}
    assert (ref.peaks["venue-fills"][1], ref.peaks["venue-notional"][1]) == (3.0, 2510.0)


def test_a_replace_before_its_new_counts_at_its_venue() -> None:
    # replace A (1 ms, naming no venue: its order's), new A to XNAS (2 ms). message_rate
    # at the venue (1 s, max 1): at new A the window holds the replace and the new, 2 > 1,
    # venue:XNAS halts at 2 ms with value 2. (Before the fix: 1, no halt.)
    msgs = rule("venue-msgs", "message_rate", "venue", "max=1", "window_ms=1000")
    events = [replace("A", 1 * MS, qty=20), new("A", 2 * MS, venue="XNAS")]
    engine, ref, out, _ = run(events, msgs)
    assert [(t.scope, t.value, t.ts - T0) for t in out] == [("venue:XNAS", 2.0, 2 * MS)]
    assert highs(engine) == {"venue-msgs": 2.0}
    assert ref.peaks["venue-msgs"][1] == 2.0
