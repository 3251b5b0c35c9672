"""Trading flows hunted for wrong numbers and wrong decisions (parents and children,
replace chains, warnings at their boundaries), every expected value derived by hand.

Each scenario runs the numba kernel (one event per batch) and the plain-Python reference
model on the same events; the comments derive each value from docs/limits.md and
docs/events.md, never from the code under test.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.evidence import evidence
from riskguard.killswitch import Transition
from riskguard.state.reference import ReferenceModel
from riskguard.vocabulary import price_deviation
from tests.builders import (
    MS,
    bust,
    correct,
    fill,
    mark,
    new,
    parent,
    rules_toml,
    run_kernel_and_reference,
)


def rule(
    name: str, metric: str, scope: str, bound: str, extra: str = "", action: str = "halt"
) -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="{scope}"\n{bound}\naction="{action}"\n{extra}'


def run(events: list[wire.Event], *rules: str) -> tuple[Engine, ReferenceModel, list[Transition]]:
    """The kernel, one event per batch (then settled), and the reference model:
    (engine, model, the kernel's transitions)."""
    return run_kernel_and_reference(events, rules_toml(*rules))


def highs(engine: Engine) -> dict[str, Any]:
    return {p.rule.name: p.high for p in engine.peaks()}


def ref_highs(ref: ReferenceModel) -> dict[str, Any]:
    return {name: peak[1] for name, peak in ref.peaks.items() if peak[0]}


OVERFILL = rule("overfill", "parent_overfill_ratio", "strategy", "max=1.0")

# --- parents: a child's trade that came before its new ----------------------------------


def early_child() -> list[wire.Event]:
    """Parent P of 100; child C1 (60) traded E1 before its new (a drop copy ahead of the
    order feed), the new naming P; child C2 (40) fills E2 after its new."""
    return [
        parent("P", 100),
        fill("C1", 1 * MS, qty=60, exec_id="E1"),
        new("C1", 2 * MS, qty=60, parent_id="P"),
        new("C2", 3 * MS, qty=40, parent_id="P"),
        fill("C2", 4 * MS, qty=40, exec_id="E2"),
    ]


def test_bust_of_a_child_trade_before_its_new_comes_off_the_parent() -> None:
    # E1 (60) counts toward P when C1's new arrives (docs/limits.md, Parents and children):
    # 60 + 40 = 100 of 100, ratio 1.0. The bust of E1 takes it back off the parent:
    # 40 / 100 = 0.4. The algo re-sends the 60 as C3 and it fills: 40 + 60 = 100, ratio
    # 1.0 exactly: never above the max of 1.0, nothing halts. (It used to keep E1's 60 on
    # the parent: 160 / 100 = 1.6 halted the strategy for a fully filled parent.)
    events = [
        *early_child(),
        bust("C1", "E1", 5 * MS),
        new("C3", 6 * MS, qty=60, parent_id="P"),
        fill("C3", 7 * MS, qty=60, exec_id="E3"),
    ]
    engine, ref, out = run(events, OVERFILL)
    assert out == [] and ref.transitions == []
    assert highs(engine)["overfill"] == 1.0 == ref_highs(ref)["overfill"]
    assert ref.parents["P"] == [100.0, 100.0]


def test_bust_of_a_child_trade_before_its_new_is_judged_on_the_parent() -> None:
    # A warning at 50 % of the 1.0 max is raised when C1's new credits E1 to P: 60 / 100
    # = 0.6. The bust of E1 leaves 40 / 100 = 0.4, below the level by more than the default re-arm
    # of 0.05: the bust is judged on P (5 evaluations: the parent at 0, C1's new at 0.6,
    # C2's at 0.6, E2 at 1.0, the bust at 0.4) and the warning resolves, as for a bust
    # of a trade after its new.
    warn = rule("overfill", "parent_overfill_ratio", "strategy", "max=1.0", "warn_at=[0.5]")
    engine, ref, out = run([*early_child(), bust("C1", "E1", 5 * MS)], warn)
    (peak,) = engine.peaks()
    assert (peak.evaluations, peak.low, peak.high) == (5, 0.0, 1.0)
    expected = [("alert", 0.6, 0.5), ("resolve", 0.4, 0.5)]
    assert [(t.kind, t.value, t.level) for t in out] == expected
    assert [(t.kind, t.value, t.level) for t in ref.transitions] == expected


def test_correction_of_a_child_trade_before_its_new_replaces_it_on_the_parent() -> None:
    # E1 corrected from 60 to 90 (the venue's print was wrong): P's fills are
    # 90 + 40 = 130 of 100, ratio 1.3: a real overfill, and the strategy halts on the
    # correction with value 1.3. (It used to leave E1's 60 on the parent: ratio 1.0.)
    events = [*early_child(), correct("C1", "E1", 5 * MS, qty=90, price=100.0)]
    _, ref, out = run(events, OVERFILL)
    assert [(t.scope, t.to, t.value) for t in out] == [("strategy:S", "HALTED", 1.3)]
    assert [(t.scope, t.to, t.value) for t in ref.transitions] == [("strategy:S", "HALTED", 1.3)]
    assert ref.parents["P"] == [100.0, 130.0]


def test_a_child_whose_trade_came_first_overfills_the_parent_at_its_new() -> None:
    # P of 100: child A (100) fills it, 100 / 100 = 1.0 (no breach: the max is 1.0).
    # Child B's trade of 100 reaches riskguard before B's new (drop copy ahead of the
    # order feed): it names no parent, so it is P's only from B's new, which makes P
    # 200 / 100 = 2.0 (docs/limits.md, Parents and children). The new is judged: the
    # strategy halts at B's new with value 2.0. (It was never judged: no further fill of
    # P came, and the 2x overfill never halted anything.)
    events = [
        parent("P", 100),
        new("A", 1 * MS, qty=100, parent_id="P"),
        fill("A", 2 * MS, qty=100, exec_id="EA"),
        fill("B", 3 * MS, qty=100, exec_id="EB"),
        new("B", 4 * MS, qty=100, parent_id="P"),
    ]
    engine, ref, out = run(events, OVERFILL)
    expected = [("strategy:S", "HALTED", 2.0, events[-1].ts)]
    assert [(t.scope, t.to, t.value, t.ts) for t in out] == expected
    assert [(t.scope, t.to, t.value, t.ts) for t in ref.transitions] == expected
    assert highs(engine)["overfill"] == 2.0


@st.composite
def children(draw: Any) -> list[wire.Event]:
    """Children of parent P, each traded (some trades before its new, which names P),
    some trades busted or corrected before or after the new."""
    events: list[wire.Event] = [parent("P", 100)]
    t = 0
    for c in range(draw(st.integers(1, 3))):
        oid = f"C{c}"
        trades = draw(st.lists(st.sampled_from([10.0, 20.0, 0.1, 0.3]), min_size=1, max_size=3))
        before = draw(st.integers(0, len(trades)))  # how many trades come before the new
        steps: list[tuple[str, int, float]] = []
        for i, qty in enumerate(trades):
            steps.append(("trade", i, qty))
            fate = draw(st.sampled_from(["keep", "keep", "bust", "correct"]))
            if fate != "keep":
                late = ":late" if draw(st.booleans()) else ""  # after the new, or at once
                steps.append((fate + late, i, draw(st.sampled_from([5.0, 0.2]))))
        early = [s for s in steps if not s[0].endswith(":late")]
        cut = next(
            (k for k, s in enumerate(early) if s[0] == "trade" and s[1] == before), len(early)
        )
        ordered = [*early[:cut], ("new", -1, 0.0), *early[cut:]]
        ordered += [s for s in steps if s[0].endswith(":late")]
        for kind, i, qty in ordered:
            t += MS
            exec_id = f"{oid}-E{i}"
            if kind == "new":
                events.append(new(oid, t, qty=50, parent_id="P"))
            elif kind == "trade":
                events.append(fill(oid, t, qty=qty, exec_id=exec_id))
            elif kind.startswith("bust"):
                events.append(bust(oid, exec_id, t))
            else:
                events.append(correct(oid, exec_id, t, qty=qty, price=101.0))
    return events


@settings(max_examples=150, deadline=None)
@given(children())
def test_a_parent_holds_exactly_its_childrens_live_trades(events: list[wire.Event]) -> None:
    """Whatever the order of a child's trades, its new and the amendments of its trades,
    once every child's new (naming P) has arrived the parent's filled quantity is the sum
    of its children's trades as last amended, busts left out (decimal sums)."""
    live: dict[str, Decimal] = {}
    for ev in events:
        if isinstance(ev, wire.Fill):
            key = ev.exec_id if ev.exec_type == "trade" else ev.ref_exec_id
            assert key is not None
            if ev.exec_type == "bust":
                live.pop(key)
            else:
                live[key] = Decimal(str(ev.qty))
    expected = float(sum(live.values(), Decimal(0)))
    engine, ref, _ = run(events, OVERFILL)
    assert ref.parents["P"][1] == expected
    assert engine.store.state.parents[engine.keys.parents["P"]]["filled"] == expected


# --- warning levels at their exact boundary ---------------------------------------------


def test_a_position_exactly_at_a_warning_level_warns() -> None:
    # max = 3 BTC, warn_at = [0.8]: 80 % of 3 is 2.4. A position of exactly 2.4 BTC (two
    # fills of 1.2) is at the level, which it reaches (docs/limits.md, Warnings: 500,000
    # of 1,000,000 warns at 50 %). In floating point 2.4 / 3 = 0.7999999999999999 < 0.8:
    # no warning used to be raised. A sale of 0.15 leaves 2.25 = 75 %: still within the
    # 5 % re-arm (the level re-arms below 75 %), no resolve; a sale of 0.05 more, 2.2, is
    # 73.3 %: resolved.
    warn = rule("btc", "position_qty", "account", "max=3", "warn_at=[0.8]", action="alert")
    events = [
        fill("B1", 1 * MS, qty=1.2, price=30_000.0, exec_id="E1"),
        fill("B2", 2 * MS, qty=1.2, price=30_000.0, exec_id="E2"),
        fill("S1", 3 * MS, qty=0.15, price=30_000.0, exec_id="E3", side="sell"),
        fill("S2", 4 * MS, qty=0.05, price=30_000.0, exec_id="E4", side="sell"),
    ]
    _, ref, out = run(events, warn)
    expected = [("alert", 2.4, 0.8, events[1].ts), ("resolve", 2.2, 0.8, events[3].ts)]
    assert [(t.kind, t.value, t.level, t.ts) for t in out] == expected
    assert [(t.kind, t.value, t.level, t.ts) for t in ref.transitions] == expected


LEVELS = ["0.1", "0.2", "0.25", "0.4", "0.5", "0.55", "0.7", "0.75", "0.8", "0.9", "0.95"]
LIMITS = ["1.5", "3", "7", "12", "0.3", "2.5", "150", "3000000"]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(LIMITS), st.sampled_from(LEVELS), st.sampled_from(["0", "0.05", "0.1"]))
def test_a_value_at_a_decimal_level_reaches_it_and_one_just_below_does_not(
    limit: str, level: str, rearm: str
) -> None:
    """order_qty of an order of exactly level x limit (a decimal) raises the level's
    warning; one a millionth of the limit below does not; one exactly at level - rearm
    keeps it raised (the level re-arms only below that), and one a millionth of the
    limit below that re-arms it."""
    assume(Decimal(level) > Decimal(rearm))
    at = Decimal(limit) * Decimal(level)
    back = Decimal(limit) * (Decimal(level) - Decimal(rearm))
    tiny = Decimal(limit) * Decimal("1e-6")
    body = f"max={limit}\nwarn_at=[{level}]\nrearm={rearm}"
    warn = rule("fat", "order_qty", "account", body, action="alert")
    qtys = [at - tiny, at, back, back - tiny]
    events: list[wire.Event] = [
        new(f"O{i}", (i + 1) * MS, qty=float(q)) for i, q in enumerate(qtys)
    ]
    _, ref, out = run(events, warn)
    expected = [("alert", float(at)), ("resolve", float(back - tiny))]
    assert [(t.kind, t.value) for t in out] == expected
    assert [(t.kind, t.value) for t in ref.transitions] == expected


