"""People and roles: the users file, token lookup, ``riskguard users add``, hot reload."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from riskguard.cli import main
from riskguard.control.roster import Roster
from riskguard.control.users import (
    BREAK_GLASS,
    Directory,
    Identity,
    User,
    UsersError,
    add,
    parse,
    read,
    token_hash,
)
from riskguard.metrics import Metrics
from riskguard.settings import SettingsError, load_settings

ALICE = token_hash("alice-token")


def entry(name: str = "alice", role: str = "risk-admin", digest: str = ALICE) -> str:
    return f'[[user]]\nname = "{name}"\nrole = "{role}"\ntoken_sha256 = "{digest}"\n'


class Trail:
    """An audit trail that keeps records in memory (the real one writes a file)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []

    def record(self, kind: str, body: Any) -> None:
        self.records.append((kind, body))


def test_a_users_file_names_people_roles_and_token_hashes() -> None:
    users = parse(entry() + entry("vic", "viewer", token_hash("vic-token")), "u.toml")
    assert users == (
        User("alice", "risk-admin", ALICE),
        User("vic", "viewer", token_hash("vic-token")),
    )
    as_json = json.dumps({"user": [{"name": "alice", "role": "operator", "token_sha256": ALICE}]})
    assert parse(as_json, "u.json", as_json=True)[0].role == "operator"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (entry(role="admin"), "u.toml: user 1 ('alice'): 'role' must be one of viewer, operator"),
        (entry(digest="alice-token"), "u.toml: user 1 ('alice'): 'token_sha256' must be 64"),
        (entry(digest=ALICE.upper()), "'token_sha256' must be 64 lowercase hex digits"),
        ('[[user]]\nname = "bob"\nrole = "viewer"\n', "user 1 ('bob'): 'token_sha256' is missing"),
        ('[[user]]\nname = 7\nrole = "viewer"\ntoken_sha256 = "x"\n', "'name' must be a string"),
        (entry() + 'email = "a@b"\n', "user 1 ('alice'): unknown field 'email'"),
        (entry(name="break-glass"), "'name' 'break-glass' is reserved"),
        (entry(name="al ice"), "'name' must be 1 to 64 letters"),
        (entry() + entry(digest=token_hash("x")), "user 2 ('alice'): 'name' repeats"),
        (entry() + entry("bob"), "user 2 ('bob'): 'token_sha256' is also 'alice''s"),
        ("user = 3\n", "'user' must be a list of entries, got number"),
        ("[[users]]\n", "unknown key 'users'"),
        ("[[user]\n", "u.toml: TOML syntax"),
    ],
)
def test_every_problem_names_the_file_the_entry_and_the_field(text: str, problem: str) -> None:
    with pytest.raises(UsersError) as caught:
        parse(text, "u.toml")
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_tokens_are_found_by_hash_and_the_break_glass_token_is_named() -> None:
    users = parse(entry() + entry("vic", "viewer", token_hash("vic-token")))
    directory = Directory(users, break_glass_token="glass")
    assert directory.identify("alice-token") == Identity("alice", "risk-admin")
    assert directory.identify("vic-token") == Identity("vic", "viewer")
    assert directory.identify("glass") == Identity(BREAK_GLASS, "risk-admin", break_glass=True)
    assert directory.identify("alice-token ") is None and directory.identify("") is None
    assert Identity("vic", "viewer").may("read") and not Identity("vic", "viewer").may("halt")
    assert Identity("o", "operator").may("halt") and not Identity("o", "operator").may("resume")
    assert not Directory().configured and Directory(break_glass_token="g").configured


