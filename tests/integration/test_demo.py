"""``riskguard demo`` end to end (short): the runaway is halted and no child order gets out."""

from __future__ import annotations

import json

import pytest

from riskguard.cli import main


def test_demo_halts_the_runaway(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "8", "--trials", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == summary["halted_trials"] == 2
    assert summary["halt_rules"] == ["parent-overfill"]
    assert summary["runaway_orders_sent_after_halt"] == 0
    assert summary["event_to_halt_ms"]["p50"] is not None
    assert summary["event_to_gate_ms"]["p50"] >= summary["event_to_halt_ms"]["p50"] > 0
    assert summary["orders_sent"] > 100