# --- duplicate orders: a market order is no limit order ---------------------------------


def test_a_market_order_is_no_duplicate_of_a_limit_at_minus_one() -> None:
    # Crude below zero: a limit buy of 10 CL at -1.0, then a market buy of 10 CL. They
    # differ in price (docs/limits.md: duplicates are identical in symbol, side, qty and
    # price; a market order has no price), so neither is a duplicate (0, no halt). A
    # second market buy of 10 a millisecond later is identical to the first: 1 > max 0,
    # the strategy halts on it. (A market order used to be remembered at price -1.0: the
    # first market buy already counted as the limit's duplicate and halted.)
    events = [
        new("L", 1 * MS, qty=10, price=-1.0, symbol="CL"),
        new("M1", 2 * MS, qty=10, price=None, symbol="CL"),
        new("M2", 3 * MS, qty=10, price=None, symbol="CL"),
    ]
    dup = rule("dup", "duplicate_orders", "strategy", "max=0", "window_ms=1000")
    _, ref, out = run(events, dup)
    expected = [("strategy:S", "HALTED", 1.0, events[2].ts)]
    assert [(t.scope, t.to, t.value, t.ts) for t in out] == expected
    assert [(t.scope, t.to, t.value, t.ts) for t in ref.transitions] == expected


def test_a_band_warns_on_its_lower_side_naming_the_min() -> None:
    # net_notional band min = -1,000,000, max = 1,000,000, warn_at = [0.8]. A sale of
    # 8,500 at 100 is a net short of -850,000: 85 % of the min (utilisation
    # -850,000 / -1,000,000 = 0.85), so the 80 % level is reached on the lower side and
    # the warning names limit -1,000,000: "-850,000 reached 80% of limit -1,000,000" (it
    # named the max: "-850,000 reached 80% of limit 1,000,000", which it is not). Buying
    # the 8,500 back (net 0) resolves it, naming the same bound; a buy of 8,500 more is
    # +850,000: 85 % of the max, a warning naming limit 1,000,000.
    band = rule(
        "net", "net_notional", "account", "min=-1000000\nmax=1000000", "warn_at=[0.8]", "alert"
    )
    events = [
        fill("S", 1 * MS, qty=8500, price=100.0, exec_id="E1", side="sell"),
        fill("B", 2 * MS, qty=8500, price=100.0, exec_id="E2"),
        fill("B", 3 * MS, qty=8500, price=100.0, exec_id="E3"),
    ]
    _, ref, out = run(events, band)
    assert [(t.kind, t.value, t.limit, t.level) for t in out] == [
        ("alert", -850_000.0, -1_000_000.0, 0.8),
        ("resolve", 0.0, -1_000_000.0, 0.8),
        ("alert", 850_000.0, 1_000_000.0, 0.8),
    ]
    assert evidence(out[0]) == "rule net: net_notional -850,000 reached 80% of limit -1,000,000"
    assert [(t.kind, t.value) for t in ref.transitions] == [
        ("alert", -850_000.0),
        ("resolve", 0.0),
        ("alert", 850_000.0),
    ]


