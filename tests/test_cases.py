"""The real-world cases of issue 10 (``tests/cases/``), each checked against its expected.txt.

Every case folder holds ``events.jsonl``, ``limits.toml`` and ``expected.txt`` (the situation,
values derived by hand, the exact transitions). The tests below write those numbers in, each
with a comment saying where it comes from; none is computed with the code under test. Times
are event times: ``at_ms(x)`` is t0 (the first event's time, 1,700,000,000 s) plus ``x`` ms.
Line numbers are ``events.jsonl`` lines (1-based). Every case is also run with all its events
in one batch and with one event per batch, which must give identical transitions, rule peaks,
counters and state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from riskguard.engine import Engine, Result, RulePeak
from riskguard.events import BadEvent, Event, decode_many
from riskguard.limits import load
from riskguard.limits.model import Limits
from riskguard.replay import ReplayReport, replay
from riskguard.vocabulary import Transition

CASES = Path(__file__).parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
ONE_BATCH = 1 << 20  # more events than any case holds: every event in one batch
A, S = "account:ACC-1", "strategy:strat-a"


def at_ms(ms: int) -> int:
    """Event time ``ms`` milliseconds after the cases' t0, in ns."""
    return T0 + ms * MS


def near(expected: Any) -> Any:
    """A tight tolerance for a float (or a tuple of floats) computed by the engine."""
    return pytest.approx(expected, rel=1e-9, abs=1e-9)


# loading and running -----------------------------------------------------------------
@functools.cache
def limits_of(case: str) -> Limits:
    return load(CASES / case / "limits.toml")


@functools.cache
def events_of(case: str) -> tuple[Event, ...]:
    with (CASES / case / "events.jsonl").open("rb") as stream:
        items = list(decode_many(stream))
    bad = [item for item in items if isinstance(item, BadEvent)]
    assert not bad, f"{case}: the decoder rejects valid events: {bad}"
    return tuple(item for item in items if not isinstance(item, BadEvent))


@functools.cache
def replayed(case: str, batch_size: int = ONE_BATCH) -> ReplayReport:
    return replay(CASES / case / "events.jsonl", limits_of(case), batch_size=batch_size)


@functools.cache
def final(case: str) -> tuple[Engine, Result]:
    """An engine that applied every event of the case in one batch, and that batch's result.

    The stream then ends: revaluations still waiting for the next epoch are applied, as
    ``riskguard replay`` does at the end of a file (``Engine.settle``).
    """
    engine = Engine(limits_of(case), event_time=True)
    result = engine.apply(list(events_of(case)))
    result.transitions += engine.settle()
    return engine, result


def engine_after(case: str, lines: int) -> Engine:
    """A fresh engine that applied the first ``lines`` events in one batch."""
    engine = Engine(limits_of(case), event_time=True)
    engine.apply(list(events_of(case)[:lines]))
    return engine


def line_of(case: str, kind: str, order_id: str) -> int:
    """The line of the first ``kind`` event for ``order_id`` (read from the data)."""
    for number, event in enumerate(events_of(case), 1):
        tag = type(event).__struct_config__.tag
        if tag == kind and getattr(event, "order_id", None) == order_id:
            return number
    raise AssertionError(f"{case}: no {kind} for {order_id}")


@functools.cache
def scopes_of(case: str) -> tuple[str, ...]:
    scopes = {"firm"}
    for event in events_of(case):
        if (account := getattr(event, "account", None)) is not None:
            scopes.add(f"account:{account}")
        if (strategy := getattr(event, "strategy", None)) is not None:
            scopes.add(f"strategy:{strategy}")
    return tuple(sorted(scopes))


@dataclass(frozen=True)
class Snapshot:
    """Engine state at one point: ``scope_values`` per scope and ``positions()``."""

    values: dict[str, dict[str, float]]
    book: dict[tuple[str, str], tuple[float, float, float]]

    def v(self, scope: str, key: str) -> float:
        return self.values[scope][key]

    def position(self, owner: str, symbol: str) -> tuple[float, float, float]:
        """(qty, cost basis, realised) of ``owner`` in ``symbol``; zeros if never traded."""
        return self.book.get((owner, f"symbol:{symbol}"), (0.0, 0.0, 0.0))

    def qty(self, owner: str, symbol: str) -> float:
        return self.position(owner, symbol)[0]


