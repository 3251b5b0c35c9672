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
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.control import decision
from riskguard.control.records import HeartbeatRecord, heartbeat_message
from riskguard.control.view import ControlView, Instant
from riskguard.engine import Engine
from riskguard.gate import Gate
from riskguard.ingest.checkpoint import Checkpoints
from riskguard.ingest.pretrade import PreTradeFeed
from riskguard.killswitch import Transition
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings, session_start_ns
from riskguard.snapshot import SnapshotStore, capture
from riskguard.state.reference import ReferenceModel
from riskguard.testing import FakeClock
from tests.builders import (
    MS,
    T0,
    fill,
    fx,
    heartbeat,
    instrument,
    mark,
    new,
    position,
    rules_toml,
    run_kernel_and_reference,
)

BIG_ORDER = 'name="big"\nmetric="order_notional"\nscope="account"\nmax=100000\naction="halt"'


def rule(name: str, metric: str, scope: str, bound: str, action: str = "halt") -> str:
    return f'name="{name}"\nmetric="{metric}"\nscope="{scope}"\n{bound}\naction="{action}"'


def run(events: list[wire.Event], *rules: str) -> tuple[Engine, ReferenceModel, list[Transition]]:
    """The kernel, one event per batch (then settled), and the reference model."""
    return run_kernel_and_reference(events, rules_toml(*rules))


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


# --- a day's P&L across the start of day and across a restart ------------------------------

DAY1 = "2023-11-14T00:00:00Z"  # T0 is 2023-11-14 22:13 UTC
DAY2 = "2023-11-15T00:00:00Z"
DAILY_LOSS = rule("daily-loss", "pnl", "firm", "min=-1000000")
DRAWDOWN = rule("drawdown", "drawdown", "firm", "max=1000000")


def day_engine() -> Engine:
    return Engine(parse(rules_toml(DAILY_LOSS, DRAWDOWN)), event_time=True)


def snapshot_of(engine: Engine, tmp_path: Path, start_of_day: str) -> None:
    """What a riskguard started with ``start_of_day`` left in its snapshot folder."""
    runtime = RuntimeSettings(state_dir=str(tmp_path), start_of_day=start_of_day)
    blob = capture(engine, {"t/0": 4}, session_start_ns(start_of_day))
    SnapshotStore(runtime.snapshot_path).write(blob)


def test_yesterdays_snapshot_does_not_count_in_todays_daily_loss(tmp_path: Path) -> None:
    """Day 1 (start of day 2023-11-14): a buy of 10,000 X at 100 marked at 20 loses
    10,000 x 80 = 800,000 (within the firm's daily loss floor of -1,000,000); the
    snapshot of the graceful stop holds it. Day 2 riskguard starts with start of day
    2023-11-15: the day's P&L starts at 0 (docs/limits.md, pnl "since the session
    start"; the carried book comes as opening positions), so day 2's buy of 3,000 Y at
    100 marked at 0 is a day's P&L of -300,000 and a drawdown of 300,000: nothing
    halts. (Single mode loaded yesterday's snapshot whatever the start of day: day 2's
    P&L was -800,000 - 300,000 = -1,100,000, and the firm halted on a day that lost
    300,000.)"""
    day1 = day_engine()
    day1.apply([fill("a", 0, qty=10_000, price=100.0), mark(20.0, 200 * MS)])
    day1.settle()
    assert day1.scope_values("firm")["pnl"] == -800_000.0
    snapshot_of(day1, tmp_path, DAY1)
    runtime = RuntimeSettings(state_dir=str(tmp_path), start_of_day=DAY2)
    day2 = day_engine()
    checkpoints = Checkpoints(runtime, day2, Metrics())
    checkpoints.load()
    assert checkpoints.loaded_from == "" and dict(checkpoints.applied) == {}
    start = session_start_ns(DAY2)
    assert start is not None
    at = start + 9 * 3600 * 10**9 - T0  # 09:00 on day 2, as an offset from T0
    out = day2.apply(
        [fill("b", at, qty=3_000, price=100.0, symbol="Y"), mark(0.0, at + 200 * MS, "Y")]
    )
    out.transitions += day2.settle()
    values = day2.scope_values("firm")
    assert (values["pnl"], values["drawdown"]) == (-300_000.0, 300_000.0)
    assert out.transitions == []