# --- ratios of decimals at the limit they equal -----------------------------------------


def test_an_order_exactly_at_the_collar_is_within_it() -> None:
    # Reference 33.3 (a mark); a collar max = 0.05 (docs/limits.md: breach when value >
    # max). A buy at 34.965 is 33.3 x 1.05: |34.965 - 33.3| / 33.3 = 1.665 / 33.3 = 0.05
    # exactly, within the collar (in floats it was 0.05000000000000019: REDUCE_ONLY for an
    # order at the band's edge). A buy at 34.966 is 1.666 / 33.3 = 0.05003003...: beyond
    # it, the symbol goes REDUCE_ONLY with that value.
    collar = rule("collar", "price_deviation", "symbol", "max=0.05", action="reduce_only")
    events = [
        mark(33.3, 1 * MS),
        new("O1", 2 * MS, qty=10, price=34.965),
        new("O2", 3 * MS, qty=10, price=34.966),
    ]
    engine, ref, out = run(events, collar)
    expected = [
        ("symbol:X", "REDUCE_ONLY", float(Decimal("1.666") / Decimal("33.3")), events[2].ts)
    ]
    assert [(t.scope, t.to, t.value, t.ts) for t in out] == expected
    assert [(t.scope, t.to, t.value, t.ts) for t in ref.transitions] == expected
    lows = {p.rule.name: p.low for p in engine.peaks()}
    assert lows["collar"] == 0.05 == ref.peaks["collar"][2]


