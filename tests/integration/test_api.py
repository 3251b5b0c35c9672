"""Operators' API against a running sidecar: identities, roles, refusals, bad requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from riskguard import examples
from riskguard.cli import main
from riskguard.control.users import add
from riskguard.ingest.runtime import Sidecar
from tests.integration.conftest import TOKEN
from tests.integration.people import audited, call
from tests.integration.test_sidecar import wait_for

HALT = {"scope": "account:A", "reason": "venue outage"}


async def test_the_token_owner_is_recorded_never_a_name_from_the_body(staffed: Sidecar) -> None:
    status, reply = await call(staffed, "POST", "/v1/halt", HALT, "olga")
    assert status == 200 and reply["changed"] and reply["state"] == "HALTED"
    assert reply["transition"]["operator"] == "olga"
    assert reply["transition"]["evidence"] == "by olga: venue outage"
    assert reply["transition"]["at"].endswith(" UTC")
    # naming yourself is fine; naming someone else is refused, and audited
    same = {**HALT, "scope": "account:B", "operator": "olga"}
    assert (await call(staffed, "POST", "/v1/halt", same, "olga"))[0] == 200
    forged = {**HALT, "scope": "account:C", "operator": "alice"}
    status, reply = await call(staffed, "POST", "/v1/halt", forged, "olga")
    assert status == 422 and "belongs to 'olga'" in reply["error"]
    assert staffed.engine.killswitch.state("account:C") == "ACTIVE"
    standing = staffed.engine.killswitch.standing()
    assert standing["account:A"].operator == "olga" and standing["account:B"].operator == "olga"
    manual = await audited(staffed, "manual", 2)
    assert manual[0]["operator"] == "olga" and manual[0]["identity"] == "olga"
    assert manual[0]["role"] == "operator" and manual[0]["via"] == "http"
    refused = await audited(staffed, "refused")
    assert refused[0]["identity"] == "olga" and refused[0]["status"] == 422


@pytest.mark.parametrize(
    ("who", "bearer", "path", "body", "status", "message", "identity"),
    [
        (None, None, "/v1/halt", HALT, 401, "missing bearer token", None),
        (None, "rg_nobody", "/v1/halt", HALT, 401, "unknown bearer token", None),
        ("vic", None, "/v1/halt", HALT, 403, "vic has the role viewer", "vic"),
        ("olga", None, "/v1/resume", HALT, 403, "olga has the role operator", "olga"),
        ("olga", None, "/v1/approve", {"request_id": "r-1", "reason": "x"}, 403, "olga", "olga"),
        ("vic", None, "/v1/withdraw", {"request_id": "r-1", "reason": "x"}, 403, "vic", "vic"),
    ],
)
async def test_refusals_are_audited_with_the_identity_when_known(
    staffed: Sidecar,
    who: str | None,
    bearer: str | None,
    path: str,
    body: dict[str, str],
    status: int,
    message: str,
    identity: str | None,
) -> None:
    got, reply = await call(staffed, "POST", path, body, who, bearer=bearer)
    assert got == status and message in reply["error"], reply
    assert staffed.engine.killswitch.standing() == {}
    [record] = await audited(staffed, "refused")
    assert record["identity"] == identity and record["status"] == status
    assert record["path"] == path and message in record["error"]


async def test_roles_and_whoami(staffed: Sidecar) -> None:
    for name, may in (
        ("vic", ["read"]),
        ("olga", ["read", "halt"]),
        ("alice", ["read", "halt", "resume", "approve"]),
    ):
        status, me = await call(staffed, "GET", "/v1/whoami", who=name)
        assert status == 200 and me["name"] == name and me["may"] == may
        assert me["four_eyes"] == ["firm", "account"] and me["break_glass"] is False
    assert (await call(staffed, "GET", "/v1/whoami"))[0] == 401
    # a risk-admin resumes a strategy alone (not a four-eyes level)
    halt = {"scope": "strategy:s1", "reason": "drill"}
    assert (await call(staffed, "POST", "/v1/halt", halt, "alice"))[0] == 200
    status, reply = await call(staffed, "POST", "/v1/resume", halt, "alice")
    assert status == 200 and reply["state"] == "ACTIVE" and reply["transition"]["kind"] == "manual"


async def test_status_needs_a_token_once_people_are_named(staffed: Sidecar) -> None:
    status, reply = await call(staffed, "GET", "/v1/status")
    assert status == 401 and "bearer" in reply["error"]
    status, st = await call(staffed, "GET", "/v1/status", who="vic")
    assert status == 200 and st["users"]["roles"] == {"viewer": 1, "operator": 1, "risk-admin": 2}
    assert st["users"]["break_glass"] is True and st["users"]["last_reload_error"] is None
    assert st["four_eyes"] == {"levels": ["firm", "account"], "approval_timeout_s": 600.0}
    assert st["approvals"] == [] and isinstance(st["now_ns"], int)
    # probes and metrics stay open (Kubernetes, Prometheus)
    assert (await call(staffed, "GET", "/readyz"))[0] == 200
    assert (await call(staffed, "GET", "/metrics"))[0] == 200


async def test_break_glass_is_a_named_identity_audited_as_such(sidecar: Sidecar) -> None:
    """Without a users file the shared token still works, as the identity 'break-glass'."""
    status, reply = await call(sidecar, "POST", "/v1/halt", HALT, bearer=TOKEN)
    assert status == 200 and reply["transition"]["operator"] == "break-glass"
    status, st = await call(sidecar, "GET", "/v1/status")  # open without a users file
    assert st["standing"]["account:A"]["operator"] == "break-glass"
    assert st["standing"]["account:A"]["evidence"] == "by break-glass: venue outage"
    [record] = await audited(sidecar, "manual")
    assert record["identity"] == "break-glass" and record["break_glass"] is True
    # a firm or account resume by the break-glass identity still needs a named second person
    status, reply = await call(sidecar, "POST", "/v1/resume", HALT, bearer=TOKEN)
    assert status == 202 and reply["status"] == "pending"
    approve = {"request_id": reply["request_id"], "reason": "me again"}
    status, reply = await call(sidecar, "POST", "/v1/approve", approve, bearer=TOKEN)
    assert status == 403 and "break-glass token cannot approve" in reply["error"]
    assert sidecar.engine.killswitch.state("account:A") == "HALTED"
    _, metrics = await call(sidecar, "GET", "/metrics")
    assert 'riskguard_transitions_total{action="halted",rule="manual"} 1.0' in metrics


JSON = "application/json"
TOO_BIG = b'{"scope":"firm","reason":"' + b"y" * 20_000 + b'"}'


@pytest.mark.parametrize(
    ("body", "raw", "content_type", "status", "message"),
    [
        (None, b"{not json", JSON, 400, "not valid JSON"),
        (None, b"[1]", JSON, 400, "JSON object, got array"),
        (HALT, None, "text/plain", 415, "must be application/json, got text/plain"),
        (HALT, None, "application/x-www-form-urlencoded", 415, JSON),
        ({"scope": "desk:7", "reason": "y"}, None, JSON, 422, "invalid scope"),
        ({"scope": 5, "reason": "y"}, None, JSON, 422, "'scope' must be a string, got number"),
        ({"scope": "firm", "reason": None}, None, JSON, 422, "'reason' must be a string, got null"),
        ({"scope": "firm", "reason": ["a"]}, None, JSON, 422, "got array"),
        ({"scope": "firm"}, None, JSON, 422, "'reason' is required"),
        ({"scope": "firm", "reason": " "}, None, JSON, 422, "'reason' must not be empty"),
        ({**HALT, "force": 1}, None, JSON, 400, "unknown field(s): force"),
        ({**HALT, "action": "alert"}, None, JSON, 422, "'action' must be"),
        (None, TOO_BIG, JSON, 413, "request body too large: at most 16384 bytes"),
    ],
)
async def test_bad_requests_change_nothing_and_say_why(
    sidecar: Sidecar,
    body: Any,
    raw: bytes | None,
    content_type: str,
    status: int,
    message: str,
) -> None:
    got, reply = await call(
        sidecar, "POST", "/v1/halt", body, bearer=TOKEN, raw=raw, content_type=content_type
    )
    assert got == status, reply
    assert message in reply["error"]
    assert sidecar.engine.killswitch.standing() == {}


async def test_probes_and_unknown_paths(sidecar: Sidecar) -> None:
    assert (await call(sidecar, "GET", "/livez"))[0] == 200
    status, ready = await call(sidecar, "GET", "/readyz")
    assert status == 200 and all(ready["checks"].values())
    status, reply = await call(sidecar, "GET", "/v2/nothing")
    assert status == 404 and "error" in reply
    status, reply = await call(sidecar, "GET", "/console/secrets.txt")
    assert status == 404 and "no console file" in reply["error"]


async def test_the_users_file_is_hot_reloaded_and_a_bad_one_keeps_the_old(
    staffed: Sidecar,
) -> None:
    path = Path(staffed.settings.http.users_file or "")
    carl = add(path, "carl", "operator")  # what `riskguard users add` does
    await wait_for(lambda: staffed.api.roster.directory.identify(carl) is not None)
    status, me = await call(staffed, "GET", "/v1/whoami", bearer=carl)
    assert status == 200 and me["name"] == "carl" and me["role"] == "operator"
    applied = await audited(staffed, "users_reload")
    assert applied[0]["result"] == "applied" and applied[0]["added"] == ["carl"]
    path.write_text(path.read_text().replace('role = "operator"', 'role = "trader"'))
    await wait_for(lambda: bool(staffed.api.roster.last_error))
    await asyncio.sleep(1.0)  # the watcher may wake up again: still one rejection
    _, st = await call(staffed, "GET", "/v1/status", who="vic")
    assert (
        "'role' must be one of viewer, operator, risk-admin, got 'trader'"
        in (st["users"]["last_reload_error"])
    )
    assert (await call(staffed, "GET", "/v1/whoami", bearer=carl))[0] == 200  # old users stay
    records = await audited(staffed, "users_reload", 2)
    assert [r["result"] for r in records] == ["applied", "rejected"]


def test_run_refuses_an_unusable_users_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "riskguard.toml"
    config.write_text(f'limits = "{examples.LIMITS}"\n[http]\nusers_file = "{tmp_path}/u.toml"\n')
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("riskguard run: http.users_file = ") and "u.toml': cannot read" in err
    assert len(err.strip().splitlines()) == 1


def test_run_names_a_missing_break_glass_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "riskguard.toml"
    missing = tmp_path / "token"
    config.write_text(f'limits = "{examples.LIMITS}"\n[http]\ntoken_file = "{missing}"\n')
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"riskguard run: http.token_file = '{missing}': cannot read: No such file or directory"
    )
