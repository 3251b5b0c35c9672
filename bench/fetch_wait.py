"""Event-to-decision latency against ``fetch_max_wait_ms``, beside a bare round-trip floor.

For each broker (``--brokers``; default both) and each fetch wait, in one run: (a) the
floor, a plain producer and a plain consumer doing a produce -> receive round trip;
(b) riskguard, from the offending event's produce to the halt decided (engine clock)
and to a gate holding it, with riskguard and the gate both fetching with that wait;
and the broker's CPU share (its process's user + system time over the wall time)
during (b).

Why: Tansu holds a fetch for about half its ``fetch_max_wait_ms`` even when data
arrives, so riskguard's default is 1 ms. Apache Kafka answers a fetch as soon as data
arrives (``fetch_min_bytes`` 1), so there a longer wait should cost no latency and
save the broker the empty fetches: this measures whether it does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import add_broker_option, broker_kinds, kafka_settings, save, start_broker, table
from riskguard import log
from riskguard.brokers import BrokerKind
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.settings import load_settings

LIMITS = parse(
    'version = 1\n[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "strategy"\n'
    'max = 1000\naction = "halt"\n'
)


def pct(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "p50": statistics.median(s),
        "p99": s[min(len(s) - 1, round(0.99 * (len(s) - 1)))],
        "max": s[-1],
    }


async def floor(bs: str, wait_ms: int, n: int) -> list[float]:
    topic = f"floor-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])  # the bundled broker does not auto-create
    await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    await p.start()
    await p.send_and_wait(topic, b"warm")
    c = AIOKafkaConsumer(bootstrap_servers=bs, fetch_max_wait_ms=wait_ms)
    await c.start()
    c.assign([TopicPartition(topic, 0)])
    await c.seek_to_beginning(TopicPartition(topic, 0))
    while not await c.getmany(timeout_ms=1000):  # the warm-up record
        pass
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await p.send(topic, b"x")
        while not await c.getmany(timeout_ms=1000):
            pass
        out.append((time.perf_counter() - t0) * 1000)
    await c.stop()
    await p.stop()
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def riskguard(
    kind: BrokerKind, bs: str, wait_ms: int, n: int, tmp: str
) -> tuple[list[float], list[float]]:
    run = uuid.uuid4().hex[:6]
    settings = load_settings(
        env={},
        overrides={
            **kafka_settings(kind),
            "kafka.bootstrap_servers": bs,
            "kafka.input_topics": [f"ev-{run}"],
            "kafka.control_topic": f"ctl-{run}",
            "kafka.dead_letter_topic": f"dl-{run}",
            "kafka.fetch_max_wait_ms": wait_ms,
            "http.port": 0,
            "runtime.audit_log": str(Path(tmp) / f"audit-{run}.jsonl"),
            "runtime.journal": str(Path(tmp) / f"journal-{run}.jsonl"),
            "runtime.snapshot_dir": str(Path(tmp) / f"snapshots-{run}"),
            "runtime.heartbeat_interval_ms": 100,
        },
    )
    sidecar = Sidecar(settings, LIMITS)
    decided: list[float] = []
    gated: list[float] = []
    await sidecar.start()
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    await p.start()
    async with Gate(bs, f"ctl-{run}", heartbeat_timeout_ms=5000, fetch_max_wait_ms=wait_ms) as gate:
        while not (sidecar.ready() and gate.health()):
            await asyncio.sleep(0.01)
        for i in range(n + 1):  # trial 0 warms the path up and is not counted
            ts = time.time_ns()
            body = {
                "type": "new",
                "ts": ts,
                "order_id": f"o{i}",
                "account": "A",
                "strategy": "S",
                "symbol": "X",
                "side": "buy",
                "qty": 5000,
                "price": 1,
            }
            await p.send(f"ev-{run}", orjson.dumps(body), key=b"A")
            deadline = time.monotonic() + 10
            while gate.state("strategy:S") != "HALTED":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"trial {i}: the gate never saw the halt")
                await asyncio.sleep(0.0002)
            tr = sidecar.engine.killswitch.standing()["strategy:S"]
            if i:
                decided.append((tr.decided_ns - ts) / 1e6)
                gated.append((gate.seen_ns["strategy:S"] - ts) / 1e6)
            await sidecar.manual("resume", "strategy:S", "bench", "next trial")
            while gate.state("strategy:S") != "ACTIVE":
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.02)
    await p.stop()
    await sidecar.stop()
    return decided, gated


async def main_async(kinds: list[BrokerKind], n: int, waits: list[int]) -> dict[str, Any]:
    log.configure(level="error")  # the trials' transitions would bury the table
    results: dict[str, Any] = {}
    for kind in kinds:
        broker = start_broker(kind)
        try:
            assert broker.pid is not None
            with tempfile.TemporaryDirectory() as tmp:
                for wait in waits:
                    f = await floor(broker.bootstrap_servers, wait, n)
                    cpu0, t0 = cpu_s(broker.pid), time.monotonic()
                    d, g = await riskguard(kind, broker.bootstrap_servers, wait, n, tmp)
                    share = (cpu_s(broker.pid) - cpu0) / (time.monotonic() - t0)
                    results[f"{kind} {wait}"] = {
                        "broker": kind,
                        "fetch_max_wait_ms": wait,
                        "floor_ms": pct(f),
                        "event_to_decision_ms": pct(d),
                        "event_to_gate_ms": pct(g),
                        "broker_cpu_share": share,
                        "trials": n,
                    }
        finally:
            broker.stop()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="5 trials, waits 1 and 500 ms")
    parser.add_argument(
        "--waits", type=int, nargs="+", default=[1, 100, 500], help="fetch_max_wait_ms values"
    )
    add_broker_option(parser)
    args = parser.parse_args(argv)
    n, waits = (5, [1, 500]) if args.quick else (args.trials, args.waits)
    results = asyncio.run(main_async(broker_kinds(args.brokers), n, waits))
    rows: list[tuple[str, ...]] = [
        (
            "broker, fetch_max_wait_ms",
            "floor p50/p99 ms",
            "decision p50/p99 ms",
            "gate p50/p99 ms",
            "broker CPU",
        )
    ]
    for name, r in results.items():
        rows.append(
            (
                name,
                *(
                    f"{r[k]['p50']:.2f} / {r[k]['p99']:.2f}"
                    for k in ("floor_ms", "event_to_decision_ms", "event_to_gate_ms")
                ),
                f"{r['broker_cpu_share']:.0%}",
            )
        )
    print(table(rows))
    print(f"wrote {save('fetch_wait', {'results': results})}")
    return results


if __name__ == "__main__":
    main()
