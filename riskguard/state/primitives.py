"""Building blocks of the numba kernel: counters, positions, rule checks.

Each function is ``@njit(cache=True)`` and works on the state arrays laid out in
:mod:`riskguard.state.layout`. The event loop that strings them together is in
:mod:`riskguard.state.kernel`.
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
from riskguard.state.layout import (
    FIRM,
    G_EPOCH,
    G_JUDGED,
    G_PEND_HEAD,
    G_PEND_TAIL,
    G_SEQ,
    O_EVENT,
    O_FROM,
    O_ROW,
    O_SCOPE,
    O_TO,
    PF_COST,
    PF_POS,
    PF_REAL,
    PI_LINKED,
    PI_NEXT,
    PI_OWNER,
    PI_SYM,
    RF_MAX,
    RF_MIN,
    RI_ACTION,
    RI_LEVEL,
    RI_MATCH,
    RI_MATCH_ACC,
    RI_METRIC,
    RING,
    RP_EDGES,
    RP_HI,
    RP_LO,
    RP_N,
    SF_COST,
    SF_GROSS,
    SF_NET,
    SF_PEAK,
    SF_REAL,
    SF_REF,
    SF_VAL,
    SI_ACCOUNT,
    SI_HEAD,
    SI_JUDGED,
    SI_LEVEL,
    SI_NPAIRS,
    SI_OPEN,
    SI_PEND,
    SI_PEND_NEXT,
    SI_SEEN,
    SI_STATE,
    SI_TAIL,
    SI_VAL_EPOCH,
)
from riskguard.vocabulary import A_ALERT, L_ACCOUNT, L_FIRM, L_STRATEGY


@njit(cache=True, _nrt=False)
def _at_level(level, acc, strat, sym):  # type: ignore[no-untyped-def]
    if level == L_FIRM:
        return FIRM
    if level == L_ACCOUNT:
        return acc
    if level == L_STRATEGY:
        return strat
    return sym


@njit(cache=True, _nrt=False)
def _advance(cb, clast, csum, k, s, b):  # type: ignore[no-untyped-def]
    """Move counter ``k`` of scope ``s`` forward to bucket ``b``, clearing expired buckets."""
    last = clast[k, s]
    if b <= last:
        return
    steps = b - last
    if steps >= RING:
        for j in range(RING):
            cb[k, s, j] = 0.0
    else:
        for j in range(1, steps + 1):
            cb[k, s, (last + j) % RING] = 0.0
    clast[k, s] = b
    tot = 0.0
    for j in range(RING):
        tot += cb[k, s, j]
    csum[k, s] = tot


@njit(cache=True, _nrt=False)
def _scope_delta(sf, s, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    sf[s, SF_NET] += dnet
    sf[s, SF_GROSS] += dgross
    sf[s, SF_REAL] += dreal
    sf[s, SF_COST] += dcost
    pnl = sf[s, SF_REAL] + sf[s, SF_NET] - sf[s, SF_COST]
    sf[s, SF_PEAK] = max(sf[s, SF_PEAK], pnl)


@njit(cache=True, _nrt=False)
def _pair_delta(sf, pi, p, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    """Apply a change of pair ``p`` to its owner scope, and the firm's pairs to the symbol."""
    owner = pi[p, PI_OWNER]
    _scope_delta(sf, owner, dnet, dgross, dreal, dcost)
    if owner == FIRM:
        _scope_delta(sf, pi[p, PI_SYM], dnet, dgross, dreal, dcost)


@njit(cache=True, _nrt=False)
def _fill_pair(pf, p, d, x):  # type: ignore[no-untyped-def]
    """Average-cost position update; returns (old |pos|, new |pos|, d pos, d cost, d realised)."""
    q = pf[p, PF_POS]
    c = pf[p, PF_COST]
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
    pf[p, PF_POS] = nq
    pf[p, PF_COST] = nc
    pf[p, PF_REAL] += dr
    return abs(q), abs(nq), nq - q, nc - c, dr


@njit(cache=True, _nrt=False)
def _link(si, pi, p):  # type: ignore[no-untyped-def]
    """Append pair ``p`` to its symbol's list the first time it holds a position."""
    if pi[p, PI_LINKED] != 0:
        return
    pi[p, PI_LINKED] = 1
    y = pi[p, PI_SYM]
    tail = si[y, SI_TAIL]
    if tail < 0:
        si[y, SI_HEAD] = p
    else:
        pi[tail, PI_NEXT] = p
    si[y, SI_TAIL] = p
    si[y, SI_NPAIRS] += 1


