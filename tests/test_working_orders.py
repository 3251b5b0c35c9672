"""Working orders from the engine's state: per scope, and the reduce-only selection."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from riskguard.engine import Engine
from riskguard.inspection import WorkingOrder
from riskguard.vocabulary import ScopeError
from tests.builders import MS, cancel, fill, new, reject, replace

Make = Callable[..., Engine]
QTY = 'name = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e9\naction = "halt"'


def ids(engine: Engine, scope: str, *, increasing_only: bool = False) -> set[str]:
    return {o.order_id for o in engine.working_orders(scope, increasing_only=increasing_only)}


@pytest.fixture
def book(engine_for: Make) -> Engine:
    """Working, partly filled, replaced and closed orders over two accounts, two
    strategies and two symbols."""
    e = engine_for(QTY)
    e.apply(
        [
            new("a1", 0, qty=10),  # A/S/X buy, working
            new("a2", 1, qty=10, side="sell", symbol="Y"),  # A/S/Y sell, partly filled
            fill("a2", 2, qty=4, side="sell", symbol="Y"),
            new("b1", 3, qty=7, account="B"),  # B/S/X: strategy S in a second account
            new("b2", 4, qty=5, account="B", strategy="T", symbol="Y"),
            new("c1", 5, qty=3),  # cancelled
            cancel("c1", 6),
            new("r1", 7, qty=3),  # rejected
            reject("r1", 8),
            new("f1", 9, qty=2),  # filled in full
            fill("f1", 10, qty=2),
            new("p1", 11, qty=10),  # replaced up to 25, 5 filled
            fill("p1", 12, qty=5),
            replace("p1", 13, qty=25),
        ]
    )
    return e


def test_each_scope_names_its_working_orders_only(book: Engine) -> None:
    assert ids(book, "firm") == {"a1", "a2", "b1", "b2", "p1"}
    assert ids(book, "account:A") == {"a1", "a2", "p1"}
    assert ids(book, "account:B") == {"b1", "b2"}
    assert ids(book, "strategy:S") == {"a1", "a2", "b1", "p1"}  # across accounts
    assert ids(book, "strategy:T") == {"b2"}
    assert ids(book, "symbol:Y") == {"a2", "b2"}
    assert ids(book, "account:never-seen") == set()
    with pytest.raises(ScopeError):
        book.working_orders("desk:1")


def test_orders_carry_keys_side_and_open_quantity(book: Engine) -> None:
    by_id = {o.order_id: o for o in book.working_orders("firm")}
    assert by_id["a2"] == WorkingOrder("a2", "A", "S", "Y", "sell", 6.0)
    assert by_id["p1"] == WorkingOrder("p1", "A", "S", "X", "buy", 20.0)  # 25 - 5
    assert by_id["b2"] == WorkingOrder("b2", "B", "T", "Y", "buy", 5.0)
    oids = book.working_order_ids("firm")
    assert oids.dtype == np.int64 and list(oids) == sorted(oids)
    assert [o.order_id for o in book.describe_orders(oids)] == [
        o.order_id for o in book.working_orders("firm")
    ]


def test_an_id_reused_after_its_order_closed_is_the_new_order(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.apply([new("o", 0, qty=10), cancel("o", MS)])
    assert ids(e, "firm") == set()
    e.apply([new("o", 2 * MS, qty=4, side="sell")])
    assert e.working_orders("firm") == [WorkingOrder("o", "A", "S", "X", "sell", 4.0)]


def test_reduce_only_keeps_the_orders_that_increase_the_position(engine_for: Make) -> None:
    """Account A is long 100 X and flat Y: buys of X, and anything in Y, increase; a
    sell of X reduces, and so does one larger than the position (it flips, but reduces
    first)."""
    e = engine_for(QTY)
    e.apply(
        [
            new("f", 0, qty=100),
            fill("f", 1, qty=100),
            new("buyX", 2, qty=5),
            new("sellX", 3, qty=50, side="sell"),
            new("flipX", 4, qty=500, side="sell"),
            new("buyY", 5, qty=1, symbol="Y"),
            new("sellY", 6, qty=1, side="sell", symbol="Y"),
        ]
    )
    assert e.position("account:A", "X") == 100.0
    assert ids(e, "account:A", increasing_only=True) == {"buyX", "buyY", "sellY"}
    assert ids(e, "account:A") == {"buyX", "sellX", "flipX", "buyY", "sellY"}


def test_each_scope_judges_by_its_own_position(engine_for: Make) -> None:
    """Strategy S is long 100 X in account A and short 100 X in account B: flat, so
    every order of S increases it; each account judges by its own position; a symbol
    scope by the firm's (flat here too)."""
    e = engine_for(QTY)
    e.apply(
        [
            new("fa", 0, qty=100),
            fill("fa", 1, qty=100),
            new("fb", 2, qty=100, side="sell", account="B"),
            fill("fb", 3, qty=100, side="sell", account="B"),
            new("a-buy", 4, qty=1),
            new("a-sell", 5, qty=1, side="sell"),
            new("b-buy", 6, qty=1, account="B"),
            new("b-sell", 7, qty=1, side="sell", account="B"),
        ]
    )
    everything = {"a-buy", "a-sell", "b-buy", "b-sell"}
    assert e.position("strategy:S", "X") == 0.0
    assert ids(e, "strategy:S", increasing_only=True) == everything
    assert ids(e, "symbol:X", increasing_only=True) == everything
    assert ids(e, "firm", increasing_only=True) == everything
    assert ids(e, "account:A", increasing_only=True) == {"a-buy"}
    assert ids(e, "account:B", increasing_only=True) == {"b-sell"}


def test_a_symbol_scope_judges_by_the_firms_position(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.apply(
        [
            new("f", 0, qty=30, side="sell", account="B", strategy="T"),
            fill("f", 1, qty=30, side="sell", account="B", strategy="T"),
            new("buy", 2, qty=1),  # account A is flat, the firm is short 30
            new("sell", 3, qty=1, side="sell"),
        ]
    )
    assert ids(e, "symbol:X", increasing_only=True) == {"sell"}
    assert ids(e, "account:A", increasing_only=True) == {"buy", "sell"}


def test_a_venue_scope_names_its_orders_and_judges_by_the_firms_position(
    engine_for: Make,
) -> None:
    """Positions are not kept per venue: a venue's reduce-only selection judges each of
    its orders by the firm's position in the order's symbol (long 100 X, flat Y), as a
    symbol scope does. Before, naming a venue's orders raised KeyError (no cancel request
    for a venue halt) and every order counted as increasing a position of 0."""
    e = engine_for(QTY)
    e.apply(
        [
            new("f", 0, qty=100, venue="ARCX"),
            fill("f", 1, qty=100, venue="ARCX"),  # the firm is long 100 X, bought on ARCX
            new("buyX", 2, qty=5, venue="XNAS"),
            new("sellX", 3, qty=50, side="sell", venue="XNAS", account="B", strategy="T"),
            new("buyY", 4, qty=1, symbol="Y", venue="XNAS"),
            new("arcx", 5, qty=5, venue="ARCX"),
            new("none", 6, qty=5),
        ]
    )
    assert ids(e, "venue:XNAS") == {"buyX", "sellX", "buyY"}
    assert ids(e, "venue:XNAS", increasing_only=True) == {"buyX", "buyY"}
    assert ids(e, "venue:ARCX") == {"arcx"}
    assert ids(e, "venue:BATS") == set()  # never seen: none
