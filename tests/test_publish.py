"""The producer contract's routing (riskguard.publish): account events to their account's
partition, as Kafka's default partitioner places the key; reference data and heartbeats
to every partition unless told otherwise."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from riskguard import events as wire
from riskguard.publish import Route, partition_of, route
from tests.builders import fill, fx, heartbeat, instrument, mark, position


def test_account_events_go_to_the_partition_kafka_gives_their_account() -> None:
    for account in ("A", "ACC-EQ1", "acct-07", "Ω"):
        ev = fill("o1", account=account)
        want = DefaultPartitioner()(account.encode(), list(range(12)), [])
        assert route(ev, 12) == Route(account.encode(), (want,))
        assert route(position(5, account=account), 12).partitions == (want,)
    spread = {partition_of(f"acct-{i}".encode(), 6) for i in range(60)}
    assert spread == set(range(6))


@pytest.mark.parametrize(
    ("event", "key"),
    [
        (mark(100.0, symbol="AAPL"), b"AAPL"),
        (fx("EUR", 1.08), b"EUR"),
        (instrument("FESX", 10.0, "EUR"), b"FESX"),
        (heartbeat("router-1"), b"router-1"),
    ],
)
def test_reference_data_and_heartbeats_go_to_every_partition(event: wire.Event, key: bytes) -> None:
    assert route(event, 6) == Route(key, (0, 1, 2, 3, 4, 5))
    only = route(event, 6, broadcast=False)
    assert only == Route(key, (partition_of(key, 6),))


def test_a_topic_without_partitions_is_refused() -> None:
    for event in (mark(1.0), fill("o1")):
        with pytest.raises(ValueError, match="at least one partition"):
            route(event, 0)
