"""The audit log is append-only JSONL, fsynced, and readable with ``riskguard audit``."""

from __future__ import annotations

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
