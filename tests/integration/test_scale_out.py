"""Group mode on Apache Kafka: three instances share six input partitions through the
consumer group. A per-account rule fires on the instance owning the account; a firm-wide
order rate no instance sees alone is summed through the aggregation topic and halts the
firm; SIGKILL of one instance hands its partitions to the others within a bounded time;
the positions the survivors hold together equal those of one engine over the same events
(nothing lost, nothing counted twice), each halt decided before the kill stays one
state, and the sums are whole again over the survivors."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from riskguard import events as wire
from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.broker import free_port
from riskguard.control.records import StateRecord, decode_record
from riskguard.engine import Engine
from riskguard.events import encode
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from riskguard.settings import Settings
from riskguard.snapshot import Snapshot, SnapshotStore
from riskguard.testing import spawn_run
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import kafka_settings
from tests.integration.conftest import instance_settings

PARTITIONS = 6
ACCOUNTS = [f"acct-{i:02d}" for i in range(12)]  # acct-i on partition i % 6
HOT = "acct-07"  # its order burst breaches the per-account order rate (partition 1)
SESSION_TIMEOUT_MS = 6000  # Apache Kafka's smallest by default (group.min.session.timeout.ms)
LIMITS = rules_toml(
    """
name = "account-order-rate"
metric = "order_rate"
scope = "account"
window_ms = 1000
max = 40
action = "halt"
""",
    """
name = "account-position"
metric = "position_qty"
scope = "account"
max = 1000000
action = "halt"
""",
)
#: 240 orders in the flow and 60 in the burst: at most 140 on one instance (the two
#: partitions of the HOT account's owner: 4 accounts x 20 + 60), 300 in all
FIRM_RATE = """
name = "firm-order-rate"
metric = "order_rate"
scope = "firm"
window_ms = 5000
max = 200
action = "halt"
"""


def flow(start_ns: int, rounds: int, tag: str) -> list[wire.Event]:
    """Orders and fills in every account: ``rounds`` orders each, 2 ms apart, fills of
    varying size and side over three symbols (none breaches a limit)."""
    out: list[wire.Event] = []
    t = start_ns
    for r in range(rounds):
        for i, account in enumerate(ACCOUNTS):
            t += 2_000_000
            oid = f"{tag}-{account}-{r}"
            side = "buy" if (r + i) % 3 else "sell"
            keys = {"account": account, "strategy": f"s{i % 4}", "symbol": "XYZ"[r % 3]}
            qty = float(1 + (r * 7 + i) % 9)
            price = 100.0 + (r % 5)
            out.append(wire.NewOrder(ts=t, order_id=oid, side=side, qty=qty, price=price, **keys))
            out.append(
                wire.Fill(
                    ts=t + 1000,
                    order_id=oid,
                    side=side,
                    qty=qty,
                    price=price,
                    exec_id=f"x-{oid}",
                    **keys,
                )
            )
    return out


def burst(start_ns: int, n: int) -> list[wire.Event]:
    """``n`` new orders in :data:`HOT` within 0.1 s (the order-rate limit is 40 / s)."""
    keys = {"account": HOT, "strategy": "s3", "symbol": "X"}
    return [
        wire.NewOrder(
            ts=start_ns + k * 1_000_000,
            order_id=f"burst-{k}",
            side="buy",
            qty=1.0,
            price=100.0,
            **keys,
        )
        for k in range(n)
    ]


def partition_of(ev: wire.Event) -> int:
    account = getattr(ev, "account", None)
    assert isinstance(account, str)
    return ACCOUNTS.index(account) % PARTITIONS


async def produce(settings: Settings, events: list[wire.Event]) -> None:
    """Every event to its account's partition, keyed by account, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        topic = settings.kafka.input_topics[0]
        for ev in events:
            key = str(getattr(ev, "account", "")).encode()
            await producer.send(topic, encode(ev), key=key, partition=partition_of(ev))
        await producer.flush()
    finally:
        await producer.stop()


def http_status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except OSError:
        return None


