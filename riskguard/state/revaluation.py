"""Revaluation: price and exchange-rate moves, revaluation epochs, holder lists.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`). Each symbol keeps a
list of the position pairs that ever held it or worked orders in it (its *holders*, in
order of first use); a price move of the symbol revalues them, and an exchange-rate
move revalues the holders of every symbol priced in that currency.

With ``revalue_ms`` 0 every lot is valued at the symbol's latest reference price at
once. With ``revalue_ms`` > 0 holders are revalued once per epoch, and a fill's own
quantity is valued at its own price until then (never at a stale price it did not trade
at), so the lag can delay exposure but never invent P&L. A scope's session high of P&L
is raised only at consistent moments (no revaluation waiting), so it never records
P&L that did not exist (docs/limits.md, Revaluation).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from riskguard.state.codes import FIRM
from riskguard.state.jit import helper, inlined
from riskguard.state.judging import judge, matches
from riskguard.state.valuation import (
    fx_pair,
    holds_money,
    priced,
    rate_of,
    revalue_pair,
    scope_value,
    settle_peaks,
)


@helper
def link_holder(st, p):  # type: ignore[no-untyped-def]
    """Append pair ``p`` to its symbol's holder list the first time it holds or works."""
    rec = st.positions[p]
    if rec.linked != 0:
        return
    rec.linked = 1
    sym = st.symbols[rec.symbol]
    tail = sym.last_holder
    if tail < 0:
        sym.first_holder = p
    else:
        st.positions[tail].next_holder = p
    sym.last_holder = p
    sym.n_holders += 1


@helper
def rows_for_price_move(st, rules, y):  # type: ignore[no-untyped-def]
    """Decisions a revaluation of symbol ``y`` may write (per exposure row per holder:
    a transition, the alert edge and each warning level, raised or re-armed)."""
    return 6 * rules.exposure_rows.shape[0] * (st.symbols[y].n_holders + 1)


@helper
def rows_for_fx(st, rules, c):  # type: ignore[no-untyped-def]
    """Decisions an exchange-rate move of currency ``c`` may write."""
    need = 0
    y = st.currencies[c].first_symbol
    while y >= 0:
        need += rows_for_price_move(st, rules, y)
        y = st.symbols[y].next_in_currency
    return need


@helper
def consistent(st, rules):  # type: ignore[no-untyped-def]
    """Whether every lot is valued at its symbol's latest reference price right now."""
    return rules.revalue_ns <= 0 or st.globals[0].first_pending < 0


@helper
def queue(st, y):  # type: ignore[no-untyped-def]
    """Queue symbol ``y`` for revaluation at the start of the next epoch."""
    sym, g = st.symbols[y], st.globals[0]
    if sym.pending != 0:
        return
    sym.pending = 1
    sym.next_pending = -1
    tail = g.last_pending
    if tail < 0:
        g.first_pending = y
    else:
        st.symbols[tail].next_pending = y
    g.last_pending = y


@helper
def _move(st, y, ok):  # type: ignore[no-untyped-def]
    """Value every holder of symbol ``y`` at its latest reference price."""
    sym = st.symbols[y]
    sym.val_price = sym.ref_price
    u = sym.ref_price * sym.multiplier
    has_price = priced(st, y)
    rate = rate_of(st, y)
    p = sym.first_holder
    while p >= 0:
        revalue_pair(st, p, u, has_price, rate, ok)
        p = st.positions[p].next_holder


@helper
def _judge_holders(y, seq, e, now, st, rules, peaks, out, booked):  # type: ignore[no-untyped-def]
    """Exposure rows on each scope holding or working ``y``, once per revaluation ``seq``;
    ``booked`` (its currency's first rate): also each scope whose lot of ``y`` is flat but
    holds realised P&L or fees, booked just now."""
    pos = st.positions
    p = st.symbols[y].first_holder
    while p >= 0:
        if (booked and holds_money(pos[p])) or _holds(pos[p]):
            _judge_pair(p, y, seq, e, now, st, rules, peaks, out)
        p = pos[p].next_holder


@helper
def _holds(rec):  # type: ignore[no-untyped-def]
    """Whether a pair holds a position or works orders."""
    return rec.qty != 0.0 or rec.buy_work > 0.0 or rec.sell_work > 0.0


