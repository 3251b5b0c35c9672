"""The state arrays of one engine, and their growth as new keys appear.

Capacity doubles whenever a batch brings more keys than fit, so there is no
fixed maximum that silently drops keys, and the amortised cost per new key is
constant. All arrays are plain numpy; the kernel receives them as arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import types
from numba.typed import Dict

from riskguard.state.keys import KeySpace
from riskguard.state.layout import (
    G_DUP_PURGE,
    G_EPOCH,
    G_JUDGED,
    G_LAST_ANY,
    G_PEND_HEAD,
    G_PEND_TAIL,
    G_START,
    NCI,
    NG,
    NOF,
    NOI,
    NPF,
    NPI,
    NQF,
    NQI,
    NSF,
    NSI,
    OI_PARENT,
    PI_ACC_PAIR,
    PI_FIRM_PAIR,
    PI_NEXT,
    PI_OWNER,
    PI_SYM,
    RING,
    SI_ACCOUNT,
    SI_HEAD,
    SI_JUDGED,
    SI_LEVEL,
    SI_MARK_TS,
    SI_PEND_NEXT,
    SI_SEEN,
    SI_SLOT,
    SI_TAIL,
    SI_VAL_EPOCH,
)
from riskguard.state.tables import clear_dups

DUP_KEY = types.Tuple(
    (types.int64, types.int64, types.int64, types.int64, types.float64, types.float64)
)
ALERT_KEY = types.UniTuple(types.int64, 2)

_SI_FILL = np.zeros(NSI, dtype=np.int64)
_SI_FILL[[SI_ACCOUNT, SI_MARK_TS, SI_HEAD, SI_TAIL, SI_JUDGED]] = -1
_SI_FILL[[SI_VAL_EPOCH, SI_PEND_NEXT, SI_SEEN]] = -1
_PI_FILL = np.zeros(NPI, dtype=np.int64)
_PI_FILL[[PI_NEXT, PI_ACC_PAIR, PI_FIRM_PAIR]] = -1
_OI_FILL = np.zeros(NOI, dtype=np.int64)
_OI_FILL[OI_PARENT] = -1


def _rows(n: int, fill: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.tile(fill, (n, 1))


def _grow(a: np.ndarray[Any, Any], n: int, fill: Any, axis: int = 0) -> np.ndarray[Any, Any]:
    """``a`` with at least ``n`` entries along ``axis`` (doubling), new entries = ``fill``."""
    have = a.shape[axis]
    if have >= n:
        return a
    shape = list(a.shape)
    shape[axis] = max(n, 2 * have, 16)
    if isinstance(fill, np.ndarray):
        out = np.tile(fill, (shape[0], 1)).astype(a.dtype)
    else:
        out = np.full(shape, fill, dtype=a.dtype)
    index = [slice(None)] * a.ndim
    index[axis] = slice(0, have)
    out[tuple(index)] = a
    return out


class StateStore:
    """Every array the kernel reads or writes, sized to the key space."""

    def __init__(self, n_counters: int = 0, capacity: int = 64) -> None:
        c = capacity
        self.sf = np.zeros((c, NSF))
        self.si = _rows(c, _SI_FILL)
        self.pf = np.zeros((c, NPF))
        self.pi = _rows(c, _PI_FILL)
        self.of = np.zeros((c, NOF))
        self.oi = _rows(c, _OI_FILL)
        self.qf = np.zeros((c, NQF))
        self.qi = np.zeros((c, NQI), dtype=np.int64)
        self.src_last = np.full(c, -1, dtype=np.int64)
        self.g = np.zeros(NG, dtype=np.int64)
        self.g[G_START] = -1
        self.g[G_LAST_ANY] = -1
        self.g[G_DUP_PURGE] = 4096
        self.g[G_JUDGED] = -1
        self.g[G_EPOCH] = -1
        self.g[G_PEND_HEAD] = -1
        self.g[G_PEND_TAIL] = -1
        self.alerts = Dict.empty(ALERT_KEY, types.int64)
        self.dup = Dict.empty(DUP_KEY, types.int64)
        self.ci = np.zeros((0, NCI), dtype=np.int64)
        self.cb = np.zeros((0, capacity, RING))
        self.clast = np.zeros((0, capacity), dtype=np.int64)
        self.csum = np.zeros((0, capacity))
        self.reset_counters(np.zeros((n_counters, NCI), dtype=np.int64))
        self._scopes = 1  # scope 0 (firm) is laid out by the fills above
        self._pairs = 0

    def reset_counters(self, ci: np.ndarray[Any, Any]) -> None:
        """Install counter definitions ``ci`` (kind, level, width, window).

        A counter that existed before with the same kind, level and window keeps its
        buckets, so reloading limits does not blind a rate limit for a window's
        length. New counters start empty. The duplicate-order table restarts.
        """
        old = {tuple(int(x) for x in row): k for k, row in enumerate(self.ci)}
        cap = self.cb.shape[1]
        cb = np.zeros((ci.shape[0], cap, RING))
        clast = np.full((ci.shape[0], cap), -1, dtype=np.int64)
        csum = np.zeros((ci.shape[0], cap))
        for k, row in enumerate(ci):
            was = old.get(tuple(int(x) for x in row))
            if was is not None:
                cb[k], clast[k], csum[k] = self.cb[was], self.clast[was], self.csum[was]
        self.ci, self.cb, self.clast, self.csum = ci, cb, clast, csum
        clear_dups(self.dup)

    def reserve(self, keys: KeySpace) -> None:
        """Grow every array to fit ``keys`` and copy new key metadata into them."""
        ns = keys.n_scopes
        if ns > self.sf.shape[0]:
            self.sf = _grow(self.sf, ns, 0.0)
            self.si = _grow(self.si, ns, _SI_FILL)
        rows = max(keys.level_counts)  # counters: a row per scope of the counter's level
        if rows > self.cb.shape[1]:
            self.cb = _grow(self.cb, rows, 0.0, axis=1)
            self.clast = _grow(self.clast, rows, -1, axis=1)
            self.csum = _grow(self.csum, rows, 0.0, axis=1)
        if ns > self._scopes:
            self.si[self._scopes : ns, SI_LEVEL] = keys.scope_levels[self._scopes : ns]
            self.si[self._scopes : ns, SI_SLOT] = keys.scope_slots[self._scopes : ns]
            self._scopes = ns
        for strategy, account in keys.new_bindings:
            self.si[strategy, SI_ACCOUNT] = account
        keys.new_bindings.clear()
        npairs = keys.n_pairs
        if npairs > self._pairs:
            self.pf = _grow(self.pf, npairs, 0.0)
            self.pi = _grow(self.pi, npairs, _PI_FILL)
            self._pairs = npairs
        if keys.new_pairs:
            new = np.asarray(keys.new_pairs, dtype=np.int64)
            ids = new[:, 0]
            self.pi[ids, PI_OWNER] = new[:, 1]
            self.pi[ids, PI_SYM] = new[:, 2]
            self.pi[ids, PI_ACC_PAIR] = new[:, 3]
            self.pi[ids, PI_FIRM_PAIR] = new[:, 4]
            keys.new_pairs.clear()
        self.of = _grow(self.of, keys.n_orders, 0.0)
        self.oi = _grow(self.oi, keys.n_orders, _OI_FILL)
        self.qf = _grow(self.qf, len(keys.parents), 0.0)
        self.qi = _grow(self.qi, len(keys.parents), 0)
        self.src_last = _grow(self.src_last, len(keys.source_names), -1)

    def nbytes(self) -> int:
        """Bytes held by the numpy state arrays (typed dicts not included)."""
        arrays = (
            self.sf,
            self.si,
            self.pf,
            self.pi,
            self.of,
            self.oi,
            self.qf,
            self.qi,
            self.src_last,
            self.cb,
            self.clast,
            self.csum,
        )
        return int(sum(a.nbytes for a in arrays))
