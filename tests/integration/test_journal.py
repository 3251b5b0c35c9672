"""Halts survive a broker that lost everything: the local journal re-asserts and re-publishes
at start, and a running riskguard publishes its standing states and the gates' data again
when the broker comes back from an outage (empty)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka.errors import OutOfOrderSequenceNumber
from structlog.testing import capture_logs

from riskguard.broker import Broker, free_port
from riskguard.brokers import BrokerKind
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.journal import HaltJournal
from riskguard.killswitch import Transition
from riskguard.settings import Settings
from tests.integration.conftest import OVERFILL, fresh_broker, local_settings


def settings_for(broker: Broker, tmp_path: Path) -> Settings:
    return local_settings(broker, tmp_path)


async def test_halt_survives_broker_restarted_empty(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    broker = fresh_broker(broker_kind)
    try:
        first = Sidecar(settings_for(broker, tmp_path), OVERFILL)
        await first.start()
        await first.manual("halt", "strategy:smars", "alice", "runaway")
        await first.manual("halt", "account:B", "alice", "drill")
        await first.manual("resume", "account:B", "alice", "drill over")
        await first.stop()
        broker.stop()  # Tansu keeps memory only; Apache Kafka's data dir is deleted on stop
        broker.start()  # so every topic is gone
        second = Sidecar(settings_for(broker, tmp_path), OVERFILL)
        await second.start()
        try:
            assert second.engine.killswitch.state("strategy:smars") == "HALTED"
            assert second.engine.killswitch.state("account:B") == "ACTIVE"
            assert second.republished == ["account:B", "strategy:smars"]
            async with Gate(broker.bootstrap_servers, "riskguard.control") as gate:
                deadline = time.monotonic() + 10
                while not gate.health():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                verdict = gate.allows("A", "smars", "X", "buy", False)
                assert not verdict and "by alice: runaway" in verdict.reason
                assert gate.allows("B", "other", "X", "buy", False)
        finally:
            await second.stop()
    finally:
        broker.stop()


async def test_a_running_riskguard_publishes_its_halts_again_when_the_broker_comes_back_empty(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    broker = fresh_broker(broker_kind, port=free_port())  # back on the same port
    sidecar = Sidecar(local_settings(broker, tmp_path, **{"runtime.broker_budget_ms": 1000}),
                      OVERFILL)  # fmt: skip
    with capture_logs() as said:  # the whole run: only the outage says 'broker back'
        try:
            await sidecar.start()
            task = asyncio.create_task(sidecar.run())
            await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
            broker.stop()  # every topic gone (Tansu keeps memory only; Kafka's dir is deleted)
            deadline = time.monotonic() + 20
            while sidecar.checks["broker_reachable"]:  # the outage is noticed (1 s budget)
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            broker.start()
            async with Gate(broker.bootstrap_servers, "riskguard.control") as gate:
                deadline = time.monotonic() + 30
                while not (gate.health() and gate.state("strategy:smars") == "HALTED"):
                    assert time.monotonic() < deadline, "the halt was not published again"
                    await asyncio.sleep(0.05)
                while gate.view.rules is None:  # the gate data follows (retried until taken)
                    assert time.monotonic() < deadline, "the rules were not published again"
                    await asyncio.sleep(0.05)
                verdict = gate.check("A", "smars", "X", "buy", 1.0, 10.0)
                assert not verdict and "by alice: runaway" in verdict.reason
                assert gate.check("A", "other", "X", "buy", 1.0, 10.0)  # the rules are back too
            while sidecar.topics.checks < 2:  # the topics' shape is checked again after the outage
                assert time.monotonic() < deadline, "the topics were not checked after the outage"
                await asyncio.sleep(0.05)
            if broker_kind == "apache-kafka":  # compaction set back if an auto-creation won
                assert sidecar.status()["topics"]["problems"] == []
            sidecar.request_stop()
            assert await task
        finally:
            if not sidecar.stopping:
                await sidecar.stop()
            broker.stop()
    # one return of the broker, seen both as an outage ended and as offsets gone back
    # (the first heartbeat taken shows both): published again once, not twice
    back = [x for x in said if x["event"].startswith("broker back: standing states")]
    assert len(back) == 1, back


async def test_a_broker_back_empty_sooner_than_the_budget_notices_still_gets_the_halts_again(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    """The broker restarts without its data within ``runtime.broker_budget_ms`` (here a
    minute): no outage is seen, yet the control topic is new and empty. The heartbeats'
    offsets going back say so, and the halt and the gates' data are published again."""
    broker = fresh_broker(broker_kind, port=free_port())  # back on the same port
    sidecar = Sidecar(local_settings(broker, tmp_path, **{"runtime.broker_budget_ms": 60_000}),
                      OVERFILL)  # fmt: skip
    try:
        await sidecar.start()
        task = asyncio.create_task(sidecar.run())
        await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
        await asyncio.sleep(2.0)  # heartbeats every 100 ms: the topic holds some records
        broker.stop()
        broker.start()
        async with Gate(broker.bootstrap_servers, "riskguard.control") as gate:
            deadline = time.monotonic() + 30
            while not (gate.health() and gate.state("strategy:smars") == "HALTED"):
                assert time.monotonic() < deadline, "the halt was not published again"
                await asyncio.sleep(0.05)
            while gate.view.rules is None:
                assert time.monotonic() < deadline, "the rules were not published again"
                await asyncio.sleep(0.05)
        assert sidecar.checks["broker_reachable"], "no outage was seen: the budget is a minute"
        rewinds = "riskguard_control_topic_rewinds_total"
        assert (sidecar.metrics.registry.get_sample_value(rewinds) or 0) >= 1
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()
        broker.stop()


