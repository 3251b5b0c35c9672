"""Group mode's engines share one kill switch and hand out order ids that name the
partition's engine (:mod:`riskguard.ingest.partitions`), without a broker. The
engines' values against one engine's, and checkpoints: tests/test_partitions.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.engine import Engine
from riskguard.ingest.partitions import SLOT_SHIFT
from riskguard.state.codes import O_OPEN
from riskguard.testing import FakeClock
from riskguard.vocabulary import STATES, Transition
from tests.builders import MS, T0, batches, partition_of
from tests.test_partitions import ACCOUNTS, member, tp

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
