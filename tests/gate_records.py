"""Control-topic messages as riskguard writes them, for the gate's tests: (key, value) pairs.

Times are absolute ns; the helpers take them explicitly so a test can stamp records
in the past (a compacted topic read late) or now (a live heartbeat).
"""

from __future__ import annotations

import time

import msgspec

from riskguard.control.records import (
    RULES_KEY,
    CancelOrder,
    CancelRecord,
    HeartbeatRecord,
    MarkRecord,
    PositionRecord,
    RuleRecord,
    RulesRecord,
    cancel_key,
    encode_record,
    heartbeat_message,
    mark_key,
    position_key,
    state_message,
)
from riskguard.vocabulary import Transition, transition_id

Message = tuple[bytes, bytes]

FAT = RuleRecord("fat-finger", "order_qty", "strategy", "halt", max=1000.0)
NOTIONAL = RuleRecord("notional", "order_notional", "account", "halt", max=100_000.0)
COLLAR = RuleRecord("collar", "price_deviation", "symbol", "reduce_only", max=0.05)
BIG = RuleRecord("big-order", "order_qty", "firm", "alert", max=500.0)


def heartbeat(ts: int | None = None, ready: bool = True) -> Message:
    return heartbeat_message(
        HeartbeatRecord(
            ts=time.time_ns() if ts is None else ts, instance="test", ready=ready, interval_ms=100
        )
    )


def transition(scope: str, to: str, decided_ns: int, from_: str = "ACTIVE") -> Transition:
    """An operator's transition of ``scope`` to ``to`` decided at ``decided_ns``."""
    return Transition(
        id=transition_id(scope, decided_ns, to),
        scope=scope,
        from_=from_,
        to=to,
        kind="manual",
        ts=decided_ns,
        decided_ns=decided_ns,
        operator="ops",
        reason="test",
    )


def state(tr: Transition) -> Message:
    return state_message(tr)


def order(
    oid: str,
    account: str = "A1",
    strategy: str = "s1",
    symbol: str = "XYZ",
    side: str = "buy",
    open_qty: float = 100.0,
) -> CancelOrder:
    return CancelOrder(oid, account, strategy, symbol, side, open_qty)


def cancel(
    tr: Transition,
    part: int,
    parts: int,
    orders: list[CancelOrder],
    kind: str = "halt",
    source: str = "",
) -> Message:
    """Part ``part`` of ``parts`` of the cancel request of ``tr`` (named by group-mode
    member ``source``, when given)."""
    record = CancelRecord(
        tr.id,
        tr.scope,
        kind,
        "by ops: test",
        part,
        parts,
        tuple(orders),
        tr.decided_ns,
        source=source or msgspec.UNSET,
    )
    return cancel_key(tr.scope, part, source), encode_record(record)


def rules(*rs: RuleRecord, ts: int = 0, sha: str = "a" * 64) -> Message:
    return RULES_KEY, encode_record(RulesRecord(sha, rs, ts))


def mark(symbol: str, price: float, ts: int = 0) -> Message:
    return mark_key(symbol), encode_record(MarkRecord(symbol, price, ts))


def position(scope: str, symbol: str, qty: float, ts: int) -> Message:
    return position_key(scope, symbol), encode_record(PositionRecord(scope, symbol, qty, ts))
