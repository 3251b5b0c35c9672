"""The order lifecycle as FIX really produces it: confirmed replaces that race their
fills, corrections that complete an order, and the numbers that depend on it (working
orders, open and potential notional, the orders named for cancel on halt).

Every expected value is derived by hand in the comments from docs/events.md (Order
lifecycle) and docs/limits.md (Working orders), never from the code under test. Each
scenario runs the numba kernel (one event per batch) and the plain-Python reference model.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.ingest.cancels import CancelTracker
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.state.reference import ReferenceModel
from riskguard.testing import FakeClock
from tests.builders import (
    MS,
    T0,
    cancel,
    correct,
    fill,
    new,
    replace,
    rules_toml,
    run_kernel_and_reference,
)


def rule(name: str, metric: str, bound: str, action: str = "halt") -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="strategy"\n{bound}\naction="{action}"'


WORKING = (
    rule("open", "open_orders", "max=1000", "alert"),
    rule("open-notional", "open_order_notional", "max=1e12", "alert"),
    rule("potential", "potential_gross_notional", "max=1e12", "alert"),
)


def run(events: list[wire.Event], *rules: str) -> tuple[Engine, ReferenceModel, list[Transition]]:
    """The kernel, one event per batch (then settled), and the reference model."""
    return run_kernel_and_reference(events, rules_toml(*(rules or WORKING)))


def working(engine: Engine, ref: ReferenceModel, scope: str = "strategy:S") -> dict[str, Any]:
    """The working-order numbers of ``scope``, after checking the model says the same."""
    values = engine.scope_values(scope)
    got = {
        "open_orders": values["open_orders"],
        "open_order_notional": values["open_order_notional"],
        "potential_gross_notional": values["potential_gross_notional"],
        "named": [(w.order_id, w.open_qty) for w in engine.working_orders(scope)],
    }
    for metric in ("open_orders", "open_order_notional", "potential_gross_notional"):
        assert ref._stateful(metric, scope) == got[metric], metric
    return got


# --- a confirmed replace that arrives after the fills it raced -------------------------


def test_a_replace_confirmed_after_the_fills_that_completed_its_order_reopens_it() -> None:
    """Buy 100 at 10; the venue confirms a replace to 150 while the order fills 60 and
    40; the drop copy's fills reach riskguard before the order feed's replace ack.

    At the venue: qty 150, filled 100, 50 left working (FIX OrderQty is the new total,
    fills included: docs/events.md). After the fills alone riskguard had the order
    filled (100 of 100): closed. The replace ack says it works: 150 - 100 = 50 at 10.
      open_orders 1; open_order_notional 50 x 10 = 500;
      potential_gross_notional |100 + 50| x 10 = 1,500 (the position of 100 is valued at
      its trade price 10; a buy of 50 at 10 adds 500).
    It is named for cancel on halt with 50 open."""
    engine, ref, _ = run(
        [
            new("O1", 0, qty=100, price=10.0),
            fill("O1", 1 * MS, qty=60, price=10.0),
            fill("O1", 2 * MS, qty=40, price=10.0),
            replace("O1", 3 * MS, qty=150, price=10.0),
        ]
    )
    assert working(engine, ref) == {
        "open_orders": 1.0,
        "open_order_notional": 500.0,
        "potential_gross_notional": 1500.0,
        "named": [("O1", 50.0)],
    }
    book = engine.book("strategy:S", "X")
    assert book is not None and (book["buy_work"], book["sell_work"]) == (50.0, 0.0)


def test_the_reopened_order_halts_on_its_potential_and_closes_on_its_last_fill() -> None:
    """As above, under a potential_gross_notional halt at 1,200: the fills alone give a
    potential of 1,000 (no breach); the replace ack brings it to 1,500 > 1,200: HALTED,
    on the replace. The last 50 then fill at 10: filled 150 of 150, closed; potential
    = gross = 150 x 10 = 1,500; open_orders 0."""
    engine, ref, out = run(
        [
            new("O1", 0, qty=100, price=10.0),
            fill("O1", 1 * MS, qty=60, price=10.0),
            fill("O1", 2 * MS, qty=40, price=10.0),
            replace("O1", 3 * MS, qty=150, price=10.0),
            fill("O1", 4 * MS, qty=50, price=10.0),
        ],
        rule("open", "open_orders", "max=1000", "alert"),
        rule("potential", "potential_gross_notional", "max=1200"),
    )
    decided = [(t.scope, t.to, t.rule, t.value, t.ts) for t in out]
    assert decided == [("strategy:S", "HALTED", "potential", 1500.0, new("O1", 3 * MS).ts)]
    assert [(t.scope, t.to, t.rule, t.value, t.ts) for t in ref.transitions] == decided
    assert working(engine, ref) == {
        "open_orders": 0.0,
        "open_order_notional": 0.0,
        "potential_gross_notional": 1500.0,
        "named": [],
    }


def test_a_replace_after_a_cancel_or_down_to_the_fills_does_not_reopen() -> None:
    """O1: buy 100, 40 filled, cancel confirmed, then a replace ack to 150 that raced the
    cancel: the order is cancelled at the venue (a cancel is final): nothing works.
    O2: buy 100, 100 filled, then a replace ack to 100 (a price change the fills
    overtook): 100 of 100 filled, still closed. open_orders 0, nothing named."""
    engine, ref, _ = run(
        [
            new("O1", 0, qty=100, price=10.0),
            fill("O1", 1 * MS, qty=40, price=10.0),
            cancel("O1", 2 * MS),
            replace("O1", 3 * MS, qty=150, price=10.0),
            new("O2", 4 * MS, qty=100, price=10.0),
            fill("O2", 5 * MS, qty=100, price=10.0),
            replace("O2", 6 * MS, qty=100, price=10.5),
        ]
    )
    assert working(engine, ref) == {
        "open_orders": 0.0,
        "open_order_notional": 0.0,
        "potential_gross_notional": 1400.0,  # 140 held x 10, nothing working
        "named": [],
    }


# --- a correction that completes its order -------------------------------------------


def test_a_correction_up_to_the_order_quantity_closes_the_order() -> None:
    """Buy 100 at 10, trade E1 of 60, corrected to 100 (FIX ExecType G: the execution was
    100, not 60). The order's fills are now 100 of 100: filled, no longer working.
      open_orders 0 (it was 1 before the fix, with 0 open quantity); nothing named for
      cancel on halt (a cancel request for a done order is refused by the venue, and
      riskguard would page cancel-incomplete for an order that never closes);
      position 100; gross 1,000; open_order_notional 0."""
    engine, ref, _ = run(
        [
            new("O1", 0, qty=100, price=10.0),
            fill("O1", 1 * MS, qty=60, price=10.0, exec_id="E1"),
            correct("O1", "E1", 2 * MS, qty=100, price=10.0),
        ]
    )
    assert working(engine, ref) == {
        "open_orders": 0.0,
        "open_order_notional": 0.0,
        "potential_gross_notional": 1000.0,
        "named": [],
    }
    assert engine.position("strategy:S", "X") == 100.0


# --- any arrival order of one order's fills, replaces and corrections ----------------


@st.composite
def order_histories(draw: st.DrawFn) -> tuple[list[wire.Event], float, float, bool]:
    """One buy order at 10: its new, fills, confirmed replaces (times ascending, each a
    new total) and corrections that never lower a fill, possibly a cancel, arriving in
    any order (the new anywhere). Returns (events, final total, total filled, cancelled)."""
    qty = float(draw(st.integers(1, 200)))
    fills = draw(st.lists(st.integers(1, 80), min_size=0, max_size=4))
    totals = draw(st.lists(st.integers(1, 300), min_size=0, max_size=3))
    ups = draw(st.lists(st.integers(0, 40), min_size=len(fills), max_size=len(fills)))
    corrected = draw(st.lists(st.booleans(), min_size=len(fills), max_size=len(fills)))
    cancelled = draw(st.booleans())
    rest: list[list[wire.Event]] = []
    filled = 0.0
    for i, (q, up, corr) in enumerate(zip(fills, ups, corrected, strict=True)):
        chain: list[wire.Event] = [fill("O1", (10 + i) * MS, qty=q, price=10.0, exec_id=f"E{i}")]
        if corr:
            chain.append(correct("O1", f"E{i}", (20 + i) * MS, qty=q + up, price=10.0))
        filled += q + up if corr else q
        rest.append(chain)
    if totals:
        rest.append([replace("O1", (30 + i) * MS, qty=t, price=10.0) for i, t in enumerate(totals)])
    if cancelled:
        rest.append([cancel("O1", 40 * MS)])
    # interleave the chains (each keeps its own order), the new anywhere
    events: list[wire.Event] = []
    while any(rest):
        chain = draw(st.sampled_from([c for c in rest if c]))
        events.append(chain.pop(0))
    events.insert(draw(st.integers(0, len(events))), new("O1", 0, qty=qty, price=10.0))
    return events, float(totals[-1]) if totals else qty, filled, cancelled


@settings(max_examples=150, deadline=None)
@given(order_histories())
def test_an_order_works_what_its_latest_total_leaves_whatever_the_arrival_order(
    history: tuple[list[wire.Event], float, float, bool],
) -> None:
    """At the venue the order works its latest total less everything filled, unless it
    was cancelled (FIX: OrderQty is the total, LeavesQty = OrderQty - CumQty): however
    its reports arrive, that is what riskguard counts at the end."""
    events, total, filled, cancelled = history
    engine, ref, _ = run(events)
    left = 0.0 if cancelled else max(0.0, total - filled)
    assert working(engine, ref) == {
        "open_orders": 1.0 if left > 0 else 0.0,
        "open_order_notional": left * 10.0,
        "potential_gross_notional": (filled + left) * 10.0,
        "named": [("O1", left)] if left > 0 else [],
    }


# --- what the venue does on its own is not the firm's order message ------------------

RATES = (
    rule("messages", "message_rate", "max=3\nwindow_ms=1000"),
    rule("cancels", "cancel_ratio", "max=0.5\nwindow_ms=1000\nmin_orders=2"),
    rule("open", "open_orders", "max=1000", "alert"),
)


def test_day_orders_expiring_at_the_close_halt_nothing() -> None:
    """A market maker's three DAY bids rest (sent 4 s before: out of the window); at the
    close it sends two market-on-close orders (news at 0 and 1 ms) and the venue expires
    the three bids (FIX ExecType C) at 2-4 ms: `cancel` with "unsolicited": true.
      message_rate (max 3): the firm's messages in the window are the two news: 2.
      cancel_ratio (max 0.5, min_orders 2): the firm cancelled nothing: 0 / 2 = 0.
    Counted as the firm's, the expiries made 5 messages and a ratio of 3 / 2 = 1.5:
    two false halts, latched to the next morning. open_orders: 3 + 2 - 3 = 2 working."""
    day = [new(f"D{i}", -4000 * MS + i, qty=100, price=9.0 + i / 100) for i in range(3)]
    close = [new("M1", 0, qty=50, price=None), new("M2", 1 * MS, qty=60, price=None)]
    expiries = [cancel(f"D{i}", (2 + i) * MS, unsolicited=True) for i in range(3)]
    engine, ref, out = run(day + close + expiries, *RATES)
    assert [t for t in out if t.kind != "resolve"] == []
    assert ref.transitions == []
    by_rule = {r.name: r for r in ref.rules}
    assert ref._window("msg", by_rule["messages"], "strategy:S", None) == 2.0
    assert {p.rule.name: p.high for p in engine.peaks()}["cancels"] == 0.0
    assert engine.scope_values("strategy:S")["open_orders"] == 2.0


def test_the_firms_own_cancels_and_replaces_still_count() -> None:
    """Against that: IOC order I1 misses and the venue cancels it (unsolicited, 1 ms);
    the firm sends O1 (2 ms), replaces it (3 ms: one message, no new, no cancel; the
    venue then restates it, 4 ms: unsolicited, no message) and cancels it (5 ms).
      message_rate: I1, O1, the replace, the cancel: 4 > 3: HALTED at 5 ms, value 4.
      cancel_ratio: 1 firm cancel / 2 news = 0.5, within 0.5 (not above): no breach."""
    engine, ref, out = run(
        [
            new("I1", 0, qty=100, price=10.0),
            cancel("I1", 1 * MS, unsolicited=True),
            new("O1", 2 * MS, qty=100, price=10.0),
            replace("O1", 3 * MS, qty=100, price=10.1),
            replace("O1", 4 * MS, qty=90, price=10.1, unsolicited=True),
            cancel("O1", 5 * MS),
        ],
        *RATES,
    )
    decided = [(t.scope, t.to, t.rule, t.value, t.ts) for t in out if t.kind != "resolve"]
    assert decided == [("strategy:S", "HALTED", "messages", 4.0, new("x", 5 * MS).ts)]
    assert [(t.scope, t.to, t.rule, t.value, t.ts) for t in ref.transitions] == decided
    peaks = {p.rule.name: p.high for p in engine.peaks()}
    assert peaks["cancels"] == 0.5


def test_an_unsolicited_flag_must_be_a_boolean() -> None:
    """v1.3: `unsolicited` is a JSON boolean; 1 or "true" is wrong_type, never coerced.
    Absent, the event encodes as before (v1.2 producers and readers are unaffected)."""
    base = b'"ts":1,"order_id":"O","account":"A","strategy":"S","symbol":"X"'
    for value in (b"1", b'"true"'):
        bad = wire.decode(b'{"type":"cancel",' + base + b',"unsolicited":' + value + b"}")
        assert isinstance(bad, wire.BadEvent) and bad.reason == "wrong_type"
    plain = b'{"type":"cancel",' + base + b"}"
    assert wire.encode(wire.decode(plain)) == plain  # type: ignore[arg-type]
    flagged = wire.decode(b'{"type":"cancel",' + base + b',"unsolicited":true}')
    assert isinstance(flagged, wire.CancelOrder) and flagged.unsolicited


@st.composite
def venue_doings(draw: st.DrawFn) -> list[tuple[wire.Event, bool]]:
    """Buy orders, each with replaces and maybe a cancel, some of them the venue's own
    (unsolicited), the new of each anywhere among its order's events (a cancel or
    replace may come before it): (event, whether it is the firm's order message)."""
    events: list[tuple[wire.Event, bool]] = []
    t = 0
    for k in range(draw(st.integers(1, 4))):
        oid = f"O{k}"
        chain: list[tuple[wire.Event, bool]] = []
        for j in range(draw(st.integers(0, 2))):
            u = draw(st.booleans())
            t += 1
            chain.append((replace(oid, t * MS, qty=50 - j, price=10.0, unsolicited=u), not u))
        if draw(st.booleans()):
            u = draw(st.booleans())
            t += 1
            chain.append((cancel(oid, t * MS, unsolicited=u), not u))
        t += 1
        chain.insert(draw(st.integers(0, len(chain))), (new(oid, t * MS, qty=60), True))
        events += chain
    return events


@settings(max_examples=100, deadline=None)
@given(venue_doings())
def test_windows_count_exactly_the_firms_messages_and_cancels(
    stream: list[tuple[wire.Event, bool]],
) -> None:
    """Whatever the venue did on its own changes the orders as the firm's own would
    (open orders, working notional), and counts in no message or cancel window: in one
    window of a second, at the firm and in a window limited to buys (where a cancel that
    came before its new counts from the new), message_rate is the firm's news, replaces
    and cancels, and the cancel count is the firm's cancels."""
    firms = [ev for ev, own in stream if own]
    n_msg = len(firms)
    n_cxl = sum(isinstance(ev, wire.CancelOrder) for ev in firms)
    rules = (
        'name="m"\nmetric="message_rate"\nscope="firm"\nmax=1000\nwindow_ms=1000\naction="alert"',
        'name="mb"\nmetric="message_rate"\nscope="strategy"\nmatch={side="buy"}\nmax=1000\n'
        'window_ms=1000\naction="alert"',
        'name="c"\nmetric="cancel_ratio"\nscope="firm"\nmax=1000\nwindow_ms=1000\naction="alert"',
        *WORKING,
    )
    events = [ev for ev, _ in stream]
    engine, ref, _ = run(events, *rules)
    requested = [
        msgspec.structs.replace(ev, unsolicited=False)
        if isinstance(ev, wire.CancelOrder | wire.ReplaceOrder)
        else ev
        for ev in events
    ]
    same, _, _ = run(requested, *rules)
    assert working(engine, ref) == working(same, ref)
    by_rule = {r.name: r for r in ref.rules}
    assert ref._window("msg", by_rule["m"], "firm", None) == n_msg
    assert ref._window("msg", by_rule["mb"], "strategy:S", None) == n_msg
    assert ref._window("cxl", by_rule["c"], "firm", None) == n_cxl
    high = {p.rule.name: p.high for p in engine.peaks()}
    assert high["m"] == n_msg  # the windows only grow within the second
    assert high["mb"] == n_msg
    assert high["c"] == (ref.peaks["c"][1] if ref.peaks["c"][0] else None)


# --- a replace names its order's account, strategy, symbol and side -------------------


def test_a_replace_of_another_order_reusing_a_working_id_is_bad() -> None:
    """Yesterday's GTC buy O7 (account A, strategy S) of 100 X at 10 still works. Today a
    second gateway, strategy T, reuses the id: its new (sell 50 Y) is bad
    (order_id_reused, docs/events.md), and so is its replace (sell 40 Y at 20): a FIX
    replace never changes the side, symbol or owner of an order, so it is not O7's.
    O7 still works 100 at 10: S's open_order_notional 1,000 (not 40 x 20 = 800, the
    second order's values on O7), potential 1,000; nothing counted for T."""
    other = {"strategy": "T", "symbol": "Y", "side": "sell"}
    engine = Engine(parse(rules_toml(*WORKING)), event_time=True)
    ref = ReferenceModel(parse(rules_toml(*WORKING)))
    bad: list[str] = []
    for event in (
        new("O7", 0, qty=100, price=10.0),
        new("O7", 1 * MS, qty=50, price=20.0, **other),
        replace("O7", 2 * MS, qty=40, price=20.0, **other),
    ):
        bad += [b.reason for b in engine.apply([event]).bad]
        ref.apply_one(event)
    assert bad == ["order_id_reused", "order_id_reused"] == ref.bad
    assert working(engine, ref) == {
        "open_orders": 1.0,
        "open_order_notional": 1000.0,
        "potential_gross_notional": 1000.0,
        "named": [("O7", 100.0)],
    }
    assert working(engine, ref, "strategy:T")["open_orders"] == 0.0


def test_a_replace_of_another_order_reusing_a_closed_id_is_bad() -> None:
    """O1, a buy of 100 X at 10 of strategy S, filled and closed (remembered for
    redeliveries). A replace of O1 to 140 naming strategy T, symbol Y and a sell (a
    replace never changes those) is not O1's: bad (order_id_reused), as its copy is. It
    does not reopen O1 with 40 to buy (a confirmed replace of O1 above its 100 filled
    would). The next order to reuse the id, T's sell of 50 Y at 20, opens in full:
    T's open_order_notional 1,000; S has nothing working."""
    other = {"strategy": "T", "symbol": "Y", "side": "sell"}
    stream = [
        new("O1", 0, qty=100, price=10.0),
        fill("O1", 1 * MS, qty=100, price=10.0),
        replace("O1", 2 * MS, qty=140, price=21.0, **other),
        replace("O1", 3 * MS, qty=140, price=21.0, **other),
        new("O1", 4 * MS, qty=50, price=20.0, **other),
    ]
    engine, ref, _ = run(stream)
    assert ref.bad == ["order_id_reused", "order_id_reused"]
    assert working(engine, ref, "strategy:T") == {
        "open_orders": 1.0,
        "open_order_notional": 1000.0,
        "potential_gross_notional": 1000.0,
        "named": [("O1", 50.0)],
    }
    assert working(engine, ref)["open_orders"] == 0.0


def test_an_order_a_replace_reopens_after_a_halt_is_named_for_cancel() -> None:
    """The account is halted (an operator, at 1,000 ms) with nothing working: O1's fills
    (60 + 40 of 100, a drop copy ahead) had completed it. The order feed's replace ack
    to 150 arrives after the halt: O1 works 50 at the venue. Nothing asked to cancel it:
    past the deadline riskguard pages cancel-incomplete naming O1 with 50 open, as for
    any order opened in a halted scope after the halt."""
    clock = FakeClock(T0 + 1000 * MS)
    limits = rules_toml(*WORKING).replace("version = 1", "version = 1\ncancel_deadline_ms = 1000")
    engine = Engine(parse(limits), clock=clock)
    tracker = CancelTracker(engine, Metrics(), clock)
    engine.apply(
        [
            new("O1", 0, qty=100, price=10.0),
            fill("O1", 1 * MS, qty=60, price=10.0),
            fill("O1", 2 * MS, qty=40, price=10.0),
        ]
    )
    tr = engine.killswitch.halt("account:A", "alice", "drill")
    assert tr is not None and tracker.request(tr)[0].orders == ()
    assert tracker.check() == []
    ack = [replace("O1", 1001 * MS, qty=150, price=10.0)]
    engine.apply(ack)
    assert tracker.check(ack) == []  # within the deadline
    clock.advance(ms=1000)
    (alert,) = tracker.check()
    assert alert.reason is not None
    assert "O1 (A/S X buy 50; opened after the halt of account:A)" in alert.reason
