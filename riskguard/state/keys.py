"""Interning of string keys to dense integer ids, and how long each is remembered.

Accounts, strategies, symbols and venues share one *scope id* space (id 0 is the firm),
so every per-scope statistic and the kill-switch state live in one array each.
Currencies have their own ids (0: the limits' base currency). Orders and
executions are interned separately, and their ids are recycled once they are past the
redelivery horizon (:meth:`riskguard.state.store.StateStore.forget`), so memory follows
the horizon, not the length of the session.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from riskguard.state.codes import FIRM
from riskguard.state.timed import TimedIds
from riskguard.vocabulary import L_FIRM, LEVELS, format_scope, parse_scope

ExecKey = tuple[int, str]
"""An execution's key: (account scope id, exec_id)."""


def pair_key(owner: int, symbol: int) -> int:
    """The key of a position pair in :attr:`KeySpace.pairs` (scope ids are < 2**31)."""
    return owner << 32 | symbol


class KeySpace:
    """All interned keys of one engine. Not thread-safe: owned by the engine's task."""

    def __init__(self, base_currency: str = "USD") -> None:
        self.scope_names: list[str] = ["firm"]
        self.scope_levels: list[int] = [L_FIRM]
        #: ISO 4217 codes by currency id; id 0 is the base currency every amount is kept in
        self.currency_names: list[str] = [base_currency]
        self.currencies: dict[str, int] = {base_currency: 0}
        #: each scope's index among the scopes of its level, and the count per level:
        #: a windowed counter is kept at one level, so it needs a row per scope of that
        #: level only (rows for every scope of every level doubled the memory)
        self.scope_slots: list[int] = [0]
        self.level_counts: list[int] = [1] + [0] * (len(LEVELS) - 1)
        self._by_level: tuple[dict[str, int], ...] = ({"": FIRM}, *({} for _ in LEVELS[1:]))
        #: strategy scope id -> the account it first traded in (its *home* account: where
        #: a strategy rule's ``match.account`` looks; a strategy may trade in several)
        self.strategy_account: dict[int, int] = {}
        #: bindings not yet copied into the state arrays (drained by the store)
        self.new_bindings: list[tuple[int, int]] = []
        self.orders: dict[str, int] = {}
        self.order_names: list[str | None] = []
        self._free_orders: list[int] = []
        #: executions: (account id, exec_id) -> execution id
        self.execs: dict[ExecKey, int] = {}
        self.exec_keys: list[ExecKey | None] = []
        #: per execution id: ``pair_key(strategy id, symbol id)`` of a trade, None for the
        #: id of a correction or bust (remembered only so that its redelivery is recognised)
        self.exec_trade: list[int | None] = []
        self._free_execs: list[int] = []
        #: (event time ns, execution id) in the order they were interned
        self.exec_times = TimedIds()
        #: (time ns, order id) each time an order stopped working (or was first seen
        #: only through a fill, cancel, reject or replace), oldest first
        self.closed_orders = TimedIds()
        self.parents: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        self.source_names: list[str] = []
        #: position pairs: ``pair_key(owner, symbol)`` -> pair id. Owner, symbol and the
        #: firm's pair in the same symbol live in the POSITION records.
        self.pairs: dict[int, int] = {}
        #: pairs not yet copied into the store: (pair, owner, symbol, firm pair)
        self.new_pairs: list[tuple[int, int, int, int]] = []
        #: batch builder cache (derived, rebuilt on demand, never snapshotted):
        #: strategy name -> (the account it last traded in, account id, strategy id)
        self.routes: dict[str, tuple[str, int, int]] = {}

    # scopes ---------------------------------------------------------------
    def scope(self, level: int, key: str) -> int:
        """The scope id of ``key`` at ``level``, created on first use."""
        table = self._by_level[level]
        sid = table.get(key)
        if sid is None:
            sid = len(self.scope_names)
            table[key] = sid
            self.scope_names.append(format_scope(level, key))
            self.scope_levels.append(level)
            self.scope_slots.append(self.level_counts[level])
            self.level_counts[level] += 1
        return sid

    def scope_of(self, scope: str) -> int:
        """The scope id of a scope string such as ``"account:A1"`` (created on first use).

        Raises :class:`riskguard.vocabulary.ScopeError` for a malformed scope string.
        """
        level, key = parse_scope(scope)
        return self.scope(level, key)

    def level_table(self, level: int) -> dict[str, int]:
        """The key -> scope id table of one level (read-only use: call :meth:`scope` to add)."""
        return self._by_level[level]

    def find_scope(self, scope: str) -> int | None:
        """The scope id of a scope string, or None when that key was never seen.

        Raises :class:`riskguard.vocabulary.ScopeError` for a malformed scope string.
        """
        level, key = parse_scope(scope)
        return self._by_level[level].get(key)

    def bind_strategy(self, strategy: int, account: int) -> None:
        """Record ``strategy``'s home account (the first it traded in); later calls keep it."""
        if strategy not in self.strategy_account:
            self.strategy_account[strategy] = account
            self.new_bindings.append((strategy, account))

    @property
    def n_scopes(self) -> int:
        """Number of scope ids handed out (the firm included)."""
        return len(self.scope_names)

    # orders ---------------------------------------------------------------
    def order(self, order_id: str) -> int:
        """The id of ``order_id``, allocated (or recycled) on first use."""
        oid = self.orders.get(order_id)
        if oid is None:
            if self._free_orders:
                oid = self._free_orders.pop()
                self.order_names[oid] = order_id
            else:
                oid = len(self.order_names)
                self.order_names.append(order_id)
            self.orders[order_id] = oid
        return oid

    def release_orders(self, oids: list[int]) -> None:
        """Forget orders past the horizon so their ids can be reused."""
        names, orders, free = self.order_names, self.orders, self._free_orders
        for oid in oids:
            name = names[oid]
            if name is not None:
                del orders[name]
                names[oid] = None
                free.append(oid)

    @property
    def n_orders(self) -> int:
        """Capacity needed for order records (highest id + 1)."""
        return len(self.order_names)

    # currencies -----------------------------------------------------------------
    @property
    def base_currency(self) -> str:
        """The ISO 4217 code of currency id 0."""
        return self.currency_names[0]

    def currency(self, code: str | None) -> int:
        """The id of currency ``code`` (None: the base currency, id 0), created on first use."""
        if code is None:
            return 0
        cid = self.currencies.get(code)
        if cid is None:
            cid = self.currencies[code] = len(self.currency_names)
            self.currency_names.append(code)
        return cid

    # executions -----------------------------------------------------------------
    def opening(self, account: int, strategy: int, symbol: int) -> int:
        """The execution id of the opening position of a key (an ``open`` position event):
        one per (account, strategy or -1, symbol), never forgotten (a re-sent opening
        position must replace it, however late)."""
        key = (-1 - account, f"{strategy}/{symbol}")
        eid = self.execs.get(key)
        if eid is None:
            eid = self.execution(key, 0, pair_key(strategy, symbol), expires=False)
        return eid

    def execution(self, key: ExecKey, ts: int, trade: int | None, *, expires: bool = True) -> int:
        """A new id for execution ``key`` (account id, exec_id), stamped ``ts`` for the horizon.

        ``trade`` is ``pair_key(strategy id, symbol id)`` of a trade (strategy -1: an
        opening position without one); None for a correction's or a bust's own id.
        ``expires=False``: never forgotten (opening positions, whose keys have a negative
        account part so that no execution report can name them).
        """
        if self._free_execs:
            eid = self._free_execs.pop()
            self.exec_keys[eid] = key
            self.exec_trade[eid] = trade
        else:
            eid = len(self.exec_keys)
            self.exec_keys.append(key)
            self.exec_trade.append(trade)
        self.execs[key] = eid
        if expires:
            self.exec_times.append(ts, eid)
        return eid

    def release_execs(self, eids: list[int]) -> None:
        """Forget executions past the horizon so their ids can be reused."""
        for eid in eids:
            key = self.exec_keys[eid]
            if key is not None:
                del self.execs[key]
                self.exec_keys[eid] = None
                self.exec_trade[eid] = None
                self._free_execs.append(eid)

    @property
    def n_execs(self) -> int:
        """Capacity needed for execution records (highest id + 1)."""
        return len(self.exec_keys)

    # parents, sources, pairs ---------------------------------------------
    def parent(self, parent_id: str) -> int:
        """The id of ``parent_id``, created on first use (parents live for the session)."""
        pid = self.parents.get(parent_id)
        if pid is None:
            pid = self.parents[parent_id] = len(self.parents)
        return pid

    def source(self, name: str) -> int:
        """The id of a heartbeat source, created on first use."""
        sid = self.sources.get(name)
        if sid is None:
            sid = self.sources[name] = len(self.source_names)
            self.source_names.append(name)
        return sid

    def _pair(self, owner: int, symbol: int, firm_pair: int) -> int:
        key = owner << 32 | symbol
        pid = self.pairs.get(key)
        if pid is None:
            pid = self.pairs[key] = len(self.pairs)
            self.new_pairs.append((pid, owner, symbol, firm_pair))
        return pid

    def holding(self, owner: int, symbol: int) -> int:
        """The position pair of an account or strategy ``owner`` in ``symbol`` (and the firm's)."""
        firm = self._pair(FIRM, symbol, -1)
        return self._pair(owner, symbol, firm)

    @property
    def n_pairs(self) -> int:
        """Number of position pairs handed out."""
        return len(self.pairs)

    # snapshots -------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """Every interned key, JSON-able by orjson (lists of str, int, tuples and None;
        pairs' owners live in the state records).

        Shallow copies only (keys and the tuples they hold are immutable), so it is cheap
        enough between two batches: with a million closed orders and as many executions
        remembered, building lists of lists here stalled the event loop for 3-4 s per
        snapshot. Serialising to JSON is left to the caller (a snapshot does it in a
        thread). The redelivery memory's queues are in :meth:`tables`.
        """
        return {
            "scope_names": list(self.scope_names),
            "scope_levels": list(self.scope_levels),
            "strategy_account": list(self.strategy_account.items()),
            "order_names": list(self.order_names),
            "exec_keys": list(self.exec_keys),
            "exec_trade": list(self.exec_trade),
            "parents": list(self.parents),
            "source_names": list(self.source_names),
            "currency_names": list(self.currency_names),
            "n_pairs": self.n_pairs,
        }

    def tables(self) -> dict[str, np.ndarray]:
        """Copies of the redelivery memory's queues as int64 arrays, oldest first:
        ``closed_ns``/``closed_ids`` (closed orders), ``exec_ns``/``exec_ids``."""
        closed_ns, closed_ids = self.closed_orders.arrays()
        exec_ns, exec_ids = self.exec_times.arrays()
        return {
            "closed_ns": closed_ns,
            "closed_ids": closed_ids,
            "exec_ns": exec_ns,
            "exec_ids": exec_ids,
        }

    def load(
        self,
        exported: dict[str, Any],
        tables: dict[str, np.ndarray],
        pair_owner: np.ndarray,
        pair_symbol: np.ndarray,
    ) -> None:
        """Replace every key with ``exported`` and ``tables`` (from :meth:`export` and
        :meth:`tables`), in place.

        ``pair_owner`` and ``pair_symbol`` are the owner and symbol scope ids of each
        position pair (``POSITION`` fields of the same snapshot). Raises ``KeyError``,
        ``TypeError`` or ``ValueError`` on a malformed export; the key space is left
        unchanged then.
        """
        currencies = exported["currency_names"]
        fresh = KeySpace(str(currencies[0]))
        for code in currencies[1:]:
            fresh.currency(str(code))
        names, levels = exported["scope_names"], exported["scope_levels"]
        for name, level in zip(names[1:], levels[1:], strict=True):
            fresh.scope(int(level), name[len(LEVELS[level]) + 1 :])
        for strategy, account in exported["strategy_account"]:
            fresh.strategy_account[int(strategy)] = int(account)
        fresh.order_names = list(exported["order_names"])
        fresh.orders = {n: i for i, n in enumerate(fresh.order_names) if n is not None}
        fresh._free_orders = [i for i, n in enumerate(fresh.order_names) if n is None]
        fresh.exec_keys = [
            None if k is None else (int(k[0]), str(k[1])) for k in exported["exec_keys"]
        ]
        fresh.exec_trade = [None if t is None else int(t) for t in exported["exec_trade"]]
        if len(fresh.exec_trade) != len(fresh.exec_keys):
            raise ValueError("execution keys and their trades differ in length")
        fresh.execs = {k: i for i, k in enumerate(fresh.exec_keys) if k is not None}
        fresh._free_execs = [i for i, k in enumerate(fresh.exec_keys) if k is None]
        fresh.exec_times = TimedIds.of(tables["exec_ns"], tables["exec_ids"])
        fresh.closed_orders = TimedIds.of(tables["closed_ns"], tables["closed_ids"])
        for parent in exported["parents"]:
            fresh.parent(parent)
        for source in exported["source_names"]:
            fresh.source(source)
        n = int(exported["n_pairs"])
        owners, symbols = pair_owner[:n].tolist(), pair_symbol[:n].tolist()
        fresh.pairs = {o << 32 | y: p for p, (o, y) in enumerate(zip(owners, symbols, strict=True))}
        if len(fresh.pairs) != n:
            raise ValueError("position pairs in the snapshot are not distinct")
        self.__dict__.update(fresh.__dict__)
