"""The state of one engine: its records, their growth as keys appear, and export/load.

Capacity doubles whenever a batch brings more keys than fit, so there is no fixed
maximum that silently drops keys, and the amortised cost per new key is constant. The
kernel receives the bundle :attr:`StateStore.state` as an argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from riskguard.state.bundles import (
    COUNTER,
    EVENT,
    FILLS,
    GLOBALS,
    Array,
    Counters,
    State,
    fill_record,
    grown,
    records,
)
from riskguard.state.codes import JUMP_CONFIRM, O_CLOSED, O_PENDING, RING
from riskguard.state.keys import KeySpace
from riskguard.state.tables import (
    carried_dups,
    compacted,
    empty_dups,
    empty_edges,
    ensure_dups,
    ensure_edges,
)


class LayoutError(ValueError):
    """Exported state that does not fit this build's records (another version, or corrupt)."""


def _counters(defs: Array, rows: int) -> Counters:
    k = defs.shape[0]
    return Counters(
        defs=defs,
        buckets=np.zeros((k, rows, RING)),
        last_bucket=np.full((k, rows), -1, dtype=np.int64),
        total=np.zeros((k, rows)),
    )


def _globals() -> Array:
    return fill_record(
        GLOBALS,
        start_ns=-1,
        last_event_ns=-1,
        judged_ns=-1,
        epoch=-1,
        first_pending=-1,
        last_pending=-1,
    )


