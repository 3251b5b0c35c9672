"""``riskguard halt | resume | approve | withdraw | status`` against a running sidecar."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from riskguard.cli import main
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.people import token
from tests.integration.test_sidecar import produce, wait_for


def cli(*args: str) -> int:
    return main(list(args))


def token_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.token"
    path.write_text(token(name) + "\n")
    return str(path)


async def test_halt_resume_approve_withdraw_and_status(
    staffed: Sidecar, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = staffed.api_url
    olga, alice, bob = (token_file(tmp_path, n) for n in ("olga", "alice", "bob"))
    code = await asyncio.to_thread(
        cli,
        "halt",
        "--scope",
        "firm",
        "--reason",
        "venue outage",
        "--url",
        url,
        "--token-file",
        olga,
    )
    assert code == 0 and "firm: ACTIVE -> HALTED" in capsys.readouterr().out
    assert staffed.engine.killswitch.standing()["firm"].operator == "olga"
    # status needs a token now that people are named
    code = await asyncio.to_thread(cli, "status", "--url", url)
    err = capsys.readouterr().err
    assert code == 1 and "refused (401)" in err and "--token-file" in err
    code = await asyncio.to_thread(cli, "status", "--url", url, "--token-file", olga)
    out = capsys.readouterr().out
    assert code == 0 and "firm" in out and "by olga: venue outage" in out and " UTC" in out
    # four-eyes: alice asks, alice cannot approve, bob can
    code = await asyncio.to_thread(
        cli,
        "resume",
        "--scope",
        "firm",
        "--reason",
        "venue back",
        "--url",
        url,
        "--token-file",
        alice,
    )
    out = capsys.readouterr().out
    assert code == 0 and "pending a second risk-admin's approval" in out
    request_id = out.split("(request ")[1].split(",")[0]
    assert staffed.engine.killswitch.state("firm") == "HALTED"
    code = await asyncio.to_thread(cli, "status", "--url", url, "--token-file", olga)
    assert f"pending approval {request_id}: resume firm asked by alice" in capsys.readouterr().out
    code = await asyncio.to_thread(
        cli, "approve", request_id, "--reason", "me", "--url", url, "--token-file", alice
    )
    assert code == 1 and "refused (403)" in capsys.readouterr().err
    code = await asyncio.to_thread(
        cli, "approve", request_id, "--reason", "confirmed", "--url", url, "--token-file", bob
    )
    assert code == 0 and "firm: HALTED -> ACTIVE" in capsys.readouterr().out
    tr = staffed.engine.killswitch
    assert tr.state("firm") == "ACTIVE"
    # withdraw
    await asyncio.to_thread(
        cli, "halt", "--scope", "account:A", "--reason", "x", "--url", url, "--token-file", olga
    )
    await asyncio.to_thread(
        cli, "resume", "--scope", "account:A", "--reason", "y", "--url", url, "--token-file", bob
    )
    request_id = capsys.readouterr().out.split("(request ")[1].split(",")[0]
    code = await asyncio.to_thread(
        cli, "withdraw", request_id, "--reason", "not yet", "--url", url, "--token-file", alice
    )
    assert code == 0 and f"request {request_id} (account:A): withdrawn" in capsys.readouterr().out
    assert tr.state("account:A") == "HALTED"


async def test_a_resume_that_a_standing_breach_re_halts_says_so(
    staffed: Sidecar, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ev(**fields: object) -> bytes:
        base = {"ts": time.time_ns(), "account": "A", "strategy": "smars", "symbol": "RSHYY"}
        return orjson.dumps({**base, **fields})

    def child(i: int) -> bytes:
        return ev(
            type="fill",
            order_id=f"c{i}",
            exec_id=f"e{i}",
            side="buy",
            qty=30,
            price=10,
            parent_id="P9",
        )

    await produce(settings, ev(type="parent", parent_id="P9", side="buy", qty=100))
    await produce(settings, *(child(i) for i in range(4)))  # 120 of 100: halted
    ks = staffed.engine.killswitch
    await wait_for(lambda: ks.state("strategy:smars") == "HALTED")
    resume = asyncio.create_task(
        asyncio.to_thread(
            cli,
            "resume",
            "--scope",
            "strategy:smars",
            "--reason",
            "looks fine",
            "--url",
            staffed.api_url,
            "--token-file",
            token_file(tmp_path, "alice"),
        )
    )
    await wait_for(lambda: ks.state("strategy:smars") == "ACTIVE")
    await produce(settings, child(5))  # the parent is still overfilled: halted again
    assert await resume == 1
    out = capsys.readouterr().out
    assert "strategy:smars: HALTED -> ACTIVE" in out
    assert "strategy:smars: re-halted" in out and "ms after the resume" in out
    assert "rule overfill: parent_overfill_ratio 1.5 vs limit 1" in out
    assert "The breach still stands" in out


async def test_token_file_problems_are_not_connection_problems(
    sidecar: Sidecar, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sidecar.api_url
    missing = str(tmp_path / "nope.token")
    code = await asyncio.to_thread(
        cli, "halt", "--scope", "firm", "--reason", "x", "--url", url, "--token-file", missing
    )
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read the token file {missing}: No such file" in err
    assert "cannot reach" not in err
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    code = await asyncio.to_thread(cli, "status", "--url", url, "--token-file", str(empty))
    assert code == 2 and "is empty" in capsys.readouterr().err
    code = await asyncio.to_thread(
        cli, "halt", "--scope", "firm", "--reason", "x", "--url", "http://127.0.0.1:9"
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach http://127.0.0.1:9" in err and "Traceback" not in err
    assert sidecar.engine.killswitch.state("firm") == "ACTIVE"
