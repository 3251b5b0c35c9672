"""Group mode against one instance reading everything: numbers and decisions.

The contract (docs/deployment.md, Cross-partition rules): the sums of the instances'
parts equal what one instance reading every partition would judge, and the judging
member decides what that instance's kernel would. Each test derives its values by hand
(arithmetic in the comments) and runs the single-instance kernel beside the group's
parts, records and judge (no broker: the sums are plain functions of the records).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import contributions
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import Contribution, Held, Sum, cover, row_sums
from riskguard.engine import Engine
from riskguard.limits import LimitsError, parse
from riskguard.limits.model import Limits
from riskguard.limits.scale import check_group_limits, is_local, is_summed, summed_rules
from tests.builders import MS, T0, rules_toml

WHOLE = {"t/0", "t/1"}


def member(limits: Limits) -> Engine:
    """A group member's engine: summed rules counted, never judged by its kernel."""
    return Engine(limits, event_time=True, warm=False, values_only=is_summed)


def single(limits: Limits) -> Engine:
    """One instance reading everything (single mode: its kernel judges every rule)."""
    return Engine(limits, event_time=True, warm=False)


def new(ms: int, account: str, oid: str, strategy: str = "S", qty: float = 1.0) -> wire.NewOrder:
    return wire.NewOrder(
        ts=T0 + ms * MS,
        order_id=oid,
        account=account,
        strategy=strategy,
        symbol="X",
        side="buy",
        qty=qty,
        price=1.0,
    )


def rec(name: str, partition: str, parts: Any, as_of: int) -> Contribution:
    return Contribution(
        group="g",
        instance=name,
        partitions=(partition,),
        limits_digest="d",
        as_of_ns=as_of,
        sent_ns=as_of,
        parts=parts,
    )


# -- a strategy rule with match.account --------------------------------------------------


def test_a_strategy_rule_by_home_account_is_refused_in_group_mode() -> None:
    """``match.account`` on a strategy rule selects strategies by their home account, the
    first account each traded in. Strategy S trades first in A2 (member b, t = 1 ms),
    then three times in A1 (member a). One instance: home(S) = A2, so the rule for A1
    does not apply to S: no halt. Member a never saw A2: home(S) = A1 there, so its
    part of S (3 open orders) is summed and 3 > max 2 would halt S. The rule was
    accepted as summed (the fault); it is now refused, as a per-order rule by home
    account is (member a would judge S's orders, one instance never would)."""
    limits = parse(
        rules_toml(
            'name = "home"\nmetric = "open_orders"\nscope = "strategy"\nmax = 2\n'
            'action = "halt"\nmatch.account = ["A1"]'
        )
    )
    a_flow = [new(2, "A1", "a2"), new(3, "A1", "a3"), new(4, "A1", "a4")]
    b_flow = [new(1, "A2", "b1")]
    one = single(limits)
    assert one.apply([*b_flow, *a_flow]).transitions == []
    assert one.killswitch.state("strategy:S") == "ACTIVE"  # S is A2's strategy
    a, b = member(limits), member(limits)
    a.apply(a_flow)
    b.apply(b_flow)
    now = T0 + 10 * MS
    records = [rec("a", "t/0", contributions(a, ["home"], now), now)]
    records.append(rec("b", "t/1", contributions(b, ["home"], now), now))
    sums = row_sums(records, "home", 0, "open_orders", 1)
    assert sums is not None and sums["strategy:S"].value == 3.0  # what group mode would judge
    with pytest.raises(LimitsError, match="home account"):
        check_group_limits(limits)
    per_order = parse(
        rules_toml(
            'name = "fat"\nmetric = "order_qty"\nscope = "strategy"\nmax = 5\n'
            'action = "halt"\nmatch.account = ["A1"]'
        )
    )
    assert not is_local(per_order.rules[0]) and not is_summed(per_order.rules[0])
    with pytest.raises(LimitsError, match="home account"):
        check_group_limits(per_order)
    # without match.account a strategy is selected by name: summed, as before; and a
    # restricted-list entry's match.account selects events (judged by the owner)
    by_name = parse(
        rules_toml(
            'name = "desk"\nmetric = "open_orders"\nscope = "strategy"\nmax = 2\n'
            'action = "halt"\nmatch.strategy = ["S"]'
        )
        + '\n[[restricted]]\nname = "r"\nsymbols = ["Z"]\naccounts = ["A1"]\nreason = "MNPI"\n'
    )
    check_group_limits(by_name)
    assert is_summed(by_name.rules[0]) and is_local(by_name.restricted[0])


# -- cancel_ratio: a window with no cancel reads 0, on one instance and on the sums ------


