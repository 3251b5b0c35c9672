"""Orders a router opens in a REDUCE_ONLY scope after its decision that would increase
the scope's position: tracked for cancel like late orders in a HALTED scope.

Hand-derived flows on a fake clock: riskguard's wall clock is T0 + 1000 ms, so a
reduce-only decided now has ``decided_ns`` = T0 + 1000 ms and (cancel_deadline_ms =
1000) its deadline at T0 + 2000 ms. "Increasing" is the reduce-only selection's rule
(docs/limits.md "Cancel on halt"): the scope's net position in the order's symbol is 0,
or has the sign of the order's side. Before the fix none of these orders was tracked:
no ``cancel-incomplete`` ever named them.
"""

from __future__ import annotations

from aiokafka.structs import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard.engine import Engine
from riskguard.events import Event
from riskguard.ingest.cancels import CancelTracker
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.partitions import PartitionEngines
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.notify import sinks
from riskguard.testing import FakeClock
from riskguard.vocabulary import Transition
from tests.builders import MS, T0, cancel, fill, new, rules_toml

RULE = 'name = "fat"\nmetric = "order_qty"\nscope = "firm"\nmax = 1e9\naction = "halt"'


def setup() -> tuple[Engine, CancelTracker, FakeClock]:
    clock = FakeClock(T0 + 1000 * MS)
    text = rules_toml(RULE).replace("version = 1", "version = 1\ncancel_deadline_ms = 1000")
    engine = Engine(parse(text), clock=clock)
    return engine, CancelTracker(engine, Metrics(), clock), clock


def stop(engine: Engine, scope: str, action: str = "reduce_only") -> Transition:
    tr = engine.killswitch.halt(scope, "alice", "loss limit near", action=action)
    assert tr is not None
    return tr


def test_an_increasing_order_opened_after_the_reduce_only_is_named_past_the_deadline() -> None:
    """A is long 5 X. Reduce-only on account:A (nothing working: its request is empty and
    confirmed). Then, after the decision: ``up`` buy 10 (long + buy: increases), ``down``
    sell 3 (reduces), ``flip`` sell 20 (reduces first: not increasing, as in the
    request), ``other`` buy 10 in account B (not in the scope); ``early`` buy 10 stamped
    before the decision. Only ``up`` is tracked; past the deadline one page names it,
    as opened after the reduce-only."""
    engine, tracker, clock = setup()
    engine.apply([new("f", 0, qty=5), fill("f", 1, qty=5)])
    (part,) = tracker.request(stop(engine, "account:A"))
    assert part.orders == ()
    assert tracker.check() == [] and tracker.requests == {}
    batch = [
        new("early", 999 * MS),
        new("up", 1001 * MS),
        new("down", 1002 * MS, qty=3, side="sell"),
        new("flip", 1003 * MS, qty=20, side="sell"),
        new("other", 1004 * MS, account="B"),
    ]
    engine.apply(batch)
    assert tracker.check(batch) == []  # within the deadline
    req = tracker.requests["account:A"]
    assert (req.kind, [o.order_id for o in req.orders]) == ("reduce_only", ["up"])
    clock.advance(ms=1000)
    (alert,) = tracker.check()
    assert alert.rule == "cancel-incomplete" and alert.reason is not None
    assert "1 order(s) still working" in alert.reason
    assert "up (A/S X buy 10; opened after the reduce-only of account:A)" in alert.reason
    assert "1 of them opened in a reduce-only scope after it was decided" in alert.reason
    for name in ("early", "down", "flip", "other"):
        assert f"{name} (" not in alert.reason
    (listed,) = tracker.status()["incomplete"]["orders"]
    assert (listed["order_id"], listed["late"], listed["scope"]) == ("up", True, "account:A")
    engine.apply([cancel("up", 2001 * MS)])
    assert tracker.check() == []  # held open: an order opened late 1 s ago (5 s quiet)
    clock.advance(s=4)
    (done,) = tracker.check()
    assert done.rule == "cancel-complete" and done.ends == alert.id
    assert done.reason is not None and "halted or reduce-only scope" in done.reason


