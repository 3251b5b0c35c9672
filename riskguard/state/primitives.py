"""Building blocks of the numba kernel: positions, exposures, judging, revaluation.

Every function is jitted as a kernel helper (:data:`riskguard.state.jit.helper`: no
reference counting, no allocation, callable only from jitted code) over the records and
bundles of :mod:`riskguard.state.bundles`. The event loop
that strings them together is in :mod:`riskguard.state.kernel`.

Valuation. Each position pair carries its ``value`` (signed qty x valuation price, per
lot) and ``gross`` (|qty x price| per lot); a scope's net and gross notional are the sums
over its pairs. With ``revalue_ms`` 0 every lot is valued at the symbol's latest
reference price at once. With ``revalue_ms`` > 0 holders are revalued once per epoch,
and a fill's own quantity is valued at its own price until then (never at a stale price
it did not trade at), so the lag can delay exposure but never invent P&L. A scope's
session high of P&L is raised only at consistent moments (no revaluation waiting), so
it never records P&L that did not exist (docs/limits.md, Revaluation).
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.limits.vocabulary import (
    M_DRAWDOWN,
    M_GROSS_NOTIONAL,
    M_NET_NOTIONAL,
    M_OPEN_ORDERS,
    M_PNL,
)
from riskguard.state.bundles import FIRM, QTY_EXACT_BELOW, QTY_RTOL
from riskguard.state.jit import helper
from riskguard.state.tables import edge_add, edge_remove
from riskguard.vocabulary import A_ALERT, L_ACCOUNT, L_FIRM, L_STRATEGY


@helper
def at_level(level, account, strategy, symbol):  # type: ignore[no-untyped-def]
    """The scope id of an event's scope at ``level``."""
    if level == L_FIRM:
        return FIRM
    if level == L_ACCOUNT:
        return account
    if level == L_STRATEGY:
        return strategy
    return symbol


@helper
def snap(x):  # type: ignore[no-untyped-def]
    """A quantity sum rounded to QTY_DECIMALS decimals (while below QTY_EXACT_BELOW)."""
    if abs(x) >= QTY_EXACT_BELOW:
        return x
    return math.floor(x * 1e9 + 0.5) / 1e9


@helper
def near(a, b):  # type: ignore[no-untyped-def]
    """Whether quantities ``a`` and ``b`` are equal: exactly below QTY_EXACT_BELOW (sums
    there are exact decimals), within QTY_RTOL of the larger above it."""
    big = max(abs(a), abs(b))
    if big < QTY_EXACT_BELOW:
        return a == b
    return abs(a - b) <= QTY_RTOL * big


# positions and exposure ------------------------------------------------------------------
@helper
def pnl_of(sc, s):  # type: ignore[no-untyped-def]
    """Realised + unrealised P&L of scope ``s``, net of fees (currency)."""
    r = sc[s]
    return r.realised_pnl + r.net_notional - r.cost_basis - r.fees


@helper
def _raise_peak(st, s, consistent):  # type: ignore[no-untyped-def]
    """Raise the session high of scope ``s`` now, or once the valuation is consistent."""
    sc = st.scopes
    if consistent:
        sc[s].peak_pnl = max(sc[s].peak_pnl, pnl_of(sc, s))
    elif sc[s].dirty == 0:
        g = st.globals[0]
        sc[s].dirty = 1
        sc[s].next_dirty = g.first_dirty
        g.first_dirty = s


@helper
def settle_peaks(st):  # type: ignore[no-untyped-def]
    """Valuation is consistent again: raise the highs of every scope that waited."""
    sc = st.scopes
    g = st.globals[0]
    s = g.first_dirty
    while s >= 0:
        nxt = sc[s].next_dirty
        sc[s].peak_pnl = max(sc[s].peak_pnl, pnl_of(sc, s))
        sc[s].dirty = 0
        sc[s].next_dirty = -1
        s = nxt
    g.first_dirty = -1


