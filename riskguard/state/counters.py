"""Windowed counters and order bookkeeping used by the kernel's per-event loop.

A windowed counter is a ring of ``RING`` time buckets per (counter, scope row): see
:class:`riskguard.state.bundles.Counters`. Counting happens in event time: an event counts
in the bucket of its own (corrected) time while it is within the lateness bound of the
clock, else in the bucket of the clock ("as now"); a bucket older than the ring is
replaced by the oldest bucket the ring still holds. A kill switch errs towards counting:
no event is ever left out of a window.

A counter may be limited to one side or one venue (a rule's ``match.side`` /
``match.venue``): other events advance its window but add nothing. Money is in the base
currency: a fill counts qty x |price| x multiplier x rate; a fill in a currency with no
rate yet adds nothing to fill-notional windows (the engine raises a system alert for the
currency; docs/limits.md, Currencies).
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.limits.vocabulary import COUNTER_CODE
from riskguard.state.codes import (
    F_NEW,
    FIRM,
    MARKET_PRICE_KEY,
    O_CLOSED,
    O_OPEN,
    RING,
    U_REQUESTED,
    X_APPLIED,
)
from riskguard.state.jit import helper
from riskguard.state.judging import at_level
from riskguard.state.tables import dup_at, dup_put, dup_seen, purge_dups
from riskguard.vocabulary import T_CANCEL, T_FILL, T_NEW, T_REJECT, T_REPLACE

# Counter kind codes (COUNTER.kind), named once in the metric vocabulary.
C_NEW = COUNTER_CODE["new"]  # new orders
C_MSG = COUNTER_CODE["msg"]  # new + replace + cancel messages
C_REJ = COUNTER_CODE["rej"]  # rejects
C_CXL = COUNTER_CODE["cxl"]  # cancels
C_FILLN = COUNTER_CODE["filln"]  # fill notional (qty x price)
C_DUP = COUNTER_CODE["dup"]  # new orders identical to a recent one
C_FILLS = COUNTER_CODE["fills"]  # executions


@helper
def fill_money(st, y, qty, price):  # type: ignore[no-untyped-def]
    """qty x |price| x multiplier of symbol ``y``, in base money; 0 while its currency has
    no rate (never valued at 1)."""
    sym = st.symbols[y]
    cur = st.currencies[sym.currency]
    if cur.known == 0:
        return 0.0
    return qty * abs(price) * sym.multiplier * cur.rate


@helper
def _wanted(d, side, venue):  # type: ignore[no-untyped-def]
    """Whether counter definition ``d`` counts an event of ``side`` to ``venue``."""
    return (d.side == 0 or d.side == side) and (d.venue < 0 or d.venue == venue)


@helper
def counts_one(kind, t, subtype):  # type: ignore[no-untyped-def]
    """1.0 when an event of type ``t`` (``subtype``) counts one in a counter of ``kind``
    (not fill notional, nor duplicate orders), else 0.0. A cancel or replace the venue
    made on its own (unsolicited: an IOC remainder, an expiry, a restatement) is not one
    of the firm's order messages, nor one of its cancels."""
    firms = subtype == U_REQUESTED
    if kind == C_NEW:
        return 1.0 if t == T_NEW else 0.0
    if kind == C_MSG:
        return 1.0 if t == T_NEW or ((t == T_REPLACE or t == T_CANCEL) and firms) else 0.0
    if kind == C_REJ:
        return 1.0 if t == T_REJECT else 0.0
    if kind == C_CXL:
        return 1.0 if t == T_CANCEL and firms else 0.0
    if kind == C_FILLS:
        return 1.0 if t == T_FILL else 0.0
    return 0.0


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
def _add(c, k, row, b, v, history):  # type: ignore[no-untyped-def]
    """Count ``v`` in bucket ``b``, or in the oldest bucket the ring holds if ``b`` is older;
    reading a backlog (``history``), an event older than the ring is in none of its
    windows and counts nowhere."""
    if v != 0.0:
        oldest = c.last_bucket[k, row] - RING + 1
        if b < oldest:
            if history:
                return
            b = oldest
        c.buckets[k, row, b % RING] += v
        c.total[k, row] += v