def cxl(ms: int, account: str, oid: str) -> wire.CancelOrder:
    return wire.CancelOrder(ts=T0 + ms * MS, order_id=oid, account=account, strategy="S",
                            symbol="X")  # fmt: skip


def test_a_cancel_ratio_alert_resolves_alike_once_the_window_holds_no_cancel() -> None:
    """Firm cancel_ratio, max 0.5, min_orders 2, window 1 s. Members a and b each send 2
    orders and cancel both: 4 / 4 = 1.0 > 0.5, the alert is raised on one instance and on
    the sums. Then 2 s pass with no event: the windows are empty, the storm is over. One
    instance's next new order reads 0 cancels (0, below min_orders but nothing to alert
    on): the alert resolves; the sums of two empty windows read 0 and resolve it too.
    (Session 20 kept it raised on both, reading 0 / 0 as "not evaluated": an alert that
    never resolved once the flow stopped, session 21.)"""
    limits = parse(
        rules_toml(
            'name = "firm-cxl"\nmetric = "cancel_ratio"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 0.5\nmin_orders = 2\naction = "alert"'
        )
    )
    flows = {
        "a": [new(1, "A1", "a1"), new(2, "A1", "a2"), cxl(3, "A1", "a1"), cxl(4, "A1", "a2")],
        "b": [new(5, "B1", "b1"), new(6, "B1", "b2"), cxl(7, "B1", "b1"), cxl(8, "B1", "b2")],
    }
    one = single(limits)
    out = one.apply(sorted([*flows["a"], *flows["b"]], key=lambda e: e.ts)).transitions
    # 2 / 2 = 1.0 at 4 ms; 2 / 4 = 0.5 at 6 ms (not above 0.5); 3 / 4 = 0.75 at 7 ms;
    # 4 / 4 = 1.0 at 8 ms: raised already
    assert [(t.kind, t.value) for t in out] == [("alert", 1.0), ("resolve", 0.5), ("alert", 0.75)]
    # its next new order, 2 s later: no cancel in the window reads 0: resolved
    [back] = one.apply([new(2_010, "A1", "a9")]).transitions
    assert (back.kind, back.value) == ("resolve", 0.0)
    a, b = member(limits), member(limits)
    a.apply(flows["a"])
    b.apply(flows["b"])
    judge = SumJudge(a)
    rules = summed_rules(limits)

    def round_at(ms: int, offset: int) -> list[Any]:
        now = T0 + ms * MS
        held = {
            "a": Held(offset, rec("a", "t/0", contributions(a, ["firm-cxl"], now), now)),
            "b": Held(offset + 1, rec("b", "t/1", contributions(b, ["firm-cxl"], now), now)),
        }
        return judge.judge(cover(held, WHOLE), rules, "d")

    [raised] = round_at(10, 0)  # (2 + 2) / (2 + 2) = 1.0 > 0.5
    assert (raised.kind, raised.value) == ("alert", 1.0)
    [resolved] = round_at(2_000, 2)  # nothing in either window: 0, the storm is over
    assert (resolved.kind, resolved.value) == ("resolve", 0.0)
    assert judge.raised_edges() == ()


@st.composite
def group_limits(draw: Any) -> Limits:
    """Limits of summed metrics at spanning scopes, some strategy rules by home account."""
    bodies = []
    for i in range(draw(st.integers(1, 4))):
        metric = draw(st.sampled_from(["open_orders", "order_rate", "cancel_ratio", "pnl"]))
        scope = draw(st.sampled_from(["firm", "strategy", "symbol"]))
        body = f'name = "r{i}"\nmetric = "{metric}"\nscope = "{scope}"\naction = "alert"\n'
        body += "min = -1e12\n" if metric == "pnl" else "max = 1e9\n"
        if metric in ("order_rate", "cancel_ratio"):
            body += "window_ms = 1000\n"
        if scope == "strategy" and draw(st.booleans()):
            body += f'match.account = ["{draw(st.sampled_from(ACCOUNTS_IN_FLOWS))}"]\n'
        bodies.append(body)
    return parse(rules_toml(*bodies))


