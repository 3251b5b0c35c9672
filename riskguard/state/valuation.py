"""Money of positions: average cost, valuation per lot, contract size, currency, working orders.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`). A position pair keeps
its money in its symbol's currency, scaled by the contract size (a *money price* is
price x ``multiplier``): cost, realised P&L, fees, ``value`` (signed, per lot at its
valuation price), ``gross`` (|qty x price| per lot), ``potential`` (its gross if every
working order of the pair filled, worst side; in a symbol with no price yet the growth is
valued at the working limits) and ``open`` (notional of its working
orders: limit orders at their limit, market orders at the valuation price).

Scopes hold base-currency money: each change of a pair reaches its owner scope (and,
for the firm's pair, the symbol scope) converted at the currency's current rate
(``pair_delta``). A rate move converts open money (value, gross, cost, potential, open)
at the new rate; realised P&L and fees stay at the rate they were booked at (``fx_pair``).

A currency with no rate yet is never valued at 1: a pair holding money in it (a
position, working orders, or realised P&L or fees, flat or not) counts in its scopes'
``n_unknown``, which makes every money metric of those scopes unknown (not evaluated,
reported as unknown) until the rate arrives; then everything the pair booked is
converted at once, at that first rate. The kernel marks the currency
(``CURRENCY.noted``) so the engine raises a system alert.

Valuation lag (revaluation epochs): see :mod:`riskguard.state.revaluation`; a scope's
session high of P&L is raised only at consistent moments (:func:`raise_peak`), and never
while part of its book is unvalued.
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.limits.vocabulary import (
    M_DRAWDOWN,
    M_GROSS_NOTIONAL,
    M_NET_NOTIONAL,
    M_OPEN_ORDER_NOTIONAL,
    M_OPEN_ORDERS,
    M_PNL,
    M_POTENTIAL_GROSS,
)
from riskguard.state.codes import FIRM
from riskguard.state.jit import helper, inlined
from riskguard.state.quantities import money, near, snap


@helper
def pnl_of(sc, s):  # type: ignore[no-untyped-def]
    """Realised + unrealised P&L of scope ``s``, net of fees (base currency)."""
    r = sc[s]
    return r.realised_pnl + r.net_notional - r.cost_basis - r.fees


@helper
def scope_value(metric, sc, s):  # type: ignore[no-untyped-def]
    """A stateful metric of scope ``s`` (exposure, P&L, orders); NaN for others, and for
    money metrics while part of the scope's book is in a currency with no rate. Money is
    rounded as it is judged (:func:`riskguard.state.quantities.money`)."""
    r = sc[s]
    if metric == M_OPEN_ORDERS:
        return float(r.open_orders)
    if r.n_unknown > 0:
        return np.nan
    if metric == M_GROSS_NOTIONAL:
        return money(r.gross_notional)
    if metric == M_NET_NOTIONAL:
        return money(r.net_notional)
    if metric == M_PNL:
        return money(pnl_of(sc, s))
    if metric == M_DRAWDOWN:
        return max(0.0, money(r.peak_pnl - pnl_of(sc, s)))
    if metric == M_POTENTIAL_GROSS:
        return money(r.potential)
    if metric == M_OPEN_ORDER_NOTIONAL:
        return money(r.open_notional)
    return np.nan


@helper
def raise_peak(sc, glob, s, consistent):  # type: ignore[no-untyped-def]
    """Raise the session high of scope ``s`` now, or once the valuation is consistent
    (``sc``: the SCOPE records, ``glob``: the GLOBALS record; not the whole state, which
    would be hundreds of machine words per call).

    Never while part of the scope's book has no exchange rate: its P&L is partial then.
    """
    if consistent:
        if sc[s].n_unknown == 0:
            sc[s].peak_pnl = max(sc[s].peak_pnl, pnl_of(sc, s))
    elif sc[s].dirty == 0:
        g = glob[0]
        sc[s].dirty = 1
        sc[s].next_dirty = g.first_dirty
        g.first_dirty = s


@helper
def settle_peaks(st):  # type: ignore[no-untyped-def]
    """Valuation is consistent again: raise the highs of every scope that waited."""
    sc = st.scopes
    g = st.globals[0]
    s = g.first_dirty
    while s >= 0:
        nxt = sc[s].next_dirty
        if sc[s].n_unknown == 0:
            sc[s].peak_pnl = max(sc[s].peak_pnl, pnl_of(sc, s))
        sc[s].dirty = 0
        sc[s].next_dirty = -1
        s = nxt
    g.first_dirty = -1


@helper
def scope_delta(sc, glob, s, d, lots, unknown, consistent):  # type: ignore[no-untyped-def]
    """Add base-money changes ``d`` = (net, gross, realised, cost, fees, potential, open)
    to scope ``s`` (``sc``: the SCOPE records, ``glob``: the GLOBALS record), with
    ``lots`` positions opened (+) or closed (-) and ``unknown`` pairs entering (+) or
    leaving (-) the unvalued count.

    A scope left with no position has no exposure: its net, gross and cost basis are set
    to exactly zero, not to the rounding residue of the changes that flattened it; with
    no working order either, its potential and open notional too.
    """
    r = sc[s]
    r.n_lots += lots
    r.n_unknown += unknown
    r.realised_pnl += d[2]
    r.fees += d[4]
    if r.n_lots == 0:
        r.net_notional = 0.0
        r.gross_notional = 0.0
        r.cost_basis = 0.0
    else:
        r.net_notional += d[0]
        r.gross_notional += d[1]
        r.cost_basis += d[3]
    if r.open_orders == 0:
        r.open_notional = 0.0
        if r.n_lots == 0:
            r.potential = 0.0
        else:
            r.potential += d[5]
    else:
        r.potential += d[5]
        r.open_notional += d[6]
    raise_peak(sc, glob, s, consistent)


@helper
def rate_of(st, y):  # type: ignore[no-untyped-def]
    """Base units per unit of symbol ``y``'s currency; NaN while its rate is unknown."""
    cur = st.currencies[st.symbols[y].currency]
    return cur.rate if cur.known != 0 else np.nan


