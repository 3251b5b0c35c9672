"""Compiled helpers for the two typed-dict tables: duplicate orders and alert edges.

Touching a numba typed dict from Python (inserting, iterating, clearing)
compiles helpers on first use, uncached: 0.8 s at a restore, seconds at the
first snapshot, stalling the event loop. Every access from Python goes through
these cached functions instead. Their compiled code is keyed to the kernel
sources (see :mod:`riskguard.state.kernel`), which re-exports them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def fill_dups(dup, ints, floats, seen):  # type: ignore[no-untyped-def]
    """Load duplicate-order table entries (snapshot restore) without Python-side dict calls.

    Inserting into a numba typed dict from Python compiles helpers on first use
    (0.8 s, uncached); doing it here keeps restarts fast.
    """
    for i in range(ints.shape[0]):
        key = (ints[i, 0], ints[i, 1], ints[i, 2], ints[i, 3], floats[i, 0], floats[i, 1])
        dup[key] = seen[i]


@njit(cache=True)
def fill_alerts(alerts, pairs):  # type: ignore[no-untyped-def]
    """Load active alert edges (row, scope) (snapshot restore)."""
    for i in range(pairs.shape[0]):
        alerts[(pairs[i, 0], pairs[i, 1])] = 1


@njit(cache=True)
def dump_dups(dup):  # type: ignore[no-untyped-def]
    """The duplicate-order table as arrays (snapshots), without Python-side dict iteration.

    Iterating a numba typed dict from Python compiles helpers on first use: a
    multi-second stall of the event loop at the first snapshot, measured by the
    latency bench. This runs compiled and cached.
    """
    n = len(dup)
    ints = np.empty((n, 4), dtype=np.int64)
    floats = np.empty((n, 2))
    seen = np.empty(n, dtype=np.int64)
    for i, (key, value) in enumerate(dup.items()):
        ints[i, 0] = key[0]
        ints[i, 1] = key[1]
        ints[i, 2] = key[2]
        ints[i, 3] = key[3]
        floats[i, 0] = key[4]
        floats[i, 1] = key[5]
        seen[i] = value
    return ints, floats, seen


@njit(cache=True)
def dump_alerts(alerts):  # type: ignore[no-untyped-def]
    """The raised alert edges (row, scope) as an array (snapshots)."""
    out = np.empty((len(alerts), 2), dtype=np.int64)
    for i, key in enumerate(alerts):
        out[i, 0] = key[0]
        out[i, 1] = key[1]
    return out


@njit(cache=True)
def clear_dups(dup):  # type: ignore[no-untyped-def]
    """Empty the duplicate-order table (compiled: see :func:`dump_dups`)."""
    dup.clear()


@njit(cache=True)
def clear_alerts(alerts):  # type: ignore[no-untyped-def]
    """Forget every raised alert edge (compiled: see :func:`dump_dups`)."""
    alerts.clear()
