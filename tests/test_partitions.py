"""Group mode's engines, one per owned input partition, without a broker.

The stream of a test is one time-ordered flow over six accounts; a group member consumes
it as Kafka hands it out (:func:`tests.builders.batches`): each account's events in the
account's partition, marks and heartbeats in every partition, batches grouped by
partition with the :class:`~riskguard.ingest.coordinates.Coordinates` the consume loop
builds. What :class:`~riskguard.ingest.partitions.PartitionEngines` makes of it is held
against one engine reading every partition, against itself restored from a checkpoint,
and its shared kill switch and order ids are checked on their own.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import Parts, contributions, scope_positions
from riskguard.engine import Engine
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.partitions import SLOT_SHIFT, PartitionEngines
from riskguard.limits import parse
from riskguard.limits.scale import is_summed, summed_rules
from riskguard.snapshot import capture, decode, freeze, restore, serialise
from riskguard.state.codes import O_OPEN
from riskguard.testing import FakeClock
from riskguard.vocabulary import STATES, Transition
from tests.builders import MS, T0, batches, partition_of, rules_toml

ACCOUNTS = [f"a{i}" for i in range(6)]
SYMBOLS = "XYZ"
LIMITS = rules_toml(
    # local: judged by the engine holding the account (or the order)
    'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
    'max = 6\naction = "halt"',
    'name = "acct-pos"\nmetric = "position_qty"\nscope = "account"\nmax = 20\n'
    'action = "reduce_only"',
    'name = "acct-open"\nmetric = "open_orders"\nscope = "account"\nmax = 3\naction = "alert"',
    'name = "acct-net"\nmetric = "net_notional"\nscope = "account"\nmax = 60\naction = "halt"',
    'name = "fat-finger"\nmetric = "order_qty"\nscope = "firm"\nmax = 7\naction = "halt"',
    # summed: counted and valued here, judged on the members' sums
    'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
    'max = 3\naction = "halt"',
    'name = "firm-cxl"\nmetric = "cancel_ratio"\nscope = "firm"\nwindow_ms = 1000\n'
    'max = 0.5\naction = "halt"',
    'name = "firm-fills"\nmetric = "fill_notional_rate"\nscope = "firm"\nwindow_ms = 1000\n'
    'max = 10\naction = "halt"',
    'name = "desk-net"\nmetric = "net_notional"\nscope = "strategy"\nmax = 50\naction = "halt"',
    'name = "desk-open"\nmetric = "open_orders"\nscope = "strategy"\nmax = 2\naction = "halt"',
    'name = "firm-pnl"\nmetric = "pnl"\nscope = "firm"\nmax = 5\naction = "halt"',
)


def flow(seed: int, n: int) -> list[wire.Event]:
    """Orders, fills, cancels, marks and heartbeats over six accounts and three symbols,
    1 to 3 ms apart (a fill 1 ns after its order). Every symbol is marked first: a
    symbol no mark has reached is valued at the last fill *of its partition* (one engine:
    of any partition), a difference group mode documents."""
    rng = random.Random(seed)
    t = T0
    out: list[wire.Event] = [wire.Mark(ts=t, symbol=s, price=10.0) for s in SYMBOLS]
    working: dict[str, tuple[dict[str, Any], float]] = {}  # order id -> its fields, left

    def fill(oid: str, qty: float, at: int) -> None:
        order, left = working.pop(oid)
        out.append(wire.Fill(ts=at, qty=qty, exec_id=f"x{at}", **order))
        if qty < left:
            working[oid] = (order, left - qty)

    for k in range(n):
        t += rng.randint(1, 3) * MS
        r = rng.random()
        if r < 0.45 or not working:
            order: dict[str, Any] = {
                "order_id": f"o{k}",
                "account": rng.choice(ACCOUNTS),
                "strategy": rng.choice(("s1", "s2")),
                "symbol": rng.choice(SYMBOLS),
                "side": rng.choice(("buy", "sell")),
                "price": round(rng.uniform(9, 11), 2),
            }
            qty = float(rng.randint(1, 8))
            out.append(wire.NewOrder(ts=t, qty=qty, **order))
            working[f"o{k}"] = (order, qty)
            if rng.random() < 0.5:
                fill(f"o{k}", qty, t + 1)
        elif r < 0.6:
            order, _ = working.pop(rng.choice(sorted(working)))
            named = ("order_id", "account", "strategy", "symbol")
            keys: dict[str, Any] = {f: order[f] for f in named}
            out.append(wire.CancelOrder(ts=t, **keys))
        elif r < 0.8:
            oid = rng.choice(sorted(working))
            fill(oid, min(working[oid][1], float(rng.randint(1, 4))), t)
        elif r < 0.95:
            price = round(rng.uniform(8, 12), 2)
            out.append(wire.Mark(ts=t, symbol=rng.choice(SYMBOLS), price=price))
        else:
            out.append(wire.Heartbeat(ts=t, source="algo"))
    return out


def tp(p: int) -> TopicPartition:
    return TopicPartition("in", p)


def member(
    partitions: int, clock: FakeClock | None = None, limits: str = LIMITS
) -> PartitionEngines:
    """A group member owning partitions ``0..partitions-1`` of topic ``in``, its home
    engine built as the Sidecar builds it in group mode."""
    home = Engine(parse(limits), clock=clock or FakeClock(T0), warm=False, values_only=is_summed)
    parts = PartitionEngines(home)
    for p in range(partitions):
        parts.add(tp(p), parts.fresh())
    return parts


def decided(transitions: list[Transition]) -> list[tuple[Any, ...]]:
    """The transitions, comparable across engines: what, where, on which evidence."""
    return sorted((t.scope, t.from_, t.to, t.rule, t.kind, t.ts, t.id) for t in transitions)


def near(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_same_parts(got: Parts, want: Parts) -> None:
    """Equal parts, a scope left out counting as 0 (a sum of parts may be 0 exactly)."""
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name])
        for g, w in zip(got[name], want[name], strict=True):
            for scope in g.keys() | w.keys():
                zeros: list[float | None] = [0.0] * len(g.get(scope) or w.get(scope) or [])
                a, b = g.get(scope) or zeros, w.get(scope) or zeros
                assert all(near(x, y) for x, y in zip(a, b, strict=True)), (name, scope, a, b)


MONEY = ("gross_notional", "net_notional", "pnl", "potential_gross_notional")


def assert_same_accounts(
    parts: PartitionEngines, one: Engine, partitions: int, *, money: bool, path: bool = True
) -> None:
    """Each account's values in the engine of its partition are one engine's: every one,
    or (``money`` False) all but those a mark moves, and (``path`` False) all but the
    drawdown."""
    for account in ACCOUNTS:
        holder = parts.engines[tp(partition_of(account, partitions))]
        mine, theirs = (e.scope_values(f"account:{account}") for e in (holder, one))
        left_out = (() if money else MONEY) + (() if path and money else ("drawdown",))
        for key in left_out:
            del mine[key], theirs[key]
        assert mine == theirs, account


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(1, 120),
    partitions=st.integers(1, 4),
    alone=st.booleans(),
    revalue_ms=st.sampled_from((0, 100)),
)
def test_partition_engines_judge_and_count_what_one_engine_does(
    seed: int, n: int, partitions: int, alone: bool, revalue_ms: int
) -> None:
    same_as_one_engine(seed, n, partitions, alone, revalue_ms)


def same_as_one_engine(seed: int, n: int, partitions: int, alone: bool, revalue_ms: int) -> None:
    """One engine per partition, over the stream split as a group member reads it, holds
    what one engine reading every partition holds of each account (positions, values,
    after every batch), applies as many events, decides the same transitions (a firm
    halt decided in one partition stands in all, and is not decided again), and its
    summed rules' parts add up to one engine's.

    Every symbol is marked before it trades (:func:`flow`): an unmarked symbol is valued
    at the last fill of its partition by design. Values a mark moves are compared
    between batches, and a money rule's decisions and the drawdown at all, only when
    each broadcast event is read in every partition before any later event (``alone``):
    a mark is applied in one engine at the first partition's copy, in a partition's
    engine at its own copy, so the accounts of a partition read behind are valued on
    another mark for a while (the session high of P&L is a path)."""
    stream = flow(seed, n)
    limits = f"revalue_ms = {revalue_ms}\n{LIMITS}"
    parts = member(partitions, limits=limits)
    one = Engine(parse(limits), clock=FakeClock(T0), warm=False, values_only=is_summed)
    got: list[Transition] = []
    want: list[Transition] = []
    copies = 0
    for events, where in batches(stream, partitions, seed, broadcast_alone=alone):
        got += parts.apply(events, where).transitions
        result = one.apply(events, where)
        want += result.transitions
        copies += result.duplicates
        assert_same_accounts(parts, one, partitions, money=alone)  # what status reads
    got += parts.settle()
    want += one.settle()
    if not alone:  # a money rule may be decided on another mark: at another time
        got, want = ([t for t in ts if t.rule != "acct-net"] for ts in (got, want))
    assert decided(got) == decided(want)
    # one engine takes the other partitions' copies of a mark for redeliveries (copies
    # of older marks and of heartbeats it applies); each partition's engine applies its own
    marks = sum(isinstance(e, wire.Mark) for e in stream)
    assert copies <= (partitions - 1) * marks
    assert parts.events_applied == one.events_applied + copies
    broadcast = marks + sum(isinstance(e, wire.Heartbeat) for e in stream)
    assert one.events_applied + copies == len(stream) + (partitions - 1) * broadcast
    owned = {k: v for k, v in parts.positions().items() if k[0].startswith("account:")}
    assert owned == {k: v for k, v in one.positions().items() if k[0].startswith("account:")}
    assert_same_accounts(parts, one, partitions, money=True, path=alone)
    for account in ACCOUNTS:
        for engine in parts.all():
            if engine is not parts.engines[tp(partition_of(account, partitions))]:
                assert not any(o == f"account:{account}" for o, _ in engine.positions())
    summed = [r.name for r in summed_rules(parts.limits)]
    now = one.last_event_ns
    assert parts.last_event_ns == now
    assert_same_parts(parts.contributions(summed, now), contributions(one, summed, now))
    for scope in ("firm", "strategy:s1", "symbol:X", "venue:XNAS"):
        mine, theirs = parts.scope_positions(scope), scope_positions(one, scope)
        assert mine.keys() == theirs.keys()
        assert all(near(mine[s], theirs[s]) for s in theirs), scope


def only(
    label: str, events: list[wire.Event], where: Coordinates
) -> tuple[list[wire.Event], Coordinates]:
    """The events of partition ``label`` of a batch, as a consumer reading it alone gets
    them (same offsets)."""
    ((first, end),) = [(f, e) for lab, f, e in where.parts() if lab == label] or [(0, 0)]
    mine = Coordinates()
    mine.partition(label)
    for j in range(first, end):
        mine.add(int(where[j].rpartition("@")[2]), b"")
    return events[first:end], mine


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 120),
    partitions=st.integers(1, 3),
    cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
    which=st.integers(0, 2),
    as_file=st.booleans(),
)
def test_a_partition_restored_from_its_checkpoint_reads_on_as_if_never_moved(
    seed: int, n: int, partitions: int, cuts: list[float], which: int, as_file: bool
) -> None:
    moved_as_never(seed, n, partitions, cuts, which, as_file)


def moved_as_never(
    seed: int, n: int, partitions: int, cuts: list[float], which: int, as_file: bool
) -> None:
    """A partition checkpointed between two batches, read on by its owner for a while,
    then moved (its owner died, or handed it over: the checkpoint is then its latest
    batch's): the new owner restores the checkpoint into a fresh engine, owns it, judges
    up to the member's clock as group.py does, and reads the partition again from the
    checkpoint's offset. Nothing read again is decided again (a resolve of an alert
    raised then is sent again, as after a restart: judging.py), and the partition's engine
    then holds what it holds having read everything once: positions, every value of
    its accounts, raised alerts; every transition is decided exactly once."""
    stream = batches(flow(seed, n), partitions, seed, broadcast_alone=True)
    taken, moved_at = (int(c * len(stream)) for c in cuts)
    moved = tp(which % partitions)
    label = f"{moved.topic}/{moved.partition}"
    whole, run = member(partitions), member(partitions)
    want: list[Transition] = []
    got: list[Transition] = []
    data = b""
    for k, (events, where) in enumerate(stream):
        if k == taken:
            engine = run.engines[moved]
            offset = {label: engine.events_applied}
            data = capture(engine, offset) if as_file else serialise(freeze(engine, offset))
        if k == moved_at:
            run.drop(moved)
            fresh = run.fresh()
            assert restore(fresh, decode(data, Path(f"snapshot-{k}.rgs"))) == []
            run.add(moved, fresh)
            judged = max(run.last_event_ns, run.judged_ns)
            if judged > 0:
                fresh.judge_until(judged)
            fresh.count_at_own_time(True)
            for again in stream[taken:moved_at]:  # its events from the checkpoint's offset
                for tr in run.apply(*only(label, *again)).transitions:  # sent before
                    assert tr.kind == "resolve" and tr.id in {t.id for t in got}, tr
            run.count_at_own_time(False)  # read to the end
        want += whole.apply(events, where).transitions
        got += run.apply(events, where).transitions
    want += whole.settle()
    got += run.settle()
    assert decided(got) == decided(want)
    mine, theirs = run.engines[moved], whole.engines[moved]
    assert mine.events_applied == theirs.events_applied
    assert mine.positions() == theirs.positions()
    assert mine.raised_alerts() == theirs.raised_alerts()
    for account in ACCOUNTS:
        scope = f"account:{account}"
        assert mine.scope_values(scope) == theirs.scope_values(scope), scope
        assert run.killswitch.state(scope) == whole.killswitch.state(scope)


def test_a_partition_read_after_another_entered_the_next_revaluation_epoch_is_in_it() -> None:
    """Found by the property above: one engine enters a revaluation epoch (applies the
    price moves queued before it) with the first event in it, from any partition; a
    partition's engine moved its clock up to that time but kept the epoch before, so its
    accounts were valued on older prices (a drawdown off, money rules decided later)."""
    same_as_one_engine(seed=240717, n=45, partitions=2, alone=True, revalue_ms=100)


def test_a_partition_moved_back_is_judged_up_to_the_latest_event_of_one_dropped() -> None:
    """Found by the property above: the member's clock (what a partition gained is judged
    up to) was the latest of its engines' only; dropping the one read furthest took it
    back, and the partition read again from its checkpoint paged its alerts again."""
    moved_as_never(seed=292137, n=42, partitions=1, cuts=[0.23, 0.48], which=0, as_file=False)
    parts = member(2)
    account = next(a for a in ACCOUNTS if partition_of(a, 2) == 1)
    order = wire.NewOrder(ts=T0 + 5 * MS, order_id="o", account=account, strategy="s1",
                          symbol="X", side="buy", qty=1.0, price=10.0)  # fmt: skip
    for events, where in batches([order], 2, seed=0):
        parts.apply(events, where)
    parts.drop(tp(1))
    assert parts.last_event_ns == T0 + 5 * MS


def test_a_partition_read_again_behind_the_clock_enters_its_own_epochs() -> None:
    """Found by the property above: while a partition restored is read at its own time
    (behind the others), its events enter their own revaluation epochs, as when first
    read; moved into the clock's epoch, its marks were applied an epoch late."""
    moved_as_never(seed=931896, n=52, partitions=2, cuts=[0.69, 0.98], which=0, as_file=False)


