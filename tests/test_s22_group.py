"""Session 22: wrong numbers and wrong decisions of a group member's engines.

A member's values must be what one engine reading every partition holds for the rules
group mode judges (local ones in the partition's engine, summed ones through the parts
of :meth:`~riskguard.ingest.partitions.PartitionEngines.contributions`). Values are
derived by hand in each test; the property holds the member against one engine on
richer flows than tests/test_partitions.py (currencies, contract sizes, venues,
replaces, rejects, busts, parents, broker positions, states written by the kill switch).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import contributions
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import Contribution, Held, cover
from riskguard.engine import Engine
from riskguard.ingest.cancels import CancelTracker
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.partitions import PartitionEngines
from riskguard.limits import parse
from riskguard.limits.scale import is_summed, summed_rules
from riskguard.metrics import Metrics
from riskguard.testing import FakeClock
from tests.builders import MS, T0, batches, partition_of, rules_toml
from tests.test_partitions import ACCOUNTS, LIMITS, assert_same_parts, flow, member, tp

# two partitions: D lives in in/0, B in in/1 (partition_of)
assert (partition_of("D", 2), partition_of("B", 2)) == (0, 1)


def one_batch(
    events: list[wire.Event], partitions: int = 2
) -> tuple[list[wire.Event], Coordinates]:
    """``events`` as one consumed batch: grouped by partition (account events in their
    account's, broadcast ones in every one), partitions in order, offsets from 0."""
    out: list[wire.Event] = []
    where = Coordinates()
    for p in range(partitions):
        mine = [e for e in events if partition_of(getattr(e, "account", ""), partitions) == p
                or not hasattr(e, "account")]  # fmt: skip
        if not mine:
            continue
        where.partition(f"in/{p}")
        for offset in range(len(mine)):
            where.add(offset, b"")
        out += mine
    return out, where


def order(ms: int, account: str, oid: str, qty: float = 1.0) -> wire.NewOrder:
    return wire.NewOrder(ts=T0 + ms * MS, order_id=oid, account=account, strategy="S",
                         symbol="X", side="buy", qty=qty, price=10.0)  # fmt: skip


def test_a_state_written_to_every_engine_does_not_pass_for_the_firm_in_the_parts() -> None:
    """Firm order rate, window 1 s, max 1, halt (summed); account position max 5,
    reduce-only (local). One batch: D (in/0) sends 2 orders at 1 and 2 ms; B (in/1) sends
    one at 3 ms, filled 10 at 4 ms: B's position 10 > 5, B goes REDUCE_ONLY, decided in
    in/1's engine and written by the member's kill switch into in/0's engine too, where
    no event of B ever came.

    One engine reading both partitions counts 3 orders for the firm and nothing for any
    account under the firm rule: the member's part is ``{"firm": [3]}``, and the judge
    halts the firm (3 > 1) and nothing else; B stays REDUCE_ONLY.

    in/0's engine had interned ``account:B`` (the kill switch) without its level and
    counter row, which stay 0 (the firm's) until the engine's next event: its part
    listed ``account:B`` at the firm's count of in/0 (2), and the judge halted account B
    on the firm rule (2 > 1) beside the firm, a halt no one engine decides (an operator
    resuming the firm left B halted)."""
    limits = rules_toml(
        'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
        'max = 1\naction = "halt"',
        'name = "acct-pos"\nmetric = "position_qty"\nscope = "account"\nmax = 5\n'
        'action = "reduce_only"',
    )
    parts = member(2, limits=limits)
    fill = wire.Fill(ts=T0 + 4 * MS, order_id="b1", exec_id="x", account="B", strategy="S",
                     symbol="X", side="buy", qty=10.0, price=10.0)  # fmt: skip
    flow: list[wire.Event] = [order(1, "D", "d1"), order(2, "D", "d2"), order(3, "B", "b1", 10.0)]
    [reduce] = parts.apply(*one_batch([*flow, fill])).transitions
    assert (reduce.scope, reduce.to) == ("account:B", "REDUCE_ONLY")
    now = T0 + 4 * MS
    got = parts.contributions(["firm-rate"], now)
    assert got == {"firm-rate": [{"firm": [3.0]}]}
    assert contributions(parts.engines[tp(0)], ["firm-rate"], now) == {
        "firm-rate": [{"firm": [2.0]}]
    }
    record = Contribution(group="g", instance="m", partitions=("in/0", "in/1"),
                          limits_digest="d", as_of_ns=now, sent_ns=now, read_ns=now,
                          parts=got)  # fmt: skip
    judge = SumJudge(parts.home)
    decided = judge.judge(cover({"m": Held(0, record)}, {"in/0", "in/1"}),
                          summed_rules(parts.limits), "d")  # fmt: skip
    assert [(t.scope, t.to, t.value) for t in decided] == [("firm", "HALTED", 3.0)]
    assert parts.killswitch.state("account:B") == "REDUCE_ONLY"


def test_a_per_order_alert_at_firm_scope_is_raised_and_resolved_per_partition() -> None:
    """Documented (docs/deployment.md, Known limits of group mode): order_qty at firm
    scope, max 5, alert. D (in/0) 8 at 1 ms, B (in/1) 9 at 2 ms, D 1 at 3 ms, B 9 at
    4 ms. One engine: alert at 1, resolve at 3, alert at 4. A member: each partition's
    engine keeps its own edge: alerts at 1 and 2, the first resolved at 3, none at 4."""
    limits = rules_toml('name = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 5\n'
                        'action = "alert"')  # fmt: skip
    parts = member(2, limits=limits)
    one = Engine(parse(limits), clock=FakeClock(T0), warm=False, values_only=is_summed)
    flow = [order(1, "D", "d1", 8.0), order(2, "B", "b1", 9.0), order(3, "D", "d2"),
            order(4, "B", "b2", 9.0)]  # fmt: skip
    got: list[tuple[int, str]] = []
    want: list[tuple[int, str]] = []
    for ev in flow:
        batch = one_batch([ev])
        got += [((t.ts - T0) // MS, t.kind) for t in parts.apply(*batch).transitions]
        want += [((t.ts - T0) // MS, t.kind) for t in one.apply(*batch).transitions]
    assert want == [(1, "alert"), (3, "resolve"), (4, "alert")]
    assert got == [(1, "alert"), (2, "alert"), (3, "resolve")]


def test_an_order_opened_late_under_a_reused_id_joins_its_own_accounts_halt() -> None:
    """docs/events.md: an order id is unique in the firm while the order works, and may
    be reused once it closed. D (in/0) sends order 7 at 1 ms, filled whole at 2 ms:
    closed. Account B (in/1) is halted at 3 ms (cancel deadline 1 s); at 4 ms B opens
    order 7 (the id reused, legally) in its halted account, and it stays open. One engine
    (single mode) tracks it in B's request: 2 s on, ``cancel-incomplete`` pages naming
    B's order 7 as opened after the halt.

    The member looked the id up in its partitions in order and found D's closed order 7
    in in/0 first: B's working order was never tracked, and no page came."""
    clock = FakeClock(T0 + 3 * MS)
    rule = 'name = "fat"\nmetric = "order_qty"\nscope = "account"\nmax = 50\naction = "halt"'
    text = rules_toml(rule).replace("version = 1", "version = 1\ncancel_deadline_ms = 1000")
    home = Engine(parse(text), clock=clock, warm=False, values_only=is_summed)
    parts = PartitionEngines(home)
    for p in range(2):
        parts.add(tp(p), parts.fresh())
    tracker = CancelTracker(parts, Metrics(), clock, member="rg-a")
    done = wire.Fill(ts=T0 + 2 * MS, order_id="7", exec_id="x7", account="D", strategy="S",
                     symbol="X", side="buy", qty=1.0, price=10.0)  # fmt: skip
    parts.apply(*one_batch([order(1, "D", "7"), done]))
    halt = parts.killswitch.halt("account:B", "ops", "runaway")
    assert halt is not None
    tracker.request(halt)  # B has no working order: an empty request
    late = order(4, "B", "7")
    batch = one_batch([late])
    parts.apply(*batch)
    clock.advance(ms=1)
    assert tracker.check(batch[0]) == []
    clock.advance(s=2)
    (page,) = tracker.check()
    assert page.rule == "cancel-incomplete"
    assert "7" in (page.reason or "") and "opened in the halted scope" in (page.reason or "")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(1, 100),
    partitions=st.integers(2, 4),
    actions=st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from(("halt", "reduce_only", "resume")),
            st.sampled_from(
                (*(f"account:{a}" for a in ACCOUNTS), "strategy:s1", "symbol:X", "venue:XNAS")
            ),
        ),
        max_size=6,
    ),
)
def test_parts_after_every_batch_are_one_engines_whatever_the_kill_switch_wrote(
    seed: int, n: int, partitions: int, actions: list[tuple[int, str, str]]
) -> None:
    """The flow of tests/test_partitions.py read by a member and by one engine, with
    operators' halts, reduce-only and resumes of accounts, a strategy, a symbol and a
    venue between batches (the kill switch writes them into every engine, interning
    scopes no event of a partition showed): after every batch the member's parts of
    every summed rule are one engine's (read at its latest event), and so are the
    states. Each broadcast event is read in every partition before any later event and
    price moves apply at once: the documented differences (a copy of a mark applied per
    partition, mid-epoch valuation) left out."""
    stream = flow(seed, n)
    limits = f"revalue_ms = 0\n{LIMITS}"  # mid-epoch mixes differ by design (deployment.md)
    parts = member(partitions, limits=limits)
    one = Engine(parse(limits), clock=FakeClock(T0), warm=False, values_only=is_summed)
    summed = [r.name for r in summed_rules(parts.limits)]
    for k, (events, where) in enumerate(batches(stream, partitions, seed, broadcast_alone=True)):
        parts.apply(events, where)
        one.apply(events, where)
        for at, action, scope in actions:
            if at == k:
                for ks in (parts.killswitch, one.killswitch):
                    if action == "resume":
                        ks.resume(scope, "ops", "checked")
                    else:
                        ks.halt(scope, "ops", "checked", action=action)
        now = one.last_event_ns
        assert_same_parts(parts.contributions(summed, now), contributions(one, summed, now))
    for _, _, scope in actions:
        assert parts.killswitch.state(scope) == one.killswitch.state(scope)


def test_an_order_opened_late_at_a_halted_venue_joins_the_venues_halt() -> None:
    """venue:XNAS halted at 1 s (cancel deadline 1 s), nothing working there. At 1.001 s
    account A opens order r1 at XNAS (a router not asking the gate); it stays open. Two
    seconds on, ``cancel-incomplete`` pages naming r1 as opened after the halt, as it
    does for an order opened late in a halted account or strategy. The tracker looked
    for a halted scope among the order's firm, account, strategy and symbol only: the
    venue's late order was never tracked, and no page came (single mode and group mode
    alike)."""
    clock = FakeClock(T0 + 1000 * MS)
    rule = 'name = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e9\naction = "halt"'
    text = rules_toml(rule).replace("version = 1", "version = 1\ncancel_deadline_ms = 1000")
    engine = Engine(parse(text), clock=clock)
    tracker = CancelTracker(engine, Metrics(), clock)
    halt = engine.killswitch.halt("venue:XNAS", "ops", "venue outage")
    assert halt is not None
    tracker.request(halt)
    rogue = [
        wire.NewOrder(
            ts=T0 + 1001 * MS,
            order_id="r1",
            account="A",
            strategy="S",
            symbol="X",
            side="buy",
            qty=1.0,
            price=10.0,
            venue="XNAS",
        )
    ]
    engine.apply(rogue)
    clock.advance(ms=2)
    assert tracker.check(rogue) == []
    clock.advance(s=2)
    (page,) = tracker.check()
    assert page.rule == "cancel-incomplete"
    assert "r1" in (page.reason or "") and "opened in the halted scope" in (page.reason or "")
