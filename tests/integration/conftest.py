"""Integration fixtures: a real Kafka-protocol broker (Tansu) on a free loopback port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from riskguard.broker import EmbeddedBroker
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import Limits, parse
from riskguard.settings import Settings, load_settings

# Apache Kafka (KRaft, one node) beside Tansu: skips without Java/Maven, fails where CI is set.
from tests.integration.apache_kafka_fixtures import (  # noqa: F401 - fixtures
    apache_kafka,
    kafka_jars,
)

TOKEN = "test-token-" + "x" * 24


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings with topics unique to the test, an ephemeral API port and a token."""
    run = uuid.uuid4().hex[:8]
    return load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": broker.bootstrap_servers,
            "kafka.input_topics": [f"events-{run}"],
            "kafka.group_id": f"riskguard-{run}",
            "kafka.control_topic": f"control-{run}",
            "kafka.dead_letter_topic": f"dead-{run}",
            "http.port": 0,
            "http.token": TOKEN,
            "runtime.audit_log": str(tmp_path / "audit.jsonl"),
            "runtime.journal": str(tmp_path / "journal.jsonl"),
            "runtime.snapshot_dir": str(tmp_path / "snapshots"),
            "runtime.heartbeat_interval_ms": 100,
            "runtime.instance": f"test-{run}",
        },
    )


def local_settings(broker: EmbeddedBroker, tmp_path: Path, **overrides: object) -> Settings:
    """Default topics on ``broker``, files under ``tmp_path``, fast heartbeats."""
    return load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": broker.bootstrap_servers,
            "http.port": 0,
            "runtime.audit_log": str(tmp_path / "audit.jsonl"),
            "runtime.journal": str(tmp_path / "journal.jsonl"),
            "runtime.snapshot_dir": str(tmp_path / "snapshots"),
            "runtime.heartbeat_interval_ms": 100,
            **overrides,
        },
    )


OVERFILL = parse("""
version = 1
[[rule]]
name = "overfill"
metric = "parent_overfill_ratio"
scope = "strategy"
max = 1.0
action = "halt"
""")


@pytest.fixture
async def sidecar(settings: Settings) -> AsyncIterator[Sidecar]:
    s = Sidecar(settings, OVERFILL)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def staffed(settings: Settings, tmp_path: Path) -> AsyncIterator[Sidecar]:
    """A sidecar whose API knows ``tests.integration.people.PEOPLE`` (a users file with
    one person per role; four-eyes at firm and account) and the break-glass token."""
    from tests.integration.people import with_people  # noqa: PLC0415 - it imports this module

    s = Sidecar(with_people(settings, tmp_path), OVERFILL)
    await s.start()
    yield s
    await s.stop()


def limits_with(text: str) -> Limits:
    return parse(text)
