"""The kernel's codes and constants: statuses, flags, note kinds, edge bits, sizes.

Plain integers and floats, shared by the record definitions (:mod:`.bundles`), the numba
helpers and the engine. Each group names the record field it is stored in.
"""

from __future__ import annotations

FIRM = 0
"""The firm's scope id."""
QTY_DECIMALS = 9
"""Quantity sums (positions, an order's or a parent's filled quantity) are rounded to
this many decimals while below QTY_EXACT_BELOW units, so decimal fills add up exactly
(ten fills of 0.1 are 1.0, not 0.9999999999999999): the sum is the float64 nearest to
the decimal sum, as if it had been written out in decimal."""
QTY_EXACT_BELOW = 1e6
"""Up to here a float64 holds 9 decimals exactly enough to round them; above, float
precision (about 1e-16 relative) and QTY_RTOL apply."""
QTY_RTOL = 1e-9
"""Quantities within this fraction of each other are equal (float sums of decimal fills):
a fill that brings an order, a parent or a position within it of its target lands on it
exactly. 1e-9 is far below any lot size relative to its order (one satoshi in 10 BTC is
1e-9) and far above float error (about 1e-16 per addition)."""
MONEY_DECIMALS = 6
"""Money values are judged and reported rounded to this many decimals (a millionth of a
currency unit) while below MONEY_EXACT_BELOW units. Sums of decimal prices carry binary
rounding residue (ten buys of 0.1 at 3000.1 sold at 3000.1 realise -4.5e-13, not 0): a
residue must never decide a breach at a round limit, nor show as a drawdown."""
MONEY_EXACT_BELOW = 1e9
"""Up to here x * 1e6 is an exact integer in float64 (below 2**53); above, money is judged
at float precision (about 1e-16 relative), far below any meaningful amount."""
LEVEL_RTOL = 1e-15
"""Utilisations (value / limit) within this fraction of a warning level (1.0 for the
limit itself) of the level, or of the point where a level or an alert re-arms, are at it:
a value exactly at a decimal fraction of a decimal limit (2.4 of a max of 3, 80 %)
divides to 0.7999999999999999, a few units of float error (about 1e-16 each) from the
level it reached. A millionth of the limit below a level is far below it."""

MARKET_PRICE_KEY = 4e12
"""The price a market order is remembered at in the duplicate-order memory: outside the
valid price range (|price| <= 1e12), so that no limit order (at -1.0, say: prices may be
negative) is ever taken for a market order's duplicate."""

# ORDER.status
O_FREE = 0  # not tracked
O_OPEN = 1  # working
O_CLOSED = 2  # filled, cancelled, rejected or replaced below its fills; kept for redeliveries
O_PENDING = 3  # seen only through fills or a replace: its new has not arrived yet
# ORDER.flags
F_NEW = 1  # its new arrived
F_CANCELLED = 2  # a cancel was applied
F_REJECTED = 4  # a reject was applied
F_REPLACED = 8  # a replace was applied
# EXEC.status
X_FREE = 0
X_APPLIED = 1
X_BUSTED = 2
# EVENT.subtype of fills
E_TRADE = 0
E_CORRECT = 1
E_BUST = 2
# EVENT.subtype of cancels and replaces: the firm's (requested) or the venue's own
U_REQUESTED = 0
U_UNSOLICITED = 1
# NOTE.kind
N_DUPLICATE = 1  # a redelivery: not applied again
N_SKEWED = 2  # stamped too far ahead: applied at the corrected time (value: skew ns)
N_LATE = 3  # beyond the lateness bound: counted in windows as now (value: lateness ns)
N_REUSED = 4  # bad: a new reusing the id of a working order with other fields
N_BUSTED = 5  # bad: a correction or bust of an execution already busted
N_AHEAD = 6  # replay: stamped too far ahead of the clock, skewed unless the feed jumped
N_KEPT = 7  # replay: the events noted ahead were skewed after all (value: how many)
N_JUMP = 8  # replay: the feed jumped (a gap): the clock follows (value: the gap in ns)
N_REFDATA = 9  # bad: a change of multiplier or currency once the symbol is held or worked
N_NOPRICE = 10  # bad: an opening position without a price, and no reference price yet
# POSITION event kinds (EVENT.subtype)
P_OPEN = 0
P_BROKER = 1
# edge bits (Edges.vals): warning levels 0..3, and the alert row's own breach
EDGE_ALERT = 16
MAX_WARN = 4
"""Warning levels a rule may have (``warn_at``)."""
# DECISION.to_state beyond the trading states
TO_ALERT = -1
TO_RESOLVE = -2
TO_JUDGED = -3
"""An alert or warning level crossed on evidence at or before the judged time: raised
without a page (the previous instance paged it, or a person judged it), so that its
resolve still comes, and names it."""
JUMP_CONFIRM = 3
"""Replay: this many events in a row stamped too far ahead mean the feed jumped (a gap)."""
MARK_RING = 4
"""Distinct prices remembered for the latest mark time of a symbol (mark redeliveries)."""
NBUCKETS = 10
"""Buckets a windowed counter's window is cut into (bucket width = ceil(window / 10))."""
RING = NBUCKETS + 1
"""Buckets kept per counter: the current one plus ``NBUCKETS`` before it."""
OWN_TIME_NS = 1 << 62
"""The lateness bound while a backlog is read (``Engine.count_at_own_time``): every event
counts in windows at its own time, and one older than a counter's ring is in none of its
windows (live, such an event counts in the oldest bucket the ring holds)."""
