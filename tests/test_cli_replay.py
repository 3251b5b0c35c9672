"""``riskguard replay``'s summary as a risk officer reads it, and its engine flags.

The peaks table shows each rule's worse side (peak, limit and ratio from one side) and
the scope that reached it; the summary counts redeliveries, skewed and late events; the
``--max-clock-skew-ms``, ``--max-lateness-ms``, ``--dedupe-horizon-s`` and
``--dedupe-max-ids`` flags reach the engine, and bad values are one line and exit 2.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from riskguard.cli import main

CASES = Path(__file__).parent / "cases"
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000

POSITION_LIMIT = """version = 1
[[rule]]
name = "pos"
metric = "position_qty"
scope = "account"
max = 150
action = "halt"
"""

ORDER_RATE = """version = 1
[[rule]]
name = "order-rate"
metric = "order_rate"
scope = "firm"
window_ms = 60000
max = 100
action = "alert"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def case(name: str) -> list[str]:
    return [str(CASES / name / "events.jsonl"), "--limits", str(CASES / name / "limits.toml")]


def peak_line(out: str, rule: str) -> list[str]:
    table = out.split("rule peaks")[1]
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [rule])


def write(tmp_path: Path, events: list[dict[str, object]], limits: str) -> list[str]:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    (tmp_path / "limits.toml").write_text(limits)
    return [str(path), "--limits", str(tmp_path / "limits.toml")]


def fill(ts: int, exec_id: str, qty: float = 100) -> dict[str, object]:
    return {
        "type": "fill",
        "ts": ts,
        "order_id": "O1",
        "exec_id": exec_id,
        "account": "A1",
        "strategy": "s1",
        "symbol": "XYZ",
        "side": "buy",
        "qty": qty,
        "price": 10.0,
    }


def new(ts: int, order_id: str) -> dict[str, object]:
    return {
        "type": "new",
        "ts": ts,
        "order_id": order_id,
        "account": "A1",
        "strategy": "s1",
        "symbol": "XYZ",
        "side": "buy",
        "qty": 1,
        "price": 10.0,
    }


def test_a_band_shows_its_worse_side_and_the_scope_that_reached_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, *case("09-knight-scaled"))
    assert code == 0
    # net band [-500,000, 500,000]: the low side went to -856,900 (1.71 of -500,000);
    # the high side only to 396,000 (0.79), so the low side is shown, with its own limit
    assert peak_line(out, "net-band")[3:] == ["-856,900", "-500,000", "1.71", "firm"]
    assert peak_line(out, "gross-exposure")[3:] == [
        "3,110,800",
        "2,000,000",
        "1.56",
        "account:ACC-33",
    ]
    assert peak_line(out, "parent-overfill")[3:] == ["2", "1", "2.00", "strategy:router-x"]
    assert "reached by" in out


def test_summary_counts_redeliveries(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, *case("01-duplicate-exec-id"))
    assert "events applied 4\n" in out and "duplicates     1  (redeliveries" in out
    assert "bad events     0\n" in out


def test_summary_names_the_skewed_keys_and_events(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, *case("07-future-timestamp"))
    assert "skewed         2  (stamped over 5,000 ms ahead" in out
    skew = out.split("skewed         2")[1].split("  late")[0]
    assert "account:ACC-1" in skew and "source:router-1" in skew
    assert "3,600,498 ms ahead" in skew  # the worst skew of account ACC-1
    assert "line 5: source:router-1 stamped 2023-11-14 23:13:20.500000" in skew
    assert "line 6: account:ACC-1" in skew