ACCOUNTS_IN_FLOWS = ["A1", "A2", "A3"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_limits(), st.data())
def test_every_rule_group_mode_accepts_sums_to_the_single_instance_value(
    limits: Limits, data: Any
) -> None:
    """For any limits group mode accepts and any split of the accounts over members,
    each summed rule's sum per scope is the value one instance reading everything has
    (a strategy rule by home account, accepted before, failed here)."""
    try:
        check_group_limits(limits)
    except LimitsError:
        return  # refused: group mode never runs it
    flow: list[wire.Event] = [wire.Mark(ts=T0, symbol="X", price=1.0)]
    sent: list[wire.NewOrder] = []
    for i in range(data.draw(st.integers(1, 25))):
        account = data.draw(st.sampled_from(ACCOUNTS_IN_FLOWS))
        strategy = data.draw(st.sampled_from(["S1", "S2"]))
        kind = data.draw(st.sampled_from(["new", "cancel", "fill"]))
        ms = (i + 1) * 7
        if kind == "cancel" and sent:
            o = data.draw(st.sampled_from(sent))
            flow.append(
                wire.CancelOrder(
                    ts=T0 + ms * MS,
                    order_id=o.order_id,
                    account=o.account,
                    strategy=o.strategy,
                    symbol="X",
                )
            )
        elif kind == "fill":
            px = data.draw(st.sampled_from([0.5, 1.0, 2.0]))
            flow.append(
                wire.Fill(
                    ts=T0 + ms * MS,
                    order_id=f"f{i}",
                    exec_id=f"e{i}",
                    account=account,
                    strategy=strategy,
                    symbol="X",
                    side="buy",
                    qty=1.0,
                    price=px,
                )
            )
        else:
            sent.append(new(ms, account, f"o{i}", strategy))
            flow.append(sent[-1])
    owner = {acc: data.draw(st.integers(0, 1)) for acc in ACCOUNTS_IN_FLOWS}
    names = [r.name for r in summed_rules(limits)]
    one = single(limits)
    one.apply(flow)
    members = [member(limits), member(limits)]
    for k, m in enumerate(members):
        m.apply([e for e in flow if getattr(e, "account", None) is None or owner[e.account] == k])
    for e in (one, *members):  # at a revaluation epoch (live: the clock's tick)
        e.settle()
    now = flow[-1].ts
    records = [rec(f"m{k}", f"t/{k}", contributions(m, names, now), now)
               for k, m in enumerate(members)]  # fmt: skip
    want = [rec("one", "t/0", contributions(one, names, now), now)]
    for rule in summed_rules(limits):
        for j in range(len(want[0].parts[rule.name])):
            got = row_sums(records, rule.name, j, rule.metric, rule.min_orders)
            alone = row_sums(want, rule.name, j, rule.metric, rule.min_orders)
            assert got is not None and alone is not None
            for scope in got.keys() | alone.keys():
                g = got[scope].value if scope in got else 0.0
                w = alone[scope].value if scope in alone else 0.0
                assert g == pytest.approx(w, abs=1e-9, nan_ok=True), (rule.name, j, scope)


# -- a resumed scope whose sum stays in breach ---------------------------------------------


def test_a_resumed_scope_still_in_breach_halts_again_on_newer_evidence_of_the_same_sum() -> None:
    """Firm order_rate, max 10, window 1 s (ten 100 ms buckets and the current one): one
    order every 100 ms, even ones in account A (member a), odd ones in B (member b).
    From order 10 on the window holds 11 orders at every order (buckets k-10..k), so
    the count stays 11 > 10. One instance halts at order 10; an operator resumes after
    order 12; order 13 (11 again, newer than the resume) halts the firm again. On the
    sums: a has 5 and b 6 at order 13 (evens 4..12, odds 3..13), 11, the sum the
    judge last judged; it skipped an unchanged sum, so the firm stayed ACTIVE (the
    fault). A resume moves the scope's judged time: the same sum on newer evidence is
    judged again."""
    limits = parse(
        rules_toml(
            'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 10\naction = "halt"'
        )
    )
    flow = [new(100 * k, "A" if k % 2 == 0 else "B", f"o{k}") for k in range(14)]
    one = single(limits)
    [halt] = one.apply(flow[:11]).transitions
    assert (halt.to, halt.value, halt.ts) == ("HALTED", 11.0, T0 + 1_000 * MS)
    one.apply(flow[11:13])
    one.killswitch.resume("firm", "ops", "checked")
    [again] = one.apply(flow[13:]).transitions
    assert (again.to, again.value, again.ts) == ("HALTED", 11.0, T0 + 1_300 * MS)

    a, b = member(limits), member(limits)
    judge = SumJudge(a)
    rules = summed_rules(limits)
    out: dict[int, list[Any]] = {}
    for k, ev in enumerate(flow):
        (a if k % 2 == 0 else b).apply([ev])
        if k == 13:
            a.killswitch.resume("firm", "ops", "checked")  # after order 12 (a's clock)
        now = ev.ts
        held = {
            "a": Held(2 * k, rec("a", "t/0", contributions(a, ["firm-rate"], now), now)),
            "b": Held(2 * k + 1, rec("b", "t/1", contributions(b, ["firm-rate"], now), now)),
        }
        out[k] = judge.judge(cover(held, WHOLE), rules, "d")
    assert [(t.to, t.value, t.ts) for t in out[10]] == [("HALTED", 11.0, T0 + 1_000 * MS)]
    assert out[11] == out[12] == []  # latched
    assert [(t.to, t.value, t.ts) for t in out[13]] == [("HALTED", 11.0, T0 + 1_300 * MS)]
    assert a.killswitch.state("firm") == "HALTED"


