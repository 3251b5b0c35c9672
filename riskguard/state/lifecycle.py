"""Orders and executions as they really arrive: redelivered, out of order, corrected.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`). Each returns whether
the event is to be applied (False: a redelivery or a bad event, noted and skipped, so
no rate, count or rule moves). The rules (``docs/events.md``, "Order lifecycle" and
"Redelivery"):

- A ``new`` for a working order with the same fields (account, strategy, symbol, side,
  qty, price, parent) is a redelivery; with other fields it is bad (order id reused).
  For a closed order still remembered, the same fields are a redelivery and other fields
  a new order reusing the id.
- A fill, cancel, reject or replace may arrive before its order's ``new`` (the order is
  *pending*). The late ``new`` does not reopen an order already filled, cancelled or
  rejected; a partly filled one opens with only its remainder.
- A cancel or reject applied once is a redelivery the second time. A replace older than
  the latest applied replace of its order, or identical to it, is a redelivery.
- Fills always move positions (fills are facts). A correction replaces its execution's
  qty, price and fee; a bust reverses it (positions, fees, parent fills, the order's
  filled qty and the fill-notional window while the window still holds it).
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.state.bundles import (
    E_BUST,
    E_CORRECT,
    F_CANCELLED,
    F_NEW,
    F_REJECTED,
    F_REPLACED,
    N_BUSTED,
    N_DUPLICATE,
    N_REUSED,
    O_CLOSED,
    O_FREE,
    O_OPEN,
    O_PENDING,
    X_APPLIED,
    X_BUSTED,
)
from riskguard.state.counters import close_order, open_order, refill, retire
from riskguard.state.jit import helper
from riskguard.state.primitives import (
    consistent,
    link_holder,
    near,
    note,
    queue,
    snap,
    trade_pair,
)
from riskguard.vocabulary import T_CANCEL


@helper
def _same_price(a, b):  # type: ignore[no-untyped-def]
    return a == b or (math.isnan(a) and math.isnan(b))


@helper
def _same_new(od, ev):  # type: ignore[no-untyped-def]
    return (
        od.account == ev.account
        and od.strategy == ev.strategy
        and od.symbol == ev.symbol
        and od.side == ev.side
        and od.parent == ev.parent
        and od.new_qty == ev.qty
        and _same_price(od.new_price, ev.price)
    )


@helper
def _bind(od, ev, st):  # type: ignore[no-untyped-def]
    """Start tracking order ``od`` for event ``ev`` (a fresh record, a new serial)."""
    g = st.globals[0]
    g.order_serial += 1
    od.serial = g.order_serial
    od.flags = 0
    od.account = ev.account
    od.strategy = ev.strategy
    od.symbol = ev.symbol
    od.parent = -1
    od.side = ev.side
    od.qty = 0.0
    od.cum_qty = 0.0
    od.price = math.nan
    od.replace_ns = -1
    od.unattributed = 0.0


@helper
def _credit(st, parent, qty):  # type: ignore[no-untyped-def]
    if parent >= 0:
        pa = st.parents[parent]
        pa.filled = snap(pa.filled + qty)
        if near(pa.filled, pa.qty):
            pa.filled = pa.qty


@helper
def _filled(od):  # type: ignore[no-untyped-def]
    """Whether ``od``'s fills reach its quantity (``near`` it counts, then exactly)."""
    if od.cum_qty >= od.qty or near(od.cum_qty, od.qty):
        od.cum_qty = max(od.cum_qty, od.qty)
        return True
    return False


@helper
def on_new(ev, e, now, st, out):  # type: ignore[no-untyped-def]
    """A ``new``; returns whether it is applied (counted, rules judged)."""
    od = st.orders[ev.order]
    status = od.status
    if status == O_OPEN or (status == O_CLOSED and od.flags & F_NEW):
        if _same_new(od, ev):
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))
            return False
        if status == O_OPEN:
            note(out, e, np.int64(N_REUSED), np.int64(0))
            return False
        status = O_FREE  # a closed order's id reused for a new order
    if status == O_FREE:
        _bind(od, ev, st)
    od.flags |= F_NEW
    od.parent = ev.parent
    od.new_qty = ev.qty
    od.new_price = ev.price
    if od.flags & F_REPLACED == 0:
        od.qty = ev.qty
        od.price = ev.price
    if od.unattributed > 0.0 and ev.parent >= 0:  # fills that came before their new
        _credit(st, ev.parent, od.unattributed)
        od.unattributed = 0.0
    if od.flags & (F_CANCELLED | F_REJECTED):
        if status != O_CLOSED:
            close_order(ev.order, now, st, out)
    elif _filled(od):
        close_order(ev.order, now, st, out)
    else:
        open_order(ev.order, st)
    return True


