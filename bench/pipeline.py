"""Pipeline: riskguard consuming a pre-produced topic, against a bare aiokafka consumer.

On each broker (``--brokers``; default both: the bundled Tansu and a single-node Apache
Kafka with Kafka's own JVM flags, riskguard with the idempotent producer there), N
events of simulated flow are produced once to a 4-partition topic. Then, on that
broker, in the same run and in alternation:

- the floor: a bare ``AIOKafkaConsumer`` assigned all partitions, doing ``getmany``
  plus the same decoder riskguard uses (``riskguard.events.decode``) and nothing
  else, until it has decoded every event;
- riskguard: the real :class:`~riskguard.ingest.runtime.Sidecar` (example limits,
  metrics, control topic, audit) consuming the same topic from the beginning,
  timed from its first poll until it has applied every event.

Both run in this process's event loop, one at a time, with the same
``max_records`` and ``fetch_max_wait_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    add_broker_option,
    broker_kinds,
    kafka_settings,
    progress,
    save,
    start_broker,
    table,
)
from riskguard import log
from riskguard.brokers import BrokerKind
from riskguard.demo.scenario import TradingSim
from riskguard.engine import warm_up
from riskguard.events import Event, encode
from riskguard.events import decode as decode_event
from riskguard.examples import LIMITS
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import load
from riskguard.publish import route
from riskguard.settings import load_settings

PARTITIONS = 4
MAX_RECORDS = 500


def flow_events(n: int) -> list[Event]:
    """``n`` events of normal simulated flow.

    Stamped so that the last event is a second before now: a backlog, as the sidecar
    would find it after a pause, never stamped ahead of the wall clock (which would
    measure the clock-skew path instead).
    """
    sim = TradingSim(seed=5, activity=0.6, start_ns=0)
    sim.runaway_at_ns = None
    events: list[Event] = []
    while len(events) < n:
        events += sim.run(5_000)
    events = events[:n]
    shift = time.time_ns() - 1_000_000_000 - events[-1].ts
    return [msgspec.structs.replace(ev, ts=ev.ts + shift) for ev in events]


def flow(n: int) -> list[tuple[bytes, bytes, int]]:
    """``n`` (key, value, partition) records of :func:`flow_events`, routed as the
    producer contract says for one instance (:func:`riskguard.publish.route`, no
    broadcast): each account's events in its account's partition, in order."""
    out: list[tuple[bytes, bytes, int]] = []
    for ev in flow_events(n):
        key, (partition,) = route(ev, PARTITIONS, broadcast=False)
        out.append((key, encode(ev), partition))
    return out


async def produce(
    bs: str,
    topic: str,
    records: Sequence[tuple[bytes, bytes]] | Sequence[tuple[bytes, bytes, int]],
) -> float:
    """Create ``topic`` and write every record with batched sends; returns seconds taken.

    A record is ``(key, value)``, spread round-robin over the partitions, or ``(key,
    value, partition)``, written to that partition (group mode's producer contract)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    try:
        for lo in range(0, len(records), 50_000):
            chunk = records[lo : lo + 50_000]
            batches = [producer.create_batch() for _ in range(PARTITIONS)]
            pending = []
            for i, record in enumerate(chunk):
                key, value = record[0], record[1]
                p = cast(int, record[2]) if len(record) == 3 else (lo + i) % PARTITIONS
                if batches[p].append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batches[p], topic, partition=p))
                    batches[p] = producer.create_batch()
                    batches[p].append(key=key, value=value, timestamp=None)
            for p, batch in enumerate(batches):
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.gather(*pending)
            progress("produced", lo + len(chunk), len(records))
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def floor(bs: str, topic: str, n: int) -> float:
    """Seconds for a bare consumer to getmany + decode all ``n`` events."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False, fetch_max_wait_ms=1)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            for messages in batch.values():
                for m in messages:
                    decode_event(m.value or b"", "")
                seen += sum(len(v) for v in batch.values())
    finally:
        elapsed = time.perf_counter() - started
        await consumer.stop()
    return elapsed


async def riskguard(kind: BrokerKind, bs: str, topic: str, n: int, tmp: Path) -> tuple[float, int]:
    """Seconds for the sidecar to apply all ``n`` events; and the bad events it counted."""
    run = uuid.uuid4().hex[:6]
    settings = load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": bs,
            "kafka.input_topics": [topic],
            "kafka.group_id": f"bench-{run}",
            "kafka.control_topic": f"ctl-{run}",
            "kafka.dead_letter_topic": f"dl-{run}",
            "kafka.max_records": MAX_RECORDS,
            "http.port": 0,
            "runtime.audit_log": str(tmp / f"audit-{run}.jsonl"),
            "runtime.journal": str(tmp / f"journal-{run}.jsonl"),
            "runtime.snapshot_dir": str(tmp / f"snapshots-{run}"),
            "runtime.snapshot_interval_s": 0,
            "runtime.watch_limits": False,
            **kafka_settings(kind),
        },
    )
    sidecar = Sidecar(settings, load(LIMITS))
    await sidecar.start()
    try:
        while not sidecar.assigned:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        # every offset consumed: events applied, redeliveries and bad events all count
        while sum(sidecar.checkpoints.applied.values()) < n:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        bad = sidecar.bad_events
    finally:
        await sidecar.stop()
    return elapsed, bad


async def main_async(kind: BrokerKind, n: int, repeats: int) -> dict[str, Any]:
    warm_up()
    log.configure(level="error")  # transitions in the flow would log to the table
    broker = start_broker(kind)
    try:
        return await on_broker(kind, broker.bootstrap_servers, n, repeats)
    finally:
        broker.stop()


async def on_broker(kind: BrokerKind, bs: str, n: int, repeats: int) -> dict[str, Any]:
    """Produce ``n`` events to a new topic on ``bs``, then time the floor and riskguard
    ``repeats`` times each, alternating; the best of each counts."""
    with tempfile.TemporaryDirectory() as tmp:
        topic = f"bench-flow-{uuid.uuid4().hex[:6]}"
        records = flow(n)
        produce_s = await produce(bs, topic, records)
        del records
        floors, sidecars = [], []
        bad = 0
        for i in range(repeats):
            floors.append(await floor(bs, topic, n))
            s, bad = await riskguard(kind, bs, topic, n, Path(tmp))
            sidecars.append(s)
            progress("repeats", i + 1, repeats)
    f, r = min(floors), min(sidecars)
    return {
        "broker": kind,
        "events": n,
        "partitions": PARTITIONS,
        "max_records": MAX_RECORDS,
        "produce_events_per_s": n / produce_s,
        "floor_events_per_s": n / f,
        "riskguard_events_per_s": n / r,
        "ratio": f / r,
        "bad_events": bad,
        "repeats": repeats,
        "target_ratio": 0.9,
    }


def report(runs: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("pipeline (broker -> state)", "events", "events/s")]
    for result in runs:
        events = f"{result['events']:,}"
        rows += [
            (f"-- {result['broker']}", "", ""),
            ("  floor: getmany + decode", events, f"{result['floor_events_per_s']:,.0f}"),
            ("  riskguard sidecar", events, f"{result['riskguard_events_per_s']:,.0f}"),
            ("  ratio riskguard / floor (target >= 0.9)", "", f"{result['ratio']:.2f}"),
        ]
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="50k events, one repeat")
    add_broker_option(parser)
    args = parser.parse_args(argv)
    n, repeats = (50_000, 1) if args.quick else (args.events, args.repeats)
    runs = [asyncio.run(main_async(kind, n, repeats)) for kind in broker_kinds(args.brokers)]
    print(report(runs))
    print(f"wrote {save('pipeline', {'runs': runs})}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
