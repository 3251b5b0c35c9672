"""Orders and executions as they really arrive: redelivered, out of order, corrected.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`). Each returns whether
the event is to be applied (False: a redelivery or a bad event, noted and skipped, so
no rate, count or rule moves). The rules (``docs/events.md``, "Order lifecycle" and
"Redelivery"):

- A ``new`` for a working order with the same fields (account, strategy, symbol, side,
  qty, price, parent) is a redelivery; with other fields it is bad (order id reused).
  For a closed order still remembered, the same fields are a redelivery and other fields
  a new order reusing the id.
- A fill, cancel, reject or replace may arrive before its order's ``new`` (the order is
  *pending*). The late ``new`` does not reopen an order already filled, cancelled or
  rejected; a partly filled one opens with only its remainder.
- A cancel or reject applied once is a redelivery the second time. A replace older than
  the latest applied replace of its order, or identical to it, is a redelivery.
- Fills always move positions (fills are facts). A correction replaces its execution's
  qty, price and fee; a bust reverses it (positions, fees, parent fills, the order's
  filled qty and the fill windows while the window still holds it).
- A ``replace`` naming another account, strategy, symbol or side than its order (working,
  or closed and remembered) is bad (order id reused): a replace never changes those.
- A confirmed replace above what its order filled leaves it working (again, when fills
  that overtook the replace had completed it); a correction that brings the fills to the
  order's quantity closes it.
- A working order's remaining quantity counts in its pairs' working buys or sells (and
  open notional) from when it opens until it fills, is cancelled or rejected; a replace
  moves it (docs/limits.md, open_order_notional and potential_gross_notional).
- An ``open`` position is booked like a trade of the whole quantity at its price (its
  average cost, default the reference price) on the key's pairs; a later ``open`` for
  the same key replaces it. A ``broker`` position only records the broker's view.
- An ``instrument`` (:func:`riskguard.state.refdata.on_instrument`) sets a symbol's
  contract size and currency before it trades: once
  the symbol is held or worked a change is refused (a bad event; unchanged values are
  accepted), so every booked amount stays in one unit.
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.state.codes import (
    E_BUST,
    F_CANCELLED,
    F_NEW,
    F_REJECTED,
    F_REPLACED,
    N_BUSTED,
    N_DUPLICATE,
    N_NOPRICE,
    N_REUSED,
    O_CLOSED,
    O_FREE,
    O_OPEN,
    O_PENDING,
    P_BROKER,
    X_APPLIED,
    X_BUSTED,
)
from riskguard.state.counters import close_order, fill_money, open_order, refill, retire
from riskguard.state.jit import helper
from riskguard.state.judging import note
from riskguard.state.quantities import near, snap
from riskguard.state.revaluation import (
    amend_reference,
    consistent,
    link_holder,
    moves_reference,
    queue,
    trade_reference,
)
from riskguard.state.valuation import (
    fee_rate_gap,
    fees_at,
    rate_of,
    settle_peaks,
    trade_pair,
    work_pair,
)
from riskguard.vocabulary import T_CANCEL


@helper
def _same_price(a, b):  # type: ignore[no-untyped-def]
    return a == b or (math.isnan(a) and math.isnan(b))


@helper
def _same_new(od, ev):  # type: ignore[no-untyped-def]
    return (
        od.account == ev.account
        and od.strategy == ev.strategy
        and od.symbol == ev.symbol
        and od.side == ev.side
        and od.parent == ev.parent
        and od.new_qty == ev.qty
        and _same_price(od.new_price, ev.price)
    )


@helper
def _bind(od, ev, st):  # type: ignore[no-untyped-def]
    """Start tracking order ``od`` for event ``ev`` (a fresh record, a new serial)."""
    g = st.globals[0]
    g.order_serial += 1
    od.serial = g.order_serial
    od.flags = 0
    od.account = ev.account
    od.strategy = ev.strategy
    od.symbol = ev.symbol
    od.parent = -1
    od.side = ev.side
    od.qty = 0.0
    od.cum_qty = 0.0
    od.price = math.nan
    od.replace_ns = -1
    od.unattributed = 0.0
    od.venue = ev.venue
    od.account_pair = ev.account_pair
    od.strategy_pair = ev.strategy_pair
    od.working = 0.0
    od.work_px = math.nan
    od.early_cxl = 0
    od.early_rej = 0
    od.early_exec = -1
    od.early_rpl = 0


@helper
def _work(st, od, p, dq, px, ok):  # type: ignore[no-untyped-def]
    """Count ``dq`` more working quantity of order ``od`` at limit ``px`` (NaN: market)."""
    if p < 0:
        return
    market = math.isnan(px)
    money = 0.0 if market else dq * abs(px) * st.symbols[st.positions[p].symbol].multiplier
    work_pair(st, p, od.side, dq, market, money, ok)


@helper
def rework(o, st, rules):  # type: ignore[no-untyped-def]
    """Bring order ``o``'s counted working quantity in line with its state: its remainder
    (qty - filled) at its limit while it works, nothing once it stops working."""
    rework_at(o, st, consistent(st, rules))


@helper
def rework_at(o, st, ok):  # type: ignore[no-untyped-def]
    """:func:`rework`, raising the session highs now only if ``ok``."""
    od = st.orders[o]
    target = max(0.0, snap(od.qty - od.cum_qty)) if od.status == O_OPEN else 0.0
    if target == od.working and _same_price(od.price, od.work_px):
        return
    if od.account_pair < 0:
        return
    firm = st.positions[od.account_pair].firm_pair
    if od.working > 0.0:
        for p in (firm, od.account_pair, od.strategy_pair):
            _work(st, od, p, -od.working, od.work_px, ok)
    if target > 0.0:
        for p in (firm, od.account_pair, od.strategy_pair):
            if p >= 0:
                link_holder(st, p)
                _work(st, od, p, target, od.price, ok)
    od.working = target
    od.work_px = od.price


@helper
def _credit(st, parent, qty):  # type: ignore[no-untyped-def]
    if parent >= 0:
        pa = st.parents[parent]
        pa.filled = snap(pa.filled + qty)
        if near(pa.filled, pa.qty):
            pa.filled = pa.qty


@helper
def _filled(od):  # type: ignore[no-untyped-def]
    """Whether ``od``'s fills reach its quantity (``near`` it counts, then exactly)."""
    if od.cum_qty >= od.qty or near(od.cum_qty, od.qty):
        od.cum_qty = max(od.cum_qty, od.qty)
        return True
    return False


