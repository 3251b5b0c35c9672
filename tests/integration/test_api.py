"""Operators' API and CLI against a running sidecar: manual halt and resume, refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from riskguard.cli import main
from riskguard.ingest.runtime import Sidecar
from tests.integration.conftest import TOKEN


async def call(
    sidecar: Sidecar,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = TOKEN,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method,
            f"{sidecar.api_url}{path}",
            headers=headers,
            data=raw if raw is not None else (json.dumps(body) if body is not None else None),
        ) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text


async def test_manual_halt_and_resume_through_the_api(sidecar: Sidecar) -> None:
    status, reply = await call(
        sidecar,
        "POST",
        "/v1/halt",
        {"scope": "account:A", "operator": "alice", "reason": "venue outage"},
    )
    assert status == 200 and reply["changed"] and reply["state"] == "HALTED"
    assert reply["transition"]["kind"] == "manual"
    status, again = await call(
        sidecar, "POST", "/v1/halt", {"scope": "account:A", "operator": "alice", "reason": "again"}
    )
    assert (status, again["changed"]) == (200, False)
    status, st = await call(sidecar, "GET", "/v1/status", token=None)
    assert st["standing"]["account:A"]["operator"] == "alice"
    assert st["ready"] is True
    status, reply = await call(
        sidecar,
        "POST",
        "/v1/resume",
        {"scope": "account:A", "operator": "bob", "reason": "venue back"},
    )
    assert status == 200 and reply["state"] == "ACTIVE"
    assert reply["transition"]["ends"] == st["standing"]["account:A"]["id"]
    await asyncio.sleep(0.1)
    audit = sidecar.audit.path.read_text()
    assert "venue outage" in audit and "venue back" in audit
    _, metrics = await call(sidecar, "GET", "/metrics", token=None)
    assert 'riskguard_transitions_total{action="halted",rule="manual"} 1.0' in metrics


@pytest.mark.parametrize(
    ("token", "body", "raw", "status", "message"),
    [
        ("wrong", {"scope": "firm", "operator": "x", "reason": "y"}, None, 401, "bearer"),
        (None, {"scope": "firm", "operator": "x", "reason": "y"}, None, 401, "bearer"),
        (TOKEN, None, b"{not json", 400, "not valid JSON"),
        (TOKEN, None, b"[1]", 400, "JSON object"),
        (TOKEN, {"scope": "desk:7", "operator": "x", "reason": "y"}, None, 422, "invalid scope"),
        (TOKEN, {"scope": "firm", "reason": "y"}, None, 422, "'operator' is required"),
        (TOKEN, {"scope": "firm", "operator": "x", "reason": " "}, None, 422, "'reason'"),
        (
            TOKEN,
            {"scope": "firm", "operator": "x", "reason": "y", "force": 1},
            None,
            400,
            "unknown field",
        ),
        (
            TOKEN,
            {"scope": "firm", "operator": "x", "reason": "y", "action": "alert"},
            None,
            422,
            "'action'",
        ),
        (
            TOKEN,
            None,
            b'{"scope":"firm","operator":"x","reason":"' + b"y" * 20_000 + b'"}',
            413,
            "too large",
        ),
    ],
)
async def test_bad_requests_change_nothing(
    sidecar: Sidecar, token: str | None, body: Any, raw: bytes | None, status: int, message: str
) -> None:
    got, reply = await call(sidecar, "POST", "/v1/halt", body, token=token, raw=raw)
    assert got == status, reply
    assert message in reply["error"]
    assert sidecar.engine.killswitch.standing() == {}


async def test_probes(sidecar: Sidecar) -> None:
    assert (await call(sidecar, "GET", "/livez", token=None))[0] == 200
    status, ready = await call(sidecar, "GET", "/readyz", token=None)
    assert status == 200 and all(ready["checks"].values())


async def test_cli_halt_resume_status(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sidecar.api_url
    monkeypatch.setenv("RISKGUARD_HTTP_TOKEN", TOKEN)

    def cli(*args: str) -> int:
        return main(list(args))

    code = await asyncio.to_thread(
        cli,
        "halt",
        "--scope",
        "strategy:smars",
        "--reason",
        "runaway suspected",
        "--operator",
        "carol",
        "--url",
        url,
    )
    assert code == 0 and "strategy:smars: ACTIVE -> HALTED" in capsys.readouterr().out
    assert sidecar.engine.killswitch.state("strategy:smars") == "HALTED"
    code = await asyncio.to_thread(cli, "status", "--url", url)
    out = capsys.readouterr().out
    assert code == 0 and "strategy:smars" in out and "by carol: runaway suspected" in out
    code = await asyncio.to_thread(
        cli, "resume", "--scope", "strategy:smars", "--reason", "fixed", "--url", url
    )
    assert code == 0 and "HALTED -> ACTIVE" in capsys.readouterr().out
    monkeypatch.setenv("RISKGUARD_HTTP_TOKEN", "wrong-token")
    code = await asyncio.to_thread(cli, "halt", "--scope", "firm", "--reason", "x", "--url", url)
    assert code == 1 and "refused (401)" in capsys.readouterr().err
    assert sidecar.engine.killswitch.state("firm") == "ACTIVE"
