"""A feed-silence breach says whose heartbeat is missing and since when (issue 12, item 11):
a source never heard from is silent since start, which is what a fresh ``run`` without
its trading system sees, and the reason says that this is expected."""

from __future__ import annotations

from pathlib import Path

from riskguard.limits import load
from riskguard.replay import replay

CASE = Path(__file__).parent / "cases" / "19-heartbeat-only-feed"


def test_silence_reasons_name_the_source_and_since_when() -> None:
    report = replay(CASE / "events.jsonl", load(CASE / "limits.toml"), progress=False)
    reasons = {t.rule: t.reason for t in report.transitions}
    assert reasons["router2-never-seen"] == (
        "no heartbeat from router-2 since start, 2.2 s: expected while the trading system "
        "is not running; the halt stays until an operator resumes"
    )
    # router-1 beat last at t=1000 ms (22:13:21 UTC on 14 Nov 2023, plus 1 s)
    assert reasons["router1-silent"] == (
        "no heartbeat from router-1 for 2.2 s (last at 22:13:21.000 UTC)"
    )
    assert "any-silence" not in reasons  # events every 250 ms