async def until(what: str, predicate: Callable[[], object], timeout: float) -> float:
    """Wait for ``predicate``; returns the seconds it took."""
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, f"not in {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def process_config(settings: Settings, folder: Path, limits: Path) -> Path:
    """A ``riskguard run`` config for the same topics and group (TOML): ``folder`` its
    state directory; its partitions' checkpoints go to the shared
    ``scale.checkpoint_dir`` of ``settings``, as often as theirs."""
    k, s = settings.kafka, settings.scale
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "riskguard.toml"
    config.write_text(f"""
limits = "{limits}"
[kafka]
input_topics = ["{k.input_topics[0]}"]
group_id = "{k.group_id}"
control_topic = "{k.control_topic}"
dead_letter_topic = "{k.dead_letter_topic}"
idempotent_producer = true
input_partitions = {k.input_partitions}
[runtime]
instance = "rg-proc"
state_dir = "{folder}"
heartbeat_interval_ms = 100
commit_interval_ms = 200
snapshot_interval_s = {settings.runtime.snapshot_interval_s}
watch_limits = false
[scale]
mode = "group"
aggregate_topic = "{s.aggregate_topic}"
session_timeout_ms = {s.session_timeout_ms}
heartbeat_interval_ms = {s.heartbeat_interval_ms}
checkpoint_dir = "{s.checkpoint_dir}"
""")
    return config


async def state_records(settings: Settings, scope: str) -> list[StateRecord]:
    """Every state record of ``scope`` on the control topic, up to its end as of now
    (heartbeats keep arriving: the end is taken first)."""
    topic = settings.kafka.control_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    found: list[StateRecord] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(tp, timeout_ms=500)).values():
                for m in messages:
                    record = decode_record(m.value)
                    if isinstance(record, StateRecord) and record.scope == scope:
                        found.append(record)
    finally:
        await consumer.stop()
    return found


def events_total(s: Sidecar) -> float:
    """Events ``s`` applied since it started (``riskguard_events_total``, every type)."""
    return sum(
        sample.value
        for metric in s.metrics.events.collect()
        for sample in metric.samples
        if sample.name == "riskguard_events_total"
    )


def account_positions(engine: Engine | PartitionEngines) -> dict[tuple[str, str], float]:
    return {
        (owner, symbol): qty
        for (owner, symbol), (qty, _cost, _realised) in engine.positions().items()
        if owner.startswith("account:")
    }