@helper
def refill(x, st, sign):  # type: ignore[no-untyped-def]
    """Add (``sign`` +1) or take back (-1) execution ``x`` in the fill windows (its
    notional, or one execution), in the bucket it was counted in, while the ring still
    holds that bucket."""
    c = st.counters
    for k in range(c.defs.shape[0]):
        d = c.defs[k]
        if (d.kind != C_FILLN and d.kind != C_FILLS) or not _wanted(d, x.side, x.venue):
            continue
        s = at_level(d.level, x.account, x.strategy, x.symbol, x.venue)
        if s < 0:
            continue
        row = st.scopes[s].slot
        b = x.count_ns // d.width_ns
        if b > c.last_bucket[k, row] - RING:
            v = sign * (x.counted if d.kind == C_FILLN else 1.0)
            c.buckets[k, row, b % RING] += v
            c.total[k, row] += v


@helper
def count(ev, side, venue, at, st, history):  # type: ignore[no-untyped-def]
    """Advance and add to every windowed counter but the duplicate-order ones (:func:`count_dups`).

    ``side`` and ``venue`` are the event's (a cancel's or reject's: its order's); ``at``
    is the time it counts at (``history``: a backlog is read, see :func:`_add`). A
    counter's row for a scope is the scope's slot within its
    level; a venue counter skips events with no venue. A fill counts qty x |price| x
    multiplier x rate (a notional is a magnitude; :func:`fill_money`).
    """
    c = st.counters
    t = ev.typ
    for k in range(c.defs.shape[0]):
        d = c.defs[k]
        kind = d.kind
        if kind == C_DUP:
            continue
        s = at_level(d.level, ev.account, ev.strategy, ev.symbol, venue)
        if s < 0:
            continue
        row = st.scopes[s].slot
        b = at // d.width_ns
        advance(c, k, row, b)
        if not _wanted(d, side, venue):
            continue
        v = 0.0
        if kind == C_FILLN:
            v = fill_money(st, ev.symbol, ev.qty, ev.price) if t == T_FILL else 0.0
        else:
            v = counts_one(kind, t, ev.subtype)
        _add(c, k, row, b, v, history)


@helper
def early_code(side, venue):  # type: ignore[no-untyped-def]
    """A side (+1, -1, 0 none) and venue scope id (-1 none), packed (0 means none)."""
    return 1 + 4 * (venue + 1) + (side + 1)


@helper
def note_early(ev, t, side, venue, st):  # type: ignore[no-untyped-def]
    """A cancel, reject or replace (``t``) just counted with ``side`` and ``venue``: if its
    order's new has not come yet, remember what it was counted with (:func:`count_early`;
    a replace names its side, so only one with no venue)."""
    od = st.orders[ev.order]
    if od.flags & F_NEW != 0 or ev.subtype != U_REQUESTED:  # unsolicited: counted in none
        return
    if t == T_REPLACE:
        if venue < 0:
            od.early_rpl += 1
    elif t == T_CANCEL:
        od.early_cxl = early_code(side, venue)
    elif t == T_REJECT:
        od.early_rej = early_code(side, venue)