# the shared kill switch -------------------------------------------------------------


def state_in(engine: Engine, scope: str) -> str:
    """The state latched for ``scope`` in ``engine``'s own SCOPE records."""
    sid = engine.keys.find_scope(scope)
    if sid is None:
        return "unknown"
    return ("ACTIVE", "REDUCE_ONLY", "HALTED")[int(engine.store.state.scopes["state"][sid])]


def judged_in(engine: Engine, scope: str) -> int:
    sid = engine.keys.find_scope(scope)
    assert sid is not None
    return int(engine.store.state.scopes["judged_ns"][sid])


def test_a_halt_resume_adoption_and_restore_stand_in_every_engine() -> None:
    clock = FakeClock(T0 + 10 * MS)
    parts = member(2, clock)
    ks = parts.killswitch
    everyone = [parts.home, *parts.all()]
    assert ks.halt("account:a1", "ops", "drill") is not None
    assert {state_in(e, "account:a1") for e in everyone} == {"HALTED"}
    clock.advance(ms=5)
    resumed = ks.resume("account:a1", "ops", "done")
    assert resumed is not None
    assert {state_in(e, "account:a1") for e in everyone} == {"ACTIVE"}
    assert {judged_in(e, "account:a1") for e in everyone} == {clock.now_ns}
    peer = Transition(
        id="strategy:s1@peer",
        scope="strategy:s1",
        from_="ACTIVE",
        to="REDUCE_ONLY",
        kind="manual",
        ts=clock.now_ns,
        decided_ns=clock.now_ns,
        operator="bob",
        reason="peer",
    )
    assert ks.adopt(peer) == "adopted"
    assert {state_in(e, "strategy:s1") for e in everyone} == {"REDUCE_ONLY"}
    journal = Transition(
        id="symbol:Z@journal",
        scope="symbol:Z",
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=T0,
        decided_ns=T0 + 3 * MS,
        operator="carol",
        reason="exchange halt",
    )
    assert ks.restore(journal)
    assert {state_in(e, "symbol:Z") for e in everyone} == {"HALTED"}
    assert {judged_in(e, "symbol:Z") for e in everyone} == {T0 + 3 * MS}
    gained = parts.fresh()
    parts.add(tp(2), gained)  # latched at once: standing states and judged times
    assert (state_in(gained, "symbol:Z"), judged_in(gained, "symbol:Z")) == ("HALTED", T0 + 3 * MS)
    assert state_in(gained, "strategy:s1") == "REDUCE_ONLY"
    assert (state_in(gained, "account:a1"), judged_in(gained, "account:a1")) == (
        "ACTIVE",
        resumed.decided_ns,
    )
    lost = parts.drop(tp(0))
    assert lost is not None
    assert ks.halt("firm", "ops", "all stop") is not None
    assert state_in(lost, "firm") == "ACTIVE"  # detached: no longer written
    assert {state_in(e, "firm") for e in [parts.home, *parts.all()]} == {"HALTED"}


