"""The engine's state as named records: what the numba kernel reads and writes.

Each kind of thing the engine tracks (scopes, symbols, positions, orders, parents,
heartbeat sources, compiled rule rows, decisions) is a numpy *structured array*: one
record per id, with named, typed fields (the dtypes below). The kernel takes a handful
of these bundled in ``NamedTuple`` s (:class:`State`, :class:`Rules`, ...) instead of
dozens of loose arrays, so two arrays of the same dtype can never be passed in each
other's place, and adding a field means editing its dtype and the code that uses it.

Why records and not one array per field: numba passes every array as a struct of
about seven machine words, so a ``NamedTuple`` of 70 one-field arrays turned each
helper call into hundreds of LLVM parameters. Measured on this machine, ten helpers
over eight bundles compiled in 6.3 s as arrays-per-field against 1.6 s as records,
and a million updates ran in 19 ms as records against 17 ms as 2-D arrays with
column constants (the layout before). Records keep the compile time, the speed and
the names.

Conventions: times are int64 ns since the epoch (UTC); quantities and money are float64
(quantities in instrument units, money in the currency of qty x price); ids are int64
indices into another array, ``-1`` meaning none. Per-id arrays grow by doubling as keys
appear (:func:`grown`); records beyond the ids handed out hold their fill values.

Ids: *scope ids* (firm 0, accounts, strategies, symbols: one space, see
:mod:`riskguard.state.keys`), *pair ids* (one position: an owner scope in a symbol),
*order ids* (recycled once an order closes), *parent ids*, *source ids* (heartbeat
sources), *row ids* (compiled rule rows, :mod:`riskguard.state.rulebook`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

Array = np.ndarray[Any, Any]
I8, I64, F64 = np.int8, np.int64, np.float64

FIRM = 0
"""The firm's scope id."""
NBUCKETS = 10
"""Buckets a windowed counter's window is cut into (bucket width = ceil(window / 10))."""
RING = NBUCKETS + 1
"""Buckets kept per counter: the current one plus ``NBUCKETS`` before it."""

SCOPE = np.dtype(
    [
        ("level", I64),  # L_FIRM, L_ACCOUNT, L_STRATEGY or L_SYMBOL
        ("slot", I64),  # index among the scopes of its level (a windowed counter's row)
        ("account", I64),  # strategies: the scope id of the owning account, else -1
        ("state", I64),  # latched trading state (ACTIVE, REDUCE_ONLY, HALTED)
        ("judged_ns", I64),  # breaches from events at or before this time are already judged
        ("open_orders", I64),  # orders sent and not yet closed
        ("net_notional", F64),  # sum of signed position x valuation price
        ("gross_notional", F64),  # sum of |position| x valuation price
        ("realised_pnl", F64),  # realised P&L (average cost)
        ("cost_basis", F64),  # sum of signed position x average cost
        ("peak_pnl", F64),  # session high of pnl (starts at 0)
        ("seen_seq", I64),  # revaluation flush this scope was last judged in, -1 never
    ]
)
"""Per scope id: kill-switch state and the scope's aggregates."""

SYMBOL = np.dtype(
    [
        ("ref_price", F64),  # latest reference price (mark, else last fill price)
        ("val_price", F64),  # price positions are valued at (ref_price, applied per epoch)
        ("price_source", I64),  # 0 no price yet, 1 last fill price, 2 mark
        ("mark_ns", I64),  # event time of the applied mark, -1 none
        ("first_holder", I64),  # first pair holding the symbol, -1 none
        ("last_holder", I64),  # last pair holding the symbol, -1 none
        ("n_holders", I64),  # pairs in the holder list
        ("val_epoch", I64),  # revaluation epoch val_price last moved in, -1 never
        ("pending", I64),  # 1 while a price move waits for the next epoch
        ("next_pending", I64),  # next waiting symbol (queue order), -1 end
    ]
)
"""Per scope id, meaningful for symbols: prices, holders (a linked list through
``POSITION.next_holder``, in order of first fill) and the revaluation queue."""

POSITION = np.dtype(
    [
        ("qty", F64),  # signed net position (long > 0), instrument units
        ("cost", F64),  # signed position x average cost
        ("realised", F64),  # realised P&L of this pair
        ("owner", I64),  # owner scope id (firm, account or strategy)
        ("symbol", I64),  # symbol scope id
        ("next_holder", I64),  # next pair in the symbol's holder list, -1 end
        ("linked", I64),  # 1 once in the holder list
        ("account_pair", I64),  # strategy pairs: the account's pair in the symbol, else -1
        ("firm_pair", I64),  # strategy pairs: the firm's pair in the symbol, else -1
    ]
)
"""Per pair id: one owner's position in one symbol. A strategy's pair links its
account's and the firm's pairs in the same symbol, so a fill updates all three."""

