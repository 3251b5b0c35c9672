"""``riskguard run`` as a new user meets it (issue 12, part 4): a broker that restarted and
lost its topics, start-up failures, the state directory. Real processes, real brokers;
every line on stderr is JSON but the one line that says why a start failed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any

import pytest
from aiokafka import AIOKafkaProducer

from riskguard import events as wire
from riskguard.broker import Broker, free_port
from riskguard.brokers import BrokerKind
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from riskguard.examples import LIMITS
from riskguard.testing import spawn_run
from tests.integration.conftest import fresh_broker, kafka_toml, tansu_only


def config(
    tmp: Path,
    body: str = "",
    *,
    runtime: str = "",
    files: bool = True,
    broker: Broker | None = None,
) -> Path:
    """A settings file: the example limits, ``body`` (other sections, starting with the
    ``[kafka]`` table if it has one), what ``broker`` needs in ``[kafka]``, no file
    watching, ``runtime`` settings, and (``files``) the audit log, journal and snapshots
    under ``tmp`` (else: the default state directory)."""
    if broker is not None:
        rest = body.removeprefix("[kafka]\n") if body.startswith("[kafka]") else f"\n{body}"
        body = f"[kafka]\n{kafka_toml(broker)}{rest}"
    where = (
        f'audit_log = "{tmp / "audit.jsonl"}"\njournal = "{tmp / "journal.jsonl"}"\n'
        f'snapshot_dir = "{tmp / "snapshots"}"\n'
        if files
        else ""
    )
    path = tmp / f"riskguard-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f'limits = "{LIMITS}"\n{body}\n[runtime]\nwatch_limits = false\n{runtime}\n{where}'
    )
    return path


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"riskguard run exited with {proc.returncode}"
        try:
            if get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("riskguard run never became ready")


def lines_of(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON log records, other lines) of a captured stderr."""
    records, other = [], []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            other.append(line)
    return records, other


def produce(bootstrap: str, topic: str, n: int) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            for i in range(n):
                beat = wire.Heartbeat(ts=time.time_ns(), source="router-1")
                await producer.send_and_wait(topic, wire.encode(beat), key=str(i).encode())
        finally:
            await producer.stop()

    asyncio.run(go())


def run_proc(
    cfg: Path, port: int, bootstrap: str, err: IO[bytes], **env: str
) -> subprocess.Popen[bytes]:
    return spawn_run(cfg, port, bootstrap, env=env, stdout=err, stderr=err)


