"""Right numbers on real flows, live: redelivery, clock skew, corrections (issue 10).

On the bundled broker: a fill delivered twice moves the position once; an event
stamped an hour ahead raises one clock-skew alert and blinds no rule, neither after
an operator's resume nor after a restart; a correction and a bust move the position
as they say; the engine's own refusals are dead-lettered with their bytes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskguard import audit
from riskguard.engine import Result, Skewed
from riskguard.ingest.flow import LATEST_KEYS, AlertLimiter, FlowReport
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.settings import Settings
from riskguard.vocabulary import State

HOUR_NS = 3600 * 10**9

RATE = parse("""
version = 1
[[rule]]
name = "order-rate"
metric = "order_rate"
scope = "strategy"
window_ms = 1000
max = 20
action = "halt"
""")


def ev(**fields: object) -> bytes:
    base = {"ts": time.time_ns(), "account": "A", "strategy": "smars", "symbol": "XYZ"}
    return orjson.dumps({**base, **fields})


async def produce(settings: Settings, *values: bytes) -> None:
    """Send ``values`` in order to one partition (key ``A``), then wait for all acks."""
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await p.start()
    try:
        acks = [await p.send(settings.kafka.input_topics[0], v, key=b"A") for v in values]
        await asyncio.gather(*acks)
    finally:
        await p.stop()


async def until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def get(sidecar: Sidecar, path: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{sidecar.api_url}{path}") as resp:
        assert resp.status == 200
        return await resp.text()


def burst(n: int, tag: str) -> list[bytes]:
    """``n`` new orders of strategy smars, stamped now (the order-rate limit is 20/s)."""
    return [ev(type="new", order_id=f"{tag}{i}", side="buy", qty=1, price=10) for i in range(n)]


def skew_alerts(sidecar: Sidecar) -> float:
    value = sidecar.metrics.registry.get_sample_value(
        "riskguard_transitions_total", {"rule": "clock-skew", "action": "alert"}
    )
    return value or 0.0


def with_settings(settings: Settings, **section: dict[str, object]) -> Settings:
    base = msgspec.to_builtins(settings)
    for name, values in section.items():
        base[name] = {**base.get(name, {}), **values}
    return msgspec.convert(base, Settings)


# redelivery ------------------------------------------------------------------------------
async def test_a_fill_delivered_twice_moves_the_position_once(
    sidecar: Sidecar, settings: Settings
) -> None:
    fill = ev(type="fill", order_id="O1", exec_id="E1", side="buy", qty=100, price=10)
    await produce(settings, ev(type="new", order_id="O1", side="buy", qty=100, price=10))
    await produce(settings, fill)
    await produce(settings, fill)  # the same bytes again: an at-least-once redelivery
    await until(lambda: sidecar.intake.flow.duplicates == 1)
    assert sidecar.engine.position("account:A", "XYZ") == 100.0
    assert sidecar.bad_events == 0
    metrics = await get(sidecar, "/metrics")
    assert "riskguard_duplicate_events_total 1.0" in metrics
    assert 'riskguard_events_total{type="fill"} 1.0' in metrics
    flow = orjson.loads(await get(sidecar, "/v1/status"))["flow"]
    assert (flow["duplicates"], flow["skewed"], flow["late"]) == (1, 0, 0)


# clock skew ------------------------------------------------------------------------------
async def skewed_then_halted(sidecar: Sidecar, settings: Settings) -> None:
    """A mark on time, two orders of account A stamped an hour ahead, then a burst over
    the rate limit."""
    ahead = time.time_ns() + HOUR_NS
    await produce(
        settings,
        ev(type="mark", price=10),
        ev(type="new", order_id="F1", side="buy", qty=1, price=10, ts=ahead),
        ev(type="new", order_id="F2", side="buy", qty=1, price=10, ts=ahead + 1),
    )
    await until(lambda: sidecar.intake.flow.skewed == 2)
    await produce(settings, *burst(25, "b"))
    await until(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")


async def test_an_hour_ahead_alerts_once_and_blinds_no_rate_halt(settings: Settings) -> None:
    settings = with_settings(settings, engine={"max_clock_skew_ms": 60_000})
    sidecar = Sidecar(settings, RATE)
    await sidecar.start()
    try:
        await skewed_then_halted(sidecar, settings)
        halt = sidecar.engine.killswitch.standing()["strategy:smars"]
        assert halt.rule == "order-rate" and halt.value is not None and halt.value > 20
        assert abs(halt.ts - time.time_ns()) < 60 * 10**9  # the corrected time, not +1 h
        assert skew_alerts(sidecar) == 1.0  # two skewed events of one key: one alert
        metrics = await get(sidecar, "/metrics")
        assert "riskguard_skewed_events_total 2.0" in metrics
        batches = sidecar.metrics.registry.get_sample_value("riskguard_clock_skew_seconds_count")
        assert batches in (1.0, 2.0)  # one observation per batch and key
        assert 'riskguard_clock_skew_seconds_bucket{le="900.0"} 0.0' in metrics
        assert f'riskguard_clock_skew_seconds_bucket{{le="3600.0"}} {batches}' in metrics
        flow = orjson.loads(await get(sidecar, "/v1/status"))["flow"]
        assert flow["skewed"] == 2 and flow["clock_skew_alerts"] == 1
        assert flow["max_clock_skew_ms"] == 60_000
        [latest] = flow["latest_skew"]
        assert latest["key"] == "account:A" and 3_500_000 < latest["skew_ms"] <= 3_600_000
        assert latest["origin"].startswith(settings.kafka.input_topics[0] + "/")
    finally:
        await sidecar.stop()
    alerts = [
        r["record"]
        for r in audit.read(settings.runtime.audit_log)
        if r["kind"] == "transition" and r["record"].get("rule") == "clock-skew"
    ]
    assert len(alerts) == 1
    [alert] = alerts
    assert alert["scope"] == "firm" and alert["metric"] == "clock_skew_ms"
    assert alert["limit"] == 60_000.0 and 3_500_000 < alert["value"] <= 3_600_000
    assert "account A (account:A) stamped its events" in alert["reason"]


async def test_a_skewed_first_event_is_bounded_by_the_wall_clock(settings: Settings) -> None:
    """A fresh engine has no clock of its own yet: the wall clock still bounds the first
    event (here a heartbeat source's)."""
    sidecar = Sidecar(settings, RATE)
    await sidecar.start()
    try:
        ahead = time.time_ns() + HOUR_NS
        await produce(settings, ev(type="heartbeat", source="router-1", ts=ahead))
        await until(lambda: sidecar.engine.events_applied == 1)
        assert sidecar.engine.last_event_ns < time.time_ns() + 60 * 10**9
        assert sidecar.intake.flow.skewed == 1 and skew_alerts(sidecar) == 1.0
        [latest] = sidecar.status()["flow"]["latest_skew"]
        assert latest["key"] == "source:router-1"
        await produce(settings, *burst(25, "b"))
        await until(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")
    finally:
        await sidecar.stop()


async def burst_halts_again(sidecar: Sidecar, settings: Settings, tag: str) -> None:
    """The rate window drains, a few orders stay under the limit, a burst halts."""
    await asyncio.sleep(1.2)  # past the 1 s window of the previous burst
    before = sidecar.engine.events_applied
    await produce(settings, *burst(5, f"{tag}-few"))
    await until(lambda: sidecar.engine.events_applied >= before + 5)
    assert sidecar.engine.killswitch.state("strategy:smars") == "ACTIVE"
    await produce(settings, *burst(25, tag))
    await until(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")


@pytest.mark.parametrize("snapshots", [True, False], ids=["snapshot", "replay"])
async def test_rules_work_after_resume_and_restart_past_a_skewed_event(
    settings: Settings, snapshots: bool
) -> None:
    settings = with_settings(settings, runtime={"snapshot_interval_s": 30.0 if snapshots else 0})
    first = Sidecar(settings, RATE)
    await first.start()
    try:
        await skewed_then_halted(first, settings)
        await asyncio.sleep(1.2)
        await first.manual("resume", "strategy:smars", "alice", "runaway stopped")
        await burst_halts_again(first, settings, "after-resume")
        await first.manual("resume", "strategy:smars", "alice", "runaway stopped again")
        await asyncio.sleep(0.3)  # a heartbeat carries the progress reached (recovery reads it)
    finally:
        await first.stop()
    second = Sidecar(settings, RATE)
    await second.start()
    try:
        assert second.engine.killswitch.state("strategy:smars") == "ACTIVE"
        assert (second.checkpoints.loaded_from != "") is snapshots
        await until(lambda: second.engine.events_applied >= (0 if snapshots else 58))
        assert second.engine.killswitch.state("strategy:smars") == "ACTIVE"  # nothing re-decided
        await burst_halts_again(second, settings, "after-restart")
    finally:
        await second.stop()


# corrections and busts -------------------------------------------------------------------
def amend(exec_type: str, exec_id: str, ref: str, **fields: object) -> bytes:
    return ev(type="fill", exec_id=exec_id, exec_type=exec_type, ref_exec_id=ref, **fields)


async def two_fills_corrected_and_busted(sidecar: Sidecar, settings: Settings) -> None:
    """100 @ 10.00 and 40 @ 11 bought; the first corrected to 60 @ 10.05, the second busted."""
    await produce(
        settings,
        ev(type="new", order_id="O1", side="buy", qty=100, price=10.1),
        ev(type="fill", order_id="O1", exec_id="E1", side="buy", qty=100, price=10.0),
        ev(type="new", order_id="O2", side="buy", qty=40, price=11),
        ev(type="fill", order_id="O2", exec_id="E2", side="buy", qty=40, price=11),
    )
    await until(lambda: sidecar.engine.position("account:A", "XYZ") == 140.0)
    await produce(
        settings, amend("correct", "E1c", "E1", order_id="O1", side="buy", qty=60, price=10.05)
    )
    await until(lambda: sidecar.engine.position("account:A", "XYZ") == 100.0)
    await produce(settings, amend("bust", "E2b", "E2", order_id="O2"))
    await until(lambda: sidecar.engine.events_applied == 6)


async def test_a_correction_and_a_bust_move_the_position_as_they_say(
    sidecar: Sidecar, settings: Settings
) -> None:
    await two_fills_corrected_and_busted(sidecar, settings)
    assert sidecar.engine.position("account:A", "XYZ") == 60.0
    assert sidecar.engine.position("strategy:smars", "XYZ") == 60.0
    assert sidecar.bad_events == 0


async def test_after_a_correction_and_a_bust_total_pnl_is_exact(
    sidecar: Sidecar, settings: Settings
) -> None:
    """Reversals are trades at the original price (docs/events.md): the realised and
    unrealised split is that of such trades, their total is exact."""
    await two_fills_corrected_and_busted(sidecar, settings)
    await produce(settings, ev(type="mark", price=12.0))

    def pnl() -> float:
        return sidecar.engine.scope_values("account:A")["pnl"]

    await until(lambda: abs(pnl() - 60 * (12.0 - 10.05)) < 1e-6)
    assert sidecar.engine.scope_values("account:A")["gross_notional"] == pytest.approx(720.0)


async def test_the_engines_refusals_are_dead_lettered_with_their_bytes(
    sidecar: Sidecar, settings: Settings
) -> None:
    unknown = ev(
        type="fill", order_id="O1", exec_id="X2", exec_type="bust", ref_exec_id="never-seen"
    )
    reused = ev(type="new", order_id="O9", side="sell", qty=20, price=2)
    await produce(settings, ev(type="new", order_id="O9", side="buy", qty=10, price=1))
    await produce(settings, unknown, reused)
    await until(lambda: sidecar.bad_events == 2)
    c = AIOKafkaConsumer(
        settings.kafka.dead_letter_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await c.start()
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                got += msgs
    finally:
        await c.stop()
    by_reason = {dict(m.headers)["riskguard.reason"]: m for m in got}
    assert sorted(by_reason) == [b"order_id_reused", b"unknown_exec_ref"]
    for reason, value in ((b"unknown_exec_ref", unknown), (b"order_id_reused", reused)):
        m = by_reason[reason]
        assert (m.value, m.key) == (value, b"A")
        position = dict(m.headers)["riskguard.position"].decode()
        assert position.startswith(settings.kafka.input_topics[0] + "/")
    offsets = sorted(int(dict(m.headers)["riskguard.position"].split(b"@")[1]) for m in got)
    assert offsets == [1, 2]
    for name in ("order_id_reused", "unknown_exec_ref"):
        sample = sidecar.metrics.registry.get_sample_value(
            "riskguard_bad_events_total", {"reason": name}
        )
        assert sample == 1.0


# the alert rate limit and the report, on their own -----------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_lets_one_alert_per_key_per_interval() -> None:
    clock = Clock()
    limiter = AlertLimiter(60.0, clock)
    assert limiter.allow("source:r1") and limiter.allow("account:A")
    clock.now += 59.9
    assert not limiter.allow("source:r1") and not limiter.allow("source:r1")
    clock.now += 0.1
    assert limiter.held("source:r1") == 2 and limiter.held("source:r1") == 0
    assert limiter.allow("source:r1")
    assert not limiter.allow("source:r1")


def test_the_limiter_forgets_keys_whose_interval_passed() -> None:
    clock = Clock()
    limiter = AlertLimiter(60.0, clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.allow(key)
    clock.now += 30
    assert limiter.allow("d") and len(limiter) == 4  # none expired: none forgotten
    clock.now += 30
    assert limiter.allow("e") and len(limiter) == 2  # a, b, c expired: d and e
    assert not limiter.allow("d")


class Firm:
    """The firm's trading state, as a system alert reads it."""

    def __init__(self) -> None:
        self.current: State = "ACTIVE"

    def state(self, scope: str) -> State:
        assert scope == "firm"
        return self.current


def skewed(key: str, ms: float, origin: str = "t/0@1") -> Skewed:
    return Skewed(origin, key, int(ms * 1_000_000), 0)


def test_a_report_alerts_once_per_key_per_batch_and_minute() -> None:
    clock = Clock()
    metrics = Metrics()
    firm = Firm()
    report = FlowReport(metrics, firm, 5000, AlertLimiter(60.0, clock))
    first = Result(
        skewed=[
            skewed("source:router-1", 3_600_000.0, "t/0@7"),
            skewed("source:router-1", 3_600_500.0, "t/0@8"),
            skewed("account:ACC-1", 3_600_001.0),
        ],
        duplicates=3,
        late=2,
    )
    alerts = report.record(first, now_ns=10**18)
    assert [a.rule for a in alerts] == ["clock-skew", "clock-skew"]
    router = alerts[0]
    assert router.value == 3_600_500.0 and router.limit == 5000.0
    assert router.reason is not None and router.reason.startswith(
        "heartbeat source router-1 (source:router-1) stamped its events 3,600,500 ms ahead of "
        "the wall clock; applied at the wall clock. 2 such event(s) in this batch, the "
        "furthest ahead at t/0@8"
    )
    assert len({a.id for a in alerts}) == 2  # two keys, two pages
    assert report.record(Result(skewed=[skewed("source:router-1", 6000.0)])) == []
    clock.now += 60
    firm.current = "HALTED"
    [again] = report.record(Result(skewed=[skewed("source:router-1", 7000.0)]))
    assert again.to == "HALTED" and again.reason is not None
    assert again.reason.endswith("; 1 more batch(es) since the last alert for this key")
    status = report.status()
    assert (status["duplicates"], status["late"], status["skewed"]) == (3, 2, 5)
    assert status["clock_skew_alerts"] == 3
    assert [s["key"] for s in status["latest_skew"]] == ["source:router-1", "account:ACC-1"]
    assert status["latest_skew"][0]["skew_ms"] == 7000.0
    assert metrics.registry.get_sample_value("riskguard_clock_skew_seconds_count") == 4.0
    assert metrics.registry.get_sample_value("riskguard_clock_skew_seconds_sum") == (
        pytest.approx(3_600.5 + 3_600.001 + 6.0 + 7.0)
    )
    assert metrics.registry.get_sample_value("riskguard_skewed_events_total") == 5.0
    assert metrics.registry.get_sample_value("riskguard_duplicate_events_total") == 3.0
    assert metrics.registry.get_sample_value("riskguard_late_events_total") == 2.0


def test_the_status_lists_only_the_latest_keys() -> None:
    report = FlowReport(Metrics(), Firm(), 5000)
    for i in range(LATEST_KEYS + 5):
        report.record(Result(skewed=[skewed(f"account:A{i}", 6000.0)]))
    keys = [s["key"] for s in report.status()["latest_skew"]]
    assert len(keys) == LATEST_KEYS and keys[0] == f"account:A{LATEST_KEYS + 4}"