def test_a_restart_within_the_day_keeps_its_pnl_and_session_high(tmp_path: Path) -> None:
    """Day 2: a buy of 10,000 X at 100 marked at 150 makes 500,000 (the session high);
    riskguard restarts from its snapshot of the same start of day. X falls to 10: P&L
    10,000 x (10 - 100) = -900,000 (within the -1,000,000 floor), drawdown from the high
    500,000 - (-900,000) = 1,400,000 > 1,000,000: the drawdown rule halts the firm with
    that value, the high carried across the restart."""
    start = session_start_ns(DAY2)
    assert start is not None
    at = start + 9 * 3600 * 10**9 - T0
    before = day_engine()
    before.apply([fill("a", at, qty=10_000, price=100.0), mark(150.0, at + 200 * MS)])
    before.settle()
    assert before.scope_values("firm")["pnl"] == 500_000.0
    snapshot_of(before, tmp_path, DAY2)
    after = day_engine()
    checkpoints = Checkpoints(
        RuntimeSettings(state_dir=str(tmp_path), start_of_day=DAY2), after, Metrics()
    )
    checkpoints.load()
    assert checkpoints.loaded_from != ""
    out = after.apply([mark(10.0, at + 400 * MS)]).transitions + after.settle()
    assert after.scope_values("firm")["pnl"] == -900_000.0
    assert [(t.scope, t.rule, t.value) for t in out] == [("firm", "drawdown", 1_400_000.0)]


# --- prices in minor units (GBp, ZAc, ILA) -----------------------------------------------


def test_a_london_equity_quoted_in_pence_is_valued_in_pounds(gate: Gate) -> None:
    """LSE quotes AZN in pence (GBp). The schema has no price unit: the instrument says
    so with a contract size of 0.01 in GBP (docs/events.md, Prices in minor units), so
    qty x price x 0.01 is pounds, and fees are in pounds (the symbol's currency). GBP at
    1.27 USD, base USD:

    - buy 100 at 10,500p, fee 5.00: gross 100 x 10,500 x 0.01 x 1.27 = 13,335; fees
      5 x 1.27 = 6.35; pnl -6.35;
    - mark 10,600p: gross 13,462; pnl 100 x 100 x 0.01 x 1.27 - 6.35 = 120.65 (the high);
    - sell 100 at 10,450p, fee 5.00: realised 100 x (10,450 - 10,500) x 0.01 x 1.27 =
      -63.50; fees 12.70; pnl -76.20; drawdown 120.65 + 76.20 = 196.85;
    - a buy of 1,000 at 10,550p: order_notional 1,000 x 10,550 x 0.01 x 1.27 = 133,985
      over a 100,000 limit, refused by the gate and halted by riskguard alike.

    (Without the instrument the 100 shares would be 1,050,000 USD.)"""
    events: list[wire.Event] = [
        instrument("AZN", 0.01, "GBP"),
        fx("GBP", 1.27),
        fill("b", 1 * MS, qty=100, price=10_500.0, symbol="AZN", fee=5.0),
        mark(10_600.0, 200 * MS, "AZN"),
        fill("s", 400 * MS, qty=100, price=10_450.0, symbol="AZN", side="sell", fee=5.0),
    ]
    seen = []
    lim = parse(rules_toml(BIG_ORDER))
    engine, ref = Engine(lim, event_time=True), ReferenceModel(lim)
    for event in events:
        engine.apply([event])
        engine.settle()
        ref.apply_one(event)
        ref.settle()
        v = engine.scope_values("firm")
        b = ref.book("firm")
        assert (v["gross_notional"], v["pnl"]) == pytest.approx((b.gross, b.pnl), abs=1e-6)
        seen.append((v["gross_notional"], v["fees"], v["pnl"], v["drawdown"]))
    assert seen[2:] == [
        (13_335.0, 6.35, -6.35, 6.35),
        (13_462.0, 6.35, 120.65, 0.0),
        (0.0, 12.7, -76.2, 196.85),
    ]
    clock = FakeClock(T0 + 10_000 * MS)
    live = Engine(lim, clock=clock, event_time=True)
    feed = PreTradeFeed(live, Metrics(), 100, clock)
    live.apply(events)
    publish(feed, gate)
    verdict = gate.check("A", "S", "AZN", "buy", 1_000, 10_550.0)
    assert (verdict.allowed, verdict.value) == (False, 133_985.0)
    sent = live.apply([new("o", 500 * MS, qty=1_000, price=10_550.0, symbol="AZN")])
    assert [(t.rule, t.value) for t in sent.transitions] == [("big", 133_985.0)]


