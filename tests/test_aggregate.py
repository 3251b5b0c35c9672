"""Group mode's cross-partition rules without a broker: each instance's part, which
records add up to the whole input, and judging the sums.

The general form: for any stream split by account over any number of instances (marks
reaching every instance), the instances' parts of every summed rule add up, at any
time, to the part of one instance that read everything; and a breach no instance
sees alone is decided on the sums. Values are compared at a revaluation epoch (the
clock's tick settles the price moves each instance has queued, as it does live).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard import events as wire
from riskguard.aggregate.contributions import Parts, contributions, scope_positions
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import Contribution, Held, cover, decode, encode, row_sums
from riskguard.engine import Engine
from riskguard.limits import LimitsError, parse
from riskguard.limits.model import Limits
from riskguard.limits.scale import check_group_limits, is_summed, summed_rules
from tests.builders import MS, T0, rules_toml

SUMMED = rules_toml(
    'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\nmax = 1e9\n'
    'action = "halt"',
    'name = "venue-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 500\nmax = 1e9\n'
    'action = "alert"\nmatch.venue = ["XNAS", "XLON"]',
    'name = "desk-msgs"\nmetric = "message_rate"\nscope = "strategy"\nwindow_ms = 1000\n'
    'max = 1e9\naction = "halt"',
    'name = "sym-rejects"\nmetric = "reject_rate"\nscope = "symbol"\nwindow_ms = 800\n'
    'max = 1e9\naction = "halt"',
    'name = "firm-cxl"\nmetric = "cancel_ratio"\nscope = "firm"\nwindow_ms = 1000\nmax = 1e9\n'
    'min_orders = 2\naction = "alert"',
    'name = "venue-fills"\nmetric = "fill_notional_rate"\nscope = "venue"\nwindow_ms = 1000\n'
    'max = 1e12\naction = "halt"',
    'name = "sym-fills"\nmetric = "fill_count"\nscope = "symbol"\nwindow_ms = 700\nmax = 1e9\n'
    'action = "halt"\nmatch.side = ["buy"]',
    'name = "desk-open"\nmetric = "open_orders"\nscope = "strategy"\nmax = 1e9\naction = "halt"',
    'name = "firm-open-notional"\nmetric = "open_order_notional"\nscope = "firm"\nmax = 1e12\n'
    'action = "halt"',
    'name = "sym-net"\nmetric = "net_notional"\nscope = "symbol"\nmax = 1e12\nmin = -1e12\n'
    'action = "halt"',
    'name = "desk-pnl"\nmetric = "pnl"\nscope = "strategy"\nmin = -1e12\naction = "halt"',
    'name = "firm-pnl"\nmetric = "pnl"\nscope = "firm"\nmin = -1e12\naction = "halt"',
    'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\nmax = 1e9\n'
    'action = "halt"',
)
ACCOUNTS = ["A1", "A2", "A3", "A4", "A5"]
STRATEGIES = ["S1", "S2"]  # each trades in several accounts
SYMBOLS = ["X", "Y"]
VENUES = ["XNAS", "XLON", "XPAR"]


def engine(limits: Limits) -> Engine:
    return Engine(limits, event_time=True, warm=False, values_only=is_summed)


@st.composite
def split_flows(draw: Any) -> tuple[list[wire.Event], dict[str, int], int, int]:
    """A time-ordered stream (under 5 s: no clock jumps), the instance of each account,
    the number of instances, and how long after the last event the parts are read."""
    # group mode's contract: reference data reaches every instance (docs/events.md), and a
    # symbol is marked before it trades (before its first mark a symbol is valued at the
    # last fill the instance saw, which is not the firm's last fill)
    out: list[wire.Event] = [wire.Mark(ts=T0 + 1, symbol=y, price=10.0) for y in SYMBOLS]
    orders: list[tuple[str, dict[str, str]]] = []
    t = 0
    for i in range(draw(st.integers(1, 70))):
        t += draw(st.sampled_from([5, 20, 60])) * MS
        keys = {
            "account": draw(st.sampled_from(ACCOUNTS)),
            "strategy": draw(st.sampled_from(STRATEGIES)),
            "symbol": draw(st.sampled_from(SYMBOLS)),
        }
        kind = draw(st.sampled_from(["new", "new", "fill", "cancel", "reject", "replace", "mark"]))
        side = draw(st.sampled_from(["buy", "sell"]))
        qty = draw(st.sampled_from([1.0, 2.5, 10.0]))
        price = draw(st.sampled_from([9.5, 10.0, 10.25]))
        venue = draw(st.sampled_from(VENUES))
        ts = T0 + t
        ev: wire.Event
        if kind == "new" or (not orders and kind in ("cancel", "reject", "replace")):
            oid = f"o{i}"
            ev = wire.NewOrder(
                ts=ts, order_id=oid, side=side, qty=qty, price=price, venue=venue, **keys
            )
            orders.append((oid, keys))
        elif kind == "cancel":
            oid, k = draw(st.sampled_from(orders))
            ev = wire.CancelOrder(ts=ts, order_id=oid, **k)
        elif kind == "reject":
            oid, k = draw(st.sampled_from(orders))
            ev = wire.RejectOrder(ts=ts, order_id=oid, **k)
        elif kind == "replace":
            oid, k = draw(st.sampled_from(orders))
            ev = wire.ReplaceOrder(ts=ts, order_id=oid, side=side, qty=qty, price=price, **k)
        elif kind == "mark":
            ev = wire.Mark(ts=ts, symbol=keys["symbol"], price=price)
        else:
            oid, k = draw(st.sampled_from(orders)) if orders else (f"u{i}", keys)
            ev = wire.Fill(
                ts=ts,
                order_id=oid,
                exec_id=f"e{i}",
                side=side,
                qty=qty,
                price=price,
                venue=venue,
                fee=draw(st.sampled_from([None, 0.25])),
                **k,
            )
        out.append(ev)
    n = draw(st.integers(1, 4))
    owner = {a: draw(st.integers(0, n - 1)) for a in ACCOUNTS}
    later = draw(st.sampled_from([0, 150, 600, 1200])) * MS
    return out, owner, n, later


def assert_parts_add_up(whole: Parts, parts: list[Parts], limits: Limits) -> None:
    records = [
        Contribution(
            group="g",
            instance=f"i{k}",
            partitions=(),
            limits_digest="",
            as_of_ns=0,
            sent_ns=0,
            parts=p,
        )
        for k, p in enumerate(parts)
    ]
    single = Contribution(
        group="g",
        instance="one",
        partitions=(),
        limits_digest="",
        as_of_ns=0,
        sent_ns=0,
        parts=whole,
    )
    for rule in summed_rules(limits):
        for j in range(len(whole[rule.name])):
            got = row_sums(records, rule.name, j, rule.metric, rule.min_orders)
            want = row_sums([single], rule.name, j, rule.metric, rule.min_orders)
            assert got is not None and want is not None
            got_v = {s: v.value for s, v in got.items() if not math.isnan(v.value)}
            want_v = {s: v.value for s, v in want.items() if not math.isnan(v.value)}
            for scope in got_v.keys() | want_v.keys():
                a, b = got_v.get(scope, 0.0), want_v.get(scope, 0.0)
                assert a == pytest.approx(b, abs=1e-6), (rule.name, j, scope)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_flows())
def test_the_instances_parts_add_up_to_what_one_instance_reading_everything_has(
    flow: tuple[list[wire.Event], dict[str, int], int, int],
) -> None:
    stream, owner, n, later = flow
    limits = parse(SUMMED)
    names = [r.name for r in summed_rules(limits)]
    one = engine(limits)
    one.apply(stream)
    shares = [engine(limits) for _ in range(n)]
    for k, share in enumerate(shares):  # account events to their owner, marks to everyone
        share.apply(
            [e for e in stream if getattr(e, "account", None) is None or owner[e.account] == k]
        )
    for e in (one, *shares):  # at a revaluation epoch (live: the clock's tick)
        e.settle()
    now = stream[-1].ts + later
    whole = contributions(one, names, now)
    assert_parts_add_up(whole, [contributions(s, names, now) for s in shares], limits)


def test_a_summed_rule_is_counted_but_never_judged_by_the_instance() -> None:
    limits = parse(
        rules_toml(
            'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 2\naction = "halt"\nwarn_at = [0.5]'
        )
    )
    e = engine(limits)
    result = e.apply(
        [
            wire.NewOrder(
                ts=T0 + i * MS,
                order_id=f"o{i}",
                account="A",
                strategy="S",
                symbol="X",
                side="buy",
                qty=1.0,
                price=1.0,
            )
            for i in range(5)
        ]
    )
    assert result.transitions == []
    assert e.killswitch.state("firm") == "ACTIVE"
    assert contributions(e, ["firm-rate"], T0 + 5 * MS) == {"firm-rate": [{"firm": [5.0]}]}
    # the window ends: 1.1 s later nothing of it is left (ten 100 ms buckets and the current one)
    assert contributions(e, ["firm-rate"], T0 + 1_200 * MS) == {"firm-rate": [{}]}


def orders(account: str, n: int, start: int) -> list[wire.Event]:
    return [
        wire.NewOrder(
            ts=T0 + (start + i) * MS,
            order_id=f"{account}-{i}",
            account=account,
            strategy="S",
            symbol="X",
            side="buy",
            qty=1.0,
            price=1.0,
        )
        for i in range(n)
    ]


def record(name: str, partitions: tuple[str, ...], parts: Parts, as_of: int = T0) -> Contribution:
    return Contribution(
        group="g",
        instance=name,
        partitions=partitions,
        limits_digest="d",
        as_of_ns=as_of,
        sent_ns=as_of,
        parts=parts,
    )


def test_a_firm_order_rate_breach_no_instance_sees_alone_halts_the_firm() -> None:
    limits = parse(
        rules_toml(
            'name = "firm-rate"\nmetric = "order_rate"\nscope = "firm"\nwindow_ms = 1000\n'
            'max = 10\naction = "halt"'
        )
    )
    a, b = engine(limits), engine(limits)
    assert a.apply(orders("A1", 6, 0)).transitions == []  # 6 and 6: each under 10
    assert b.apply(orders("A2", 6, 0)).transitions == []
    now = T0 + 10 * MS  # parts read at now; the evidence is the last event applied
    held = {
        "a": Held(0, record("a", ("t/0",), contributions(a, ["firm-rate"], now), a.last_event_ns)),
        "b": Held(1, record("b", ("t/1",), contributions(b, ["firm-rate"], now), b.last_event_ns)),
    }
    got = cover(held, {"t/0", "t/1"})
    assert got.complete
    judge = SumJudge(a)
    [halt] = judge.judge(got, summed_rules(limits), "d")
    assert (halt.scope, halt.to, halt.kind, halt.rule, halt.value, halt.limit) == (
        "firm",
        "HALTED",
        "auto",
        "firm-rate",
        12.0,
        10.0,
    )
    assert halt.ts == T0 + 5 * MS and "summed over 2 instance(s): a, b" in (halt.reason or "")
    assert a.killswitch.state("firm") == "HALTED"
    assert judge.judge(got, summed_rules(limits), "d") == []  # latched: decided once
    a.killswitch.resume("firm", "ops", "checked")  # judged up to now: the same sums wait
    assert judge.judge(got, summed_rules(limits), "d") == []
    b.apply(orders("B", 1, 20))  # a new order after the resume: the breach is evidenced again
    held["b"] = Held(
        2, record("b", ("t/1",), contributions(b, ["firm-rate"], T0 + 20 * MS), b.last_event_ns)
    )
    [again] = judge.judge(cover(held, {"t/0", "t/1"}), summed_rules(limits), "d")
    assert (again.to, again.value, again.ts) == ("HALTED", 13.0, T0 + 20 * MS)


def test_the_sums_wait_for_a_record_per_partition_and_never_count_one_twice() -> None:
    one = {"r": [{"firm": [1.0]}]}
    whole = {"t/0", "t/1", "t/2"}
    a_old = Held(0, record("a", ("t/0", "t/1"), one))
    b_old = Held(1, record("b", ("t/2",), one))
    assert cover({"a": a_old, "b": b_old}, whole).complete
    # b dies; a is given every partition and publishes once restored: b's record is
    # superseded for all it names, and a's new record alone is the whole
    a_new = Held(2, record("a", ("t/0", "t/1", "t/2"), one))
    got = cover({"a": a_new, "b": b_old}, whole)
    assert got.complete and [r.instance for r in got.records] == ["a"]
    # a third member joined: c took t/1 and published, a has not yet: a's record would
    # count t/1 twice, so nothing is summed
    c = Held(3, record("c", ("t/1",), one))
    split = cover({"a": a_new, "b": b_old, "c": c}, whole)
    assert not split.complete and split.split == {"a"}
    missing = cover({"c": c}, whole)
    assert not missing.complete and missing.missing == {"t/0", "t/2"}
    assert decode(encode(a_new.record)) == a_new.record


def test_a_sum_with_an_unknown_part_is_not_judged_and_other_limits_are_not_summed() -> None:
    recs = [
        record("a", ("t/0",), {"p": [{"firm": [None]}]}),
        record("b", ("t/1",), {"p": [{"firm": [-5.0]}]}),
    ]
    sums = row_sums(recs, "p", 0, "pnl", 1)
    assert sums is not None and math.isnan(sums["firm"].value)
    assert row_sums([*recs, record("c", ("t/2",), {})], "p", 0, "pnl", 1) is None


def test_group_mode_sums_additive_rules_and_refuses_the_rest() -> None:
    limits = parse(SUMMED)
    check_group_limits(limits)
    assert [r.name for r in summed_rules(limits)] == [
        r.name for r in limits.rules if r.scope != "account"
    ]
    for metric, why in (
        ("gross_notional", "nets positions per symbol across accounts"),
        ("drawdown", "peaks on the firm-wide P&L path"),
    ):
        bad = parse(
            rules_toml(f'name = "x"\nmetric = "{metric}"\nscope = "firm"\nmax = 5\naction = "halt"')
        )
        with pytest.raises(LimitsError, match=why):
            check_group_limits(bad)


def test_warnings_and_alerts_on_sums_raise_once_and_resolve_naming_what_they_end() -> None:
    limits = parse(
        rules_toml(
            'name = "desk-open"\nmetric = "open_orders"\nscope = "strategy"\nmax = 100\n'
            'action = "alert"\nwarn_at = [0.5, 0.9]'
        )
    )
    judge = SumJudge(engine(limits))
    rules = summed_rules(limits)
    whole = {"t/0", "t/1"}

    def at(a: float, b: float, t: int) -> list[tuple[str, str, float | None, float | None]]:
        held = {
            "a": Held(2 * t, record("a", ("t/0",), {"desk-open": [{"strategy:S1": [a]}]}, T0 + t)),
            "b": Held(2 * t + 1, record("b", ("t/1",), {"desk-open": [{"strategy:S1": [b]}]},
                                        T0 + t)),
        }  # fmt: skip
        out = judge.judge(cover(held, whole), rules, "d")
        assert all(tr.scope == "strategy:S1" and tr.from_ == tr.to == "ACTIVE" for tr in out)
        return [
            (tr.kind, tr.id.split("@", 1)[1].split(":", 1)[1], tr.level, tr.value) for tr in out
        ]

    assert at(20, 20, 1) == []  # 40 of 100
    assert at(30, 25, 2) == [("alert", "WARN0.5:desk-open", 0.5, 55.0)]
    assert at(30, 26, 3) == []  # hovering: once per level
    assert at(60, 41, 4) == [
        ("alert", "WARN0.9:desk-open", 0.9, 101.0),
        ("alert", "ALERT:desk-open", None, 101.0),
    ]
    assert at(10, 20, 5) == [
        ("resolve", f"RESOLVE:strategy:S1@{T0 + 2}:WARN0.5:desk-open", 0.5, 30.0),
        ("resolve", f"RESOLVE:strategy:S1@{T0 + 4}:WARN0.9:desk-open", 0.9, 30.0),
        ("resolve", f"RESOLVE:strategy:S1@{T0 + 4}:ALERT:desk-open", None, 30.0),
    ]
    assert judge.values == {"desk-open": {"strategy:S1": 30.0}}


def test_sums_counted_under_other_limits_are_not_judged() -> None:
    limits = parse(
        rules_toml(
            'name = "firm-open"\nmetric = "open_orders"\nscope = "firm"\nmax = 1\naction = "halt"'
        )
    )
    judge = SumJudge(engine(limits))
    held = {
        "a": Held(0, record("a", ("t/0",), {"firm-open": [{"firm": [5.0]}]})),
        "b": Held(1, record("b", ("t/1",), {"firm-open": [{"firm": [5.0]}]})),
    }
    assert judge.judge(cover(held, {"t/0", "t/1"}), summed_rules(limits), "other") == []
    [halt] = judge.judge(cover(held, {"t/0", "t/1"}), summed_rules(limits), "d")
    assert (halt.to, halt.value) == ("HALTED", 10.0)


def test_a_new_judge_takes_over_the_raised_alerts_and_resolves_them_by_name() -> None:
    """The judging member raised a warning and an alert on a sum, then the first partition
    moved. A new judge that started empty raised both again (two more pages for one
    incident); one that takes over the edges the old judge published (through its
    record, as the aggregation topic carries them) raises nothing, and its resolves name
    the old judge's alerts."""
    limits = parse(
        rules_toml(
            'name = "desk-open"\nmetric = "open_orders"\nscope = "strategy"\nmax = 100\n'
            'action = "alert"\nwarn_at = [0.5]'
        )
    )
    rules = summed_rules(limits)
    whole = {"t/0", "t/1"}

    def held(a: float, b: float, t: int) -> dict[str, Held]:
        return {
            "a": Held(2 * t, record("a", ("t/0",), {"desk-open": [{"strategy:S1": [a]}]}, T0 + t)),
            "b": Held(2 * t + 1, record("b", ("t/1",), {"desk-open": [{"strategy:S1": [b]}]},
                                        T0 + t)),
        }  # fmt: skip

    old = SumJudge(engine(limits))
    raised = old.judge(cover(held(60, 50, 1), whole), rules, "d")
    assert [tr.kind for tr in raised] == ["alert", "alert"]  # the warning and the alert
    edges = old.raised_edges()
    on_topic = decode(encode(msgspec.structs.replace(
        record("a", ("t/0",), {}), judge_since_ns=T0, raised=edges)))  # fmt: skip
    assert on_topic.raised == edges and on_topic.judge_since_ns == T0

    empty = SumJudge(engine(limits))
    assert len(empty.judge(cover(held(60, 51, 2), whole), rules, "d")) == 2  # the fault

    new = SumJudge(engine(limits))
    new.take_over(on_topic.raised, "d")
    assert new.judge(cover(held(60, 51, 2), whole), rules, "d") == []
    resolves = new.judge(cover(held(10, 10, 3), whole), rules, "d")
    assert sorted(tr.ends for tr in resolves) == sorted(tr.id for tr in raised)
    assert new.raised_edges() == ()


