"""Two riskguard instances active-active on one input and one control topic, on the real
broker: one state and one page per halt, operators' actions through either API reach
both, a limits reload shows in both statuses, and the gate stays open while any
instance lives (SIGKILL of one) and fails closed when none does (SIGKILL of both)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from riskguard.broker import Broker, free_port
from riskguard.control.records import StateRecord, decode_record
from riskguard.gate import CancelRequest, Gate
from riskguard.ingest.cancels import incident_id
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from riskguard.testing import spawn_run
from tests.integration.conftest import OVERFILL, instance_settings, kafka_toml
from tests.integration.people import call, with_people
from tests.integration.test_notifiers import Recorder, with_sinks
from tests.integration.test_sidecar import RUNAWAY, ev, produce

SCOPE = "strategy:smars"


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def started(*all_settings: Settings, limits: Any = OVERFILL) -> list[Sidecar]:
    sidecars = [Sidecar(s, limits) for s in all_settings]
    await asyncio.gather(*(s.start() for s in sidecars))
    return sidecars


async def control_states(settings: Settings, scope: str, timeout: float = 5.0) -> list[Any]:
    """Every state record of ``scope`` on the control topic so far, in offset order."""
    consumer = AIOKafkaConsumer(
        settings.kafka.control_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            if not batch and found:
                break
            for messages in batch.values():
                for m in messages:
                    record = decode_record(m.value)
                    if isinstance(record, StateRecord) and record.scope == scope:
                        found.append(record)
    finally:
        await consumer.stop()
    return found


def incidents(recorder: Recorder) -> list[dict[str, Any]]:
    """The PagerDuty triggers of cancel-incomplete alerts received so far."""
    return [
        p
        for p in recorder.received.get("pd", [])
        if p["event_action"] == "trigger"
        and p["payload"]["custom_details"].get("rule") == "cancel-incomplete"
    ]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = Recorder()
    await r.start()
    yield r
    await r.runner.cleanup()


async def test_a_halt_both_decide_is_one_state_one_page_one_cancel(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    a_settings = with_sinks(settings, recorder.url, tmp_path)
    b_settings = instance_settings(a_settings, tmp_path / "b", "rg-b")
    a, b = await started(a_settings, b_settings)
    asked: list[CancelRequest] = []
    gate = Gate(
        settings.kafka.bootstrap_servers,
        settings.kafka.control_topic,
        heartbeat_timeout_ms=1000,
        on_cancel=asked.append,
    )
    await gate.start()
    try:
        await until(lambda: set(gate.health().instances) == {a.instance, b.instance})
        working = ev(type="new", order_id="w1", side="buy", qty=10, price=10)
        await produce(settings, working, *RUNAWAY)
        await until(
            lambda: (
                all(s.engine.killswitch.state(SCOPE) == "HALTED" for s in (a, b))
                and not gate.allows("A", "smars", "RSHYY", "buy", False)
            )
        )
        # w1 is never cancelled: past the deadline (1 s) the cancel-incomplete alert pages
        await until(lambda: len(incidents(recorder)) >= 1)
        await asyncio.sleep(1.0)  # time for a second instance's pages, were they to differ
        records = await control_states(settings, SCOPE)
    finally:
        await gate.stop()
        await asyncio.gather(a.stop(), b.stop())
    ids = {r.transition.id for r in records}
    assert len(ids) == 1, records  # one or two records, one halt
    (halt_id,) = ids
    assert {r.transition.instance for r in records} <= {a.instance, b.instance}
    assert a.engine.killswitch.standing()[SCOPE].id == b.engine.killswitch.standing()[SCOPE].id
    pages = [p for p in recorder.received["pd"] if p["event_action"] == "trigger"]
    halts = [p for p in pages if p["payload"]["custom_details"]["scope"] == SCOPE]
    assert {p["dedup_key"] for p in halts} == {halt_id}  # PagerDuty: one incident
    assert {p["dedup_key"] for p in incidents(recorder)} == {
        incident_id(records[0].transition.ts, halt_id)
    }
    fired = [f[0]["labels"] for f in recorder.received["am/api/v2/alerts"]]
    halt_alerts = [labels for labels in fired if labels["scope"] == SCOPE]
    assert len({json.dumps(labels, sort_keys=True) for labels in halt_alerts}) == 1
    assert [(r.halt_id, r.part, [o.order_id for o in r.orders]) for r in asked] == [
        (halt_id, 0, ["w1"])
    ]


async def test_operators_act_through_either_api_and_both_follow(
    settings: Settings, tmp_path: Path
) -> None:
    a_settings = with_people(settings, tmp_path)
    b_settings = instance_settings(a_settings, tmp_path / "b", "rg-b")
    a, b = await started(a_settings, b_settings)
    try:
        await until(lambda: any(p["live"] for p in a.status()["peers"]))
        status, body = await call(
            a, "POST", "/v1/halt", {"scope": SCOPE, "reason": "drill"}, "olga"
        )
        assert status == 200 and body["changed"], body
        await until(lambda: b.engine.killswitch.state(SCOPE) == "HALTED")
        _, seen = await call(b, "GET", "/v1/status", who="vic")
        assert seen["standing"][SCOPE]["operator"] == "olga"
        assert seen["standing"][SCOPE]["instance"] == a.instance
        status, body = await call(
            b, "POST", "/v1/resume", {"scope": SCOPE, "reason": "ok"}, "alice"
        )
        assert status == 200 and body["changed"], body
        await until(lambda: a.engine.killswitch.state(SCOPE) == "ACTIVE")

        # four-eyes: asked through A, approved through B, carried out on both
        await call(b, "POST", "/v1/halt", {"scope": "firm", "reason": "venue outage"}, "olga")
        await until(lambda: a.engine.killswitch.state("firm") == "HALTED")
        status, body = await call(
            a, "POST", "/v1/resume", {"scope": "firm", "reason": "back"}, "alice"
        )
        assert status == 202, body
        request_id = body["request_id"]
        await until(lambda: [p.request_id for p in b.api.four_eyes.pending()] == [request_id])
        status, body = await call(
            b, "POST", "/v1/approve", {"request_id": request_id, "reason": "checked"}, "bob"
        )
        assert status == 200 and body["changed"], body
        await until(lambda: a.engine.killswitch.state("firm") == "ACTIVE")
        await until(lambda: a.api.four_eyes.pending() == [])
        resumed = a.engine.killswitch  # the resume B carried out, as A holds it
        assert "firm" not in resumed.standing()
        status, body = await call(
            a, "POST", "/v1/approve", {"request_id": request_id, "reason": "again"}, "bob"
        )
        assert status == 409 and "approved by bob" in body["error"], body
    finally:
        await asyncio.gather(a.stop(), b.stop())
    adopted = [json.loads(line)["record"] for line in a.audit.path.read_text().splitlines()]
    assert any(r.get("by_instance") == "rg-b" and r.get("approved_by") == "bob" for r in adopted)


LIMITS = """
version = 1
[[rule]]
name = "overfill"
metric = "parent_overfill_ratio"
scope = "strategy"
max = {max}
action = "halt"
"""


async def test_a_limits_reload_shows_in_both_statuses(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(LIMITS.format(max=1.0))
    base = msgspec.to_builtins(settings)
    base["limits"] = str(path)
    a_settings = msgspec.convert(base, Settings)
    b_settings = instance_settings(a_settings, tmp_path / "b", "rg-b")
    a, b = (Sidecar(a_settings), Sidecar(b_settings))
    await asyncio.gather(a.start(), b.start())

    def agreed(digest: str) -> bool:
        return all(
            s.status()["limits"]["sha256"] == digest
            and [(p["limits_sha256"], p["limits_agree"]) for p in s.status()["peers"]]
            == [(digest, True)]
            for s in (a, b)
        )

    try:
        before = a.limits.digest
        await until(lambda: agreed(before))
        path.write_text(LIMITS.format(max=2.0))
        await until(lambda: a.limits.digest != before and agreed(a.limits.digest))
        assert b.limits.rules[0].max == 2.0
    finally:
        await asyncio.gather(a.stop(), b.stop())


def config(folder: Path, run: str, instance: str, broker: Broker) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "riskguard.toml"
    limits = folder / "limits.toml"
    limits.write_text(LIMITS.format(max=1.0))
    path.write_text(f"""