def test_at_a_flat_position_either_side_increases() -> None:
    """Flat in X: a sell opened after the reduce-only opens a short: tracked."""
    engine, tracker, clock = setup()
    tracker.request(stop(engine, "account:A"))
    batch = [new("short", 1001 * MS, side="sell")]
    engine.apply(batch)
    tracker.check(batch)
    clock.advance(ms=1000)
    (alert,) = tracker.check()
    assert alert.reason is not None and "short (A/S X sell 10; opened after the reduce-only" in (
        alert.reason
    )


def test_each_order_is_judged_on_the_position_of_the_scope_it_joins() -> None:
    """Firm and account:B are both reduce-only; A is long 5 X (so is the firm), B flat.
    B sells 3 X: it reduces the firm's position but opens B's: it joins account:B.
    A buys 10 X: it increases the firm's (widest first): it joins firm. A sells 2 X:
    reduces both the firm and A: not tracked."""
    engine, tracker, _ = setup()
    engine.apply([new("f", 0, qty=5), fill("f", 1, qty=5)])
    tracker.request(stop(engine, "firm"))
    tracker.request(stop(engine, "account:B"))
    batch = [
        new("b-sell", 1001 * MS, qty=3, side="sell", account="B"),
        new("a-buy", 1002 * MS),
        new("a-sell", 1003 * MS, qty=2, side="sell"),
    ]
    engine.apply(batch)
    tracker.check(batch)
    joined = {s: [o.order_id for o in r.orders] for s, r in tracker.requests.items()}
    assert joined == {"firm": ["a-buy"], "account:B": ["b-sell"]}


def test_a_halt_over_the_order_takes_it_whatever_its_side() -> None:
    """Firm HALTED, account:A reduce-only, A long 5: a reducing sell opened after both
    joins the firm's halt (its effective state is HALTED)."""
    engine, tracker, _ = setup()
    engine.apply([new("f", 0, qty=5), fill("f", 1, qty=5)])
    tracker.request(stop(engine, "account:A"))
    tracker.request(stop(engine, "firm", "halt"))
    batch = [new("sell", 1001 * MS, qty=2, side="sell")]
    engine.apply(batch)
    tracker.check(batch)
    assert [o.order_id for o in tracker.requests["firm"].orders] == ["sell"]
    assert "account:A" not in tracker.requests


def test_a_group_member_judges_only_account_scopes() -> None:
    """A member knows part of a strategy's position (its request names every order
    there): it joins no late order to a strategy's reduce-only; an account is whole."""
    engine, tracker, _ = setup()
    tracker.member = "rg-a"
    tracker.request(stop(engine, "strategy:S"))
    tracker.request(stop(engine, "account:B"))
    batch = [new("a", 1001 * MS), new("b", 1002 * MS, account="B")]
    engine.apply(batch)
    tracker.check(batch)
    assert {s: [o.order_id for o in r.orders] for s, r in tracker.requests.items()} == {
        "account:B": ["b"]
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.integers(-3, 3),
    flow=st.lists(
        st.tuples(st.sampled_from(("new", "fill")), st.sampled_from((1, -1)), st.integers(1, 3)),
        max_size=12,
    ),
)
def test_late_orders_joined_are_those_increasing_the_position_after_their_batch(
    start: int, flow: list[tuple[str, int, int]]
) -> None:
    """A starts at ``start`` X (filled before the reduce-only); then one event a batch:
    a ``new`` order of a side and qty, or a ``fill`` (a fresh order filled whole, moving
    the position by side * qty). A new order joins iff, by hand, the position right
    after it is 0 or has its side's sign; it is tracked from then on (never dropped for
    a later move of the position, never added for one)."""
    engine, tracker, _ = setup()
    if start:
        side = "buy" if start > 0 else "sell"
        engine.apply(
            [new("s", 0, qty=abs(start), side=side), fill("s", 1, qty=abs(start), side=side)]
        )
    tracker.request(stop(engine, "account:A"))
    position, want, t = start, [], 1001 * MS
    for i, (kind, sign, qty) in enumerate(flow):
        side = "buy" if sign > 0 else "sell"
        oid = f"{kind}{i}"
        batch: list[Event] = [new(oid, t, qty=qty, side=side)]
        if kind == "fill":
            batch.append(fill(oid, t + 1, qty=qty, side=side))
            position += sign * qty
        elif position == 0 or (position > 0) == (sign > 0):
            want.append(oid)
        engine.apply(batch)
        tracker.check(batch)
        t += MS
    req = tracker.requests.get("account:A")
    assert ([] if req is None else [o.order_id for o in req.orders]) == want