def test_records_without_a_judge_s_edges_still_decode() -> None:
    """Records of members older than the handover fields: no judge, nothing raised."""
    value = encode(record("a", ("t/0",), {}))
    plain = orjson.loads(value)
    plain.pop("judge_since_ns", None)
    plain.pop("raised", None)
    old = decode(orjson.dumps(plain))
    assert (old.judge_since_ns, old.raised) == (0, ())


def test_a_members_part_of_a_venues_positions_is_its_share_of_the_firms() -> None:
    """Positions are not kept per venue: a member's part of a REDUCE_ONLY venue's
    positions is its part of the firm's in each symbol, even with no order of its own to
    the venue (before: none, so the summed venue position was 0 and refused everything)."""
    e = Engine(parse("version = 1\n"), event_time=True)
    keys = {"account": "A", "strategy": "s"}
    e.apply(
        [
            wire.Fill(ts=T0, order_id="f", exec_id="x", side="buy", qty=7, price=2,
                      symbol="X", venue="ARCX", **keys),
            wire.Fill(ts=T0 + MS, order_id="g", exec_id="y", side="sell", qty=3, price=2,
                      symbol="Y", **keys),
        ]
    )  # fmt: skip
    assert scope_positions(e, "venue:XNAS") == {"X": 7.0, "Y": -3.0}  # never seen here
    assert scope_positions(e, "venue:ARCX") == {"X": 7.0, "Y": -3.0}
    assert scope_positions(e, "symbol:Y") == {"Y": -3.0}
