"""A feed-silence breach says whose heartbeat is missing and since when (issue 12, item 11):
a source never heard from is silent since start, which is what a fresh ``run`` without
its trading system sees, and the reason says that this is expected, and what ends it for
the rule's action: an operator's resume for a halt or REDUCE_ONLY (they latch), the
source heard again for an alert (it is resolved then)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from riskguard.decisions import silence_seconds
from riskguard.limits import load
from riskguard.replay import replay

CASE = Path(__file__).parent / "cases" / "19-heartbeat-only-feed"
EXPECTED = "expected while the trading system is not running"


def test_silence_reasons_name_the_source_and_since_when() -> None:
    report = replay(CASE / "events.jsonl", load(CASE / "limits.toml"), progress=False)
    reasons = {t.rule: t.reason for t in report.transitions}
    # router-2 (an alert rule) first found silent at t=2250 ms: exact to the ms
    assert reasons["router2-never-seen"] == (
        f"no heartbeat from router-2 since start, 2.25 s: {EXPECTED}; "
        "the alert resolves when the source is heard"
    )
    # router-1 beat last at t=1000 ms (22:13:21 UTC on 14 Nov 2023, plus 1 s)
    assert reasons["router1-silent"] == (
        "no heartbeat from router-1 for 2.25 s (last at 22:13:21.000 UTC)"
    )
    assert "any-silence" not in reasons  # events every 250 ms


@pytest.mark.parametrize(
    ("action", "then"),
    [
        ("halt", "the halt stays until an operator resumes"),
        ("reduce_only", "REDUCE_ONLY stays until an operator resumes"),
        ("alert", "the alert resolves when the source is heard"),
    ],
)
def test_a_source_never_heard_says_what_ends_it_by_action(
    tmp_path: Path, action: str, then: str
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text(
        'version = 1\n\n[[rule]]\nname = "router2-never-seen"\nmetric = "feed_silence_ms"\n'
        f'scope = "firm"\nmatch = {{ source = "router-2" }}\nmax = 2000\naction = "{action}"\n'
    )
    report = replay(CASE / "events.jsonl", load(limits), progress=False)
    [tr] = report.transitions
    assert tr.reason == f"no heartbeat from router-2 since start, 2.25 s: {EXPECTED}; {then}"
    assert tr.to == {"halt": "HALTED", "reduce_only": "REDUCE_ONLY", "alert": "ACTIVE"}[action]


def test_the_alert_of_a_source_never_heard_is_resolved_when_it_is_heard(tmp_path: Path) -> None:
    """What the alert's reason promises: router-2 beats at last, the alert is resolved."""
    lines = (CASE / "events.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])["ts"]
    for i, source in enumerate(("router-2", "md-1"), start=1):
        lines.append(
            json.dumps({"type": "heartbeat", "ts": last + i * 100_000_000, "source": source})
        )
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    report = replay(events, load(CASE / "limits.toml"), progress=False)
    alert, resolve = (t for t in report.transitions if t.rule == "router2-never-seen")
    assert (alert.kind, resolve.kind, resolve.ends) == ("alert", "resolve", alert.id)


@pytest.mark.parametrize(
    ("ms", "said"),
    [
        (2250.0, "2.25"),  # not 2.2 (round half to even at one decimal)
        (2000.0, "2"),
        (2013.784698, "2.014"),
        (2001.0, "2.001"),
        (999.6, "1"),
        (0.0, "0"),
        (86_400_500.0, "86,400.5"),
    ],
)
def test_silences_are_said_in_seconds_exact_to_the_ms(ms: float, said: str) -> None:
    assert silence_seconds(ms) == said