def test_a_parent_filled_exactly_to_its_tolerance_is_within_it() -> None:
    # A parent of 0.3 BTC may fill 5 % over (max = 1.05): children filling 0.2 + 0.115 =
    # 0.315 = 0.3 x 1.05, a ratio of exactly 1.05: no breach (0.315 / 0.3 in floats is
    # 1.0500000000000003 and halted the strategy). One satoshi more, 0.31500001, is
    # 1.0500000333...: the strategy halts with that value.
    tol = rule("overfill", "parent_overfill_ratio", "strategy", "max=1.05")
    events: list[wire.Event] = [
        parent("P", 0.3),
        new("C1", 1 * MS, qty=0.2, parent_id="P"),
        fill("C1", 2 * MS, qty=0.2, price=30_000.0, exec_id="E1"),
        new("C2", 3 * MS, qty=0.115, parent_id="P"),
        fill("C2", 4 * MS, qty=0.115, price=30_000.0, exec_id="E2"),
    ]
    _, ref, out = run(events, tol)
    assert out == [] and ref.transitions == []
    more = [*events, fill("C2", 5 * MS, qty=0.00000001, price=30_000.0, exec_id="E3")]
    _, ref, out = run(more, tol)
    expected = [("strategy:S", "HALTED", float(Decimal("0.31500001") / Decimal("0.3")))]
    assert [(t.scope, t.to, t.value) for t in out] == expected
    assert [(t.scope, t.to, t.value) for t in ref.transitions] == expected


