"""Group mode on Apache Kafka: reference data published to every partition reaches every
instance. Two instances share six input partitions; accounts spread over all six; marks,
an instrument (a contract size of 10, priced in EUR) and EUR rates are published with
:func:`riskguard.publish.publish`, so to every partition. Each instance values the
accounts it owns exactly as one engine that applied everything once. A mark sent to one
partition only (what a producer keying reference data by symbol does) reaches one
partition's engine (one per partition, decision 54): every account in another partition
values that symbol at its fill price, and each instance holding one says so in
``/v1/status`` (``scale.marks``) and ``riskguard_unmarked_symbols``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.engine import Engine
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.publish import partition_of, publish
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings

PARTITIONS = 6
SYMBOLS = ("X", "Y", "FESX")
LIMITS = rules_toml(
    'name="gross"\nmetric="gross_notional"\nscope="account"\nmax=1e12\naction="alert"',
    'name="loss"\nmetric="pnl"\nscope="account"\nmin=-1e12\naction="halt"',
).replace("version = 1", 'version = 1\nbase_currency = "USD"')
COMPARED = ("gross_notional", "net_notional", "pnl", "realised_pnl", "unvalued")


def spread_accounts(per_partition: int) -> list[str]:
    """Account names, ``per_partition`` of them in each partition (by their key)."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(v) < per_partition for v in found.values()):
        name = f"acct-{i}"
        part = found[partition_of(name.encode(), PARTITIONS)]
        if len(part) < per_partition:
            part.append(name)
        i += 1
    return sorted(a for v in found.values() for a in v)


def trades(accounts: list[str], symbols: tuple[str, ...], t: int, tag: str) -> list[wire.Event]:
    """A fill of each account in each symbol, 1 ms apart from ``t``; sizes and sides vary."""
    out: list[wire.Event] = []
    for i, account in enumerate(accounts):
        for j, symbol in enumerate(symbols):
            t += 1_000_000
            out.append(
                wire.Fill(
                    ts=t,
                    order_id=f"{tag}-{account}-{symbol}",
                    exec_id=f"x-{tag}-{account}-{symbol}",
                    account=account,
                    strategy=f"s-{account}",
                    symbol=symbol,
                    side="buy" if (i + j) % 3 else "sell",
                    qty=float(1 + (i + 2 * j) % 5),
                    price=100.0 + j,
                )
            )
    return out


def marks(t: int, prices: dict[str, float]) -> list[wire.Event]:
    return [wire.Mark(ts=t, symbol=s, price=p) for s, p in prices.items()]


async def until(what: str, predicate: Callable[[], object], timeout: float) -> None:
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, f"not in {timeout} s: {what}"
        await asyncio.sleep(0.05)


def held(s: Sidecar, account: str) -> Engine:
    """The engine of ``s`` holding ``account``: its partition's (group mode)."""
    assert isinstance(s.flow, PartitionEngines)
    topic = s.settings.kafka.input_topics[0]
    return s.flow.engines[TopicPartition(topic, partition_of(account.encode(), PARTITIONS))]


def values(engine: Engine, account: str) -> dict[str, float]:
    got = engine.scope_values(f"account:{account}")
    return {k: got[k] for k in COMPARED}


