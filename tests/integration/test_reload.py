"""Limits hot reload: file change (incl. a Kubernetes ConfigMap symlink swap) and SIGHUP;
a bad file keeps the old limits, alerts, shows in metrics; every reload is audited."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from riskguard import audit
from riskguard.ingest.reload import diff_rules
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.settings import Settings

RULE = (
    'version = 1\n[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "account"\nmax = {}\n'
    'action = "halt"\n'
)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def write(path: Path, text: str) -> None:
    """Replace a file atomically, as editors and kubelet do (a torn read would be rejected
    and retried on the next change, which would make the counts below inexact)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def with_limits(settings: Settings, path: Path) -> Settings:
    base = msgspec.to_builtins(settings)
    base["limits"] = str(path)
    return msgspec.convert(base, Settings)


def reloads(sidecar: Sidecar, result: str) -> float:
    text = sidecar.metrics.exposition().decode()
    line = f'riskguard_limits_reloads_total{{result="{result}"}} '
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0.0)


async def test_file_change_applies_and_bad_file_keeps_old_limits(
    settings: Settings, tmp_path: Path
) -> None:
    limits = tmp_path / "conf" / "limits.toml"
    limits.parent.mkdir()
    limits.write_text(RULE.format(100))
    sidecar = Sidecar(with_limits(settings, limits))
    await sidecar.start()
    try:
        await asyncio.sleep(0.3)  # let the watcher settle
        write(limits, RULE.format(250))
        await until(lambda: sidecar.limits.rules[0].max == 250.0)
        assert reloads(sidecar, "applied") == 1
        good = sidecar.limits.digest
        write(limits, RULE.format(250).replace('"halt"', '"explode"'))
        await until(lambda: reloads(sidecar, "rejected") >= 1)
        assert sidecar.limits.digest == good  # the old limits stay in force
        assert "field 'action'" in sidecar.status()["limits"]["last_reload_error"]
        write(limits, RULE.format(300))
        assert await sidecar.reloader.reload("SIGHUP") in (True, False)  # watcher may win
        await until(lambda: sidecar.limits.rules[0].max == 300.0)
        await asyncio.sleep(0.2)
    finally:
        await sidecar.stop()
    records = [r for r in audit.read(settings.runtime.audit_log) if r["kind"] == "limits_reload"]
    applied = [r["record"] for r in records if r["record"]["result"] == "applied"]
    rejected = [r["record"] for r in records if r["record"]["result"] == "rejected"]
    assert applied[0]["diff"]["changed"] == {"fat": {"max": [100.0, 250.0]}}
    assert rejected and "rule 'fat' (#1): field 'action'" in rejected[0]["problems"][0]


async def test_configmap_symlink_swap_is_picked_up(settings: Settings, tmp_path: Path) -> None:
    conf = tmp_path / "configmap"
    (conf / "..2026_v1").mkdir(parents=True)
    (conf / "..2026_v1" / "limits.toml").write_text(RULE.format(100))
    os.symlink("..2026_v1", conf / "..data")
    os.symlink("..data/limits.toml", conf / "limits.toml")
    sidecar = Sidecar(with_limits(settings, conf / "limits.toml"))
    await sidecar.start()
    try:
        await asyncio.sleep(0.3)
        (conf / "..2026_v2").mkdir()
        (conf / "..2026_v2" / "limits.toml").write_text(RULE.format(999))
        os.symlink("..2026_v2", conf / "..data_tmp")
        os.replace(conf / "..data_tmp", conf / "..data")  # how kubelet swaps a ConfigMap
        await until(lambda: sidecar.limits.rules[0].max == 999.0)
    finally:
        await sidecar.stop()


def test_diff_rules() -> None:
    old = parse(
        RULE.format(1) + '[[rule]]\nname = "gone"\nmetric = "pnl"\nscope = "firm"\n'
        'min = -5\naction = "alert"\n'
    )
    new = parse(
        RULE.format(2).replace('scope = "account"', 'scope = "strategy"')
        + '[[rule]]\nname = "new"\nmetric = "pnl"\nscope = "firm"\nmin = -5\n'
        'action = "alert"\n'
    )
    assert diff_rules(old, new) == {
        "added": ["new"],
        "removed": ["gone"],
        "changed": {"fat": {"max": [1.0, 2.0], "scope": ["account", "strategy"]}},
    }


