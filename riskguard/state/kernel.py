"""numba kernels: apply a columnar batch of events to the state and judge the rules.

Semantics are per event, in batch order, so the result never depends on how a stream
is cut into batches (the property tests check this against the plain-Python model in
:mod:`riskguard.state.reference`). For each event the kernel:

0. enters the event's revaluation epoch, applying price moves queued in the last one;
1. checks the feed rows (silence: the gap since the last event, or since the last
   heartbeat of a named source; consumer lag in live runs), then advances the clock;
2. updates windowed counters, orders, parents, positions and exposures;
3. judges the rows whose metric the event type can move, on the event's four scopes
   (firm, account, strategy, symbol); a mark, or a fill that changes a symbol's
   fill-derived reference price, also revalues and re-judges every holder of the
   symbol, at most once per revaluation epoch (``revalue_ms`` of event time);
4. escalates the latched state of a breaching scope (never lowers it) and writes one
   output row per transition or alert edge.

Output space is checked before each event; when it might run out the kernel returns
early (setting ``out.need``) and the caller drains, grows if needed, and resumes, so
nothing is dropped.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np
from numba import njit

from riskguard import vocabulary
from riskguard.limits import vocabulary as metric_vocabulary
from riskguard.limits.vocabulary import (
    M_CANCEL_RATIO,
    M_CONSUMER_LAG,
    M_DUPLICATE_ORDERS,
    M_FILL_NOTIONAL_RATE,
    M_MESSAGE_RATE,
    M_ORDER_NOTIONAL,
    M_ORDER_QTY,
    M_ORDER_RATE,
    M_PARENT_OVERFILL,
    M_POSITION_QTY,
    M_PRICE_DEVIATION,
    M_REJECT_RATE,
)
from riskguard.state import bundles, counters, primitives, tables
from riskguard.state.bundles import FIRM
from riskguard.state.counters import C_DUP, close_order, count, count_dups
from riskguard.state.primitives import (
    at_level,
    fill_pair,
    flush,
    judge,
    link_holder,
    matches,
    pair_delta,
    price_move,
    rows_for_price_move,
    scope_value,
)
from riskguard.vocabulary import (
    L_ACCOUNT,
    L_STRATEGY,
    T_CANCEL,
    T_FILL,
    T_HEARTBEAT,
    T_MARK,
    T_NEW,
    T_PARENT,
    T_REJECT,
    T_REPLACE,
)


@njit(cache=True, _nrt=False)
def rows_for_event(ev, st, rules):  # type: ignore[no-untyped-def]
    """Decisions event ``ev`` may write at most (its own rows, plus a revaluation)."""
    need = 6 * rules.rows.shape[0] + 2
    if ev.typ == T_MARK or ev.typ == T_FILL:
        need += rows_for_price_move(st, rules, ev.symbol)
    return need


@njit(cache=True, _nrt=False)
def _feed(e, now, wall, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Feed rows before an event (``e`` >= 0) or on a clock tick (``e`` -1).

    Silence is measured from the last event (or the named source's last heartbeat; a
    source never heard from counts from the start). Consumer lag (wall time minus event
    time) is measured on events of live runs only (``wall`` -1 in replay).
    """
    g = st.globals[0]
    for j in range(rules.feed_rows.shape[0]):
        r = rules.feed_rows[j]
        row = rules.rows[r]
        if row.metric == M_CONSUMER_LAG:
            if e >= 0 and wall >= 0:
                judge(r, FIRM, (wall - now) / 1e6, e, now, st, rules, peaks, out)
            continue
        last = st.sources[row.source].last_heard_ns if row.source >= 0 else g.last_event_ns
        if last < 0:
            last = g.start_ns
        judge(r, FIRM, (now - last) / 1e6, e, now, st, rules, peaks, out)