@helper
def on_new(ev, e, now, st, rules, out):  # type: ignore[no-untyped-def]
    """A ``new``; returns whether it is applied (counted, rules judged)."""
    od = st.orders[ev.order]
    status = od.status
    if status == O_OPEN or (status == O_CLOSED and od.flags & F_NEW):
        if _same_new(od, ev):
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))
            return False
        if status == O_OPEN:
            note(out, e, np.int64(N_REUSED), np.int64(0))
            return False
        status = O_FREE  # a closed order's id reused for a new order
    if status == O_FREE:
        _bind(od, ev, st)
    od.flags |= F_NEW
    od.side = ev.side  # a cancel or reject that came first did not say
    od.parent = ev.parent
    od.venue = ev.venue
    od.account_pair = ev.account_pair
    od.strategy_pair = ev.strategy_pair
    od.new_qty = ev.qty
    od.new_price = ev.price
    if od.flags & F_REPLACED == 0:
        od.qty = ev.qty
        od.price = ev.price
    if od.unattributed > 0.0 and ev.parent >= 0:  # fills that came before their new
        _credit(st, ev.parent, od.unattributed)
        od.unattributed = 0.0
    if od.flags & (F_CANCELLED | F_REJECTED):
        if status != O_CLOSED:
            close_order(ev.order, now, st, out)
    elif _filled(od):
        close_order(ev.order, now, st, out)
    else:
        open_order(ev.order, st)
    rework(ev.order, st, rules)
    return True


