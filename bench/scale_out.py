"""Scale-out: one vs two ``riskguard run`` processes in group mode on one input topic.

N events of simulated flow are produced once to a 4-partition topic on a single-node
Apache Kafka (the consumer group needs a real group coordinator), as the producer
contract asks (``riskguard.publish``): each account's events to its account's
partition, marks, exchange rates, instruments and heartbeats to every partition (so the
topic holds more records than events). Then, for 1 and for 2
instances: a fresh consumer group of that many ``riskguard run`` processes (group mode,
the example limits cut to what group mode judges: local rules, and summed rules
judged through the aggregation topic)
starts on the topic. Each instance times, itself, how long from its latest assignment
until the partitions it owns are read to their end (``scale.restored_seconds`` in
``/v1/status``); the run counts once every partition is owned and restored.

That time is an instance's rate only if every partition it owns was read from its start
within that assignment. A member keeps the partitions it already owned across a
rebalance (decision 54): had the second process joined after the first began reading,
the first's kept partitions would be partly read before the latest assignment, and its
rate inflated. So the broker holds a new group's first rebalance for
:data:`JOIN_DELAY_MS` (``group.initial.rebalance.delay.ms``), long enough for every
process of the group to join its first generation, each process has its own state
folder (no checkpoint of the other's to restore: ``snapshot_interval_s = 0``), and
each instance's ``scale`` status must show that its latest assignment gained every
partition it owns, read from the start (:func:`check_read_from_start`); a run where it
does not fails.

Per instance it reports records/s (the records of the partitions it owns over its
restore time); the group's rate is all records over the slowest instance's restore
time. bench/README.md
turns these into the flow N instances carry. On a 2-core machine two instances and the
broker share the cores: the figure for two is a floor, not what two machines give.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

import msgspec

from bench.common import progress, save, table
from bench.pipeline import PARTITIONS, flow_events, produce
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.broker import free_port
from riskguard.events import encode
from riskguard.examples import LIMITS
from riskguard.limits import load
from riskguard.limits.model import Limits
from riskguard.publish import route
from riskguard.testing import spawn_run

Record = tuple[bytes, bytes, int]
"""(key, value, partition)"""

JOIN_DELAY_MS = 8_000
"""``group.initial.rebalance.delay.ms`` of the bench's broker: how long a new group's
first rebalance waits for more members (the processes start together; their start-up
times differ by a few seconds at most on a loaded machine)."""


#: Each of the simulated flow's 3 accounts is split into this many (by order id, so an
#: order's life stays in one account): a firm scaled out by account has many accounts,
#: and 3 cannot spread over partitions (one carried 45 % of the flow; with 192 the
#: busiest of 4 carries 28 %).
ACCOUNT_SPLIT = 64


def spread(ev: Any) -> Any:
    """``ev`` in one of :data:`ACCOUNT_SPLIT` sub-accounts of its account, chosen by its
    order id (a parent's by its parent id; a position's by its symbol)."""
    account = getattr(ev, "account", None)
    if account is None:
        return ev
    tag = getattr(ev, "order_id", None) or getattr(ev, "parent_id", None) or ev.symbol
    k = zlib.crc32(str(tag).encode()) % ACCOUNT_SPLIT
    return msgspec.structs.replace(ev, account=f"{account}-{k:02d}")


def group_records(n: int) -> list[Record]:
    """The ``n`` events of the pipeline's flow, spread over sub-accounts (:func:`spread`),
    as records routed by the producer contract (:func:`riskguard.publish.route`): an
    event sent to every partition is one record per partition."""
    out: list[Record] = []
    for ev in map(spread, flow_events(n)):
        key, parts = route(ev, PARTITIONS)
        value = encode(ev)
        out += [(key, value, p) for p in parts]
    return out


def group_limits() -> Limits:
    """The example limits without the rules group mode refuses (docs/deployment.md):
    its local rules, and its summed rules (judged through the aggregation topic)."""
    from riskguard.limits.scale import is_local, is_summed  # noqa: PLC0415

    full = load(LIMITS)
    keep = tuple(r for r in full.rules if is_local(r) or is_summed(r))
    return dataclasses.replace(full, rules=keep)


def limits_file(folder: Path) -> Path:
    """:func:`group_limits` written as a limits file (rules copied from the example)."""
    import tomllib  # noqa: PLC0415

    doc = tomllib.loads(Path(LIMITS).read_text())
    keep = {r.name for r in group_limits().rules}
    lines = [f"version = {doc['version']}"]
    for key in ("base_currency", "revalue_ms", "cancel_deadline_ms"):
        if key in doc:
            lines.append(f"{key} = {json.dumps(doc[key])}")
    for rule in doc.get("rule", []):
        if rule["name"] not in keep:
            continue
        lines.append("\n[[rule]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in rule.items() if not isinstance(v, dict)]
        for k, v in rule.items():
            if isinstance(v, dict):
                lines.append(
                    f"{k} = {{ {', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items())} }}"
                )
    path = folder / "group-limits.toml"
    path.write_text("\n".join(lines) + "\n")
    load(path)  # raises if the copy went wrong
    return path


def status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except OSError:
        return None


def config(folder: Path, name: str, topic: str, group: str, limits: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "riskguard.toml"
    path.write_text(f"""