@njit(cache=True, _nrt=False)
def _orders(ev, st, out):  # type: ignore[no-untyped-def]
    """Order lifecycle and parents for event ``ev``; returns the fill's parent id (or -1)."""
    t = ev.typ
    o = ev.order
    parent = ev.parent
    sc = st.scopes
    if t == T_PARENT:
        st.parents[parent].qty = ev.qty
        st.parents[parent].declared = 1
    elif t == T_NEW:
        order = st.orders[o]
        if order.open != 0:
            close_order(o, st, out)
        order.open = 1
        order.account = ev.account
        order.strategy = ev.strategy
        order.symbol = ev.symbol
        order.parent = parent
        order.side = ev.side
        order.qty = ev.qty
        order.cum_qty = 0.0
        order.price = ev.price
        sc[FIRM].open_orders += 1
        sc[ev.account].open_orders += 1
        sc[ev.strategy].open_orders += 1
        sc[ev.symbol].open_orders += 1
    elif t == T_REPLACE:
        if o >= 0 and st.orders[o].open != 0:
            order = st.orders[o]
            order.qty = ev.qty
            order.price = ev.price
            if order.cum_qty >= ev.qty:
                close_order(o, st, out)
    elif t == T_CANCEL or t == T_REJECT:
        if o >= 0 and st.orders[o].open != 0:
            close_order(o, st, out)
    elif t == T_FILL:
        if o >= 0 and st.orders[o].open != 0:
            order = st.orders[o]
            if parent < 0:
                parent = order.parent
            order.cum_qty += ev.qty
            if order.cum_qty >= order.qty:
                close_order(o, st, out)
        if parent >= 0:
            st.parents[parent].filled += ev.qty
    return parent


