"""A consume loop that stops polling withholds its heartbeats; what riskguard says about
it must be true: the loop stalled (``consume-stalled``, ``loop_healthy`` false), not the
broker lost (no ``broker-unreachable``, ``broker_reachable`` true), since the broker
took every heartbeat tried. Seen live: a group member fenced by a second process under
its name paged ``broker-unreachable`` with the broker up."""

from __future__ import annotations

import asyncio
from typing import Any

from riskguard import audit
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_cancel_on_halt import until, with_limits


def alerts(settings: Settings) -> list[dict[str, Any]]:
    return [
        r["record"]
        for r in audit.read(settings.runtime.audit_log)
        if r["kind"] == "transition" and r["record"]["kind"] == "alert"
    ]


async def test_a_stalled_loop_is_said_to_be_stalled_not_the_broker_lost(
    settings: Settings,
) -> None:
    settings = with_limits(settings, stall_budget_ms=300, broker_budget_ms=600)
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    try:
        await until(sidecar.health.ready)
        async with sidecar.intake.lock:  # the loop polls once more, then waits here
            await until(lambda: not sidecar.health.healthy())
            await asyncio.sleep(1.5)  # well past both budgets
            checks = sidecar.health.readiness()
        await until(sidecar.health.ready)
        await until(lambda: len(alerts(settings)) >= 2)  # raised, then ended
    finally:
        await sidecar.stop()
    assert checks["loop_healthy"] is False and checks["broker_reachable"] is True
    said = alerts(settings)
    assert [a["rule"] for a in said] == ["consume-stalled", "consume-recovered"]
    raised, ended = said
    assert ended["ends"] == raised["id"]
    assert "has not polled the broker" in raised["reason"] and "blocked" in raised["reason"]