class StateStore:
    """Every record the kernel reads or writes, sized to the key space (:attr:`state`)."""

    def __init__(self, capacity: int = 64) -> None:
        per_id = {kind: records(kind, capacity) for kind in FILLS}
        self.state = State(
            **per_id,
            globals=_globals(),
            ahead=fill_record(EVENT, typ=-1).repeat(JUMP_CONFIRM),
            counters=_counters(np.zeros(0, dtype=COUNTER), capacity),
            edges=empty_edges(),
            dups=empty_dups(),
        )
        self._scopes = 1  # scope 0 (the firm) is laid out by the fill values
        self.state.currencies["known"][0] = 1  # the base currency: rate 1, always known

    def reset_counters(self, defs: Array) -> None:
        """Install counter definitions ``defs`` (COUNTER records).

        A counter that existed before with the same definition keeps its buckets, so
        reloading limits does not blind a rate limit for a window's length; so do the
        recent new orders a kept duplicate-order counter compares with. New counters
        start empty.
        """
        old = self.state.counters
        before = {old.defs[k].tobytes(): k for k in range(old.defs.shape[0])}
        new = _counters(defs, old.buckets.shape[1])
        moved = np.full(old.defs.shape[0], -1, dtype=np.int64)
        for k in range(defs.shape[0]):
            was = before.get(defs[k].tobytes())
            if was is not None:
                new.buckets[k] = old.buckets[was]
                new.last_bucket[k] = old.last_bucket[was]
                new.total[k] = old.total[was]
                moved[was] = k
        self.state = self.state._replace(counters=new, dups=carried_dups(self.state.dups, moved))

    def rebase_epochs(self, width_ns: int, new_ns: int) -> None:
        """The revaluation epochs' width goes from ``width_ns`` to ``new_ns`` (ns; 0: every
        move at once): renumber the epoch numbers held (the current epoch, each symbol's
        last move) in the new width, each as the epoch holding the start of the one it
        was. Numbered in the old width, a longer epoch never came (100 ms to 1 s: the
        numbers are ten times what the clock reaches), and every price move waited for
        it: exposure and P&L frozen at the marks before the change."""
        if width_ns == new_ns:
            return
        for held, name in ((self.state.globals, "epoch"), (self.state.symbols, "val_epoch")):
            x = held[name]
            if width_ns > 0 and new_ns > 0:
                held[name] = np.where(x >= 0, x * width_ns // new_ns, -1)
            else:
                held[name] = -1

    def reserve(self, keys: KeySpace) -> None:
        """Grow every record array to fit ``keys`` and copy new key metadata into them."""
        st = self.state
        ns = keys.n_scopes
        scopes = grown("scopes", st.scopes, ns)
        c = st.counters
        rows = max(keys.level_counts)  # counters: a row per scope of the counter's level
        if rows > c.buckets.shape[1]:
            cap = max(rows, 2 * c.buckets.shape[1], 16)
            c = c._replace(
                buckets=_widen(c.buckets, cap, 0.0),
                last_bucket=_widen(c.last_bucket, cap, -1),
                total=_widen(c.total, cap, 0.0),
            )
        if ns > self._scopes:
            scopes["level"][self._scopes : ns] = keys.scope_levels[self._scopes : ns]
            scopes["slot"][self._scopes : ns] = keys.scope_slots[self._scopes : ns]
            self._scopes = ns
        for strategy, account in keys.new_bindings:
            scopes["account"][strategy] = account
        keys.new_bindings.clear()
        positions = grown("positions", st.positions, keys.n_pairs)
        if keys.new_pairs:
            new = np.asarray(keys.new_pairs, dtype=np.int64)
            ids = new[:, 0]
            positions["owner"][ids] = new[:, 1]
            positions["symbol"][ids] = new[:, 2]
            positions["firm_pair"][ids] = new[:, 3]
            keys.new_pairs.clear()
        self.state = st._replace(
            scopes=scopes,
            symbols=grown("symbols", st.symbols, ns),
            positions=positions,
            orders=grown("orders", st.orders, keys.n_orders),
            parents=grown("parents", st.parents, len(keys.parents)),
            sources=grown("sources", st.sources, len(keys.source_names)),
            execs=grown("execs", st.execs, keys.n_execs),
            currencies=grown("currencies", st.currencies, len(keys.currency_names)),
            counters=c,
        )

    def forget(self, keys: KeySpace, horizon_ns: int, max_ids: int) -> None:
        """Recycle orders and executions past the redelivery horizon.

        An order that stopped working (filled, cancelled, rejected, or only seen through
        a fill) more than ``horizon_ns`` of event time before the clock, or beyond the
        ``max_ids`` most recent ones, is forgotten: a redelivery of its events after that
        is taken as new. Executions likewise, from when they were first seen: a
        correction or bust after that is an unknown reference.
        """
        clock = int(self.state.globals["last_event_ns"][0])
        cutoff = clock - horizon_ns
        orders = self.state.orders
        at, oids = keys.closed_orders.expire(cutoff, max_ids)
        if oids.size:
            rec = orders[oids]
            still = ((rec["status"] == O_CLOSED) | (rec["status"] == O_PENDING)) & (
                rec["closed_ns"] == at
            )  # closed then, and not reopened or closed again since
            forgotten = np.unique(oids[still])
            orders[forgotten] = FILLS["orders"][0]
            keys.release_orders(forgotten.tolist())
        gone = keys.exec_times.expire(cutoff, max_ids)[1]
        if gone.size:
            self.state.execs[gone] = FILLS["execs"][0]
            keys.release_execs(gone.tolist())

    def make_room(self, alert_edges: int, new_orders: int) -> None:
        """Size the hash tables for ``alert_edges`` more raised edges and ``new_orders`` inserts."""
        st = self.state
        self.state = st._replace(
            edges=ensure_edges(st.edges, alert_edges),
            dups=ensure_dups(st.dups, new_orders),
        )

    def copied(self, keys: KeySpace) -> dict[str, Array]:
        """Copies of :meth:`export`'s arrays for a snapshot: per-id records cut to the ids
        ``keys`` handed out (the capacity doubling leaves up to as many again unused) and
        the alert-edge table rehashed to its live entries (it is sized for the worst case
        of one kernel call). :meth:`load` and the next :meth:`reserve` take them as they
        are: the arrays grow again as keys appear."""
        used = {
            "scopes": keys.n_scopes,
            "symbols": keys.n_scopes,
            "positions": keys.n_pairs,
            "orders": keys.n_orders,
            "parents": len(keys.parents),
            "sources": len(keys.source_names),
            "execs": keys.n_execs,
            "currencies": len(keys.currency_names),
        }
        out: dict[str, Array] = {}
        for name, a in self.export().items():
            if not name.startswith("edges."):
                out[name] = a[: used[name]].copy() if name in used else a.copy()
        return out | {f"edges.{f}": a for f, a in compacted(self.state.edges)._asdict().items()}

    def nbytes(self) -> int:
        """Bytes held by the state arrays."""
        return sum(a.nbytes for a in self.export().values())

    # snapshots -------------------------------------------------------------------------
    def export(self) -> dict[str, Array]:
        """Every array of the state by name (``scopes``, ``counters.buckets``...), not copies."""
        out: dict[str, Array] = {}
        for name, part in _parts(self.state):
            if isinstance(part, np.ndarray):
                out[name] = part
            else:
                out |= {f"{name}.{field}": a for field, a in part._asdict().items()}
        return out

    def load(self, arrays: dict[str, Array], keys: KeySpace) -> None:
        """Replace the state with exported ``arrays`` (copies are taken) for ``keys``.

        ``keys`` is the key space the arrays were exported with (already loaded).
        Raises :class:`LayoutError` as :func:`check_layout` does; nothing changes then.
        """
        check_layout(arrays)
        parts: dict[str, Any] = {}
        for name, part in _parts(self.state):
            if isinstance(part, np.ndarray):
                parts[name] = np.array(arrays[name])
            else:
                fields = {f: np.array(arrays[f"{name}.{f}"]) for f in part._fields}
                parts[name] = type(part)(**fields)
        self.state = State(**parts)
        self._scopes = keys.n_scopes


def check_layout(arrays: dict[str, Array]) -> None:
    """Check exported state against this build's records.

    Raises :class:`LayoutError` naming the first array that is missing or has another
    dtype (record fields included) or number of dimensions.
    """
    for name, current in StateStore(capacity=1).export().items():
        a = arrays.get(name)
        if a is None or a.dtype != current.dtype or a.ndim != current.ndim:
            raise LayoutError(f"array {name!r} does not match this version's layout")


def _parts(state: State) -> list[tuple[str, Any]]:
    """(name, part) pairs of ``state``: record arrays, or small bundles of arrays."""
    return list(zip(State._fields, state, strict=True))


def _widen(a: Array, rows: int, fill: Any) -> Array:
    """``a`` with axis 1 grown to ``rows`` entries (new ones = ``fill``)."""
    out = np.full((a.shape[0], rows, *a.shape[2:]), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out
