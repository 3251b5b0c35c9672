"""Broker paused (SIGSTOP) past the budget: not ready, alert, gate refuses; then recovery.

On each broker kind, started for this test alone (it is frozen for seconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from riskguard.brokers import BrokerKind
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL, fresh_broker, local_settings
from tests.integration.test_notifiers import Recorder


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_broker_pause_goes_not_ready_alerts_and_recovers(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    recorder = Recorder()
    await recorder.start()
    broker = fresh_broker(broker_kind)
    settings = local_settings(broker, tmp_path, **{"runtime.broker_budget_ms": 1500})
    base = msgspec.to_builtins(settings)
    base["notifier"] = [{"kind": "webhook", "url": f"{recorder.url}/hook", "max_backoff_s": 0.2}]
    sidecar = Sidecar(msgspec.convert(base, Settings), OVERFILL)
    await sidecar.start()
    gate = Gate(broker.bootstrap_servers, heartbeat_timeout_ms=1000)
    await gate.start()
    try:
        await until(lambda: sidecar.ready() and gate.health().allowed)
        broker.pause()
        not_ready_after = await until(lambda: not sidecar.ready())
        assert sidecar.checks["broker_reachable"] is False
        assert not gate.allows("A", "S", "X", "buy", False)
        await until(
            lambda: any(
                a.get("rule") == "broker-unreachable" for a in recorder.received.get("hook", [])
            )
        )
        broker.resume()
        await until(sidecar.ready, timeout=30)
        await until(lambda: gate.allows("A", "S", "X", "buy", False).allowed, timeout=30)
        await until(
            lambda: any(
                a.get("rule") == "broker-recovered" for a in recorder.received.get("hook", [])
            )
        )
        assert not_ready_after < 5.0  # budget 1.5 s + one bounded heartbeat publish
    finally:
        broker.resume()
        await gate.stop()
        await sidecar.stop()
        broker.stop()
        await recorder.runner.cleanup()