async def test_a_bad_or_deleted_file_is_rejected_once_per_change(
    settings: Settings, tmp_path: Path
) -> None:
    """The audit log and journal beside the limits file (a run started in the limits'
    folder): each rejection's own audit line changes the folder, which must not make the
    same bad file be rejected again (it was, every 100 ms)."""
    folder = tmp_path / "here"
    folder.mkdir()
    limits = folder / "limits.toml"
    limits.write_text(RULE.format(100))
    base = msgspec.to_builtins(with_limits(settings, limits))
    base["runtime"]["audit_log"] = str(folder / "audit.jsonl")
    base["runtime"]["journal"] = str(folder / "journal.jsonl")
    sidecar = Sidecar(msgspec.convert(base, Settings))
    await sidecar.start()
    try:
        await asyncio.sleep(0.3)  # let the watcher settle
        write(limits, RULE.format(100).replace('"halt"', '"explode"'))
        await until(lambda: reloads(sidecar, "rejected") == 1)
        for i in range(5):  # churn in the folder: not the limits file
            (folder / "notes.txt").write_text(str(i))
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        assert reloads(sidecar, "rejected") == 1
        limits.unlink()
        await until(lambda: reloads(sidecar, "rejected") == 2)
        await asyncio.sleep(1.5)
        assert reloads(sidecar, "rejected") == 2
        assert "cannot read file" in sidecar.status()["limits"]["last_reload_error"]
        write(limits, RULE.format(100))  # the limits in force again: nothing to apply
        await asyncio.sleep(1.0)
        assert await sidecar.reloader.reload("SIGHUP") is False  # same bytes: no change
        assert (reloads(sidecar, "rejected"), reloads(sidecar, "applied")) == (2, 0)
    finally:
        await sidecar.stop()
    records = [r for r in audit.read(folder / "audit.jsonl") if r["kind"] == "limits_reload"]
    assert [r["record"]["result"] for r in records] == ["rejected", "rejected"]


async def test_sighup_with_nothing_changed_says_so_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    # an on-call engineer sends SIGHUP and must see that it was received and what it read
    from structlog.testing import capture_logs  # noqa: PLC0415

    from riskguard.ingest.reload import on_sighup  # noqa: PLC0415
    from tests.integration.people import with_people  # noqa: PLC0415

    limits = tmp_path / "limits.toml"
    limits.write_text(RULE.format(100))
    base = msgspec.to_builtins(with_people(with_limits(settings, limits), tmp_path))
    base["runtime"]["watch_limits"] = False  # only the signal reloads
    sidecar = Sidecar(msgspec.convert(base, Settings))
    await sidecar.start()
    try:
        with capture_logs() as logs:
            assert await on_sighup(sidecar.reloader, sidecar.api.roster) is False
        (line,) = logs
        assert line["event"] == "SIGHUP: limits and users files unchanged"
        assert line["limits"] == str(limits)
        assert line["limits_sha256"] == sidecar.limits.digest[:12]
        assert line["users_file"] == str(tmp_path / "users.toml")
        assert line["users_sha256"] == sidecar.api.roster.digest[:12] and line["users_sha256"]
        assert line["users_rejected"] is None
        write(limits, RULE.format(200))
        with capture_logs() as logs:
            assert await on_sighup(sidecar.reloader, sidecar.api.roster) is True
        assert [x["event"] for x in logs] == ["limits reloaded"]  # a change: its own line
        write(tmp_path / "users.toml", '[[user]]\nname = "bob"\nrole = "boss"\n')
        with capture_logs() as logs:
            assert await on_sighup(sidecar.reloader, sidecar.api.roster) is False
        last = logs[-1]  # after the rejection itself, unless the file watch logged it first
        assert last["event"] == (
            "SIGHUP: nothing changed; the users file is rejected, the users in force stay"
        )
        assert (
            last["log_level"] == "warning" and "'token_sha256' is missing" in last["users_rejected"]
        )
    finally:
        await sidecar.stop()
