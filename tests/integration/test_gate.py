"""The gate fails closed, understands the hierarchy, reads standing halts late, hands over
cancel requests (once per process), cancels on disconnect, and checks orders before sending."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from riskguard.broker import free_port
from riskguard.brokers import BrokerKind
from riskguard.control.records import RuleRecord
from riskguard.gate import CancelRequest, Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests import gate_records as records
from tests.gate_records import Message
from tests.integration.conftest import OVERFILL, fresh_broker, local_settings

MS = 1_000_000


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


def publish_from_another_thread(settings: Settings, *messages: Message) -> None:
    """Create riskguard's topics and write ``messages`` to the control topic from another
    thread, while this thread's event loop (the gate's and riskguard's) stays blocked."""
    from riskguard.ingest.topics import ensure_topics  # noqa: PLC0415

    async def publish() -> None:
        await ensure_topics(settings.kafka)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(settings.kafka.control_topic, value, key=key)
        finally:
            await producer.stop()

    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, publish()).result()


async def test_a_running_gate_reads_the_topic_again_when_the_broker_comes_back_empty(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    """The broker restarts without its data while a gate follows the control topic:
    riskguard re-creates the topic, whose offsets start again under the gate's position.
    The gate reads the new topic from its beginning, at once: a halt made after the
    restart reaches it, so does one written before the gate's first fetch from the new
    topic (aiokafka's default reset, "latest", jumped past it), and the halt it knew
    before stays known."""
    broker = fresh_broker(broker_kind, port=free_port())  # back on the same port
    sidecar = Sidecar(local_settings(broker, tmp_path, **{"runtime.broker_budget_ms": 1000}),
                      OVERFILL)  # fmt: skip
    try:
        await sidecar.start()
        task = asyncio.create_task(sidecar.run())
        await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
        async with Gate(broker.bootstrap_servers, "riskguard.control") as gate:
            await until(lambda: gate.state("strategy:smars") == "HALTED")
            # records riskguard does not write (skipped, counted as unreadable) take the
            # gate's position past what the new topic gets in this test (heartbeats: 10/s)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            try:
                for i in range(300):
                    await producer.send("riskguard.control", b"filler", key=b"filler-%d" % i)
                await producer.flush()
            finally:
                await producer.stop()
            await until(lambda: gate.view.unreadable == 300)
            assert gate.rewinds == 0  # a topic followed to its end is no rewind
            broker.stop()  # every topic gone (Tansu keeps memory only; Kafka's dir is deleted)
            await until(lambda: not sidecar.checks["broker_reachable"], timeout=20)
            broker.start()  # this loop blocked since: the gate has not fetched from it yet
            first = records.state(records.transition("account:D", "HALTED", time.time_ns()))
            publish_from_another_thread(sidecar.settings, first)
            await until(lambda: sidecar.checks["broker_reachable"], timeout=20)
            await sidecar.manual("halt", "account:B", "bob", "after the restart")
            restarted = time.monotonic()
            await until(lambda: gate.state("account:B") == "HALTED" and gate.health().allowed,
                        timeout=5)  # fmt: skip
            assert time.monotonic() - restarted < 3
            assert gate.state("strategy:smars") == "HALTED"
            assert gate.state("account:D") == "HALTED"
            verdict = gate.check("B", "other", "X", "buy", 1.0, 10.0)
            assert not verdict and "by bob: after the restart" in verdict.reason
            assert gate.rewinds >= 1
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()
        broker.stop()


# issue 11: cancel requests and pre-trade checks, records written by a plain producer -------
class Control:
    """Writes control records as riskguard would (riskguard's side is tested on its own),
    with a heartbeat every 100 ms while ``beating``."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.control_topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=0
        )
        self.beating = True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        self._task = asyncio.create_task(self._pulse())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.producer.stop()

    async def send(self, *messages: Message) -> None:
        for key, value in messages:
            await self.producer.send_and_wait(self.topic, value, key=key)

    async def _pulse(self) -> None:
        while True:
            if self.beating:
                await self.send(records.heartbeat())
            await asyncio.sleep(0.1)


@pytest.fixture
async def control(settings: Settings) -> AsyncIterator[Control]:
    from riskguard.ingest.topics import ensure_topics  # noqa: PLC0415

    await ensure_topics(settings.kafka)
    c = Control(settings)
    await c.start()
    yield c
    await c.stop()


class Router:
    def __init__(self) -> None:
        self.requests: list[CancelRequest] = []

    async def on_cancel(self, request: CancelRequest) -> None:
        await asyncio.sleep(0)  # an async router, as most are
        self.requests.append(request)

    def parts(self) -> set[tuple[str, int]]:
        return {(r.halt_id, r.part) for r in self.requests}


def gate_for(settings: Settings, **options: Any) -> Gate:
    return Gate(settings.kafka.bootstrap_servers, settings.kafka.control_topic, **options)


async def test_late_gate_delivers_standing_cancels_and_a_restarted_one_does_not_repeat(
    settings: Settings, control: Control
) -> None:
    now = time.time_ns()
    first = records.transition("strategy:s1", "HALTED", now - 60_000 * MS)
    resumed = records.transition("strategy:s1", "ACTIVE", now - 50_000 * MS, "HALTED")
    second = records.transition("strategy:s1", "HALTED", now - 40_000 * MS)
    account = records.transition("account:A1", "HALTED", now - 30_000 * MS)
    lifted = records.transition("symbol:XYZ", "HALTED", now - 20_000 * MS)
    lift = records.transition("symbol:XYZ", "ACTIVE", now - 10_000 * MS, "HALTED")
    await control.send(
        records.state(first),
        *(records.cancel(first, p, 3, [records.order(f"o{p}")]) for p in range(3)),
        records.state(resumed),
        records.state(second),
        records.cancel(second, 0, 1, [records.order("o9")]),
        records.cancel(account, 1, 2, [records.order("a2")]),  # before its state record
        records.state(account),
        records.cancel(account, 0, 2, [records.order("a1")]),
        records.state(lifted),
        records.cancel(lifted, 0, 1, [records.order("y1")]),
        records.state(lift),
    )
    standing = {(second.id, 0), (account.id, 0), (account.id, 1)}
    router = Router()
    async with gate_for(settings, on_cancel=router.on_cancel) as late:
        await until(lambda: router.parts() == standing)
        assert late.cancels_delivered == 3
        assert {r.orders[0].order_id for r in router.requests} == {"o9", "a1", "a2"}
    # a restarted gate (a new Gate object, the same router, same process) repeats nothing...
    async with gate_for(settings, on_cancel=router.on_cancel) as restarted:
        await until(lambda: restarted.health().allowed)
        assert restarted.cancels_delivered == 0 and len(router.requests) == 3
        # ...and still hands over a halt that comes after it started
        fresh = records.transition("firm", "HALTED", time.time_ns())
        await control.send(records.state(fresh), records.cancel(fresh, 0, 1, [records.order("f1")]))
        await until(lambda: (fresh.id, 0) in router.parts())
        assert len(router.requests) == 4
    # a router that has not been told (a new process, a new router object) is told everything
    newcomer = Router()
    async with gate_for(settings, on_cancel=newcomer.on_cancel):
        await until(lambda: newcomer.parts() == standing | {(fresh.id, 0)})


async def test_live_cancel_waits_for_its_state_and_survives_a_failing_router(
    settings: Settings, control: Control
) -> None:
    calls: list[CancelRequest] = []

    def on_cancel(request: CancelRequest) -> None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("venue session down")

    async with gate_for(settings, on_cancel=on_cancel) as gate:
        await until(lambda: gate.health().allowed)
        halt = records.transition("strategy:s2", "HALTED", time.time_ns())
        await control.send(records.cancel(halt, 0, 1, [records.order("o1", strategy="s2")]))
        await asyncio.sleep(0.5)
        assert calls == []  # its state record has not been read: not standing yet
        await control.send(records.state(halt))
        await until(lambda: len(calls) == 1)
        assert gate.callback_errors == 1
        ro = records.transition("account:A7", "REDUCE_ONLY", time.time_ns())
        await control.send(
            records.state(ro),
            records.cancel(ro, 0, 1, [records.order("o2", account="A7")], kind="reduce_only"),
        )
        await until(lambda: len(calls) == 2)  # the gate went on after the error
        assert (calls[1].kind, calls[1].scope, calls[1].orders[0].order_id) == (
            "reduce_only",
            "account:A7",
            "o2",
        )
        assert gate.health().allowed


async def test_cancel_on_disconnect_fires_once_then_rearms(
    settings: Settings, control: Control
) -> None:
    router = Router()
    gate = gate_for(
        settings, on_cancel=router.on_cancel, heartbeat_timeout_ms=400, cancel_on_disconnect_ms=300
    )
    await gate.start()
    try:
        await until(lambda: gate.health().allowed)
        await asyncio.sleep(1.0)  # healthy for longer than 300 ms: nothing
        assert router.requests == []
        control.beating = False
        silenced = time.monotonic()
        await until(lambda: len(router.requests) == 1)
        assert time.monotonic() - silenced >= 0.3  # failed closed for 300 ms, not sooner
        await asyncio.sleep(1.0)
        (request,) = router.requests  # once per outage
        assert (request.kind, request.scope, request.orders) == ("disconnect", "firm", ())
        assert "fail closed: riskguard silent" in request.reason
        control.beating = True
        await until(lambda: gate.health().allowed)
        await asyncio.sleep(0.2)
        control.beating = False
        await until(lambda: len(router.requests) == 2)  # re-armed by the healthy spell
        assert router.requests[1].halt_id != request.halt_id
    finally:
        await gate.stop()


async def test_check_refuses_before_sending_and_follows_a_limits_reload(
    settings: Settings, control: Control
) -> None:
    async with gate_for(settings) as gate:
        await until(lambda: gate.health().allowed)
        blind = gate.check("A1", "s1", "XYZ", "buy", 10.0, 100.0)
        assert not blind and blind.reason == "fail closed: no per-order rules from riskguard yet"
        assert gate.allows("A1", "s1", "XYZ", "buy", False)  # allows() needs no rules
        now = time.time_ns()
        await control.send(  # in topic order: the mark is read before the rules
            records.mark("XYZ", 100.0, now),
            records.rules(records.FAT, records.NOTIONAL, records.COLLAR, records.BIG, ts=now),
        )
        await until(lambda: gate.check("A1", "s1", "XYZ", "buy", 10.0, 100.0).allowed)
        refused = {
            "fat-finger": gate.check("A1", "s1", "XYZ", "buy", 5000.0, 100.0),
            "notional": gate.check("A1", "s1", "XYZ", "buy", 900.0, 120.0),
            "collar": gate.check("A1", "s1", "XYZ", "sell", 10.0, 106.0),
        }
        assert {name: (v.allowed, v.rule) for name, v in refused.items()} == {
            name: (False, name) for name in refused
        }
        assert refused["notional"].value == 108_000.0 and refused["notional"].limit == 100_000.0
        alert = gate.check("A1", "s1", "XYZ", "buy", 600.0)  # market: priced at the mark
        assert alert.allowed and alert.alerts == ("big-order",)
        # REDUCE_ONLY, judged from riskguard's published position
        ro = records.transition("strategy:s1", "REDUCE_ONLY", time.time_ns())
        await control.send(
            records.state(ro), records.position("strategy:s1", "XYZ", 100.0, ro.decided_ns)
        )
        await until(lambda: not gate.check("A1", "s1", "XYZ", "buy", 10.0, 100.0))
        increase = gate.check("A1", "s1", "XYZ", "buy", 10.0, 100.0)
        assert (increase.state, increase.scope) == ("REDUCE_ONLY", "strategy:s1")
        assert gate.check("A1", "s1", "XYZ", "sell", 50.0, 100.0).state == "REDUCE_ONLY"
        assert not gate.check("A1", "s1", "XYZ", "sell", 150.0, 100.0)  # a flip
        assert gate.check("A1", "s2", "XYZ", "buy", 10.0, 100.0).state == "ACTIVE"
        # a limits reload: riskguard re-publishes the rules
        tighter = RuleRecord("fat-finger", "order_qty", "strategy", "halt", max=500.0)
        await control.send(records.rules(tighter, ts=time.time_ns(), sha="b" * 64))
        await until(lambda: not gate.check("A1", "s2", "XYZ", "buy", 800.0, 100.0))
        reloaded = gate.check("A1", "s2", "XYZ", "buy", 800.0, 100.0)
        assert (reloaded.rule, reloaded.limit) == ("fat-finger", 500.0)
        assert gate.check("A1", "s2", "XYZ", "buy", 400.0, 300.0).allowed  # notional, collar gone
        # counted by cause (the waits above called check() too: at least once each)
        assert gate.refusals["rule:notional"] == 1 and gate.refusals["rule:collar"] == 1
        assert gate.refusals["rule:fat-finger"] >= 2 and gate.refusals["fail_closed"] >= 1
        assert gate.refusals["REDUCE_ONLY"] >= 2
