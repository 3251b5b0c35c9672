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


SCOPE = np.dtype(
    [
        ("level", I64),  # L_FIRM, L_ACCOUNT, L_STRATEGY, L_SYMBOL or L_VENUE
        ("slot", I64),  # index among the scopes of its level (a windowed counter's row)
        ("account", I64),  # strategies: the scope id of the owning account, else -1
        ("state", I64),  # latched trading state (ACTIVE, REDUCE_ONLY, HALTED)
        ("judged_ns", I64),  # breaches from events at or before this time are already judged
        ("open_orders", I64),  # orders sent and not yet closed
        ("n_lots", I64),  # positions it holds (non-zero pairs): at 0 its exposure is exactly 0
        ("n_unknown", I64),  # of those, in a currency with no exchange rate yet
        # money is in the base currency: qty x price x multiplier x rate
        ("net_notional", F64),  # sum of signed position x valuation price
        ("gross_notional", F64),  # sum of |position x valuation price|
        ("potential", F64),  # gross if every working order filled (worst side per symbol)
        ("open_notional", F64),  # notional of working orders (market orders at the price)
        ("realised_pnl", F64),  # realised P&L (average cost)
        ("cost_basis", F64),  # sum of signed position x average cost
        ("fees", F64),  # fees paid (negative: rebates)
        ("peak_pnl", F64),  # session high of pnl (starts at 0)
        ("seen_seq", I64),  # revaluation flush this scope was last judged in, -1 never
        ("dirty", I64),  # 1 while its peak waits for the next consistent revaluation
        ("next_dirty", I64),  # next scope waiting, -1 end
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
        ("pending", I64),  # 1 while a price move (or a lot at its own price) waits
        ("next_pending", I64),  # next waiting symbol (queue order), -1 end
        ("mark_px0", F64),  # the distinct prices applied at mark_ns (MARK_RING of them)
        ("mark_px1", F64),
        ("mark_px2", F64),
        ("mark_px3", F64),
        ("n_mark_px", I64),  # how many of them are set
        ("multiplier", F64),  # contract size: notional = qty x price x multiplier
        ("currency", I64),  # currency id of its prices (0: the base currency)
        ("next_in_currency", I64),  # next symbol priced in the same currency, -1 end
        ("in_currency", I64),  # 1 once linked into its currency's list
        ("restricted", I64),  # 1 when a restricted-list entry names it (set per limits)
        ("ref_exec", I64),  # execution whose trade set the fill-derived ref_price, -1 none
        ("prev_ref", F64),  # the fill-derived reference price before that trade
        ("has_prev", I64),  # 1 when prev_ref is set
        ("ref_ns", I64),  # event time of the applied instrument, -1 none
        ("ref_mult0", F64),  # the distinct (multiplier, currency) applied at ref_ns
        ("ref_mult1", F64),
        ("ref_mult2", F64),
        ("ref_mult3", F64),
        ("ref_cur0", I64),
        ("ref_cur1", I64),
        ("ref_cur2", I64),
        ("ref_cur3", I64),
        ("n_refs", I64),  # how many of them are set
    ]
)
"""Per scope id, meaningful for symbols: prices, holders (a linked list through
``POSITION.next_holder``, in order of first fill) and the revaluation queue."""

POSITION = np.dtype(
    [
        ("qty", F64),  # signed net position (long > 0), instrument units
        ("cost", F64),  # signed position x average cost
        ("realised", F64),  # realised P&L of this pair
        # money of a pair is in its symbol's currency (x multiplier); scopes hold base money
        ("value", F64),  # signed position at valuation prices (qty x price per lot)
        ("gross", F64),  # |position| at valuation prices: sum of |qty x price| per lot
        ("fees", F64),  # fees of its fills
        ("buy_work", F64),  # working buy quantity of its orders
        ("sell_work", F64),  # working sell quantity
        ("potential", F64),  # gross + the worst side's growth of |qty| (valuation.potential_of)
        ("mkt_work", F64),  # working quantity of its market orders (both sides)
        ("buy_lim", F64),  # its working buy limit orders: sum of qty x |limit| x multiplier
        ("sell_lim", F64),  # its working sell limit orders: likewise
        ("open", F64),  # open order notional: buy_lim + sell_lim + mkt_work x |valuation price|
        ("broker", F64),  # the broker's position (kind broker), when has_broker
        ("has_broker", I64),
        ("unknown", I64),  # 1 while counted in its scopes' n_unknown
        ("owner", I64),  # owner scope id (firm, account or strategy)
        ("symbol", I64),  # symbol scope id
        ("next_holder", I64),  # next pair in the symbol's holder list, -1 end
        ("linked", I64),  # 1 once in the holder list
        ("firm_pair", I64),  # account and strategy pairs: the firm's pair in the symbol
    ]
)
"""Per pair id: one owner's position in one symbol. Account and strategy pairs link the
firm's pair in the same symbol; a fill names its account's and strategy's pairs."""