@helper
def _scope_delta(st, s, d, lots, consistent):  # type: ignore[no-untyped-def]
    """Add ``d`` = (net, gross, realised, cost, fees) changes and ``lots`` positions to ``s``.

    A scope left with no position has no exposure: its net, gross and cost basis are set
    to exactly zero, not to the rounding residue of the changes that flattened it.
    """
    r = st.scopes[s]
    r.n_lots += lots
    r.realised_pnl += d[2]
    r.fees += d[4]
    if r.n_lots == 0:
        r.net_notional = 0.0
        r.gross_notional = 0.0
        r.cost_basis = 0.0
    else:
        r.net_notional += d[0]
        r.gross_notional += d[1]
        r.cost_basis += d[3]
    _raise_peak(st, s, consistent)


@helper
def pair_delta(st, p, d, lots, consistent):  # type: ignore[no-untyped-def]
    """Apply a change of pair ``p`` to its owner scope (and, for the firm's, its symbol)."""
    owner = st.positions[p].owner
    _scope_delta(st, owner, d, lots, consistent)
    if owner == FIRM:
        _scope_delta(st, st.positions[p].symbol, d, lots, consistent)


@helper
def trade_pair(st, p, d, x, w, fee, consistent):  # type: ignore[no-untyped-def]
    """Pair ``p`` trades signed qty ``d`` at price ``x``; the lot is valued at ``w``.

    Average cost: a fill that crosses zero closes the old position at its average cost
    (realising P&L) and opens the rest at ``x``. Quantities within QTY_RTOL of closing
    the position close it exactly (no dust). Valuation per lot: an increase adds
    ``d x w``; a reduction keeps the remaining lots' valuation pro rata; a flip values
    the new position at ``w``. The change is applied to the owner scope (with ``fee``).
    """
    pos = st.positions[p]
    q, c, v0, g0 = pos.qty, pos.cost, pos.value, pos.gross
    dr = 0.0
    if q == 0.0 or (q > 0.0) == (d > 0.0):
        nq = snap(q + d)
        nc = c + d * x
        v1 = v0 + d * w
        g1 = g0 + abs(d * w)
    elif near(abs(d), abs(q)):
        avg = c / q
        dr = abs(q) * (x - avg) if q > 0.0 else abs(q) * (avg - x)
        nq = 0.0
        nc = 0.0
        v1 = 0.0
        g1 = 0.0
    else:
        avg = c / q
        k = min(abs(d), abs(q))
        dr = k * (x - avg) if q > 0.0 else k * (avg - x)
        nq = snap(q + d)
        if abs(d) < abs(q):
            nc = avg * nq
            v1 = v0 * (nq / q)
            g1 = g0 * (nq / q)
        else:
            nc = x * nq
            v1 = nq * w
            g1 = abs(nq * w)
    pos.qty = nq
    pos.cost = nc
    pos.realised += dr
    pos.value = v1
    pos.gross = g1
    lots = (1 if q == 0.0 and nq != 0.0 else 0) - (1 if q != 0.0 and nq == 0.0 else 0)
    pair_delta(st, p, (v1 - v0, g1 - g0, dr, nc - c, fee), lots, consistent)


@helper
def link_holder(st, p):  # type: ignore[no-untyped-def]
    """Append pair ``p`` to its symbol's holder list the first time it holds a position."""
    rec = st.positions[p]
    if rec.linked != 0:
        return
    rec.linked = 1
    sym = st.symbols[rec.symbol]
    tail = sym.last_holder
    if tail < 0:
        sym.first_holder = p
    else:
        st.positions[tail].next_holder = p
    sym.last_holder = p
    sym.n_holders += 1


