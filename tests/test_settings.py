"""Settings: precedence, strictness, secrets kept out of reprs and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.cli import build_parser
from riskguard.settings import SettingsError, load_settings


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "riskguard.toml"
    f.write_text(
        'limits = "a.toml"\n[kafka]\nbootstrap_servers = "file:9092"\n'
        'group_id = "from-file"\n[http]\nport = 9000\n'
    )
    s = load_settings(
        f,
        env={"KAFKA_BOOTSTRAP_SERVERS": "env:9092", "RISKGUARD_HTTP_PORT": "9100"},
        overrides={"kafka.bootstrap_servers": "flag:9092"},
    )
    assert s.kafka.bootstrap_servers == "flag:9092"
    assert s.http.port == 9100
    assert s.kafka.group_id == "from-file"
    assert s.limits == "a.toml"
    assert s.kafka.fetch_max_wait_ms == 1 and s.kafka.request_timeout_ms == 1500  # defaults


def test_unknown_keys_name_the_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[kafka]\nbootstrap = 'x'\n")
    with pytest.raises(SettingsError, match=r"bad\.toml: .*unknown field `bootstrap`.*kafka"):
        load_settings(f, env={})
    f.write_text("[http]\nport = 'eighty'\n")
    with pytest.raises(SettingsError, match=r"Expected `int`.*http\.port"):
        load_settings(f, env={})


def test_secrets_are_redacted_and_not_flags() -> None:
    s = load_settings(
        env={
            "RISKGUARD_HTTP_TOKEN": "s3cret-token",
            "RISKGUARD_KAFKA_SASL_PLAIN_PASSWORD": "hunter2",
        }
    )
    assert s.http.resolved_token() == "s3cret-token"
    text = repr(s)
    assert "s3cret-token" not in text and "hunter2" not in text and "token=***" in text
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    assert not any("token" in opt for a in run._actions for opt in a.option_strings)