ORDER = np.dtype(
    [
        ("open", I64),  # 1 while the order is working
        ("account", I64),  # scope ids of the order's account, strategy and symbol
        ("strategy", I64),
        ("symbol", I64),
        ("parent", I64),  # parent id, -1 none
        ("side", I64),  # +1 buy, -1 sell
        ("qty", F64),  # order quantity (a replace sets the new total)
        ("cum_qty", F64),  # filled so far
        ("price", F64),  # limit price, NaN for a market order
    ]
)
"""Per order id (ids are recycled once an order closes)."""

PARENT = np.dtype(
    [
        ("qty", F64),  # declared quantity (0 until the parent event arrives)
        ("filled", F64),  # child fills counted toward it
        ("declared", I64),  # 1 once its ``parent`` event arrived
    ]
)
"""Per parent id: an algorithmic parent order."""

SOURCE = np.dtype([("last_heard_ns", I64)])  # latest heartbeat's event time, -1 never
"""Per heartbeat source id."""

GLOBALS = np.dtype(
    [
        ("start_ns", I64),  # event time of the first event (or tick), -1 until then
        ("last_event_ns", I64),  # latest event time seen, -1 none
        ("judged_ns", I64),  # like SCOPE.judged_ns, for every scope (set on restart)
        ("epoch", I64),  # current revaluation epoch (event time // revalue width), -1 none
        ("first_pending", I64),  # first symbol waiting for the next epoch, -1 none
        ("last_pending", I64),  # last symbol waiting, -1 none
        ("flush_seq", I64),  # revaluation flushes so far (stamps SCOPE.seen_seq)
    ]
)
"""Engine-wide values: a 1-record array (``g[0].last_event_ns``)."""

COUNTER = np.dtype(
    [
        ("kind", I64),  # counter kind code (C_* in riskguard.state.counters)
        ("level", I64),  # scope level counted at
        ("width_ns", I64),  # bucket width
        ("window_ns", I64),  # window length
    ]
)
"""Per windowed counter: what it counts, at which level, over which window."""

TABLE = np.dtype(
    [
        ("used", I64),  # slots not empty (live + deleted)
        ("live", I64),  # entries present
        ("purge_at", I64),  # Dups: live size that triggers the next purge of stale entries
    ]
)
"""Counts of an open-addressing table (a 1-record array)."""

DUP = np.dtype(
    [
        ("state", I64),  # 0 empty, 1 live, 2 deleted
        ("counter", I64),  # key: counter, scope, symbol, side, qty, price (-1 market)
        ("scope", I64),
        ("symbol", I64),
        ("side", I64),
        ("qty", F64),
        ("price", F64),
        ("seen_ns", I64),  # value: when the identical new order was last seen
    ]
)
"""A slot of the recent-new-orders table (duplicate-order counters)."""

RULE = np.dtype(
    [
        ("metric", I64),  # metric code (riskguard.limits.vocabulary)
        ("level", I64),  # scope level the row applies at
        ("action", I64),  # action code (A_ALERT, REDUCE_ONLY, HALTED)
        ("match", I64),  # the one scope id the row is limited to, -1 every key at its level
        ("match_account", I64),  # strategy rows: account scope id required, -1 any
        ("counter", I64),  # windowed counter index, -1 none
        ("counter2", I64),  # second counter (cancel_ratio's new orders), -1 none
        ("min_orders", I64),  # cancel_ratio: evaluated once new orders >= this
        ("rule", I64),  # index of the rule in the limits file
        ("source", I64),  # feed_silence rows: heartbeat source id, -1 any event
        ("upper", F64),  # breach when value > upper (+inf: none)
        ("lower", F64),  # breach when value < lower (-inf: none)
    ]
)
"""Per compiled rule row (a rule with a multi-value ``match`` has one row per value)."""

PEAK = np.dtype(
    [
        ("high", F64),  # highest value recorded (-inf none)
        ("low", F64),  # lowest value recorded (+inf none)
        ("evaluations", F64),  # values recorded
        ("edges", F64),  # alert rows: raised edges of the row right now
    ]
)
"""Per rule row: what the row has seen (replay summaries, status)."""

DECISION = np.dtype(
    [
        ("event", I64),  # index of the triggering event in the batch, -1 a clock tick
        ("row", I64),  # rule row
        ("scope", I64),  # scope id
        ("from_state", I64),
        ("to_state", I64),  # -1 for an alert (no state change)
        ("value", F64),  # the metric's value
    ]
)
"""One kernel decision: a transition or an alert edge."""