@pytest.mark.parametrize(("revalue_ms", "drawdown"), [(0, 100_000.0), (100, 0.0)])
def test_a_high_between_two_revaluations_of_one_epoch_is_not_a_high(
    revalue_ms: int, drawdown: float
) -> None:
    """The documented limit of revaluation epochs on a path metric (docs/limits.md,
    Revaluation): a long of 1,000 bought at 100 (t = 0), marked at 200 (10 ms) and back
    at 100 (20 ms). Revalued on every move, the high is 1,000 x 100 = 100,000 and the
    drawdown at 100 is 100,000 (a 50,000 limit halts). With 100 ms epochs the fill was
    the epoch's first move; both marks wait and only 100 is applied at the next epoch:
    the high stays 0, the drawdown 0. P&L is 0 either way."""
    events: list[wire.Event] = [
        fill("a", 0, qty=1_000, price=100.0),
        mark(200.0, 10 * MS),
        mark(100.0, 20 * MS),
        heartbeat("h", 150 * MS),
    ]
    lim = parse(
        rules_toml(rule("dd", "drawdown", "firm", "max=50000")).replace(
            "version = 1\n", f"version = 1\nrevalue_ms = {revalue_ms}\n"
        )
    )
    engine = Engine(lim, event_time=True)
    ref = ReferenceModel(lim)
    out = engine.apply(events).transitions + engine.settle()
    ref.apply(events)
    ref.settle()
    values = engine.scope_values("firm")
    assert (values["pnl"], values["drawdown"]) == (0.0, drawdown)
    assert ref.book("firm").peak == drawdown
    assert [t.value for t in out] == ([drawdown] if drawdown else [])


PRICES = st.sampled_from([0.0, -37.63, 0.0001, 1.0, 99.5, 5_000.0])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("fx"), st.sampled_from([0.0067, 0.5, 1.1, 1.5])),
        st.tuples(st.just("instrument"), st.sampled_from([0.01, 1.0, 50.0, 1_000.0])),
        st.tuples(st.just("mark"), PRICES),
        st.tuples(st.just("order"), st.sampled_from([1.0, 7.5, 1e6]), st.none() | PRICES),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
