"""People and roles: who holds which token, and what each role may do.

A users file (``[http] users_file``, TOML or JSON) names one entry per person::

    [[user]]
    name = "alice"
    role = "risk-admin"          # viewer | operator | risk-admin
    token_sha256 = "9f86d08..."  # SHA-256 of alice's token, 64 hex digits; never the token

JSON: ``{"user": [{"name": ..., "role": ..., "token_sha256": ...}]}``. Files ending in
``.json`` are read as JSON, anything else as TOML. ``riskguard users add`` writes entries.

Roles, each including the one before: ``viewer`` reads (status, console); ``operator``
also halts and sets reduce-only; ``risk-admin`` also resumes and approves another
risk-admin's resume (four-eyes, :mod:`riskguard.control.approvals`).

A token is recognised by hashing it and comparing the hash with every user's in
constant time (:func:`hmac.compare_digest`, no early exit), so neither the answer's
timing nor the file reveals a token. The optional break-glass token (``http.token``)
acts as the identity :data:`BREAK_GLASS`, role ``risk-admin``, flagged in every audit
record. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

Role = Literal["viewer", "operator", "risk-admin"]
ROLES: Final[tuple[Role, ...]] = ("viewer", "operator", "risk-admin")
"""Roles, least to most powerful; each may do everything the ones before it may."""

Action = Literal["read", "halt", "resume", "approve"]
MAY: Final[dict[Role, tuple[Action, ...]]] = {
    "viewer": ("read",),
    "operator": ("read", "halt"),
    "risk-admin": ("read", "halt", "resume", "approve"),
}
"""What each role may do. ``halt`` covers reduce-only; ``approve`` covers withdraw."""

BREAK_GLASS: Final = "break-glass"
"""The identity of the shared break-glass token; no user may take this name."""

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
HASH_RE: Final = re.compile(r"^[0-9a-f]{64}$")
USER_FIELDS: Final = ("name", "role", "token_sha256")


class UsersError(ValueError):
    """A users file that cannot be used. ``problems`` name the file, entry and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: ``name``, ``role``, and whether it is the break-glass token."""

    name: str
    role: Role
    break_glass: bool = False

    def may(self, action: Action) -> bool:
        """True when this identity's role allows ``action``."""
        return action in MAY[self.role]

    def audit(self) -> dict[str, Any]:
        """The fields every audit record of this identity's requests carries."""
        return {"identity": self.name, "role": self.role, "break_glass": self.break_glass}


@dataclass(frozen=True)
class User:
    """One entry of the users file."""

    name: str
    role: Role
    token_sha256: str


def token_hash(token: str) -> str:
    """SHA-256 of ``token`` (UTF-8), as 64 lowercase hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token: ``rg_`` and 43 URL-safe characters (256 bits)."""
    return "rg_" + secrets.token_urlsafe(32)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type: string, number, boolean, null, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _entry(source: str, n: int, raw: Any, problems: list[str]) -> User | None:
    """One entry, or None after appending what is wrong with it to ``problems``."""
    if not isinstance(raw, dict):
        problems.append(f"{source}: user {n}: must be a table/object, got {json_type(raw)}")
        return None
    label = f"user {n}" + (f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else "")
    bad = len(problems)
    for extra in sorted(set(raw) - set(USER_FIELDS)):
        problems.append(
            f"{source}: {label}: unknown field {extra!r} (fields: {', '.join(USER_FIELDS)})"
        )
    for field in USER_FIELDS:
        if field not in raw:
            problems.append(f"{source}: {label}: '{field}' is missing")
        elif not isinstance(raw[field], str):
            problems.append(
                f"{source}: {label}: '{field}' must be a string, got {json_type(raw[field])}"
            )
    if len(problems) > bad:
        return None
    name, role, digest = raw["name"], raw["role"], raw["token_sha256"]
    if not NAME_RE.match(name):
        problems.append(
            f"{source}: {label}: 'name' must be 1 to 64 letters, digits or ._@+- "
            f"(starting with a letter or digit), got {name!r}"
        )
    elif name == BREAK_GLASS:
        problems.append(f"{source}: {label}: 'name' {BREAK_GLASS!r} is reserved")
    if role not in ROLES:
        problems.append(
            f"{source}: {label}: 'role' must be one of {', '.join(ROLES)}, got {role!r}"
        )
    if not HASH_RE.match(digest):
        problems.append(
            f"{source}: {label}: 'token_sha256' must be 64 lowercase hex digits (the SHA-256 "
            "of the token, never the token itself)"
        )
    if len(problems) > bad:
        return None
    return User(name=name, role=role, token_sha256=digest)


