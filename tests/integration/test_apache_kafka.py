"""riskguard on a real Apache Kafka (one KRaft node): what Tansu cannot show.

The idempotent producer (Tansu rejects InitProducerId), log compaction of the control
topic (Tansu never compacts), a consumer group's committed offsets, and SASL/SCRAM
over a real listener. The broker starts once per session (``apache_kafka``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.broker import BrokerError, free_port
from riskguard.cli.common import EXIT_USAGE
from riskguard.control.reader import ControlView, read_to_end
from riskguard.control.records import CancelRecord, StateRecord, decode_record
from riskguard.examples import LIMITS
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from riskguard.testing import spawn_run
from tests.integration.apache_kafka_fixtures import SCRAM_PASSWORD, SCRAM_USER, kafka_settings
from tests.integration.conftest import OVERFILL
from tests.integration.test_sidecar import RUNAWAY, ev, wait_for

SASL = {
    "kafka.security_protocol": "SASL_PLAINTEXT",
    "kafka.sasl_mechanism": "SCRAM-SHA-256",
    "kafka.sasl_plain_username": SCRAM_USER,
    "kafka.sasl_plain_password": SCRAM_PASSWORD,
}


# helpers ---------------------------------------------------------------------
async def produce(settings: Settings, *values: bytes, keys: list[bytes] | None = None) -> None:
    """Plain (non-idempotent) producer, with the settings' security options."""
    p = AIOKafkaProducer(**settings.kafka.client_options())
    await p.start()
    try:
        for i, v in enumerate(values):
            key = keys[i] if keys else b"A"
            await p.send_and_wait(settings.kafka.input_topics[0], v, key=key)
    finally:
        await p.stop()


async def control_records(settings: Settings) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every (offset, key, value) the control topic holds now, oldest first."""
    c = AIOKafkaConsumer(**settings.kafka.client_options(consumer=True), enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(settings.kafka.control_topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        end = (await c.end_offsets([tp]))[tp]
        out: list[tuple[int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 15
        while await c.position(tp) < end:
            assert time.monotonic() < deadline, "could not read the control topic to its end"
            for msgs in (await c.getmany(tp, timeout_ms=200)).values():
                out += [(m.offset, m.key, m.value) for m in msgs]
        return out
    finally:
        await c.stop()


@dataclass(frozen=True)
class Batch:
    """A record batch header as Kafka stores it (message format v2)."""

    base_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    count: int


_BATCH = struct.Struct(">qiibIhiqqqhii")  # baseOffset .. recordsCount: 61 bytes


def stored_batches(partition_dir: Path) -> list[Batch]:
    """Parse the batch headers of every segment of one partition, on the broker's disk."""
    out = []
    for segment in sorted(partition_dir.glob("*.log")):
        data, pos = segment.read_bytes(), 0
        while pos + _BATCH.size <= len(data):
            fields = _BATCH.unpack_from(data, pos)
            base, length, magic = fields[0], fields[1], fields[3]
            assert magic == 2, f"{segment}: batch of magic {magic}"
            out.append(Batch(base, fields[9], fields[10], fields[11], fields[12]))
            pos += 12 + length
    return sorted(out, key=lambda b: b.base_offset)