def test_users_add_prints_a_token_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.toml"
    assert main(["users", "add", "alice", "--role", "risk-admin", "--file", str(path)]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("rg_") and len(token) > 40 and "only this once" in out.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert token not in text and token_hash(token) in text
    assert main(["users", "add", "vic", "--role", "viewer", "--file", str(path)]) == 0
    second = capsys.readouterr().out.strip()
    users, _ = read(path)
    assert [(u.name, u.role) for u in users] == [("alice", "risk-admin"), ("vic", "viewer")]
    assert Directory(users).identify(second) == Identity("vic", "viewer")
    assert main(["users", "list", "--file", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "viewer" in listed and token_hash(token) not in listed
    # a name already there, a bad name, an unknown role: refused, the file unchanged
    before = path.read_bytes()
    assert main(["users", "add", "alice", "--role", "viewer", "--file", str(path)]) == 2
    assert "already a user named 'alice'" in capsys.readouterr().err
    assert main(["users", "add", "a b", "--role", "viewer", "--file", str(path)]) == 2
    assert "'name' must be 1 to 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["users", "add", "carl", "--role", "admin", "--file", str(path)])
    assert path.read_bytes() == before


def test_users_add_keeps_json_files_json(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    token = add(path, "alice", "operator")
    data = json.loads(path.read_text())
    assert data == {
        "user": [{"name": "alice", "role": "operator", "token_sha256": token_hash(token)}]
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    broken = tmp_path / "broken.toml"
    broken.write_text("[[user]\n")
    with pytest.raises(UsersError, match="TOML syntax"):
        add(broken, "bob", "viewer")
    assert broken.read_text() == "[[user]\n"


def test_a_bad_users_file_keeps_the_old_users_and_is_rejected_once_per_change(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.toml"
    path.write_text(entry())
    trail, metrics = Trail(), Metrics()
    roster = Roster(str(path), None, trail, metrics)
    assert roster.directory.identify("alice-token") == Identity("alice", "risk-admin")
    path.write_text(entry(role="boss"))
    for _ in range(5):  # a watcher wakes up many times for one change
        assert roster.reload("file-change") is False
    assert roster.directory.identify("alice-token") == Identity("alice", "risk-admin")
    rejections = [b for k, b in trail.records if k == "users_reload" and b["result"] == "rejected"]
    assert len(rejections) == 1
    assert "user 1 ('alice'): 'role' must be one of" in rejections[0]["problems"][0]
    assert str(path) in roster.status()["last_reload_error"]
    path.write_text(entry(role="chief"))  # another bad version: one more rejection
    roster.reload("file-change")
    path.unlink()  # deleted: one rejection, the users stay
    roster.reload("file-change")
    roster.reload("file-change")
    assert "cannot read" in roster.last_error
    assert roster.directory.identify("alice-token") is not None
    path.write_text(entry(role="viewer") + entry("bob", "operator", token_hash("bob-token")))
    assert roster.reload("SIGHUP") is True
    assert roster.directory.identify("alice-token") == Identity("alice", "viewer")
    assert roster.status()["last_reload_error"] is None
    results = [b["result"] for k, b in trail.records if k == "users_reload"]
    assert results == ["rejected", "rejected", "rejected", "applied"]
    applied = trail.records[-1][1]
    assert applied["added"] == ["bob"] and applied["role_changed"] == {
        "alice": ["risk-admin", "viewer"]
    }
    text = metrics.exposition().decode()
    assert 'riskguard_users_reloads_total{result="rejected"} 3.0' in text
    assert 'riskguard_users_reloads_total{result="applied"} 1.0' in text


def test_an_unusable_users_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(UsersError, match="cannot read"):
        Roster(str(tmp_path / "missing.toml"), None, Trail(), Metrics())


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"http.four_eyes": ["firm", "desk"]}, "unknown scope level(s) 'desk'"),
        ({"http.approval_timeout_s": 0}, "approval_timeout_s must be"),
        ({"http.max_body_bytes": 10}, "max_body_bytes must be"),
    ],
)
def test_people_settings_are_checked(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(problem)):
        load_settings(env={}, overrides=overrides)
    settings = load_settings(env={"RISKGUARD_HTTP_USERS_FILE": "/etc/u.toml"})
    assert settings.http.users_file == "/etc/u.toml"
    assert settings.http.four_eyes == ("firm", "account")
    assert settings.http.approval_timeout_s == 600.0
