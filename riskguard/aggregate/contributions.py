"""An instance's part of each summed rule's value, read from its engine's state.

In group mode the engine compiles every summed rule (:func:`riskguard.limits.scale.
is_summed`) for its values only: its windows count and its scopes hold positions and
orders as in single mode, and the kernel never judges it. This module reads those
values as of a time, for every scope of the rule's level, so that the sum over the
instances equals what one instance reading everything would judge:

- a windowed count is the sum of the counter's buckets still inside the window at
  ``now_ns`` (a scope with no event since keeps counts that have expired: they are
  left out here, as the kernel's next event there would drop them);
- ``cancel_ratio`` gives its cancels and its new orders apart (the ratio of the sums is
  not the sum of the ratios);
- ``open_orders`` and the money metrics are the scope's own fields; money is unrounded
  (rounded once, on the sum) and None while part of the scope's book has no exchange
  rate (unknown, never a partial sum).

Only scopes with a non-zero or unknown part are listed.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from riskguard.limits.vocabulary import METRICS
from riskguard.state.codes import FIRM, O_OPEN, RING
from riskguard.vocabulary import L_ACCOUNT, L_FIRM, L_STRATEGY, L_SYMBOL, L_VENUE, parse_scope

if TYPE_CHECKING:
    from riskguard.engine import Engine

Part = list[float | None]
"""One scope's part of a value: ``[value]``, or ``[cancels, new orders]`` for
``cancel_ratio``; None for unknown money."""
RowParts = dict[str, Part]
"""Scope name (``"firm"``, ``"strategy:S1"``...) -> its part, for one compiled row."""
Parts = dict[str, list[RowParts]]
"""Rule name -> one :data:`RowParts` per compiled row of the rule (a rule whose ``match``
lists several values has several rows, in the rulebook's order)."""

_FIELD = {
    "open_orders": "open_orders",
    "net_notional": "net_notional",
    "open_order_notional": "open_notional",
}


def window_totals(engine: Engine, counter: int, now_ns: int) -> np.ndarray:
    """float64 (rows,): counter ``counter``'s count per scope row (``SCOPE.slot``) in the
    window ending at ``now_ns`` (ns): its buckets from ``now_ns``'s bucket back through
    the ring (the current bucket and the ``NBUCKETS`` before it, as the kernel counts).
    Rows never counted give 0."""
    c = engine.store.state.counters
    width = int(c.defs["width_ns"][counter])
    last = c.last_bucket[counter]
    buckets = c.buckets[counter]
    oldest = np.maximum(last, now_ns // width) - RING + 1
    total = np.zeros(last.shape[0], dtype=np.float64)
    for back in range(RING):
        b = last - back
        keep = (b >= oldest) & (b >= 0)
        total += np.where(keep, buckets[np.arange(last.shape[0]), b % RING], 0.0)
    return total


def contributions(engine: Engine, rules: Collection[str], now_ns: int) -> Parts:
    """This engine's part of each rule named in ``rules`` (summed rules compiled in its
    rulebook) at ``now_ns`` (ns, the engine's clock). See the module for the values.
    Raises ``KeyError`` for a name not in the rulebook."""
    book = engine.rulebook
    rows = book.rules.rows
    # a scope the kill switch interned (a state written to every engine of a member, a
    # scope no event of this engine showed) has no level or slot until reserved: read
    # as it was, it passed for the firm and took the firm's window counts
    engine.store.reserve(engine.keys)
    st = engine.store.state
    n = len(engine.keys.scope_names)
    scopes = st.scopes[:n]
    out: Parts = {}
    wanted = set(rules)
    for r, rule in enumerate(book.row_rule):
        if rule.name not in wanted:
            continue
        row = rows[r]
        chosen = scopes["level"] == int(row["level"])
        if int(row["match"]) >= 0:
            chosen &= np.arange(n) == int(row["match"])
        if int(row["match_account"]) >= 0:
            chosen &= scopes["account"] == int(row["match_account"])
        sids = np.flatnonzero(chosen)
        out.setdefault(rule.name, []).append(_row_parts(engine, row, rule.metric, sids, now_ns))
    missing = wanted - out.keys()
    if missing:
        raise KeyError(f"not in the rulebook: {', '.join(sorted(missing))}")
    return {name: out[name] for name in rules}


def _row_parts(engine: Engine, row: Any, metric: str, sids: np.ndarray, now_ns: int) -> RowParts:
    st = engine.store.state
    names = engine.keys.scope_names
    scopes = st.scopes
    slots = scopes["slot"][sids]
    parts: RowParts = {}
    if METRICS[metric].windowed:
        num = window_totals(engine, int(row["counter"]), now_ns)[slots]
        den = (
            window_totals(engine, int(row["counter2"]), now_ns)[slots]
            if int(row["counter2"]) >= 0
            else None
        )
        for i, s in enumerate(sids.tolist()):
            if den is None:
                if num[i] != 0.0:
                    parts[names[s]] = [float(num[i])]
            elif num[i] != 0.0 or den[i] != 0.0:
                parts[names[s]] = [float(num[i]), float(den[i])]
        return parts
    sc = scopes[sids]
    if metric == "pnl":
        values = sc["realised_pnl"] + sc["net_notional"] - sc["cost_basis"] - sc["fees"]
    else:
        values = sc[_FIELD[metric]].astype(np.float64)
    money = metric != "open_orders"
    unknown = sc["n_unknown"] > 0
    for i, s in enumerate(sids.tolist()):
        if money and unknown[i]:
            parts[names[s]] = [None]
        elif float(values[i]) != 0.0 and not math.isnan(float(values[i])):
            parts[names[s]] = [float(values[i])]
    return parts


def scope_positions(engine: Engine, scope: str) -> dict[str, float]:
    """This engine's net positions (instrument units, long > 0) of ``scope`` by symbol
    key, flat ones included (a ``symbol:<id>`` scope's are the firm's in that symbol; a
    ``venue:<mic>`` scope's the firm's in every symbol, as positions are not kept per
    venue, whether or not this engine saw an order to it): its part of the positions
    gates judge a REDUCE_ONLY scope by. Empty for another scope the engine never saw."""
    level, _ = parse_scope(scope)
    sid = engine.keys.find_scope(scope)
    if sid is None and level != L_VENUE:
        return {}
    keys = engine.keys
    engine.store.reserve(keys)
    pos = engine.store.state.positions[: keys.n_pairs]
    mask = pos["owner"] == (FIRM if level in (L_FIRM, L_SYMBOL, L_VENUE) else sid)
    if level == L_SYMBOL:
        mask &= pos["symbol"] == sid
    rows = np.flatnonzero(mask)
    names = keys.scope_names
    return {
        names[y].partition(":")[2]: qty
        for y, qty in zip(pos["symbol"][rows].tolist(), pos["qty"][rows].tolist(), strict=True)
    }


def scope_leaves(engine: Engine, scope: str) -> dict[str, tuple[float, float]]:
    """What this engine's working orders that move ``scope``'s position (as
    :func:`scope_positions` keeps it) may still fill, by symbol key: (buys, sells), each
    the sum of qty - filled (FIX LeavesQty, instrument units, >= 0) over the working
    orders of that side. The orders of the scope's owner: an account's or a strategy's
    own, every order of the firm for ``firm`` and ``venue:<mic>`` (the firm's position,
    whatever venue the order goes to), the firm's in the symbol for ``symbol:<id>``.
    Only symbols with a working order are listed; empty for a scope never seen."""
    level, _ = parse_scope(scope)
    sid = engine.keys.find_scope(scope)
    if sid is None and level not in (L_FIRM, L_VENUE):
        return {}
    keys = engine.keys
    engine.store.reserve(keys)
    orders = engine.store.state.orders[: keys.n_orders]
    mask = orders["status"] == O_OPEN
    field = {L_ACCOUNT: "account", L_STRATEGY: "strategy", L_SYMBOL: "symbol"}.get(level)
    if field is not None:
        mask &= orders[field] == sid
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        return {}
    left = np.maximum(orders["qty"][rows] - orders["cum_qty"][rows], 0.0)
    symbols, buy = orders["symbol"][rows], orders["side"][rows] > 0
    ids, at = np.unique(symbols, return_inverse=True)
    buys = np.bincount(at, weights=np.where(buy, left, 0.0), minlength=ids.size)
    sells = np.bincount(at, weights=np.where(buy, 0.0, left), minlength=ids.size)
    names = keys.scope_names
    return {
        names[y].partition(":")[2]: (b, x)
        for y, b, x in zip(ids.tolist(), buys.tolist(), sells.tolist(), strict=True)
    }
