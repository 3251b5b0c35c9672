"""People for API, CLI and console tests: a users file with one person per role, and a
sidecar that uses it (plus the break-glass token from the shared settings)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from riskguard.control.users import token_hash
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import Limits
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL

#: name -> (role, token). Two risk-admins, so that four-eyes can be satisfied.
PEOPLE: dict[str, tuple[str, str]] = {
    "alice": ("risk-admin", "rg_alice-" + "a" * 30),
    "bob": ("risk-admin", "rg_bob-" + "b" * 30),
    "olga": ("operator", "rg_olga-" + "o" * 30),
    "vic": ("viewer", "rg_vic-" + "v" * 30),
}


def token(name: str) -> str:
    """The token of one of :data:`PEOPLE`."""
    return PEOPLE[name][1]


def users_toml(people: dict[str, tuple[str, str]] = PEOPLE) -> str:
    """A users file naming ``people`` by the hash of their tokens."""
    return "".join(
        f'[[user]]\nname = "{name}"\nrole = "{role}"\ntoken_sha256 = "{token_hash(tok)}"\n\n'
        for name, (role, tok) in people.items()
    )


def with_people(settings: Settings, folder: Path, **http: Any) -> Settings:
    """``settings`` with a users file of :data:`PEOPLE` in ``folder`` and ``http`` overrides."""
    path = folder / "users.toml"
    path.write_text(users_toml())
    base = msgspec.to_builtins(settings)
    base["http"].update(users_file=str(path), **http)
    return msgspec.convert(base, Settings)


async def start(settings: Settings, limits: Limits = OVERFILL) -> Sidecar:
    sidecar = Sidecar(settings, limits)
    await sidecar.start()
    return sidecar


async def call(
    sidecar: Sidecar,
    method: str,
    path: str,
    body: Any = None,
    who: str | None = None,
    *,
    bearer: str | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """One request as ``who`` (one of :data:`PEOPLE`) or with the token ``bearer``."""
    secret = token(who) if who else bearer
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = content_type
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"{sidecar.api_url}{path}", headers=headers, data=data) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text


def audit_records(sidecar: Sidecar, kind: str) -> list[dict[str, Any]]:
    """The audit log's records of ``kind`` written so far (bodies only)."""
    path = sidecar.audit.path
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == kind:
            out.append(rec["record"])
    return out


async def audited(sidecar: Sidecar, kind: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
    """Wait until the audit log holds at least ``count`` records of ``kind``; returns them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = audit_records(sidecar, kind)
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.02)
