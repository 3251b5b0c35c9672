"""Halt to cancel: riskguard's cancel request reaching the router, and the orders closing.

One run on the bundled broker, everything in this process, as in ``riskguard demo``:
riskguard (the real ``Sidecar``, a one-rule limits file, ``cancel_deadline_ms`` 1000),
a ``Gate`` whose ``on_cancel`` is a simulated router, and a floor. Each trial:

1. strategy ``S`` has ``--working`` orders resting (``new`` events riskguard applied);
2. one fat-finger order of ``S`` is produced (``order_qty`` over its limit, action
   halt): riskguard halts ``strategy:S`` and publishes the state record and the cancel
   request naming the working orders (the fat one included);
3. the gate hands the request to ``on_cancel``; the router sends a confirmed ``cancel``
   for every order named (the simulated venue confirms at once);
4. riskguard reads the cancels and sees every order it named close (its own
   ``riskguard_cancel_confirmation_seconds``, one observation per trial);
5. an operator resumes ``S``; then one floor round trip: a bare ``AIOKafkaProducer``
   (``linger_ms=0``) to a bare ``AIOKafkaConsumer`` (``fetch_max_wait_ms=1``, as the
   gate's) of another topic on the same broker; and ``gate.check()`` timed on this
   gate, call by call.

Reported, from the halt's ``decided_ns`` (wall clock, one host): the cancel request
built (its record's ``ts``), ``on_cancel`` called, the router's cancels sent, and
riskguard confirming them; beside the floor, with ratios. Trial 0 warms the path up and
is not counted. ``bench/gate_check.py`` measures ``check()`` at scale (10k scopes).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import percentiles, progress, save, table
from riskguard import log
from riskguard.broker import EmbeddedBroker
from riskguard.gate import CancelRequest, Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.settings import load_settings
from riskguard.vocabulary import Transition

LIMITS = parse(
    "version = 1\ncancel_deadline_ms = 1000\n"
    '[[rule]]\nname = "fat"\nmetric = "order_qty"\nscope = "strategy"\n'
    'max = 1000\naction = "halt"\n'
)
SCOPE = "strategy:S"
KEYS = {"account": "A", "strategy": "S", "symbol": "X"}
CHECKS_PER_TRIAL = 200


def order(oid: str, qty: float) -> bytes:
    return orjson.dumps(
        {
            "type": "new",
            "ts": time.time_ns(),
            "order_id": oid,
            "side": "buy",
            "qty": qty,
            "price": 10.0,
            "venue": "XNAS",
            **KEYS,
        }
    )


@dataclass
class Router:
    """``on_cancel``: a confirmed cancel for every order named, sent at once."""

    producer: AIOKafkaProducer
    topic: str
    received_ns: dict[str, int] = field(default_factory=dict)
    sent_ns: dict[str, int] = field(default_factory=dict)
    asked_ns: dict[str, int] = field(default_factory=dict)
    named: dict[str, int] = field(default_factory=dict)

    async def on_cancel(self, request: CancelRequest) -> None:
        now = time.time_ns()
        self.received_ns.setdefault(request.halt_id, now)
        self.asked_ns.setdefault(request.halt_id, request.ts)
        for o in request.orders:
            cancel = {"type": "cancel", "ts": time.time_ns(), "order_id": o.order_id, **KEYS}
            await self.producer.send(self.topic, orjson.dumps(cancel), key=b"A")
        self.named[request.halt_id] = self.named.get(request.halt_id, 0) + len(request.orders)
        if request.part == request.parts - 1:
            self.sent_ns[request.halt_id] = time.time_ns()


async def until(done: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.0005)


class Floor:
    """A bare producer and consumer of one topic: the produce -> consume round trip."""

    def __init__(self, bs: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bs, enable_auto_commit=False, fetch_max_wait_ms=1
        )

    async def start(self) -> None:
        await self.producer.start()
        await self.producer.send_and_wait(self.topic, b"warm")
        await self.consumer.start()
        tp = TopicPartition(self.topic, 0)
        self.consumer.assign([tp])
        await self.consumer.seek_to_beginning(tp)
        while not await self.consumer.getmany(timeout_ms=1000):
            pass

    async def sample(self) -> float:
        """One round trip, in ms."""
        t0 = time.perf_counter_ns()
        await self.producer.send(self.topic, b"x")
        while not await self.consumer.getmany(timeout_ms=1000):
            pass
        return (time.perf_counter_ns() - t0) / 1e6

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()


async def run(bs: str, n: int, working: int, tmp: str) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    topic, control, floor_topic = f"ev-{run_id}", f"ctl-{run_id}", f"floor-{run_id}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    await admin.create_topics([NewTopic(floor_topic, 1, 1)])  # the broker does not auto-create
    await admin.close()
    settings = load_settings(
        env={},
        overrides={
            "kafka.bootstrap_servers": bs,
            "kafka.input_topics": [topic],
            "kafka.control_topic": control,
            "kafka.dead_letter_topic": f"dl-{run_id}",
            "kafka.fetch_max_wait_ms": 1,  # the bundled Tansu broker (riskguard.brokers)
            "http.port": 0,
            "runtime.audit_log": str(Path(tmp) / "audit.jsonl"),
            "runtime.journal": str(Path(tmp) / "journal.jsonl"),
            "runtime.snapshot_dir": str(Path(tmp) / "snapshots"),
            "runtime.heartbeat_interval_ms": 100,
        },
    )
    sidecar = Sidecar(settings, LIMITS)
    halts: list[Transition] = []
    sidecar.engine.killswitch.subscribe(
        lambda tr: halts.append(tr) if tr.scope == SCOPE and tr.to == "HALTED" else None
    )
    await sidecar.start()
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    await producer.start()
    router = Router(producer, topic)
    floor = Floor(bs, floor_topic)
    await floor.start()
    confirmations = sidecar.metrics.registry
    rows: dict[str, list[float]] = {
        k: [] for k in ("floor", "asked", "on_cancel", "cancels_sent", "riskguard_confirmed")
    }
    check_us: list[float] = []
    named = 0
    try:
        async with Gate(
            bs, control, heartbeat_timeout_ms=5000, on_cancel=router.on_cancel, fetch_max_wait_ms=1
        ) as gate:
            await until(lambda: sidecar.ready() and gate.health(), "riskguard not ready")
            await until(lambda: gate.view.rules is not None, "no rules on the control topic")
            applied = sidecar.engine.events_applied
            for i in range(n + 1):  # trial 0 warms the path up and is not counted
                for j in range(working):
                    await producer.send(topic, order(f"t{i}-w{j}", 10), key=b"A")
                applied += working
                await until(lambda a=applied: sidecar.engine.events_applied >= a, "not applied")
                before = (
                    confirmations.get_sample_value("riskguard_cancel_confirmation_seconds_sum")
                    or 0.0
                )
                count = sidecar.cancels.confirmed
                await producer.send(topic, order(f"t{i}-fat", 5000), key=b"A")
                applied += 1 + working + 1  # the fat order, then a cancel per order named
                await until(lambda k=i: len(halts) > k, f"trial {i}: no halt")
                tr = halts[i]
                await until(lambda h=tr.id: h in router.sent_ns, f"trial {i}: no cancel request")
                await until(
                    lambda c=count: sidecar.cancels.confirmed > c, f"trial {i}: unconfirmed"
                )
                after = (
                    confirmations.get_sample_value("riskguard_cancel_confirmation_seconds_sum")
                    or 0.0
                )
                if i:
                    named += router.named[tr.id]
                    rows["asked"].append((router.asked_ns[tr.id] - tr.decided_ns) / 1e6)
                    rows["on_cancel"].append((router.received_ns[tr.id] - tr.decided_ns) / 1e6)
                    rows["cancels_sent"].append((router.sent_ns[tr.id] - tr.decided_ns) / 1e6)
                    rows["riskguard_confirmed"].append((after - before) * 1000)
                await sidecar.manual("resume", SCOPE, "bench", f"trial {i}")
                await until(lambda: gate.state(SCOPE) == "ACTIVE", "resume not seen")
                await until(lambda a=applied: sidecar.engine.events_applied >= a, "not applied")
                sample = await floor.sample()
                if i:
                    rows["floor"].append(sample)
                    for _ in range(CHECKS_PER_TRIAL):
                        t0 = time.perf_counter_ns()
                        gate.check("A", "S", "X", "buy", 10, 10.0, venue="XNAS")
                        check_us.append((time.perf_counter_ns() - t0) / 1000)
                    progress("trials", i, n)
    finally:
        await floor.stop()
        await producer.stop()
        await sidecar.stop()
    result: dict[str, Any] = {
        "trials": n,
        "working_orders": working,
        "orders_named": named,
        **{f"{k}_ms": percentiles(v) for k, v in rows.items()},
        "gate_check_us": percentiles(check_us),
    }
    floor_p = result["floor_ms"]
    for key in ("on_cancel", "cancels_sent", "riskguard_confirmed"):
        p = result[f"{key}_ms"]
        result[f"{key}_over_floor"] = {q: p[q] / floor_p[q] for q in ("p50", "p99")}
    return result


def report(r: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [
        (
            f"halt -> cancel (ms), {r['trials']} trials x {r['working_orders'] + 1} orders",
            "p50",
            "p99",
            "p99.9",
            "max",
        )
    ]
    for label, key in (
        ("floor: bare produce -> consume", "floor_ms"),
        ("halt decided -> cancel request built", "asked_ms"),
        ("halt decided -> on_cancel called", "on_cancel_ms"),
        ("halt decided -> router's cancels sent", "cancels_sent_ms"),
        ("halt decided -> riskguard saw all closed", "riskguard_confirmed_ms"),
    ):
        p = r[key]
        rows.append((label, *(f"{p[q]:.2f}" for q in ("p50", "p99", "p99.9", "max"))))
    for label, key in (
        ("on_cancel / floor", "on_cancel_over_floor"),
        ("cancels sent / floor", "cancels_sent_over_floor"),
        ("riskguard confirmed / floor", "riskguard_confirmed_over_floor"),
    ):
        ratio = r[key]
        rows.append((label, f"{ratio['p50']:.1f}x", f"{ratio['p99']:.1f}x", "", ""))
    g = r["gate_check_us"]
    rows.append(
        ("gate.check() on this gate (us)", *(f"{g[q]:.1f}" for q in ("p50", "p99", "p99.9", "max")))
    )
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--working", type=int, default=50, help="orders resting per trial")
    parser.add_argument("--quick", action="store_true", help="20 trials of 10 orders")
    args = parser.parse_args(argv)
    n, working = (20, 10) if args.quick else (args.trials, args.working)
    log.configure(level="error")  # the trials' transitions would bury the table

    async def go() -> dict[str, Any]:
        with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
            return await run(broker.bootstrap_servers, n, working, tmp)

    result = asyncio.run(go())
    print(report(result))
    print(f"wrote {save('cancel_latency', result)}")
    return result


if __name__ == "__main__":
    main()
