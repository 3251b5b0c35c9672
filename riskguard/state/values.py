"""The value of a rule row's metric for one event: what the kernel judges.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`): windowed counts, the
per-order metrics (quantity, notional in base money, price deviation), per-position
metrics (a position, its break against the broker's), parents, and the stateful metrics
of a scope (:func:`riskguard.state.valuation.scope_value`). NaN means "not evaluated":
no price yet, no parent, no broker position, or money in a currency with no rate.
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.limits.vocabulary import (
    M_CANCEL_RATIO,
    M_DUPLICATE_ORDERS,
    M_FILL_COUNT,
    M_FILL_NOTIONAL_RATE,
    M_MESSAGE_RATE,
    M_ORDER_NOTIONAL,
    M_ORDER_QTY,
    M_ORDER_RATE,
    M_PARENT_OVERFILL,
    M_POSITION_BREAK,
    M_POSITION_QTY,
    M_PRICE_DEVIATION,
    M_REJECT_RATE,
)
from riskguard.state.jit import helper, inlined
from riskguard.state.quantities import fill_ratio, money, near, price_deviation, snap
from riskguard.state.valuation import scope_value
from riskguard.vocabulary import L_ACCOUNT, L_STRATEGY


@helper
def pair_at(level, ev, st):  # type: ignore[no-untyped-def]
    """The position pair a per-position metric reads at ``level`` for event ``ev``."""
    if level == L_ACCOUNT:
        return ev.account_pair
    if level == L_STRATEGY:
        return ev.strategy_pair
    return st.positions[ev.account_pair].firm_pair if ev.account_pair >= 0 else -1


@inlined
def value_of(r, s, p, parent, ev, st, rules):  # type: ignore[no-untyped-def]
    """Value of row ``r``'s metric for event ``ev`` at scope ``s`` (``p``: the pair of a
    per-position metric); NaN when it does not apply."""
    row = rules.rows[r]
    metric = row.metric
    c = st.counters
    px = ev.price
    sym = st.symbols[ev.symbol]
    if (
        metric == M_ORDER_RATE
        or metric == M_MESSAGE_RATE
        or metric == M_REJECT_RATE
        or metric == M_DUPLICATE_ORDERS
        or metric == M_FILL_COUNT
    ):
        return c.total[row.counter, st.scopes[s].slot]
    if metric == M_FILL_NOTIONAL_RATE:
        return money(c.total[row.counter, st.scopes[s].slot])
    if metric == M_CANCEL_RATIO:
        slot = st.scopes[s].slot
        news = c.total[row.counter2, slot]
        cxl = c.total[row.counter, slot]
        if cxl == 0.0:
            return 0.0  # no cancel in the window: nothing to alert on, whatever the orders
        return cxl / news if news >= row.min_orders else np.nan
    if metric == M_ORDER_QTY:
        return ev.qty
    if metric == M_ORDER_NOTIONAL:
        cur = st.currencies[sym.currency]
        if cur.known == 0:
            return np.nan
        size = ev.qty * sym.multiplier * cur.rate
        if not math.isnan(px):
            return money(size * abs(px))
        return money(size * abs(sym.ref_price)) if sym.price_source > 0 else np.nan
    if metric == M_PRICE_DEVIATION:
        if not math.isnan(px) and sym.price_source > 0 and sym.ref_price != 0.0:
            return price_deviation(px, sym.ref_price)
        return np.nan
    if metric == M_POSITION_QTY:
        return abs(st.positions[p].qty) if p >= 0 else np.nan
    if metric == M_POSITION_BREAK:
        if p < 0 or st.positions[p].has_broker == 0:
            return np.nan
        pos = st.positions[p]
        return abs(snap(pos.qty - pos.broker))
    if metric == M_PARENT_OVERFILL:
        if parent >= 0 and st.parents[parent].declared != 0:
            pa = st.parents[parent]
            if near(pa.filled, pa.qty):
                return 1.0
            return fill_ratio(pa.filled, pa.qty)
        return np.nan
    return scope_value(metric, st.scopes, s)
