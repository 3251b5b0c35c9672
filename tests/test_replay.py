"""``riskguard replay`` end to end through the CLI, and the bundled example."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from riskguard import examples
from riskguard.cli import main
from riskguard.limits import load
from riskguard.replay import replay


def test_example_shows_the_knight_halt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--example", "--no-progress"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[1]
    assert "strategy:smars" in first and "ACTIVE -> HALTED" in first and "parent-overfill" in first
    lines = len(examples.session_bytes().splitlines())
    assert f"events applied {lines:,}" in out and "bad events     0" in out
    assert "parent-overfill" in out.split("rule peaks")[1]


def test_jsonl_output_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--example", "--format", "jsonl", "--no-progress"]) == 0
    captured = capsys.readouterr()
    rows = [orjson.loads(line) for line in captured.out.splitlines()]
    assert rows, "expected transitions"
    halt = rows[0]
    for key in ("scope", "from", "to", "rule", "value", "limit", "ts", "decided_ns", "id"):
        assert key in halt
    assert (halt["scope"], halt["from"], halt["to"], halt["rule"]) == (
        "strategy:smars",
        "ACTIVE",
        "HALTED",
        "parent-overfill",
    )
    assert isinstance(halt["ts"], int) and halt["value"] > halt["limit"]
    runaway_start = 1_700_000_000_000_000_000 + examples.RUNAWAY_AFTER_MS * 1_000_000
    assert 0 < halt["ts"] - runaway_start < 1_000_000_000  # halted within a second of the bug
    assert "rule peaks" in captured.err  # summary goes to stderr with jsonl


def test_bad_lines_are_reported_with_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = orjson.dumps({"type": "heartbeat", "ts": 1, "source": "r"})
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join([good, b"{broken", b"", good, b'{"type":"new","ts":1}', b"\xff\xfe", good])
        + b"\n"
    )
    assert main(["replay", str(events), "--limits", str(examples.LIMITS)]) == 0
    out = capsys.readouterr().out
    assert "bad events     3" in out
    assert "line 2: malformed_json" in out
    assert "line 5: missing_field" in out
    assert "line 6: invalid_utf8" in out
    assert "events applied 3" in out


def test_unreadable_inputs_exit_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--limits", str(examples.LIMITS)]) == 2
    assert "cannot read" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(gzip.compress(b'{"type":"heartbeat","ts":1,"source":"r"}\n' * 100)[:60])
    assert main(["replay", str(corrupt), "--limits", str(examples.LIMITS)]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    bad_limits = tmp_path / "limits.toml"
    bad_limits.write_text('version = 1\n[[rule]]\nname = "x"\n')
    assert main(["replay", "--example", "--limits", str(bad_limits)]) == 2
    err = capsys.readouterr().err
    assert "rule 'x' (#1): field 'metric'" in err
    assert main(["replay"]) == 2


def test_progress_is_shown_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = orjson.dumps({"type": "heartbeat", "ts": 1, "source": "r"})
    events = tmp_path / "many.jsonl"
    events.write_bytes((line + b"\n") * 200_000)
    assert (
        main(
            [
                "replay",
                str(events),
                "--limits",
                str(examples.LIMITS),
                "--progress",
                "--batch-size",
                "1000",
            ]
        )
        == 0
    )
    assert "replay many.jsonl:" in capsys.readouterr().err


def test_replay_is_independent_of_batch_size() -> None:
    limits = load(examples.LIMITS)
    runs = [
        replay(examples.SESSION, limits, batch_size=size, progress=False)
        for size in (1, 333, 100_000)
    ]
    keys = [[(t.scope, t.to, t.rule, t.ts, t.decided_ns) for t in r.transitions] for r in runs]
    assert keys[0] == keys[1] == keys[2]


def test_bundled_session_regenerates_identically() -> None:
    assert gzip.decompress(examples.SESSION.read_bytes()) == examples.session_bytes()