# (b) fills that grow or flip a REDUCE_ONLY position ------------------------------------


def breaches(sent: list[Transition]) -> list[Transition]:
    return [a for a in sent if a.rule == "reduce-only-breach"]


def long_a(engine: Engine, qty: float = 100) -> None:
    engine.apply([new("f", 0, qty=qty), fill("f", 1, qty=qty)])


def test_a_rogue_order_filled_within_the_deadline_pages_the_growth() -> None:
    """A long 100 X; account:A reduce-only. A router sends buy 50 after the decision and
    it fills 2 ms later: never overdue (no cancel-incomplete), but the position grew
    100 -> 150 under reduce-only: one critical alert naming scope, symbol, before, after,
    order."""
    engine, tracker, _ = setup()
    long_a(engine)
    tracker.request(stop(engine, "account:A"))
    batch: list[Event] = [new("rogue", 1001 * MS, qty=50), fill("rogue", 1002 * MS, qty=50)]
    engine.apply(batch)
    (alert,) = tracker.check(batch)
    assert (alert.rule, alert.metric, alert.value, alert.limit) == (
        "reduce-only-breach",
        "position",
        150.0,
        100.0,
    )
    assert alert.reason is not None
    assert "account:A is REDUCE_ONLY and its position in X grew: 100 -> 150" in alert.reason
    assert "order rogue (A/S X buy, filled 50)" in alert.reason
    assert alert.id.endswith(":ALERT:reduce-only-breach:account:A:A/rogue")
    assert sinks.ALERT_SEVERITY["reduce-only-breach"] == "critical"


def test_a_reducing_order_sent_late_that_flips_the_position_pages_when_it_flips() -> None:
    """A long 100; a sell 150 sent after the reduce-only reduces at first (not tracked
    for cancel), fills 60 (100 -> 40: no alert), then 90 (40 -> -50: flipped)."""
    engine, tracker, _ = setup()
    long_a(engine)
    tracker.request(stop(engine, "account:A"))
    first: list[Event] = [
        new("big", 1001 * MS, qty=150, side="sell"),
        fill("big", 1002 * MS, qty=60, side="sell"),
    ]
    engine.apply(first)
    assert breaches(tracker.check(first)) == []
    second: list[Event] = [fill("big", 1003 * MS, qty=90, side="sell")]
    engine.apply(second)
    (alert,) = breaches(tracker.check(second))
    assert (alert.value, alert.limit) == (-50.0, 40.0)
    assert alert.reason is not None and "flipped: 40 -> -50" in alert.reason


def test_what_is_not_a_breach() -> None:
    """A long 100. Reduce-only: the buy 50 working at the decision (named in the
    request) fills 50: the expected cancel race, no breach (cancel-incomplete covers it
    past the deadline). A late sell 30 fills: reduces 150 -> 120. A late buy in account B
    (not reduce-only) fills: not in the scope."""
    engine, tracker, _ = setup()
    long_a(engine)
    engine.apply([new("named", 2, qty=50)])
    tracker.request(stop(engine, "account:A"))
    batch: list[Event] = [
        fill("named", 1001 * MS, qty=50),
        new("down", 1002 * MS, qty=30, side="sell"),
        fill("down", 1003 * MS, qty=30, side="sell"),
        new("b", 1004 * MS, account="B"),
        fill("b", 1005 * MS, account="B"),
    ]
    engine.apply(batch)
    assert breaches(tracker.check(batch)) == []
    assert engine.position("account:A", "X") == 120.0