def snapshot(engine: Engine, case: str) -> Snapshot:
    return Snapshot({s: engine.scope_values(s) for s in scopes_of(case)}, engine.positions())


@functools.cache
def trace(case: str) -> tuple[Snapshot, ...]:
    """The state after each line, applying one event per batch (index 0: after line 1)."""
    engine = Engine(limits_of(case), event_time=True)
    out = []
    for number, event in enumerate(events_of(case), 1):
        engine.apply([event], [f"line {number}"])
        out.append(snapshot(engine, case))
    return tuple(out)


def after(case: str, line: int) -> Snapshot:
    return trace(case)[line - 1]


# expectations ----------------------------------------------------------------------
@dataclass(frozen=True)
class Want:
    """One expected transition; ``ts`` is exact, or an inclusive (earliest, latest) bound."""

    scope: str
    from_: str
    to: str
    kind: str
    rule: str
    value: float
    ts: int | tuple[int, int]

    @property
    def earliest(self) -> int:
        return self.ts if isinstance(self.ts, int) else self.ts[0]


def halt(scope: str, rule: str, value: float, ts: int | tuple[int, int]) -> Want:
    return Want(scope, "ACTIVE", "HALTED", "auto", rule, value, ts)


def reduce_only(scope: str, rule: str, value: float, ts: int) -> Want:
    return Want(scope, "ACTIVE", "REDUCE_ONLY", "auto", rule, value, ts)


def alert(scope: str, rule: str, value: float, ts: int | tuple[int, int]) -> Want:
    return Want(scope, "ACTIVE", "ACTIVE", "alert", rule, value, ts)


def _show(t: Transition) -> str:
    return f"{t.scope} {t.from_}->{t.to} {t.kind} {t.rule} value={t.value} t={(t.ts - T0) / MS}ms"


def assert_transitions(
    case: str, report: ReplayReport, want: list[Want], *, system_alerts: bool = False
) -> None:
    """Exactly the ``want`` transitions. ``system_alerts`` also allows alerts about riskguard
    itself (rules not in the limits file, no state change), e.g. a clock-skew alert."""
    names = {rule.name for rule in limits_of(case).rules}
    got = list(report.transitions)
    # an alert that re-arms is resolved (expected.txt lists the alerts only): each resolve
    # must end an alert raised before it
    resolves = [t for t in got if t.kind == "resolve"]
    raised = {t.id for t in got if t.kind == "alert"}
    assert all(t.ends in raised for t in resolves), resolves
    # and names the bound that alert crossed (a band's lower bound too)
    crossed = {t.id: t.limit for t in got if t.kind == "alert"}
    assert all(t.limit == crossed[t.ends or ""] for t in resolves), resolves
    got = [t for t in got if t.kind != "resolve"]
    if system_alerts:
        others = [t for t in got if t.rule not in names]
        assert all(t.kind == "alert" and t.from_ == t.to for t in others), others
        got = [t for t in got if t.rule in names]
    got.sort(key=lambda t: (t.ts, t.scope, t.rule or ""))
    shown = f"{case}: got\n" + "\n".join(_show(t) for t in got)
    assert len(got) == len(want), shown
    for t, w in zip(got, sorted(want, key=lambda w: (w.earliest, w.scope, w.rule)), strict=True):
        assert (t.scope, t.from_, t.to, t.kind, t.rule) == (w.scope, w.from_, w.to, w.kind, w.rule)
        assert t.value == near(w.value), shown
        if isinstance(w.ts, int):
            assert t.ts == w.ts, shown
        else:
            assert w.ts[0] <= t.ts <= w.ts[1], shown


def assert_counts(
    report: ReplayReport, *, duplicates: int = 0, skewed: int = 0, late: int | None = None
) -> None:
    """Every case's events are valid (schema v1.1): none is bad; redeliveries and skewed
    events are only those the case describes."""
    assert report.bad == 0, dict(report.bad_by_reason)
    assert report.duplicates == duplicates
    assert report.skewed == skewed
    if late is not None:
        assert report.late == late


