"""Hash tables in numpy arrays for the kernel: raised alert edges and recent new orders.

Open addressing with linear probing over power-of-two arrays. The kernel only inserts,
looks up and deletes (no allocation, so everything compiles with ``_nrt=False`` and a
call costs no reference counting); the engine keeps each table at most half full
before a kernel call with :func:`ensure_edges` / :func:`ensure_dups`, which rehash
into larger arrays (dropping deleted slots) when needed.

Deleted slots are tombstones: lookups probe past them, inserts reuse the first one
they meet. ``used`` counts live and deleted slots, so load factor bounds probe length.

The alert-edge table stores ``key + 1`` so that an empty slot is 0 and a new table is
``np.zeros``: the operating system hands out zero pages lazily, so a table sized for the
worst case (as many inserts as the decision buffer holds, which a revaluation of every
holder can make millions) costs resident memory only for the slots written. Filled with
-1 it cost 128 MiB on the 1,000-account stream of ``bench/memory.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from riskguard.state.bundles import DUP, TABLE, Dups, Edges, fill_record
from riskguard.state.jit import helper

EMPTY = 0
DELETED = -1
#: Dups.state values
FREE = 0
LIVE = 1
GONE = 2
MIN_CAP = 64
DUP_PURGE_MIN = 4096
"""Duplicate-order entries are purged of stale ones only beyond this many live entries."""


@helper
def _mix(x):  # type: ignore[no-untyped-def]
    """splitmix64 finaliser: a well-spread 64-bit hash of an int64."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# alert edges ------------------------------------------------------------------------
@helper
def _edge_slot(keys, key):  # type: ignore[no-untyped-def]
    """Slot holding ``key`` (stored as ``key + 1``), else ``-(insert slot) - 1`` (first
    deleted or empty slot met)."""
    mask = keys.shape[0] - 1
    i = np.int64(_mix(key) & np.uint64(mask))
    free = np.int64(-1)
    stored = key + 1
    while True:
        k = keys[i]
        if k == stored:
            return i
        if k == EMPTY:
            return -(i if free < 0 else free) - 1
        if k == DELETED and free < 0:
            free = i
        i = (i + 1) & mask


@helper
def edge_get(edges, key):  # type: ignore[no-untyped-def]
    """The raised bits of ``key`` (0: none)."""
    i = _edge_slot(edges.keys, key)
    return edges.vals[i] if i >= 0 else np.int64(0)


@helper
def edge_put(edges, key, bits):  # type: ignore[no-untyped-def]
    """Set the raised bits of ``key``; 0 deletes it."""
    i = _edge_slot(edges.keys, key)
    counts = edges.counts[0]
    if bits == 0:
        if i >= 0:
            edges.keys[i] = DELETED
            edges.vals[i] = 0
            counts.live -= 1
        return
    if i < 0:
        i = -i - 1
        if edges.keys[i] == EMPTY:
            counts.used += 1
        edges.keys[i] = key + 1
        counts.live += 1
    edges.vals[i] = bits


@njit(cache=True, _nrt=False)
def _copy_edges(old, new):  # type: ignore[no-untyped-def]
    for i in range(old.keys.shape[0]):
        if old.keys[i] > 0:
            edge_put(new, old.keys[i] - 1, old.vals[i])


def empty_edges(cap: int = MIN_CAP) -> Edges:
    """An empty edge set with ``cap`` slots (a power of two)."""
    keys = np.zeros(cap, dtype=np.int64)  # EMPTY is 0: pages stay unmapped until written
    return Edges(keys, np.zeros(cap, dtype=np.int64), fill_record(TABLE))


def compacted(edges: Edges) -> Edges:
    """A copy of ``edges`` in the smallest table that holds its live entries at half load."""
    fresh = empty_edges(_pow2(2 * int(edges.counts[0]["live"])))
    _copy_edges(edges, fresh)
    return fresh


def carried_edges(edges: Edges, rows: np.ndarray) -> Edges:
    """A copy of ``edges`` keeping only the rows that carry over a limits reload, each
    under its new row: ``rows[r]`` is old row ``r``'s new row (-1: dropped).
    (:func:`riskguard.state.rulebook.carried_rows`). Keys are ``row << 32 | scope or pair``."""
    keys = edges.keys.copy()
    live = keys > 0
    key = keys[live] - 1
    old = key >> 32
    known = old < rows.shape[0]
    new = np.full(old.shape[0], -1, dtype=np.int64)
    new[known] = rows[old[known]]
    keys[live] = np.where(new >= 0, (new << 32 | (key & 0xFFFFFFFF)) + 1, DELETED)
    kept = int(np.count_nonzero(new >= 0))
    fresh = empty_edges(_pow2(2 * kept))
    _copy_edges(Edges(keys, edges.vals, edges.counts), fresh)
    return fresh


def ensure_edges(edges: Edges, extra: int) -> Edges:
    """``edges``, or a rehashed copy, with room for ``extra`` inserts at half load at most."""
    cap = edges.keys.shape[0]
    counts = edges.counts[0]
    if 2 * (int(counts["used"]) + extra) <= cap:
        return edges
    fresh = empty_edges(max(cap, _pow2(2 * (int(counts["live"]) + extra))))
    _copy_edges(edges, fresh)
    return fresh


