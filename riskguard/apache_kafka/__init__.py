"""Apache Kafka for tests and local work: jars from Maven Central, one KRaft node.

``dist`` finds Java and fetches the pinned Kafka jars (``pom.xml``); ``server``
runs a single broker+controller on loopback ports. The bundled Tansu broker
(:mod:`riskguard.broker`) stays the default everywhere; this needs Java 17+.
"""

from riskguard.apache_kafka.dist import (
    HOW_TO_ENABLE,
    KafkaUnavailableError,
    cache_dir,
    classpath,
    fetch,
    fetched,
    java_binary,
    kafka_version,
)
from riskguard.apache_kafka.server import FAST_START_JVM, TEST_SERVER_CONFIG, ApacheKafkaBroker

__all__ = [
    "FAST_START_JVM",
    "HOW_TO_ENABLE",
    "TEST_SERVER_CONFIG",
    "ApacheKafkaBroker",
    "KafkaUnavailableError",
    "cache_dir",
    "classpath",
    "fetch",
    "fetched",
    "java_binary",
    "kafka_version",
]