def peak(report: ReplayReport, rule: str) -> RulePeak:
    found = [p for p in report.peaks if p.rule.name == rule]
    assert len(found) == 1, [p.rule.name for p in report.peaks]
    return found[0]


# the cases -------------------------------------------------------------------------
def test_01_duplicate_exec_id() -> None:
    case = "01-duplicate-exec-id"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Transitions: none."
    assert_counts(report, duplicates=1)  # expected.txt: E1 delivered twice, the copy not applied
    engine, result = final(case)
    assert result.duplicates == 1  # the same redelivery, seen by Engine.apply
    for owner in (A, S, "firm"):
        assert engine.position(owner, "XYZ") == 100  # expected.txt: "= +100 (not 200)"
    # expected.txt: "cost basis 1000, avg 10, realised 0"
    assert engine.positions()[(A, "symbol:XYZ")] == near((100, 1000, 0))
    assert after(case, 4).qty(A, "XYZ") == 100  # line 4 is the redelivered copy: no move
    assert engine.scope_values(A)["gross_notional"] == near(1000)  # expected.txt: 100 * 10
    for scope in (A, S):
        assert engine.scope_values(scope)["open_orders"] == 0  # expected.txt: open_orders = 0
    assert peak(report, "pos").high == near(100)  # expected.txt: position_qty peak = 100
    assert peak(report, "overfill").high == 1.0  # expected.txt: P1 = 100 / 100 = 1.0
    assert peak(report, "fills").high == near(1000)  # expected.txt: fill_notional_rate peak 1000
    assert peak(report, "gross").high == near(1000)  # expected.txt: gross_notional = 1000


def test_02_kafka_retry_duplicate_new() -> None:
    case = "02-kafka-retry-duplicate-new"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Transitions: none."
    assert_counts(report, duplicates=5)  # expected.txt: O1..O5 twice: "five orders, not ten"
    assert final(case)[1].duplicates == 5
    assert peak(report, "order-rate").high == near(5)  # expected.txt: order_rate peak = 5
    assert peak(report, "dup-orders").high == near(0)  # expected.txt: duplicate_orders peak = 0
    assert peak(report, "open").high == near(5)  # expected.txt: open_orders peak = 5
    assert after(case, 5).v(S, "open_orders") == 5  # O1..O5 open
    assert after(case, 10).v(S, "open_orders") == 5  # their copies open nothing more
    assert after(case, 15).v(S, "open_orders") == 0  # expected.txt: open_orders final = 0


def test_03_position_flip_pnl() -> None:
    case = "03-position-flip-pnl"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Transitions: none."
    assert_counts(report)
    # expected.txt: E1 sell 1.0 @100: pos -1.0, cost -100, realised 0
    assert after(case, 2).position(S, "FUT") == near((-1.0, -100, 0))
    # expected.txt: E2 buy 1.5 @90: realised += 1.0*(100-90) = 10; opens +0.5 @90, cost 45
    assert after(case, 4).position(S, "FUT") == near((0.5, 45, 10))
    assert after(case, 5).v(S, "pnl") == near(12.5)  # expected.txt: mark 95: 10 + 0.5*(95-90)
    e3 = after(case, 7)  # expected.txt: E3 buy 0.5 @100: pos 1.0, cost 95; pnl 10, drawdown 2.5
    assert e3.position(S, "FUT") == near((1.0, 95, 10))
    assert (e3.v(S, "pnl"), e3.v(S, "drawdown")) == near((10, 2.5))
    e4 = after(case, 9)  # expected.txt: E4 sell 2.0 @96: realised 11, opens -1.0 @96, pnl 12
    assert e4.position(S, "FUT") == near((-1.0, -96, 11))
    assert e4.v(S, "pnl") == near(12)
    engine, _ = final(case)
    for owner in (S, A, "firm"):  # expected.txt: "strategy scope; account and firm identical"
        assert engine.position(owner, "FUT") == -1.0  # expected.txt: Final position -1.0
        # expected.txt: cost basis -96 (avg 96), realised 11
        assert engine.positions()[(owner, "symbol:FUT")] == near((-1.0, -96, 11))
        values = engine.scope_values(owner)
        # expected.txt: pnl 13, net_notional -94, gross_notional 94, drawdown 0; "no fees"
        assert values["pnl"] == near(13)
        assert values["realised_pnl"] == near(11)
        assert values["net_notional"] == near(-94)
        assert values["gross_notional"] == near(94)
        assert values["drawdown"] == near(0)
        assert values["fees"] == 0
    pnl_peak, dd_peak = peak(report, "pnl-floor"), peak(report, "dd")
    assert pnl_peak.high == near(13)  # expected.txt: peaks: pnl high 13
    assert dd_peak.high == near(2.5)  # expected.txt: peaks: drawdown high 2.5
    assert pnl_peak.high_scope == dd_peak.high_scope == S  # both rules are strategy-scoped