limits = "{limits}"
[kafka]
{kafka_toml(broker)}input_topics = ["events-{run}"]
control_topic = "control-{run}"
dead_letter_topic = "dead-{run}"
group_id = "riskguard-{run}-{instance}"
[runtime]
instance = "{instance}"
state_dir = "{folder / "state"}"
heartbeat_interval_ms = 100
watch_limits = false
""")
    return path


def ready(port: int) -> bool:
    import urllib.request  # noqa: PLC0415 - only this helper reads the API synchronously

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(json.loads(r.read())["ready"])
    except OSError:
        return False


@pytest.mark.slow
async def test_sigkill_of_one_instance_keeps_the_gate_open_and_of_both_closes_it(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    servers = settings.kafka.bootstrap_servers
    ports = {"rg-a": free_port(), "rg-b": free_port()}
    procs = {
        name: spawn_run(config(tmp_path / name, run, name, broker), port, servers)
        for name, port in ports.items()
    }
    gate: Gate | None = None
    try:
        for name, port in ports.items():
            await until(lambda p=port, n=name: procs[n].poll() is None and ready(p), 120)  # type: ignore[misc]
        gate = Gate(servers, f"control-{run}", heartbeat_timeout_ms=1000)
        await gate.start()
        g = gate
        await until(lambda: g.health().instances == ("rg-a", "rg-b"))

        procs["rg-a"].send_signal(signal.SIGKILL)
        procs["rg-a"].wait(10)
        refused = []
        deadline = time.monotonic() + 2.5  # well past the gate's timeout
        while time.monotonic() < deadline:
            verdict = g.health()
            if not verdict:
                refused.append(verdict.reason)
            await asyncio.sleep(0.02)
        assert refused == []
        assert g.health().instances == ("rg-b",)

        # the survivor goes on deciding
        runaway_settings = msgspec.to_builtins(settings)
        runaway_settings["kafka"]["input_topics"] = [f"events-{run}"]
        await produce(msgspec.convert(runaway_settings, Settings), *RUNAWAY)
        await until(lambda: not g.allows("A", "smars", "RSHYY", "buy", False))
        assert g.view.states[SCOPE].transition.instance == "rg-b"

        procs["rg-b"].send_signal(signal.SIGKILL)
        procs["rg-b"].wait(10)
        killed = time.monotonic()
        await until(lambda: not g.health(), 5)
        assert time.monotonic() - killed < 2.0
        assert "fail closed: riskguard silent" in g.health().reason
    finally:
        if gate is not None:
            await gate.stop()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
    assert all(proc.returncode == -signal.SIGKILL for proc in procs.values())