@pytest.mark.slow
async def test_reference_data_on_every_partition_values_every_account(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    base = group_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        LIMITS,
        PARTITIONS,
        **{"kafka.fetch_max_wait_ms": 20},
    )
    limits = parse(LIMITS, base.limits)
    sidecars = [
        Sidecar(instance_settings(base, tmp_path / name, name), limits) for name in ("rg-a", "rg-b")
    ]
    topic = base.kafka.input_topics[0]
    accounts = spread_accounts(2)
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers, linger_ms=5)
    try:
        await asyncio.gather(*(s.start() for s in sidecars))
        tasks = [asyncio.create_task(s.run()) for s in sidecars]
        await producer.start()

        def owned(s: Sidecar) -> set[int]:
            return {int(p.rpartition("/")[2]) for p in s.status()["scale"]["owned"]}

        await until("three partitions each", lambda: all(len(owned(s)) == 3 for s in sidecars), 30)
        t = time.time_ns()
        everything: list[wire.Event] = [
            wire.Instrument(ts=t, symbol="FESX", multiplier=10.0, currency="EUR"),
            wire.Fx(ts=t, currency="EUR", rate=1.08),
            wire.Heartbeat(ts=t, source="router"),
            *marks(t + 1_000_000, {"X": 100.0, "Y": 101.0, "FESX": 102.0}),
            *trades(accounts, SYMBOLS, t + 2_000_000, "a"),
            *marks(t + 200_000_000, {"X": 104.5, "Y": 97.25, "FESX": 110.0}),
            wire.Fx(ts=t + 210_000_000, currency="EUR", rate=1.1),
            *trades(accounts, SYMBOLS, t + 220_000_000, "b"),
            *marks(t + 400_000_000, {"X": 103.0, "Y": 99.5, "FESX": 108.0}),
        ]
        records = await publish(producer, topic, everything)
        broadcast = sum(
            isinstance(e, wire.Mark | wire.Fx | wire.Instrument | wire.Heartbeat)
            for e in everything
        )
        assert records == len(everything) + broadcast * (PARTITIONS - 1)

        reference = Engine(limits, event_time=True)
        reference.apply(everything)
        reference.settle()
        want = {a: values(reference, a) for a in accounts}
        owner = {
            a: next(s for s in sidecars if partition_of(a.encode(), PARTITIONS) in owned(s))
            for a in accounts
        }

        def same() -> bool:
            return all(values(held(owner[a], a), a) == pytest.approx(want[a]) for a in accounts)

        await until("each instance values its accounts as one engine does", same, 20)
        for a in accounts:  # the same, said with a diff
            assert values(held(owner[a], a), a) == pytest.approx(want[a]), a
        assert all(want[a]["gross_notional"] > 0 and want[a]["unvalued"] == 0 for a in accounts)
        for s in sidecars:
            assert s.status()["scale"]["marks"]["unmarked"] == 0
            assert owned(s) == {
                partition_of(a.encode(), PARTITIONS) for a in accounts if owner[a] is s
            }

        # What the contract prevents: a mark sent to its key's partition only reaches
        # that partition's engine (decision 54: one per partition, on any member). Every
        # other account values W at its fill price, on the partition's owner too.
        late = time.time_ns()
        await publish(producer, topic, trades(accounts, ("W",), late, "w"))
        await publish(producer, topic, marks(late + 100_000_000, {"W": 150.0}), broadcast=False)
        lucky_part = partition_of(b"W", PARTITIONS)
        lucky = next(s for s in sidecars if lucky_part in owned(s))
        assert isinstance(lucky.flow, PartitionEngines)
        marked = lucky.flow.engines[TopicPartition(topic, lucky_part)]

        def coverage(s: Sidecar) -> dict[str, object]:
            out: dict[str, object] = s.status()["scale"]["marks"]
            return out

        await until(
            "W held on both",
            lambda: all(coverage(s)["symbols"] == len(SYMBOLS) + 1 for s in sidecars),
            20,
        )
        await until(
            "the mark of W reached its partition's engine",
            lambda: marked.position("firm", "W") != 0 and "W" not in marked.coverage()[1],
            20,
        )
        for s in sidecars:  # each holds W in a partition the mark did not reach
            assert coverage(s)["unmarked_symbols"] == ["W"], s.instance
        in_lucky = [a for a in accounts if partition_of(a.encode(), PARTITIONS) == lucky_part]
        assert in_lucky

        def at_mark(a: str) -> bool:
            book = held(lucky, a).book(f"account:{a}", "W")
            return book is not None and book["value"] == pytest.approx(book["qty"] * 150.0)

        await until(  # a mark values books at the next revaluation epoch (docs/limits.md)
            "W valued at its mark in its partition",
            lambda: all(at_mark(a) for a in in_lucky),
            20,
        )
        gauge = "riskguard_unmarked_symbols"
        assert all(s.metrics.registry.get_sample_value(gauge) == 1.0 for s in sidecars)
        for a in accounts:  # W at the mark where it arrived, at the fill price elsewhere
            book = held(owner[a], a).book(f"account:{a}", "W")
            assert book is not None
            price = 150.0 if a in in_lucky else 100.0
            assert book["value"] == pytest.approx(book["qty"] * price), a

        for s in sidecars:
            s.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        await producer.stop()
        for s in sidecars:
            if not s.stopping:
                await s.stop()