@helper
def money_price(st, y):  # type: ignore[no-untyped-def]
    """Symbol ``y``'s valuation price x its multiplier (its currency)."""
    sym = st.symbols[y]
    return sym.val_price * sym.multiplier


@helper
def _active(pos):  # type: ignore[no-untyped-def]
    return pos.qty != 0.0 or pos.buy_work > 0.0 or pos.sell_work > 0.0


@helper
def holds_money(pos):  # type: ignore[no-untyped-def]
    """Whether pair ``pos`` holds money in its currency: a position, working orders, or
    realised P&L or fees not 0 to a millionth (a flat lot's P&L is its realised money)."""
    return _active(pos) or money(pos.realised) != 0.0 or money(pos.fees) != 0.0


@helper
def pair_delta(st, p, d, lots, consistent):  # type: ignore[no-untyped-def]
    """Apply a change ``d`` of pair ``p`` (its currency, 7 parts as in :func:`scope_delta`)
    to its owner scope (and, for the firm's pair, to the symbol scope) in base money."""
    rated_delta(st, p, d, lots, consistent, rate_of(st, st.positions[p].symbol))


@inlined
def rated_delta(st, p, d, lots, consistent, rate):  # type: ignore[no-untyped-def]
    """:func:`pair_delta` with ``rate`` = :func:`rate_of` its symbol, read by the caller
    (a revaluation reads it once for every holder of the symbol)."""
    pos = st.positions[p]
    y = pos.symbol
    unknown = 0
    if math.isnan(rate):
        want = 1 if holds_money(pos) else 0
        unknown = want - pos.unknown
        pos.unknown = want
        if want != 0:
            cur = st.currencies[st.symbols[y].currency]
            if cur.noted == 0:
                cur.noted = 1
        base = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    else:
        base = (
            d[0] * rate,
            d[1] * rate,
            d[2] * rate,
            d[3] * rate,
            d[4] * rate,
            d[5] * rate,
            d[6] * rate,
        )
    owner = pos.owner
    scope_delta(st.scopes, st.globals, owner, base, lots, unknown, consistent)
    if owner == FIRM:
        scope_delta(st.scopes, st.globals, y, base, lots, unknown, consistent)


@helper
def priced(st, y):  # type: ignore[no-untyped-def]
    """Whether symbol ``y`` has a valuation price (a mark or a fill reached it)."""
    return st.symbols[y].price_source > 0


