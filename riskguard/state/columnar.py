"""Turn decoded events into a columnar batch of integer ids and numpy arrays.

This is the one place that touches per-event Python objects after decoding:
it interns keys and fills preallocated columns. Everything downstream (the
kernel) sees only arrays. Events that are well-formed but inconsistent with
what is already known (a strategy seen under a second account) become
:class:`~riskguard.events.BadEvent` here and never reach the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from riskguard import events as wire
from riskguard.state.bundles import EVENT
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


def _route(keys: KeySpace, account: str, strategy: str) -> tuple[str, int, int] | None:
    """Intern an (account, strategy) pair; None when the strategy belongs to another account."""
    a = keys.scope(L_ACCOUNT, account)
    st = keys.scope(L_STRATEGY, strategy)
    owner = keys.strategy_account.get(st)
    if owner is None:
        keys.bind_strategy(st, a)
    elif owner != a:
        return None
    route = keys.routes[strategy] = (account, a, st)
    return route


def _conflict(keys: KeySpace, ev: Any, where: str | int) -> wire.BadEvent:
    owner = keys.strategy_account[keys.scope(L_STRATEGY, ev.strategy)]
    return wire.BadEvent(
        "strategy_account_conflict",
        f"strategy {ev.strategy!r} belongs to {keys.scope_names[owner]}, "
        f"not account {ev.account!r}",
        where if isinstance(where, str) else f"event {where}",
    )


def build(
    events: Sequence[wire.Event], keys: KeySpace, origins: Sequence[str] | None = None
) -> tuple[Array, list[wire.BadEvent]]:
    """Intern ``events`` into ``keys``; return the batch (EVENT records) and events rejected here.

    ``origins[j]`` says where event ``j`` came from (``"line 12"``, a Kafka coordinate);
    it labels the events rejected here (else their index is used).

    The per-event Python work of the whole pipeline happens here, so the loop is
    written for speed: one branch per event type (most frequent first), Python
    lists converted once at the end (about twice as fast as writing numpy
    elements one by one), and two caches in :class:`KeySpace` so that a known
    strategy costs one lookup for its account and strategy ids (``routes``) and a
    fill one lookup for its strategy's position pair (the account's and the firm's
    pairs are linked to it in the store). New keys go through :class:`KeySpace`.
    """
    typ: list[int] = []
    ts: list[int] = []
    acc: list[int] = []
    strat: list[int] = []
    sym: list[int] = []
    side: list[int] = []
    qty: list[float] = []
    price: list[float] = []
    oid: list[int] = []
    pid: list[int] = []
    src: list[int] = []
    pair: list[int] = []
    bad: list[wire.BadEvent] = []
    symbols = keys.level_table(L_SYMBOL)
    routes, pairs = keys.routes, keys.pairs
    orders, parents = keys.orders, keys.parents
    nan = float("nan")
    for j, event in enumerate(events):
        cls = type(event)
        ev: Any = event  # dispatch on ``cls`` below; every branch reads only its own fields
        if cls is wire.Mark or cls is wire.Heartbeat:
            typ.append(T_MARK if cls is wire.Mark else T_HEARTBEAT)
            ts.append(ev.ts)
            acc.append(-1)
            strat.append(-1)
            side.append(0)
            qty.append(0.0)
            oid.append(-1)
            pid.append(-1)
            pair.append(-1)
            if cls is wire.Mark:
                y = symbols.get(ev.symbol)
                sym.append(keys.scope(L_SYMBOL, ev.symbol) if y is None else y)
                price.append(ev.price)
                src.append(-1)
            else:
                sym.append(-1)
                price.append(nan)
                src.append(keys.source(ev.source))
            continue
        route = routes.get(ev.strategy)
        if route is None or route[0] != ev.account:
            route = _route(keys, ev.account, ev.strategy)
            if route is None:
                bad.append(_conflict(keys, ev, origins[j] if origins is not None else j))
                continue
        a, st = route[1], route[2]
        y = symbols.get(ev.symbol)
        if y is None:
            y = keys.scope(L_SYMBOL, ev.symbol)
        if cls is wire.NewOrder:
            typ.append(T_NEW)
            o = orders.get(ev.order_id)
            oid.append(keys.order(ev.order_id) if o is None else o)
            p = ev.parent_id
            pid.append(-1 if p is None else parents[p] if p in parents else keys.parent(p))
            side.append(1 if ev.side == "buy" else -1)
            qty.append(ev.qty)
            price.append(nan if ev.price is None else ev.price)
            pair.append(-1)
        elif cls is wire.Fill:
            typ.append(T_FILL)
            oid.append(orders.get(ev.order_id, -1))
            p = ev.parent_id
            pid.append(-1 if p is None else parents[p] if p in parents else keys.parent(p))
            side.append(1 if ev.side == "buy" else -1)
            qty.append(ev.qty)
            price.append(ev.price)
            p = pairs.get(st << 32 | y)
            pair.append(keys.strategy_pair(a, st, y) if p is None else p)
        else:
            pair.append(-1)
            if cls is wire.CancelOrder or cls is wire.RejectOrder:
                typ.append(T_CANCEL if cls is wire.CancelOrder else T_REJECT)
                oid.append(orders.get(ev.order_id, -1))
                pid.append(-1)
                side.append(0)
                qty.append(0.0)
                price.append(nan)
            elif cls is wire.ReplaceOrder:
                typ.append(T_REPLACE)
                oid.append(orders.get(ev.order_id, -1))
                pid.append(-1)
                side.append(1 if ev.side == "buy" else -1)
                qty.append(ev.qty)
                price.append(nan if ev.price is None else ev.price)
            else:  # ParentOrder
                typ.append(T_PARENT)
                oid.append(-1)
                p = ev.parent_id
                pid.append(parents[p] if p in parents else keys.parent(p))
                side.append(1 if ev.side == "buy" else -1)
                qty.append(ev.qty)
                price.append(nan)
        ts.append(ev.ts)
        acc.append(a)
        strat.append(st)
        sym.append(y)
        src.append(-1)

    batch = np.empty(len(typ), dtype=EVENT)
    columns = {
        "typ": typ,
        "side": side,
        "ts": ts,
        "account": acc,
        "strategy": strat,
        "symbol": sym,
        "qty": qty,
        "price": price,
        "order": oid,
        "parent": pid,
        "source": src,
        "pair": pair,
    }
    for name, values in columns.items():
        batch[name] = values
    return batch, bad