def test_journal_newest_wins_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    j = HaltJournal(tmp_path / "j.jsonl")

    def tr(scope: str, to: str, at: int) -> Transition:
        return Transition(
            id=f"{scope}@{at}",
            scope=scope,
            from_="ACTIVE",
            to=to,
            kind="manual",
            ts=at,
            decided_ns=at,
            operator="ops",
            reason="r",
        )

    j.append([tr("firm", "HALTED", 5), tr("account:A", "HALTED", 6)])
    j.append([tr("firm", "ACTIVE", 9)])
    with j.path.open("ab") as f:
        f.write(b'{"id":"torn","scope":"acc')  # a power cut mid-write
    latest = j.load()
    assert j.unreadable == 1
    assert {s: t.to for s, t in latest.items()} == {"firm": "ACTIVE", "account:A": "HALTED"}
    j.compact(latest)
    assert len(j.path.read_bytes().splitlines()) == 2 and j.load() == latest


async def test_a_producer_aiokafka_broke_for_good_is_built_again(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    """aiokafka's idempotent sender ends for good on OutOfOrderSequenceNumber: every later
    send raises it. Broken that way (the accumulator holding the error, as aiokafka's own
    done-callback leaves it), riskguard's producer is built again at its next send: the
    heartbeats go on, the broker is not called lost, and a halt reaches a gate."""
    broker = fresh_broker(broker_kind)
    settings = local_settings(broker, tmp_path, **{"runtime.broker_budget_ms": 1500})
    sidecar = Sidecar(settings, OVERFILL)
    try:
        await sidecar.start()
        task = asyncio.create_task(sidecar.run())
        assert sidecar.producer is not None
        inner = sidecar.producer._producer

        def beats() -> float:
            return sidecar.metrics.registry.get_sample_value("riskguard_heartbeats_total") or 0

        deadline = time.monotonic() + 10
        while beats() == 0:  # heartbeating
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        inner._message_accumulator.fail_all(OutOfOrderSequenceNumber())  # the fault
        await asyncio.sleep(0.3)
        before = beats()
        await asyncio.sleep(2.0)  # past the broker budget (1.5 s)
        assert beats() > before, "no heartbeat since the producer broke"
        assert sidecar.checks["broker_reachable"]
        renewals = sidecar.metrics.registry.get_sample_value("riskguard_producer_renewals_total")
        assert renewals == 1 and sidecar.producer._producer is not inner
        deadline = time.monotonic() + 10
        await sidecar.manual("halt", "strategy:smars", "alice", "runaway")
        async with Gate(broker.bootstrap_servers, "riskguard.control") as gate:
            while not (gate.health() and gate.state("strategy:smars") == "HALTED"):
                assert time.monotonic() < deadline + 10, "the halt did not reach the gate"
                await asyncio.sleep(0.05)
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()
        broker.stop()
