"""Integration fixtures: real Kafka-protocol brokers on free loopback ports.

Every test that takes ``broker`` (or ``settings``, ``sidecar``, ``staffed``, which take it)
runs twice: on the bundled Tansu broker and on a single-node Apache Kafka (KRaft). Each
broker starts once per session and pytest runs all the tests of one before the other;
topics, groups and instance names are unique per test, so tests never see each other's
records. Without Java or the Kafka jars the Apache Kafka runs skip, saying how to enable
them, except where ``CI`` is set: there they fail (``apache_kafka_fixtures``).

Tests that need a broker of their own (to pause it, or restart it empty) take
``broker_kind`` and start one with :func:`fresh_broker`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from riskguard import gate as gate_module
from riskguard.broker import Broker, EmbeddedBroker
from riskguard.brokers import (
    BROKER_KINDS,
    TANSU_FETCH_MAX_WAIT_MS,
    BrokerKind,
    fetch_max_wait_ms,
    make_broker,
)
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import Limits, parse
from riskguard.settings import Settings, load_settings

# Apache Kafka (KRaft, one node) beside Tansu: skips without Java/Maven, fails where CI is set.
from tests.integration.apache_kafka_fixtures import (  # noqa: F401 - fixtures
    apache_kafka,
    kafka_jars,
)

TOKEN = "test-token-" + "x" * 24

#: Put on a test that takes ``broker`` (or ``settings``) to run it on Tansu alone; say
#: why in a comment beside it.
tansu_only = pytest.mark.parametrize("broker", ["tansu"], indirect=True)


@pytest.fixture(scope="session", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's broker of each kind: Tansu, then Apache Kafka (the ``apache_kafka``
    node, which also has a SCRAM listener)."""
    if request.param == "apache-kafka":
        yield request.getfixturevalue("apache_kafka")
        return
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    """Each broker kind in turn, for tests that start brokers of their own
    (:func:`fresh_broker`); Apache Kafka skips or fails as ``kafka_jars`` says."""
    kind: BrokerKind = request.param
    if kind == "apache-kafka":
        request.getfixturevalue("kafka_jars")
    return kind


def fresh_broker(kind: BrokerKind, port: int = 0) -> Broker:
    """A started broker of ``kind``, empty, on ``port`` (0: a free one); stop it yourself."""
    b = make_broker(kind, port)
    b.start()
    return b


def instance_settings(settings: Settings, folder: Path, instance: str) -> Settings:
    """``settings`` for another riskguard instance on the same topics: its own name and
    files under ``folder`` (active-active pairs, group-mode members), ``folder`` its state
    directory (a relative ``scale.checkpoint_dir`` is then its own; an absolute one, shared
    storage, stays shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = msgspec.to_builtins(settings)
    base["runtime"].update(
        instance=instance,
        state_dir=str(folder),
        audit_log=str(folder / "audit.jsonl"),
        journal=str(folder / "journal.jsonl"),
        snapshot_dir=str(folder / "snapshots"),
    )
    return msgspec.convert(base, Settings)


def kafka_overrides(broker: Broker) -> dict[str, object]:
    """Settings riskguard needs on ``broker``: idempotent producers where the broker has
    them (Apache Kafka; Tansu refuses InitProducerId), and the fetch wait that suits it
    (:func:`riskguard.brokers.fetch_max_wait_ms`)."""
    return {
        "kafka.idempotent_producer": broker.kind == "apache-kafka",
        "kafka.fetch_max_wait_ms": fetch_max_wait_ms(broker.kind),
    }


def kafka_toml(broker: Broker) -> str:
    """:func:`kafka_overrides` as lines of a ``[kafka]`` table, for ``riskguard run``."""
    wait = f"fetch_max_wait_ms = {fetch_max_wait_ms(broker.kind)}\n"
    return ("idempotent_producer = true\n" if broker.kind == "apache-kafka" else "") + wait


@pytest.fixture(autouse=True)
def gate_fetch_wait(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates made in a test on Tansu fetch with its wait (1 ms), as a trading system
    on Tansu would configure them; on Apache Kafka they keep the gate's default."""
    params = getattr(request.node, "callspec", None)
    kind = params.params.get("broker", params.params.get("broker_kind")) if params else None
    if kind == "tansu":
        monkeypatch.setattr(gate_module, "FETCH_MAX_WAIT_MS", TANSU_FETCH_MAX_WAIT_MS)


@pytest.fixture
def settings(broker: Broker, tmp_path: Path) -> Settings:
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
            "scale.aggregate_topic": f"aggregate-{run}",
            **kafka_overrides(broker),
            "http.port": 0,
            "http.token": TOKEN,
            "runtime.state_dir": str(tmp_path),
            "runtime.audit_log": str(tmp_path / "audit.jsonl"),
            "runtime.journal": str(tmp_path / "journal.jsonl"),
            "runtime.snapshot_dir": str(tmp_path / "snapshots"),
            "runtime.heartbeat_interval_ms": 100,
            "runtime.instance": f"test-{run}",
        },
    )


def local_settings(broker: Broker, tmp_path: Path, **overrides: object) -> Settings:
    """Default topics on ``broker``, files under ``tmp_path``, fast heartbeats."""
    return load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": broker.bootstrap_servers,
            **kafka_overrides(broker),
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
