"""Out-of-process observers for the latency bench; each prints one JSON line per sighting.

``python -m bench.probe gate BOOTSTRAP CONTROL_TOPIC SCOPE``
    Embeds :class:`riskguard.gate.Gate` like a trading system would. Prints
    ``{"ready": true}`` once the gate is healthy, then ``{"state", "seen_ns",
    "decided_ns", "refused"}`` each time SCOPE's published state changes:
    ``seen_ns`` is when the gate applied the record, ``refused`` whether
    ``allows()`` then refused an order on that scope.
``python -m bench.probe watch BOOTSTRAP TOPIC PARTITIONS MARKER``
    A bare consumer (the floor) of the same input topic riskguard reads, from its
    end: prints ``{"value", "seen_ns"}`` for each record whose value contains
    MARKER, and nothing for the rest of the flow.

Both consume with ``fetch_max_wait_ms=1``, like riskguard's own consumer.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from riskguard.gate import Gate


def emit(obj: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


async def gate(bootstrap: str, topic: str, scope: str) -> None:
    account = scope.partition(":")[2]
    async with Gate(bootstrap, topic, heartbeat_timeout_ms=2000, fetch_max_wait_ms=1) as g:
        while not g.health():
            await asyncio.sleep(0.01)
        emit({"ready": True})
        state = g.state(scope)
        while True:
            now = g.state(scope)
            if now != state:
                state = now
                record = g.view.states[scope]
                verdict = g.allows(account, "probe", "PROBE", "buy", reduces_position=False)
                emit(
                    {
                        "state": state,
                        "seen_ns": g.seen_ns[scope],
                        "decided_ns": record.transition.decided_ns,
                        "refused": not verdict.allowed,
                    }
                )
            await asyncio.sleep(0.002)  # seen_ns is stamped on arrival; this only notices it


async def watch(bootstrap: str, topic: str, partitions: int, marker: bytes) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=1
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the end offsets now, not at the first fetch
        await consumer.position(tp)
    emit({"ready": True})
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=500)
            seen = time.time_ns()
            for messages in batch.values():
                for m in messages:
                    if m.value is not None and marker in m.value:
                        emit({"value": m.value.decode(), "seen_ns": seen})
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["gate"] and len(args) == 4:
        asyncio.run(gate(args[1], args[2], args[3]))
    elif args[:1] == ["watch"] and len(args) == 5:
        asyncio.run(watch(args[1], args[2], int(args[3]), args[4].encode()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
