"""The gate hands riskguard's cancel requests to ``on_cancel`` (recorded records, no broker).

When a part is due is in the vectors (``cancels_*`` cases); here is the Python gate's
side: the :class:`CancelRequest` it builds, sync and async callbacks, a callback that
raises, the once-per-process ledger across Gate objects, and cancel on disconnect.
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from riskguard.control.cancel_requests import DisconnectWatch
from riskguard.gate import CancelOrder, CancelRequest, Gate
from tests.gate_records import FAT, Message, cancel, heartbeat, order, rules, state, transition

T = 1_700_000_000_000_000_000
MS = 1_000_000


class Router:
    """What a trading system registers: it keeps every request it was handed."""

    def __init__(self) -> None:
        self.requests: list[CancelRequest] = []

    def on_cancel(self, request: CancelRequest) -> None:
        self.requests.append(request)


@pytest.fixture
def topic() -> str:
    return f"control-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def gates() -> AsyncIterator[Callable[..., Gate]]:
    """Gates never started (no broker), stopped at the end."""
    made: list[Gate] = []

    def make(topic: str, **options: Any) -> Gate:
        made.append(Gate("127.0.0.1:9", topic, **options))
        return made[-1]

    yield make
    for g in made:
        await g.stop()


def feed(gate: Gate, *messages: Message) -> None:
    gate._receive([value for _key, value in messages])


HALT = transition("strategy:s1", "HALTED", T + 10 * MS)
PARTS = [
    cancel(HALT, 0, 2, [order("o1"), order("o2", account="A2", side="sell", open_qty=40.0)]),
    cancel(HALT, 1, 2, [order("o3", symbol="ABC", open_qty=0.5)]),
]


async def test_request_carries_the_orders_once(gates: Callable[..., Gate], topic: str) -> None:
    router = Router()
    gate = gates(topic, on_cancel=router.on_cancel)
    feed(gate, *PARTS)
    assert router.requests == []  # no state record yet: not standing
    feed(gate, state(HALT))
    assert router.requests == [
        CancelRequest(
            "strategy:s1",
            (
                CancelOrder("o1", "A1", "s1", "XYZ", "buy", 100.0),
                CancelOrder("o2", "A2", "s1", "XYZ", "sell", 40.0),
            ),
            "by ops: test",
            HALT.id,
            "halt",
            0,
            2,
            HALT.decided_ns,
        ),
        CancelRequest(
            "strategy:s1",
            (CancelOrder("o3", "A1", "s1", "ABC", "buy", 0.5),),
            "by ops: test",
            HALT.id,
            "halt",
            1,
            2,
            HALT.decided_ns,
        ),
    ]
    feed(gate, state(HALT), *PARTS)  # read again (a re-publish): never twice
    assert len(router.requests) == 2 and gate.cancels_delivered == 2


async def test_each_group_members_parts_are_handed_over_once(
    gates: Callable[..., Gate], topic: str
) -> None:
    """Group mode: two members' parts of one halt, both numbered from 0, are two
    requests; a part read again, or by another Gate in the process, is not handed over
    again; a later halt's parts replace them."""
    router = Router()
    gate = gates(topic, on_cancel=router.on_cancel)
    firm = transition("firm", "HALTED", T + 10 * MS)
    mine = cancel(firm, 0, 1, [order("o1")], source="rg-1")
    theirs = cancel(firm, 0, 1, [order("o2", account="A2")], source="rg-2")
    assert (mine[0], theirs[0]) == (b"cancel:firm:rg-1:0", b"cancel:firm:rg-2:0")
    with capture_logs() as logs:
        feed(gate, state(firm), mine, theirs, mine)
    assert [(r.source, r.part, r.orders[0].order_id) for r in router.requests] == [
        ("rg-1", 0, "o1"),
        ("rg-2", 0, "o2"),
    ]
    assert [e["source"] for e in logs if e["event"] == "cancel request"] == ["rg-1", "rg-2"]
    assert set(gate.view.cancels["firm"]) == {("rg-1", 0), ("rg-2", 0)}
    again = gates(topic, on_cancel=router.on_cancel)  # a reconnect in the same process
    feed(again, state(firm), theirs, mine)
    assert len(router.requests) == 2
    later = transition("firm", "HALTED", T + 50 * MS)
    feed(gate, state(later), cancel(later, 0, 1, [order("o9")], source="rg-2"))
    assert [(r.halt_id, r.source) for r in router.requests[2:]] == [(later.id, "rg-2")]
    assert gate.view.cancels["firm"]["rg-2", 0].halt_id == later.id


