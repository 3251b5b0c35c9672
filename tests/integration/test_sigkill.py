"""SIGKILL riskguard at random points of a stream and restart it: the final state equals
an uninterrupted reference run, with 0 events lost and 0 counted twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from riskguard.broker import Broker, free_port
from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.events import encode
from riskguard.examples import LIMITS
from riskguard.limits import load
from riskguard.snapshot import SnapshotStore, restore
from riskguard.testing import spawn_run
from tests.integration.conftest import kafka_toml


def status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=3) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except OSError:
        return None


def start(config: Path, port: int, broker: Broker) -> subprocess.Popen[bytes]:
    return spawn_run(config, port, broker.bootstrap_servers)


def wait_applied(
    proc: subprocess.Popen[bytes], port: int, at_least: int, timeout: float = 90
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "riskguard exited"
        st = status(port)
        if st and st["events_applied"] >= at_least:
            return int(st["events_applied"])
        time.sleep(0.05)
    raise AssertionError(f"never reached {at_least} applied events")


@pytest.mark.slow
async def test_sigkill_at_random_points_loses_and_doubles_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"events-{run}"
    events = TradingSim(seed=21, activity=0.5).run(30_000)
    config = tmp_path / "riskguard.toml"
    config.write_text(f"""
limits = "{LIMITS}"
[kafka]
{kafka_toml(broker)}input_topics = ["{topic}"]
control_topic = "control-{run}"
dead_letter_topic = "dead-{run}"
max_records = 200
[runtime]
audit_log = "{tmp_path / "audit.jsonl"}"
journal = "{tmp_path / "journal.jsonl"}"
snapshot_dir = "{tmp_path / "snapshots"}"
snapshot_interval_s = 0.2
watch_limits = false
""")
    port = free_port()
    proc = start(config, port, broker)
    wait_applied(proc, port, 0)  # topics exist, riskguard is consuming
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    for ev in events:
        await producer.send(topic, encode(ev), key=getattr(ev, "account", "-").encode())
    await producer.flush()
    await producer.stop()

    rng = random.Random(7)
    kill_points = sorted(rng.sample(range(len(events) // 10, len(events) - 1000), 3))
    for point in kill_points:
        wait_applied(proc, port, point)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = start(config, port, broker)
    applied = wait_applied(proc, port, len(events))
    time.sleep(0.5)
    final = None
    deadline = time.monotonic() + 15
    while final is None and time.monotonic() < deadline:  # a busy 2-core box can be slow
        final = status(port)
    assert final is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert applied == final["events_applied"] == len(events)  # 0 lost, 0 double-counted
    assert final["snapshot"]["loaded_from"], "restarts should resume from a snapshot"

    reference = Engine(load(LIMITS), event_time=True)
    reference.apply(events)
    snap = SnapshotStore(tmp_path / "snapshots").latest()
    assert snap is not None
    recovered = Engine(load(LIMITS), event_time=True)
    restore(recovered, snap)
    assert recovered.events_applied == len(events)
    want = {k: v[0] for k, v in reference.positions().items()}
    got = {k: v[0] for k, v in recovered.positions().items()}
    assert got == want
    for scope in reference.keys.scope_names:
        assert (
            recovered.scope_values(scope)["open_orders"]
            == reference.scope_values(scope)["open_orders"]
        ), scope
