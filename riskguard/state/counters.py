"""Windowed counters and order bookkeeping used by the kernel's per-event loop.

A windowed counter is a ring of ``RING`` time buckets per (counter, scope row): see
:class:`riskguard.state.bundles.Counters`. Counting happens in event time: an event counts
in the bucket of its own (corrected) time while it is within the lateness bound of the
clock, else in the bucket of the clock ("as now"); a bucket older than the ring is
replaced by the oldest bucket the ring still holds. A kill switch errs towards counting:
no event is ever left out of a window.
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.limits.vocabulary import COUNTER_CODE
from riskguard.state.bundles import FIRM, O_CLOSED, O_OPEN, RING
from riskguard.state.jit import helper
from riskguard.state.primitives import at_level
from riskguard.state.tables import dup_put, dup_seen, purge_dups
from riskguard.vocabulary import T_CANCEL, T_FILL, T_NEW, T_REJECT, T_REPLACE

# Counter kind codes (COUNTER.kind), named once in the metric vocabulary.
C_NEW = COUNTER_CODE["new"]  # new orders
C_MSG = COUNTER_CODE["msg"]  # new + replace + cancel messages
C_REJ = COUNTER_CODE["rej"]  # rejects
C_CXL = COUNTER_CODE["cxl"]  # cancels
C_FILLN = COUNTER_CODE["filln"]  # fill notional (qty x price)
C_DUP = COUNTER_CODE["dup"]  # new orders identical to a recent one


@helper
def advance(c, k, row, b):  # type: ignore[no-untyped-def]
    """Move counter ``k`` of scope row ``row`` forward to bucket ``b``, clearing expired ones."""
    last = c.last_bucket[k, row]
    if b <= last:
        return
    steps = b - last
    if steps >= RING:
        for j in range(RING):
            c.buckets[k, row, j] = 0.0
    else:
        for j in range(1, steps + 1):
            c.buckets[k, row, (last + j) % RING] = 0.0
    c.last_bucket[k, row] = b
    tot = 0.0
    for j in range(RING):
        tot += c.buckets[k, row, j]
    c.total[k, row] = tot


@helper
def _add(c, k, row, b, v):  # type: ignore[no-untyped-def]
    """Count ``v`` in bucket ``b``, or in the oldest bucket the ring holds if ``b`` is older."""
    if v != 0.0:
        b = max(b, c.last_bucket[k, row] - RING + 1)
        c.buckets[k, row, b % RING] += v
        c.total[k, row] += v


@helper
def refill(x, st, sign):  # type: ignore[no-untyped-def]
    """Add (``sign`` +1) or take back (-1) execution ``x``'s notional in the fill-notional
    windows, in the bucket it was counted in, while the ring still holds that bucket."""
    c = st.counters
    for k in range(c.defs.shape[0]):
        if c.defs[k].kind != C_FILLN:
            continue
        s = at_level(c.defs[k].level, x.account, x.strategy, x.symbol)
        row = st.scopes[s].slot
        b = x.count_ns // c.defs[k].width_ns
        if b > c.last_bucket[k, row] - RING:
            v = sign * x.qty * abs(x.price)
            c.buckets[k, row, b % RING] += v
            c.total[k, row] += v


@helper
def count(batch, e, at, st):  # type: ignore[no-untyped-def]
    """Advance and add to every windowed counter but the duplicate-order ones (:func:`count_dups`).

    ``at`` is the time the event counts at. A counter's row for a scope is the scope's
    slot within its level. A fill counts qty x |price| (a notional is a magnitude).
    """
    c = st.counters
    ev = batch[e]
    t = ev.typ
    for k in range(c.defs.shape[0]):
        kind = c.defs[k].kind
        if kind == C_DUP:
            continue
        s = at_level(c.defs[k].level, ev.account, ev.strategy, ev.symbol)
        row = st.scopes[s].slot
        b = at // c.defs[k].width_ns
        advance(c, k, row, b)
        v = 0.0
        if kind == C_NEW:
            v = 1.0 if t == T_NEW else 0.0
        elif kind == C_MSG:
            v = 1.0 if t == T_NEW or t == T_REPLACE or t == T_CANCEL else 0.0
        elif kind == C_REJ:
            v = 1.0 if t == T_REJECT else 0.0
        elif kind == C_CXL:
            v = 1.0 if t == T_CANCEL else 0.0
        elif kind == C_FILLN:
            v = ev.qty * abs(ev.price) if t == T_FILL else 0.0
        _add(c, k, row, b, v)


@helper
def count_dups(batch, e, now, at, st):  # type: ignore[no-untyped-def]
    """Duplicate-order counters, for a new order (the only event they count or are read on).

    A new order counts once for each earlier identical new order of the same scope key
    (symbol, side, qty, price) seen less than the window before it (``now``: its
    corrected time; ``at``: the time it counts at).
    """
    c, d = st.counters, st.dups
    ev = batch[e]
    sym = ev.symbol
    side = np.int64(ev.side)
    px = ev.price if not math.isnan(ev.price) else -1.0
    for k in range(c.defs.shape[0]):
        if c.defs[k].kind != C_DUP:
            continue
        s = at_level(c.defs[k].level, ev.account, ev.strategy, sym)
        row = st.scopes[s].slot
        b = at // c.defs[k].width_ns
        advance(c, k, row, b)
        prev = dup_seen(d, k, s, sym, side, ev.qty, px)
        if now > prev:
            dup_put(d, k, s, sym, side, ev.qty, px, now)
            if d.counts[0].live > d.counts[0].purge_at:
                purge_dups(d, c.defs, st.globals[0].last_event_ns)
        if prev >= 0 and abs(now - prev) < c.defs[k].window_ns:
            _add(c, k, row, b, 1.0)


@helper
def open_order(o, st):  # type: ignore[no-untyped-def]
    """Order ``o`` starts working: count it on its scopes."""
    order, sc = st.orders[o], st.scopes
    order.status = O_OPEN
    order.closed_ns = -1
    sc[FIRM].open_orders += 1
    sc[order.account].open_orders += 1
    sc[order.strategy].open_orders += 1
    sc[order.symbol].open_orders += 1


@helper
def close_order(o, now, st, out):  # type: ignore[no-untyped-def]
    """Order ``o`` stops working: off its scopes' open counts, remembered until the horizon."""
    order, sc = st.orders[o], st.scopes
    if order.status == O_OPEN:
        sc[FIRM].open_orders -= 1
        sc[order.account].open_orders -= 1
        sc[order.strategy].open_orders -= 1
        sc[order.symbol].open_orders -= 1
    retire(o, np.int64(O_CLOSED), now, st, out)


@helper
def retire(o, status, now, st, out):  # type: ignore[no-untyped-def]
    """Set a not-working status (closed or pending) and list the order for the horizon."""
    order = st.orders[o]
    order.status = status
    order.closed_ns = now
    counts = out.counts[0]
    rec = out.closed[counts.n_closed]
    rec.order = o
    rec.closed_ns = now
    counts.n_closed += 1
