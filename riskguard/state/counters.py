"""Windowed counters and order bookkeeping used by the kernel's per-event loop.

Counters are rings of time buckets per (counter, scope); see
:mod:`riskguard.state.layout` for the columns. The duplicate-order counters use
a typed dict and are kept apart from the others: a numba function holding a
reference-counted object pays atomic reference counting on every call, and the
plain counters run for every event.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from riskguard.state.layout import (
    C_CXL,
    C_DUP,
    C_FILLN,
    C_MSG,
    C_NEW,
    C_REJ,
    CI_KIND,
    CI_LEVEL,
    CI_WIDTH,
    CI_WINDOW,
    FIRM,
    G_DUP_PURGE,
    G_LAST_ANY,
    OI_ACC,
    OI_OPEN,
    OI_STRAT,
    OI_SYM,
    RING,
    SI_OPEN,
    SI_SLOT,
)
from riskguard.state.primitives import _advance, _at_level
from riskguard.vocabulary import T_CANCEL, T_FILL, T_NEW, T_REJECT, T_REPLACE


@njit(cache=True, _nrt=False)
def _close(o, oi, si, closed, n_closed):  # type: ignore[no-untyped-def]
    oi[o, OI_OPEN] = 0
    si[FIRM, SI_OPEN] -= 1
    si[oi[o, OI_ACC], SI_OPEN] -= 1
    si[oi[o, OI_STRAT], SI_OPEN] -= 1
    si[oi[o, OI_SYM], SI_OPEN] -= 1
    closed[n_closed] = o
    return n_closed + 1


@njit(cache=True)
def _purge_dups(dup, ci, g):  # type: ignore[no-untyped-def]
    """Forget duplicate-table entries older than their window before the latest event."""
    stale = []
    for key, seen in dup.items():
        if seen < g[G_LAST_ANY] - ci[key[0], CI_WINDOW]:
            stale.append(key)
    for key in stale:
        del dup[key]
    g[G_DUP_PURGE] = max(4096, 2 * len(dup))


@njit(cache=True, _nrt=False)
def _counters(e, t, now, acc, strat, sym, qty, price, si, ci, cb, clast, csum):  # type: ignore[no-untyped-def]
    """Advance and add to every windowed counter but the duplicate-order ones (:func:`_dups`).

    A counter's row for a scope is the scope's slot within its level (``SI_SLOT``).
    """
    for k in range(ci.shape[0]):
        kind = ci[k, CI_KIND]
        if kind == C_DUP:
            continue
        s = si[_at_level(ci[k, CI_LEVEL], acc, strat, sym), SI_SLOT]
        b = now // ci[k, CI_WIDTH]
        _advance(cb, clast, csum, k, s, b)
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
            v = qty[e] * price[e] if t == T_FILL else 0.0
        if v != 0.0 and b > clast[k, s] - RING:
            cb[k, s, b % RING] += v
            csum[k, s] += v


@njit(cache=True)
def _dups(e, now, acc, strat, sym, side, qty, price, si, ci, cb, clast, csum, dup, g):  # type: ignore[no-untyped-def]
    """Duplicate-order counters, for a new order (the only event they count or are read on)."""
    for k in range(ci.shape[0]):
        if ci[k, CI_KIND] != C_DUP:
            continue
        s = _at_level(ci[k, CI_LEVEL], acc, strat, sym)
        row = si[s, SI_SLOT]
        b = now // ci[k, CI_WIDTH]
        _advance(cb, clast, csum, k, row, b)
        px = price[e] if not math.isnan(price[e]) else -1.0
        key = (k, s, sym, np.int64(side[e]), qty[e], px)
        prev = dup.get(key, np.int64(-1))
        if now > prev:
            dup[key] = now
            if len(dup) > g[G_DUP_PURGE]:
                _purge_dups(dup, ci, g)
        if prev >= 0 and abs(now - prev) < ci[k, CI_WINDOW] and b > clast[k, row] - RING:
            cb[k, row, b % RING] += 1.0
            csum[k, row] += 1.0