ORDER = np.dtype(
    [
        ("status", I64),  # O_FREE, O_OPEN, O_CLOSED or O_PENDING
        ("flags", I64),  # F_NEW | F_CANCELLED | F_REJECTED | F_REPLACED
        ("account", I64),  # scope ids of the order's account, strategy and symbol
        ("strategy", I64),
        ("symbol", I64),
        ("venue", I64),  # venue scope id, -1 none
        ("account_pair", I64),  # the account's and the strategy's pairs in the symbol
        ("strategy_pair", I64),
        ("parent", I64),  # parent id of its new, -1 none
        ("side", I64),  # +1 buy, -1 sell
        ("qty", F64),  # working quantity (a replace sets the new total)
        ("cum_qty", F64),  # filled so far
        ("price", F64),  # working limit price, NaN for a market order
        ("new_qty", F64),  # its new's qty and price: what a redelivered new must equal
        ("new_price", F64),
        ("replace_ns", I64),  # event time of the latest applied replace, -1 none
        ("replace_qty", F64),
        ("replace_price", F64),
        ("unattributed", F64),  # fill qty not yet credited to a parent (new not seen)
        ("closed_ns", I64),  # when it closed (or was first seen, pending), -1 open/free
        ("serial", I64),  # distinguishes reuses of the same id
        ("working", F64),  # working quantity counted in its pairs' buy/sell_work
        ("work_px", F64),  # the limit price it is counted at there (NaN: a market order)
        ("early_cxl", I64),  # a cancel seen before its new: the side and venue it was
        ("early_rej", I64),  # counted with (reject: likewise), counters.early_code; 0 none
        ("early_exec", I64),  # its latest trade with no venue before its new, -1 none
        ("early_rpl", I64),  # replaces with no venue counted before its new
    ]
)
"""Per order id. Closed orders are remembered for the redelivery horizon (a redelivered
new, cancel or replace must change nothing), then their ids are recycled."""

EXEC = np.dtype(
    [
        ("status", I64),  # X_FREE, X_APPLIED or X_BUSTED
        ("order", I64),  # order id and its serial then (the id may be reused since)
        ("serial", I64),
        ("parent", I64),  # parent credited, -1 none
        ("account", I64),  # scope ids of its account, strategy and symbol
        ("strategy", I64),
        ("symbol", I64),
        ("account_pair", I64),  # the account's and strategy's pairs it moved
        ("strategy_pair", I64),
        ("venue", I64),  # venue scope id, -1 none
        ("side", I64),  # +1 buy, -1 sell
        ("qty", F64),  # effective qty, price and fee (after corrections)
        ("price", F64),
        ("fee", F64),
        ("fee_rate", F64),  # the rate its fee was booked at (NaN: unvalued then)
        ("count_ns", I64),  # the time its fill notional was counted at
        ("counted", F64),  # the fill notional counted then (base money)
        ("stated", F64),  # opening positions: the price as stated (NaN: the reference)
        ("next_early", I64),  # the order's trade before it with no venue before its new
    ]
)
"""Per execution id (an (account, exec_id) pair): what a correction or bust reverses."""

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

CURRENCY = np.dtype(
    [
        ("rate", F64),  # units of the base currency per unit
        ("known", I64),  # 1 once a rate arrived (the base currency: always)
        ("first_symbol", I64),  # symbols priced in it (a list through SYMBOL.next_in_currency)
        ("noted", I64),  # 1: a position or order in it met no rate (kernel); 2: alerted
        ("rate_ns", I64),  # event time of the applied rate, -1 none
        ("rate0", F64),  # the distinct rates applied at rate_ns (MARK_RING of them)
        ("rate1", F64),
        ("rate2", F64),
        ("rate3", F64),
        ("n_rates", I64),  # how many of them are set
        ("first_rate", F64),  # the first rate: what was booked unvalued was converted at it
    ]
)
"""Per currency id (id 0: the limits' base currency, rate 1)."""