@helper
def potential_of(pos, u, has_price):  # type: ignore[no-untyped-def]
    """Gross of pair ``pos`` if every working order filled, worst side: its gross plus the
    larger growth of |position| (all working buys filled, or all working sells).

    ``has_price``: the growth is valued at money price ``u`` (the valuation price x
    multiplier). Without a price the fill would set it: each side's growth is valued at
    that side's working limits (its limit money x growth / its working quantity; market
    orders at 0, as open notional counts them), and the worst side is the larger money.
    """
    q = pos.qty
    if has_price:
        grow = max(abs(q + pos.buy_work), abs(q - pos.sell_work)) - abs(q)
        return pos.gross + max(0.0, grow) * abs(u)
    extra = 0.0
    up = abs(q + pos.buy_work) - abs(q)
    if up > 0.0:
        extra = pos.buy_lim * (up / pos.buy_work)
    down = abs(q - pos.sell_work) - abs(q)
    if down > 0.0:
        extra = max(extra, pos.sell_lim * (down / pos.sell_work))
    return pos.gross + extra


@helper
def open_of(pos, u):  # type: ignore[no-untyped-def]
    """Notional of pair ``pos``'s working orders: limits at their price, markets at ``u``."""
    return pos.buy_lim + pos.sell_lim + pos.mkt_work * abs(u)


@helper
def trade_pair(st, p, d, x, w, fee, consistent):  # type: ignore[no-untyped-def]
    """Pair ``p`` trades signed qty ``d`` at money price ``x``; the lot is valued at money
    price ``w``; ``fee`` is in the symbol's currency.

    Average cost: a fill that crosses zero closes the old position at its average cost
    (realising P&L) and opens the rest at ``x``. Quantities that close the position (see
    :func:`riskguard.state.quantities.near`) close it exactly (no dust). Valuation per
    lot: an increase adds ``d x w``; a reduction keeps the remaining lots' valuation pro
    rata; a flip values the new position at ``w``.
    """
    pos = st.positions[p]
    q, c, v0, g0, p0 = pos.qty, pos.cost, pos.value, pos.gross, pos.potential
    dr = 0.0
    if q == 0.0 or (q > 0.0) == (d > 0.0):
        nq = snap(q + d)
        nc = c + d * x
        v1 = v0 + d * w
        g1 = g0 + abs(d * w)
    elif near(abs(d), abs(q)):
        avg = c / q
        dr = abs(q) * (x - avg) if q > 0.0 else abs(q) * (avg - x)
        nq = 0.0
        nc = 0.0
        v1 = 0.0
        g1 = 0.0
    else:
        avg = c / q
        k = min(abs(d), abs(q))
        dr = k * (x - avg) if q > 0.0 else k * (avg - x)
        nq = snap(q + d)
        if abs(d) < abs(q):
            nc = avg * nq
            v1 = v0 * (nq / q)
            g1 = g0 * (nq / q)
        else:
            nc = x * nq
            v1 = nq * w
            g1 = abs(nq * w)
    pos.qty = nq
    pos.cost = nc
    pos.realised += dr
    pos.value = v1
    pos.gross = g1
    pos.fees += fee
    p1 = potential_of(pos, money_price(st, pos.symbol), priced(st, pos.symbol))
    pos.potential = p1
    lots = (1 if q == 0.0 and nq != 0.0 else 0) - (1 if q != 0.0 and nq == 0.0 else 0)
    pair_delta(st, p, (v1 - v0, g1 - g0, dr, nc - c, fee, p1 - p0, 0.0), lots, consistent)


@helper
def work_pair(st, p, side, dq, market, dmoney, consistent):  # type: ignore[no-untyped-def]
    """Working quantity of pair ``p`` on ``side`` (+1 buy, -1 sell) changes by ``dq``: of
    a market order (``market``), else of a limit order worth ``dmoney`` more (qty x
    |limit| x multiplier). Its potential and open notional move; a side with nothing
    working has no limit money left (exactly 0, not a rounding residue)."""
    pos = st.positions[p]
    if side > 0:
        pos.buy_work = max(0.0, snap(pos.buy_work + dq))
        if not market:
            pos.buy_lim += dmoney
        if pos.buy_work == 0.0:
            pos.buy_lim = 0.0
    else:
        pos.sell_work = max(0.0, snap(pos.sell_work + dq))
        if not market:
            pos.sell_lim += dmoney
        if pos.sell_work == 0.0:
            pos.sell_lim = 0.0
    if market:
        pos.mkt_work = max(0.0, snap(pos.mkt_work + dq))
    if pos.buy_work == 0.0 and pos.sell_work == 0.0:
        pos.mkt_work = 0.0
    u = money_price(st, pos.symbol)
    p1 = potential_of(pos, u, priced(st, pos.symbol))
    o1 = open_of(pos, u)
    d = (0.0, 0.0, 0.0, 0.0, 0.0, p1 - pos.potential, o1 - pos.open)
    pos.potential = p1
    pos.open = o1
    pair_delta(st, p, d, np.int64(0), consistent)