@njit(cache=True, _nrt=False)
def _scope_value(metric, sf, si, s):  # type: ignore[no-untyped-def]
    if metric == M_GROSS_NOTIONAL:
        return sf[s, SF_GROSS]
    if metric == M_NET_NOTIONAL:
        return sf[s, SF_NET]
    pnl = sf[s, SF_REAL] + sf[s, SF_NET] - sf[s, SF_COST]
    if metric == M_PNL:
        return pnl
    if metric == M_DRAWDOWN:
        return sf[s, SF_PEAK] - pnl
    if metric == M_OPEN_ORDERS:
        return float(si[s, SI_OPEN])
    return np.nan


@njit(cache=True, _nrt=False)
def _matches(ri, si, r, s):  # type: ignore[no-untyped-def]
    m = ri[r, RI_MATCH]
    if m >= 0 and m != s:
        return False
    ma = ri[r, RI_MATCH_ACC]
    return not (ma >= 0 and si[s, SI_ACCOUNT] != ma)


@njit(cache=True, _nrt=False)
def _check(r, s, v, e, now, g, ri, rf, rp, si, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Record ``v`` for row ``r`` at scope ``s``; escalate the scope on a breach.

    A breach evidenced by an event at or before the scope's *judged* time (an
    operator resumed after it, or the previous instance already decided it) is
    recorded in the peaks but changes nothing.

    Returns (outputs, edge). ``edge`` is 1 when an alert row breached and 2 when
    an alert row that has raised edges did not: the caller then settles the edge
    with :func:`_edge`. That part is kept apart because it needs the typed dict,
    and a numba function holding reference-counted objects pays an atomic
    increment and decrement per array argument on every call; this one is
    compiled without reference counting and runs once per rule per event.
    """
    if math.isnan(v):  # the metric does not apply to this event
        return n_out, 0
    rp[r, RP_N] += 1.0
    rp[r, RP_HI] = max(rp[r, RP_HI], v)
    rp[r, RP_LO] = min(rp[r, RP_LO], v)
    breach = (v > rf[r, RF_MAX] or v < rf[r, RF_MIN]) and now > max(g[G_JUDGED], si[s, SI_JUDGED])
    action = ri[r, RI_ACTION]
    if action == A_ALERT:
        if breach:
            return n_out, 1
        return n_out, 2 if rp[r, RP_EDGES] > 0.0 else 0
    if breach and si[s, SI_STATE] < action:
        out_i[n_out, O_EVENT] = e
        out_i[n_out, O_ROW] = r
        out_i[n_out, O_SCOPE] = s
        out_i[n_out, O_FROM] = si[s, SI_STATE]
        out_i[n_out, O_TO] = action
        out_f[n_out] = v
        si[s, SI_STATE] = action
        n_out += 1
    return n_out, 0


@njit(cache=True)
def _edge(edge, r, s, v, e, rp, si, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Raise (``edge`` 1) or clear (2) the alert edge of row ``r`` at scope ``s``.

    An alert fires once when its edge is raised and again only after a check
    without a breach cleared it. ``rp[r, RP_EDGES]`` counts the row's raised edges.
    """
    key = (r, s)
    if edge == 1:
        if key not in alerts:
            alerts[key] = 1
            rp[r, RP_EDGES] += 1.0
            out_i[n_out, O_EVENT] = e
            out_i[n_out, O_ROW] = r
            out_i[n_out, O_SCOPE] = s
            out_i[n_out, O_FROM] = si[s, SI_STATE]
            out_i[n_out, O_TO] = -1
            out_f[n_out] = v
            n_out += 1
    elif key in alerts:
        del alerts[key]
        rp[r, RP_EDGES] -= 1.0
    return n_out


@njit(cache=True, _nrt=False)
def _move(y, sf, si, pf, pi):  # type: ignore[no-untyped-def]
    """Value every holder of symbol ``y`` at its latest reference price."""
    dm = sf[y, SF_REF] - sf[y, SF_VAL]
    sf[y, SF_VAL] = sf[y, SF_REF]
    p = si[y, SI_HEAD]
    while p >= 0:
        q = pf[p, PF_POS]
        if q != 0.0:
            _pair_delta(sf, pi, p, q * dm, abs(q) * dm, 0.0, 0.0)
        p = pi[p, PI_NEXT]


