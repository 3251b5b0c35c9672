"""Order flows hunted for wrong counts: orders seen in an unusual order, redelivered.

Every expected value is derived by hand in the comments from docs/events.md (Redelivery,
Order lifecycle, Clock skew) and docs/limits.md (Windows). Each scenario runs the numba
kernel (one event per batch) and the plain-Python reference model on the same events.
"""

from __future__ import annotations

from typing import Any

import pytest

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from tests.builders import MS, cancel, new, reject, rules_toml


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
