"""The live demo's simulated trading system, offline: its normal flow stays within the
example limits, its runaway is stopped by parent-overfill, its broker reconciles, and the
router's cancels close what rests at the venue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from riskguard import events as wire
from riskguard.demo.book import FESX, FX_MOVED, OPENING_BOOK, Book, reference_data
from riskguard.demo.router import Router
from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.examples import LIMITS
from riskguard.gate import CancelOrder, CancelRequest
from riskguard.limits import load

START = 1_700_000_000_000_000_000
S = 1_000_000_000


def session(seconds: int, runaway_s: int | None = None) -> tuple[TradingSim, list[wire.Event]]:
    """Start of day, then ``seconds`` of the live flow; EUR moves halfway."""
    sim = TradingSim.live(seed=3, start_ns=START)
    if runaway_s is not None:
        sim.runaway_at_ns = START + runaway_s * S
    events: list[wire.Event] = [
        *reference_data(START, sim.symbols),
        *sim.opening_marks(START),
        *sim.open_book(START),
    ]
    for i in range(seconds * 100):
        events += sim.step()
        if i == seconds * 50:
            events.append(wire.Fx(ts=START + i * 10_000_000, currency="EUR", rate=FX_MOVED))
    return sim, events


def account_positions(engine: Engine) -> dict[tuple[str, str], float]:
    return {
        (owner.partition(":")[2], symbol.partition(":")[2]): qty
        for (owner, symbol), (qty, _, _) in engine.positions().items()
        if owner.startswith("account:")
    }


def test_normal_flow_stays_within_the_example_limits_and_reconciles() -> None:
    sim, events = session(40)
    engine = Engine(load(LIMITS), event_time=True)
    result = engine.apply(events)
    assert result.bad == [] and result.applied == len(events)
    assert result.transitions == []  # no halt, no alert, no warning
    peaks = {p.rule.name: p for p in engine.peaks()}
    for name, peak in peaks.items():
        assert peak.utilisation is None or peak.utilisation <= 1.0, (name, peak)
    # the futures and the broker's reports were judged, not skipped
    assert peaks["fat-finger-futures"].evaluations > 0
    assert peaks["position-break"].evaluations > 0
    assert peaks["position-break"].high == 0  # judged at each report: the broker agrees
    reports = [e for e in events if isinstance(e, wire.Position) and e.kind == "broker"]
    assert len({(p.account, p.symbol) for p in reports}) > 20
    broker: dict[tuple[str, str], float] = {}
    for (account, _, symbol), qty in sim.book.positions.items():
        broker[account, symbol] = broker.get((account, symbol), 0.0) + qty
    ours = account_positions(engine)
    assert broker and all(ours[key] == qty for key, qty in broker.items())
    # the futures account: contract size 10, priced in EUR, valued at the moved rate
    held = ours["ACC-FUT", FESX.symbol]
    gross = engine.scope_values("account:ACC-FUT")["gross_notional"]
    expected = abs(held) * sim.price(FESX.symbol) * FESX.multiplier * FX_MOVED
    assert held != 0 and gross == pytest.approx(expected, rel=1e-12)


def test_the_runaway_is_stopped_by_parent_overfill_first() -> None:
    _, events = session(12, runaway_s=6)
    result = Engine(load(LIMITS), event_time=True).apply(events)
    halts = [t for t in result.transitions if t.kind == "auto"]
    assert halts, "the runaway was not halted"
    first = halts[0]
    assert (first.scope, first.to, first.rule) == ("strategy:smars", "HALTED", "parent-overfill")
    assert START + 6 * S < first.ts < START + 7 * S


def test_the_opening_book_is_booked_for_the_broker() -> None:
    sim = TradingSim.live(seed=3, start_ns=START)
    opening = sim.open_book(START)
    assert [(p.account, p.strategy, p.symbol, p.qty) for p in opening] == list(OPENING_BOOK)
    assert all(p.kind == "open" and p.price and p.price > 0 for p in opening)
    snapshot = {(p.account, p.symbol): p.qty for p in sim.book.broker_snapshot(START)}
    assert snapshot[("ACC-FUT", FESX.symbol)] == -6.0
    assert snapshot[("ACC-EQ1", "AAPL")] == 3_000.0


def test_router_cancels_close_resting_orders_and_free_their_parents() -> None:
    sim = TradingSim.live(seed=3, start_ns=START)
    events: list[wire.Event] = []
    while len(sim.book.resting) < 5:
        events += sim.step()
    resting = list(sim.book.resting)
    parents = {id(r.parent): r.parent for r in sim.book.resting.values()}
    filled = next(o for o, life in sim.book.lives.items() if life.how == "fill")
    now = sim.start_ns + 10 * S
    confirmed, too_late = sim.cancel([*resting, filled, "never-sent"], now)
    assert [c.order_id for c in confirmed] == resting
    assert all(isinstance(c, wire.CancelOrder) and c.ts == now for c in confirmed)
    assert too_late == [filled, "never-sent"]
    assert sim.book.resting == {}
    assert all(sim.book.lives[o].how == "router-cancel" for o in resting)
    assert all(p.working == 0 for p in parents.values())
    engine = Engine(load(LIMITS), event_time=True)
    engine.apply([*events, *confirmed])
    for strategy in ("vwap", "twap", "smars", "mm-core", "sx5e-hedge"):
        assert engine.scope_values(f"strategy:{strategy}")["open_orders"] == 0


def test_book_counts_working_orders_at_an_instant() -> None:
    book = Book()
    order = wire.NewOrder(
        ts=10, order_id="o1", account="A", strategy="s", symbol="X", side="buy", qty=5, price=1.0
    )
    book.sent(order)
    assert [life.order for life in book.working_at("strategy:s", 10)] == [order]
    book.closed("o1", 20, "router-cancel")
    assert book.working_at("strategy:s", 15) and not book.working_at("strategy:s", 20)
    assert not book.working_at("strategy:other", 15)
    assert book.last_close(["o1"]) == 20 and book.last_close(["o1", "o2"]) is None


def test_router_cancels_what_riskguard_names_and_what_it_did_not_see_yet() -> None:
    sim = TradingSim.live(seed=3, start_ns=START)
    while sum(r.order.strategy == "smars" for r in sim.book.resting.values()) < 3:
        sim.step()
    smars = [o for o, r in sim.book.resting.items() if r.order.strategy == "smars"]
    others = [o for o, r in sim.book.resting.items() if r.order.strategy != "smars"]
    filled = next(
        o
        for o, life in sim.book.lives.items()
        if life.how == "fill" and life.order.strategy == "smars"
    )
    named = [smars[0], filled]  # riskguard saw these two; the other resting ones not yet
    request = CancelRequest(
        "strategy:smars",
        tuple(
            CancelOrder(o, "ACC-EQ2", "smars", sim.book.lives[o].order.symbol, "buy", 100.0)
            for o in named
        ),
        "rule parent-overfill: parent_overfill_ratio 1.1 vs limit 1",
        "strategy:smars@1:HALTED",
        "halt",
    )
    sent: list[wire.Event] = []

    async def send(events: Sequence[wire.Event]) -> None:
        sent.extend(events)

    router = Router(sim, send, asyncio.Lock())
    asyncio.run(router.on_cancel(request))
    (handled,) = router.parts("strategy:smars@1:HALTED")
    assert handled.named == named and handled.too_late == [filled]
    assert handled.unnamed == smars[1:] and handled.cancelled == len(smars)
    assert sorted(c.order_id for c in sent if isinstance(c, wire.CancelOrder)) == sorted(smars)
    assert all(sim.book.lives[o].how == "router-cancel" for o in smars)
    assert all(o in sim.book.resting for o in others)  # other strategies keep their orders
    assert handled.received_ns <= handled.done_ns