@inlined
def revalue_pair(st, p, u, has_price, rate, ok):  # type: ignore[no-untyped-def]
    """Value pair ``p`` (every lot, and its market orders) at money price ``u`` of its
    symbol; ``has_price`` (:func:`priced`) and ``rate`` (:func:`rate_of`) are its symbol's,
    read once by the caller for all its holders."""
    pos = st.positions[p]
    q = pos.qty
    if q == 0.0 and pos.value == 0.0 and pos.open == 0.0 and not _active(pos):
        return
    v1 = q * u
    g1 = abs(v1)
    pos.value, v0 = v1, pos.value
    pos.gross, g0 = g1, pos.gross
    p1 = potential_of(pos, u, has_price)
    o1 = open_of(pos, u)
    d = (v1 - v0, g1 - g0, 0.0, 0.0, 0.0, p1 - pos.potential, o1 - pos.open)
    pos.potential = p1
    pos.open = o1
    rated_delta(st, p, d, np.int64(0), ok, rate)


@helper
def fx_pair(st, p, old, new, ok):  # type: ignore[no-untyped-def]
    """Convert pair ``p``'s money at the new rate ``new`` (``old`` NaN: it was unknown).

    Known before: its open money (value, gross, cost, potential, open) moves by the rate
    change; realised P&L and fees stay at the rate they were booked at. Unknown before:
    all of it (realised P&L and fees included) is booked now, at ``new``.
    """
    pos = st.positions[p]
    if math.isnan(old):
        d = (
            pos.value * new,
            pos.gross * new,
            pos.realised * new,
            pos.cost * new,
            pos.fees * new,
            pos.potential * new,
            pos.open * new,
        )
        unknown = -pos.unknown
        pos.unknown = 0
    else:
        k = new - old
        d = (pos.value * k, pos.gross * k, 0.0, pos.cost * k, 0.0, pos.potential * k, pos.open * k)
        unknown = 0
    owner = pos.owner
    scope_delta(st.scopes, st.globals, owner, d, np.int64(0), unknown, ok)
    if owner == FIRM:
        scope_delta(st.scopes, st.globals, pos.symbol, d, np.int64(0), unknown, ok)


@helper
def fee_rate_gap(st, x):  # type: ignore[no-untyped-def]
    """Base money to add to the fees of execution ``x``'s scopes when its fee is reversed
    at today's rate, so that the reversal takes back exactly what was booked: the fee at
    the rate it was booked at (``EXEC.fee_rate``; booked unvalued: the currency's first
    rate, at which it was converted). 0.0 while the currency still has no rate."""
    now = rate_of(st, x.symbol)
    if math.isnan(now) or x.fee == 0.0:
        return 0.0
    then = x.fee_rate
    if math.isnan(then):
        then = st.currencies[st.symbols[x.symbol].currency].first_rate
    return x.fee * (now - then)


@helper
def fees_at(st, x, adj, ok):  # type: ignore[no-untyped-def]
    """Add ``adj`` base money to the fees of execution ``x``'s firm, account and strategy
    scopes (and its symbol scope, with the firm's)."""
    if adj == 0.0:
        return
    d = (0.0, 0.0, 0.0, 0.0, adj, 0.0, 0.0)
    p_acc = x.account_pair
    for p in (st.positions[p_acc].firm_pair, p_acc, x.strategy_pair):
        if p >= 0:
            owner = st.positions[p].owner
            scope_delta(st.scopes, st.globals, owner, d, np.int64(0), np.int64(0), ok)
            if owner == FIRM:
                scope_delta(
                    st.scopes, st.globals, st.positions[p].symbol, d, np.int64(0), np.int64(0), ok
                )
