"""Building blocks of the numba kernel: positions, exposures, rule judgement, revaluation.

Every function is ``@njit(cache=True, _nrt=False)`` over the records and bundles of
:mod:`riskguard.state.bundles`: no reference counting, no allocation. The event loop
that strings them together is in :mod:`riskguard.state.kernel`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from riskguard.limits.vocabulary import (
    M_DRAWDOWN,
    M_GROSS_NOTIONAL,
    M_NET_NOTIONAL,
    M_OPEN_ORDERS,
    M_PNL,
)
from riskguard.state.bundles import FIRM
from riskguard.state.tables import edge_add, edge_remove
from riskguard.vocabulary import A_ALERT, L_ACCOUNT, L_FIRM, L_STRATEGY


@njit(cache=True, _nrt=False)
def at_level(level, account, strategy, symbol):  # type: ignore[no-untyped-def]
    """The scope id of an event's scope at ``level``."""
    if level == L_FIRM:
        return FIRM
    if level == L_ACCOUNT:
        return account
    if level == L_STRATEGY:
        return strategy
    return symbol


# positions and exposure ------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def _scope_delta(sc, s, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    r = sc[s]
    r.net_notional += dnet
    r.gross_notional += dgross
    r.realised_pnl += dreal
    r.cost_basis += dcost
    r.peak_pnl = max(r.peak_pnl, pnl_of(sc, s))


@njit(cache=True, _nrt=False)
def pnl_of(sc, s):  # type: ignore[no-untyped-def]
    """Realised + unrealised P&L of scope ``s`` (currency)."""
    r = sc[s]
    return r.realised_pnl + r.net_notional - r.cost_basis


