"""The audit log is append-only JSONL, fsynced, and readable with ``riskguard audit``."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from riskguard import audit
from riskguard.cli import main
from riskguard.killswitch import Transition


async def test_records_are_appended_in_order_and_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    log = audit.AuditLog(path)
    await log.start()
    tr = Transition(
        id="firm@1:HALTED",
        scope="firm",
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=1,
        decided_ns=1,
        operator="alice",
        reason="drill",
    )
    log.record("transition", tr)
    log.record("manual", {"action": "halt", "scope": "firm", "operator": "alice"})
    await log.stop()
    second = audit.AuditLog(path)  # a restart appends, never truncates
    await second.start()
    second.record("limits_reload", {"result": "rejected", "problems": ["x"]})
    await second.stop()
    kinds = [r["kind"] for r in audit.read(path)]
    assert kinds == ["transition", "manual", "limits_reload"]
    assert main(["audit", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and '"operator": "alice"' in out[0] and "limits_reload" in out[2]
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 2


def _record(kind: str, ns: int, **body: object) -> bytes:
    return json.dumps({"kind": kind, "logged_ns": ns, "record": body}).encode() + b"\n"


def test_times_are_utc_with_milliseconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit.utc_ms(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"
    path = tmp_path / "audit.jsonl"
    path.write_bytes(_record("manual", 1_700_000_000_123_456_789, scope="firm"))
    assert main(["audit", str(path)]) == 0
    assert capsys.readouterr().out.startswith("2023-11-14 22:13:20.123 UTC  manual ")


async def test_each_record_carries_its_time_with_zone_and_ms(tmp_path: Path) -> None:
    log = audit.AuditLog(tmp_path / "audit.jsonl")
    await log.start()
    log.record("manual", {"scope": "firm"})
    await log.stop()
    (rec,) = audit.read(log.path)
    assert rec["logged_at"] == audit.utc_ms(rec["logged_ns"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["logged_at"])


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[1, 2, 3]\n", "is not a riskguard audit log (line 1 is a JSON array, not an object)"),
        (b"version = 1\n[[rule]]\n", "is not a riskguard audit log (line 1 is not JSON)"),
        (
            b'{"type":"heartbeat","ts":1,"source":"r"}\n',
            "is not a riskguard audit log (line 1 is an object without kind, logged_ns, record)",
        ),
        (
            _record("manual", 1) + b'["a"]\n',
            "line 2 is not an audit record (a JSON array, not an object)",
        ),
        (gzip.compress(b'{"type":"mark"}\n'), "is not a riskguard audit log (line 1 is an object"),
        (gzip.compress(_record("manual", 1) * 50)[:-20], "unreadable gzip after line"),
    ],
    ids=["json-array", "toml", "events", "array-later", "events-gzip", "truncated-gzip"],
)
def test_a_file_that_is_not_an_audit_log_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    path = tmp_path / "some.file"
    path.write_bytes(content)
    assert main(["audit", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"riskguard audit: {path}")
    assert why in err[0]


def test_a_rotated_gzip_log_is_read_and_a_torn_line_is_skipped_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rotated = tmp_path / "audit.jsonl.1.gz"
    rotated.write_bytes(gzip.compress(_record("manual", 1, n=1) + _record("manual", 2, n=2)))
    assert main(["audit", str(rotated)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    torn = tmp_path / "audit.jsonl"
    torn.write_bytes(_record("manual", 1, n=1) + b'{"kind": "tran' + b"\n" + _record("x", 3))
    assert main(["audit", str(torn)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err == "riskguard audit: 1 line(s) not JSON, skipped (first: line 2)\n"