@inlined
def _judge_pair(p, y, seq, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Exposure rows on pair ``p``'s owner (and on its symbol ``y``, for the firm's pair),
    each scope once per revaluation ``seq``."""
    sc = st.scopes
    owner = st.positions[p].owner
    for s in (owner, y):
        if (s == y and owner != FIRM) or sc[s].seen_seq == seq:
            continue
        sc[s].seen_seq = seq
        for j in range(rules.exposure_rows.shape[0]):
            r = rules.exposure_rows[j]
            if rules.rows[r].level != sc[s].level or not matches(rules, sc, r, s):
                continue
            v = scope_value(rules.rows[r].metric, sc, s)
            judge(r, s, np.int64(-1), v, e, now, st, rules, peaks, out)


@helper
def _move_judged(y, seq, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """:func:`_move` then :func:`_judge_holders` of one symbol ``y``, in one walk of its
    holders: each pair is judged right after it is revalued. The same as two walks: a
    pair's owner scope (and its symbol's, for the firm's pair) is moved by that pair
    alone in ``y`` (one pair per owner and symbol), and judging moves no money."""
    sym = st.symbols[y]
    sym.val_price = sym.ref_price
    u = sym.ref_price * sym.multiplier
    has_price = priced(st, y)
    rate = rate_of(st, y)
    ok = consistent(st, rules)
    pos = st.positions
    p = sym.first_holder
    while p >= 0:
        revalue_pair(st, p, u, has_price, rate, ok)
        if _holds(pos[p]):
            _judge_pair(p, y, seq, e, now, st, rules, peaks, out)
        p = pos[p].next_holder


@helper
def price_move(y, px, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Symbol ``y`` has a new reference price: revalue its holders now, or at the next epoch.

    The first price move of a symbol in a revaluation epoch (``rules.revalue_ns`` of
    event time) is applied at once; later ones in the same epoch only update the
    reference price and queue the symbol for :func:`flush` at the start of the next
    epoch, so a symbol's holders are revalued at most once per epoch.
    """
    sym, g = st.symbols[y], st.globals[0]
    sym.ref_price = px
    if rules.revalue_ns > 0 and (sym.val_epoch >= g.epoch or sym.pending != 0):
        queue(st, y)
        return
    sym.val_epoch = g.epoch
    if rules.exposure_rows.shape[0] == 0:
        _move(st, y, consistent(st, rules))
        return
    g.flush_seq += 1
    _move_judged(y, g.flush_seq, e, now, st, rules, peaks, out)


@helper
def moves_reference(st, y, price):  # type: ignore[no-untyped-def]
    """Whether a trade at ``price`` moves symbol ``y``'s reference price (before any mark:
    the first trade, or one at another price than the reference)."""
    sym = st.symbols[y]
    return sym.price_source < 2 and (sym.price_source == 0 or sym.ref_price != price)