# -- a windowed part nobody republished: a dead or restoring member's ---------------------


def test_a_silent_member_s_window_counts_expire_with_their_window() -> None:
    """Firm order_rate, max 10, window 1 s (100 ms buckets). Member b sends 8 orders at
    0..70 ms, publishes its part (8) read at 100 ms, and dies (or restores for minutes:
    its last record keeps speaking for its partitions). Member a, the judge, sends 5
    orders at 5000..5040 ms. One instance reading everything counts 5 at 5040 ms (b's
    orders left the window 4.9 s before): no halt. The judge summed b's frozen 8 with
    a's 5, 13 > 10, and halted the firm (the fault). A part read at 100 ms holds buckets
    up to bucket 1; at 5040 ms the window starts at bucket 50 - 10 = 40: it is all
    expired and counts 0. A part read at 4500 ms (bucket 45 >= 40) still counts: 8 + 5."""
    limits = parse(
        rules_toml(
            'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 10\naction = "halt"'
        )
    )
    rules = summed_rules(limits)

    def case(b_start_ms: int) -> tuple[list[Any], list[Any]]:
        b_flow = [new(b_start_ms + 10 * i, "B", f"b{i}") for i in range(8)]
        a_flow = [new(5_000 + 10 * i, "A", f"a{i}") for i in range(5)]
        one = single(limits)
        alone = one.apply(sorted([*a_flow, *b_flow], key=lambda e: e.ts)).transitions
        a, b = member(limits), member(limits)
        b.apply(b_flow)
        read_b = T0 + (b_start_ms + 100) * MS
        b_rec = rec("b", "t/1", contributions(b, ["firm-rate"], read_b), b.last_event_ns)
        b_rec = msgspec.structs.replace(b_rec, read_ns=read_b)
        a.apply(a_flow)
        now = a.clock()  # the judge's clock: 5040 ms
        a_rec = rec("a", "t/0", contributions(a, ["firm-rate"], now), now)
        a_rec = msgspec.structs.replace(a_rec, read_ns=now)
        held = {"a": Held(1, a_rec), "b": Held(0, b_rec)}
        return alone, SumJudge(a).judge(cover(held, WHOLE), rules, "d")

    alone, summed = case(0)
    assert alone == [] and summed == []  # 5 of 10, not 13
    # b's record read at 100 ms on a clock 4.95 s behind the judge's: read at 5050 ms by
    # the judge's clock, fresh; b's 8 orders count (its window holds them at its 190 ms)
    b_late = msgspec.structs.replace(
        rec("b", "t/1", {"firm-rate": [{"firm": [8.0]}]}, T0 + 70 * MS), read_ns=T0 + 100 * MS
    )
    a_now = rec("a", "t/0", {"firm-rate": [{"firm": [5.0]}]}, T0 + 5_040 * MS)
    for lag, want in (({}, 5.0), ({"b": 4_950 * MS}, 13.0)):
        got = row_sums([a_now, b_late], "firm-rate", 0, "order_rate", 1, window_ms=1000,
                       now_ns=T0 + 5_040 * MS, lag=lag)  # fmt: skip
        assert got is not None and got["firm"].value == want
    alone, summed = case(4_400)  # b's orders at 4400..4470 ms: in the window at 5040 ms
    assert [(t.to, t.value) for t in alone] == [("HALTED", 11.0)]  # at a's third order
    assert [(t.to, t.value) for t in summed] == [("HALTED", 13.0)]  # 8 + 5, read later


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_window_sums_never_count_what_one_instance_has_dropped(data: Any) -> None:
    """For any orders split over two members, each silent from some time on (its last
    record read then, no event of its accounts after), the windowed sums at any later
    time are at least what one instance counts then (nothing missed) and equal it when
    each record is fresh or wholly out of the window (nothing dropped counted)."""
    window = data.draw(st.sampled_from([300, 1000]))
    limits = parse(
        rules_toml(
            f'name = "w"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = {window}\n'
            'max = 1e9\naction = "halt"',
            f'name = "c"\nmetric = "cancel_ratio"\nscope = "firm"\nwindow_ms = {window}\n'
            'max = 1e9\naction = "alert"',
        )
    )
    owner = {acc: data.draw(st.integers(0, 1)) for acc in ACCOUNTS_IN_FLOWS}
    silent = [data.draw(st.sampled_from([None, 200, 900, 2500])) for _ in range(2)]
    times = sorted(data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=30)))
    flow: list[wire.Event] = []
    for i, ms in enumerate(times):
        account = data.draw(st.sampled_from(ACCOUNTS_IN_FLOWS))
        stop = silent[owner[account]]
        if stop is not None and ms > stop:
            continue  # nobody reads the silent member's partitions
        flow.append(new(ms, account, f"o{i}"))
        if data.draw(st.booleans()):
            flow.append(wire.CancelOrder(ts=T0 + ms * MS, order_id=f"o{i}", account=account,
                                         strategy="S", symbol="X"))  # fmt: skip
    now = T0 + (times[-1] + data.draw(st.sampled_from([0, 100, 1200, 2500]))) * MS
    one = single(limits)
    one.apply(flow)
    records = []
    for k in range(2):
        m = member(limits)
        m.apply([e for e in flow if owner[e.account] == k])  # type: ignore[attr-defined]
        stop = silent[k]
        read = now if stop is None else min(now, T0 + stop * MS)
        part = rec(f"m{k}", f"t/{k}", contributions(m, ["w", "c"], read), max(0, m.last_event_ns))
        records.append(msgspec.structs.replace(part, read_ns=read))
    whole = rec("one", "t/0", contributions(one, ["w", "c"], now), now)
    whole = msgspec.structs.replace(whole, read_ns=now)
    # wholly out of the window: read (and last counted) at least 1.2 windows before now
    # (the window's 11 buckets span 1.1 windows, plus at most one bucket of alignment)
    exact = all(
        r.read_ns == now or now - max(r.read_ns, r.as_of_ns) >= window * MS * 12 // 10
        for r in records
    )
    for rule, metric in (("w", "order_rate"), ("c", "cancel_ratio")):
        got = row_sums(records, rule, 0, metric, 1, window_ms=window, now_ns=now)
        want = row_sums([whole], rule, 0, metric, 1, window_ms=window, now_ns=now)
        assert got is not None and want is not None
        g = got.get("firm", Sum(0.0, 0)).value
        w = want.get("firm", Sum(0.0, 0)).value
        if exact:
            assert g == pytest.approx(w, nan_ok=True), rule
        elif metric == "order_rate":
            assert g >= w, rule


