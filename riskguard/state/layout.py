"""Column layout of the state arrays shared by the kernel, the store and the engine.

numba treats module-level integer globals as compile-time constants, so naming
columns here costs nothing in the kernel and keeps ``sf[s, SF_NET]`` readable.
"""

from typing import Final

FIRM: Final = 0  # the firm's scope id

# Per-scope float columns (``sf``).
SF_NET: Final = 0  # sum of signed position x reference price
SF_GROSS: Final = 1  # sum of |position| x reference price
SF_REAL: Final = 2  # realised P&L
SF_COST: Final = 3  # sum of signed position x average cost
SF_PEAK: Final = 4  # session peak of pnl (starts at 0)
SF_REF: Final = 5  # symbols: latest reference price (mark, else last fill)
SF_VAL: Final = 6  # symbols: price positions are valued at (SF_REF, applied per epoch)
NSF: Final = 7

# Per-scope integer columns (``si``).
SI_OPEN: Final = 0  # open orders
SI_STATE: Final = 1  # latched trading state
SI_LEVEL: Final = 2  # scope level
SI_ACCOUNT: Final = 3  # owning account scope (strategies), else -1
SI_PRICE_SRC: Final = 4  # symbols: 0 no price, 1 last fill price, 2 mark
SI_MARK_TS: Final = 5  # symbols: event time of the applied mark, -1 none
SI_HEAD: Final = 6  # symbols: first position pair holding the symbol, -1 none
SI_TAIL: Final = 7  # symbols: last position pair holding the symbol, -1 none
SI_NPAIRS: Final = 8  # symbols: number of linked position pairs
SI_JUDGED: Final = 9  # breaches from events at or before this time are already judged
SI_VAL_EPOCH: Final = 10  # symbols: revaluation epoch SF_VAL was last moved in, -1 never
SI_PEND: Final = 11  # symbols: 1 while a price move waits for the next epoch
SI_PEND_NEXT: Final = 12  # symbols: next pending symbol (in order of becoming pending), -1 end
SI_SEEN: Final = 13  # flush sequence number this scope was last evaluated in
SI_SLOT: Final = 14  # index of the scope among the scopes of its level (windowed counters' row)
NSI: Final = 15

# Position pairs (owner scope x symbol): floats ``pf`` and integers ``pi``.
PF_POS: Final = 0
PF_COST: Final = 1
PF_REAL: Final = 2
NPF: Final = 3
PI_OWNER: Final = 0
PI_SYM: Final = 1
PI_NEXT: Final = 2
PI_LINKED: Final = 3
PI_ACC_PAIR: Final = 4  # strategy pairs: the pair of the strategy's account in the symbol
PI_FIRM_PAIR: Final = 5  # strategy pairs: the firm's pair in the symbol
NPI: Final = 6

# Orders: floats ``of`` and integers ``oi``.
OF_QTY: Final = 0
OF_CUM: Final = 1
OF_PRICE: Final = 2
NOF: Final = 3
OI_OPEN: Final = 0
OI_ACC: Final = 1
OI_STRAT: Final = 2
OI_SYM: Final = 3
OI_PARENT: Final = 4
OI_SIDE: Final = 5
NOI: Final = 6

# Parents: floats ``qf`` and integers ``qi``.
QF_QTY: Final = 0
QF_FILLED: Final = 1
NQF: Final = 2
QI_DECLARED: Final = 0
NQI: Final = 1

# Globals ``g``.
G_START: Final = 0  # engine start (event time); -1 until set
G_LAST_ANY: Final = 1  # latest event time seen
G_DUP_PURGE: Final = 2  # duplicate-table size that triggers the next purge
G_JUDGED: Final = 3  # like SI_JUDGED, for every scope (set on restart from the control topic)
G_EPOCH: Final = 4  # current revaluation epoch (event time // revalue width), -1 before any
G_PEND_HEAD: Final = 5  # first pending symbol, -1 none
G_PEND_TAIL: Final = 6  # last pending symbol, -1 none
G_SEQ: Final = 7  # revaluation flushes so far (stamps SI_SEEN)
NG: Final = 8

# Windowed counters: kinds, and the ring of time buckets.
C_NEW: Final = 0
C_MSG: Final = 1
C_REJ: Final = 2
C_CXL: Final = 3
C_FILLN: Final = 4
C_DUP: Final = 5
NBUCKETS: Final = 10  # bucket width = ceil(window / NBUCKETS)
RING: Final = NBUCKETS + 1  # current bucket + NBUCKETS before it
CI_KIND: Final = 0
CI_LEVEL: Final = 1
CI_WIDTH: Final = 2  # bucket width in ns
CI_WINDOW: Final = 3  # window in ns
NCI: Final = 4

# Compiled rule rows ``ri`` (integers) and ``rf`` (floats).
RI_METRIC: Final = 0
RI_LEVEL: Final = 1
RI_ACTION: Final = 2
RI_MATCH: Final = 3  # scope id the row is limited to, -1 = every key at the level
RI_MATCH_ACC: Final = 4  # account scope id for strategy rows, -1 = any
RI_C1: Final = 5  # counter index, -1 none
RI_C2: Final = 6  # second counter (cancel_ratio denominator), -1 none
RI_MIN_ORDERS: Final = 7
RI_RULE: Final = 8  # index of the rule in the limits file
RI_SOURCE: Final = 9  # feed rows: source id, -1 = any event
NRI: Final = 10
RF_MAX: Final = 0
RF_MIN: Final = 1
NRF: Final = 2
# Row peaks ``rp``: highest and lowest value evaluated, the evaluation count, and the
# number of raised alert edges of the row (alert rows only).
RP_HI: Final = 0
RP_LO: Final = 1
RP_N: Final = 2
RP_EDGES: Final = 3
NRP: Final = 4

# Decision output rows ``out_i``; value in ``out_f``.
O_EVENT: Final = 0
O_ROW: Final = 1
O_SCOPE: Final = 2
O_FROM: Final = 3
O_TO: Final = 4  # -1 for an alert (no state change)
NO: Final = 5