@helper
def trade_reference(y, xid, price, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A trade (execution ``xid``, or an opening position) at ``price``: before any mark it
    sets the symbol's fill-derived reference price, remembering the price before it."""
    sym = st.symbols[y]
    if sym.price_source >= 2:
        return
    sym.has_prev = 1 if sym.price_source == 1 else 0
    sym.prev_ref = sym.ref_price
    sym.ref_exec = xid
    if sym.price_source == 0 or sym.ref_price != price:
        sym.price_source = 1
        price_move(y, price, e, now, st, rules, peaks, out)


@helper
def amend_reference(y, xid, bust, price, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A correction (to ``price``) or bust of execution ``xid``. If its trade set the
    fill-derived reference price, the reference follows: to the corrected price, or for a
    bust back to the price before that trade (when there was one). A price that was
    corrected or busted away never values a position."""
    sym = st.symbols[y]
    if sym.price_source != 1 or sym.ref_exec != xid:
        return
    if bust:
        sym.ref_exec = -1
        if sym.has_prev == 0:
            return
        price = sym.prev_ref
        sym.has_prev = 0
    if sym.ref_price != price:
        price_move(y, price, e, now, st, rules, peaks, out)


@helper
def fx_move(c, rate, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Currency ``c`` has a new rate: convert the holders of its symbols, then judge them.

    The first rate of a currency books everything its positions and orders held unvalued
    (see :func:`riskguard.state.valuation.fx_pair`), and judges every scope that booked
    anything, a flat lot's realised P&L and fees included. A rate equal to the current
    one changes nothing.
    """
    cur = st.currencies[c]
    old = cur.rate if cur.known != 0 else np.nan
    if old == rate:
        return
    first = cur.known == 0
    if first:
        cur.first_rate = rate
    cur.rate = rate
    cur.known = 1
    ok = consistent(st, rules)
    y = cur.first_symbol
    while y >= 0:
        p = st.symbols[y].first_holder
        while p >= 0:
            fx_pair(st, p, old, rate, ok)
            p = st.positions[p].next_holder
        y = st.symbols[y].next_in_currency
    if rules.exposure_rows.shape[0] == 0:
        return
    g = st.globals[0]
    g.flush_seq += 1
    y = cur.first_symbol
    while y >= 0:
        _judge_holders(y, g.flush_seq, e, now, st, rules, peaks, out, first)
        y = st.symbols[y].next_in_currency


@inlined
def flush_due(now, st, rules):  # type: ignore[no-untyped-def]
    """Whether :func:`flush` at ``now`` has anything to do: a new revaluation epoch, or
    (``revalue_ms`` 0) moves left queued. The kernel asks before each event, so that the
    common case (nothing) costs no call."""
    rw = rules.revalue_ns
    g = st.globals[0]
    if rw > 0:
        return now // rw > g.epoch
    return g.first_pending >= 0


@helper
def flush(now, spare, e, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Enter the revaluation epoch of ``now``: apply every queued price, then judge.
    With ``revalue_ms`` 0 nothing is queued, but moves queued under a longer epoch
    before a limits reload (or a restore under other limits) are applied at once.

    All queued symbols are moved first, the session highs that waited for a consistent
    valuation are raised, and then each holding scope is judged once, so a scope holding
    several of them is never judged half-revalued. Returns False, having changed nothing
    and set ``out.counts.need``, when the decisions (keeping ``spare`` for the caller)
    could overflow.
    """
    rw = rules.revalue_ns
    g, sy = st.globals[0], st.symbols
    if rw > 0:
        if now // rw <= g.epoch:
            return True
        ep = now // rw
    elif g.first_pending < 0:
        return True
    else:  # every move at once now: moves a longer epoch left waiting (before a reload)
        ep = g.epoch
    head = g.first_pending
    if head >= 0:
        need = spare
        y = head
        while y >= 0:
            need += rows_for_price_move(st, rules, y)
            y = sy[y].next_pending
        counts = out.counts[0]
        if counts.n + need > out.decisions.shape[0]:
            counts.need = need
            return False
        y = head
        while y >= 0:
            sy[y].val_epoch = ep
            _move(st, y, np.bool_(False))
            y = sy[y].next_pending
        settle_peaks(st)
        if rules.exposure_rows.shape[0] > 0:
            g.flush_seq += 1
            y = head
            while y >= 0:
                _judge_holders(y, g.flush_seq, e, now, st, rules, peaks, out, False)
                y = sy[y].next_pending
        y = head
        while y >= 0:
            nxt = sy[y].next_pending
            sy[y].pending = 0
            sy[y].next_pending = -1
            y = nxt
        g.first_pending = -1
        g.last_pending = -1
    else:
        settle_peaks(st)
    g.epoch = ep
    return True


@njit(cache=True, _nrt=False)
def judge_scopes(rows, n_scopes, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Judge ``rows`` (int64 row ids of metrics a scope holds: exposure, P&L, open orders)
    on every one of the first ``n_scopes`` scopes of their level they match, at the
    clock ``now``, with no event (a limits reload: a rule added or changed is judged on
    the book as it stands, not only once an event moves its metric). The caller sizes
    ``out`` for five decisions per row and scope."""
    sc = st.scopes
    for j in range(rows.shape[0]):
        r = rows[j]
        for s in range(n_scopes):
            if sc[s].level != rules.rows[r].level or not matches(rules, sc, r, s):
                continue
            v = scope_value(rules.rows[r].metric, sc, s)
            judge(r, np.int64(s), np.int64(-1), v, np.int64(-1), now, st, rules, peaks, out)