# -- lateness against the group's clock ---------------------------------------------------


def test_events_of_a_partition_delivered_behind_count_as_now_on_its_member_too() -> None:
    """Firm order_rate, max 10, window 1 s; lateness 1 s. Partition 0 (account A, member
    a) carries orders stamped 2000..2500 ms; partition 1 (account B, member b) is
    delivered 2 s behind: orders stamped 0..500 ms, each arriving after an A order.
    One instance reading both: each B order is 2 s behind its clock (the latest A
    order), late, so it counts as now: 6 + 6 = 12 in the window at 2500 ms, halted at
    the 11th. Member b knew only B's times: on time, counted at 0..500 ms, out of the
    window at 2500 ms: the sums said 6 + 0 (the fault). Following the group's clock
    (the latest event time of the other members' records), b counts them as now."""
    limits = parse(
        rules_toml(
            'name = "r"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 10\naction = "halt"'
        )
    )
    a_flow = [new(2_000 + 100 * i, "A", f"a{i}") for i in range(6)]
    b_flow = [new(100 * i, "B", f"b{i}") for i in range(6)]
    one = single(limits)
    arrival = [ev for pair in zip(a_flow, b_flow, strict=True) for ev in pair]
    [halt] = one.apply(arrival).transitions
    assert (halt.to, halt.value) == ("HALTED", 11.0)  # A@2500: 5 B + 6 A in the window
    now = T0 + 2_500 * MS
    assert contributions(one, ["r"], now) == {"r": [{"firm": [12.0]}]}
    a, b = member(limits), member(limits)
    for a_ev, b_ev in zip(a_flow, b_flow, strict=True):
        a.apply([a_ev])
        b.follow_clock(a.last_event_ns)  # a's record, read before b's next batch
        b.apply([b_ev])
    assert contributions(a, ["r"], now) == {"r": [{"firm": [6.0]}]}
    assert contributions(b, ["r"], now) == {"r": [{"firm": [6.0]}]}
    b.follow_clock(T0)  # never back
    assert b.last_event_ns == T0 + 2_500 * MS
