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

from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import Parts, contributions, scope_positions
from riskguard.engine import Engine
from riskguard.ingest.coordinates import Coordinates
from riskguard.ingest.partitions import PartitionEngines
from riskguard.limits import parse
from riskguard.limits.scale import is_summed, summed_rules
from riskguard.snapshot import capture, decode, freeze, restore, serialise
from riskguard.testing import FakeClock
from riskguard.vocabulary import Transition
from tests.builders import MS, T0, batches, partition_of, rules_toml

ACCOUNTS = [f"a{i}" for i in range(6)]
SYMBOLS = "XYZ"
RULES = (
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
LIMITS = rules_toml(*RULES)


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
    between batches, and an account money rule and the drawdown at all, only when each
    broadcast event is read in every partition before any later event (``alone``) and
    every move applies at once (``revalue_ms`` 0): a mark is applied in one engine at
    the first partition's copy, in a partition's engine at its own copy; and with
    revaluation epochs a symbol no account of a partition holds takes a mark there at
    once, where one engine (some partition holding it) waits for the next epoch. So an
    account is valued on another price for a while (the session high of P&L is a path).
    With epochs, no engine keeps a move waiting past the epoch of the member's clock
    after a batch (one engine entered it, in whichever partition)."""
    stream = flow(seed, n)
    exact = alone and revalue_ms == 0
    rules = rules_toml(*(r for r in RULES if exact or "acct-net" not in r))
    limits = f"revalue_ms = {revalue_ms}\n{rules}"
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
        assert_same_accounts(parts, one, partitions, money=exact)  # what status reads
        for engine in parts.all() if revalue_ms else ():
            g = engine.store.state.globals
            if int(g["first_pending"][0]) >= 0:
                assert int(g["epoch"][0]) == parts.last_event_ns // (revalue_ms * MS)
    got += parts.settle()
    want += one.settle()
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
    assert_same_accounts(parts, one, partitions, money=True, path=exact)
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


def alerts(engine: Engine) -> list[tuple[Any, ...]]:
    """The engine's raised alerts by scope name (ids are the engine's own: a partition
    gained interns the kill switch's standing scopes before its events')."""
    names = engine.keys.scope_names
    return sorted(
        (r, names[s], bit, tid, limit) for r, s, bit, tid, limit in engine.raised_alerts()
    )


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
    revalue_ms=st.sampled_from((0, 100)),
)
def test_a_partition_restored_from_its_checkpoint_reads_on_as_if_never_moved(
    seed: int,
    n: int,
    partitions: int,
    cuts: list[float],
    which: int,
    as_file: bool,
    revalue_ms: int,
) -> None:
    moved_as_never(seed, n, partitions, cuts, which, as_file, revalue_ms)


def moved_as_never(
    seed: int,
    n: int,
    partitions: int,
    cuts: list[float],
    which: int,
    as_file: bool,
    revalue_ms: int = 0,
    *,
    drawdown: bool = False,
) -> None:
    """A partition checkpointed between two batches, read on by its owner for a while,
    then moved (its owner died, or handed it over: the checkpoint is then its latest
    batch's): the new owner restores the checkpoint into a fresh engine, owns it, judges
    up to the member's clock as group.py does, and reads the partition again from the
    checkpoint's offset. Nothing read again is decided again (a resolve of an alert
    raised then is sent again, as after a restart: judging.py), and the partition's engine
    then holds what it holds having read everything once: positions, every value of
    its accounts, raised alerts; every transition is decided exactly once.

    With revaluation epochs (``revalue_ms``) an account's drawdown is left out: read
    live, a partition enters each epoch when any partition reaches it (as one engine
    does); read again at its own time, when its own events do, so its fills in between
    are valued at their own prices for a while (the session high of P&L is a path);
    ``drawdown`` compares it still."""
    stream = batches(flow(seed, n), partitions, seed, broadcast_alone=True)
    taken, moved_at = (int(c * len(stream)) for c in cuts)
    moved = tp(which % partitions)
    label = f"{moved.topic}/{moved.partition}"
    limits = f"revalue_ms = {revalue_ms}\n{LIMITS}"
    whole, run = member(partitions, limits=limits), member(partitions, limits=limits)
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
    assert alerts(mine) == alerts(theirs)
    for account in ACCOUNTS:
        scope = f"account:{account}"
        values, reference = mine.scope_values(scope), theirs.scope_values(scope)
        if revalue_ms and not drawdown:
            del values["drawdown"], reference["drawdown"]
        assert values == reference, scope
        assert run.killswitch.state(scope) == whole.killswitch.state(scope)


def test_a_partition_read_after_another_entered_the_next_revaluation_epoch_is_in_it() -> None:
    """Found by the property above: one engine enters a revaluation epoch (applies the
    price moves queued before it) with the first event in it, from any partition; a
    partition's engine moved its clock up to that time but kept the epoch before, so its
    accounts were valued on older prices (a drawdown off, money rules decided later)."""
    same_as_one_engine(seed=240717, n=45, partitions=2, alone=True, revalue_ms=100)


def test_a_partition_moved_back_is_judged_up_to_the_latest_event_of_one_dropped() -> None:
    """The member's clock (what a partition gained is judged up to, group.py) was the
    latest of its engines' only, the home engine's moved by broadcast events alone:
    dropping the partition read furthest took it back, and a partition then read again
    from an older checkpoint would decide (page) again what was decided."""
    parts = member(1)
    order = wire.NewOrder(ts=T0 + 5 * MS, order_id="o", account="a0", strategy="s1",
                          symbol="X", side="buy", qty=1.0, price=10.0)  # fmt: skip
    for events, where in batches([order], 1, seed=0):
        parts.apply(events, where)
    parts.drop(tp(0))
    assert parts.last_event_ns == T0 + 5 * MS


def test_a_partition_read_again_behind_the_clock_enters_its_own_epochs() -> None:
    """Found by the property above: while a partition restored is read at its own time
    (behind the others), its events enter their own revaluation epochs, as before
    PartitionEngines moved a live partition into the epoch another had reached; moved
    there too, the marks it read again were applied at batch ends, and the drawdown of
    its accounts left the one it had read live."""
    moved_as_never(
        seed=931896,
        n=52,
        partitions=2,
        cuts=[0.69, 0.98],
        which=0,
        as_file=False,
        revalue_ms=100,
        drawdown=True,
    )


def test_a_partition_read_from_its_start_far_behind_the_clock_keeps_its_pnl_path() -> None:
    """A partition gained with no checkpoint is read from its start, at its own time,
    10 s behind the member's clock: its accounts' P&L path (the drawdown) is the one a
    member owning it alone had read."""
    limits = f"revalue_ms = 100\n{LIMITS}"
    keys: dict[str, Any] = {"account": "a0", "strategy": "s1", "symbol": "X"}
    history: list[wire.Event] = [
        wire.Mark(ts=T0, symbol="X", price=10.0),
        wire.NewOrder(ts=T0 + MS, order_id="o", side="buy", qty=5.0, price=10.0, **keys),
        wire.Fill(
            ts=T0 + 2 * MS, order_id="o", side="buy", qty=5.0, price=10.0, exec_id="x", **keys
        ),
        wire.Mark(ts=T0 + 150 * MS, symbol="X", price=12.0),
        wire.Mark(ts=T0 + 250 * MS, symbol="X", price=11.0),
        wire.Heartbeat(ts=T0 + 350 * MS, source="algo"),
    ]
    alone = member(1, limits=limits)
    for events, where in batches(history, 1, seed=0, broadcast_alone=True):
        alone.apply(events, where)
    later = member(1, limits=limits)
    ahead = wire.Heartbeat(ts=T0 + 10_000 * MS, source="algo")
    for events, where in batches([ahead], 1, seed=0):
        later.apply(events, where)  # the member's clock is 10 s on
    engine = later.fresh()
    later.drop(tp(0))
    later.add(tp(0), engine)
    engine.count_at_own_time(True)  # read from its start: history
    for events, where in batches(history, 1, seed=0, broadcast_alone=True):
        later.apply(events, where)
    want = alone.engines[tp(0)].scope_values("account:a0")
    assert want["drawdown"] == 5.0  # the high was +10 at 12, it stands at +5
    assert engine.scope_values("account:a0") == want