OUT_COUNTS = np.dtype(
    [
        ("n", I64),  # decisions written
        ("n_closed", I64),  # orders closed
        ("need", I64),  # rows the next step needs, when the kernel stopped early; else 0
    ]
)

EVENT = np.dtype(
    [
        ("typ", I8),  # event type code (riskguard.vocabulary.T_*)
        ("side", I8),  # +1 buy, -1 sell, 0 none
        ("ts", I64),  # event time, ns
        ("account", I64),  # scope ids, -1 where they do not apply
        ("strategy", I64),
        ("symbol", I64),
        ("qty", F64),
        ("price", F64),  # NaN when absent (market orders)
        ("order", I64),  # order id
        ("parent", I64),  # parent id
        ("source", I64),  # heartbeat source id
        ("pair", I64),  # fills: the strategy's position pair
    ]
)
"""One event of a batch, as interned ids and numbers."""


class Counters(NamedTuple):
    """Windowed counters: ``k`` counters over ``rows`` = the most scopes at one level.

    Counter ``k`` is kept at one scope level; a scope's row is its ``SCOPE.slot``.
    """

    defs: Array  #: COUNTER (k,)
    buckets: Array  #: float64 (k, rows, RING): a ring of time buckets per counter and row
    last_bucket: Array  #: int64 (k, rows): index of the newest bucket, -1 none
    total: Array  #: float64 (k, rows): sum over the ring (the windowed value)


class Edges(NamedTuple):
    """Raised alert edges: an open-addressing set of ``row << 32 | scope`` keys."""

    keys: Array  #: int64 (cap,), cap a power of two; -1 empty, -2 deleted
    counts: Array  #: TABLE (1,)


class Dups(NamedTuple):
    """Recent new orders, for duplicate-order counters: an open-addressing table."""

    slots: Array  #: DUP (cap,), cap a power of two
    counts: Array  #: TABLE (1,)


class State(NamedTuple):
    """Everything the kernel reads and writes about the trading system."""

    scopes: Array  #: SCOPE (scope capacity,)
    symbols: Array  #: SYMBOL (scope capacity,)
    positions: Array  #: POSITION (pair capacity,)
    orders: Array  #: ORDER (order capacity,)
    parents: Array  #: PARENT (parent capacity,)
    sources: Array  #: SOURCE (source capacity,)
    globals: Array  #: GLOBALS (1,)
    counters: Counters
    edges: Edges
    dups: Dups


class Rules(NamedTuple):
    """Compiled limits, read-only in the kernel."""

    rows: Array  #: RULE (n rows,)
    by_type: Array  #: int64 (N event types, n rows): rows each event type moves, -1 padded
    exposure_rows: Array  #: int64: rows a price move re-judges for every holder
    feed_rows: Array  #: int64: rows judged before every event (silence, lag)
    revalue_ns: int  #: width of a revaluation epoch in ns (0: every price move)


class Output(NamedTuple):
    """The kernel's decisions, and the orders that closed (their ids can be recycled)."""

    decisions: Array  #: DECISION (cap,)
    closed: Array  #: int64 (batch length,): order ids closed
    counts: Array  #: OUT_COUNTS (1,)


def fill_record(dtype: np.dtype[Any], **values: Any) -> Array:
    """A 1-record array of ``dtype``: zeros, except ``values`` (the fill of new records)."""
    rec = np.zeros(1, dtype=dtype)
    for name, value in values.items():
        rec[name] = value
    return rec


#: fill of each per-id record type: what an id that was never written holds
FILLS: dict[str, Array] = {
    "scopes": fill_record(SCOPE, account=-1, judged_ns=-1, seen_seq=-1),
    "symbols": fill_record(
        SYMBOL,
        mark_ns=-1,
        first_holder=-1,
        last_holder=-1,
        val_epoch=-1,
        next_pending=-1,
    ),
    "positions": fill_record(POSITION, next_holder=-1, account_pair=-1, firm_pair=-1),
    "orders": fill_record(ORDER, parent=-1),
    "parents": fill_record(PARENT),
    "sources": fill_record(SOURCE, last_heard_ns=-1),
}


def records(kind: str, n: int) -> Array:
    """``n`` fresh records of a per-id kind (a ``State`` field name)."""
    return np.repeat(FILLS[kind], n)


def grown(kind: str, a: Array, n: int) -> Array:
    """``a`` with at least ``n`` records (doubling); new records hold the kind's fill."""
    have = a.shape[0]
    if have >= n:
        return a
    out = records(kind, max(n, 2 * have, 16))
    out[:have] = a
    return out