@helper
def _early_trades(ev, venue, at, st):  # type: ignore[no-untyped-def]
    """A late new to ``venue``: its order's trades that came before it with no venue are
    to that venue. Each takes it, and counts in the venue's fill windows (and those
    limited to it) in the bucket it was counted in, while the ring holds it, so a later
    bust or correction takes back what was added (:func:`refill`)."""
    c = st.counters
    od = st.orders[ev.order]
    xi = od.early_exec
    od.early_exec = -1
    while xi >= 0:
        x = st.execs[xi]
        if x.order != ev.order or x.serial != od.serial:
            break  # a slot recycled since (past the redelivery horizon): the list ends
        xi = x.next_early
        x.next_early = -1
        if venue < 0 or x.status != X_APPLIED or x.venue >= 0:
            continue
        x.venue = venue
        for k in range(c.defs.shape[0]):
            d = c.defs[k]
            if d.kind != C_FILLN and d.kind != C_FILLS:
                continue
            s = at_level(d.level, x.account, x.strategy, x.symbol, venue)
            if s < 0 or not _wanted(d, x.side, venue):
                continue
            then = at_level(d.level, x.account, x.strategy, x.symbol, np.int64(-1))
            if then == s and _wanted(d, x.side, np.int64(-1)):
                continue  # counted then
            row = st.scopes[s].slot
            advance(c, k, row, at // d.width_ns)
            b = x.count_ns // d.width_ns
            if b > c.last_bucket[k, row] - RING:
                v = x.counted if d.kind == C_FILLN else 1.0
                c.buckets[k, row, b % RING] += v
                c.total[k, row] += v


@helper
def count_early(ev, side, venue, at, st, history):  # type: ignore[no-untyped-def]
    """A late new (``side``, ``venue``, counting at ``at``): the cancel and reject of its
    order that came before it were counted with the side and venue known then (none, for
    an order not yet seen). Count them now, at the new's time, in the windows the new's
    side and venue select and those did not: a side- or venue-limited window, the venue
    scope. No event is left out of a window. Its replaces with no venue count at the new's
    venue as of the new's side; its trades before it with no venue take the new's venue
    (:func:`_early_trades`)."""
    c = st.counters
    od = st.orders[ev.order]
    _early_trades(ev, venue, at, st)
    for which in range(3):
        code = od.early_cxl if which == 0 else od.early_rej if which == 1 else 0
        n = 1.0
        if which == 2 and od.early_rpl > 0:
            code = early_code(side, np.int64(-1))
            n = float(od.early_rpl)
        if code == 0:
            continue
        side_then = (code - 1) % 4 - 1
        venue_then = (code - 1) // 4 - 1
        for k in range(c.defs.shape[0]):
            d = c.defs[k]
            if which != 1 and d.kind != C_MSG and (which == 2 or d.kind != C_CXL):
                continue
            if which == 1 and d.kind != C_REJ:
                continue
            s = at_level(d.level, ev.account, ev.strategy, ev.symbol, venue)
            if s < 0 or not _wanted(d, side, venue):
                continue
            then = at_level(d.level, ev.account, ev.strategy, ev.symbol, venue_then)
            if then == s and _wanted(d, side_then, venue_then):
                continue  # counted then
            row = st.scopes[s].slot
            b = at // d.width_ns
            advance(c, k, row, b)
            _add(c, k, row, b, n, history)
    od.early_cxl = 0
    od.early_rej = 0
    od.early_rpl = 0


@helper
def count_dups(ev, venue, now, at, st, history, ahead):  # type: ignore[no-untyped-def]
    """Duplicate-order counters, for a new order (the only event they count or are read on).

    A new order counts once for each earlier identical new order of the same scope key
    (symbol, side, qty, price) seen less than the window before it (``now``: its
    corrected time; ``at``: the time it counts at). ``ahead`` >= 0: replay, the event is
    ahead of the clock, kept in ``st.ahead[ahead]``; the entries it counts a duplicate
    on say so, in case the feed turns out to have jumped (:func:`settle_ahead_dups`).
    """
    c, d = st.counters, st.dups
    sym = ev.symbol
    side = np.int64(ev.side)
    px = ev.price if not math.isnan(ev.price) else MARKET_PRICE_KEY
    for k in range(c.defs.shape[0]):
        if c.defs[k].kind != C_DUP:
            continue
        s = at_level(c.defs[k].level, ev.account, ev.strategy, sym, venue)
        if s < 0 or not _wanted(c.defs[k], side, venue):
            continue
        row = st.scopes[s].slot
        b = at // c.defs[k].width_ns
        advance(c, k, row, b)
        prev = dup_seen(d, k, s, sym, side, ev.qty, px)
        if now > prev:
            dup_put(d, k, s, sym, side, ev.qty, px, now)
            if d.counts[0].live > d.counts[0].purge_at:
                purge_dups(d, c.defs, st.globals[0].last_event_ns)
        if prev >= 0 and abs(now - prev) < c.defs[k].window_ns:
            _add(c, k, row, b, 1.0, history)
            if ahead >= 0:
                i = dup_at(d, k, s, sym, side, ev.qty, px)
                d.slots[i].ahead = d.slots[i].ahead | (np.int64(1) << ahead)


@helper
def settle_ahead_dups(st, n, now, jumped):  # type: ignore[no-untyped-def]
    """Replay: the run of ``n`` events ahead of the clock ends. ``jumped``: the feed
    jumped, so the new orders among them are taken at ``now``: what they counted as
    duplicates moves from the bucket it was counted in (while the ring holds it) to the
    bucket of ``now``, and their entries are stamped ``now`` (an identical order right
    after the jump is their duplicate). Either way their marks are cleared."""
    c, d = st.counters, st.dups
    for i in range(n):
        rec = st.ahead[i]
        if rec.typ != T_NEW:
            continue
        side = np.int64(rec.side)
        px = rec.price if not math.isnan(rec.price) else MARKET_PRICE_KEY
        for k in range(c.defs.shape[0]):
            if c.defs[k].kind != C_DUP or not _wanted(c.defs[k], side, rec.venue):
                continue
            s = at_level(c.defs[k].level, rec.account, rec.strategy, rec.symbol, rec.venue)
            if s < 0:
                continue
            j = dup_at(d, k, s, rec.symbol, side, rec.qty, px)
            if j < 0:
                continue
            slot = d.slots[j]
            bit = np.int64(1) << i
            if jumped and slot.ahead & bit:
                row = st.scopes[s].slot
                old = rec.ts // c.defs[k].width_ns
                if old > c.last_bucket[k, row] - RING:
                    c.buckets[k, row, old % RING] -= 1.0
                    c.total[k, row] -= 1.0
                b = now // c.defs[k].width_ns
                advance(c, k, row, b)
                _add(c, k, row, b, 1.0, False)
            slot.ahead = slot.ahead & ~bit
            if jumped and slot.seen_ns < now:
                slot.seen_ns = now


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
    if order.venue >= 0:
        sc[order.venue].open_orders += 1


@helper
def close_order(o, now, st, out):  # type: ignore[no-untyped-def]
    """Order ``o`` stops working: off its scopes' open counts, remembered until the horizon."""
    order, sc = st.orders[o], st.scopes
    if order.status == O_OPEN:
        sc[FIRM].open_orders -= 1
        sc[order.account].open_orders -= 1
        sc[order.strategy].open_orders -= 1
        sc[order.symbol].open_orders -= 1
        if order.venue >= 0:
            sc[order.venue].open_orders -= 1
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


@helper
def remember_ahead(st, slot, ev, t, side, venue, at):  # type: ignore[no-untyped-def]
    """Replay: event ``ev`` (type ``t``), stamped ahead of the clock, counted at ``at``:
    kept in ``st.ahead[slot]`` in case the feed turns out to have jumped."""
    rec = st.ahead[slot]
    rec.typ = t
    rec.side = side
    rec.venue = venue
    rec.ts = at
    rec.account = ev.account
    rec.strategy = ev.strategy
    rec.symbol = ev.symbol
    rec.exec = ev.exec
    rec.subtype = ev.subtype
    rec.qty = ev.qty
    rec.price = ev.price


@helper
def forget_ahead(st, slot):  # type: ignore[no-untyped-def]
    """Event ``slot`` ahead of the clock was not counted (a redelivery, a bad event...)."""
    st.ahead[slot].typ = -1


@helper
def recount_ahead(st, n, now):  # type: ignore[no-untyped-def]
    """Replay: the feed jumped (JUMP_CONFIRM events in a row ahead of the clock). The
    ``n`` events before this one were taken at the old clock; their counts move from
    the bucket they were counted in (while the ring holds it) to the bucket of ``now``,
    so a gap never drops events from a window (duplicate-order counters:
    :func:`settle_ahead_dups`). A fill's execution is re-stamped, so a later bust takes it
    back from where it now is."""
    c = st.counters
    for i in range(n):
        rec = st.ahead[i]
        t = rec.typ
        if t < 0:
            continue
        fill = t == T_FILL
        x = st.execs[rec.exec] if fill else st.execs[0]
        if fill and (x.status != X_APPLIED or x.count_ns != rec.ts):
            continue  # busted or corrected since: its counts were already taken back
        for k in range(c.defs.shape[0]):
            d = c.defs[k]
            if d.kind == C_DUP or not _wanted(d, rec.side, rec.venue):
                continue
            s = at_level(d.level, rec.account, rec.strategy, rec.symbol, rec.venue)
            if s < 0:
                continue
            v = 0.0
            if d.kind == C_FILLN:
                v = x.counted if fill else 0.0
            else:
                v = counts_one(d.kind, t, rec.subtype)
            if v == 0.0:
                continue
            row = st.scopes[s].slot
            old = rec.ts // d.width_ns
            if old > c.last_bucket[k, row] - RING:
                c.buckets[k, row, old % RING] -= v
                c.total[k, row] -= v
            b = now // d.width_ns
            advance(c, k, row, b)
            _add(c, k, row, b, v, False)
        if fill:
            x.count_ns = now
        rec.typ = -1