def test_04_fill_before_new() -> None:
    case = "04-fill-before-new"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "none (open_orders never exceeds 1)"
    assert_counts(report)  # a fill or cancel before its new is not bad (issue 10, fault 2)
    engine, _ = final(case)
    for owner in (S, A, "firm"):
        assert engine.position(owner, "XYZ") == 150  # expected.txt: XYZ = +150
    assert peak(report, "overfill").high == 1.0  # expected.txt: P1 = 100/100 = 1.0
    assert peak(report, "open").high == near(1)  # expected.txt: open_orders peak = 1
    # expected.txt: only O3 is ever open (between t=5 and t=6, lines 6-7); O1 was filled and
    # O2 cancelled before their `new` arrived, so neither opens. Final 0.
    assert [s.v(S, "open_orders") for s in trace(case)] == [0, 0, 0, 0, 0, 1, 0]


def test_05_exec_correction() -> None:
    case = "05-exec-correction"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Transitions: none."
    assert_counts(report)  # a correction is not a duplicate nor a bad event
    # expected.txt: the correction REPLACES the original: +100 (not 200), cost 1005, avg 10.05
    assert after(case, 3).position(A, "XYZ") == near((100, 1005, 0))
    engine, _ = final(case)
    assert engine.position(A, "XYZ") == 100  # expected.txt: position account XYZ = +100
    assert engine.positions()[(A, "symbol:XYZ")] == near((100, 1005, 0))  # cost 1005
    values = engine.scope_values(A)
    assert values["gross_notional"] == near(1005)  # expected.txt: 100 * 10.05 = 1005
    assert values["pnl"] == near(0)  # from expected.txt: 100 x mark 10.05 - cost 1005 = 0
    assert peak(report, "pos").high == near(100)  # expected.txt: position_qty peak = 100


def test_06_negative_price() -> None:
    case = "06-negative-price"
    report = replayed(case)
    # expected.txt: one halt of account:ACC-1 by loss-limit at t0+2 s (value -47,630)
    assert_transitions(case, report, [halt(A, "loss-limit", -47_630, at_ms(2000))])
    assert_counts(report)  # negative prices are valid (issue 10, fault 8)
    assert after(case, 4).v(A, "pnl") == near(-9_000)  # expected.txt: 1000*(1-10)
    crash = after(case, 5)
    assert crash.v(A, "pnl") == near(-47_630)  # expected.txt: 1000*(-37.63-10)
    assert crash.v(A, "gross_notional") == near(37_630)  # issue 10: Σ|qty x price|, never < 0
    assert crash.v(A, "net_notional") == near(-37_630)  # issue 10: Σ signed qty x price
    engine, _ = final(case)
    assert engine.position(A, "CLK0") == 0.0  # expected.txt: sold: position 0
    values = engine.scope_values(A)
    assert values["realised_pnl"] == near(-47_630)  # expected.txt: realised -47,630
    assert values["pnl"] == near(-47_630)  # expected.txt: pnl -47,630
    assert values["gross_notional"] == near(0)  # flat
    assert peak(report, "loss-limit").low == near(-47_630)  # the lowest pnl above
    assert peak(report, "pos").high == near(1000)  # expected.txt: long 1000