def test_jsonl_summary_on_stderr_has_the_same_counts(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = run(capsys, *case("07-future-timestamp"), "--format", "jsonl")
    assert len(out.splitlines()) == 2  # the two halts
    assert "skewed         2" in err and "duplicates     0" in err and "late           0" in err


def test_max_clock_skew_reaches_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    # bounded at more than an hour, the two events an hour ahead are a genuine jump
    _, out, _ = run(capsys, *case("07-future-timestamp"), "--max-clock-skew-ms", "4000000")
    assert "skewed         0  (stamped over 4,000,000 ms ahead" in out


def test_late_events_are_counted_and_the_bound_is_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write(
        tmp_path, [new(T0, "O1"), new(T0 + 5 * S, "O2"), new(T0 + 2 * S, "O3")], ORDER_RATE
    )
    _, out, _ = run(capsys, *files)
    assert "late           1  (over 1,000 ms behind" in out
    _, out, _ = run(capsys, *files, "--max-lateness-ms", "5000")
    assert "late           0  (over 5,000 ms behind" in out
    assert peak_line(out, "order-rate")[3] == "3"  # counted either way


def test_dedupe_horizon_and_max_ids_reach_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beats = [{"type": "heartbeat", "ts": T0 + k * S, "source": "r1"} for k in (3, 6)]
    files = write(tmp_path, [fill(T0, "E1"), *beats, fill(T0 + 9 * S, "E1")], POSITION_LIMIT)
    _, out, _ = run(capsys, *files, "--batch-size", "1")
    assert "duplicates     1" in out and "HALTED" not in out
    # remembered for 5 s only: at t=9 s the same exec_id is a new execution
    _, out, _ = run(capsys, *files, "--batch-size", "1", "--dedupe-horizon-s", "5")
    assert "duplicates     0" in out and "ACTIVE -> HALTED" in out
    files = write(
        tmp_path, [fill(T0, "E1"), fill(T0 + 1, "E2"), fill(T0 + 2, "E1")], POSITION_LIMIT
    )
    _, out, _ = run(capsys, *files, "--batch-size", "1", "--dedupe-max-ids", "1")
    assert "duplicates     0" in out and "ACTIVE -> HALTED" in out


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-clock-skew-ms", "-1"),
        ("--max-lateness-ms", "-5"),
        ("--max-lateness-ms", str(10**20)),
        ("--dedupe-horizon-s", "nan"),
        ("--dedupe-horizon-s", "inf"),
        ("--dedupe-horizon-s", "-1"),
        ("--dedupe-max-ids", "0"),
    ],
)
def test_a_bad_engine_flag_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code, out, err = run(capsys, *case("01-duplicate-exec-id"), flag, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"riskguard replay: {flag} must be")


def test_a_flag_that_is_not_a_number_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", *case("01-duplicate-exec-id"), "--max-clock-skew-ms", "5s"])
    assert exit_.value.code == 2
    assert "--max-clock-skew-ms: invalid int value" in capsys.readouterr().err


def test_example_with_an_events_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine.jsonl"
    mine.write_text("")
    code, out, err = run(capsys, str(mine), "--example")
    assert code == 2 and out == ""
    assert err == (
        f"riskguard replay: --example replays the bundled session, so {mine} would be "
        "ignored: give EVENTS --limits FILE, or --example alone\n"
    )


class Terminal(io.StringIO):
    """stdout and stderr of one terminal: what is written, and what the screen shows."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        """The lines as displayed: a carriage return moves back to column 0 and the
        text after it overwrites what was there."""
        lines = []
        for raw in self.getvalue().split("\n"):
            shown: list[str] = []
            col = 0
            for part in re.split("(\r)", raw):
                if part == "\r":
                    col = 0
                    continue
                shown[col : col + len(part)] = list(part)
                col += len(part)
            lines.append("".join(shown).rstrip())
        return lines


def test_on_a_terminal_transitions_never_land_on_the_progress_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["replay", "--example", "--progress", "--batch-size", "64"]) == 0
    shown = term.screen()
    halts = [line for line in shown if "ACTIVE -> HALTED" in line]
    assert "replay knight-session.jsonl.gz: " in term.getvalue(), "no progress was drawn"
    assert halts and all(line.startswith("20") for line in halts), halts[:3]
    assert not any("ev/s" in line and "->" in line for line in shown)


def test_the_summary_counts_alerts_and_their_resolves_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # case 12: the gross alert fires twice, and re-arms (resolves) twice when flat
    code, out, _ = run(capsys, *case("12-flat-position-marks"))
    assert code == 0
    assert out.count("ALERT (ACTIVE)") == 2 and out.count("RESOLVED (ACTIVE)") == 2
    line = next(x for x in out.splitlines() if x.strip().startswith("transitions"))
    assert line.split(None, 1)[1] == (
        "0 halt, 0 reduce-only, 2 alert, 2 resolved (alerts re-armed)"
    )


def test_unreadable_events_are_one_line_and_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text(POSITION_LIMIT)
    code, out, err = run(capsys, str(tmp_path / "missing.jsonl"), "--limits", str(limits))
    assert code == 2 and out == ""  # no table header before the error
    assert err.strip().splitlines() == [
        f"riskguard replay: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    ]
    # a replay with no transition still has its table header
    code, out, _ = run(capsys, *case("01-duplicate-exec-id"))
    assert code == 0 and out.startswith("event time (UTC)")


@pytest.mark.parametrize("command", ["validate", "replay", "audit"])
def test_a_reader_that_goes_away_is_no_traceback(command: str, tmp_path: Path) -> None:
    """``riskguard replay ... | head``: stdout is closed before the command writes."""
    log = tmp_path / "audit.jsonl"
    rec = {"logged_ns": T0, "kind": "transition", "record": {"scope": "firm"}}
    log.write_bytes(orjson.dumps(rec) + b"\n")
    argv = {
        "validate": ["validate", "--metrics"],
        "replay": ["replay", "--example", "--no-progress"],
        "audit": ["audit", str(log)],
    }[command]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "riskguard", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Broken pipe" not in err, err