async def test_a_part_whose_source_is_null_or_empty_names_every_order(
    gates: Callable[..., Gate], topic: str
) -> None:
    """``source`` absent, ``null`` or ``""``: the one request of an instance knowing
    every order; the three are the same part (the later replaces the earlier)."""
    router = Router()
    gate = gates(topic, on_cancel=router.on_cancel)
    key, value = cancel(HALT, 0, 1, [order("o1")])
    assert b"source" not in value  # riskguard writes no source outside group mode
    null = value.replace(b',"v":1}', b',"source":null,"v":1}')
    empty = value.replace(b',"v":1}', b',"source":"","v":1}')
    feed(gate, (key, null), (key, empty))
    assert list(gate.view.cancels["strategy:s1"]) == [("", 0)]
    feed(gate, state(HALT), (key, value))
    assert [(r.source, r.part) for r in router.requests] == [("", 0)]


async def test_async_callback_runs_on_the_loop(gates: Callable[..., Gate], topic: str) -> None:
    done: list[tuple[str, int]] = []

    async def on_cancel(request: CancelRequest) -> None:
        await asyncio.sleep(0.01)  # a venue round trip
        done.append((request.halt_id, request.part))

    gate = gates(topic, on_cancel=on_cancel)
    feed(gate, state(HALT), *PARTS)
    assert done == []  # the gate does not wait for the router
    for _ in range(100):
        if len(done) == 2:
            break
        await asyncio.sleep(0.01)
    assert done == [(HALT.id, 0), (HALT.id, 1)]


async def test_callback_that_raises_is_logged_and_the_gate_goes_on(
    gates: Callable[..., Gate], topic: str
) -> None:
    seen: list[int] = []

    def on_cancel(request: CancelRequest) -> None:
        seen.append(request.part)
        if request.part == 0:
            raise RuntimeError("venue session down")

    gate = gates(topic, on_cancel=on_cancel)
    with capture_logs() as logs:
        feed(gate, state(HALT), *PARTS)
    assert seen == [0, 1] and gate.callback_errors == 1
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["event"] == "on_cancel raised; the gate goes on"
    assert (error["halt_id"], error["part"]) == (HALT.id, 0)

    async def broken(request: CancelRequest) -> None:
        raise RuntimeError("async failure")

    other = gates(topic, on_cancel=broken)
    with capture_logs() as logs:
        feed(other, state(HALT), PARTS[0])
        for _ in range(100):
            if other.callback_errors:
                break
            await asyncio.sleep(0.01)
    assert other.callback_errors == 1
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "on_cancel raised; the gate goes on"
    ]


async def test_a_restarted_gate_does_not_repeat(gates: Callable[..., Gate], topic: str) -> None:
    """Once per (control topic, callback) in this process, whichever Gate object read it."""
    router = Router()
    first = gates(topic, on_cancel=router.on_cancel)
    feed(first, state(HALT), *PARTS)
    again = gates(topic, on_cancel=router.on_cancel)  # a new Gate, the same router
    feed(again, state(HALT), *PARTS)
    assert [r.part for r in router.requests] == [0, 1]
    later = transition("account:A1", "HALTED", T + 20 * MS)
    feed(again, state(later), cancel(later, 0, 1, [order("o4")]))
    assert [r.halt_id for r in router.requests] == [HALT.id, HALT.id, later.id]
    # another router in the same process, or the same router on another topic, is told
    other = Router()
    feed(gates(topic, on_cancel=other.on_cancel), state(HALT), *PARTS)
    elsewhere = Router()
    feed(gates(f"{topic}-b", on_cancel=elsewhere.on_cancel), state(HALT), *PARTS)
    assert len(other.requests) == 2 and len(elsewhere.requests) == 2


@dataclass
class Recorder:
    """A callable dataclass: unhashable (eq without frozen), so keyed by identity."""

    parts: list[int] = field(default_factory=list)

    def __call__(self, request: CancelRequest) -> None:
        self.parts.append(request.part)


async def test_unhashable_callback_is_keyed_by_identity(
    gates: Callable[..., Gate], topic: str
) -> None:
    recorder = Recorder()
    feed(gates(topic, on_cancel=recorder), state(HALT), *PARTS)
    feed(gates(topic, on_cancel=recorder), state(HALT), *PARTS)
    fresh = Recorder()  # equal to the first by value, but another object: told
    feed(gates(topic, on_cancel=fresh), state(HALT), *PARTS)
    assert recorder.parts == [0, 1] and fresh.parts == [0, 1]


async def test_no_callback_delivers_nothing_and_marks_nothing(
    gates: Callable[..., Gate], topic: str
) -> None:
    feed(gates(topic), heartbeat(), state(HALT), *PARTS)
    router = Router()
    feed(gates(topic, on_cancel=router.on_cancel), state(HALT), *PARTS)
    assert len(router.requests) == 2


