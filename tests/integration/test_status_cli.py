"""``riskguard status`` against a running riskguard on a real broker: what the text form
says must be what is true (the consumer lag, a stalled consume loop, an API bound to
every interface), not only what ``--json`` holds."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from riskguard.cli import main
from riskguard.control.overview import feeds
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_cancel_on_halt import until, with_limits


async def status_text(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``riskguard status --url URL`` in a thread (the API answers on this event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["status", "--url", url])
    return code, capsys.readouterr().out


async def test_the_text_status_shows_the_lag_and_a_stalled_consume_loop(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = with_limits(settings, stall_budget_ms=300, broker_budget_ms=600)
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    try:
        await until(sidecar.health.ready)
        lag = lambda: feeds(sidecar.engine, sidecar.metrics)["consumer_lag"]  # noqa: E731
        await until(lambda: len(lag()) == 4)
        code, calm = await status_text(sidecar.api_url, capsys)
        async with sidecar.intake.lock:  # the loop polls once more, then waits here
            await until(lambda: sidecar.health.stalled_alert is not None)
            stalled_code, stalled = await status_text(sidecar.api_url, capsys)
        await until(sidecar.health.ready)
    finally:
        await sidecar.stop()
    assert code == 0 and "consumer lag 0 (4 partition(s) read to the end)" in calm
    assert "STALLED" not in calm
    assert stalled_code == 1 and "NOT READY (failing: loop_healthy)" in stalled
    (line,) = [x for x in stalled.splitlines() if "CONSUME STALLED" in x]
    assert line.startswith("  CONSUME STALLED (consume-stalled): no poll of the broker for ")
    assert "it is blocked; no heartbeat from this instance" in line
    assert "read to the end) as last measured (no fetch gets through)" in stalled


async def test_an_api_on_every_interface_is_said_in_the_status_and_the_log(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from structlog.testing import capture_logs  # noqa: PLC0415

    base = msgspec.to_builtins(settings)
    base["http"]["host"] = "0.0.0.0"  # the point of the test
    sidecar = Sidecar(msgspec.convert(base, Settings), OVERFILL)
    with capture_logs() as logs:
        await sidecar.start()
    try:
        _, out = await status_text(f"http://127.0.0.1:{sidecar.api.port}", capsys)
    finally:
        await sidecar.stop()
    (warned,) = [x for x in logs if "every interface" in x["event"]]
    assert warned["log_level"] == "warning" and warned["port"] == sidecar.api.port
    assert f"  API on every interface (0.0.0.0:{sidecar.api.port}, http.host)" in out
