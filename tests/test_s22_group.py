"""Session 22: wrong numbers and wrong decisions of a group member's engines.

A member's values must be what one engine reading every partition holds for the rules
group mode judges (local ones in the partition's engine, summed ones through the parts
of :meth:`~riskguard.ingest.partitions.PartitionEngines.contributions`). Values are
derived by hand in each test; the property holds the member against one engine on
richer flows than tests/test_partitions.py (currencies, contract sizes, venues,
replaces, rejects, busts, parents, broker positions, states written by the kill switch).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import contributions
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import Contribution, Held, cover
from riskguard.engine import Engine
from riskguard.ingest.coordinates import Coordinates
from riskguard.limits import parse
from riskguard.limits.scale import is_summed, summed_rules
from riskguard.testing import FakeClock
from tests.builders import MS, T0, partition_of, rules_toml
from tests.test_partitions import assert_same_parts, member, tp

# two partitions: D lives in in/0, B in in/1 (partition_of)
assert (partition_of("D", 2), partition_of("B", 2)) == (0, 1)


def one_batch(events: list[wire.Event], partitions: int = 2) -> tuple[list[wire.Event], Coordinates]:
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