@njit(cache=True)
def _holders(y, seq, e, now, g, sf, si, pf, pi, ri, rf, rp, exp_rows, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Evaluate exposure rows on each scope holding ``y``, once per revaluation ``seq``."""
    p = si[y, SI_HEAD]
    while p >= 0:
        if pf[p, PF_POS] != 0.0:
            owner = pi[p, PI_OWNER]
            for s in (owner, y):
                if (s == y and owner != FIRM) or si[s, SI_SEEN] == seq:
                    continue
                si[s, SI_SEEN] = seq
                for j in range(exp_rows.shape[0]):
                    r = exp_rows[j]
                    if ri[r, RI_LEVEL] != si[s, SI_LEVEL] or not _matches(ri, si, r, s):
                        continue
                    v = _scope_value(ri[r, RI_METRIC], sf, si, s)
                    n_out, edge = _check(r, s, v, e, now, g, ri, rf, rp, si, out_i, out_f, n_out)
                    if edge:
                        n_out = _edge(edge, r, s, v, e, rp, si, alerts, out_i, out_f, n_out)
        p = pi[p, PI_NEXT]
    return n_out


@njit(cache=True)
def _price(y, px, rw, e, now, g, sf, si, pf, pi, ri, rf, rp, exp_rows, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Symbol ``y`` has a new reference price: revalue its holders now, or at the next epoch.

    The first price move of a symbol in a revaluation epoch (``rw`` ns of event
    time) is applied at once; later ones in the same epoch only update the
    reference price and queue the symbol for :func:`_flush` at the start of the
    next epoch, so a symbol's holders are revalued at most once per epoch however
    fast it is marked.
    """
    sf[y, SF_REF] = px
    if rw > 0 and si[y, SI_VAL_EPOCH] >= g[G_EPOCH]:
        if si[y, SI_PEND] == 0:
            si[y, SI_PEND] = 1
            si[y, SI_PEND_NEXT] = -1
            tail = g[G_PEND_TAIL]
            if tail < 0:
                g[G_PEND_HEAD] = y
            else:
                si[tail, SI_PEND_NEXT] = y
            g[G_PEND_TAIL] = y
        return n_out
    si[y, SI_VAL_EPOCH] = g[G_EPOCH]
    _move(y, sf, si, pf, pi)
    if exp_rows.shape[0] == 0:
        return n_out
    g[G_SEQ] += 1
    return _holders(
        y, g[G_SEQ], e, now, g, sf, si, pf, pi, ri, rf, rp, exp_rows, alerts, out_i, out_f, n_out
    )


@njit(cache=True)
def _flush(now, rw, extra, e, g, sf, si, pf, pi, ri, rf, rp, exp_rows, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Enter the revaluation epoch of ``now``: apply every queued price, then evaluate.

    All queued symbols are moved first and each holding scope is evaluated once
    after, so a scope holding several of them is never judged half-revalued.
    Returns (outputs, done). Not done means the output buffer (keeping ``extra``
    rows spare) could overflow: nothing was changed; drain and call again.
    """
    if rw <= 0:
        return n_out, True
    ep = now // rw
    if ep <= g[G_EPOCH]:
        return n_out, True
    head = g[G_PEND_HEAD]
    if head >= 0:
        nexp = exp_rows.shape[0]
        need = extra
        y = head
        while y >= 0:
            need += 2 * nexp * (si[y, SI_NPAIRS] + 1)
            y = si[y, SI_PEND_NEXT]
        if n_out + need > out_i.shape[0]:
            return n_out, False
        y = head
        while y >= 0:
            si[y, SI_VAL_EPOCH] = ep
            _move(y, sf, si, pf, pi)
            y = si[y, SI_PEND_NEXT]
        if nexp > 0:
            g[G_SEQ] += 1
            y = head
            while y >= 0:
                n_out = _holders(
                    y,
                    g[G_SEQ],
                    e,
                    now,
                    g,
                    sf,
                    si,
                    pf,
                    pi,
                    ri,
                    rf,
                    rp,
                    exp_rows,
                    alerts,
                    out_i,
                    out_f,
                    n_out,
                )
                y = si[y, SI_PEND_NEXT]
        y = head
        while y >= 0:
            nxt = si[y, SI_PEND_NEXT]
            si[y, SI_PEND] = 0
            si[y, SI_PEND_NEXT] = -1
            y = nxt
        g[G_PEND_HEAD] = -1
        g[G_PEND_TAIL] = -1
    g[G_EPOCH] = ep
    return n_out, True
