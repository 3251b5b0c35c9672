"""Settings: precedence, strictness, secrets kept out of reprs and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.cli import build_parser
from riskguard.setting_origin import unknown_env
from riskguard.settings import ENV, SettingsError, check_files, default_state_dir, load_settings


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
    assert s.kafka.fetch_max_wait_ms == 500 and s.kafka.request_timeout_ms == 1500  # defaults


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


def test_the_state_directory_default_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    assert default_state_dir({}) == home / ".local/state/riskguard"
    assert default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/riskguard")
    assert default_state_dir({"XDG_STATE_HOME": "relative"}) == home / ".local/state/riskguard"
    systemd = {"STATE_DIRECTORY": "/var/lib/riskguard:/var/lib/other", "XDG_STATE_HOME": "/x"}
    assert default_state_dir(systemd) == Path("/var/lib/riskguard")
    s = load_settings(env={"RISKGUARD_STATE_DIR": str(tmp_path / "st")})
    rt = s.runtime
    assert rt.state_path == tmp_path / "st"
    assert (rt.audit_path, rt.journal_path, rt.snapshot_path) == (
        tmp_path / "st/audit.jsonl",
        tmp_path / "st/journal.jsonl",
        tmp_path / "st/snapshots",
    )
    s = load_settings(
        env={},
        overrides={"runtime.state_dir": "~/rg", "runtime.audit_log": "/abs/audit.jsonl"},
    )
    assert s.runtime.audit_path == Path("/abs/audit.jsonl")
    assert s.runtime.journal_path == home / "rg/journal.jsonl"
    with pytest.raises(SettingsError, match="stop_timeout_s must be a number of seconds"):
        load_settings(env={}, overrides={"runtime.stop_timeout_s": -1})


def test_unreadable_files_are_named_by_setting_and_path(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    check_files(load_settings(env={"RISKGUARD_HTTP_TOKEN_FILE": str(token)}))
    with pytest.raises(SettingsError) as caught:
        check_files(load_settings(env={"RISKGUARD_HTTP_TOKEN_FILE": str(tmp_path / "nope")}))
    assert str(caught.value) == (
        f"http.token_file = '{tmp_path / 'nope'}': cannot read: No such file or directory"
    )
    f = tmp_path / "s.toml"
    f.write_text(
        f'[[notifier]]\nkind = "pagerduty"\nurl = "https://x"\nrouting_key_file = "{tmp_path}"\n'
    )
    with pytest.raises(SettingsError, match=r"notifier\[0\]\.routing_key_file = .*Is a directory"):
        check_files(load_settings(f, env={}))


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("kafka.metadata_max_age_ms", 5, "metadata_max_age_ms must be between 100 and 3600000"),
        ("kafka.topic_check_interval_s", -1, "topic_check_interval_s must be a number of seconds"),
        ("kafka.topic_check_interval_s", float("nan"), "topic_check_interval_s must be"),
    ],
)
def test_topic_watch_settings_out_of_range_are_refused(key: str, value: float, says: str) -> None:
    with pytest.raises(SettingsError, match=f"{says}.*at `kafka`"):
        load_settings(env={}, overrides={key: value})


@pytest.mark.parametrize("port", [65_536, 99_999, -5])
def test_an_http_port_out_of_range_is_refused_when_read(port: int) -> None:
    # the flag, the environment and the file all end here: refused in one line, never
    # as bind()'s OverflowError once riskguard is starting
    with pytest.raises(SettingsError, match=f"port must be 0 to 65535.*got {port}.*at `http`"):
        load_settings(env={}, overrides={"http.port": port})
    with pytest.raises(SettingsError, match="port must be 0 to 65535"):
        load_settings(env={"RISKGUARD_HTTP_PORT": "99999"})


def test_a_bad_value_names_the_flag_or_variable_it_came_from(tmp_path: Path) -> None:
    # an on-call engineer who typed --http-port 70000 must not be sent to the config file
    f = tmp_path / "riskguard.toml"
    f.write_text("[http]\nport = 9000\n")
    flags = {"http.port": "--http-port", "http.host": "--http-host"}
    with pytest.raises(SettingsError) as flag:
        load_settings(f, env={}, overrides={"http.port": 70_000}, flags=flags)
    assert str(flag.value).startswith("--http-port (http.port): port must be 0 to 65535")
    assert str(f) not in str(flag.value)
    with pytest.raises(SettingsError) as var:
        load_settings(f, env={"RISKGUARD_HTTP_PORT": "80000"}, flags=flags)
    assert str(var.value).startswith("$RISKGUARD_HTTP_PORT (http.port): port must be 0 to")
    f.write_text("[http]\nport = 90000\n")
    with pytest.raises(SettingsError) as file:  # from the file: the file is named
        load_settings(f, env={}, overrides={"http.host": "127.0.0.2"}, flags=flags)
    assert str(file.value).startswith(f"{f}: port must be 0 to 65535")


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_http_host_is_refused_not_bound_to_every_interface(host: str) -> None:
    refused = r"^--http-host \(http.host\): host is empty.*0\.0\.0\.0"
    with pytest.raises(SettingsError, match=refused):
        load_settings(env={}, overrides={"http.host": host}, flags={"http.host": "--http-host"})
    with pytest.raises(SettingsError, match=r"^\$RISKGUARD_HTTP_HOST \(http.host\): host is empty"):
        load_settings(env={"RISKGUARD_HTTP_HOST": host})
    assert load_settings(env={}, overrides={"http.host": "0.0.0.0"}).http.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--http-port", "70000"], "riskguard run: --http-port (http.port): port must be 0"),
        (["--http-host", ""], "riskguard run: --http-host (http.host): host is empty"),
    ],
)
def test_run_names_the_flag_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    from riskguard.cli import main  # noqa: PLC0415

    f = tmp_path / "riskguard.toml"
    f.write_text("[http]\nport = 9000\n")
    assert main(["run", "--config", str(f), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(says) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("servers", "says"),
    [
        ("127.0.0.1:99999", "'127.0.0.1:99999' is not host:port with a port from 1 to 65535"),
        ("garbage", "'garbage' is not host:port"),
        ("h:9092,h2", "'h2' is not host:port"),
        (",,", "bootstrap_servers is empty"),
    ],
)
def test_bad_bootstrap_servers_are_refused_naming_the_flag(
    servers: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a port out of range reached connect() as an OverflowError traceback
    from riskguard.cli import main  # noqa: PLC0415

    assert main(["run", "--bootstrap-servers", servers, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("riskguard run: --bootstrap-servers (kafka.bootstrap_servers): ")
    assert says in err and err.count("\n") == 1
    with pytest.raises(SettingsError, match=r"^\$KAFKA_BOOTSTRAP_SERVERS \(kafka.bootstrap"):
        load_settings(env={"KAFKA_BOOTSTRAP_SERVERS": servers})


@pytest.mark.parametrize(
    ("env", "says"),
    [
        # a log level logging does not know was a KeyError traceback at start
        ({"RISKGUARD_LOG_LEVEL": "verbose"}, r"^\$RISKGUARD_LOG_LEVEL \(runtime.log_level\): "),
        # no input topic: riskguard ran, ready, reading nothing, failing every commit
        ({"RISKGUARD_KAFKA_INPUT_TOPICS": " , "}, r"^\$RISKGUARD_KAFKA_INPUT_TOPICS \(kafka"),
        # a negative number is a number (it was "Expected `int`, got `str`")
        ({"RISKGUARD_HTTP_PORT": "-5"}, r"port must be 0 to 65535 \(0: any free port\), got -5"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_variable(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings(env=env)
    assert load_settings(env={"RISKGUARD_LOG_LEVEL": "DEBUG"}).runtime.log_level == "DEBUG"


@pytest.mark.parametrize("url", ["not a url", "hooks.slack.com/x", "ftp://h/x", "http://:80/x"])
def test_a_notifier_url_every_delivery_would_fail_on_is_refused(tmp_path: Path, url: str) -> None:
    f = tmp_path / "riskguard.toml"
    f.write_text(f'[[notifier]]\nkind = "slack"\nurl = "{url}"\n')
    with pytest.raises(SettingsError, match=rf"{f}: url: '{url}' is not an http\(s\) URL"):
        load_settings(f, env={})


def test_a_misspelt_riskguard_variable_is_named_with_the_closest_one_read() -> None:
    """A misspelt RISKGUARD_* variable was ignored without a word (the verifier's
    RISKGUARD_RUNTIME_BROKER_WAIT_S=3 left the wait at 15 s); ``run`` now logs these."""
    env = {
        "RISKGUARD_INSTANCE": "rg-a",  # read
        "RISKGUARD_URL": "http://x",  # the CLI's client reads it
        "RISKGUARD_INSTANSE": "rg-b",
        "RISKGUARD_RUNTIME_BROKER_WAIT_S": "3",
        "PATH": "/bin",
    }
    assert unknown_env(env, ENV) == [
        "RISKGUARD_INSTANSE (did you mean RISKGUARD_INSTANCE?)",
        "RISKGUARD_RUNTIME_BROKER_WAIT_S",
    ]
    assert unknown_env({"RISKGUARD_LIMITS": "x"}, ENV) == []