@example(steps=[("mark", 0.0), ("fx", 1.1), ("fx", 1.5), ("order", 1.0, 1.0)])
@example(steps=[("fx", 1.1), ("mark", 0.0), ("instrument", 50.0), ("order", 7.5, -37.63)])
def test_the_gate_values_every_order_as_riskguard_does(steps: list[tuple[object, ...]]) -> None:
    """Whatever the marks (zero and negative too), contract sizes and rates did, an order
    checked by a gate that read the feed's records (published after every event, as the
    feed's rounds do) is valued (order_notional) exactly as riskguard values it once
    sent: refused by the gate with riskguard's value when riskguard halts it (``max =
    0``: any value above 0), allowed when riskguard judges it within (value 0) or cannot
    value it (no price, no rate)."""
    clock = FakeClock(T0 + 10_000 * MS)
    lim = parse(rules_toml(rule("any", "order_notional", "account", "max=0")))
    engine = Engine(lim, clock=clock, event_time=True)
    feed = PreTradeFeed(engine, Metrics(), 100, clock)
    view = ControlView()

    def read() -> None:
        batch = feed.collect()
        feed.commit(batch)
        beat = HeartbeatRecord(ts=time.time_ns(), instance="t", ready=True, interval_ms=100)
        view.fold([heartbeat_message(beat)[1], *(value for _key, value in batch.messages)])

    engine.apply([instrument("P", 1.0, "EUR")])
    read()
    for i, step in enumerate(steps, start=1):
        t = i * MS
        kind, a = step[0], step[1]
        if kind != "order":
            assert isinstance(a, float)
            data = {"fx": fx("EUR", a, t), "instrument": instrument("P", a, "EUR", t)}
            engine.apply([data.get(str(kind), mark(a, t, "P"))])
        else:
            qty, price = a, step[2]
            assert isinstance(qty, float) and (price is None or isinstance(price, float))
            at = Instant.now()
            verdict = decision.check(view, 60_000, at, f"A{i}", "S", "P", "buy", qty, price)
            order = new(f"o{i}", t, qty=qty, price=price, symbol="P", account=f"A{i}")
            out = engine.apply([order]).transitions
            sent = [(tr.rule, tr.value) for tr in out if tr.rule == "any"]
            assert sent == ([] if verdict else [("any", verdict.value)])
        read()


@pytest.mark.parametrize(("price", "pnl"), [(50.0, -200.0), (40.0, 800.0)])
def test_an_opening_position_counts_pnl_from_its_price(price: float, pnl: float) -> None:
    """docs/events.md (position): 100 X bought at 40, closed yesterday at 50, marked
    today at 48. Carried at the previous close (50), the day's P&L is 100 x (48 - 50) =
    -200; carried at its average cost (40), `pnl` is 100 x (48 - 40) = +800, its whole
    history counted as the day's."""
    events: list[wire.Event] = [
        position(100, price=price),
        mark(48.0, 200 * MS),
        heartbeat("h", 400 * MS),
    ]
    engine, ref, _ = run(events)
    assert engine.scope_values("account:A")["pnl"] == pnl
    assert ref.book("account:A").pnl == pnl


def test_after_a_rate_move_the_firms_pnl_is_not_its_accounts_sum() -> None:
    """The documented limit (docs/limits.md, Currencies): realised P&L stays at the rate
    it was booked at, and the firm realises when its netted position closes. a1 buys 10
    B at 100 EUR, a2 sells 10 at 110, EUR at 1.00: the firm (and strategy S, in both
    accounts) is flat with 100 EUR realised = 100 USD. EUR to 2.00, B marked at 105:
    a1 10 x (105 - 100) x 2 = 100, a2 10 x (110 - 105) x 2 = 100; the firm stays 100. At
    1.00 throughout they add up: a1 50 + a2 50 = firm 100."""
    for rate, accounts in ((2.0, 100.0), (1.0, 50.0)):
        events: list[wire.Event] = [
            instrument("B", 1.0, "EUR"),
            fx("EUR", 1.0),
            fill("o1", 1 * MS, qty=10, price=100.0, symbol="B", account="a1", exec_id="e1"),
            fill("o2", 2 * MS, qty=10, price=110.0, symbol="B", account="a2", side="sell"),
            fx("EUR", rate, 200 * MS),
            mark(105.0, 400 * MS, "B"),
            heartbeat("h", 600 * MS),
        ]
        engine, ref, _ = run(events)
        pnl = {s: engine.scope_values(s)["pnl"] for s in ("firm", "strategy:S")}
        assert pnl == {"firm": 100.0, "strategy:S": 100.0}
        for account in ("account:a1", "account:a2"):
            assert engine.scope_values(account)["pnl"] == accounts
            assert ref.book(account).pnl == pytest.approx(accounts)
