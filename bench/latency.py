"""Latency: produce of an offending event -> halt decided -> a gate in another process refusing.

On each broker (``--brokers``; default both: the bundled Tansu and a single-node Apache
Kafka with Kafka's own JVM flags, riskguard with the idempotent producer there) and for
each load level (default 5k and 50k events/s, a fresh broker each), three more
processes: ``riskguard run`` (example limits), a gate probe and a watch probe
(``bench/probe.py``). This process plays background flow of 200 desks at that rate
(orders, fills, cancels, marks, router heartbeats, all within limits) and, while it
runs, repeats trials (200 by default):

1. produce one fat-finger order (``fat-finger-qty``, halt) on account ``RUNAWAY``
   into the loaded input topic (its own producer, ``linger_ms=0``);
2. floor: the watch probe, a bare consumer of the same topic in its own process,
   reports when it read that order;
3. the gate probe reports when its ``allows()`` refused the account, and the
   control record says when riskguard decided;
4. an operator resumes the account over the HTTP API and the order is cancelled.

Background flow is produced in 50 ms bursts (see ``TICK_S``). The floor reads exactly
what riskguard reads, from the same broker under the same load, so the ratio says what
riskguard (decide, publish, a second hop through the control topic) adds to the bare
round trip; each broker is judged against its own floor. Target: gate p99 <= 2 x floor
p99 + 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import (
    add_broker_option,
    broker_kinds,
    percentiles,
    progress,
    run_config,
    save,
    start_broker,
    table,
    wait_ready,
)
from riskguard.broker import free_port
from riskguard.brokers import BrokerKind
from riskguard.cli.client import request
from riskguard.testing import spawn_run

PARTITIONS = 4
ACCOUNTS = 200
SYMBOLS = [f"S{i:03d}" for i in range(100)]
MS = 1_000_000
RUNTIME = ""  # extra [runtime] lines for riskguard run (experiments)
#: Background flow goes out in bursts this far apart. The bundled broker (Tansu 0.6,
#: memory storage) falls behind without bound under many small produce requests while
#: consumers fetch with a 1 ms wait: 5k events/s in 5 ms bursts, with three bare
#: consumers and no riskguard at all, reached 11 s of lag in 24 s. In 50 ms bursts it
#: holds 50k events/s at 20-40 ms. The offending events are not batched.
TICK_S = 0.05


class Flow:
    """Normal flow of ``ACCOUNTS`` desks (2 strategies each), at wall-clock time."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.prices = {s: 100.0 + self.rng.uniform(-50, 50) for s in SYMBOLS}
        self.seq = 0
        self.last_mark = 0
        self.last_hb = 0

    def events(self, n: int, now: int) -> list[tuple[int, bytes]]:
        """About ``n`` (partition, value) records stamped ``now``."""
        out: list[tuple[int, bytes]] = []
        dumps, rng = orjson.dumps, self.rng
        if now - self.last_hb >= 100 * MS:
            self.last_hb = now
            out.append((0, dumps({"type": "heartbeat", "ts": now, "source": "router-1"})))
        if now - self.last_mark >= 100 * MS:
            self.last_mark = now
            for s in rng.sample(SYMBOLS, 20):
                self.prices[s] = round(self.prices[s] * rng.uniform(0.999, 1.001), 2)
                out.append(
                    (0, dumps({"type": "mark", "ts": now, "symbol": s, "price": self.prices[s]}))
                )
        while len(out) < n:
            a = rng.randrange(ACCOUNTS)
            keys = {
                "account": f"ACC{a}",
                "strategy": f"ACC{a}-s{a % 2}",
                "symbol": rng.choice(SYMBOLS),
            }
            self.seq += 1
            oid = f"o{self.seq}"
            side = "buy" if rng.random() < 0.5 else "sell"
            qty = float(rng.randint(1, 20))
            px = self.prices[keys["symbol"]]
            p = a % PARTITIONS
            limit = round(px * (1.0005 if side == "buy" else 0.9995), 2)
            new = {
                "type": "new",
                "ts": now,
                "order_id": oid,
                "side": side,
                "qty": qty,
                "price": limit,
                **keys,
            }
            out.append((p, dumps(new)))
            if rng.random() < 0.15:
                out.append((p, dumps({"type": "cancel", "ts": now, "order_id": oid, **keys})))
            else:
                fill = {
                    "type": "fill",
                    "ts": now,
                    "order_id": oid,
                    "exec_id": oid,
                    "side": side,
                    "qty": qty,
                    "price": px,
                    **keys,
                }
                out.append((p, dumps(fill)))
        return out


