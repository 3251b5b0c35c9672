"""The gate's decision against the language-neutral control-topic vectors, and its imports.

``docs/control-topic-vectors.json`` is the contract's executable half
(``docs/control-topic.md``, "Test vectors"); the runner below is the reference for
gates written in other languages. It drives :mod:`riskguard.control.decision`, the
code :meth:`riskguard.gate.Gate.allows` answers with.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from riskguard.control.cancel_requests import delivery, due_cancels
from riskguard.control.decision import allows, check, health
from riskguard.control.records import (
    HEARTBEAT_KEY,
    RULES_KEY,
    ApprovalRecord,
    CancelOrder,
    CancelRecord,
    HeartbeatRecord,
    HomeRecord,
    InstrumentRecord,
    MarkRecord,
    PositionRecord,
    RuleRecord,
    RulesRecord,
    StateRecord,
    approval_key,
    cancel_key,
    decode_record,
    encode_record,
    heartbeat_message,
    home_key,
    instrument_key,
    mark_key,
    position_key,
    state_message,
)
from riskguard.control.view import ControlView, Instant
from riskguard.ingest.cancels import cancel_records
from riskguard.inspection import WorkingOrder
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


def outcome(
    view: ControlView, case: dict[str, Any], query: dict[str, Any], delivered: set[Any]
) -> Any:
    """What the gate answers to one query: a verdict's fields, or the cancel parts newly due."""
    op = query.get("op", "allows")
    when = at(query["at_ms"])
    if op == "cancels":
        due = due_cancels(view, list(view.cancels), delivered)
        delivered.update(delivery(r) for r in due)
        return [cancel_expectation(r) for r in due]
    if op == "health":
        v = health(view, case["heartbeat_timeout_ms"], when)
        return {"allowed": v.allowed, "state": v.state, "instances": list(v.instances)}
    keys = (query["account"], query["strategy"], query["symbol"], query["side"])
    if op == "allows":
        reduces = query["reduces_position"]
        v = allows(view, case["heartbeat_timeout_ms"], when, *keys, reduces, query.get("venue"))
        return {"allowed": v.allowed, "state": v.state, "scope": v.scope}
    assert op == "check", op
    v = check(
        view,
        case["heartbeat_timeout_ms"],
        when,
        *keys,
        query["qty"],
        query["price"],
        query["reference_price"],
        query.get("venue"),
        query.get("filled", 0.0),
        query.get("prior_qty"),
    )
    got: dict[str, Any] = {"allowed": v.allowed, "state": v.state, "scope": v.scope, "rule": v.rule}
    if v.rule is not None:
        got["value"], got["limit"] = v.value, v.limit
    got["alerts"] = list(v.alerts)
    return got


def cancel_expectation(record: CancelRecord) -> dict[str, Any]:
    """A due part as the vectors list it; ``source`` only for a part that names one."""
    expected: dict[str, Any] = {
        "scope": record.scope,
        "halt_id": record.halt_id,
        "kind": record.kind,
        "part": record.part,
        "parts": record.parts,
        "order_ids": [o.order_id for o in record.orders],
    }
    if record.named_by:
        expected["source"] = record.named_by
    return expected


def by_part(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(parts, key=lambda d: (d["halt_id"], d.get("source", ""), d["part"]))


def same(got: Any, want: Any) -> bool:
    """Equal; numbers (not booleans) within a relative 1e-9: value and limit are doubles."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same(g, w) for g, w in zip(got, want, strict=True))
        )
    numbers = (int, float)
    if isinstance(want, numbers) and not isinstance(want, bool):
        return (
            isinstance(got, numbers)
            and not isinstance(got, bool)
            and math.isclose(got, want, rel_tol=1e-9)
        )
    return type(got) is type(want) and bool(got == want)


def run_case(case: dict[str, Any]) -> list[Any]:
    """Each query's outcome, reading every record due by its time first."""
    view = ControlView()
    pending = list(case["records"])
    delivered: set[Any] = set()
    outcomes = []
    for query in case["queries"]:
        while pending and pending[0]["read_at_ms"] <= query["at_ms"]:
            record = pending.pop(0)
            view.apply([value_bytes(record)], at(record["read_at_ms"]))
        outcomes.append(outcome(view, case, query, delivered))
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any]) -> None:
    for query, answer in zip(case["queries"], run_case(case), strict=True):
        got, want = answer, query["expect"]
        if query.get("op") == "cancels":  # a set of parts: compared in a fixed order
            got, want = by_part(answer), by_part(want)
        assert same(got, want), (case["name"], case["about"], query, answer)


def writer_key(record: Any) -> bytes | None:
    """The compaction key a writer must use for a decoded record (None: unreadable)."""
    if isinstance(record, StateRecord):
        return record.scope.encode()
    if isinstance(record, HeartbeatRecord):
        return HEARTBEAT_KEY
    if isinstance(record, CancelRecord):
        return cancel_key(record.scope, record.part, record.named_by)
    if isinstance(record, RulesRecord):
        return RULES_KEY
    if isinstance(record, MarkRecord):
        return mark_key(record.symbol)
    if isinstance(record, InstrumentRecord):
        return instrument_key(record.symbol)
    if isinstance(record, PositionRecord):
        return position_key(record.scope, record.symbol)
    if isinstance(record, HomeRecord):
        return home_key(record.strategy)
    if isinstance(record, ApprovalRecord):
        return approval_key(record.scope)
    return None


