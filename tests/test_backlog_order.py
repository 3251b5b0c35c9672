"""Reading a backlog: however the partitions' histories interleave, the state is the state
of the stream in time order (the general form of tests/integration/test_catch_up.py).

Each account's events sit in one partition, in time order; a consumer reads partitions at
different speeds, so the engine sees any interleaving that keeps each partition's order.
Counted at their own time while the backlog is read (``Engine.count_at_own_time``, what
the consume loop does until every partition is read to its end), every window at the end
(the firm's too: history older than a window's ring is in none of its windows) and the
decisions on every account's rules equal those of the time-ordered stream. The live rule
(beyond ``max_lateness_ms``, as now) is shown to break it, so the property can fail.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import window_totals
from riskguard.engine import Engine
from riskguard.limits import Limits, parse
from tests.builders import T0, rules_toml

LIMITS: Limits = parse(
    rules_toml(
        'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
        'max = 5\naction = "halt"',
        'name = "acct-msgs"\nmetric = "message_rate"\nscope = "account"\nwindow_ms = 2000\n'
        'max = 8\naction = "reduce_only"',
        'name = "firm-msgs"\nmetric = "message_rate"\nscope = "firm"\nwindow_ms = 1000\n'
        'max = 12\naction = "alert"',
    )
)
ACCOUNTS = ("A1", "A2", "A3")
MS = 1_000_000


@st.composite
def partitions(draw: Any) -> list[list[wire.Event]]:
    """One partition per account: orders and cancels in time order over up to a minute,
    gaps from 1 ms to 20 s (bursts and quiet spells)."""
    out = []
    for p, account in enumerate(ACCOUNTS):
        t, events = T0, []
        for i in range(draw(st.integers(0, 30))):
            t += draw(st.sampled_from([1, 50, 150, 400, 3000, 20_000])) * MS
            if events and draw(st.integers(0, 3)) == 0:
                events.append(wire.CancelOrder(ts=t + p, order_id=f"{account}-{i - 1}",
                                               account=account, strategy="s",
                                               symbol="X"))  # fmt: skip
            else:
                events.append(wire.NewOrder(ts=t + p, order_id=f"{account}-{i}", account=account,
                                            strategy="s", symbol="X", side="buy", qty=1.0,
                                            price=10.0))  # fmt: skip
        out.append(events)
    return out


def interleave(parts: list[list[wire.Event]], picks: list[int]) -> list[wire.Event]:
    """The partitions merged by ``picks`` (which partition gives the next event), each
    partition's order kept."""
    queues = [list(p) for p in parts]
    out: list[wire.Event] = []
    for pick in picks:
        live = [q for q in queues if q]
        if not live:
            break
        out.append(live[pick % len(live)].pop(0))
    for q in queues:
        out += q
    return out


def outcome(engine: Engine, end_ns: int) -> dict[str, Any]:
    """Every window (the firm's and each account's) per rule at ``end_ns``, and the
    accounts' decisions (the firm's alert rule may breach in history in time order,
    and a backlog read out of order cannot judge the firm at each past instant)."""
    state = engine.store.state
    windows = {}
    for row, rule in enumerate(engine.limits.rules):
        counter = int(engine.rulebook.rules.rows["counter"][row])
        totals = window_totals(engine, counter, end_ns)
        for name in ("firm", *(f"account:{a}" for a in ACCOUNTS)):
            scope = engine.keys.find_scope(name)
            if scope is not None and scope >= 0 and rule.scope == name.partition(":")[0]:
                windows[(rule.name, name)] = float(totals[int(state.scopes["slot"][scope])])
    states = {a: engine.killswitch.state(f"account:{a}") for a in ACCOUNTS}
    return {"windows": windows, "states": states}


def run(stream: list[wire.Event], own_time: bool, batch: int) -> Engine:
    """A live engine reading ``stream`` as a backlog: the wall clock a minute past it."""
    wall = max((e.ts for e in stream), default=T0) + 60_000 * MS
    engine = Engine(LIMITS, clock=lambda: wall, warm=False)
    engine.count_at_own_time(own_time)
    for i in range(0, len(stream), batch):
        engine.apply(stream[i : i + batch], wall_ns=wall)
    engine.count_at_own_time(False)
    return engine


@settings(max_examples=150, deadline=None)
@given(partitions(), st.lists(st.integers(0, 2), max_size=120), st.sampled_from([1, 7, 500]))
def test_any_interleaving_of_a_backlog_counts_as_the_time_ordered_stream(
    parts: list[list[wire.Event]], picks: list[int], batch: int
) -> None:
    everything = sorted((e for p in parts for e in p), key=lambda e: e.ts)
    if not everything:
        return
    end = everything[-1].ts
    in_order = outcome(run(everything, own_time=False, batch=500), end)
    backlog = outcome(run(interleave(parts, picks), own_time=True, batch=batch), end)
    assert backlog == in_order


def test_the_live_rule_would_not_hold_it() -> None:
    """A2's burst read after A1's later quiet spell: as now, it fills A2's current
    window (a halt); at its own time it is the history it was."""
    a1 = [wire.NewOrder(ts=T0 + 30_000 * MS, order_id="a1", account="A1", strategy="s",
                        symbol="X", side="buy", qty=1.0, price=10.0)]  # fmt: skip
    a2 = [wire.NewOrder(ts=T0 + i * 300 * MS, order_id=f"b{i}", account="A2", strategy="s",
                        symbol="X", side="buy", qty=1.0, price=10.0)
          for i in range(10)]  # fmt: skip
    end = a1[-1].ts
    in_order = outcome(run(sorted(a1 + a2, key=lambda e: e.ts), False, 500), end)
    assert outcome(run(a1 + a2, own_time=False, batch=500), end) != in_order  # the fault
    assert outcome(run(a1 + a2, own_time=True, batch=500), end) == in_order


def test_a_partition_read_long_behind_another_never_piles_into_a_firm_window() -> None:
    """Two partitions each hold ten minutes of messages, never more than 8 a second for
    the firm. Read one whole partition, then the other: the second's history is older
    than the firm window's whole ring. It used to count in the ring's oldest bucket,
    piling up there: a firm message rate in the thousands, a false firm halt at start
    (seen by the fresh-user verifier at 41 against 40). In none of the windows now."""
    limits = parse(
        rules_toml(
            'name = "firm-msgs"\nmetric = "message_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 40\naction = "halt"'
        )
    )
    parts = [
        [wire.NewOrder(ts=T0 + i * 250 * MS + p, order_id=f"{p}-{i}", account=f"A{p}",
                       strategy="s", symbol="X", side="buy", qty=1.0, price=10.0)
         for i in range(2400)]
        for p in range(2)
    ]  # fmt: skip
    end = parts[0][-1].ts
    wall = end + 60_000 * MS
    for history, halted in ((True, "ACTIVE"), (False, "HALTED")):
        engine = Engine(limits, clock=lambda: wall, warm=False)
        engine.count_at_own_time(history)  # False: the live rule, the old behaviour
        engine.apply(parts[1] + parts[0], wall_ns=wall)
        assert engine.killswitch.state("firm") == halted
    engine.count_at_own_time(False)
    in_order = Engine(limits, clock=lambda: wall, warm=False)
    in_order.apply(sorted(parts[0] + parts[1], key=lambda e: e.ts), wall_ns=wall)
    assert in_order.killswitch.state("firm") == "ACTIVE"
