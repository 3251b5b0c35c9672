"""``riskguard run`` as a real process: configured from a file and the environment, ready,
and stopped by SIGTERM gracefully (batch finished, offsets committed, exit 0)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from riskguard.broker import Broker, free_port
from riskguard.examples import LIMITS
from riskguard.testing import spawn_run
from tests.integration.conftest import kafka_toml


def test_run_starts_serves_and_stops_on_sigterm(broker: Broker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    port = free_port()
    config = tmp_path / "riskguard.toml"
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS.read_text())
    config.write_text(f"""
limits = "{limits}"
[kafka]
{kafka_toml(broker)}input_topics = ["events-{run}"]
control_topic = "control-{run}"
dead_letter_topic = "dead-{run}"
[runtime]
audit_log = "{tmp_path / "audit.jsonl"}"
journal = "{tmp_path / "journal.jsonl"}"
snapshot_dir = "{tmp_path / "snapshots"}"
watch_limits = false
""")
    env = {
        **os.environ,
        "RISKGUARD_HTTP_TOKEN": "t0ken-from-env",
        "RISKGUARD_LOG_LEVEL": "info",
    }
    proc = spawn_run(
        config,
        port,
        broker.bootstrap_servers,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    ready = json.loads(r.read())["ready"]
            except OSError:
                time.sleep(0.2)
        assert ready, "riskguard run never became ready"
        limits.write_text(LIMITS.read_text().replace("max = 500\n", "max = 750\n", 1))
        proc.send_signal(signal.SIGHUP)  # file watching is off: only the signal reloads
        audit_log = tmp_path / "audit.jsonl"
        deadline = time.monotonic() + 20
        while b"limits_reload" not in (audit_log.read_bytes() if audit_log.exists() else b""):
            assert time.monotonic() < deadline, "SIGHUP did not reload the limits"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = (
        [
            json.loads(line)
            for line in proc.stderr.read().decode().splitlines()
            if line.startswith("{")
        ]
        if proc.stderr
        else []
    )
    events = [rec["event"] for rec in logs]
    assert "riskguard started" in events and "riskguard stopped" in events
    started = next(rec for rec in logs if rec["event"] == "riskguard started")
    assert "t0ken-from-env" not in json.dumps(logs)  # the token never reaches a log line
    assert f"events-{run}" in started["settings"]
    reload = next(rec for rec in logs if rec["event"] == "limits reloaded")
    assert reload["trigger"] == "SIGHUP" and "order-rate" in reload["changed"]


def test_a_second_run_under_the_default_name_on_one_host_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    # the default name is the host's: a restart is the same instance (no dead peer per
    # run), and a second process beside it on the same control topic must be told to
    # set a name, not run as a silent instance_conflict
    run = uuid.uuid4().hex[:8]
    config = tmp_path / "riskguard.toml"
    config.write_text(f"""
limits = "{LIMITS}"
[kafka]
{kafka_toml(broker)}input_topics = ["events-{run}"]
control_topic = "control-{run}"
dead_letter_topic = "dead-{run}"
[runtime]
state_dir = "{tmp_path / "state"}"
""")
    port = free_port()
    first = spawn_run(config, port, broker.bootstrap_servers)
    try:
        deadline = time.monotonic() + 60
        reply: dict[str, object] = {}
        while time.monotonic() < deadline and not reply.get("ready"):
            assert first.poll() is None, "the first riskguard exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=1) as r:
                    reply = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert reply.get("ready") and reply["instance"] == socket.gethostname()
        second = spawn_run(config, free_port(), broker.bootstrap_servers, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        lines = err.decode().strip().splitlines()
        assert lines[-1].startswith(
            f"riskguard run: another riskguard on this host already runs as instance "
            f"'{socket.gethostname()}' (the default: the host name) on the control topic "
            f"'control-{run}'"
        )
        assert "Traceback" not in err.decode()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
    finally:
        if first.poll() is None:
            first.kill()
