"""Latch and resume semantics: escalate only, resume only by a named person, idempotent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from riskguard.engine import Engine
from riskguard.limits import parse
from riskguard.testing import FakeClock, capture_transitions
from riskguard.vocabulary import ScopeError
from tests.builders import MS, T0, new

Make = Callable[..., Engine]
QTY = 'name = "fat"\nmetric = "order_qty"\nscope = "strategy"\nmax = 10\naction = "halt"'


def test_breach_latches_until_resumed(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.apply([new("a", 0, qty=11)])
    e.apply([new("b", MS, qty=1)])  # back within limits: still halted
    assert e.killswitch.state("strategy:S") == "HALTED"
    tr = e.killswitch.resume("strategy:S", "alice", "fat finger confirmed, desk notified")
    assert tr is not None and (tr.from_, tr.to, tr.kind, tr.operator) == (
        "HALTED",
        "ACTIVE",
        "manual",
        "alice",
    )
    assert tr.ends is not None and tr.ends.startswith("strategy:S@")
    assert e.killswitch.state("strategy:S") == "ACTIVE"
    assert e.killswitch.standing() == {}


def test_resume_needs_operator_and_reason(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.apply([new("a", 0, qty=11)])
    for operator, reason in (("", "why"), ("bob", ""), ("  ", "x")):
        with pytest.raises(ValueError, match="required"):
            e.killswitch.resume("strategy:S", operator, reason)
    assert e.killswitch.state("strategy:S") == "HALTED"


def test_transitions_are_idempotent(engine_for: Make) -> None:
    e = engine_for(QTY)
    ks = e.killswitch
    assert ks.halt("account:A", "ops", "drill") is not None
    assert ks.halt("account:A", "ops", "again") is None
    assert ks.halt("account:A", "ops", "lower", action="reduce_only") is None
    assert ks.resume("account:A", "ops", "done") is not None
    assert ks.resume("account:A", "ops", "done") is None
    assert ks.resume("strategy:never-seen", "ops", "nothing") is None


def test_manual_halt_carries_evidence_and_clock_time() -> None:
    clock = FakeClock(T0)
    e = Engine(parse("version = 1\n"), clock=clock)
    clock.advance(ms=5)
    with capture_transitions(e) as seen:
        tr = e.killswitch.halt("symbol:RSHYY", "carol", "halted at the exchange")
    assert tr is not None and seen == [tr]
    assert (tr.scope, tr.from_, tr.to, tr.kind, tr.ts, tr.decided_ns, tr.reason) == (
        "symbol:RSHYY",
        "ACTIVE",
        "HALTED",
        "manual",
        T0 + 5 * MS,
        T0 + 5 * MS,
        "halted at the exchange",
    )
    assert e.killswitch.standing()["symbol:RSHYY"] is tr


def test_auto_transition_evidence(engine_for: Make) -> None:
    clock = FakeClock(T0 + 7 * MS)
    e = engine_for(QTY, clock=clock)
    (tr,) = e.apply([new("a", 3 * MS, qty=12)]).transitions
    assert (tr.scope, tr.from_, tr.to, tr.kind, tr.rule, tr.metric, tr.value, tr.limit) == (
        "strategy:S",
        "ACTIVE",
        "HALTED",
        "auto",
        "fat",
        "order_qty",
        12.0,
        10.0,
    )
    assert tr.ts == T0 + 3 * MS  # event time of the trigger
    assert tr.decided_ns == T0 + 7 * MS  # when riskguard decided (injected clock)
    assert tr.operator is None


def test_breach_after_resume_halts_again(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.apply([new("a", 0, qty=11)])
    e.killswitch.resume("strategy:S", "ops", "limit raised upstream")
    (again,) = e.apply([new("b", MS, qty=11)]).transitions
    assert again.to == "HALTED"


def test_hierarchy_firm_and_account_cover_everything_beneath(engine_for: Make) -> None:
    e = engine_for(QTY)
    ks = e.killswitch
    e.apply([new("a", 0, qty=1)])
    assert ks.effective("A", "S", "X") == "ACTIVE"
    ks.halt("account:A", "ops", "drill", action="reduce_only")
    assert ks.effective("A", "S", "X") == "REDUCE_ONLY"
    assert ks.effective("B", "T", "X") == "ACTIVE"
    ks.halt("symbol:X", "ops", "news")
    assert ks.effective("B", "T", "X") == "HALTED"
    ks.halt("firm", "ops", "kill everything")
    assert ks.effective("B", "T", "Y") == "HALTED"
    assert ks.state("strategy:S") == "ACTIVE"  # its own latch is separate
    ks.resume("firm", "ops", "ok")
    ks.resume("symbol:X", "ops", "ok")
    assert ks.effective("A", "S", "X") == "REDUCE_ONLY"


def test_bad_scope_strings_are_refused(engine_for: Make) -> None:
    e = engine_for(QTY)
    for scope in ("", "desk:1", "account:", "strategy", "firm:x"):
        with pytest.raises(ScopeError):
            e.killswitch.halt(scope, "ops", "x")
    with pytest.raises(ValueError, match="action must be"):
        e.killswitch.halt("firm", "ops", "x", action="alert")


def test_late_events_do_not_undo_a_resume(engine_for: Make) -> None:
    """Evidence from before the operator's resume is already judged; newer evidence is not."""
    clock = FakeClock(T0 + 10 * MS)
    e = engine_for(QTY, clock=clock)
    e.apply([new("a", 0, qty=11)])
    e.killswitch.resume("strategy:S", "ops", "known issue, fixed")
    assert e.apply([new("late", 5 * MS, qty=50)]).transitions == []  # from before the resume
    (again,) = e.apply([new("b", 11 * MS, qty=50)]).transitions
    assert again.to == "HALTED"


def test_judge_until_suppresses_replayed_breaches(engine_for: Make) -> None:
    e = engine_for(QTY)
    e.judge_until(T0 + 5 * MS)
    assert e.apply([new("a", 5 * MS, qty=11)]).transitions == []
    assert [t.to for t in e.apply([new("b", 6 * MS, qty=11)]).transitions] == ["HALTED"]
    assert e.peaks()[0].evaluations == 2  # still measured, just not acted on twice


def test_wire_form_always_carries_state_fields(engine_for: Make) -> None:
    import msgspec  # noqa: PLC0415

    e = engine_for(QTY)
    e.killswitch.halt("firm", "ops", "drill")
    tr = e.killswitch.resume("firm", "ops", "done")
    assert tr is not None
    wire = msgspec.json.decode(msgspec.json.encode(tr))
    for key in (
        "id",
        "scope",
        "from",
        "to",
        "kind",
        "ts",
        "decided_ns",
        "operator",
        "reason",
        "ends",
    ):
        assert key in wire, key
    assert wire["to"] == "ACTIVE" and "rule" not in wire