def test_07_future_timestamp() -> None:
    case = "07-future-timestamp"
    report = replayed(case)
    want = [
        # expected.txt: account:ACC-1 by loss-limit at t=1200 ms, value -20,000
        halt(A, "loss-limit", -20_000, at_ms(1200)),
        # expected.txt: strategy:strat-a by order-rate at ~t=1500 ms, value 501
        halt(S, "order-rate", 501, (at_ms(1490), at_ms(1510))),
    ]
    assert_transitions(case, report, want, system_alerts=True)  # a skew alert is allowed
    # expected.txt: ONE heartbeat and ONE `new` are an hour ahead; everything after is on time
    assert_counts(report, skewed=2, late=0)
    engine, _ = final(case)
    assert engine.position(A, "XYZ") == 1000  # expected.txt: Final position +1000
    assert engine.scope_values(A)["pnl"] == near(-30_000)  # expected.txt: pnl -30,000 (at 70)


def test_08_float_epsilon_overfill() -> None:
    case = "08-float-epsilon-overfill"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Transitions: none."
    assert_counts(report)
    assert peak(report, "parent-overfill").high == 1.0  # expected.txt: 0.3 / 0.3 = 1.0, exactly
    assert peak(report, "open-orders").high == near(1)  # expected.txt: open_orders peak = 1
    tenth = after(case, 18)  # the 10th 0.1 fill of B1, t=20 ms
    assert tenth.v(S, "open_orders") == 0  # expected.txt: B1 fully filled: back to 0 at t=20 ms
    assert tenth.qty(A, "ETH-USD") == 1.0  # ten fills of 0.1 are exactly 1.0
    engine, _ = final(case)
    for owner in (A, S, "firm"):
        assert engine.position(owner, "ETH-USD") == 0.0  # expected.txt: flat, no residual
        assert engine.position(owner, "BTC-USD") == near(0.3)  # P1's three 0.1 fills are held
        assert engine.scope_values(owner)["open_orders"] == 0  # expected.txt: final 0


def test_09_knight_scaled() -> None:
    case = "09-knight-scaled"
    report = replayed(case)
    want = [
        # expected.txt: first round-2 child fill (C1-0, t=637 ms): P0 200/100 = 2.0
        halt("strategy:router-x", "parent-overfill", 2.0, at_ms(637)),
        # expected.txt: gross first > 2,000,000 at C1-85, t=807 ms, value 2,006,900
        reduce_only("account:ACC-33", "gross-exposure", 2_006_900, at_ms(807)),
        # expected.txt: net-band leaves the band at t=515 ms (-507,600) and t=897 ms (-507,300)
        alert("firm", "net-band", -507_600, at_ms(515)),
        alert("firm", "net-band", -507_300, at_ms(897)),
    ]
    assert_transitions(case, report, want)
    assert_counts(report)
    # expected.txt: round 1 leaves every parent at exactly 1.0 (state before C1-0's fill)
    round_one = engine_after(case, line_of(case, "fill", "C1-0") - 1).peaks()
    assert [p.high for p in round_one if p.rule.name == "parent-overfill"] == [1.0]
    engine, _ = final(case)
    for scope in ("firm", "account:ACC-33", "strategy:router-x"):  # one account, one strategy
        values = engine.scope_values(scope)
        assert values["gross_notional"] == near(3_110_800)  # expected.txt: 200*15554
        assert values["net_notional"] == near(-633_600)  # expected.txt: 200*(6193 - 9361)
        assert values["pnl"] == near(0)  # expected.txt: valued at its own fill price
        assert values["open_orders"] == 0  # expected.txt: open_orders = 0
    assert peak(report, "parent-overfill").high == near(2.0)  # expected.txt: every parent 200/100