limits = "{limits}"
[kafka]
input_topics = ["{topic}"]
group_id = "{group}"
control_topic = "ctl-{group}"
dead_letter_topic = "dl-{group}"
idempotent_producer = true
max_records = 500
[runtime]
instance = "{name}"
state_dir = "{folder}"
watch_limits = false
snapshot_interval_s = 0
log_level = "error"
[scale]
mode = "group"
session_timeout_ms = 6000
heartbeat_interval_ms = 500
checkpoint_dir = "{folder / "partitions"}"
""")
    return path


def check_read_from_start(name: str, scale: dict[str, Any]) -> None:
    """Raise :class:`RuntimeError` unless instance ``name``'s ``scale`` status shows
    that every partition it owns was gained at its latest assignment and read from its
    start (none kept from an earlier assignment, none restored from a checkpoint), and
    that it read no partition before: its restore time is then the time to read all of
    them."""
    owned = set(scale["owned"])
    gained = scale["checkpoints"]  # partitions gained at the latest assignment
    problems = []
    if set(gained) != owned:
        problems.append(f"kept from an earlier assignment: {sorted(owned - set(gained))}")
    if any(v is not None for v in gained.values()):
        problems.append(f"restored from a checkpoint: {gained}")
    if scale["snapshot_restores"] != 0 or scale["rebuilds"] != len(owned):
        problems.append(
            f"{scale['rebuilds']} partitions read from the start and "
            f"{scale['snapshot_restores']} restored since it started, for {len(owned)} owned"
        )
    if problems:
        raise RuntimeError(
            f"{name}: its restore time does not cover reading every partition it owns from "
            f"the start ({'; '.join(problems)}): the group did not form in one generation "
            f"(raise JOIN_DELAY_MS?)"
        )


def run_group(
    bs: str, topic: str, per_partition: list[int], k: int, folder: Path, limits: Path
) -> dict[str, Any]:
    """Time ``k`` instances in one fresh group over ``topic`` (``per_partition[p]``
    records in partition p)."""
    n = sum(per_partition)
    group = f"bench-{k}-{uuid.uuid4().hex[:6]}"
    ports = [free_port() for _ in range(k)]
    procs = [
        spawn_run(config(folder / f"{group}-{i}", f"rg{i}", topic, group, limits), p, bs)
        for i, p in enumerate(ports)
    ]
    try:
        deadline = time.monotonic() + 600
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError("the group never applied every event")
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"riskguard run exited with {proc.returncode}")
            found = [status(p) for p in ports]
            live = [s for s in found if s is not None and s.get("phase") == "running"]
            if (
                len(live) == k
                and sum(len(s["scale"]["owned"]) for s in live) == PARTITIONS
                and all(s["scale"]["restored_seconds"] is not None for s in live)
            ):
                break  # every partition owned once and restored (read to its end)
            time.sleep(0.1)
        for i, s in enumerate(live):
            check_read_from_start(f"instance {i} of {k}", s["scale"])
        seconds = [float(s["scale"]["restored_seconds"]) for s in live]
        events = [
            sum(per_partition[int(label.rpartition("/")[2])] for label in s["scale"]["owned"])
            for s in live
        ]
        return {
            "instances": k,
            "seconds": max(seconds),
            "events_per_s": n / max(seconds),
            "per_instance_events_per_s": [e / t for e, t in zip(events, seconds, strict=True)],
            "per_instance_events": events,
            "per_instance_seconds": seconds,
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def measure(n: int, repeats: int) -> dict[str, Any]:
    server = {"group.initial.rebalance.delay.ms": str(JOIN_DELAY_MS)}
    with ApacheKafkaBroker(server_config=server) as broker, tempfile.TemporaryDirectory() as tmp:
        bs = broker.bootstrap_servers
        topic = f"bench-scale-{uuid.uuid4().hex[:6]}"
        records = group_records(n)
        per_partition = [0] * PARTITIONS
        for _key, _value, p in records:
            per_partition[p] += 1
        produce_s = asyncio.run(produce(bs, topic, records))
        limits = limits_file(Path(tmp))
        runs: dict[int, dict[str, Any]] = {}
        for i in range(repeats):
            for k in (1, 2):
                r = run_group(bs, topic, per_partition, k, Path(tmp), limits)
                if k not in runs or r["seconds"] < runs[k]["seconds"]:
                    runs[k] = r
            progress("repeats", i + 1, repeats)
    one, two = runs[1], runs[2]
    return {
        "events": n,
        "records": len(records),
        "partitions": PARTITIONS,
        "produce_events_per_s": len(records) / produce_s,
        "rules": len(group_limits().rules),
        "one": one,
        "two": two,
        "speedup": two["events_per_s"] / one["events_per_s"],
        "repeats": repeats,
        "broker_kind": "apache-kafka",
        "join_delay_ms": JOIN_DELAY_MS,
        "checked": "every owned partition read from its start in the measured assignment",
    }


def report(result: dict[str, Any]) -> str:
    one, two = result["one"], result["two"]
    rows: list[tuple[str, ...]] = [
        ("scale-out (group mode, Apache Kafka)", "records/s total", "records/s per instance"),
        (
            "1 instance",
            f"{one['events_per_s']:,.0f}",
            f"{one['per_instance_events_per_s'][0]:,.0f}",
        ),
        (
            "2 instances (same 2-core machine)",
            f"{two['events_per_s']:,.0f}",
            " / ".join(f"{x:,.0f}" for x in two["per_instance_events_per_s"]),
        ),
        ("speed-up 2 vs 1", f"{result['speedup']:.2f}", ""),
    ]
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="40k events, one repeat")
    args = parser.parse_args(argv)
    n, repeats = (40_000, 1) if args.quick else (args.events, args.repeats)
    result = measure(n, repeats)
    print(report(result))
    print(f"wrote {save('scale_out', result)}")
    return result


if __name__ == "__main__":
    main()