def _pow2(n: int) -> int:
    return max(MIN_CAP, 1 << max(0, n - 1).bit_length())


# duplicate orders ----------------------------------------------------------------------
@helper
def _dup_slot(slots, counter, scope, symbol, side, qty, price):  # type: ignore[no-untyped-def]
    """Slot holding the key, else ``-(insert slot) - 1``."""
    mask = slots.shape[0] - 1
    h = _mix(counter) ^ _mix(scope << 1) ^ _mix(symbol << 2) ^ _mix(side + 7)
    h ^= _mix(np.int64(qty * 1e6)) ^ _mix(np.int64(price * 1e6) + 3)
    i = np.int64(h & np.uint64(mask))
    free = np.int64(-1)
    while True:
        d = slots[i]
        if d.state == FREE:
            return -(i if free < 0 else free) - 1
        if d.state == GONE:
            if free < 0:
                free = i
        elif (
            d.counter == counter
            and d.scope == scope
            and d.symbol == symbol
            and d.side == side
            and d.qty == qty
            and d.price == price
        ):
            return i
        i = (i + 1) & mask


@helper
def dup_seen(dups, counter, scope, symbol, side, qty, price):  # type: ignore[no-untyped-def]
    """When an identical new order was last seen (ns), -1 never."""
    i = _dup_slot(dups.slots, counter, scope, symbol, side, qty, price)
    return dups.slots[i].seen_ns if i >= 0 else np.int64(-1)


@helper
def dup_put(dups, counter, scope, symbol, side, qty, price, seen_ns):  # type: ignore[no-untyped-def]
    """Insert or update the key with ``seen_ns``."""
    i = _dup_slot(dups.slots, counter, scope, symbol, side, qty, price)
    if i < 0:
        i = -i - 1
        d = dups.slots[i]
        counts = dups.counts[0]
        if d.state == FREE:
            counts.used += 1
        d.state = LIVE
        d.counter = counter
        d.scope = scope
        d.symbol = symbol
        d.side = side
        d.qty = qty
        d.price = price
        d.ahead = 0
        counts.live += 1
    dups.slots[i].seen_ns = seen_ns


@helper
def dup_at(dups, counter, scope, symbol, side, qty, price):  # type: ignore[no-untyped-def]
    """The slot holding the key, -1 none."""
    i = _dup_slot(dups.slots, counter, scope, symbol, side, qty, price)
    return i if i >= 0 else np.int64(-1)


@helper
def purge_dups(dups, counter_defs, latest_ns):  # type: ignore[no-untyped-def]
    """Delete entries older than their counter's window before ``latest_ns``."""
    counts = dups.counts[0]
    for i in range(dups.slots.shape[0]):
        d = dups.slots[i]
        if d.state == LIVE and d.seen_ns < latest_ns - counter_defs[d.counter].window_ns:
            d.state = GONE
            counts.live -= 1
    counts.purge_at = max(DUP_PURGE_MIN, 2 * counts.live)


@njit(cache=True, _nrt=False)
def _copy_dups(old, new):  # type: ignore[no-untyped-def]
    for i in range(old.shape[0]):
        d = old[i]
        if d.state == LIVE:
            dup_put(new, d.counter, d.scope, d.symbol, d.side, d.qty, d.price, d.seen_ns)
            j = dup_at(new, d.counter, d.scope, d.symbol, d.side, d.qty, d.price)
            new.slots[j].ahead = d.ahead


def empty_dups(cap: int = MIN_CAP, purge_at: int = DUP_PURGE_MIN) -> Dups:
    """An empty duplicate-order table with ``cap`` slots (a power of two)."""
    return Dups(np.zeros(cap, dtype=DUP), fill_record(TABLE, purge_at=purge_at))


def carried_dups(dups: Dups, counters: np.ndarray) -> Dups:
    """A copy of ``dups`` keeping the entries of the counters that carry over a limits
    reload, each under its new counter: ``counters[k]`` is old counter ``k``'s new index
    (-1: dropped), so a duplicate-order window kept by a reload still sees the orders it
    held."""
    slots = dups.slots.copy()
    live = slots["state"] == LIVE
    old = slots["counter"][live]
    new = np.full(old.shape[0], -1, dtype=np.int64)
    known = (old >= 0) & (old < counters.shape[0])
    new[known] = counters[old[known]]
    slots["counter"][live] = new
    slots["state"][live] = np.where(new >= 0, LIVE, GONE)
    kept = int(np.count_nonzero(new >= 0))
    fresh = empty_dups(_pow2(2 * kept), int(dups.counts[0]["purge_at"]))
    _copy_dups(slots, fresh)
    return fresh


def ensure_dups(dups: Dups, extra: int) -> Dups:
    """``dups``, or a rehashed copy, with room for ``extra`` inserts at half load at most."""
    cap = dups.slots.shape[0]
    counts = dups.counts[0]
    if 2 * (int(counts["used"]) + extra) <= cap:
        return dups
    live = int(counts["live"])
    fresh = empty_dups(max(cap, _pow2(2 * (live + extra))), int(counts["purge_at"]))
    _copy_dups(dups.slots, fresh)
    return fresh
