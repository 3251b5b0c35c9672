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
    A_ALERT,
    FIRM,
    G_JUDGED,
    L_ACCOUNT,
    L_FIRM,
    L_STRATEGY,
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
    RP_HI,
    RP_LO,
    RP_N,
    SF_COST,
    SF_GROSS,
    SF_NET,
    SF_PEAK,
    SF_REAL,
    SF_REF,
    SI_ACCOUNT,
    SI_HEAD,
    SI_JUDGED,
    SI_LEVEL,
    SI_NPAIRS,
    SI_OPEN,
    SI_STATE,
    SI_TAIL,
)


@njit(cache=True)
def _at_level(level, acc, strat, sym):  # type: ignore[no-untyped-def]
    if level == L_FIRM:
        return FIRM
    if level == L_ACCOUNT:
        return acc
    if level == L_STRATEGY:
        return strat
    return sym


@njit(cache=True)
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


@njit(cache=True)
def _scope_delta(sf, s, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    sf[s, SF_NET] += dnet
    sf[s, SF_GROSS] += dgross
    sf[s, SF_REAL] += dreal
    sf[s, SF_COST] += dcost
    pnl = sf[s, SF_REAL] + sf[s, SF_NET] - sf[s, SF_COST]
    sf[s, SF_PEAK] = max(sf[s, SF_PEAK], pnl)


@njit(cache=True)
def _pair_delta(sf, pi, p, dnet, dgross, dreal, dcost):  # type: ignore[no-untyped-def]
    """Apply a change of pair ``p`` to its owner scope, and the firm's pairs to the symbol."""
    owner = pi[p, PI_OWNER]
    _scope_delta(sf, owner, dnet, dgross, dreal, dcost)
    if owner == FIRM:
        _scope_delta(sf, pi[p, PI_SYM], dnet, dgross, dreal, dcost)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _matches(ri, si, r, s):  # type: ignore[no-untyped-def]
    m = ri[r, RI_MATCH]
    if m >= 0 and m != s:
        return False
    ma = ri[r, RI_MATCH_ACC]
    return not (ma >= 0 and si[s, SI_ACCOUNT] != ma)


@njit(cache=True)
def _check(r, s, v, e, now, g, ri, rf, rp, si, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Record ``v`` for row ``r`` at scope ``s``; escalate or alert on a breach.

    A breach evidenced by an event at or before the scope's *judged* time (an
    operator resumed after it, or the previous instance already decided it) is
    recorded in the peaks but changes nothing.
    """
    if math.isnan(v):  # the metric does not apply to this event
        return n_out
    rp[r, RP_N] += 1.0
    rp[r, RP_HI] = max(rp[r, RP_HI], v)
    rp[r, RP_LO] = min(rp[r, RP_LO], v)
    breach = (v > rf[r, RF_MAX] or v < rf[r, RF_MIN]) and now > max(g[G_JUDGED], si[s, SI_JUDGED])
    action = ri[r, RI_ACTION]
    if action == A_ALERT:
        key = (r, s)
        if breach:
            if key not in alerts:
                alerts[key] = 1
                out_i[n_out, O_EVENT] = e
                out_i[n_out, O_ROW] = r
                out_i[n_out, O_SCOPE] = s
                out_i[n_out, O_FROM] = si[s, SI_STATE]
                out_i[n_out, O_TO] = -1
                out_f[n_out] = v
                n_out += 1
        elif len(alerts) > 0 and key in alerts:
            del alerts[key]
        return n_out
    if breach and si[s, SI_STATE] < action:
        out_i[n_out, O_EVENT] = e
        out_i[n_out, O_ROW] = r
        out_i[n_out, O_SCOPE] = s
        out_i[n_out, O_FROM] = si[s, SI_STATE]
        out_i[n_out, O_TO] = action
        out_f[n_out] = v
        si[s, SI_STATE] = action
        n_out += 1
    return n_out


@njit(cache=True)
def _reprice(y, px, e, now, g, sf, si, pf, pi, ri, rf, rp, exp_rows, alerts, out_i, out_f, n_out):  # type: ignore[no-untyped-def]
    """Move symbol ``y`` to reference price ``px``; re-evaluate every scope holding it."""
    old = sf[y, SF_REF]
    dm = px - old
    sf[y, SF_REF] = px
    p = si[y, SI_HEAD]
    while p >= 0:
        q = pf[p, PF_POS]
        if q != 0.0:
            _pair_delta(sf, pi, p, q * dm, abs(q) * dm, 0.0, 0.0)
        p = pi[p, PI_NEXT]
    if exp_rows.shape[0] == 0:
        return n_out
    p = si[y, SI_HEAD]
    while p >= 0:
        if pf[p, PF_POS] != 0.0:
            owner = pi[p, PI_OWNER]
            for s in (owner, y):
                if s == y and owner != FIRM:
                    continue
                for j in range(exp_rows.shape[0]):
                    r = exp_rows[j]
                    if ri[r, RI_LEVEL] != si[s, SI_LEVEL] or not _matches(ri, si, r, s):
                        continue
                    v = _scope_value(ri[r, RI_METRIC], sf, si, s)
                    n_out = _check(r, s, v, e, now, g, ri, rf, rp, si, alerts, out_i, out_f, n_out)
        p = pi[p, PI_NEXT]
    return n_out
