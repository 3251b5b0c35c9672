"""REDUCE_ONLY between the gate's pre-trade ``check()`` and the engine (session 22).

"Reduce only", as a risk officer and the exchanges' reduce-only flags mean it: an order
may only bring the scope's position toward zero, never open, grow or flip it. A replace
that lowers an order's quantity shrinks what may still fill: it can only take every
position back toward where it stood before the order, so refusing it under REDUCE_ONLY
only leaves the larger order working (docs/control-topic.md, The pre-trade check, step
3). Expected values are derived by hand; the gate is judged against the engine fed the
same orders (tests/test_s21_gate.py's :class:`World`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard.control import decision
from riskguard.control.view import Instant
from tests.builders import MS, cancel, fill, new, replace, rules_toml
from tests.test_s21_gate import UNWIND, VENUE_FAT, World, books, held

KEYS: dict[str, Any] = {"account": "A", "strategy": "S", "symbol": "X"}


def _amend(world: World, side: str, qty: float, filled: float, prior: float | None) -> Any:
    at = Instant(world.clock.now_ns, 0)
    return decision.check(
        world.view, 60_000, at, "A", "S", "X", side, qty, 99.0, filled=filled, prior_qty=prior
    )


def _long_100_and_working(side: str | None, qty: float = 0.0, part: float = 0.0) -> World:
    """S long 100 X (bought and filled), then a working ``side`` order ``w`` of ``qty``
    (``part`` of it filled; ``side`` None: none), sent while S was ACTIVE; then S put
    REDUCE_ONLY."""
    events = [new("b", 1 * MS, qty=100, **KEYS), fill("b", 2 * MS, qty=100, **KEYS)]
    if side is not None:
        events.append(new("w", 3 * MS, qty=qty, side=side, **KEYS))
    if part:
        events.append(fill("w", 4 * MS, qty=part, side=side, **KEYS))
    world = World(rules_toml(VENUE_FAT.replace("max=100", "max=1000")), events)
    world.engine.killswitch.halt("strategy:S", "ops", "drill", action="reduce_only")
    world.publish()
    return world


def test_lowering_an_increasing_order_under_reduce_only_passes() -> None:
    # S is long 100 X with a buy of 50 working when it goes REDUCE_ONLY: riskguard asks
    # to cancel the buy (it would increase 100 to 150). The router amends it down to 20
    # (FIX OrderQty 50 -> 20): the worst case falls from 150 to 120, toward the 100 S
    # held before the order. The gate refused it ("buy 20 would increase position 100
    # to 120"): the buy of 50 stayed working. Raising it to 70, or a price-only amend
    # (50 -> 50), keeps or grows what may fill: still refused.
    world = _long_100_and_working("buy", 50)
    cancels = world.engine.working_orders("strategy:S", increasing_only=True)
    assert [o.order_id for o in cancels] == ["w"]
    lowered = _amend(world, "buy", 20, 0.0, 50)
    assert (lowered.allowed, lowered.state, lowered.scope) == (True, "REDUCE_ONLY", "strategy:S")
    assert "lowers what may still fill from 50 to 20" in lowered.reason
    assert not _amend(world, "buy", 20, 0.0, None).allowed  # not said to be a replace
    assert not _amend(world, "buy", 70, 0.0, 50).allowed
    assert not _amend(world, "buy", 50, 0.0, 50).allowed
    # The engine moves nothing for the amend, and the order still has to be cancelled:
    # the reduce-only cancel request keeps tracking it (it is still working).
    assert world.send(replace("w", 10 * MS, qty=20, price=99.0, **KEYS)) == []
    still = world.engine.working_orders("strategy:S", increasing_only=True)
    assert [(o.order_id, o.open_qty) for o in still] == [("w", 20.0)]


def test_lowering_a_flipping_order_passes_and_counts_what_filled() -> None:
    # Long 100, a sell of 150 working (riskguard does not cancel it: it reduces first),
    # 30 of it filled: long 70, 120 still to sell (would flip to -50). Amending it to
    # 130 (100 left: 70 -> -30) lowers the flip: passes. Judged as a new order of what
    # is left it is refused as a flip; amending it to 160 raises it: refused.
    world = _long_100_and_working("sell", 150, part=30)
    assert world.view.position("strategy:S", "X") == 70.0
    verdict = _amend(world, "sell", 130, 30.0, 150)
    assert verdict.allowed and "lowers what may still fill from 120 to 100" in verdict.reason
    assert not _amend(world, "sell", 130, 30.0, None).allowed
    assert not _amend(world, "sell", 160, 30.0, 150).allowed
    assert _amend(world, "sell", 100, 30.0, 150).allowed  # 70 left: 70 -> 0, either way


def test_a_halted_scope_still_refuses_a_lowering_replace() -> None:
    # HALTED means cancel everything: an amend down keeps an order working; refused.
    world = _long_100_and_working("buy", 50)
    world.engine.killswitch.halt("strategy:S", "ops", "drill")
    world.publish()
    verdict = _amend(world, "buy", 20, 0.0, 50)
    assert (verdict.allowed, verdict.state) == (False, "HALTED")


@pytest.mark.parametrize("prior", [0.0, -1.0, float("nan"), float("inf")])
def test_a_prior_qty_that_is_no_quantity_is_a_caller_error(prior: float) -> None:
    world = _long_100_and_working("buy", 50)
    with pytest.raises(ValueError, match="prior_qty"):
        _amend(world, "buy", 20, 0.0, prior)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(books(), st.sampled_from(["1", "7.5", "60", "100", "200"]), st.sampled_from(["0", "0.3"]))
def test_a_replace_passes_reduce_only_iff_it_lowers_the_order_or_reduces(
    book: tuple[list[tuple[str, str, str, str, Decimal]], list[str], Any],
    prior: str,
    part: str,
) -> None:
    """Fills across accounts and strategies, a working order ``w`` of ``prior`` (``part``
    of it filled), one or two scopes put REDUCE_ONLY, then a replace of ``w`` to ``qty``:
    it passes iff, for each REDUCE_ONLY scope it belongs to, either it lowers the order
    (qty < prior) or what it may still fill, qty - part, is 0 or brings that scope's
    position toward 0 without crossing it (positions summed by hand in decimals), and the
    engine, judging the replace once sent, moves no scope. A scope HALTED (``w``'s own
    new may breach venue-fat) refuses it."""
    trades, scopes, ((route, symbol, side), qty, as_sum, venue) = book
    account, strategy = route
    keys: dict[str, Any] = {
        "account": account,
        "strategy": strategy,
        "symbol": symbol,
        "side": side,
    }
    events: list[Any] = []
    for i, (a, s, y, sd, q) in enumerate(trades):
        k: dict[str, Any] = {"account": a, "strategy": s, "symbol": y, "side": sd}
        events += [new(f"o{i}", 2 * i * MS, qty=float(q), **k)]
        events += [fill(f"o{i}", (2 * i + 1) * MS, qty=float(q), **k)]
    t = 2 * len(trades) * MS
    events.append(new("w", t, qty=float(prior), venue=venue, **keys))
    done = Decimal(part)
    if done:
        events.append(fill("w", t + MS, qty=float(done), **keys))
        trades = [*trades, (account, strategy, symbol, side, done)]
    world = World(UNWIND, events)
    for scope in scopes:
        world.engine.killswitch.halt(scope, "ops", "drill", action="reduce_only")
    world.publish()
    standing = world.engine.killswitch.standing()
    amount = 0.1 + 0.2 if as_sum and qty == "0.3" else float(qty)
    at = Instant(world.clock.now_ns, 0)
    verdict = decision.check(
        world.view, 60_000, at, account, strategy, symbol, side, amount, 100.0,
        venue=venue, filled=float(done), prior_qty=float(prior),
    )  # fmt: skip
    mine = {"firm", f"account:{account}", f"strategy:{strategy}", f"symbol:{symbol}"}
    if venue is not None:
        mine.add(f"venue:{venue}")
    left = max(Decimal(qty) - done, Decimal(0))
    d = left if side == "buy" else -left
    ok = True
    for scope, tr in standing.items():
        if scope in mine and tr.to == "HALTED":  # the order w itself breached venue-fat
            ok = False
        elif scope in mine and Decimal(qty) >= Decimal(prior) and left:
            p = held(trades, scope, symbol)
            ok = ok and p != 0 and p * d < 0 and abs(d) <= abs(p)
    sent = world.send(replace("w", t + 90 * MS, qty=amount, price=100.0, venue=venue, **keys))
    moved = [tr for tr in sent if not tr.is_alert]
    assert verdict.allowed == (ok and not moved), (verdict, standing, trades, sent)


# two reducing orders together past the position ----------------------------------------
def _check(world: World, side: str, qty: float, prior: float | None = None) -> Any:
    at = Instant(world.clock.now_ns, 0)
    return decision.check(world.view, 60_000, at, "A", "S", "X", side, qty, 99.0, prior_qty=prior)


def test_two_sales_that_together_would_flip_a_reduce_only_long_are_not_both_allowed() -> None:
    # S is long 100 X and REDUCE_ONLY. A sale of 80 reduces it to 20: allowed, sent. A
    # second sale of 80 reduces 100 to 20 on its own, but once both fill S is short 60:
    # a flip, which reduce-only forbids (an exchange's reduce-only orders together never
    # exceed the position). The gate allowed it (it judged each order on its own), and
    # the engine moves nothing when both fill: S ends short 60 and still REDUCE_ONLY,
    # with nothing said. Now riskguard publishes, with the position, what its working
    # orders may still fill (sell_leaves 80), and REDUCE_ONLY judges a sale against the
    # 20 left to reduce: 80 refused, 20 allowed (100 - 80 - 20 = 0), 20.5 refused.
    world = _long_100_and_working(None)
    first = new("s1", 10 * MS, qty=80, side="sell", **KEYS)
    assert _check(world, "sell", 80).allowed
    world.send(first)
    # Not yet published: what riskguard has not read it cannot count (docs/gate.md).
    assert _check(world, "sell", 80).allowed
    world.publish()
    assert world.view.leaves("strategy:S", "X") == (0.0, 80.0)
    second = _check(world, "sell", 80)
    assert (second.allowed, second.state, second.scope) == (False, "REDUCE_ONLY", "strategy:S")
    assert "would flip position 100 to -60 with the working sells of 80" in second.reason
    assert _check(world, "sell", 20).allowed
    assert not _check(world, "sell", 20.5).allowed
    # 50 of the first sale fill: long 50, 30 still to sell: 20 left to reduce.
    world.send(fill("s1", 11 * MS, qty=50, side="sell", **KEYS))
    world.publish()
    assert (world.view.position("strategy:S", "X"), world.view.leaves("strategy:S", "X")) == (
        50.0,
        (0.0, 30.0),
    )
    assert _check(world, "sell", 20).allowed and not _check(world, "sell", 21).allowed
    # Amending the first sale (OrderQty 80, 50 filled) to 100: 50 left, which would
    # close the long of 50 (its own 30 are not counted twice): allowed; to 101: refused.
    at = Instant(world.clock.now_ns, 0)
    amend = decision.check(
        world.view, 60_000, at, "A", "S", "X", "sell", 100, 99.0, filled=50, prior_qty=80
    )
    assert amend.allowed, amend.reason
    assert not decision.check(
        world.view, 60_000, at, "A", "S", "X", "sell", 101, 99.0, filled=50, prior_qty=80
    ).allowed
    # The first sale cancelled: 50 may be sold again.
    world.send(cancel("s1", 12 * MS, **KEYS))
    world.publish()
    assert world.view.leaves("strategy:S", "X") == (0.0, 0.0)
    assert _check(world, "sell", 50).allowed


def test_working_sales_count_in_decimals() -> None:
    # Long 0.3, a sale of 0.1 working: 0.2 left to reduce. A sale of 0.2 closes it (0.3 -
    # 0.1 is 0.19999999999999998 in floating point, which 0.2 would exceed); 0.2000001
    # does not.
    events = [new("b", 1 * MS, qty=0.3, **KEYS), fill("b", 2 * MS, qty=0.3, **KEYS)]
    events.append(new("s1", 3 * MS, qty=0.1, side="sell", **KEYS))
    world = World(rules_toml(VENUE_FAT), events)
    world.engine.killswitch.halt("strategy:S", "ops", "drill", action="reduce_only")
    world.publish()
    assert _check(world, "sell", 0.2).allowed
    assert not _check(world, "sell", 0.2000001).allowed


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    books(),
    st.lists(
        st.tuples(
            st.sampled_from([("A", "S"), ("B", "S"), ("B", "T")]),
            st.sampled_from(["X", "Y"]),
            st.sampled_from(["buy", "sell"]),
            st.sampled_from(["0.1", "1", "7.5", "40", "100"]),
            st.sampled_from(["0", "0.1"]),
        ),
        max_size=4,
    ),
)
def test_reduce_only_counts_the_working_orders_riskguard_published(
    book: tuple[list[tuple[str, str, str, str, Decimal]], list[str], Any],
    working: list[tuple[tuple[str, str], str, str, str, str]],
) -> None:
    """Fills, then orders left working (some partly filled), one or two scopes put
    REDUCE_ONLY, the positions published: an order passes iff, for each REDUCE_ONLY
    scope it belongs to, it and the scope's working orders on its side (what they may
    still fill, qty - filled, by hand in decimals) together bring that scope's position
    toward 0 or to 0, never past it, and the engine, judging it once sent, moves no
    scope (a scope HALTED by a working order's own breach refuses it)."""
    trades, scopes, ((route, symbol, side), qty, as_sum, venue) = book
    events: list[Any] = []
    for i, (a, s, y, sd, q) in enumerate(trades):
        k: dict[str, Any] = {"account": a, "strategy": s, "symbol": y, "side": sd}
        events += [new(f"o{i}", 2 * i * MS, qty=float(q), **k)]
        events += [fill(f"o{i}", (2 * i + 1) * MS, qty=float(q), **k)]
    t = 2 * len(trades) * MS
    rest: list[tuple[str, str, str, str, Decimal]] = []  # (account, strategy, y, side, left)
    for j, ((a, s), y, sd, q, part) in enumerate(working):
        k = {"account": a, "strategy": s, "symbol": y, "side": sd}
        events.append(new(f"w{j}", t + 2 * j * MS, qty=float(q), **k))
        done = min(Decimal(part), Decimal(q))
        if done:
            events.append(fill(f"w{j}", t + (2 * j + 1) * MS, qty=float(done), **k))
            trades = [*trades, (a, s, y, sd, done)]
        if Decimal(q) > done:
            rest.append((a, s, y, sd, Decimal(q) - done))
    world = World(UNWIND, events)
    for scope in scopes:
        world.engine.killswitch.halt(scope, "ops", "drill", action="reduce_only")
    world.publish()
    standing = world.engine.killswitch.standing()
    account, strategy = route
    amount = 0.1 + 0.2 if as_sum and qty == "0.3" else float(qty)
    at = Instant(world.clock.now_ns, 0)
    verdict = decision.check(
        world.view, 60_000, at, account, strategy, symbol, side, amount, 100.0, venue=venue
    )
    mine = {"firm", f"account:{account}", f"strategy:{strategy}", f"symbol:{symbol}"}
    if venue is not None:
        mine.add(f"venue:{venue}")
    d = Decimal(qty) if side == "buy" else -Decimal(qty)
    ok = True
    for scope, tr in standing.items():
        if scope not in mine:
            continue
        if tr.to == "HALTED":
            ok = False
            continue
        p = held(trades, scope, symbol)
        w = sum((left for left in _owned(rest, scope, symbol, side)), Decimal(0))
        ok = ok and p != 0 and p * d < 0 and abs(d) + w <= abs(p)
    keys: dict[str, Any] = {"account": account, "strategy": strategy, "symbol": symbol}
    sent = world.send(new("o", 100 * MS, qty=amount, price=100.0, venue=venue, side=side, **keys))
    moved = [tr for tr in sent if not tr.is_alert]
    assert verdict.allowed == (ok and not moved), (verdict, standing, trades, rest, sent)


def _owned(
    rest: list[tuple[str, str, str, str, Decimal]], scope: str, symbol: str, side: str
) -> list[Decimal]:
    """What the working ``side`` orders in ``symbol`` moving ``scope``'s position may
    still fill: the account's or strategy's own, the firm's for any other scope."""
    level, _, key = scope.partition(":")
    return [
        left
        for a, s, y, sd, left in rest
        if y == symbol and sd == side and {"account": a, "strategy": s}.get(level, key) == key
    ]
