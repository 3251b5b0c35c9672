"""Turn decoded events into a columnar batch of integer ids and numpy arrays.

This is the one place that touches per-event Python objects after decoding:
it interns keys and fills preallocated columns. Everything downstream (the
kernel) sees only arrays. Events that are well-formed but inconsistent with
what is already known (a strategy seen under a second account) become
:class:`~riskguard.events.BadEvent` here and never reach the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from riskguard.events import (
    BadEvent,
    CancelOrder,
    Event,
    Fill,
    Heartbeat,
    Mark,
    NewOrder,
    ParentOrder,
    RejectOrder,
    ReplaceOrder,
)
from riskguard.state.keys import KeySpace
from riskguard.state.layout import (
    FIRM,
    L_ACCOUNT,
    L_STRATEGY,
    L_SYMBOL,
    T_CANCEL,
    T_FILL,
    T_HEARTBEAT,
    T_MARK,
    T_NEW,
    T_PARENT,
    T_REJECT,
    T_REPLACE,
)

Array = np.ndarray[Any, Any]


@dataclass(slots=True)
class Batch:
    """Columns of one batch; ``-1`` marks an id that does not apply to the event."""

    typ: Array
    ts: Array
    acc: Array
    strat: Array
    sym: Array
    side: Array
    qty: Array
    price: Array
    oid: Array
    pid: Array
    src: Array
    pr_firm: Array
    pr_acc: Array
    pr_strat: Array
    events: list[Event]

    def __len__(self) -> int:
        return int(self.typ.shape[0])

    def columns(self) -> tuple[Array, ...]:
        """The arrays in kernel argument order."""
        return (
            self.typ,
            self.ts,
            self.acc,
            self.strat,
            self.sym,
            self.side,
            self.qty,
            self.price,
            self.oid,
            self.pid,
            self.src,
            self.pr_firm,
            self.pr_acc,
            self.pr_strat,
        )


_TYPE = {
    ParentOrder: T_PARENT,
    NewOrder: T_NEW,
    ReplaceOrder: T_REPLACE,
    CancelOrder: T_CANCEL,
    RejectOrder: T_REJECT,
    Fill: T_FILL,
    Mark: T_MARK,
    Heartbeat: T_HEARTBEAT,
}


def build(
    events: Sequence[Event], keys: KeySpace, positions: Sequence[str] | None = None
) -> tuple[Batch, list[BadEvent]]:
    """Intern ``events`` into ``keys`` and return the batch plus events rejected here."""
    n = len(events)
    typ = np.zeros(n, dtype=np.int8)
    ts = np.zeros(n, dtype=np.int64)
    ids = np.full((8, n), -1, dtype=np.int64)  # acc strat sym oid pid src pr_acc pr_strat
    pr_firm = np.full(n, -1, dtype=np.int64)
    side = np.zeros(n, dtype=np.int8)
    qty = np.zeros(n)
    price = np.full(n, np.nan)
    acc_c, strat_c, sym_c, oid_c, pid_c, src_c, pacc_c, pstrat_c = ids
    kept: list[Event] = []
    bad: list[BadEvent] = []
    scope = keys.scope
    i = 0
    for j, ev in enumerate(events):
        t = _TYPE[type(ev)]
        if t == T_MARK:
            assert isinstance(ev, Mark)
            sym_c[i] = scope(L_SYMBOL, ev.symbol)
            price[i] = ev.price
        elif t == T_HEARTBEAT:
            assert isinstance(ev, Heartbeat)
            src_c[i] = keys.source(ev.source)
        else:
            assert not isinstance(ev, Mark | Heartbeat)
            a = scope(L_ACCOUNT, ev.account)
            s = scope(L_STRATEGY, ev.strategy)
            if not keys.bind_strategy(s, a):
                owner = keys.scope_names[keys.strategy_account[s]]
                bad.append(
                    BadEvent(
                        "strategy_account_conflict",
                        f"strategy {ev.strategy!r} belongs to {owner}, not account {ev.account!r}",
                        positions[j] if positions is not None else f"event {j}",
                    )
                )
                continue
            y = scope(L_SYMBOL, ev.symbol)
            acc_c[i] = a
            strat_c[i] = s
            sym_c[i] = y
            if t == T_PARENT:
                assert isinstance(ev, ParentOrder)
                pid_c[i] = keys.parent(ev.parent_id)
                qty[i] = ev.qty
                side[i] = 1 if ev.side == "buy" else -1
            elif t == T_NEW:
                assert isinstance(ev, NewOrder)
                oid_c[i] = keys.order(ev.order_id)
                if ev.parent_id is not None:
                    pid_c[i] = keys.parent(ev.parent_id)
                qty[i] = ev.qty
                side[i] = 1 if ev.side == "buy" else -1
                if ev.price is not None:
                    price[i] = ev.price
            else:
                assert not isinstance(ev, ParentOrder | NewOrder)
                oid_c[i] = keys.orders.get(ev.order_id, -1)
                if t == T_REPLACE:
                    assert isinstance(ev, ReplaceOrder)
                    qty[i] = ev.qty
                    side[i] = 1 if ev.side == "buy" else -1
                    if ev.price is not None:
                        price[i] = ev.price
                elif t == T_FILL:
                    assert isinstance(ev, Fill)
                    qty[i] = ev.qty
                    price[i] = ev.price
                    side[i] = 1 if ev.side == "buy" else -1
                    if ev.parent_id is not None:
                        pid_c[i] = keys.parent(ev.parent_id)
                    pr_firm[i] = keys.pair(FIRM, y)
                    pacc_c[i] = keys.pair(a, y)
                    pstrat_c[i] = keys.pair(s, y)
        typ[i] = t
        ts[i] = ev.ts
        kept.append(ev)
        i += 1
    if i < n:
        typ, ts, side, qty, price, pr_firm = (
            typ[:i],
            ts[:i],
            side[:i],
            qty[:i],
            price[:i],
            pr_firm[:i],
        )
        ids = ids[:, :i]
    acc_c, strat_c, sym_c, oid_c, pid_c, src_c, pacc_c, pstrat_c = (
        np.ascontiguousarray(x) for x in ids
    )
    batch = Batch(
        typ,
        ts,
        acc_c,
        strat_c,
        sym_c,
        side,
        qty,
        price,
        oid_c,
        pid_c,
        src_c,
        pr_firm,
        pacc_c,
        pstrat_c,
        kept,
    )
    return batch, bad