def test_disconnect_watch_fires_once_per_outage() -> None:
    watch = DisconnectWatch(after_ms=500)
    assert not watch.step(True, 0)
    assert not watch.step(False, 1_000 * MS)  # failing from here
    assert not watch.step(False, 1_499 * MS)
    assert watch.step(False, 1_500 * MS)
    assert not watch.step(False, 9_000 * MS)  # once
    assert not watch.step(True, 9_001 * MS)  # healthy again: re-armed
    assert not watch.step(False, 9_002 * MS)
    assert watch.step(False, 9_502 * MS)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "500"])
def test_cancel_on_disconnect_needs_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ValueError, match="cancel_on_disconnect_ms must be an integer > 0"):
        Gate("127.0.0.1:9", on_cancel=Router().on_cancel, cancel_on_disconnect_ms=bad)


def test_cancel_on_disconnect_needs_a_callback() -> None:
    with pytest.raises(ValueError, match="needs on_cancel"):
        Gate("127.0.0.1:9", cancel_on_disconnect_ms=500)


@pytest.mark.parametrize("policy", ["latest", "earliest", "none"])
def test_auto_offset_reset_is_the_gates_own(policy: str) -> None:
    """aiokafka's "latest" would skip what riskguard published again into a new topic."""
    with pytest.raises(ValueError, match="auto_offset_reset is the gate's own"):
        Gate("127.0.0.1:9", auto_offset_reset=policy)


async def test_disconnect_request_from_a_gate_that_cannot_hear_riskguard(
    gates: Callable[..., Gate], topic: str
) -> None:
    """The watch task on a gate whose last heartbeat has aged out (no broker involved)."""
    router = Router()
    gate = gates(topic, on_cancel=router.on_cancel, heartbeat_timeout_ms=100)
    feed(gate, heartbeat(time.time_ns() - 150 * MS))  # stale the moment it is read
    watch = asyncio.create_task(gate._watch(200))
    try:
        await asyncio.sleep(0.6)
    finally:
        watch.cancel()
    (request,) = router.requests
    assert (request.scope, request.orders, request.kind, request.part, request.parts) == (
        "firm",
        (),
        "disconnect",
        0,
        1,
    )
    assert request.halt_id.startswith("disconnect@")
    assert request.reason.startswith("cancel on disconnect after 200 ms: fail closed: riskguard")


def guide_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "docs" / "gate.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_gate_guide_examples_compile() -> None:
    blocks = guide_blocks()
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        compile(block, f"docs/gate.md block {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def test_the_worked_router_of_the_guide() -> None:
    """docs/gate.md's router, run as written against a recording venue (no broker)."""
    (source,) = [b for b in guide_blocks() if "class Router" in b]
    guide: dict[str, Any] = {}
    exec(compile(source, "docs/gate.md router", "exec"), guide)  # our own docs
    sent: list[str] = []
    cancelled: list[str] = []
    mass: list[int] = []

    class Recording(guide["Venue"]):  # type: ignore[misc, name-defined]
        async def send(self, order: Any) -> None:
            sent.append(order.order_id)

        async def cancel(self, order_id: str) -> None:
            cancelled.append(order_id)

        async def cancel_all(self) -> None:
            mass.append(1)

    router = guide["Router"](Recording(), {"A1"})
    try:
        feed(router.gate, heartbeat(), rules(FAT))
        Order = guide["Order"]
        assert await router.submit(Order("n1", "A1", "s1", "XYZ", "buy", 100.0, 10.0))
        assert await router.submit(Order("n3", "A1", "s1", "ABC", "buy", 10.0, 10.0))
        assert await router.submit(Order("n4", "A1", "s2", "ABC", "buy", 10.0, 10.0))
        assert not await router.submit(Order("n2", "A1", "s1", "XYZ", "buy", 5000.0, 10.0))
        assert sent == ["n1", "n3", "n4"] and router.gate.refusals == {"rule:fat-finger": 1}
        halt = transition("strategy:s1", "HALTED", time.time_ns())
        theirs = order("o2", account="B9")
        feed(router.gate, state(halt), cancel(halt, 0, 1, [order("n1"), theirs]))
        for _ in range(100):
            if cancelled:
                break
            await asyncio.sleep(0.01)
        # its own account's named order (not B9's), and its own order in the halted
        # strategy riskguard had not read yet (n3); not n4, of another strategy
        assert cancelled == ["n1", "n3"]
        await router.on_cancel(CancelRequest("firm", (), "silent", "disconnect@1", "disconnect"))
        assert mass == [1]
    finally:
        await router.stop()