async def load(
    producer: AIOKafkaProducer,
    topic: str,
    rate: int,
    stop: asyncio.Event,
    sent: list[int],
    tick_s: float = 0.005,
) -> None:
    """Produce ``rate`` events/s in 5 ms ticks until ``stop``."""
    flow = Flow()
    started = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate) - sent[0]
        if due > 0:
            batches = [producer.create_batch() for _ in range(PARTITIONS)]
            for p, value in flow.events(due, time.time_ns()):
                if batches[p].append(key=None, value=value, timestamp=None) is None:
                    await producer.send_batch(batches[p], topic, partition=p)
                    batches[p] = producer.create_batch()
                    batches[p].append(key=None, value=value, timestamp=None)
                sent[0] += 1
            for p, b in enumerate(batches):
                if b.record_count():
                    await producer.send_batch(b, topic, partition=p)
        await asyncio.sleep(tick_s)


class Probe:
    """A probe subprocess whose JSON lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import sys  # noqa: PLC0415

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.probe", *self.args, stdout=asyncio.subprocess.PIPE
        )
        asyncio.get_running_loop().create_task(self._read())
        first = await asyncio.wait_for(self.lines.get(), 60)
        assert first.get("ready"), first

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.put_nowait(orjson.loads(line))

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.lines.get(), timeout_s)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def applied_events(port: int) -> int:
    """riskguard's own count of applied events, from its /metrics."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("riskguard_events_total{")
        )
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def trials(
    kind: BrokerKind, bs: str, broker_pid: int, rate: int, n: int, tmp: Path
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    topic, control = f"flow-{run}", f"ctl-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    token = secrets.token_hex(16)
    port = free_port()
    config = run_config(
        tmp,
        f"lat-{run}",
        f'[kafka]\ninput_topics = ["{topic}"]\ninput_partitions = {PARTITIONS}\n'
        f"idempotent_producer = {str(kind == 'apache-kafka').lower()}\n"
        "fetch_max_wait_ms = 1\n"
        f'control_topic = "{control}"\ndead_letter_topic = "dl-{run}"\n'
        # one break-glass resume per trial: the bench times halts, not four-eyes approvals
        "[http]\nfour_eyes = []\n",
        RUNTIME,
    )
    log = (tmp / f"riskguard-{run}.log").open("wb")
    proc = spawn_run(config, port, bs, env={"RISKGUARD_HTTP_TOKEN": token}, stderr=log)
    gate = Probe("gate", bs, control, "account:RUNAWAY")
    watch = Probe("watch", bs, topic, str(PARTITIONS), '"order_id":"runaway-')
    bulk = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=2, max_batch_size=1 << 20)
    fast = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    stop, sent = asyncio.Event(), [0]
    floor_ms: list[float] = []
    decided_ms: list[float] = []
    gate_ms: list[float] = []
    refused = 0
    overloaded = False
    loader: asyncio.Task[None] | None = None
    try:
        wait_ready(port, proc)
        await gate.start()
        await watch.start()
        assert gate.proc is not None and watch.proc is not None
        pids = {
            "broker": broker_pid,
            "riskguard": proc.pid,
            "gate probe": gate.proc.pid,
            "floor probe": watch.proc.pid,
            "load + bench": os.getpid(),
        }
        await bulk.start()
        await fast.start()
        loader = asyncio.create_task(load(bulk, topic, rate, stop, sent, TICK_S))
        await asyncio.sleep(2.0)  # let the load settle
        load_started, sent_at_start = time.perf_counter(), sent[0]
        url = f"http://127.0.0.1:{port}"
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        for i in range(n):
            t0 = time.time_ns()
            order = {
                "type": "new",
                "ts": t0,
                "order_id": f"runaway-{i}",
                "account": "RUNAWAY",
                "strategy": "runaway",
                "symbol": "S000",
                "side": "buy",
                "qty": 20_000.0,
                "price": 1.0,
            }
            await fast.send(topic, orjson.dumps(order), partition=i % PARTITIONS)
            try:
                line = await gate.next()
                seen = await watch.next()
            except TimeoutError:  # the machine cannot carry this load: say so, keep the data
                overloaded = True
                break
            assert line["state"] == "HALTED", line
            gate_ms.append((line["seen_ns"] - t0) / 1e6)
            decided_ms.append((line["decided_ns"] - t0) / 1e6)
            refused += bool(line["refused"])
            assert f'"runaway-{i}"' in seen["value"], seen
            floor_ms.append((seen["seen_ns"] - t0) / 1e6)
            body = {"scope": "account:RUNAWAY", "reason": f"trial {i}"}
            status, reply = await asyncio.to_thread(
                request, f"{url}/v1/resume", "POST", body, token
            )
            assert status == 200, reply
            cancel = {
                "type": "cancel",
                "ts": time.time_ns(),
                "order_id": f"runaway-{i}",
                "account": "RUNAWAY",
                "strategy": "runaway",
                "symbol": "S000",
            }
            await fast.send(topic, orjson.dumps(cancel), partition=i % PARTITIONS)
            try:
                line = await gate.next()
                seen = await watch.next()  # the cancel
            except TimeoutError:
                overloaded = True
                break
            assert line["state"] == "ACTIVE", line
            assert f'"runaway-{i}"' in seen["value"], seen
            await asyncio.sleep(random.uniform(0.005, 0.02))
            progress("trials", i + 1, n)
        elapsed = time.perf_counter() - load_started
        achieved = (sent[0] - sent_at_start) / elapsed
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
        stop.set()
        await loader
        await asyncio.sleep(1.0)
        applied = applied_events(port)
    finally:
        stop.set()
        if loader is not None and not loader.done():
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
        for p in (bulk, fast):
            await p.stop()
        await gate.stop()
        await watch.stop()
        proc.terminate()
        proc.wait(timeout=30)
    if overloaded:  # say what riskguard saw; the numbers alone do not
        lines = (tmp / f"riskguard-{run}.log").read_text().splitlines()
        print("\n".join(["--- riskguard log, last lines:", *lines[-15:]]), file=sys.stderr)
    floor, gated = percentiles(floor_ms), percentiles(gate_ms)
    target = 2 * floor["p99"] + 1.0 if floor_ms else 0.0
    return {
        "broker": kind,
        "trials": len(gate_ms),
        "trials_planned": n,
        "overloaded": overloaded,
        "cpu_cores_used": cpu,
        "load_target_events_per_s": rate,
        "load_events_per_s": achieved,
        "load_events_sent": sent[0],
        "riskguard_events_applied": applied,
        "floor_ms": floor,
        "event_to_decision_ms": percentiles(decided_ms),
        "event_to_gate_refusal_ms": gated,
        # per trial, gate minus floor: what deciding, publishing and the control-topic
        # hop add to reading the event at all
        "added_by_riskguard_ms": percentiles(
            [g - f for g, f in zip(gate_ms, floor_ms, strict=False)]
        ),
        "gate_refused_every_trial": refused == n,
        "target_gate_p99_ms": target,
        "target_met": bool(gate_ms) and not overloaded and gated["p99"] <= target,
    }