@njit(cache=True, _nrt=False)
def _fill(ev, e, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A fill: the symbol's fill-derived price, then the firm's, account's, strategy's pairs."""
    y = ev.symbol
    x = ev.price
    sym = st.symbols[y]
    if sym.price_source < 2 and (sym.price_source == 0 or sym.ref_price != x):
        sym.price_source = 1
        price_move(y, x, e, ev.ts, st, rules, peaks, out)
    m = sym.val_price
    d = ev.qty * ev.side
    p_strat = ev.pair
    pos = st.positions
    for p in (pos[p_strat].firm_pair, pos[p_strat].account_pair, p_strat):
        link_holder(st, p)
        q0, q1, dq, dc, dr = fill_pair(pos, p, d, x)
        pair_delta(st, p, dq * m, (q1 - q0) * m, dr, dc)


@njit(cache=True, _nrt=False)
def _value(r, s, parent, ev, st, rules):  # type: ignore[no-untyped-def]
    """Value of row ``r``'s metric for event ``ev`` at scope ``s``; NaN when it does not apply."""
    row = rules.rows[r]
    metric = row.metric
    c = st.counters
    px = ev.price
    sym = st.symbols[ev.symbol]
    if (
        metric == M_ORDER_RATE
        or metric == M_MESSAGE_RATE
        or metric == M_REJECT_RATE
        or metric == M_FILL_NOTIONAL_RATE
        or metric == M_DUPLICATE_ORDERS
    ):
        return c.total[row.counter, st.scopes[s].slot]
    if metric == M_CANCEL_RATIO:
        slot = st.scopes[s].slot
        news = c.total[row.counter2, slot]
        return c.total[row.counter, slot] / news if news >= row.min_orders else np.nan
    if metric == M_ORDER_QTY:
        return ev.qty
    if metric == M_ORDER_NOTIONAL:
        if not math.isnan(px):
            return ev.qty * px
        return ev.qty * sym.ref_price if sym.price_source > 0 else np.nan
    if metric == M_PRICE_DEVIATION:
        if not math.isnan(px) and sym.price_source > 0:
            return abs(px - sym.ref_price) / sym.ref_price
        return np.nan
    if metric == M_POSITION_QTY:  # evaluated on fills only
        pos = st.positions
        p = ev.pair
        if row.level == L_ACCOUNT:
            return abs(pos[pos[p].account_pair].qty)
        if row.level == L_STRATEGY:
            return abs(pos[p].qty)
        return abs(pos[pos[p].firm_pair].qty)
    if metric == M_PARENT_OVERFILL:
        if parent >= 0 and st.parents[parent].declared != 0:
            return st.parents[parent].filled / st.parents[parent].qty
        return np.nan
    return scope_value(metric, st.scopes, s)


@njit(cache=True, _nrt=False)
def apply_batch(start, wall, batch, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Apply events ``start..`` of ``batch``; returns the index of the next event to apply.

    ``batch`` is an EVENT record array; ``wall`` the wall clock in ns (live runs, for
    consumer lag) or -1. A return value less than the batch length means the output
    might not fit the next event (``out.counts[0].need`` says how many decisions it
    needs): drain it and call again from there.
    """
    n = batch.shape[0]
    cap = out.decisions.shape[0]
    g = st.globals[0]
    counts = out.counts[0]
    has_dups = False
    for k in range(st.counters.defs.shape[0]):
        has_dups = has_dups or st.counters.defs[k].kind == C_DUP
    for e in range(start, n):
        ev = batch[e]
        t = ev.typ
        now = ev.ts
        need = rows_for_event(ev, st, rules)
        if counts.n + need > cap:
            counts.need = need
            return e
        if not flush(now, need, e, st, rules, peaks, out):
            return e
        if g.start_ns < 0:
            g.start_ns = now
        _feed(e, now, wall, st, rules, peaks, out)
        g.last_event_ns = max(g.last_event_ns, now)
        if t == T_HEARTBEAT:
            src = st.sources[ev.source]
            src.last_heard_ns = max(src.last_heard_ns, now)
            continue
        if t == T_MARK:
            sym = st.symbols[ev.symbol]
            if now >= sym.mark_ns:
                sym.mark_ns = now
                sym.price_source = 2
                price_move(ev.symbol, ev.price, e, now, st, rules, peaks, out)
            continue
        if t != T_PARENT:
            count(batch, e, st)
            if t == T_NEW and has_dups:
                count_dups(batch, e, st)
        parent = _orders(ev, st, out)
        if t == T_FILL:
            _fill(ev, e, st, rules, peaks, out)
        for j in range(rules.by_type.shape[1]):
            r = rules.by_type[t, j]
            if r < 0:
                break
            s = at_level(rules.rows[r].level, ev.account, ev.strategy, ev.symbol)
            if matches(rules, st.scopes, r, s):
                v = _value(r, s, parent, ev, st, rules)
                judge(r, s, v, e, now, st, rules, peaks, out)
    return n


@njit(cache=True, _nrt=False)
def tick(now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Advance to the clock ``now`` without an event: queued revaluations, then feed silence.

    Returns False when the output was too small for the queued revaluations
    (``out.counts[0].need`` set): drain, grow and call again.
    """
    if not flush(now, rules.feed_rows.shape[0], -1, st, rules, peaks, out):
        return False
    g = st.globals[0]
    if g.start_ns < 0:
        g.start_ns = now
    _feed(-1, now, -1, st, rules, peaks, out)
    return True


def _pin_cache_to_sources() -> str:
    """Make the on-disk numba cache depend on every file the kernels are built from.

    numba keys its cache on the jitted function's own file stamp only: an edit to a
    helper in ``primitives.py``, a record field in ``bundles.py`` or a metric code would
    otherwise leave a stale compiled kernel in use (we hit exactly that). Worse, numba
    unpickles a function's index file before checking its stamp, so an index written by
    another build that names a class this build no longer has crashes the process. Each
    jitted function's index and data files are therefore named after a digest of all
    those sources: another build's files are never even opened.
    """
    digest = hashlib.sha256()
    modules = (bundles, primitives, counters, tables, vocabulary, metric_vocabulary)
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    stamp = digest.hexdigest()[:16]
    for module in (primitives, counters, tables, sys.modules[__name__]):
        for dispatcher in vars(module).values():
            cache = getattr(dispatcher, "_cache", None)
            files = getattr(cache, "_cache_file", None)
            if cache is None or not hasattr(cache, "_impl"):
                continue
            if files is None or not hasattr(files, "_index_name"):
                cache.disable()  # a numba without these internals: never trust its cache
                continue
            base = f"{cache._impl.filename_base}-{stamp}"
            files._index_name = f"{base}.nbi"
            files._index_path = os.path.join(files._cache_path, files._index_name)
            files._data_name_pattern = f"{base}.{{number:d}}.nbc"
    return stamp


SOURCE_STAMP = _pin_cache_to_sources()
