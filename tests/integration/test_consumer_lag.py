"""riskguard_consumer_lag_messages (and /v1/status consumer_lag) tell the truth about
every input partition riskguard reads, and about those only: the lag of each assigned
partition is taken from the high watermark of every poll, empty polls included (a
broker answering with no records while a partition holds more is lag, not quiet), and
a partition that moved to another group member has no series left behind."""

from __future__ import annotations

import time
from pathlib import Path

from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.control.overview import feeds
from riskguard.ingest.runtime import Sidecar
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_group_restart import LIMITS
from tests.integration.test_scale_out import flow, produce, until


def shown(sidecar: Sidecar) -> dict[str, int]:
    lag = feeds(sidecar.engine, sidecar.metrics)["consumer_lag"]  # as /v1/status shows it
    return {f"{p['topic']}/{p['partition']}": p["messages"] for p in lag}


def owned(sidecar: Sidecar) -> set[str]:
    return {f"{tp.topic}/{tp.partition}" for tp in sidecar.assigned}


async def test_an_idle_input_shows_every_partition_read_to_its_end(sidecar: Sidecar) -> None:
    # no event yet: no batch ever came, and every partition is still at its end (0)
    await until("partitions assigned", lambda: sidecar.assigned, 30)
    await until("every partition's lag shown", lambda: set(shown(sidecar)) == owned(sidecar), 10)
    assert set(shown(sidecar).values()) == {0}
    assert len(shown(sidecar)) == len(sidecar.assigned) == 4


async def test_a_partition_handed_to_another_member_leaves_no_lag_behind(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    base = group_settings(apache_kafka.bootstrap_servers, tmp_path, LIMITS, 6)
    settings = {n: instance_settings(base, tmp_path / n, n) for n in ("rg-a", "rg-b")}
    a = Sidecar(settings["rg-a"])
    await a.start()
    b: Sidecar | None = None
    try:
        await until("a owns all six", lambda: len(a.assigned) == 6, 60)
        events = flow(time.time_ns(), 5, "a")  # every account: every partition
        await produce(base, events)
        await until("a applied them", lambda: a.flow.events_applied == len(events), 30)
        await until("a shows six partitions", lambda: len(shown(a)) == 6, 10)
        b = Sidecar(settings["rg-b"])
        await b.start()
        spread = lambda: len(a.assigned) == len(b.assigned) == 3  # noqa: E731
        await until("three partitions each", spread, 60)
        # each shows the lag of what it reads, and nothing of what it gave away: a kept
        # partition (its state untouched, nothing to read) once a fetch reported its
        # high watermark again, after Apache Kafka's fetch wait (500 ms)
        await until(
            "each shows the lag of its partitions only",
            lambda: set(shown(a)) == owned(a) and set(shown(b)) == owned(b),
            10,
        )
        assert not owned(a) & owned(b)
    finally:
        for m in (a, b):
            if m is not None and not m.stopping:
                await m.stop()
