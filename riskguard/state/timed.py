"""Ids stamped with a time, oldest first: the redelivery memory's queues of closed orders
and executions (:mod:`riskguard.state.keys`), held in two int64 arrays.

A ``deque`` of ``(time, id)`` tuples cost about 120 bytes per entry (a tuple and two
int objects); these arrays cost 16, and copy for a snapshot at memcpy speed. With the
default ``engine.dedupe_max_ids`` (a million of each), that is about 200 MB of RSS less
(bench/memory.py, docs/deployment.md "Memory and snapshots").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Ints = np.ndarray[tuple[int], np.dtype[np.int64]]


class TimedIds:
    """A FIFO of (time ns, id) pairs: append at the back, expire from the front."""

    __slots__ = ("_head", "_ids", "_ns", "_tail")

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self._ns: Ints = np.empty(16, dtype=np.int64)
        self._ids: Ints = np.empty(16, dtype=np.int64)
        self._head = self._tail = 0
        listed = list(pairs)
        if listed:
            both = np.asarray(listed, dtype=np.int64).reshape(-1, 2)
            self.extend(both[:, 0], both[:, 1])

    def __len__(self) -> int:
        return self._tail - self._head

    def append(self, ns: int, ident: int) -> None:
        """Add one pair at the back."""
        self._room(1)
        self._ns[self._tail] = ns
        self._ids[self._tail] = ident
        self._tail += 1

    def extend(self, ns: np.ndarray, ids: np.ndarray) -> None:
        """Add pairs ``(ns[j], ids[j])`` at the back, in order (int64 arrays of one length).
        Raises ValueError when the lengths differ."""
        k = len(ns)
        if len(ids) != k:
            raise ValueError(f"{k} times for {len(ids)} ids")
        self._room(k)
        self._ns[self._tail : self._tail + k] = ns
        self._ids[self._tail : self._tail + k] = ids
        self._tail += k

    def expire(self, cutoff_ns: int, keep: int) -> tuple[Ints, Ints]:
        """Remove the front pairs while the oldest is before ``cutoff_ns`` or more than
        ``keep`` are held, and return them (times, ids; copies, oldest first).

        The same as popping a deque while ``q[0][0] < cutoff_ns or len(q) > keep``: the
        pairs beyond ``keep`` go whatever their time, then those before the cutoff up to
        the first that is not (pairs are not always in time order: a later pair with an
        earlier time waits behind it). Costs the pairs removed, not the pairs held.
        """
        i = self._head + max(0, len(self) - keep)
        block = 64
        while i < self._tail:
            seg = self._ns[i : min(i + block, self._tail)]
            hit = np.flatnonzero(seg >= cutoff_ns)
            if hit.size:
                i += int(hit[0])
                break
            i += seg.size
            block *= 2
        gone = self._ns[self._head : i].copy(), self._ids[self._head : i].copy()
        self._head = i
        return gone

    def arrays(self) -> tuple[Ints, Ints]:
        """Copies of the times and the ids held, oldest first (for a snapshot)."""
        return self._ns[self._head : self._tail].copy(), self._ids[self._head : self._tail].copy()

    @classmethod
    def of(cls, ns: np.ndarray, ids: np.ndarray) -> TimedIds:
        """A queue holding ``(ns[j], ids[j])`` (from :meth:`arrays`). Raises ValueError
        when the lengths differ."""
        out = cls()
        out.extend(np.asarray(ns, dtype=np.int64), np.asarray(ids, dtype=np.int64))
        return out

    def _room(self, k: int) -> None:
        cap = self._ns.shape[0]
        if self._tail + k <= cap:
            return
        live = len(self)
        # grow when over 3/4 full, else compact into a new array of the same size: either
        # way amortised O(1), and the pages written past the live pairs before the next
        # compaction stay under a quarter of the array (at twice the pairs held, RSS
        # crept by the whole free half between compactions)
        if live + k > 3 * cap // 4:
            cap = max(2 * cap, 2 * (live + k))
        ns, ids = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
        ns[:live] = self._ns[self._head : self._tail]
        ids[:live] = self._ids[self._head : self._tail]
        self._ns, self._ids, self._head, self._tail = ns, ids, 0, live
