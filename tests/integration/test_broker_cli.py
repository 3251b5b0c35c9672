"""``riskguard broker`` as a real process: its broker (Tansu, or Apache Kafka's JVM) never
outlives it, whatever ends it, and a busy port is refused in one line (exit 2)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riskguard.broker import BrokerError, EmbeddedBroker, free_port
from riskguard.cli.common import EXIT_USAGE


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is as good as gone


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``riskguard broker ARGS`` once it says it listens; returns it and what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskguard", "broker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("Ctrl-C to stop"):
        line = proc.stdout.readline()
        assert line, f"riskguard broker exited: {proc.wait()} {proc.stderr and proc.stderr.read()}"
        lines.append(line)
    return proc, lines


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_tansu_stops_with_the_command_whatever_ends_it(sig: signal.Signals) -> None:
    proc, _ = _start("--port", str(free_port()))
    try:
        (tansu,) = _children(proc.pid)
        assert _alive(tansu)
        proc.send_signal(sig)
        code = proc.wait(timeout=15)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
        assert _gone_within(tansu, 10), f"Tansu {tansu} outlived riskguard broker ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_busy_port_is_refused_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for kind in ("tansu", "apache-kafka"):
            done = subprocess.run(
                [sys.executable, "-m", "riskguard", "broker", "--kind", kind, "--port", str(port)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == EXIT_USAGE, done
            assert "listening" not in done.stdout
            assert done.stderr.splitlines() == [
                f"riskguard broker: port {port} on 127.0.0.1 is already in use (another "
                "broker?): choose another --port, or leave it out for a free one"
            ]


def test_the_embedded_broker_refuses_a_port_someone_else_serves() -> None:
    with EmbeddedBroker() as first:
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(BrokerError, match=f"port {first.port} on 127.0.0.1 is already in use"):
            second.start()
        assert not second.running()


def test_the_apache_kafka_jvm_stops_with_the_command_on_sigterm(kafka_jars: Path) -> None:
    proc, lines = _start("--kind", "apache-kafka")
    try:
        jvms = [pid for pid in _children(proc.pid) if "java" in os.readlink(f"/proc/{pid}/exe")]
        assert len(jvms) == 1, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert _gone_within(jvms[0], 20), "the JVM outlived riskguard broker"
        log = next(line.split(": ", 1)[1].strip() for line in lines if "data and log" in line)
        assert not Path(log).parent.exists()  # its data was deleted on stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("port", ["99999", "-1", "x"])
def test_a_port_that_is_no_port_is_a_usage_error_not_a_traceback(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from riskguard.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as end:
        main(["broker", "--port", port])
    err = capsys.readouterr().err
    assert end.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"riskguard broker: error: argument --port: '{port}' is not a port: give 0 to 65535 "
        "(0: a free one)"
    )