GLOBALS = np.dtype(
    [
        ("start_ns", I64),  # event time of the first event (or tick), -1 until then
        ("last_event_ns", I64),  # latest event time seen, -1 none
        ("judged_ns", I64),  # like SCOPE.judged_ns, for every scope (set on restart)
        ("epoch", I64),  # current revaluation epoch (event time // revalue width), -1 none
        ("first_pending", I64),  # first symbol waiting for the next epoch, -1 none
        ("last_pending", I64),  # last symbol waiting, -1 none
        ("flush_seq", I64),  # revaluation flushes so far (stamps SCOPE.seen_seq)
        ("first_dirty", I64),  # first scope whose peak waits for consistency, -1 none
        ("feed_ns", I64),  # time the feed rows were last judged at, -1 never
        ("ahead_run", I64),  # events in a row stamped too far ahead (replay), to follow a jump
        ("order_serial", I64),  # serials handed to orders so far
    ]
)
"""Engine-wide values: a 1-record array (``g[0].last_event_ns``)."""

COUNTER = np.dtype(
    [
        ("kind", I64),  # counter kind code (C_* in riskguard.state.counters)
        ("level", I64),  # scope level counted at
        ("side", I64),  # only events of this side (+1 buy, -1 sell), 0 any
        ("venue", I64),  # only events to this venue scope id, -1 any
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
        ("ahead", I64),  # replay: bit i set when ahead-of-clock event i counted it a duplicate
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
        ("side", I64),  # event filter: only orders/fills of this side, 0 any
        ("venue", I64),  # event filter: only orders/fills to this venue scope id, -1 any
        ("symbol", I64),  # event filter (restricted lists): only this symbol scope id, -1 any
        ("event_account", I64),  # event filter (restricted lists): this account, -1 any
        ("upper", F64),  # breach when value > upper (+inf: none)
        ("lower", F64),  # breach when value < lower (-inf: none)
        ("warn0", F64),  # warning levels, fractions of the limit (NaN: none), ascending
        ("warn1", F64),
        ("warn2", F64),
        ("warn3", F64),
        ("rearm", F64),  # an alert row's edge re-arms this fraction of the limit below it
        ("warn_rearm", F64),  # a warning level re-arms this fraction of the limit below it
        ("per_pair", I64),  # 1: judged per position (one symbol), edges keyed by the pair
        ("warns", I64),  # 1 when the row has warning levels or is an alert (edge table)
    ]
)
"""Per compiled rule row (a rule with a multi-value ``match`` has one row per value)."""

PEAK = np.dtype(
    [
        ("high", F64),  # highest value recorded (-inf none)
        ("low", F64),  # lowest value recorded (+inf none)
        ("evaluations", F64),  # values recorded
        ("edges", F64),  # raised alert and warning edges of the row right now
        ("high_scope", I64),  # scope id that reached high / low, -1 none
        ("low_scope", I64),
    ]
)
"""Per rule row: what the row has seen (replay summaries, status)."""

DECISION = np.dtype(
    [
        ("event", I64),  # index of the triggering event in the batch, -1 a clock tick
        ("row", I64),  # rule row
        ("scope", I64),  # scope id
        ("from_state", I64),
        ("to_state", I64),  # TO_ALERT (-1): an alert; TO_RESOLVE (-2): an alert re-armed
        ("value", F64),  # the metric's value
        ("ts", I64),  # the triggering event's (corrected) time, or the tick's
        ("level", F64),  # a warning's level (fraction of the limit), NaN for others
        ("edge", I64),  # the edge bit raised or re-armed (alerts and resolves)
        ("pair", I64),  # per-position metrics: the position pair measured, else -1
    ]
)
"""One kernel decision: a transition or an alert edge."""

NOTE = np.dtype(
    [
        ("event", I64),  # index of the event in the batch
        ("kind", I64),  # N_DUPLICATE, N_SKEWED, N_LATE, N_REUSED, N_BUSTED, N_AHEAD...
        ("value", I64),  # skew or lateness in ns, else 0
    ]
)
"""Something the kernel noticed about an event: a redelivery, a clock problem, a bad event."""