def report(levels: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [
        ("latency (ms), by background load", "p50", "p99", "p99.9", "max")
    ]
    notes = []
    for r in levels:
        rows.append(
            (
                f"-- {r['broker']}, {r['load_events_per_s']:,.0f} events/s, {r['trials']} trials",
                "",
                "",
                "",
                "",
            )
        )
        for label, key in (
            ("  floor: bare consumer, same topic", "floor_ms"),
            ("  event -> halt decided", "event_to_decision_ms"),
            ("  event -> gate refuses (2nd process)", "event_to_gate_refusal_ms"),
            ("  per trial: gate minus floor", "added_by_riskguard_ms"),
        ):
            p = r[key]
            rows.append(
                (
                    label,
                    *(f"{p[q]:.2f}" if p.get("n") else "-" for q in ("p50", "p99", "p99.9", "max")),
                )
            )
        verdict = "met" if r["target_met"] else "MISSED"
        rows.append((f"  target gate p99 <= {r['target_gate_p99_ms']:.2f}", "", verdict, "", ""))
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores_used"].items())
        notes.append(
            f"{r['broker']} {r['load_target_events_per_s']:,}/s: cores used: {cpu}"
            + (
                f"; OVERLOADED after {r['trials']} trials (no halt within 5 s)"
                if r["overloaded"]
                else ""
            )
        )
    return table(rows) + "\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[5_000, 50_000], help="background events/s"
    )
    parser.add_argument("--quick", action="store_true", help="20 trials at 5k events/s")
    add_broker_option(parser)
    args = parser.parse_args(argv)
    n, rates = (20, [5_000]) if args.quick else (args.trials, args.rates)

    async def level(kind: BrokerKind, rate: int) -> dict[str, Any]:
        broker = start_broker(kind)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                assert broker.pid is not None
                try:
                    bs = broker.bootstrap_servers
                    return await trials(kind, bs, broker.pid, rate, n, Path(tmp))
                except Exception:
                    for log in Path(tmp).glob("riskguard-*.log"):  # say why, then fail
                        print(f"--- tail of {log.name}", log.read_text()[-3000:], sep="\n")
                    raise
        finally:
            broker.stop()

    # a fresh broker per broker kind and load level
    levels = [
        asyncio.run(level(kind, rate)) for kind in broker_kinds(args.brokers) for rate in rates
    ]
    print(report(levels))
    print(f"wrote {save('latency', {'levels': levels})}")
    return {"levels": levels}


if __name__ == "__main__":
    main()