@njit(cache=True, _nrt=False)
def pair_delta(st, p, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    """Apply a change of pair ``p`` to its owner scope (and, for the firm's, to the symbol)."""
    owner = st.positions[p].owner
    _scope_delta(st.scopes, owner, dnet, dgross, dreal, dcost)
    if owner == FIRM:
        _scope_delta(st.scopes, st.positions[p].symbol, dnet, dgross, dreal, dcost)


@njit(cache=True, _nrt=False)
def fill_pair(pos, p, d, x):  # type: ignore[no-untyped-def]
    """Average-cost update of pair ``p`` by a fill of signed qty ``d`` at price ``x``.

    Returns (old |qty|, new |qty|, d qty, d cost, d realised). A fill that crosses zero
    closes the old position at its average cost and opens the rest at ``x``.
    """
    rec = pos[p]
    q = rec.qty
    c = rec.cost
    dr = 0.0
    if q == 0.0 or (q > 0.0) == (d > 0.0):
        nq = q + d
        nc = c + d * x
    else:
        avg = c / q
        k = min(abs(d), abs(q))
        dr = k * (x - avg) if q > 0.0 else k * (avg - x)
        if abs(d) < abs(q):
            nq = q + d
            nc = avg * nq
        elif abs(d) == abs(q):
            nq = 0.0
            nc = 0.0
        else:
            nq = q + d
            nc = x * nq
    rec.qty = nq
    rec.cost = nc
    rec.realised += dr
    return abs(q), abs(nq), nq - q, nc - c, dr


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def scope_value(metric, sc, s):  # type: ignore[no-untyped-def]
    """A stateful metric of scope ``s`` (exposure, P&L, open orders); NaN for others."""
    if metric == M_GROSS_NOTIONAL:
        return sc[s].gross_notional
    if metric == M_NET_NOTIONAL:
        return sc[s].net_notional
    if metric == M_PNL:
        return pnl_of(sc, s)
    if metric == M_DRAWDOWN:
        return sc[s].peak_pnl - pnl_of(sc, s)
    if metric == M_OPEN_ORDERS:
        return float(sc[s].open_orders)
    return np.nan


# judging --------------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def matches(rules, sc, r, s):  # type: ignore[no-untyped-def]
    """Whether row ``r`` applies to scope ``s`` (its match list, and a strategy's account)."""
    row = rules.rows[r]
    if row.match >= 0 and row.match != s:
        return False
    return not (row.match_account >= 0 and sc[s].account != row.match_account)


@njit(cache=True, _nrt=False)
def judge(r, s, v, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Record value ``v`` of row ``r`` at scope ``s`` (event ``e``, event time ``now``).

    NaN means the metric does not apply: nothing is recorded. A breach escalates the
    scope's latched state to the row's action if that is stricter, writing one output
    row; an alert row writes one when its edge is raised and re-arms once a value is
    back within the limit. A breach evidenced by an event at or before the scope's
    judged time (an operator resumed after it, or the previous instance decided it)
    is recorded in the peaks but changes nothing.
    """
    if math.isnan(v):
        return
    peak = peaks[r]
    peak.evaluations += 1.0
    peak.high = max(peak.high, v)
    peak.low = min(peak.low, v)
    row = rules.rows[r]
    scope = st.scopes[s]
    breach = (v > row.upper or v < row.lower) and now > max(
        st.globals[0].judged_ns, scope.judged_ns
    )
    if row.action == A_ALERT:
        if breach:
            if edge_add(st.edges, r << 32 | s):
                peak.edges += 1.0
                emit(out, e, r, s, scope.state, -1, v)
        elif peak.edges > 0.0 and edge_remove(st.edges, r << 32 | s):
            peak.edges -= 1.0
        return
    if breach and scope.state < row.action:
        emit(out, e, r, s, scope.state, row.action, v)
        scope.state = row.action


@njit(cache=True, _nrt=False)
def emit(out, e, r, s, old, new, v):  # type: ignore[no-untyped-def]
    """Write one output row (``new`` -1: an alert)."""
    counts = out.counts[0]
    d = out.decisions[counts.n]
    d.event = e
    d.row = r
    d.scope = s
    d.from_state = old
    d.to_state = new
    d.value = v
    counts.n += 1


# revaluation ----------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def rows_for_price_move(st, rules, y):  # type: ignore[no-untyped-def]
    """Output rows a revaluation of symbol ``y`` may write (two per exposure row per holder)."""
    return 2 * rules.exposure_rows.shape[0] * (st.symbols[y].n_holders + 1)


@njit(cache=True, _nrt=False)
def _move(st, y):  # type: ignore[no-untyped-def]
    """Value every holder of symbol ``y`` at its latest reference price."""
    sym = st.symbols[y]
    dm = sym.ref_price - sym.val_price
    sym.val_price = sym.ref_price
    p = sym.first_holder
    while p >= 0:
        q = st.positions[p].qty
        if q != 0.0:
            pair_delta(st, p, q * dm, abs(q) * dm, 0.0, 0.0)
        p = st.positions[p].next_holder


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def price_move(y, px, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Symbol ``y`` has a new reference price: revalue its holders now, or at the next epoch.

    The first price move of a symbol in a revaluation epoch (``rules.revalue_ns`` of
    event time) is applied at once; later ones in the same epoch only update the
    reference price and queue the symbol for :func:`flush` at the start of the next
    epoch, so a symbol's holders are revalued at most once per epoch.
    """
    sym, g = st.symbols[y], st.globals[0]
    sym.ref_price = px
    if rules.revalue_ns > 0 and sym.val_epoch >= g.epoch:
        if sym.pending == 0:
            sym.pending = 1
            sym.next_pending = -1
            tail = g.last_pending
            if tail < 0:
                g.first_pending = y
            else:
                st.symbols[tail].next_pending = y
            g.last_pending = y
        return
    sym.val_epoch = g.epoch
    _move(st, y)
    if rules.exposure_rows.shape[0] == 0:
        return
    g.flush_seq += 1
    _judge_holders(y, g.flush_seq, e, now, st, rules, peaks, out)


@njit(cache=True, _nrt=False)
def flush(now, spare, e, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Enter the revaluation epoch of ``now``: apply every queued price, then judge.

    All queued symbols are moved first and each holding scope is judged once after, so a
    scope holding several of them is never judged half-revalued. Returns False, having
    changed nothing and set ``out.need``, when the output buffer (keeping ``spare`` rows
    for the caller) could overflow.
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
            _move(st, y)
            y = sy[y].next_pending
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
    g.epoch = ep
    return True