@helper
def scope_value(metric, sc, s):  # type: ignore[no-untyped-def]
    """A stateful metric of scope ``s`` (exposure, P&L, open orders); NaN for others."""
    if metric == M_GROSS_NOTIONAL:
        return sc[s].gross_notional
    if metric == M_NET_NOTIONAL:
        return sc[s].net_notional
    if metric == M_PNL:
        return pnl_of(sc, s)
    if metric == M_DRAWDOWN:
        return max(0.0, sc[s].peak_pnl - pnl_of(sc, s))
    if metric == M_OPEN_ORDERS:
        return float(sc[s].open_orders)
    return np.nan


# judging --------------------------------------------------------------------------------
@helper
def matches(rules, sc, r, s):  # type: ignore[no-untyped-def]
    """Whether row ``r`` applies to scope ``s`` (its match list, and a strategy's account)."""
    row = rules.rows[r]
    if row.match >= 0 and row.match != s:
        return False
    return not (row.match_account >= 0 and sc[s].account != row.match_account)


@helper
def judge(r, s, v, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Record value ``v`` of row ``r`` at scope ``s`` (event ``e``, corrected time ``now``).

    NaN means the metric does not apply: nothing is recorded. A breach escalates the
    scope's latched state to the row's action if that is stricter, writing one decision;
    an alert row writes one when its edge is raised and re-arms once a value is back
    within the limit. A breach evidenced by an event at or before the scope's judged
    time (an operator resumed after it, or the previous instance decided it) is recorded
    in the peaks but changes nothing.
    """
    if math.isnan(v):
        return
    peak = peaks[r]
    peak.evaluations += 1.0
    if v > peak.high:
        peak.high = v
        peak.high_scope = s
    if v < peak.low:
        peak.low = v
        peak.low_scope = s
    row = rules.rows[r]
    scope = st.scopes[s]
    breach = (v > row.upper or v < row.lower) and now > max(
        st.globals[0].judged_ns, scope.judged_ns
    )
    if row.action == A_ALERT:
        if breach:
            if edge_add(st.edges, r << 32 | s):
                peak.edges += 1.0
                emit(out, e, r, s, scope.state, np.int64(-1), v, now)
        elif peak.edges > 0.0 and edge_remove(st.edges, r << 32 | s):
            peak.edges -= 1.0
        return
    if breach and scope.state < row.action:
        emit(out, e, r, s, scope.state, row.action, v, now)
        scope.state = row.action


@helper
def emit(out, e, r, s, old, new, v, ts):  # type: ignore[no-untyped-def]
    """Write one decision (``new`` -1: an alert)."""
    counts = out.counts[0]
    d = out.decisions[counts.n]
    d.event = e
    d.row = r
    d.scope = s
    d.from_state = old
    d.to_state = new
    d.value = v
    d.ts = ts
    counts.n += 1


@helper
def note(out, e, kind, value):  # type: ignore[no-untyped-def]
    """Write one note about event ``e``."""
    counts = out.counts[0]
    n = out.notes[counts.n_notes]
    n.event = e
    n.kind = kind
    n.value = value
    counts.n_notes += 1


# revaluation ----------------------------------------------------------------------------
@helper
def rows_for_price_move(st, rules, y):  # type: ignore[no-untyped-def]
    """Decisions a revaluation of symbol ``y`` may write (two per exposure row per holder)."""
    return 2 * rules.exposure_rows.shape[0] * (st.symbols[y].n_holders + 1)


@helper
def consistent(st, rules):  # type: ignore[no-untyped-def]
    """Whether every lot is valued at its symbol's latest reference price right now."""
    return rules.revalue_ns <= 0 or st.globals[0].first_pending < 0


@helper
def queue(st, y):  # type: ignore[no-untyped-def]
    """Queue symbol ``y`` for revaluation at the start of the next epoch."""
    sym, g = st.symbols[y], st.globals[0]
    if sym.pending != 0:
        return
    sym.pending = 1
    sym.next_pending = -1
    tail = g.last_pending
    if tail < 0:
        g.first_pending = y
    else:
        st.symbols[tail].next_pending = y
    g.last_pending = y


@helper
def _move(st, y, ok):  # type: ignore[no-untyped-def]
    """Value every holder of symbol ``y`` at its latest reference price."""
    sym = st.symbols[y]
    m = sym.ref_price
    sym.val_price = m
    p = sym.first_holder
    while p >= 0:
        pos = st.positions[p]
        if pos.qty != 0.0 or pos.value != 0.0:
            v1 = pos.qty * m
            g1 = abs(v1)
            d = (v1 - pos.value, g1 - pos.gross, 0.0, 0.0, 0.0)
            pos.value = v1
            pos.gross = g1
            pair_delta(st, p, d, np.int64(0), ok)
        p = pos.next_holder


@helper
def _judge_holders(y, seq, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Exposure rows on each scope holding ``y``, once per revaluation ``seq``."""
    sc, pos = st.scopes, st.positions
    p = st.symbols[y].first_holder
    while p >= 0:
        if pos[p].qty != 0.0:
            owner = pos[p].owner
            for s in (owner, y):
                if (s == y and owner != FIRM) or sc[s].seen_seq == seq:
                    continue
                sc[s].seen_seq = seq
                for j in range(rules.exposure_rows.shape[0]):
                    r = rules.exposure_rows[j]
                    if rules.rows[r].level != sc[s].level or not matches(rules, sc, r, s):
                        continue
                    v = scope_value(rules.rows[r].metric, sc, s)
                    judge(r, s, v, e, now, st, rules, peaks, out)
        p = pos[p].next_holder


@helper
def price_move(y, px, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Symbol ``y`` has a new reference price: revalue its holders now, or at the next epoch.

    The first price move of a symbol in a revaluation epoch (``rules.revalue_ns`` of
    event time) is applied at once; later ones in the same epoch only update the
    reference price and queue the symbol for :func:`flush` at the start of the next
    epoch, so a symbol's holders are revalued at most once per epoch.
    """
    sym, g = st.symbols[y], st.globals[0]
    sym.ref_price = px
    if rules.revalue_ns > 0 and (sym.val_epoch >= g.epoch or sym.pending != 0):
        queue(st, y)
        return
    sym.val_epoch = g.epoch
    _move(st, y, consistent(st, rules))
    if rules.exposure_rows.shape[0] == 0:
        return
    g.flush_seq += 1
    _judge_holders(y, g.flush_seq, e, now, st, rules, peaks, out)


@helper
def flush(now, spare, e, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Enter the revaluation epoch of ``now``: apply every queued price, then judge.

    All queued symbols are moved first, the session highs that waited for a consistent
    valuation are raised, and then each holding scope is judged once, so a scope holding
    several of them is never judged half-revalued. Returns False, having changed nothing
    and set ``out.counts.need``, when the decisions (keeping ``spare`` for the caller)
    could overflow.
    """
    rw = rules.revalue_ns
    g, sy = st.globals[0], st.symbols
    if rw <= 0 or now // rw <= g.epoch:
        return True
    ep = now // rw
    head = g.first_pending
    if head >= 0:
        need = spare
        y = head
        while y >= 0:
            need += rows_for_price_move(st, rules, y)
            y = sy[y].next_pending
        counts = out.counts[0]
        if counts.n + need > out.decisions.shape[0]:
            counts.need = need
            return False
        y = head
        while y >= 0:
            sy[y].val_epoch = ep
            _move(st, y, np.bool_(False))
            y = sy[y].next_pending
        settle_peaks(st)
        if rules.exposure_rows.shape[0] > 0:
            g.flush_seq += 1
            y = head
            while y >= 0:
                _judge_holders(y, g.flush_seq, e, now, st, rules, peaks, out)
                y = sy[y].next_pending
        y = head
        while y >= 0:
            nxt = sy[y].next_pending
            sy[y].pending = 0
            sy[y].next_pending = -1
            y = nxt
        g.first_pending = -1
        g.last_pending = -1
    else:
        settle_peaks(st)
    g.epoch = ep
    return True
