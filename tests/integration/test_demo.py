"""``riskguard demo`` end to end (short): the runaway is halted and no child order gets out;
bad arguments are one line, and Ctrl-C stops everything at once without a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

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


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--duration", "0"], "--duration must be seconds above 0, got 0"),
        (["--duration", "-3"], "--duration must be seconds above 0, got -3"),
        (["--duration", "nan"], "--duration must be seconds above 0, got nan"),
        (["--trials", "0"], "--trials must be 1 or more, got 0"),
        (["--trials", "-1"], "--trials must be 1 or more, got -1"),
    ],
)
def test_a_duration_or_trials_below_one_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert main(["demo", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"riskguard demo: {said}\n"


@pytest.mark.parametrize("when", ["trading", "starting"])
def test_ctrl_c_stops_the_demo_at_once_without_a_traceback(when: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskguard", "demo", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        wait_for = "simulated trading system" if when == "trading" else "embedded broker"
        while wait_for not in (line := proc.stdout.readline()):
            assert line, "the demo ended early"
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err == "riskguard demo: interrupted; everything it started is stopped\n"
    assert took < 4, took  # the broker is stopped after its clients, so it stops at once