@helper
def on_replace(ev, e, now, st, rules, out):  # type: ignore[no-untyped-def]
    """A ``replace`` (``qty`` is the new total, fills included); returns whether applied."""
    od = st.orders[ev.order]
    status = od.status
    if status != O_FREE and status != O_PENDING and _other_order(od, ev):  # noqa: PLR1714
        note(out, e, np.int64(N_REUSED), np.int64(1))  # FIX never changes these on a replace
        return False
    if status != O_FREE and od.flags & F_REPLACED:
        stale = now < od.replace_ns
        same = now == od.replace_ns and od.replace_qty == ev.qty
        if stale or (same and _same_price(od.replace_price, ev.price)):
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))
            return False
    if status == O_FREE:
        _bind(od, ev, st)
        retire(ev.order, np.int64(O_PENDING), now, st, out)
    od.flags |= F_REPLACED
    od.replace_ns = now
    od.replace_qty = ev.qty
    od.replace_price = ev.price
    od.qty = ev.qty
    od.price = ev.price
    if od.status == O_OPEN and _filled(od):
        close_order(ev.order, now, st, out)
    elif _raced_fills(od) and not _filled(od):
        open_order(ev.order, st)  # the venue confirmed it working above what filled
    rework(ev.order, st, rules)
    return True


@helper
def _raced_fills(od):  # type: ignore[no-untyped-def]
    """Whether ``od`` was closed only by fills (its ``new`` came, no cancel or reject):
    a confirmed replace above its fills that arrives after them (a drop copy ahead of the
    order feed) says the order works at the venue again, with the rest of the new total."""
    ended = od.flags & (F_CANCELLED | F_REJECTED) != 0
    return od.status == O_CLOSED and od.flags & F_NEW != 0 and not ended


@helper
def _other_order(od, ev):  # type: ignore[no-untyped-def]
    """Whether replace ``ev`` names another account, strategy, symbol or side than order
    ``od`` (a side not known yet, from a cancel or reject that came first, is any)."""
    keys = od.account != ev.account or od.strategy != ev.strategy or od.symbol != ev.symbol
    return keys or (od.side != 0 and od.side != ev.side)  # noqa: PLR1714 - numba


@helper
def on_cancel_or_reject(ev, e, now, st, rules, out):  # type: ignore[no-untyped-def]
    """A confirmed ``cancel`` or a ``reject``; returns whether applied."""
    od = st.orders[ev.order]
    flag = F_CANCELLED if ev.typ == T_CANCEL else F_REJECTED
    if od.status != O_FREE and od.flags & flag:
        note(out, e, np.int64(N_DUPLICATE), np.int64(0))
        return False
    if od.status == O_FREE:
        _bind(od, ev, st)
    od.flags |= flag
    if od.status != O_CLOSED:
        close_order(ev.order, now, st, out)
    rework(ev.order, st, rules)
    return True


@helper
def _book(st, rules, x, d, price, fee, own, hold):  # type: ignore[no-untyped-def]
    """Trade signed qty ``d`` at ``price`` on an execution's firm, account and strategy
    pairs (an opening position without a strategy has no strategy pair); ``fee`` is in the
    symbol's currency.

    With revaluation epochs, the lot is valued at its own price until the next epoch
    whenever the symbol's valuation price differs (never at a price it did not trade at).
    ``own``: the trade moves the reference price to its price right after (a trade before
    any mark): it is valued at its own price, and the session highs wait for that move,
    so no moment in between (the book before the fill valued at the fill's price, or the
    fill valued at the old price) is ever taken for P&L or exposure the book had.
    ``hold``: one step of a booking in several (a reversal, then a rebooking): the session
    highs wait for the caller to settle them once the event is booked whole.
    """
    y = x.symbol
    w = st.symbols[y].val_price
    if own:
        w = price
    elif rules.revalue_ns > 0 and w != price:
        w = price
        queue(st, y)
    ok = consistent(st, rules) and not own and not hold
    m = st.symbols[y].multiplier
    p_acc = x.account_pair
    p_strat = x.strategy_pair
    p_firm = st.positions[p_acc].firm_pair
    for p in (p_firm, p_acc, p_strat):
        if p >= 0:
            link_holder(st, p)
            trade_pair(st, p, d, price * m, w * m, fee, ok)