def test_a_kernel_decision_in_one_partition_stands_in_every_engine_after_the_batch() -> None:
    """An account rule breached in partition 1's engine, a firm-wide per-order rule in
    partition 0's: both stand in every engine (home too) once the batch is applied, and
    the firm halt is not decided again by partition 1's fat order after it."""
    parts = member(2)
    mine, other = (next(a for a in ACCOUNTS if partition_of(a, 2) == p) for p in (1, 0))
    keys: dict[str, Any] = {"strategy": "s1", "symbol": "X", "side": "buy", "price": 10.0}
    events = [
        wire.NewOrder(ts=T0 + k * MS, order_id=f"o{k}", qty=1.0, account=mine, **keys)
        for k in range(7)
    ] + [
        wire.NewOrder(ts=T0 + 9 * MS, order_id="fat0", qty=8.0, account=other, **keys),
        wire.NewOrder(ts=T0 + 10 * MS, order_id="fat1", qty=8.0, account=mine, **keys),
    ]
    out: list[Transition] = []
    for batch, where in batches(events, 2, seed=0):
        out += parts.apply(batch, where).transitions
    assert sorted((t.scope, t.to, t.rule) for t in out if not t.is_alert) == [
        (f"account:{mine}", "HALTED", "acct-rate"),
        ("firm", "HALTED", "fat-finger"),
    ]
    for engine in [parts.home, *parts.all()]:
        assert state_in(engine, f"account:{mine}") == "HALTED"
        assert state_in(engine, "firm") == "HALTED"
    assert parts.killswitch.state(f"account:{mine}") == "HALTED"
    assert set(parts.killswitch.standing()) == {f"account:{mine}", "firm"}


