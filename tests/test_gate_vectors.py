"""The gate's decision against the language-neutral control-topic vectors, and its imports.

``docs/control-topic-vectors.json`` is the contract's executable half
(``docs/control-topic.md``, "Test vectors"); the runner below is the reference for
gates written in other languages. It drives :mod:`riskguard.control.decision`, the
code :meth:`riskguard.gate.Gate.allows` answers with.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from riskguard.control.decision import allows
from riskguard.control.records import (
    HEARTBEAT_KEY,
    HeartbeatRecord,
    StateRecord,
    decode_record,
    heartbeat_message,
    state_message,
)
from riskguard.control.view import ControlView, Instant
from riskguard.vocabulary import Transition

VECTORS = Path(__file__).resolve().parents[1] / "docs" / "control-topic-vectors.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text())
CASES: list[dict[str, Any]] = DOC["cases"]
EPOCH_NS: int = DOC["epoch_ns"]
MS = 1_000_000


def value_bytes(record: dict[str, Any]) -> bytes | None:
    """The message value exactly as on the topic (None: a tombstone)."""
    if "value_b64" in record:
        return base64.b64decode(record["value_b64"])
    value: str | None = record["value"]
    return None if value is None else value.encode()


def at(offset_ms: int) -> Instant:
    """The vectors' clock: wall and monotonic time advance together from ``epoch_ns``."""
    return Instant(EPOCH_NS + offset_ms * MS, EPOCH_NS + offset_ms * MS)


def run_case(case: dict[str, Any]) -> list[tuple[bool, str, str | None]]:
    """Each query's (allowed, state, scope), reading every record due by its time first."""
    view = ControlView()
    pending = list(case["records"])
    verdicts = []
    for query in case["queries"]:
        while pending and pending[0]["read_at_ms"] <= query["at_ms"]:
            record = pending.pop(0)
            view.apply([value_bytes(record)], at(record["read_at_ms"]))
        verdict = allows(
            view,
            case["heartbeat_timeout_ms"],
            at(query["at_ms"]),
            query["account"],
            query["strategy"],
            query["symbol"],
            query["side"],
            query["reduces_position"],
        )
        verdicts.append((verdict.allowed, verdict.state, verdict.scope))
    return verdicts


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any]) -> None:
    expected = [
        (q["expect"]["allowed"], q["expect"]["state"], q["expect"]["scope"])
        for q in case["queries"]
    ]
    assert run_case(case) == expected, case["about"]


def test_vectors_are_well_formed() -> None:
    assert DOC["schema"] == 1 and DOC["format"] == 1
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for case in CASES:
        reads = [r["read_at_ms"] for r in case["records"]]
        times = [q["at_ms"] for q in case["queries"]]
        assert reads == sorted(reads) and times == sorted(times), case["name"]
        assert case["queries"], case["name"]
        for record in case["records"]:
            assert ("value" in record) != ("value_b64" in record), (case["name"], record)
            # the key a writer must use: the record's scope, or __heartbeat__
            decoded = decode_record(value_bytes(record))
            if isinstance(decoded, StateRecord):
                assert record["key"] == decoded.scope, (case["name"], record)
            elif isinstance(decoded, HeartbeatRecord):
                assert record["key"].encode() == HEARTBEAT_KEY, (case["name"], record)
        for query in case["queries"]:
            assert query["side"] in ("buy", "sell"), (case["name"], query)


def strategy_s1(to: str, from_: str, decided_ms: int, **evidence: Any) -> Transition:
    """A transition of ``strategy:s1`` decided ``decided_ms`` after the epoch."""
    decided_ns = EPOCH_NS + decided_ms * MS
    ts = decided_ns - MS if evidence.get("kind") == "auto" else decided_ns
    tr_id = f"strategy:s1@{decided_ns}:{to}"
    return Transition(
        id=tr_id, scope="strategy:s1", from_=from_, to=to, ts=ts, decided_ns=decided_ns, **evidence
    )


def test_vectors_hold_what_riskguard_writes() -> None:
    """Byte for byte, riskguard's own encoder produces records the vectors use."""
    on_topic = {(r["key"].encode(), value_bytes(r)) for case in CASES for r in case["records"]}
    halt = strategy_s1(
        "HALTED",
        "ACTIVE",
        100,
        kind="auto",
        rule="smars-overfill",
        metric="parent_overfill_ratio",
        value=1.5,
        limit=1.0,
    )
    resume = strategy_s1(
        "ACTIVE", "HALTED", 200, kind="manual", operator="ops", reason="limit review", ends=halt.id
    )
    beat = HeartbeatRecord(
        ts=EPOCH_NS,
        instance="rg-1",
        ready=True,
        interval_ms=250,
        last_event_ns=EPOCH_NS - 5 * MS,
        events_applied=1000,
    )
    for message in (state_message(halt), state_message(resume), heartbeat_message(beat)):
        assert message in on_topic, message


def test_gate_import_loads_no_numpy_numba_or_state() -> None:
    """A trading process that embeds the gate loads none of the engine's machinery."""
    code = (
        "import riskguard.gate, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba') "
        "or m == 'riskguard.state' or m.startswith('riskguard.state.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
