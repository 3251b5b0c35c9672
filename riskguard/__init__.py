"""riskguard: a real-time kill switch for algorithmic trading.

It watches a trading system's order, fill, mark and heartbeat events, keeps
positions, exposures, P&L and order-rate statistics in numba-accelerated numpy
arrays, and latches scoped halts (firm, account, strategy, symbol) when a limit
from an operator-written limits file is breached.
"""

__version__ = "0.1.0"