def test_10_drawdown_from_peak() -> None:
    case = "10-drawdown-from-peak"
    report = replayed(case)
    # expected.txt: account:ACC-1 HALTED by drawdown-from-peak at t=3000 ms, value 500
    assert_transitions(case, report, [halt(A, "drawdown-from-peak", 500, at_ms(3000))])
    assert_counts(report)
    # expected.txt's pnl path: (line, realised, pnl, drawdown); drawdown = peak 200 - pnl
    path = [
        (4, 200, 200, 0),  # t=1000 sell 100 @12: realised +200 (peak 200)
        (6, 200, 200, 0),  # t=2000 buy 1000 @10
        (7, 200, 0, 200),  # t=2500 mark 9.8: unrealised -200
        (9, -300, -300, 500),  # t=3000 sell 1000 @9.5: realised -500 -> -300 (breach)
        (11, -300, -302, 502),  # t=4000 buy 10 @10 valued 9.8: unrealised -2
        (12, -300, -290, 490),  # t=4500 mark 11: unrealised +10
        (14, -290, -290, 490),  # t=5000 sell 10 @11: realised -290
    ]
    for line, realised, pnl, drawdown in path:
        snap = after(case, line)
        got = (snap.v(A, "realised_pnl"), snap.v(A, "pnl"), snap.v(A, "drawdown"))
        assert got == near((realised, pnl, drawdown)), line
    assert peak(report, "drawdown-from-peak").high == near(502)  # expected.txt: drawdown high
    assert peak(report, "loss-from-start").low == near(-302)  # expected.txt: pnl low -302
    assert peak(report, "loss-from-start").high == near(200)  # expected.txt: peak 200
    engine, _ = final(case)
    assert engine.scope_values(A)["realised_pnl"] == near(-290)  # expected.txt: Final -290
    assert engine.position(A, "XYZ") == 0.0  # every round trip closed


def test_11_stale_valuation_phantom_drawdown() -> None:
    case = "11-stale-valuation-phantom-drawdown"
    report = replayed(case)
    assert_transitions(case, report, [])  # expected.txt: "Expected transitions: none."
    assert_counts(report)
    accounts = ("account:ACC-A", "account:ACC-B", "account:ACC-C")
    # expected.txt: no P&L is ever invented: ACC-A 0 until its sell @12 (line 4) realises
    # +200, then 200; ACC-B and ACC-C 0; drawdown 0 throughout on all three.
    for line, snap in enumerate(trace(case), 1):
        want = (200 if line >= 4 else 0, 0, 0)
        assert tuple(snap.v(a, "pnl") for a in accounts) == near(want), line
        assert tuple(snap.v(a, "drawdown") for a in accounts) == near((0, 0, 0)), line
    engine, _ = final(case)
    # expected.txt: Final drawdown 0 on all three accounts; pnl 200 / 0 / 0
    assert tuple(engine.scope_values(a)["pnl"] for a in accounts) == near((200, 0, 0))
    assert tuple(engine.scope_values(a)["drawdown"] for a in accounts) == near((0, 0, 0))
    # expected.txt: each book valued at its latest price 10: 1000 long, 1000 long, 1000 short
    nets = tuple(engine.scope_values(a)["net_notional"] for a in accounts)
    assert nets == near((10_000, 10_000, -10_000))
    loss = peak(report, "loss-limit")
    assert (loss.high, loss.low) == near((200, 0))  # expected.txt: pnl peak 200, else 0
    assert loss.high_scope == "account:ACC-A"
    assert peak(report, "drawdown").high == near(0)  # expected.txt: drawdown never above 0


def test_12_flat_position_marks() -> None:
    case = "12-flat-position-marks"
    report = replayed(case)
    want = [
        alert(A, "gross", 1_000, at_ms(1)),  # expected.txt: XYZ bought (t=1 ms, value 1,000)
        alert(A, "gross", 4_000, at_ms(401)),  # expected.txt: BTC bought (t=401 ms, value 4,000)
    ]
    assert_transitions(case, report, want)  # expected.txt: exactly those 2 alerts; no halt
    assert_counts(report)
    # expected.txt: gross 1,000 while XYZ is held, 4,000..12,000 for BTC, 0 once flat
    gross = {2: 1_000, 4: 0, 6: 4_000, 8: 8_000, 10: 12_000, 12: 0}
    for line, snap in enumerate(trace(case), 1):
        if line in gross or line > 12:
            assert snap.v(A, "gross_notional") == near(gross.get(line, 0)), line
        for scope in (A, S, "firm"):  # expected.txt: pnl 0 throughout; drawdown 0
            assert (snap.v(scope, "pnl"), snap.v(scope, "drawdown")) == near((0, 0)), line
    engine, _ = final(case)
    for owner in (A, S, "firm"):
        assert engine.position(owner, "XYZ") == 0.0  # expected.txt: positions XYZ 0
        assert engine.position(owner, "BTC") == 0.0  # expected.txt: BTC 0 (0.1 x 3 - 0.3)
        assert engine.scope_values(owner)["realised_pnl"] == near(0)  # expected.txt: realised 0
    loss = peak(report, "loss-limit")
    assert (loss.high, loss.low) == near((0, 0))  # expected.txt: pnl 0 throughout
    assert peak(report, "drawdown").high == near(0)  # expected.txt: drawdown 0


