"""Money and valuation as a risk officer counts it, hunted for wrong numbers (session 21):
the gate's view of a symbol marked at 0, a day's P&L across the start of day, prices in
minor units, negative prices, FX crosses, long runs of fills.

Every expected value is derived by hand in the comments, from docs/limits.md and
docs/events.md, never from the code under test; kernel flows run the plain-Python
reference model on the same events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from riskguard import events as wire
from riskguard.control.records import HeartbeatRecord, heartbeat_message
from riskguard.engine import Engine
from riskguard.gate import Gate
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.state.reference import ReferenceModel
from riskguard.testing import FakeClock
from tests.builders import MS, T0, fx, instrument, mark, new, rules_toml

BIG_ORDER = 'name="big"\nmetric="order_notional"\nscope="account"\nmax=100000\naction="halt"'


def rule(name: str, metric: str, scope: str, bound: str, action: str = "halt") -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="{scope}"\n{bound}\naction="{action}"'


def run(events: list[wire.Event], *rules: str) -> tuple[Engine, ReferenceModel, list[Transition]]:
    """The kernel, one event per batch (then settled), and the reference model."""
    lim = parse(rules_toml(*rules))
    engine = Engine(lim, event_time=True)
    ref = ReferenceModel(lim)
    out: list[Transition] = []
    for event in events:
        out += engine.apply([event]).transitions
        ref.apply_one(event)
    out += engine.settle()
    ref.settle()
    return engine, ref, out


# --- the gate's view of a symbol marked at 0 ---------------------------------------------


@pytest.fixture
async def gate() -> AsyncIterator[Gate]:
    """A gate never started (no broker): the feed's records are handed to it as read."""
    g = Gate("127.0.0.1:9", f"control-{uuid.uuid4().hex[:8]}", heartbeat_timeout_ms=60_000)
    yield g
    await g.stop()


def publish(feed: PreTradeFeed, gate: Gate) -> None:
    """One round of the gate feed, read by the gate with a fresh heartbeat."""
    batch = feed.collect()
    feed.commit(batch)
    beat = HeartbeatRecord(ts=time.time_ns(), instance="t", ready=True, interval_ms=100)
    gate._receive([heartbeat_message(beat)[1], *(value for _key, value in batch.messages)])


@pytest.mark.parametrize(
    "moves",
    [
        # EUR moves 1.00 -> 1.50 while PWR is marked at 0
        [fx("EUR", 1.5, 3)],
        # PWR's contract size is set to 1.5 (not yet held nor worked) while marked at 0
        [instrument("PWR", 1.5, "EUR", 3)],
    ],
)
def test_the_gate_values_orders_at_the_rate_and_size_riskguard_has_at_a_zero_mark(
    gate: Gate, moves: list[wire.Event]
) -> None:
    """Power and spreads trade at 0 (docs/events.md). PWR in EUR, EUR at 1.00, marked at
    0; then either EUR goes to 1.50 or the contract size to 1.5. A buy of 100,000 at a
    limit of 1.00 EUR is worth 100,000 x 1.00 x 1.5 = 150,000 USD either way
    (docs/limits.md, order_notional): over the 100,000 limit. riskguard halts it; the
    gate, valuing it from the mark record, must refuse it before sending. (The feed
    republished a mark only when price x size x rate changed, 0 at a price of 0 whatever
    the rate or size: the gate kept 1.00 and 1, valued the order at 100,000 and let it
    through.)"""
    clock = FakeClock(T0 + 10_000 * MS)
    engine = Engine(parse(rules_toml(BIG_ORDER)), clock=clock, event_time=True)
    feed = PreTradeFeed(engine, Metrics(), 100, clock)
    engine.apply([instrument("PWR", 1.0, "EUR"), fx("EUR", 1.0, 1), mark(0.0, 2, "PWR")])
    publish(feed, gate)
    engine.apply(moves)
    publish(feed, gate)
    verdict = gate.check("A", "S", "PWR", "buy", 100_000, 1.0)
    assert not verdict
    assert (verdict.rule, verdict.value, verdict.limit) == ("big", 150_000.0, 100_000.0)
    sent = engine.apply([new("o", 4, qty=100_000, price=1.0, symbol="PWR")]).transitions
    assert [(t.scope, t.rule, t.value) for t in sent] == [("account:A", "big", 150_000.0)]
