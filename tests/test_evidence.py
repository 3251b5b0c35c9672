"""Evidence shown right: a value never looks equal to a limit it differs from."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from riskguard.control.decision import allows
from riskguard.control.records import HeartbeatRecord, StateRecord
from riskguard.control.view import ControlView, Instant, Pulse
from riskguard.evidence import evidence, number, ratio, sentence, versus, when
from riskguard.notify import sinks
from riskguard.settings import NotifierSettings
from riskguard.vocabulary import Transition, system_alert

T0 = 1_700_000_000_000_000_000
finite = st.floats(allow_nan=False, allow_infinity=False)


def halt(value: float, limit: float, rule: str = "parent-overfill") -> Transition:
    return Transition(
        id=f"strategy:s1@{T0}:HALTED",
        scope="strategy:s1",
        from_="ACTIVE",
        to="HALTED",
        kind="auto",
        ts=T0,
        decided_ns=T0,
        rule=rule,
        metric="parent_overfill_ratio",
        value=value,
        limit=limit,
    )


def test_a_breach_by_one_ulp_shows_the_difference() -> None:
    assert versus(1.0000000000000002, 1.0) == ("1.0000000000000002", "1")
    assert versus(0.1 + 0.2, 0.3) == ("0.30000000000000004", "0.3")


def test_distinct_numbers_stay_short_when_six_digits_tell_them_apart() -> None:
    assert versus(2011.194586, 2000.0) == ("2,011.19", "2,000")
    assert versus(-507_600.0, -500_000.0) == ("-507,600", "-500,000")
    assert versus(3_110_800.0, 2_000_000.0) == ("3,110,800", "2,000,000")


def test_large_values_gain_decimals_only_when_needed() -> None:
    assert versus(2_000_000.5, 2_000_000.0) == ("2,000,000.5", "2,000,000")
    assert versus(999_999.7, 1_000_000.0) == ("999,999.7", "1,000,000")


def test_equal_numbers_print_equal() -> None:
    assert versus(1.0, 1) == ("1", "1")
    assert versus(-0.0, 0.0) == ("0", "0")
    assert number(None) == "-" and versus(None, 5.0) == ("-", "5")


@given(finite, finite)
def test_texts_differ_exactly_when_numbers_differ(a: float, b: float) -> None:
    x, y = versus(a, b)
    assert (x == y) == (a == b)


@given(finite, st.integers(min_value=1, max_value=50))
def test_one_ulp_apart_is_never_shown_equal(a: float, steps: int) -> None:
    b = a
    for _ in range(steps):
        b = math.nextafter(b, math.inf)
    if math.isfinite(b):
        x, y = versus(a, b)
        assert x != y
        assert float(x.replace(",", "")) < float(y.replace(",", ""))  # the order shows too


def test_ratio_shows_digits_when_two_decimals_would_read_at_the_limit() -> None:
    assert ratio(1.0) == "1.00"
    assert ratio(1.5554) == "1.56"
    assert ratio(1.0000000000000002) == "1.0000000000000002"
    assert ratio(0.9999999) == "0.9999999"
    assert ratio(-0.0) == "0.00" and ratio(None) == "-"


def test_sentence_and_evidence() -> None:
    assert evidence(halt(1.0000000000000002, 1.0)) == (
        "rule parent-overfill: parent_overfill_ratio 1.0000000000000002 vs limit 1"
    )
    manual = Transition(
        id="x",
        scope="firm",
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=T0,
        decided_ns=T0,
        operator="alice",
        reason="runaway",
    )
    assert evidence(manual) == "by alice: runaway"
    assert sentence("limits-reload-rejected", "limits_file", None, None, "bad.toml: x") == (
        "rule limits-reload-rejected: limits_file; bad.toml: x"
    )


def test_gate_refusal_reason_shows_why() -> None:
    at = Instant(wall_ns=T0, mono_ns=0)
    tr = halt(1.0000000000000002, 1.0)
    view = ControlView(
        states={tr.scope: StateRecord(scope=tr.scope, state="HALTED", transition=tr)},
        heartbeats={
            "rg": Pulse(HeartbeatRecord(ts=T0, instance="rg", ready=True, interval_ms=250), at)
        },
    )
    verdict = allows(view, 1000, at, "A", "s1", "X", "buy", False)
    assert not verdict and verdict.state == "HALTED"
    assert verdict.reason == (
        "strategy:s1 is HALTED (rule parent-overfill: parent_overfill_ratio "
        "1.0000000000000002 vs limit 1)"
    )


def test_notifier_summary_shows_digits_and_survives_alerts_without_a_value() -> None:
    assert "1.0000000000000002 vs limit 1" in sinks.summary(halt(1.0000000000000002, 1.0))
    rejected = system_alert(
        "limits-reload-rejected", "limits_file", "ACTIVE", reason="rules.toml: line 3", now_ns=T0
    )
    text = sinks.summary(rejected)
    assert "limits-reload-rejected" in text and "rules.toml: line 3" in text
    cfg = NotifierSettings(kind="slack", url="http://127.0.0.1:1/")
    body = sinks.build(cfg, rejected, None, "rg")
    assert body is not None and "rules.toml: line 3" in body["text"]


def test_when_is_utc_with_milliseconds() -> None:
    assert when(1_700_000_000_123_456_789) == "2023-11-14 22:13:20.123 UTC"
    assert when(0) == "1970-01-01 00:00:00.000 UTC"
    assert when(None) == "-" and when(-1) == "-"
