"""A consume loop that dies of a bug stops the sidecar with exit status failed, and gates
fail closed: never a riskguard that heartbeats while it applies nothing."""

from __future__ import annotations

import asyncio
import time

from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_sidecar import RUNAWAY, produce, wait_for


async def test_a_consume_loop_that_fails_stops_riskguard(settings: Settings) -> None:
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    k = settings.kafka
    gate = Gate(k.bootstrap_servers, k.control_topic, heartbeat_timeout_ms=1000)
    await gate.start()
    try:
        await wait_for(lambda: bool(gate.health()))

        async def bug(_batch: object) -> None:
            raise IndexError("a bug in the engine")

        sidecar.intake.apply = bug  # type: ignore[method-assign]  # the fault to inject
        await produce(settings, *RUNAWAY)
        await asyncio.wait_for(sidecar.stop_requested(), 10)
        failed_at = time.monotonic()
        assert await sidecar.run() is False  # `riskguard run` exits 1: restarted
        assert sidecar.tasks.failed == ["consume: IndexError('a bug in the engine')"]
        assert sidecar.phase == "stopped"
        await wait_for(lambda: not gate.health(), 5)  # silent: gates fail closed
        assert "fail closed" in gate.health().reason
        assert time.monotonic() - failed_at < 3
    finally:
        await gate.stop()
        await sidecar.close()