def test_one_alert_per_order_and_its_id_is_the_same_on_both_instances() -> None:
    """A flat; reduce-only. Rogue buy 100 fills 50 then 50 (two batches): one alert (0 ->
    50, opened). Two instances (wall clocks 3 ms apart) name it by the fill's event time:
    the same id, one incident."""
    ids = []
    for skew in (0, 3):
        engine, tracker, clock = setup()
        clock.advance(ms=skew)
        tracker.request(stop(engine, "account:A"))
        sent = []
        batches: list[list[Event]] = [
            [new("rogue", 1010 * MS, qty=100), fill("rogue", 1011 * MS, qty=50)],
            [fill("rogue", 1012 * MS, qty=50)],
        ]
        for batch in batches:
            engine.apply(batch)
            sent += breaches(tracker.check(batch))
        (alert,) = sent
        assert (alert.value, alert.limit) == (50.0, 0.0)
        assert alert.reason is not None and "opened: 0 -> 50" in alert.reason
        ids.append(alert.id)
    assert ids[0] == ids[1]


def test_a_symbol_reduce_only_is_judged_on_the_firms_position() -> None:
    """A long 100 X; symbol:X reduce-only. B (flat) buys 10 X after it: the firm's X
    grows 100 -> 110: breach of symbol:X. A resume stops the watching."""
    engine, tracker, _ = setup()
    long_a(engine)
    tr = stop(engine, "symbol:X")
    tracker.request(tr)
    batch: list[Event] = [new("b", 1001 * MS, account="B"), fill("b", 1002 * MS, account="B")]
    engine.apply(batch)
    (alert,) = breaches(tracker.check(batch))
    assert (alert.value, alert.limit) == (110.0, 100.0)
    assert alert.reason is not None and alert.reason.startswith("symbol:X is REDUCE_ONLY")
    resume = engine.killswitch.resume("symbol:X", "alice", "done")
    assert resume is not None
    tracker.lifted(resume)
    after: list[Event] = [new("c", 1003 * MS, account="B"), fill("c", 1004 * MS, account="B")]
    engine.apply(after)
    assert breaches(tracker.check(after)) == [] and tracker.breaches.opened == {}


def test_a_group_member_judges_its_account_across_the_partitions_it_owns() -> None:
    """A member owning two partitions: account A's orders in one, B's in the other. A
    is long 100 X. account:A reduce-only: a rogue buy 50 of A fills: 100 -> 150, paged
    (PartitionEngines.position sums the partitions; B's holds none of A). strategy:S
    reduce-only too: not judged by a member (part of the position), no second alert."""
    clock = FakeClock(T0 + 1000 * MS)
    text = rules_toml(RULE).replace("version = 1", "version = 1\ncancel_deadline_ms = 1000")
    parts = PartitionEngines(Engine(parse(text), clock=clock))
    a, b = TopicPartition("in", 0), TopicPartition("in", 1)
    parts.add(a, parts.fresh())
    parts.add(b, parts.fresh())
    tracker = CancelTracker(parts, Metrics(), clock, member="rg-a")
    offsets = {a: 0, b: 0}

    def read(part: TopicPartition, events: list[Event]) -> None:
        where = Coordinates()
        where.partition(f"{part.topic}/{part.partition}")
        for _ in events:
            where.add(offsets[part], b"")
            offsets[part] += 1
        parts.apply(events, where)

    read(a, [new("f", 0, qty=100), fill("f", 1, qty=100)])
    read(b, [new("g", 2, account="B"), fill("g", 3, account="B")])
    tracker.request(stop(parts.home, "account:A"))
    tracker.request(stop(parts.home, "strategy:S"))
    batch: list[Event] = [new("rogue", 1001 * MS, qty=50), fill("rogue", 1002 * MS, qty=50)]
    read(a, batch)
    (alert,) = breaches(tracker.check(batch))
    assert (alert.value, alert.limit) == (150.0, 100.0)
    assert alert.reason is not None and alert.reason.startswith("account:A is REDUCE_ONLY")