def test_13_cancel_storm() -> None:
    case = "13-cancel-storm"
    report = replayed(case)
    # expected.txt: the 11th cancel (O10, t=12,010 ms) gives 11 > 10: 1 halt
    assert_transitions(case, report, [halt(S, "message-rate", 11, at_ms(12_010))])
    assert_counts(report)
    assert after(case, 20).v(S, "open_orders") == 20  # expected.txt: 20 resting orders
    engine, _ = final(case)
    assert engine.scope_values(S)["open_orders"] == 0  # expected.txt: open_orders final 0
    assert peak(report, "message-rate").high == near(20)  # expected.txt: k-th cancel gives k
    # expected.txt: cancel_ratio not evaluated while no new order is in the window (it may be
    # evaluated during the slow `new` phase, when it is 0 cancels / n orders)
    ratio = peak(report, "cancel-ratio").high
    assert ratio is None or ratio == 0.0


def test_14_strategy_two_accounts() -> None:
    case = "14-strategy-two-accounts"
    report = replayed(case)
    want = [
        halt("firm", "firm-position", 400, at_ms(3)),  # expected.txt: firm HALTED (value 400)
        # expected.txt: account:ACC-B REDUCE_ONLY (value 5,000), both at t=3 ms
        reduce_only("account:ACC-B", "account-gross", 5_000, at_ms(3)),
    ]
    assert_transitions(case, report, want)
    assert_counts(report)  # the second account's fill is applied, not bad
    engine, _ = final(case)
    assert engine.position("firm", "XYZ") == -400  # expected.txt: +100 - 500 = -400
    assert engine.position("account:ACC-A", "XYZ") == 100  # expected.txt: ACC-A +100
    assert engine.position("account:ACC-B", "XYZ") == -500  # expected.txt: ACC-B -500
    assert engine.position("strategy:mm-1", "XYZ") == -400  # issue 10: strategy spans accounts
    assert engine.scope_values("account:ACC-A")["gross_notional"] == near(1_000)  # expected.txt
    assert engine.scope_values("account:ACC-B")["gross_notional"] == near(5_000)  # expected.txt