@helper
def on_trade(ev, venue, now, at, st, rules, out):  # type: ignore[no-untyped-def]
    """A new execution (to ``venue``, -1 none): order and parent fills, then positions and
    the order's working quantity; returns the parent credited."""
    od = st.orders[ev.order]
    if od.status == O_FREE:
        _bind(od, ev, st)
        retire(ev.order, np.int64(O_PENDING), now, st, out)
    parent = ev.parent
    if parent < 0 and od.flags & F_NEW:
        parent = od.parent
    od.cum_qty = snap(od.cum_qty + ev.qty)
    if parent >= 0:
        _credit(st, parent, ev.qty)
    else:
        od.unattributed = snap(od.unattributed + ev.qty)
    if od.status == O_OPEN and _filled(od):
        close_order(ev.order, now, st, out)
    x = st.execs[ev.exec]
    x.status = X_APPLIED
    x.order = ev.order
    x.serial = od.serial
    x.parent = parent
    x.account = ev.account
    x.strategy = ev.strategy
    x.symbol = ev.symbol
    x.account_pair = ev.account_pair
    x.strategy_pair = ev.strategy_pair
    x.venue = venue
    x.side = ev.side
    x.qty = ev.qty
    x.price = ev.price
    x.fee = 0.0 if math.isnan(ev.fee) else ev.fee
    x.fee_rate = rate_of(st, ev.symbol)
    x.count_ns = at
    x.counted = fill_money(st, ev.symbol, ev.qty, ev.price)
    x.next_early = -1
    if od.flags & F_NEW == 0 and venue < 0:  # its venue is its order's: known from the new
        x.next_early = od.early_exec
        od.early_exec = ev.exec
    # the order's working quantity first: with the book as it was, never with the fill
    # booked and its price still to move the symbol (a moment no scope had)
    rework(ev.order, st, rules)
    own = moves_reference(st, ev.symbol, ev.price)
    _book(st, rules, x, ev.qty * ev.side, ev.price, x.fee, own, own)
    return parent


@helper
def _unfill(st, x, qty):  # type: ignore[no-untyped-def]
    """Take ``qty`` of execution ``x`` back off its parent and (if still the same) order."""
    if x.parent >= 0:
        st.parents[x.parent].filled = snap(st.parents[x.parent].filled - qty)
    od = st.orders[x.order]
    if od.serial == x.serial and od.status != O_FREE:
        od.cum_qty = max(0.0, snap(od.cum_qty - qty))
        if x.parent < 0:
            od.unattributed = max(0.0, snap(od.unattributed - qty))


