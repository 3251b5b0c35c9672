"""Turn decoded events into a batch of EVENT records of interned ids.

This is the one place that touches per-event Python objects after decoding: it interns
keys and fills the batch. Everything downstream (the kernel) sees only records. Two
decisions are taken here because they need only the interned keys, in stream order:

- a trade whose ``(account, exec_id)`` was already applied (within the redelivery
  horizon) is a redelivery: counted, not applied again;
- quantities are rounded to 9 decimals (below a million units), like every sum of them
  in the kernel, so that decimal quantities add up exactly;
- a correction or bust must name an execution of the same account that is known
  (``unknown_exec_ref`` otherwise); its own ``exec_id`` is remembered like any other,
  so a redelivered correction is a redelivery too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from riskguard import events as wire
from riskguard.state.bundles import E_BUST, E_CORRECT, E_TRADE, EVENT
from riskguard.state.keys import KeySpace
from riskguard.vocabulary import (
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
_EXEC_TYPE = {"trade": E_TRADE, "correct": E_CORRECT, "bust": E_BUST}
_ORDER_TYPE = {
    wire.NewOrder: T_NEW,
    wire.ReplaceOrder: T_REPLACE,
    wire.CancelOrder: T_CANCEL,
    wire.RejectOrder: T_REJECT,
}


@dataclass(slots=True)
class Built:
    """A built batch: the records, where each came from, and what was decided here."""

    batch: Array
    """EVENT records, in stream order."""
    index: list[int] = field(default_factory=list)
    """``index[i]``: position of record ``i`` in the input sequence."""
    bad: list[wire.BadEvent] = field(default_factory=list)
    duplicates: int = 0
    """Trades recognised as redeliveries (not in the batch)."""


def _where(origins: Sequence[str] | None, j: int) -> str:
    return origins[j] if origins is not None else f"event {j}"


def build(
    events: Sequence[wire.Event], keys: KeySpace, origins: Sequence[str] | None = None
) -> Built:
    """Intern ``events`` into ``keys`` and build their batch.

    ``origins[j]`` says where event ``j`` came from (``"line 12"``, a Kafka coordinate)
    and labels the events rejected here (else ``"event j"``). The loop is written for
    speed (it is the pipeline's per-event Python work): one branch per event type, two
    dict lookups for a known account and strategy, two for a fill's position pairs, and
    Python lists converted once at the end. New keys go through :class:`KeySpace`.
    """
    cols: dict[str, list[Any]] = {name: [] for name in EVENT.names or ()}
    typ, ts, acc, strat, sym = (cols[k] for k in ("typ", "ts", "account", "strategy", "symbol"))
    side, qty, price, oid, pid = (cols[k] for k in ("side", "qty", "price", "order", "parent"))
    src, p_acc, p_strat = (cols[k] for k in ("source", "account_pair", "strategy_pair"))
    xid, xtype, fee = (cols[k] for k in ("exec", "exec_type", "fee"))
    out = Built(np.empty(0, dtype=EVENT))
    accounts = keys.level_table(L_ACCOUNT)
    strategies = keys.level_table(L_STRATEGY)
    symbols = keys.level_table(L_SYMBOL)
    pairs, orders, parents, execs = keys.pairs, keys.orders, keys.parents, keys.execs
    homes = keys.strategy_account
    nan = math.nan
    for j, event in enumerate(events):
        cls = type(event)
        ev: Any = event  # dispatch on ``cls`` below; every branch reads only its own fields
        if cls is wire.Mark or cls is wire.Heartbeat:
            if cls is wire.Mark:
                y = symbols.get(ev.symbol)
                sym.append(keys.scope(L_SYMBOL, ev.symbol) if y is None else y)
                price.append(ev.price)
                src.append(-1)
                typ.append(T_MARK)
            else:
                sym.append(-1)
                price.append(nan)
                src.append(keys.source(ev.source))
                typ.append(T_HEARTBEAT)
            ts.append(ev.ts)
            acc.append(-1)
            strat.append(-1)
            side.append(0)
            qty.append(0.0)
            oid.append(-1)
            pid.append(-1)
            p_acc.append(-1)
            p_strat.append(-1)
            xid.append(-1)
            xtype.append(E_TRADE)
            fee.append(nan)
            out.index.append(j)
            continue
        a = accounts.get(ev.account)
        if a is None:
            a = keys.scope(L_ACCOUNT, ev.account)
        st = strategies.get(ev.strategy)
        if st is None or st not in homes:
            st = keys.scope(L_STRATEGY, ev.strategy)
            keys.bind_strategy(st, a)  # its home account: where a strategy rule's match looks
        y = symbols.get(ev.symbol)
        if y is None:
            y = keys.scope(L_SYMBOL, ev.symbol)
        e_type, exec_id, a_pair, s_pair, f = E_TRADE, -1, -1, -1, nan
        if cls is wire.Fill:
            e_type = _EXEC_TYPE[ev.exec_type]
            key = (a, ev.exec_id)
            if key in execs:  # this execution report was seen: a redelivery
                out.duplicates += 1
                continue
            if e_type == E_TRADE:
                exec_id = keys.execution(key, ev.ts)
            else:
                ref = execs.get((a, ev.ref_exec_id))
                if ref is None:
                    out.bad.append(
                        wire.BadEvent(
                            "unknown_exec_ref",
                            f"{ev.exec_type} of execution {ev.ref_exec_id!r}, which account "
                            f"{ev.account!r} has no record of (never seen, or past the "
                            "redelivery horizon)",
                            _where(origins, j),
                        )
                    )
                    continue
                keys.execution(key, ev.ts)  # its own id: a redelivered copy is a duplicate
                exec_id = ref
            p = pairs.get(a << 32 | y)
            a_pair = keys.holding(a, y) if p is None else p
            p = pairs.get(st << 32 | y)
            s_pair = keys.holding(st, y) if p is None else p
            f = nan if ev.fee is None else ev.fee
            typ.append(T_FILL)
        elif cls is wire.ParentOrder:
            typ.append(T_PARENT)
        else:
            typ.append(_ORDER_TYPE[cls])
        if cls is wire.ParentOrder:
            oid.append(-1)
            p = ev.parent_id
        else:
            o = orders.get(ev.order_id)
            oid.append(keys.order(ev.order_id) if o is None else o)
            p = getattr(ev, "parent_id", None)
        pid.append(-1 if p is None else parents[p] if p in parents else keys.parent(p))
        s = getattr(ev, "side", None)
        side.append(0 if s is None else 1 if s == "buy" else -1)
        q = getattr(ev, "qty", None)
        qty.append(nan if q is None else q if q >= 1e6 else math.floor(q * 1e9 + 0.5) / 1e9)
        px = getattr(ev, "price", None)
        price.append(nan if px is None else px)
        ts.append(ev.ts)
        acc.append(a)
        strat.append(st)
        sym.append(y)
        src.append(-1)
        p_acc.append(a_pair)
        p_strat.append(s_pair)
        xid.append(exec_id)
        xtype.append(e_type)
        fee.append(f)
        out.index.append(j)
    batch = np.empty(len(typ), dtype=EVENT)
    for name, values in cols.items():
        batch[name] = values
    out.batch = batch
    return out