SCOPES = ("firm", "account:a0", "account:a1", "account:a2", "strategy:s1", "symbol:X")
ACTIONS = ("halt", "reduce_only")
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("halt"), st.sampled_from(SCOPES), st.sampled_from(("halt", "reduce_only"))
        ),
        st.tuples(st.just("resume"), st.sampled_from(SCOPES), st.just("")),
        st.tuples(st.just("adopt"), st.sampled_from(SCOPES), st.sampled_from(STATES)),
        st.tuples(st.just("restore"), st.sampled_from(SCOPES), st.sampled_from(STATES)),
        st.tuples(st.just("add"), st.integers(0, 2), st.just("")),
        st.tuples(st.just("drop"), st.integers(0, 2), st.just("")),
        st.tuples(st.just("order"), st.sampled_from(ACCOUNTS[:3]), st.integers(1, 9)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_every_engine_attached_holds_the_kill_switchs_states(
    ops: list[tuple[str, Any, Any]],
) -> None:
    """Whatever is done through the member's kill switch (halts, resumes, another
    instance's states adopted, the journal's restored), decided by a partition's kernel
    (an account's order rate, a firm-wide fat finger), and whichever partitions are
    gained and lost meanwhile: every engine attached holds the state the kill switch
    reads, for every scope, after every step; a resumed scope is judged up to its resume
    in each."""
    clock = FakeClock(T0)
    parts = member(2, clock)
    for k, (op, what, arg) in enumerate(ops):
        clock.advance(ms=1)
        ks = parts.killswitch
        if op == "halt":
            ks.halt(what, "ops", "drill", action=arg)
        elif op == "resume":
            ks.resume(what, "ops", "done")
        elif op in ("adopt", "restore"):
            tr = Transition(id=f"{what}@{k}", scope=what, from_="ACTIVE", to=arg,
                            kind="manual", ts=clock.now_ns, decided_ns=clock.now_ns,
                            operator="peer", reason="peer")  # fmt: skip
            ks.adopt(tr) if op == "adopt" else ks.restore(tr)
        elif op == "add":
            parts.add(tp(what), parts.fresh())
        elif op == "drop":
            parts.drop(tp(what))
        else:
            order = wire.NewOrder(ts=clock.now_ns, order_id=f"o{k}", account=what,
                                  strategy="s1", symbol="X", side="buy", qty=float(arg),
                                  price=10.0)  # fmt: skip
            owner = tp(partition_of(what, 2))
            if owner in parts.engines:
                for events, where in batches([order], 2, seed=k):
                    parts.apply(events, where)
        for engine in [parts.home, *parts.all()]:
            for scope in SCOPES:
                held = state_in(engine, scope)
                assert held == ks.state(scope) or (held, ks.state(scope)) == ("unknown", "ACTIVE")
                last = ks.latest(scope)
                if last is not None and last.to == "ACTIVE" and last.kind == "manual":
                    assert judged_in(engine, scope) >= last.decided_ns


# order ids --------------------------------------------------------------------------


def test_order_ids_name_the_partition_and_a_dropped_partitions_read_not_working() -> None:
    parts = member(3)
    by_part = {p: next(a for a in ACCOUNTS if partition_of(a, 3) == p) for p in range(3)}
    events: list[wire.Event] = []
    for p, account in by_part.items():
        for k in range(2):
            events.append(
                wire.NewOrder(ts=T0 + (3 * p + k) * MS, order_id=f"p{p}-{k}", account=account,
                              strategy="s1", symbol="X", side="buy", qty=1.0, price=10.0)
            )  # fmt: skip
    for batch, where in batches(events, 3, seed=1):
        parts.apply(batch, where)
    oids = parts.working_order_ids("firm")
    assert sorted(o.order_id for o in parts.describe_orders(oids)) == sorted(
        f"p{p}-{k}" for p in range(3) for k in range(2)
    )
    for order, oid in zip(parts.describe_orders(oids), oids.tolist(), strict=True):
        assert parts.find_order(order.order_id) == oid
        holder = parts.engines[tp(int(order.order_id[1]))]
        assert holder.find_order(order.order_id) == oid & ((1 << SLOT_SHIFT) - 1)
    status, serial = parts.order_lives(oids)
    assert (status == O_OPEN).all() and (serial >= 0).all()
    assert len({int(o) >> SLOT_SHIFT for o in oids}) == 3
    dropped = parts.find_order("p1-0")
    assert dropped is not None
    parts.drop(tp(1))
    status, serial = parts.order_lives(oids)
    gone = (oids >> SLOT_SHIFT) == (dropped >> SLOT_SHIFT)
    assert gone.sum() == 2
    assert (status[gone] == -1).all() and (serial[gone] == -1).all()
    assert (status[~gone] == O_OPEN).all()
    with pytest.raises(KeyError, match="no longer owned"):
        parts.describe_orders(np.array([dropped], dtype=np.int64))
    assert parts.find_order("p1-0") is None
    assert sorted(o.order_id for o in parts.describe_orders(parts.working_order_ids("firm"))) == [
        "p0-0", "p0-1", "p2-0", "p2-1"
    ]  # fmt: skip