@helper
def on_amend(ev, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A correction or bust of execution ``ev.exec``; returns the parent (-2: not applied).

    The execution is reversed and a correction booked again with its new values, its
    order's working quantity follows; then the reference price follows it if its trade set it
    (:func:`riskguard.state.revaluation.amend_reference`): no scope is judged, nor its
    session high raised, between the steps (the book without the execution, the fee given
    back, valued at a price the correction or bust is about to move).
    """
    x = st.execs[ev.exec]
    if x.status != X_APPLIED:
        note(out, e, np.int64(N_BUSTED), np.int64(0))
        return -2
    if x.parent < 0 and x.order >= 0:  # a trade before its new: credited by the new
        od = st.orders[x.order]
        if od.serial == x.serial and od.status != O_FREE and od.flags & F_NEW:
            x.parent = od.parent
    y = x.symbol
    sym = st.symbols[y]
    bust = ev.subtype == E_BUST
    moves = not bust and sym.price_source == 1 and sym.ref_exec == ev.exec
    moves = moves and sym.ref_price != ev.price
    # the fee goes back at the rate it was booked at: a rise of fees first, a fall after
    gap = fee_rate_gap(st, x)
    if gap > 0.0:
        fees_at(st, x, gap, False)
    _book(st, rules, x, -x.qty * x.side, x.price, -x.fee, False, True)
    if gap < 0.0:
        fees_at(st, x, gap, False)
    refill(x, st, -1.0)
    _unfill(st, x, x.qty)
    if bust:
        x.status = X_BUSTED
    else:  # a correction: booked again with its new values
        x.qty = ev.qty
        x.price = ev.price
        if not math.isnan(ev.fee):
            x.fee = ev.fee
        x.fee_rate = rate_of(st, y)
        x.counted = fill_money(st, y, x.qty, x.price)
        _book(st, rules, x, x.qty * x.side, x.price, x.fee, moves, True)
        refill(x, st, 1.0)
        if x.parent >= 0:
            _credit(st, x.parent, x.qty)
        od = st.orders[x.order]
        if od.serial == x.serial and od.status != O_FREE:
            od.cum_qty = snap(od.cum_qty + x.qty)
            if x.parent < 0:
                od.unattributed = snap(od.unattributed + x.qty)
            if od.status == O_OPEN and _filled(od):  # corrected up to its quantity: done
                close_order(x.order, now, st, out)
    if x.order >= 0 and st.orders[x.order].serial == x.serial:  # still that order
        rework_at(x.order, st, False)
    amend_reference(y, ev.exec, bust, x.price, e, now, st, rules, peaks, out)
    if consistent(st, rules):
        settle_peaks(st)
    return x.parent


@helper
def on_position(ev, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A ``position`` event (``ev.exec``: the opening execution of its key); returns
    whether it is applied.

    ``broker``: records the broker's position of the key's pair (its strategy's if it
    names one, else its account's). ``open``: books the opening position as a trade of the
    whole quantity at its price (default: the reference price; none yet is a bad event),
    replacing the key's earlier opening position if any; the same quantity at the same
    stated price again is a redelivery. Without a mark, the opening price serves as the
    reference price, like a fill's.
    """
    if ev.subtype == P_BROKER:
        p = ev.strategy_pair if ev.strategy_pair >= 0 else ev.account_pair
        pos = st.positions[p]
        pos.broker = ev.qty
        pos.has_broker = 1
        return True
    y = ev.symbol
    sym = st.symbols[y]
    price = ev.price
    if math.isnan(price):
        if sym.price_source == 0:
            note(out, e, np.int64(N_NOPRICE), np.int64(0))
            return False
        price = sym.ref_price
    x = st.execs[ev.exec]
    if x.status == X_APPLIED:
        if x.qty * x.side == ev.qty and _same_price(x.stated, ev.price):
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))
            return False
        _book(st, rules, x, -x.qty * x.side, x.price, 0.0, False, True)
    x.status = X_APPLIED
    x.order = -1
    x.parent = -1
    x.account = ev.account
    x.strategy = ev.strategy
    x.symbol = y
    x.account_pair = ev.account_pair
    x.strategy_pair = ev.strategy_pair
    x.side = 1 if ev.qty >= 0.0 else -1
    x.qty = abs(ev.qty)
    x.price = price
    x.fee = 0.0
    x.fee_rate = np.nan
    x.count_ns = now
    x.counted = 0.0
    x.stated = ev.price
    # booked whole first (the earlier opening reversed, this one booked), then its price
    # moves the symbol (before any mark): nothing is judged or raised in between
    _book(st, rules, x, ev.qty, price, 0.0, moves_reference(st, y, price), True)
    trade_reference(y, ev.exec, price, e, now, st, rules, peaks, out)
    if consistent(st, rules):
        settle_peaks(st)
    return True