def test_vectors_are_well_formed() -> None:
    assert DOC["schema"] == 1 and DOC["format"] == 6
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    ops: set[str] = set()
    for case in CASES:
        reads = [r["read_at_ms"] for r in case["records"]]
        times = [q["at_ms"] for q in case["queries"]]
        assert reads == sorted(reads) and times == sorted(times), case["name"]
        assert case["queries"], case["name"]
        for record in case["records"]:
            assert ("value" in record) != ("value_b64" in record), (case["name"], record)
            key = writer_key(decode_record(value_bytes(record)))
            if key is not None:
                assert record["key"].encode() == key, (case["name"], record)
        for query in case["queries"]:
            op = query.get("op", "allows")
            ops.add(op)
            if op == "cancels":
                assert isinstance(query["expect"], list), (case["name"], query)
                continue
            if op == "health":
                assert query["expect"].keys() == {"allowed", "state", "instances"}, query
                continue
            assert query["side"] in ("buy", "sell"), (case["name"], query)
            expect = query["expect"]
            if op == "allows":
                assert expect.keys() == {"allowed", "state", "scope"}, (case["name"], query)
            else:
                assert op == "check" and query["qty"] > 0, (case["name"], query)
                fields = {"allowed", "state", "scope", "rule", "alerts"}
                if expect["rule"] is not None:
                    fields |= {"value", "limit"}
                assert expect.keys() == fields, (case["name"], query)
    assert ops == {"allows", "check", "cancels", "health"}


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
    messages = [state_message(halt), state_message(resume)]
    # heartbeats name the limits in force (active-active); transitions their instance
    beat = HeartbeatRecord(
        ts=EPOCH_NS,
        instance="rg-2",
        ready=True,
        interval_ms=250,
        last_event_ns=EPOCH_NS - 5 * MS,
        events_applied=1000,
        limits_sha256="b" * 64,
    )
    messages.append(heartbeat_message(beat))
    firm = Transition(
        id=f"firm@{EPOCH_NS + 10 * MS}:HALTED",
        scope="firm",
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=EPOCH_NS + 10 * MS,
        decided_ns=EPOCH_NS + 10 * MS,
        operator="ops",
        reason="venue outage",
        instance="rg-1",
    )
    messages.append(state_message(firm))
    step = ApprovalRecord(
        event="requested",
        request_id="r-0a1b2c3d4e5f",
        scope="firm",
        requested_by="alice",
        reason="venue back",
        requested_ns=EPOCH_NS + 20 * MS,
        expires_ns=EPOCH_NS + 20 * MS + 600_000 * MS,
        instance="rg-1",
        ts=EPOCH_NS + 20 * MS,
        lifts=firm.id,
    )
    messages.append((approval_key("firm"), encode_record(step)))
    # issue 11's record kinds, as the cases use them
    fat = RuleRecord("fat-finger", "order_qty", "strategy", "halt", max=1000.0)
    messages.append((RULES_KEY, encode_record(RulesRecord("a" * 64, (fat,), EPOCH_NS))))
    messages.append((mark_key("XYZ"), encode_record(MarkRecord("XYZ", 100.0, EPOCH_NS))))
    position = PositionRecord("strategy:s1", "XYZ", 100.0, EPOCH_NS + 11 * MS)
    messages.append((position_key("strategy:s1", "XYZ"), encode_record(position)))
    halt_10 = strategy_s1("HALTED", "ACTIVE", 10, kind="manual", operator="ops", reason="x")
    part = CancelRecord(
        halt_id=halt_10.id,
        scope="strategy:s1",
        kind="halt",
        reason="by ops: limit review",
        part=1,
        parts=2,
        orders=(CancelOrder("o3", "A1", "s1", "ABC", "buy", 0.5),),
        ts=EPOCH_NS + 11 * MS,
    )
    messages.append((cancel_key("strategy:s1", 1), encode_record(part)))
    # group mode: a member's part of a firm halt, tagged with its name
    firm_halt = Transition(
        id=f"firm@{EPOCH_NS + 10 * MS}:HALTED",
        scope="firm",
        from_="ACTIVE",
        to="HALTED",
        kind="manual",
        ts=EPOCH_NS + 10 * MS,
        decided_ns=EPOCH_NS + 10 * MS,
        operator="ops",
        reason="venue outage",
        instance="rg-1",
    )
    messages.append(state_message(firm_halt))
    (member,) = cancel_records(
        firm_halt,
        [WorkingOrder("o4", "A2", "s1", "XYZ", "buy", 100.0)],
        EPOCH_NS + 12 * MS,
        "rg-2",
    )
    messages.append((cancel_key("firm", 0, "rg-2"), encode_record(member)))
    for message in messages:
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