@helper
def on_replace(ev, e, now, st, out):  # type: ignore[no-untyped-def]
    """A ``replace`` (``qty`` is the new total, fills included); returns whether applied."""
    od = st.orders[ev.order]
    if od.status != O_FREE and od.flags & F_REPLACED:
        stale = now < od.replace_ns
        same = now == od.replace_ns and od.replace_qty == ev.qty
        if stale or (same and _same_price(od.replace_price, ev.price)):
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))
            return False
    if od.status == O_FREE:
        _bind(od, ev, st)
        retire(ev.order, np.int64(O_PENDING), now, st, out)
    od.flags |= F_REPLACED
    od.replace_ns = now
    od.replace_qty = ev.qty
    od.replace_price = ev.price
    od.qty = ev.qty
    od.price = ev.price
    if od.status == O_OPEN and _filled(od):
        close_order(ev.order, now, st, out)
    return True


@helper
def on_cancel_or_reject(ev, e, now, st, out):  # type: ignore[no-untyped-def]
    """A confirmed ``cancel`` or a ``reject``; returns whether applied."""
    od = st.orders[ev.order]
    flag = F_CANCELLED if ev.typ == T_CANCEL else F_REJECTED
    if od.status != O_FREE and od.flags & flag:
        note(out, e, np.int64(N_DUPLICATE), np.int64(0))
        return False
    if od.status == O_FREE:
        _bind(od, ev, st)
    od.flags |= flag
    if od.status != O_CLOSED:
        close_order(ev.order, now, st, out)
    return True


@helper
def _book(st, rules, x, d, price, fee):  # type: ignore[no-untyped-def]
    """Trade signed qty ``d`` at ``price`` on an execution's account, strategy, firm pairs.

    With revaluation epochs, the lot is valued at its own price until the next epoch
    whenever the symbol's valuation price differs (never at a price it did not trade at).
    """
    y = x.symbol
    w = st.symbols[y].val_price
    if rules.revalue_ns > 0 and w != price:
        w = price
        queue(st, y)
    ok = consistent(st, rules)
    p_acc = x.account_pair
    p_strat = x.strategy_pair
    p_firm = st.positions[p_acc].firm_pair
    for p in (p_firm, p_acc, p_strat):
        link_holder(st, p)
    trade_pair(st, p_firm, d, price, w, fee, ok)
    trade_pair(st, p_acc, d, price, w, fee, ok)
    trade_pair(st, p_strat, d, price, w, fee, ok)


@helper
def on_trade(ev, now, at, st, rules, out):  # type: ignore[no-untyped-def]
    """A new execution: order and parent fills, then positions; returns the parent credited."""
    od = st.orders[ev.order]
    if od.status == O_FREE:
        _bind(od, ev, st)
        retire(ev.order, np.int64(O_PENDING), now, st, out)
    parent = ev.parent
    if parent < 0 and od.flags & F_NEW:
        parent = od.parent
    od.cum_qty = snap(od.cum_qty + ev.qty)
    if parent >= 0:
        _credit(st, parent, ev.qty)
    else:
        od.unattributed = snap(od.unattributed + ev.qty)
    if od.status == O_OPEN and _filled(od):
        close_order(ev.order, now, st, out)
    x = st.execs[ev.exec]
    x.status = X_APPLIED
    x.order = ev.order
    x.serial = od.serial
    x.parent = parent
    x.account = ev.account
    x.strategy = ev.strategy
    x.symbol = ev.symbol
    x.account_pair = ev.account_pair
    x.strategy_pair = ev.strategy_pair
    x.side = ev.side
    x.qty = ev.qty
    x.price = ev.price
    x.fee = 0.0 if math.isnan(ev.fee) else ev.fee
    x.count_ns = at
    _book(st, rules, x, ev.qty * ev.side, ev.price, x.fee)
    return parent


@helper
def _unfill(st, x, qty):  # type: ignore[no-untyped-def]
    """Take ``qty`` of execution ``x`` back off its parent and (if still the same) order."""
    if x.parent >= 0:
        st.parents[x.parent].filled = snap(st.parents[x.parent].filled - qty)
    od = st.orders[x.order]
    if od.serial == x.serial and od.status != O_FREE:
        od.cum_qty = max(0.0, snap(od.cum_qty - qty))
        if x.parent < 0:
            od.unattributed = max(0.0, snap(od.unattributed - qty))


@helper
def on_amend(ev, e, st, rules, out):  # type: ignore[no-untyped-def]
    """A correction or bust of execution ``ev.exec``; returns the parent (-2: not applied)."""
    x = st.execs[ev.exec]
    if x.status != X_APPLIED:
        note(out, e, np.int64(N_BUSTED), np.int64(0))
        return -2
    _book(st, rules, x, -x.qty * x.side, x.price, -x.fee)
    refill(x, st, -1.0)
    _unfill(st, x, x.qty)
    if ev.exec_type == E_BUST:
        x.status = X_BUSTED
        return x.parent
    if ev.exec_type == E_CORRECT:
        x.qty = ev.qty
        x.price = ev.price
        if not math.isnan(ev.fee):
            x.fee = ev.fee
        _book(st, rules, x, x.qty * x.side, x.price, x.fee)
        refill(x, st, 1.0)
        if x.parent >= 0:
            _credit(st, x.parent, x.qty)
        od = st.orders[x.order]
        if od.serial == x.serial and od.status != O_FREE:
            od.cum_qty = snap(od.cum_qty + x.qty)
            if x.parent < 0:
                od.unattributed = snap(od.unattributed + x.qty)
    return x.parent