@pytest.mark.slow
async def test_three_instances_share_partitions_and_survive_a_sigkill(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    limits_path = tmp_path / "limits.toml"
    limits_path.write_text(LIMITS + rules_toml(FIRM_RATE).removeprefix("version = 1\n"))
    base = kafka_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        **{
            "limits": str(limits_path),
            "kafka.input_partitions": PARTITIONS,
            "scale.mode": "group",
            "scale.session_timeout_ms": SESSION_TIMEOUT_MS,
            "scale.heartbeat_interval_ms": 500,
            "scale.checkpoint_dir": str(tmp_path / "checkpoints"),  # shared by all three
            "runtime.snapshot_interval_s": 2.0,
        },
    )
    limits = parse(limits_path.read_text(), str(limits_path))
    sidecars = [
        Sidecar(instance_settings(base, tmp_path / name, name), limits) for name in ("rg-a", "rg-b")
    ]
    port = free_port()
    config = process_config(base, tmp_path / "proc", limits_path)
    proc = spawn_run(config, port, apache_kafka.bootstrap_servers)
    try:
        await asyncio.gather(*(s.start() for s in sidecars))
        tasks = [asyncio.create_task(s.run()) for s in sidecars]

        def owned() -> dict[str, list[str]]:
            out = {s.instance: s.status()["scale"]["owned"] for s in sidecars}
            st = http_status(port)
            if st is not None and st.get("phase") == "running":
                out["rg-proc"] = st["scale"]["owned"]
            return out

        def spread() -> bool:
            now = owned()
            return len(now) == 3 and all(len(p) == 2 for p in now.values())

        await until("six partitions spread over three instances", spread, 60)
        start = time.time_ns()
        first = flow(start, 20, "a") + burst(start + 500_000_000, 60)
        await produce(base, first)

        def applied() -> int:
            st = http_status(port) if proc.poll() is None else None
            alive = st["events_applied"] if st else 0
            return alive + sum(s.flow.events_applied for s in sidecars)

        await until("every event applied once", lambda: applied() == len(first), 30)
        scope = f"account:{HOT}"
        await until(
            "the hot account halted everywhere",
            lambda: all(s.engine.killswitch.state(scope) == "HALTED" for s in sidecars),
            15,
        )
        decided = sidecars[0].engine.killswitch.standing()[scope]
        owner = [n for n, parts in owned().items() if f"{base.kafka.input_topics[0]}/1" in parts]
        assert decided.instance == owner[0], "the account's owner decides its rule"
        assert decided.rule == "account-order-rate"
        firm_after = await until(
            "the firm halted everywhere on the summed order rate",
            lambda: all(s.engine.killswitch.state("firm") == "HALTED" for s in sidecars),
            15,
        )
        firm = sidecars[0].engine.killswitch.standing()["firm"]
        judge = [n for n, parts in owned().items() if f"{base.kafka.input_topics[0]}/0" in parts]
        assert (firm.rule, firm.instance, firm.kind) == ("firm-order-rate", judge[0], "auto")
        assert firm.value is not None and 200 < firm.value <= 300, firm.value
        assert "summed over 3 instance(s)" in (firm.reason or "")
        print(f"\nfirm halt on the sums: everywhere {firm_after:.2f} s after the account halt")
        for s in sidecars:  # no instance saw the breach alone: the peak of its partitions'
            assert isinstance(s.flow, PartitionEngines)  # sum is at most the sum of peaks
            highs = [
                next(p for p in e.peaks() if p.rule.name == "firm-order-rate").high
                for e in s.flow.all()
            ]
            assert highs and all(h is not None for h in highs), (s.instance, highs)
            assert sum(h or 0.0 for h in highs) <= 140, (s.instance, highs)

        victim_parts = owned()["rg-proc"]
        folder, input_topic = Path(base.scale.checkpoint_dir), base.kafka.input_topics[0]

        def checkpoint(label: str) -> Snapshot | None:  # the newest of a partition
            topic, _, p = label.rpartition("/")
            return SnapshotStore(folder / f"{topic}.{p}").latest()

        def count(events: list[wire.Event], label: str) -> int:  # its messages: its end
            return sum(f"{input_topic}/{partition_of(ev)}" == label for ev in events)

        def checkpointed() -> bool:
            snaps = {label: checkpoint(label) for label in victim_parts}
            return all(
                snap is not None and snap.offsets[label] == count(first, label)
                for label, snap in snaps.items()
            )

        await until("the victim checkpointed its partitions", checkpointed, 20)
        mid = flow(time.time_ns(), 1, "m")  # after the checkpoints: read again after the kill
        await produce(base, mid)
        before_kill = first + mid
        await until("the victim applied the new events", lambda: applied() == len(before_kill), 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        left = {label: checkpoint(label) for label in victim_parts}  # the victim's last
        read_here = {s.instance: events_total(s) for s in sidecars}
        restores = sum(s.status()["scale"]["snapshot_restores"] for s in sidecars)
        takeover = await until(
            "the survivors own all six partitions",
            lambda: sum(len(p) for p in owned().values()) == PARTITIONS,
            SESSION_TIMEOUT_MS / 1000 + 20,
        )
        scales = [s.status()["scale"] for s in sidecars]
        gained = {label: name for sc in scales for label, name in sc["checkpoints"].items()}
        assert set(victim_parts) <= set(gained), (victim_parts, gained)
        for label in victim_parts:  # restored from the victim's last checkpoint of each
            snap = left[label]
            assert snap is not None and gained[label] == snap.path.name, (label, gained)
        assert all(name is not None for name in gained.values()), (
            f"every partition gained is restored from a checkpoint, none read again: {gained}"
        )
        assert sum(sc["snapshot_restores"] for sc in scales) == restores + len(gained)

        def restored() -> bool:
            return all(s.status()["scale"]["restored_seconds"] is not None for s in sidecars)

        caught_up = await until(
            "the survivors hold every event once",
            lambda: restored() and sum(s.flow.events_applied for s in sidecars) == len(before_kill),
            30,
        )
        after_checkpoint = {
            label: count(before_kill, label) - snap.offsets[label]
            for label, snap in left.items()
            if snap is not None
        }
        # read only from the checkpoints' offsets: each survivor applied the events after
        # them and nothing else (a partition read again would count as applied, or as a
        # redelivery); the partitions moved between survivors were handed over at the
        # offset applied, so nothing of them is read again
        assert sum(events_total(s) - read_here[s.instance] for s in sidecars) == sum(
            after_checkpoint.values()
        ), (after_checkpoint, read_here)
        for s in sidecars:
            dupes = s.metrics.registry.get_sample_value("riskguard_duplicate_events_total")
            assert not dupes, (s.instance, dupes)
            assert isinstance(s.flow, PartitionEngines)
            for tp, engine in s.flow.engines.items():
                label = f"{tp.topic}/{tp.partition}"
                snap = left.get(label)
                if snap is not None:  # the checkpoint's events, then the ones after it
                    assert (
                        engine.events_applied
                        == int(snap.meta["events_applied"]) + (after_checkpoint[label])
                    ), label
        print(
            f"\nfailover: {victim_parts} taken over {takeover:.1f} s after SIGKILL, "
            f"restored from checkpoints {[left[p].path.name for p in victim_parts if left[p]]} "
            f"and read on ({sum(after_checkpoint.values())} events after them) "
            f"{caught_up:.2f} s later ({time.monotonic() - killed:.1f} s total; restore "
            f"{[sc['restored_seconds'] for sc in (s.status()['scale'] for s in sidecars)]} s)"
        )
        assert takeover <= SESSION_TIMEOUT_MS / 1000 + 10  # the documented bound

        second = flow(time.time_ns(), 10, "b")
        await produce(base, second)
        everything = before_kill + second
        await until(
            "the new events applied once",
            lambda: sum(s.flow.events_applied for s in sidecars) == len(everything),
            30,
        )
        reference = Engine(limits, event_time=True)
        reference.apply(everything)
        want = account_positions(reference)
        got: dict[tuple[str, str], float] = {}
        for s in sidecars:
            mine = account_positions(s.flow)
            assert not set(mine) & set(got), "an account counted by two instances"
            got.update(mine)
        assert got == want
        assert len(want) == len(ACCOUNTS) * 3  # every account in X, Y and Z
        records = await state_records(base, scope)
        assert {(r.transition.id, r.transition.to) for r in records} == {(decided.id, "HALTED")}, (
            "one decision, not re-decided by the instance that took the account over"
        )
        firm_records = await state_records(base, "firm")
        assert {(r.transition.id, r.transition.to) for r in firm_records} == {(firm.id, "HALTED")}

        def summed_by_survivors() -> bool:
            agg = [s.status()["scale"]["aggregate"] for s in sidecars]
            judging = [a for a in agg if a["judging"]]
            return (
                len(judging) == 1
                and judging[0]["complete"] is True
                and (judging[0]["instances"] == ["rg-a", "rg-b"])
            )

        await until("the sums whole again over the survivors", summed_by_survivors, 15)
        for s in sidecars:
            s.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for s in sidecars:
            if not s.stopping:
                await s.stop()


async def test_a_reload_adding_a_rule_that_is_not_a_sum_is_rejected_in_group_mode(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    limits_path = tmp_path / "limits.toml"
    limits_path.write_text(LIMITS)
    settings = kafka_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        **{"limits": str(limits_path), "scale.mode": "group", "runtime.watch_limits": False},
    )
    sidecar = Sidecar(settings)
    await sidecar.start()
    try:
        limits_path.write_text(  # a gross exposure nets across accounts: not a sum
            LIMITS + '\n[[rule]]\nname = "firm-gross"\nmetric = "gross_notional"\n'
            'scope = "firm"\nmax = 1000000\naction = "halt"\n'
        )
        assert not await sidecar.reloader.reload("SIGHUP")
        assert "'firm-gross'" in sidecar.reloader.last_error
        assert [r.name for r in sidecar.limits.rules] == ["account-order-rate", "account-position"]
    finally:
        await sidecar.stop()


async def test_owned_partitions_with_nothing_to_read_count_as_restored(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    """Empty owned partitions are at their end once a fetch reported their high
    watermark: no batch ever comes to say so, yet the restore is reported (it stayed
    ``None`` until the first event, then reported the wait for it as the restore time)."""
    limits_path = tmp_path / "limits.toml"
    limits_path.write_text(LIMITS)
    settings = kafka_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        **{
            "limits": str(limits_path),
            "kafka.input_partitions": PARTITIONS,
            "scale.mode": "group",
            "runtime.watch_limits": False,
        },
    )
    sidecar = Sidecar(settings)
    await sidecar.start()
    task = asyncio.create_task(sidecar.run())
    try:

        def scale() -> dict[str, Any]:
            out: dict[str, Any] = sidecar.status()["scale"]
            return out

        def restored_and_said() -> Any:
            restoring = sidecar.metrics.registry.get_sample_value("riskguard_restoring")
            assert restoring == (scale()["restored_seconds"] is None), "gauge and status agree"
            return scale()["restored_seconds"]

        await until("every partition owned", lambda: len(scale()["owned"]) == PARTITIONS, 30)
        await until("the empty partitions restored", restored_and_said, 30)
        restored = scale()["restored_seconds"]
        assert sidecar.metrics.registry.get_sample_value("riskguard_restoring") == 0
        events = flow(time.time_ns(), 1, "late")
        await produce(settings, events)
        await until("the events applied", lambda: sidecar.flow.events_applied == len(events), 30)
        assert scale()["restored_seconds"] == restored, "new events are not a restore"
        # one assignment of six partitions, none with a checkpoint: each read from its start
        assert (scale()["rebuilds"], scale()["snapshot_restores"]) == (PARTITIONS, 0)
        sidecar.request_stop()
        assert await task
    finally:
        if not sidecar.stopping:
            await sidecar.stop()
