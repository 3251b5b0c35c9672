"""The outbox, the one way out for a transition: control topic (awaited) before the rest."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskguard import audit
from riskguard.audit import AuditLog
from riskguard.control.publisher import ControlPublisher
from riskguard.control.reader import ControlView, read_to_end
from riskguard.ingest.outbox import Outbox, OutboxNotOpenError
from riskguard.ingest.runtime import Sidecar
from riskguard.ingest.topics import ensure_topics
from riskguard.journal import HaltJournal
from riskguard.metrics import Metrics
from riskguard.notify.dispatch import Notifier
from riskguard.settings import Settings
from riskguard.vocabulary import Transition, system_alert
from tests.integration.conftest import OVERFILL


def halt(scope: str) -> Transition:
    now = time.time_ns()
    return Transition(
        id=f"{scope}-{now}",
        scope=scope,
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=now,
        decided_ns=now,
        operator="alice",
        reason="drill",
    )


def outbox_at(tmp_path: Path, metrics: Metrics) -> tuple[Outbox, AuditLog, HaltJournal]:
    log = AuditLog(tmp_path / "audit.jsonl")
    journal = HaltJournal(tmp_path / "journal.jsonl")
    return Outbox(journal, metrics, log, Notifier((), metrics)), log, journal


async def test_a_state_change_is_on_the_control_topic_when_send_returns(
    settings: Settings, tmp_path: Path
) -> None:
    k = settings.kafka
    await ensure_topics(k)
    metrics = Metrics()
    outbox, log, journal = outbox_at(tmp_path, metrics)
    producer = AIOKafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all")
    await producer.start()
    await log.start()
    try:
        outbox.open(ControlPublisher(producer, k.control_topic, metrics))
        await outbox.send([halt("account:A")])
        reader = AIOKafkaConsumer(bootstrap_servers=k.bootstrap_servers)
        await reader.start()
        try:
            view = await read_to_end(reader, k.control_topic, ControlView())
        finally:
            await reader.stop()
    finally:
        await log.stop()
        await producer.stop()
    assert view.states["account:A"].state == "HALTED"
    assert list(journal.load()) == ["account:A"]
    assert [r["kind"] for r in audit.read(log.path)] == ["transition"]
    text = metrics.exposition().decode()
    assert 'riskguard_transitions_total{action="halted",rule="manual"} 1.0' in text
    assert outbox.pending() == []


async def test_alerts_need_no_control_topic_and_are_not_journalled(tmp_path: Path) -> None:
    metrics = Metrics()
    outbox, log, journal = outbox_at(tmp_path, metrics)
    await log.start()
    alert = system_alert("limits-reload-rejected", "limits_file", "ACTIVE", reason="bad file")
    await outbox.send([alert])
    await log.stop()
    assert not journal.path.exists()
    assert [r["record"]["rule"] for r in audit.read(log.path)] == ["limits-reload-rejected"]
    text = metrics.exposition().decode()
    assert 'riskguard_transitions_total{action="alert",rule="limits-reload-rejected"} 1.0' in text


async def test_a_state_change_before_open_goes_nowhere(tmp_path: Path) -> None:
    metrics = Metrics()
    outbox, log, journal = outbox_at(tmp_path, metrics)
    await log.start()
    with pytest.raises(OutboxNotOpenError):
        await outbox.send([halt("firm")])
    await log.stop()
    assert not journal.path.exists() and not log.path.exists()
    assert 'rule="manual"' not in metrics.exposition().decode()


async def test_a_send_cancelled_by_a_stop_still_reaches_every_outlet(settings: Settings) -> None:
    """A stop cancels the clock task, perhaps while the broker acknowledges a halt that
    task decided. The halt still reaches the journal, the audit log and the log. (Found
    on Apache Kafka, whose acks take longer: a router-silent firm halt decided just
    before SIGTERM was journalled but never audited, notified or logged.)"""
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    tr = halt("account:C")
    try:
        publisher = sidecar.outbox._control
        assert publisher is not None
        sending = asyncio.create_task(sidecar.outbox.send([tr]))
        for _ in range(1000):  # until the state record is out, its ack not yet in
            if publisher._in_flight:
                break
            await asyncio.sleep(0)
        assert publisher._in_flight, "the send never began"
        sending.cancel()
    finally:
        await sidecar.stop()
    assert sending.cancelled()
    assert sidecar.journal.load()["account:C"].id == tr.id
    audited = [r["record"] for r in audit.read(settings.runtime.audit_log)]
    assert [r["id"] for r in audited if r.get("scope") == "account:C"] == [tr.id]
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await reader.start()
    try:
        view = await read_to_end(reader, settings.kafka.control_topic, ControlView())
    finally:
        await reader.stop()
    assert view.states["account:C"].transition.id == tr.id
