"""Windowed alerts and warnings re-arm on the clock tick: properties on random streams.

Streams of order events (new, cancel, reject, replace, fill) with clock ticks among them
run through the kernel and the reference model (they must agree, transition for
transition), then the flow stops and the clock ticks on every ``interval`` ms. A window
counts events from the bucket of their (corrected) time until 11 buckets of
``window_ms / 10`` later (docs/limits.md, Windows); no event is counted after the
engine's clock, so every window is empty from bucket ``clock // width + 11`` on. The
properties: no raised alert or warning of a windowed rule outlives that moment by more
than one tick interval (``cancel_ratio`` too: a window with no cancel reads 0); and a
tick only resolves: it never raises, pages or halts.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.state.codes import NBUCKETS, RING
from tests.builders import MS, T0, rules_toml
from tests.state.test_kernel_vs_reference import assert_same, run_both

RULES = [
    'name="rate"\nmetric="order_rate"\nscope="strategy"\nwindow_ms=30\nmax=2\nwarn_at=[0.5]\n'
    'action="alert"',
    'name="msgs"\nmetric="message_rate"\nscope="account"\nwindow_ms=50\nmax=3\n'
    'warn_at=[0.34, 0.67]\naction="halt"',
    'name="rej"\nmetric="reject_rate"\nscope="firm"\nwindow_ms=20\nmax=1\nrearm=0.5\n'
    'action="alert"',
    'name="cxl"\nmetric="cancel_ratio"\nscope="account"\nwindow_ms=40\nmax=0.5\n'
    'warn_at=[0.5]\naction="alert"',
    'name="filln"\nmetric="fill_notional_rate"\nscope="symbol"\nwindow_ms=25\nmax=500\n'
    'warn_at=[0.25, 0.5]\naction="alert"',
    'name="fills"\nmetric="fill_count"\nscope="venue"\nwindow_ms=35\nmax=2\nwarn_at=[0.5]\n'
    'action="reduce_only"',
    'name="dups"\nmetric="duplicate_orders"\nscope="strategy"\nwindow_ms=45\nmax=0\naction="alert"',
    'name="buys"\nmetric="order_rate"\nscope="account"\nmatch={side="buy", '
    'venue=["XNAS","ARCX"]}\nwindow_ms=60\nmax=1\nwarn_at=[0.9]\naction="alert"',
]
LIMITS = parse(rules_toml(*RULES))
STRATEGIES = {"S0": "A0", "S1": "A0", "S2": "A1"}


@st.composite
def streams(draw: Any) -> tuple[list[Any], int]:
    """(order events and ticks, the trailing tick interval in ns)."""
    out: list[Any] = []
    t = 0
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0, 1, 2, 5, 10, 40])) * MS
        ts = T0 + max(0, t + draw(st.sampled_from([0, 0, 0, -3 * MS, -30 * MS])))
        kind = draw(st.sampled_from(["new", "new", "new", "cancel", "reject", "replace", "fill",
                                     "tick"]))  # fmt: skip
        if kind == "tick":
            out.append(("tick", str(T0 + t)))
            continue
        strategy = draw(st.sampled_from(sorted(STRATEGIES)))
        keys = {
            "account": STRATEGIES[strategy],
            "strategy": strategy,
            "symbol": draw(st.sampled_from(["X0", "X1"])),
            "order_id": f"o{draw(st.integers(0, 5))}",
        }
        side = draw(st.sampled_from(["buy", "sell"]))
        qty = draw(st.sampled_from([1.0, 5.0, 10.0]))
        price = draw(st.sampled_from([10.0, 30.0]))
        venue = draw(st.sampled_from([None, "XNAS", "ARCX"]))
        if kind == "new":
            out.append(wire.NewOrder(ts=ts, side=side, qty=qty, price=price, venue=venue, **keys))
        elif kind == "cancel":
            out.append(wire.CancelOrder(ts=ts, **keys))
        elif kind == "reject":
            out.append(wire.RejectOrder(ts=ts, **keys))
        elif kind == "replace":
            out.append(wire.ReplaceOrder(ts=ts, side=side, qty=qty, price=price, **keys))
        else:
            ex = f"e{len(out)}"
            out.append(wire.Fill(ts=ts, exec_id=ex, side=side, qty=qty, price=price, venue=venue,
                                 **keys))  # fmt: skip
    return out, draw(st.sampled_from([1, 7, 10, 50, 100])) * MS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_no_windowed_alert_outlives_its_window_by_more_than_one_tick(
    case: tuple[list[Any], int],
) -> None:
    stream, interval = case
    engine, ref, seen, total = run_both(stream, [], LIMITS)
    assert_same(engine, ref, seen, total)
    clock = engine.last_event_ns
    rows = engine.rulebook.rules.rows
    empty_at = {}  # row -> the first time its windows are all empty
    for r in range(rows.shape[0]):
        rule = engine.rulebook.row_rule[r]
        assert rule.window_ms is not None
        width = -(-rule.window_ms * MS // NBUCKETS)
        empty_at[r] = (clock // width + RING) * width
    now, last = clock, max(empty_at.values())
    while now < last:
        now += interval
        ticked: list[Transition] = engine.tick(now)
        before = len(ref.transitions)
        ref.tick(now)
        assert [(t.scope, t.rule, t.kind, t.ts, t.level) for t in ticked] == [
            (t.scope, t.rule, t.kind, t.ts, t.level) for t in ref.transitions[before:]
        ]
        assert all(t.kind == "resolve" for t in ticked), ticked  # a tick only re-arms
        for r, at in empty_at.items():
            rule = engine.rulebook.row_rule[r]
            if now >= at:
                assert engine.rule_peaks["edges"][r] == 0, (rule.name, now - at)
    # one tick past the last window: no windowed edge stands (an empty cancel_ratio
    # window reads 0, session 21)
    assert not ref.edges