CLOSED = np.dtype([("order", I64), ("closed_ns", I64)])
"""An order that closed (or was first seen, pending): recycled after the horizon."""

OUT_COUNTS = np.dtype(
    [
        ("n", I64),  # decisions written
        ("n_closed", I64),  # orders closed
        ("n_notes", I64),  # notes written
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
        ("account_pair", I64),  # fills: the account's and the strategy's position pairs
        ("strategy_pair", I64),
        ("exec", I64),  # fills: execution id; corrections and busts: the one they refer to
        ("subtype", I8),  # fills: E_TRADE, E_CORRECT, E_BUST; positions: P_OPEN, P_BROKER
        ("fee", F64),  # fills: fee (NaN none: a correction keeps the original's)
        ("venue", I64),  # venue scope id, -1 none
        ("currency", I64),  # instrument and fx events: currency id
        ("factor", F64),  # instrument: multiplier; fx: rate
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
    """Raised alert and warning edges: an open-addressing map ``row << 32 | scope`` -> bits
    (warning levels 0..3, and EDGE_ALERT for an alert row's own breach)."""

    keys: Array  #: int64 (cap,), cap a power of two; -1 empty, -2 deleted
    vals: Array  #: int64 (cap,): the raised bits of the key
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
    execs: Array  #: EXEC (execution capacity,)
    currencies: Array  #: CURRENCY (currency capacity,)
    globals: Array  #: GLOBALS (1,)
    ahead: Array  #: EVENT (JUMP_CONFIRM,): replay, the events counted while ahead of the clock
    counters: Counters
    edges: Edges
    dups: Dups


class Rules(NamedTuple):
    """Compiled limits, read-only in the kernel."""

    rows: Array  #: RULE (n rows,)
    by_type: Array  #: int64 (N event types, n rows): rows each event type moves, -1 padded
    exposure_rows: Array  #: int64: rows a price move re-judges for every holder
    feed_rows: Array  #: int64: rows judged before every event (silence, lag)
    restricted_rows: Array  #: int64: restricted-list rows, judged in flagged symbols only
    revalue_ns: int  #: width of a revaluation epoch in ns (0: every price move)
    skew_ns: int  #: an event stamped more than this ahead of the clock is skewed
    lateness_ns: int  #: an event more than this behind the clock counts in windows as now


class Output(NamedTuple):
    """The kernel's decisions and notes, and the orders that closed."""

    decisions: Array  #: DECISION (cap,)
    notes: Array  #: NOTE (2 x batch length,)
    closed: Array  #: CLOSED (batch length,)
    counts: Array  #: OUT_COUNTS (1,)


def fill_record(dtype: np.dtype[Any], **values: Any) -> Array:
    """A 1-record array of ``dtype``: zeros, except ``values`` (the fill of new records)."""
    rec = np.zeros(1, dtype=dtype)
    for name, value in values.items():
        rec[name] = value
    return rec


#: fill of each per-id record type: what an id that was never written holds
FILLS: dict[str, Array] = {
    "scopes": fill_record(SCOPE, account=-1, judged_ns=-1, seen_seq=-1, next_dirty=-1),
    "symbols": fill_record(
        SYMBOL,
        mark_ns=-1,
        first_holder=-1,
        last_holder=-1,
        val_epoch=-1,
        next_pending=-1,
        multiplier=1.0,
        next_in_currency=-1,
        ref_exec=-1,
        ref_ns=-1,
    ),
    "positions": fill_record(POSITION, next_holder=-1, firm_pair=-1),
    "orders": fill_record(
        ORDER,
        parent=-1,
        replace_ns=-1,
        closed_ns=-1,
        venue=-1,
        account_pair=-1,
        strategy_pair=-1,
        work_px=np.nan,
        early_exec=-1,
    ),
    "parents": fill_record(PARENT),
    "sources": fill_record(SOURCE, last_heard_ns=-1),
    "execs": fill_record(
        EXEC, order=-1, parent=-1, venue=-1, stated=np.nan, fee_rate=np.nan, next_early=-1
    ),
    "currencies": fill_record(CURRENCY, rate=1.0, first_symbol=-1, rate_ns=-1, first_rate=1.0),
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