# 1. a broker that restarted and lost its topics ---------------------------------------
def test_sigterm_stops_run_in_bounded_time_after_the_broker_lost_its_topics(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"events-{run}"
    port = free_port()
    first = fresh_broker(broker_kind)
    second = None
    cfg = config(
        tmp_path,
        f'[kafka]\ninput_topics = ["{topic}"]\ncontrol_topic = "control-{run}"\n'
        f'group_id = "rg-{run}"',
        # offsets are committed only at the stop, to a broker that lost the topic
        runtime="stop_timeout_s = 5\ncommit_interval_ms = 3600000",
        broker=first,
    )
    err_path = tmp_path / "stderr.log"
    try:
        with err_path.open("wb") as err:
            proc = run_proc(cfg, port, first.bootstrap_servers, err)
            try:
                wait_ready(port, proc)
                produce(first.bootstrap_servers, topic, 50)
                deadline = time.monotonic() + 20
                while get(f"http://127.0.0.1:{port}/v1/status")[1]["events_applied"] < 50:
                    assert time.monotonic() < deadline, "the events were not applied"
                    time.sleep(0.1)
                first.stop()  # Tansu keeps memory only, Apache Kafka's data is deleted:
                second = fresh_broker(broker_kind, port=first.port)  # every topic is gone
                time.sleep(3)  # riskguard finds the broker again (and heartbeats to it)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
                took = time.monotonic() - sent
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        records, other = lines_of(err_path)
        assert other == [], other[:5]  # aiokafka's own lines are JSON too
        assert code in (0, 1) and took < 5 + 10, (code, took)
        events = [r["event"] for r in records]
        assert {"signal": "SIGTERM"}.items() <= next(
            r for r in records if r["event"] == "stop requested"
        ).items()
        assert "riskguard stopped" in events
        # the broker came back empty: either riskguard saw its heartbeats' offsets go
        # back and created its topics again (the final commit then succeeds), or it had
        # not heartbeat to the new broker yet and the commit is refused, logged once
        rewound = any(e.startswith("control topic re-created") for e in events)
        refused = [r for r in records if "OffsetCommit failed" in r["event"]]
        assert len(refused) <= 3, len(refused)  # never one every 100 ms
        assert rewound or refused, events
        if refused:
            assert "commit failed" in events  # riskguard's own line, once
        # and starting again against that broker: ready, or one clear line (exit 2)
        assert second is not None
        again = tmp_path / "stderr-again.log"
        with again.open("wb") as err:
            proc = run_proc(cfg, port, second.bootstrap_servers, err)
            try:
                deadline = time.monotonic() + 90
                ready = False
                while not ready and proc.poll() is None and time.monotonic() < deadline:
                    try:
                        ready = get(f"http://127.0.0.1:{port}/readyz")[0] == 200
                    except OSError:
                        time.sleep(0.2)
                if ready:
                    proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        records, other = lines_of(again)
        if ready:
            assert code == EXIT_OK and other == []
        else:
            assert code == EXIT_USAGE and len(other) == 1, other
            assert other[0].startswith("riskguard run: cannot restore standing states")
            assert "delete that topic" in other[0]
    finally:
        for broker in (first, second):
            if broker is not None:
                broker.stop()


def test_sigterm_while_the_broker_is_down_stops_cleanly_in_bounded_time(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    """Events applied, the broker dies, then SIGTERM: no traceback (aiokafka's consumer
    stop leaked a cancellation: riskguard.ingest.closing), no 'Unclosed' complaint, every
    line on stderr JSON, stopped within ``stop_timeout_s``, and exit 1 as ``riskguard run
    --help`` says: the applied offsets could not be committed."""
    run = uuid.uuid4().hex[:8]
    topic = f"events-{run}"
    port = free_port()
    dead = fresh_broker(broker_kind)
    cfg = config(
        tmp_path,
        f'[kafka]\ninput_topics = ["{topic}"]\ncontrol_topic = "control-{run}"\n'
        f'group_id = "rg-{run}"',
        # offsets are committed only at the stop, to a broker that is gone
        runtime="stop_timeout_s = 4\ncommit_interval_ms = 3600000",
        broker=dead,
    )
    err_path = tmp_path / "stderr.log"
    try:
        with err_path.open("wb") as err:
            proc = run_proc(cfg, port, dead.bootstrap_servers, err)
            try:
                wait_ready(port, proc)
                produce(dead.bootstrap_servers, topic, 20)
                deadline = time.monotonic() + 20
                while get(f"http://127.0.0.1:{port}/v1/status")[1]["events_applied"] < 20:
                    assert time.monotonic() < deadline, "the events were not applied"
                    time.sleep(0.1)
                dead.stop()
                time.sleep(1.5)  # fetches fail and back off: connections refused
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
                took = time.monotonic() - sent
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        dead.stop()
    text = err_path.read_text(errors="replace")
    records, other = lines_of(err_path)
    assert other == [], other[:10]
    for word in ("Traceback", "Unclosed", "CancelledError"):
        assert word not in text, text[-3000:]
    assert took < 4 + 5, took  # the budget, then the interpreter's exit; not the watchdog
    events = [r["event"] for r in records]
    assert "stop requested" in events, events[-10:]
    stopped = next(r for r in records if r["event"] == "riskguard stopped")
    assert (code, stopped["graceful"], stopped["committed"]) == (EXIT_FAILED, False, False)
    assert stopped["events_applied"] == 20


# 4. start-up failures: one line, exit 2 -------------------------------------------------
def _fails_in_one_line(
    tmp_path: Path, cfg: Path, bootstrap: str, port: int | None = None, **env: str
) -> str:
    err_path = tmp_path / f"stderr-{uuid.uuid4().hex[:6]}.log"
    with err_path.open("wb") as err:
        proc = run_proc(cfg, port or free_port(), bootstrap, err, **env)
        try:
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    records, other = lines_of(err_path)
    assert code == EXIT_USAGE, (code, other, records)
    assert len(other) == 1 and other[0].startswith("riskguard run: "), other
    text = err_path.read_text()
    assert "Traceback" not in text and "Unclosed" not in text, text
    return other[0]


@tansu_only  # it fails reading the settings, before any broker is contacted
def test_a_missing_secret_file_names_the_setting_and_the_path(
    broker: Broker, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-token"
    line = _fails_in_one_line(
        tmp_path, config(tmp_path), broker.bootstrap_servers, RISKGUARD_HTTP_TOKEN_FILE=str(missing)
    )
    assert line == (
        f"riskguard run: http.token_file = '{missing}': cannot read: No such file or directory"
    )


def test_no_broker_is_said_after_a_bounded_wait(tmp_path: Path) -> None:
    cfg = config(tmp_path, runtime="broker_wait_s = 1.5")
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    line = _fails_in_one_line(tmp_path, cfg, nobody)
    assert line.startswith(f"riskguard run: no Kafka broker reachable at {nobody} after 1.5 s")
    assert time.monotonic() - started < 60


@tansu_only  # it fails binding the API, before any broker is contacted
def test_a_busy_http_port_is_one_line(broker: Broker, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _fails_in_one_line(tmp_path, config(tmp_path), broker.bootstrap_servers, port)
    assert line == (
        f"riskguard run: cannot serve the API on 127.0.0.1:{port} (http.host, http.port): "
        "Address already in use"
    )


@tansu_only  # it fails reading the settings, before any broker is contacted
def test_an_http_port_out_of_range_is_one_line(broker: Broker, tmp_path: Path) -> None:
    line = _fails_in_one_line(tmp_path, config(tmp_path), broker.bootstrap_servers, 99_999)
    assert line.startswith("riskguard run: ") and "port must be 0 to 65535" in line, line


@tansu_only  # it fails binding the API, before any broker is contacted
def test_an_http_host_that_does_not_resolve_says_so(broker: Broker, tmp_path: Path) -> None:
    line = _fails_in_one_line(
        tmp_path, config(tmp_path), broker.bootstrap_servers, RISKGUARD_HTTP_HOST="nohost.invalid"
    )
    assert line.startswith("riskguard run: cannot serve the API on nohost.invalid:"), line
    assert "Unknown error" not in line, line


@tansu_only  # Apache Kafka has idempotent producers: only Tansu refuses one
def test_an_idempotent_producer_the_broker_refuses_is_one_line(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = config(tmp_path, "[kafka]\nidempotent_producer = true")
    line = _fails_in_one_line(tmp_path, cfg, broker.bootstrap_servers)
    assert line.startswith(
        f"riskguard run: the broker at {broker.bootstrap_servers} refused an idempotent producer"
    )
    assert line.endswith(
        "set kafka.idempotent_producer = false for brokers without it (the bundled one)"
    )


# 16. the state directory ---------------------------------------------------------------
@pytest.mark.parametrize("how", ["default", "flag"])
def test_run_keeps_its_files_in_the_state_dir_and_says_why_the_firm_halted(
    broker: Broker, tmp_path: Path, how: str
) -> None:
    run = uuid.uuid4().hex[:8]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg = config(
        tmp_path,
        f'[kafka]\ninput_topics = ["events-{run}"]\ncontrol_topic = "control-{run}"',
        files=False,
        broker=broker,
    )
    state = tmp_path / ("xdg" if how == "default" else "flagged")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    env.pop("STATE_DIRECTORY", None)
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    port = free_port()
    args = ["run", "--config", str(cfg), "--http-port", str(port)]
    if how == "flag":
        args += ["--state-dir", str(state)]
    err_path = tmp_path / "stderr.log"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riskguard", *args], cwd=cwd, env=env, stderr=err
        )
        try:
            wait_ready(port, proc)
            deadline = time.monotonic() + 20  # no trading system: router-silent halts the firm
            while (
                "firm" not in (status := get(f"http://127.0.0.1:{port}/v1/status")[1])["standing"]
            ):
                assert time.monotonic() < deadline, "the firm was not halted"
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == EXIT_OK
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # item 11: the router-silent halt of a run without its trading system says why
    expected = "no heartbeat from router-1 since start, 2."
    assert status["standing"]["firm"]["reason"].startswith(expected)
    records, _ = lines_of(err_path)
    halt = next(r for r in records if r["event"] == "transition" and r["scope"] == "firm")
    assert halt["rule"] == "router-silent" and halt["reason"].startswith(expected)
    assert "expected while the trading system is not running" in halt["reason"]
    home = state / "riskguard" if how == "default" else state
    assert status["state_dir"] == str(home)
    assert status["journal"] == str(home / "journal.jsonl")
    assert list(cwd.iterdir()) == []  # nothing in the current directory
    assert (home / "audit.jsonl").is_file() and (home / "journal.jsonl").is_file()
    assert any((home / "snapshots").iterdir())


# part 5: the first run ---------------------------------------------------------------
@tansu_only  # it tests compiling with a cold numba cache (~20 s), which no broker changes
def test_the_first_run_says_it_compiles_and_is_alive_but_not_ready_meanwhile(
    broker: Broker, tmp_path: Path
) -> None:
    """A fresh install (empty numba cache): the API answers at once, /livez says alive and
    /readyz says not ready (kernels_warm false, phase "warming") until the compile is done,
    and the log says at once that it compiles, and that it does so only once."""
    run = uuid.uuid4().hex[:8]
    cfg = config(tmp_path, f'[kafka]\ninput_topics = ["events-{run}"]\ncontrol_topic = "c-{run}"')
    port = free_port()
    err_path = tmp_path / "stderr.log"
    with err_path.open("wb") as err:
        proc = run_proc(
            cfg, port, broker.bootstrap_servers, err, NUMBA_CACHE_DIR=str(tmp_path / "cache")
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None and time.monotonic() < deadline
                try:
                    live = get(f"http://127.0.0.1:{port}/livez")
                    break
                except OSError:
                    time.sleep(0.05)
            ready = get(f"http://127.0.0.1:{port}/readyz")
            status = get(f"http://127.0.0.1:{port}/v1/status")[1]
            wait_ready(port, proc, timeout_s=300)
            after = get(f"http://127.0.0.1:{port}/v1/status")[1]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == EXIT_OK
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert live == (200, {"live": True})
    assert ready[0] == 503 and ready[1]["checks"]["kernels_warm"] is False
    assert status["phase"] == "warming" and status["ready"] is False
    assert after["phase"] == "running" and after["checks"]["kernels_warm"] is True
    records, other = lines_of(err_path)
    assert other == []
    events = [r["event"] for r in records]
    notice = next(i for i, e in enumerate(events) if e.startswith("compiling riskguard's numba"))
    assert "first run only" in events[notice]
    assert notice < events.index("kernels ready") < events.index("riskguard started")
    assert notice <= 1  # at once: right after the API listens, before any broker work