def parse(text: str, source: str = "<users>", *, as_json: bool = False) -> tuple[User, ...]:
    """The users of a users file's text (TOML, or JSON with ``as_json``).

    Raises :class:`UsersError` listing every problem: syntax, unknown keys, a missing or
    wrongly typed field, an unknown role, a malformed hash, a reserved or repeated name,
    a token hash shared by two entries.
    """
    try:
        tree: Any = json.loads(text) if as_json else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsersError([f"{source}: {'JSON' if as_json else 'TOML'} syntax: {exc}"]) from exc
    if not isinstance(tree, dict):
        raise UsersError([f"{source}: must be an object with a 'user' list"])
    problems = [f"{source}: unknown key {k!r} (only 'user')" for k in sorted(set(tree) - {"user"})]
    entries = tree.get("user", [])
    if not isinstance(entries, list):
        problems.append(f"{source}: 'user' must be a list of entries, got {json_type(entries)}")
        entries = []
    users: list[User] = []
    for n, raw in enumerate(entries, start=1):
        user = _entry(source, n, raw, problems)
        if user is not None:
            users.append(user)
    seen_names: dict[str, int] = {}
    seen_hashes: dict[str, str] = {}
    for n, user in enumerate(users, start=1):
        if user.name in seen_names:
            problems.append(f"{source}: user {n} ({user.name!r}): 'name' repeats an earlier entry")
        seen_names[user.name] = n
        if user.token_sha256 in seen_hashes:
            problems.append(
                f"{source}: user {n} ({user.name!r}): 'token_sha256' is also "
                f"{seen_hashes[user.token_sha256]!r}'s: every person needs their own token"
            )
        seen_hashes[user.token_sha256] = user.name
    if problems:
        raise UsersError(problems)
    return tuple(users)


def read(path: str | Path) -> tuple[tuple[User, ...], str]:
    """The users in the file at ``path`` and the SHA-256 of its bytes.

    Raises :class:`UsersError` for an unreadable or invalid file (see :func:`parse`).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UsersError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise UsersError([f"{p}: not UTF-8 text"]) from exc
    return parse(text, str(p), as_json=p.suffix == ".json"), hashlib.sha256(data).hexdigest()


class Directory:
    """The people riskguard knows, and the break-glass token: tokens to identities.

    ``users`` may be replaced at any time (a reload); lookups see either the old or the
    new set, never a mix.
    """

    def __init__(self, users: Sequence[User] = (), break_glass_token: str | None = None) -> None:
        self.users: tuple[User, ...] = tuple(users)
        self._break_glass = token_hash(break_glass_token) if break_glass_token else None

    @property
    def configured(self) -> bool:
        """True when at least one token (a user's or the break-glass one) can be presented."""
        return bool(self.users) or self._break_glass is not None

    def identify(self, token: str) -> Identity | None:
        """The owner of ``token``, or None. Compares the token's hash with every user's
        and the break-glass hash in constant time, without stopping at a match."""
        given = token_hash(token).encode()
        found: Identity | None = None
        for user in self.users:
            if hmac.compare_digest(given, user.token_sha256.encode()):
                found = Identity(user.name, user.role)
        if self._break_glass is not None and hmac.compare_digest(given, self._break_glass.encode()):
            found = found or Identity(BREAK_GLASS, "risk-admin", break_glass=True)
        return found

    def summary(self) -> dict[str, int]:
        """How many people hold each role (for ``/v1/status``; no names, no hashes)."""
        return {role: sum(u.role == role for u in self.users) for role in ROLES}


def diff(old: Sequence[User], new: Sequence[User]) -> dict[str, Any]:
    """Names added, removed, with a new role, or with a new token (for the audit log)."""
    before: Mapping[str, User] = {u.name: u for u in old}
    after: Mapping[str, User] = {u.name: u for u in new}
    both = sorted(before.keys() & after.keys())
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "role_changed": {
            n: [before[n].role, after[n].role] for n in both if before[n].role != after[n].role
        },
        "token_changed": [n for n in both if before[n].token_sha256 != after[n].token_sha256],
    }


def _toml_entry(user: User) -> str:
    return (
        f'\n[[user]]\nname = "{user.name}"\nrole = "{user.role}"\n'
        f'token_sha256 = "{user.token_sha256}"\n'
    )


def add(path: str | Path, name: str, role: str) -> str:
    """Add ``name`` with ``role`` to the users file at ``path``; returns the new token.

    Only the token's hash is written. A missing file is created with permissions 0600;
    an existing one is checked first and replaced atomically (same folder, 0600, fsynced),
    keeping a TOML file's comments. Raises :class:`UsersError` for an invalid name or
    role, a name already present, or an unreadable or invalid existing file, and
    :class:`OSError` when the file cannot be written; the file is unchanged then.
    """
    p = Path(path)
    as_json = p.suffix == ".json"
    existing: tuple[User, ...] = ()
    text = ""
    if p.exists():
        existing, _ = read(p)
        text = p.read_text()
    if any(u.name == name for u in existing):
        raise UsersError([f"{p}: there is already a user named {name!r}"])
    token = new_token()
    problems: list[str] = []
    entry = {"name": name, "role": role, "token_sha256": token_hash(token)}
    user = _entry(str(p), len(existing) + 1, entry, problems)
    if user is None:
        raise UsersError(problems)
    if as_json:
        tree = json.loads(text) if text.strip() else {}
        tree.setdefault("user", []).append(
            {"name": user.name, "role": user.role, "token_sha256": user.token_sha256}
        )
        body = json.dumps(tree, indent=2) + "\n"
    else:
        header = "" if text else "# riskguard users: name, role, SHA-256 of the token (never it)\n"
        body = header + text + _toml_entry(user)
    parse(body, str(p), as_json=as_json)  # never write a file riskguard would refuse
    _write_private(p, body)
    return token


def _write_private(path: Path, body: str) -> None:
    """Write ``body`` to ``path`` through a 0600 temporary file in the same folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