def test_15_partial_fill_replace_cancel() -> None:
    case = "15-partial-fill-replace-cancel"
    report = replayed(case)
    # expected.txt: exactly 1 halt, the fat-finger on O1's new (1000 x 10), at t=0
    assert_transitions(case, report, [halt(S, "fat-finger-notional", 10_000, at_ms(0))])
    assert_counts(report)
    engine, _ = final(case)
    assert engine.position(S, "XYZ") == near(616.5)  # expected.txt: 16 + 500 + 40 + 60 + 0.5
    # expected.txt: cost 6,215; unrealised at the last trade price 10: pnl -50
    assert engine.positions()[(S, "symbol:XYZ")] == near((616.5, 6_215, 0))
    assert engine.scope_values(S)["pnl"] == near(-50)
    # expected.txt: O1 done at its 500 fill (line 4); O2 done by the replace to 30 < 40
    # filled (line 7), its cancel moot; O3 done by its cancel (line 11), the racing fill
    # does not reopen it. Peak 1, final 0.
    opens = [s.v(S, "open_orders") for s in trace(case)]
    assert opens == [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    assert peak(report, "open").high == near(1)  # expected.txt: open_orders peak 1
    notional = peak(report, "fat-finger-notional")
    assert notional.high == near(10_000)  # expected.txt: O1 new 1000 x 10
    assert notional.low == near(300)  # expected.txt: O2 replace 30 x 10
    assert peak(report, "pos").high == near(616.5)  # expected.txt: limit 700, no breach


def test_16_mark_out_of_order() -> None:
    case = "16-mark-out-of-order"
    report = replayed(case)
    # expected.txt: 1 alert (gross, value 1,300) at t<=1300 ms (after the 13 @1100 ms); no halt
    want = [alert(A, "gross", 1_300, (at_ms(1100), at_ms(1300)))]
    assert_transitions(case, report, want)
    assert_counts(report)
    three = after(case, 3)  # expected.txt: after 12: pnl +200, gross 1,200
    assert (three.v(A, "pnl"), three.v(A, "gross_notional")) == near((200, 1_200))
    assert after(case, 4).v(A, "pnl") == near(200)  # expected.txt: 8 @900 ms ignored
    assert min(s.v(A, "pnl") for s in trace(case)) >= -1e-9  # expected.txt: never -200
    engine, _ = final(case)
    values = engine.scope_values(A)
    assert values["pnl"] == near(300)  # expected.txt: Final pnl 300
    assert values["gross_notional"] == near(1_300)  # expected.txt: gross 1,300
    assert peak(report, "loss-limit").low == near(0)  # at the fill, valued at its price 10
    assert peak(report, "gross").high == near(1_300)  # expected.txt: gross 1,300


def test_18_commissions_ignored() -> None:
    case = "18-commissions-ignored"
    report = replayed(case)
    # expected.txt: the buy of round trip 41: pnl -41 -> HALTED (loss-limit) at t=40,001 ms
    assert_transitions(case, report, [halt(A, "loss-limit", -41, at_ms(40_001))])
    assert_counts(report)
    # expected.txt: after round trip k (line 4k), and after its buy (line 4k-2), pnl = -k;
    # after round trip 40 exactly -40, which does not breach -40.5
    for k in range(1, 51):
        assert after(case, 4 * k - 2).v(A, "pnl") == near(-k), k
        assert after(case, 4 * k).v(A, "pnl") == near(-k), k
    engine, _ = final(case)
    values = engine.scope_values(A)
    assert values["fees"] == near(100)  # expected.txt: 1.00 per fill, 100 fills
    assert values["realised_pnl"] == near(50)  # expected.txt: gross of fees +50.00
    assert values["pnl"] == near(-50)  # expected.txt: net -50.00 after 50
    assert engine.position(A, "XYZ") == 0.0  # every round trip closed


def test_19_heartbeat_only_feed() -> None:
    case = "19-heartbeat-only-feed"
    report = replayed(case)
    want = [
        alert("firm", "router2-never-seen", 2_250, at_ms(2_250)),  # expected.txt: t=2250
        halt("firm", "router1-silent", 2_250, at_ms(3_250)),  # expected.txt: value 2250, t=3250
    ]
    assert_transitions(case, report, want)  # expected.txt: 1 alert and 1 halt
    assert_counts(report)
    assert peak(report, "any-silence").high == near(250)  # expected.txt: peak 250


# every case ------------------------------------------------------------------------
def _semantic(t: Transition) -> Transition:
    """A transition without its decision-time fields (a system alert stamps wall time)."""
    return msgspec.structs.replace(t, id="", decided_ns=0)


def _peaks(report: ReplayReport) -> list[tuple[object, ...]]:
    return [
        (p.rule.name, p.evaluations, p.high, p.low, p.utilisation, p.high_scope, p.low_scope)
        for p in report.peaks
    ]


def _counters(report: ReplayReport) -> tuple[int, ...]:
    return (report.bad, report.duplicates, report.skewed, report.late, report.applied)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_batching_does_not_change_the_outcome(case: str) -> None:
    one, each = replayed(case), replayed(case, 1)
    assert [_semantic(t) for t in each.transitions] == [_semantic(t) for t in one.transitions]
    assert _peaks(each) == _peaks(one)
    assert _counters(each) == _counters(one)
    assert trace(case)[-1] == snapshot(engine_after(case, len(events_of(case))), case)


def test_every_case_has_its_test() -> None:
    assert len(CASE_NAMES) == 18
    missing = [c for c in CASE_NAMES if f"test_{c.replace('-', '_')}" not in globals()]
    assert not missing
