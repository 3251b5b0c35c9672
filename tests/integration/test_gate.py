"""The gate fails closed, understands the hierarchy, and reads standing halts late."""

from __future__ import annotations

import asyncio
import time

import pytest

from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_gate_fails_closed_when_riskguard_stops(settings: Settings) -> None:
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    gate = Gate(
        settings.kafka.bootstrap_servers, settings.kafka.control_topic, heartbeat_timeout_ms=600
    )
    await gate.start()
    try:
        await until(lambda: bool(gate.allows("A", "S", "X", "buy", False)))
        stopped = time.monotonic()
        await sidecar.stop()
        await until(lambda: not gate.allows("A", "S", "X", "buy", False))
        refused_after = time.monotonic() - stopped
        verdict = gate.allows("A", "S", "X", "buy", False)
        assert "fail closed: riskguard silent" in verdict.reason
        assert verdict.state == "UNKNOWN"
        assert refused_after < 2.0
    finally:
        await gate.stop()


async def test_late_gate_sees_standing_halts_and_hierarchy(
    sidecar: Sidecar, settings: Settings
) -> None:
    await sidecar.manual("reduce_only", "account:A", "ops", "limit review")
    await sidecar.manual("halt", "symbol:RSHYY", "ops", "exchange halt")
    async with Gate(settings.kafka.bootstrap_servers, settings.kafka.control_topic) as gate:
        await until(lambda: gate.health().allowed)
        assert not gate.allows("A", "S", "MSFT", "buy", reduces_position=False)
        assert gate.allows("A", "S", "MSFT", "sell", reduces_position=True).state == "REDUCE_ONLY"
        blocked = gate.allows("B", "T", "RSHYY", "buy", reduces_position=True)
        assert not blocked and "symbol:RSHYY is HALTED (by ops: exchange halt)" in blocked.reason
        assert gate.allows("B", "T", "MSFT", "buy", reduces_position=False)
        await sidecar.manual("halt", "firm", "ops", "everything off")
        await until(lambda: not gate.allows("B", "T", "MSFT", "buy", False))
        with pytest.raises(ValueError, match="side"):
            gate.allows("B", "T", "MSFT", "short", False)  # type: ignore[arg-type]


async def test_gate_with_no_riskguard_refuses(settings: Settings) -> None:
    from riskguard.ingest.topics import ensure_topics  # noqa: PLC0415

    await ensure_topics(settings.kafka)
    async with Gate(settings.kafka.bootstrap_servers, settings.kafka.control_topic) as gate:
        verdict = gate.allows("A", "S", "X", "buy", False)
        assert not verdict and "no heartbeat" in verdict.reason
