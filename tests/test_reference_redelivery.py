"""Reference data and heartbeats delivered again leave the state as delivered once.

Group mode (docs/deployment.md, "Reference data in group mode") asks producers to
publish every ``mark``, ``fx``, ``instrument`` and ``heartbeat`` to every partition of
the input topic, so an instance owning several partitions sees each of them once per
owned partition, and partitions are consumed at different speeds: a copy often arrives
after newer reference data of the same symbol, currency or source, and after trades.
Each such stream applied by one engine must leave exactly the state (every state array,
positions, values, transitions) of the stream with the reference event delivered once.
The same holds for the plain-Python reference model (``riskguard.state.reference``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.limits import parse
from riskguard.state.reference import ReferenceModel
from tests.builders import MS, fill, fx, heartbeat, instrument, mark, new, rules_toml

RULES = rules_toml(
    'name="pnl"\nmetric="pnl"\nscope="account"\nmin=-1000\naction="halt"',
    'name="dd"\nmetric="drawdown"\nscope="account"\nmax=900\naction="halt"',
    'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=1e9\naction="alert"',
    'name="silent"\nmetric="feed_silence_ms"\nscope="firm"\nmax=60000\naction="halt"\n'
    'match = { source = ["router"] }',
)
LIMITS = parse(RULES.replace("version = 1", 'version = 1\nbase_currency = "USD"'))

EUR = {"symbol": "FESX"}


def fills(t: int, n: int, **kw: Any) -> list[wire.Event]:
    """``n`` buys of 1 in account A, 1 ms apart from ``t``, priced 100 + i."""
    return [
        fill(f"{kw.get('symbol', 'X')}{t}-{i}", t=t + i * MS, qty=1, price=100.0 + i, **kw)
        for i in range(n)
    ]


#: name -> (prefix, the reference event, events between its copies, suffix). Between the
#: copies come newer reference data of the same key and trades valued by it, so a copy
#: that were applied again would move prices, rates or contract sizes back.
CASES: dict[str, tuple[list[wire.Event], wire.Event, list[wire.Event], list[wire.Event]]] = {
    "mark": (
        fills(0, 3),
        mark(90.0, t=10 * MS),
        [mark(120.0, t=20 * MS), *fills(30 * MS, 2), mark(95.0, t=40 * MS)],
        [*fills(50 * MS, 2), mark(97.0, t=60 * MS)],
    ),
    "mark at the same time as another": (
        fills(0, 3),
        mark(90.0, t=10 * MS),
        [mark(120.0, t=10 * MS), *fills(30 * MS, 2)],
        [*fills(50 * MS, 1)],
    ),
    "fx": (
        [instrument("FESX", 10.0, "EUR"), fx("EUR", 1.05, t=1 * MS), *fills(2 * MS, 3, **EUR)],
        fx("EUR", 1.10, t=10 * MS),
        [fx("EUR", 1.20, t=20 * MS), *fills(30 * MS, 2, **EUR), mark(99.0, t=35 * MS, **EUR)],
        [*fills(50 * MS, 2, **EUR), fx("EUR", 1.08, t=60 * MS)],
    ),
    "fx at the same time as another": (
        [instrument("FESX", 10.0, "EUR"), *fills(2 * MS, 3, **EUR)],
        fx("EUR", 1.10, t=10 * MS),
        [fx("EUR", 1.20, t=10 * MS), *fills(30 * MS, 2, **EUR)],
        [*fills(50 * MS, 1, **EUR)],
    ),
    "instrument": (
        [fx("EUR", 1.05)],
        instrument("FESX", 5.0, "EUR", t=1 * MS),
        [instrument("FESX", 10.0, "EUR", t=2 * MS), *fills(30 * MS, 2, **EUR)],
        [new("o1", t=40 * MS, **EUR), *fills(50 * MS, 2, **EUR)],
    ),
    "instrument before the symbol trades": (
        [fx("EUR", 1.05)],
        instrument("FESX", 5.0, "EUR", t=1 * MS),
        [instrument("FESX", 10.0, "EUR", t=2 * MS), mark(99.0, t=3 * MS, **EUR)],
        [*fills(50 * MS, 2, **EUR)],
    ),
    "instrument at the same time as another": (
        [fx("EUR", 1.05)],
        instrument("FESX", 5.0, "EUR", t=1 * MS),
        [instrument("FESX", 10.0, "EUR", t=1 * MS), mark(99.0, t=3 * MS, **EUR)],
        [*fills(50 * MS, 2, **EUR)],
    ),
    "heartbeat": (
        [heartbeat("router", t=0), *fills(1 * MS, 2)],
        heartbeat("router", t=10 * MS),
        [heartbeat("router", t=30_000 * MS), *fills(40_000 * MS, 2)],
        [*fills(95_000 * MS, 1)],  # silence is measured from the newest heartbeat
    ),
}


def run_engine(events: list[wire.Event]) -> tuple[Engine, list[Any]]:
    engine = Engine(LIMITS, event_time=True)
    result = engine.apply(events)
    decided = [*result.transitions, *engine.settle()]
    return engine, [(t.scope, t.to, t.rule, t.value) for t in decided]


def state_of(engine: Engine) -> dict[str, Any]:
    return {
        "positions": engine.positions(),
        "A": engine.scope_values("account:A"),
        "arrays": engine.store.export(),
    }


def same_arrays(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the state arrays that differ (NaN equal to NaN)."""
    differ = [n for n in a.keys() ^ b.keys()]
    for name in a.keys() & b.keys():
        x, y = a[name], b[name]
        if x.dtype.names:
            for f in x.dtype.names:
                if not np.array_equal(x[f], y[f], equal_nan=x[f].dtype.kind == "f"):
                    differ.append(f"{name}.{f}")
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            differ.append(name)
    return sorted(differ)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reference_event_delivered_again_changes_nothing(case: str) -> None:
    prefix, ref, between, suffix = CASES[case]
    once = [*prefix, ref, *between, *suffix]
    twice = [*prefix, ref, *between, ref, *suffix]
    one, decided_once = run_engine(once)
    two, decided_twice = run_engine(twice)
    a, b = state_of(one), state_of(two)
    assert a["positions"] == b["positions"]
    assert a["A"] == b["A"]
    assert decided_once == decided_twice
    assert same_arrays(a["arrays"], b["arrays"]) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_reference_model_agrees(case: str) -> None:
    prefix, ref, between, suffix = CASES[case]
    models = []
    for stream in ([*prefix, ref, *between, *suffix], [*prefix, ref, *between, ref, *suffix]):
        model = ReferenceModel(LIMITS)
        model.apply(stream)
        model.settle()
        models.append(model)
    one, two = models
    book_one, book_two = one.book("account:A"), two.book("account:A")
    assert (book_one.pnl, book_one.peak, book_one.gross, book_one.net) == (
        book_two.pnl,
        book_two.peak,
        book_two.gross,
        book_two.net,
    )
    assert {k: (v.qty, v.cost, v.real) for k, v in one.lots.items()} == {
        k: (v.qty, v.cost, v.real) for k, v in two.lots.items()
    }
    assert one.transitions == two.transitions
    assert (one.rates, one.multiplier, one.currency) == (two.rates, two.multiplier, two.currency)
