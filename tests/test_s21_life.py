"""The order lifecycle as FIX really produces it: confirmed replaces that race their
fills, corrections that complete an order, and the numbers that depend on it (working
orders, open and potential notional, the orders named for cancel on halt).

Every expected value is derived by hand in the comments from docs/events.md (Order
lifecycle) and docs/limits.md (Working orders), never from the code under test. Each
scenario runs the numba kernel (one event per batch) and the plain-Python reference model.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from tests.builders import MS, cancel, correct, fill, new, replace, rules_toml


def rule(name: str, metric: str, bound: str, action: str = "halt") -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="strategy"\n{bound}\naction="{action}"'


WORKING = (
    rule("open", "open_orders", "max=1000", "alert"),
    rule("open-notional", "open_order_notional", "max=1e12", "alert"),
    rule("potential", "potential_gross_notional", "max=1e12", "alert"),
)


def run(events: list[wire.Event], *rules: str) -> tuple[Engine, ReferenceModel, list[Transition]]:
    """The kernel, one event per batch (then settled), and the reference model."""
    lim = parse(rules_toml(*(rules or WORKING)))
    engine = Engine(lim, event_time=True)
    ref = ReferenceModel(lim)
    out: list[Transition] = []
    for event in events:
        out += engine.apply([event]).transitions
        ref.apply_one(event)
    out += engine.settle()
    ref.settle()
    return engine, ref, out


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