# the idempotent producer -----------------------------------------------------
async def test_idempotent_producer_publishes_halts_and_heartbeats(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    settings = kafka_settings(apache_kafka.bootstrap_servers, tmp_path)
    assert settings.kafka.idempotent_producer
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    try:
        await produce(settings, *RUNAWAY)
        await wait_for(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")
        await asyncio.sleep(0.5)  # a few heartbeats after the halt
    finally:
        await sidecar.stop()
    reader = AIOKafkaConsumer(**settings.kafka.client_options(consumer=True))
    await reader.start()
    try:
        view = await read_to_end(reader, settings.kafka.control_topic, ControlView())
    finally:
        await reader.stop()
    assert view.states["strategy:smars"].state == "HALTED"
    assert view.states["strategy:smars"].transition.rule == "overfill"
    assert view.heartbeat is not None and view.heartbeat.instance == settings.runtime.instance
    assert view.heartbeat.events_applied == len(RUNAWAY)

    # On disk every batch riskguard wrote carries a producer id: one for states and
    # heartbeats, one for the gates' data (rules, marks, positions); per producer the
    # sequence numbers run on without a gap: the broker de-duplicated by them.
    assert apache_kafka.log_dir is not None
    control = stored_batches(apache_kafka.log_dir / f"{settings.kafka.control_topic}-0")
    assert all(b.producer_id >= 0 for b in control), control
    producers: dict[tuple[int, int], list[Batch]] = {}
    for b in control:
        producers.setdefault((b.producer_id, b.producer_epoch), []).append(b)
    assert len(producers) == 2, control  # the __rules__ record came from the data producer
    assert max(len(batches) for batches in producers.values()) >= 5, control
    for batches in producers.values():
        for before, after in itertools.pairwise(batches):
            assert after.base_sequence == before.base_sequence + before.count, (before, after)
    # ... while the test's plain producer wrote the input without a producer id.
    inputs = [
        b
        for part in apache_kafka.log_dir.glob(f"{settings.kafka.input_topics[0]}-*")
        for b in stored_batches(part)
    ]
    assert inputs and {b.producer_id for b in inputs} == {-1}


# compaction ------------------------------------------------------------------
COMPACT_FAST = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


async def test_control_topic_is_compacted_and_a_late_gate_sees_every_state(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    settings = kafka_settings(apache_kafka.bootstrap_servers, tmp_path)
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:  # riskguard leaves an existing control topic as it is
        await admin.create_topics(
            [NewTopic(settings.kafka.control_topic, 1, 1, topic_configs=COMPACT_FAST)]
        )
    finally:
        await admin.close()
    scopes = [f"account:A{i}" for i in range(6)]
    final = dict(zip(scopes, ["HALTED", "HALTED", "REDUCE_ONLY", "REDUCE_ONLY"], strict=False))
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    try:
        for rnd in range(8):
            for scope in scopes:
                await sidecar.manual("halt", scope, "alice", f"drill {rnd}")
                await sidecar.manual("resume", scope, "alice", f"drill {rnd} over")
        for scope, state in final.items():
            action = "halt" if state == "HALTED" else "reduce_only"
            await sidecar.manual(action, scope, "bob", "for real")
        published = 8 * 2 * len(scopes) + len(final)
        latest = {s: sidecar.engine.killswitch.standing().get(s) for s in scopes}

        # Wait for the cleaner: one state record and one cancel request left per scope
        # (heartbeats keep rolling 100 ms segments, so every record lands in a cleanable
        # one; every halt wrote its cancel request, keyed cancel:<scope>:0).
        deadline = time.monotonic() + 60
        cancel_keys = sorted(f"cancel:{s}:0".encode() for s in scopes)
        while True:
            records = await control_records(settings)
            state_keys = [k for _, k, v in records if isinstance(decode_record(v), StateRecord)]
            cancels = [k for _, k, v in records if isinstance(decode_record(v), CancelRecord)]
            if sorted(state_keys) == sorted(s.encode() for s in scopes) and (
                sorted(cancels) == cancel_keys
            ):
                break
            assert time.monotonic() < deadline, (
                f"not compacted within 60 s: {len(state_keys)} state records left of "
                f"{published} published"
            )
            await asyncio.sleep(0.5)
        end = records[-1][0] + 1
        assert len(records) < end / 2, f"{len(records)} records left at offsets 0..{end - 1}"
        history = [o for o, _, v in records if isinstance(decode_record(v), StateRecord)]
        assert len(history) == len(scopes) < published
        survivors = {}
        for _, key, value in records:
            rec = decode_record(value)
            if isinstance(rec, StateRecord):
                survivors[rec.scope] = rec
                assert key == rec.scope.encode()
        requests = {
            rec.scope: rec
            for _, _, value in records
            if isinstance(rec := decode_record(value), CancelRecord)
        }
        for scope in scopes:  # the survivor is the latest decision of each scope
            assert survivors[scope].state == final.get(scope, "ACTIVE")
            ends = survivors[scope].transition.ends
            asked = latest[scope].id if scope in final else ends  # type: ignore[union-attr]
            assert requests[scope].halt_id == asked  # the latest request of the scope
            if scope in final:
                assert survivors[scope].transition.id == latest[scope].id  # type: ignore[union-attr]
            else:
                assert survivors[scope].transition.operator == "alice"
                assert survivors[scope].transition.reason == "drill 7 over"

        async with Gate(
            settings.kafka.bootstrap_servers,
            settings.kafka.control_topic,
            heartbeat_timeout_ms=2000,
        ) as gate:
            assert gate.view.records < published  # it read the compacted topic
            assert {s: gate.state(s) for s in scopes} == {s: final.get(s, "ACTIVE") for s in scopes}
            assert set(gate.view.standing()) == set(final)
            await wait_for(lambda: gate.health().allowed)
            refused = gate.allows("A0", "smars", "X", "buy", False)
            assert not refused and refused.scope == "account:A0" and "for real" in refused.reason
            assert not gate.allows("A2", "smars", "X", "buy", False)
            assert gate.allows("A2", "smars", "X", "sell", True)  # reduce-only
            assert gate.allows("A5", "smars", "X", "buy", False)
    finally:
        await sidecar.stop()


# consumer group offsets ------------------------------------------------------
async def test_group_holds_the_offsets_the_sidecar_applied(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    settings = kafka_settings(apache_kafka.bootstrap_servers, tmp_path)
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    accounts = [f"A{i}" for i in range(8)]
    events = [
        ev(
            type="fill",
            account=accounts[i % len(accounts)],
            strategy=f"s-{accounts[i % len(accounts)]}",
            order_id=f"o{i}",
            exec_id=f"e{i}",
            side="buy",
            qty=1,
            price=10,
        )
        for i in range(40)
    ]
    try:
        await produce(settings, *events, keys=[accounts[i % 8].encode() for i in range(40)])
        await wait_for(lambda: sidecar.engine.events_applied == len(events))
        marks = sidecar.checkpoints
        await wait_for(lambda: dict(marks.committed) == dict(marks.applied), timeout=10)
        applied = dict(marks.applied)
    finally:
        await sidecar.stop()
    assert len(applied) == settings.kafka.input_partitions
    assert sum(applied.values()) == len(events)  # every partition started at offset 0
    assert sum(1 for off in applied.values() if off > 0) >= 2  # spread over partitions
    reader = AIOKafkaConsumer(
        **settings.kafka.client_options(consumer=True),
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        committed = {tp: await reader.committed(tp) for tp in applied}
        ends = await reader.end_offsets(list(applied))
    finally:
        await reader.stop()
    assert committed == applied
    assert ends == applied


# SASL/SCRAM --------------------------------------------------------------------
async def test_sidecar_and_gate_work_over_sasl_scram(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    settings = kafka_settings(apache_kafka.sasl_bootstrap_servers, tmp_path, **SASL)
    sidecar = Sidecar(settings, OVERFILL)
    await sidecar.start()
    try:
        async with Gate(
            settings.kafka.bootstrap_servers,
            settings.kafka.control_topic,
            heartbeat_timeout_ms=2000,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username=SCRAM_USER,
            sasl_plain_password=SCRAM_PASSWORD,
        ) as gate:
            await wait_for(lambda: bool(gate.allows("A", "smars", "RSHYY", "buy", False)))
            await produce(settings, *RUNAWAY)
            await wait_for(lambda: not gate.allows("A", "smars", "RSHYY", "buy", False))
            verdict = gate.allows("A", "smars", "RSHYY", "buy", False)
            assert verdict.scope == "strategy:smars" and "rule overfill" in verdict.reason
    finally:
        await sidecar.stop()
    assert sidecar.engine.events_applied == len(RUNAWAY)


async def test_gate_with_a_wrong_password_fails_fast_saying_why(
    apache_kafka: ApacheKafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(
        apache_kafka.sasl_bootstrap_servers,
        "riskguard.control",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=SCRAM_USER,
        sasl_plain_password="not-the-password",
    )
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(gate.start(), 30)
    assert time.monotonic() - started < 15
    assert "Authentication failed" in caplog.text and "invalid credentials" in caplog.text
    await gate.stop()


def test_run_with_a_wrong_password_exits_with_the_reason(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    wrong = "wrong-" + SCRAM_PASSWORD[::-1]
    config = tmp_path / "riskguard.toml"
    config.write_text(f"""
limits = "{LIMITS}"
[kafka]
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-256"
sasl_plain_username = "{SCRAM_USER}"
[runtime]
audit_log = "{tmp_path / "audit.jsonl"}"
journal = "{tmp_path / "journal.jsonl"}"
snapshot_dir = "{tmp_path / "snapshots"}"
""")
    proc = spawn_run(
        config,
        free_port(),
        apache_kafka.sasl_bootstrap_servers,
        env={"RISKGUARD_KAFKA_SASL_PLAIN_PASSWORD": wrong},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=60)  # a bounded failure, never a hang
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode(errors="replace")
    assert proc.returncode == EXIT_USAGE, text
    assert "Authentication failed" in text and "invalid credentials" in text, text
    assert f"riskguard run: cannot start on Kafka at {apache_kafka.sasl_bootstrap_servers}" in text
    assert f"SCRAM-SHA-256 as '{SCRAM_USER}'" in text
    assert "Traceback" not in text, text
    assert wrong not in text  # the secret itself is never printed


# riskguard as shipped -----------------------------------------------------------
async def test_a_gate_finds_a_topic_the_broker_does_not_list_up_front(
    apache_kafka: ApacheKafkaBroker,
) -> None:
    topic = f"control-{time.time_ns()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap_servers)
    await p.start()
    try:
        assert await p.partitions_for(topic) == {0}  # the broker serves the topic
    finally:
        await p.stop()
    gate = Gate(apache_kafka.bootstrap_servers, topic)
    try:
        # before the fix: TimeoutError "topic ... not found within 1.5 s" (aiokafka's
        # consumer.topics() did not refresh the consumer's own metadata)
        await gate.start(timeout_s=1.5)
        assert gate.health().reason.startswith("fail closed: no heartbeat")
    finally:
        await gate.stop()


# the broker itself ---------------------------------------------------------------
def test_a_broker_that_cannot_start_says_why(kafka_jars: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: Kafka cannot bind it either
        broker = ApacheKafkaBroker(port=taken.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(BrokerError, match="Address already in use") as caught:
            broker.start(timeout_s=60)
    assert time.monotonic() - started < 60
    assert "during start-up; its log:\nerrors:" in str(caught.value)
    assert not broker.running() and broker.log_path is None  # stopped, data removed


def test_the_jvm_dies_with_the_process_that_started_it(kafka_jars: Path) -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from riskguard.apache_kafka import ApacheKafkaBroker\n"
            "b = ApacheKafkaBroker()\n"
            "b.start()\n"
            "print(b.pid, b.log_path.parent, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        pid_text, data = starter.stdout.readline().split()
        jvm = int(pid_text)
        assert _alive(jvm)
        starter.kill()  # no atexit, no finally: only PR_SET_PDEATHSIG is left
        starter.wait()
        deadline = time.monotonic() + 15
        while _alive(jvm):
            assert time.monotonic() < deadline, f"JVM {jvm} outlived its parent"
            time.sleep(0.1)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        shutil.rmtree(data, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running, i.e. not gone and not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# the command -------------------------------------------------------------------
def test_broker_command_runs_apache_kafka_until_ctrl_c(kafka_jars: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riskguard", "broker", "--kind", "apache-kafka"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = log = ""
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"exited early: {proc.stderr.read() if proc.stderr else ''}"
            if "export KAFKA_BOOTSTRAP_SERVERS=" in line:
                address = line.strip().split("=", 1)[1]
            if "data and log" in line:
                log = line.split(": ", 1)[1].strip()
        assert address and log

        async def roundtrip() -> int:
            p = AIOKafkaProducer(bootstrap_servers=address, enable_idempotence=True)
            await p.start()
            try:
                meta = await p.send_and_wait("cli-check", b"x")
            finally:
                await p.stop()
            return int(meta.offset)

        assert asyncio.run(roundtrip()) == 0
        jvm = Path(log).parent
        assert jvm.is_dir()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not jvm.exists()  # removed only after the JVM exited
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
