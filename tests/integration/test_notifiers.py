"""Every sink delivers its payload to a real local HTTP server; a failing sink retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL


class Recorder:
    """A loopback HTTP server that records every POST; can fail the first N."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {}
        self.fail_first: dict[str, int] = {}
        self.url = ""
        app = web.Application()
        app.router.add_post("/{name:.*}", self.handle)
        self.runner = web.AppRunner(app)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.fail_first.get(name, 0) > 0:
            self.fail_first[name] -= 1
            return web.Response(status=503, text="try later")
        self.received.setdefault(name, []).append(await request.json())
        return web.Response(status=202 if name == "pd" else 200, text="ok")

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = Recorder()
    await r.start()
    yield r
    await r.runner.cleanup()


def with_sinks(settings: Settings, url: str, tmp_path: Path) -> Settings:
    key = tmp_path / "pd-key"
    key.write_text("R0UTING-KEY\n")
    sinks = (
        {"kind": "pagerduty", "url": f"{url}/pd", "routing_key_file": str(key)},
        {"kind": "slack", "url": f"{url}/slack"},
        {"kind": "alertmanager", "url": f"{url}/am/api/v2/alerts"},
        {
            "kind": "webhook",
            "url": f"{url}/hook",
            "name": "trading-kill-endpoint",
            "max_backoff_s": 0.2,
        },
    )
    base = msgspec.to_builtins(settings)
    base["notifier"] = list(sinks)
    return msgspec.convert(base, Settings)


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_each_sink_receives_its_payload(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    sidecar = Sidecar(with_sinks(settings, recorder.url, tmp_path), OVERFILL)
    await sidecar.start()
    try:
        halt = await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
        resume = await sidecar.manual("resume", "strategy:smars", "bob", "fixed")
        assert halt is not None and resume is not None
        got = recorder.received
        await until(
            lambda: all(
                len(got.get(n, [])) == 2 for n in ("pd", "slack", "am/api/v2/alerts", "hook")
            )
        )
    finally:
        await sidecar.stop()
    trigger, resolve = got["pd"]
    assert trigger["routing_key"] == "R0UTING-KEY" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == halt.id
    assert trigger["payload"]["severity"] == "critical"
    assert "strategy:smars HALTED by alice: runaway" in trigger["payload"]["summary"]
    assert resolve == {
        "routing_key": "R0UTING-KEY",
        "event_action": "resolve",
        "dedup_key": halt.id,
    }
    assert "strategy:smars HALTED" in got["slack"][0]["text"]
    assert "RESUMED by bob" in got["slack"][1]["text"]
    fire, end = got["am/api/v2/alerts"]
    assert fire[0]["labels"]["alertname"] == "RiskguardHalt" and "endsAt" not in fire[0]
    assert end[0]["labels"] == fire[0]["labels"] and "endsAt" in end[0]
    assert got["hook"][0]["scope"] == "strategy:smars" and got["hook"][0]["to"] == "HALTED"
    assert got["hook"][1]["ends"] == halt.id


async def test_failing_sink_retries_and_never_stalls_the_engine(
    settings: Settings, recorder: Recorder, tmp_path: Path
) -> None:
    recorder.fail_first["hook"] = 3
    sidecar = Sidecar(with_sinks(settings, recorder.url, tmp_path), OVERFILL)
    await sidecar.start()
    try:
        started = time.perf_counter()
        await sidecar.manual("halt", "firm", "ops", "drill")
        assert time.perf_counter() - started < 0.5  # publishing waits for Kafka, not sinks
        await until(lambda: len(recorder.received.get("hook", [])) == 1)

        def sink() -> dict[str, Any]:
            return {s["sink"]: s for s in sidecar.notifier.status()}["trading-kill-endpoint"]

        # the endpoint has the request before the sender has read its answer
        await until(lambda: sink()["delivered"] == 1)
        assert sink()["failures"] == 3
        text = sidecar.metrics.exposition().decode()
        assert 'riskguard_notifier_failures_total{sink="trading-kill-endpoint"} 3.0' in text
    finally:
        await sidecar.stop()