PRICES = st.integers(1, 10**7).map(lambda n: Decimal(n) / 10**4)  # 0.0001 ... 1,000 (4 dp)
BANDS = st.sampled_from(["0.01", "0.02", "0.05", "0.1", "0.07", "0.15"])


@settings(max_examples=150, deadline=None)
@given(PRICES, BANDS, st.sampled_from([1, -1]))
def test_an_order_at_the_collar_edge_is_within_and_a_tick_beyond_is_not(
    ref_price: Decimal, band: str, sign: int
) -> None:
    """An order exactly ``band`` away from the reference (a decimal of up to 8 places) is
    within a collar of max = band; one 0.0001 further away breaches it, in the kernel,
    the reference model and the gate's pre-trade check alike."""
    edge = ref_price * (1 + sign * Decimal(band))
    beyond = edge + sign * Decimal("0.0001")
    collar = rule("collar", "price_deviation", "symbol", f"max={band}", action="reduce_only")
    events = [
        mark(float(ref_price), 1 * MS),
        new("O1", 2 * MS, qty=1, price=float(edge)),
        new("O2", 3 * MS, qty=1, price=float(beyond)),
    ]
    _, ref, out = run(events, collar)
    assert [(t.to, t.ts) for t in out] == [("REDUCE_ONLY", events[2].ts)]
    assert [(t.to, t.ts) for t in ref.transitions] == [("REDUCE_ONLY", events[2].ts)]
    assert price_deviation(float(edge), float(ref_price)) == float(band)
    assert price_deviation(float(beyond), float(ref_price)) > float(band)
