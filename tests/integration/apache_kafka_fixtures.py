"""Apache Kafka fixtures: one KRaft node per session, beside the Tansu broker.

The node starts when Java 17+ is installed and the jars are fetched (or Maven is
there to fetch them now). Otherwise the tests that use it skip, saying how to enable
them, except where the ``CI`` environment variable is set: there a missing Apache
Kafka fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riskguard.apache_kafka import (
    HOW_TO_ENABLE,
    ApacheKafkaBroker,
    KafkaUnavailableError,
    fetch,
    java_binary,
)
from riskguard.settings import Settings, load_settings

SCRAM_USER = "riskguard"
SCRAM_PASSWORD = "scram-" + uuid.uuid4().hex


def in_ci() -> bool:
    """``CI`` is set to anything but an explicit no (``.ci/run`` sets it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def kafka_jars() -> Path:
    """Java is there and the Kafka jars are cached (fetched now if Maven is there).

    Skips when they cannot be had, or fails where ``CI`` is set. Returns the cache.
    """
    try:
        java_binary()
        return fetch()  # no-op when the jars are cached
    except KafkaUnavailableError as exc:
        message = f"Apache Kafka unavailable: {exc}"
        if in_ci():
            pytest.fail(f"{message} (CI is set: these tests may not skip)", pytrace=False)
        pytest.skip(f"{message}. To enable these tests: {HOW_TO_ENABLE}")


@pytest.fixture(scope="session")
def apache_kafka(kafka_jars: Path) -> Iterator[ApacheKafkaBroker]:
    """A single-node Apache Kafka with a SCRAM listener (user ``SCRAM_USER``)."""
    broker = ApacheKafkaBroker(scram_users={SCRAM_USER: SCRAM_PASSWORD})
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def kafka_settings(bootstrap_servers: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a sidecar on Apache Kafka: topics unique to the call, the
    idempotent producer on (Apache Kafka's default), fast heartbeats and commits, every
    file under ``tmp_path`` (its state directory)."""
    run = uuid.uuid4().hex[:8]
    return load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": bootstrap_servers,
            "kafka.input_topics": [f"events-{run}"],
            "kafka.group_id": f"riskguard-{run}",
            "kafka.control_topic": f"control-{run}",
            "kafka.dead_letter_topic": f"dead-{run}",
            "scale.aggregate_topic": f"aggregate-{run}",
            "kafka.idempotent_producer": True,
            "http.port": 0,
            "runtime.state_dir": str(tmp_path),
            "runtime.audit_log": str(tmp_path / "audit.jsonl"),
            "runtime.journal": str(tmp_path / "journal.jsonl"),
            "runtime.snapshot_dir": str(tmp_path / "snapshots"),
            "runtime.heartbeat_interval_ms": 100,
            "runtime.commit_interval_ms": 200,
            "runtime.instance": f"kafka-{run}",
            **overrides,
        },
    )


def group_settings(
    bootstrap_servers: str, tmp_path: Path, limits: str, partitions: int, **overrides: Any
) -> Settings:
    """:func:`kafka_settings` for a group-mode member: ``limits`` (TOML) written to
    ``tmp_path/limits.toml``, ``partitions`` input partitions, Apache Kafka's smallest
    session timeout (6 s) with 0.5 s heartbeats, no limits file watch; ``overrides``
    last. Give each member its own name and files (``instance_settings``)."""
    path = tmp_path / "limits.toml"
    path.write_text(limits)
    return kafka_settings(
        bootstrap_servers,
        tmp_path,
        **{
            "limits": str(path),
            "kafka.input_partitions": partitions,
            "scale.mode": "group",
            "scale.session_timeout_ms": 6000,
            "scale.heartbeat_interval_ms": 500,
            "runtime.watch_limits": False,
            **overrides,
        },
    )
