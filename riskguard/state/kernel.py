"""numba kernels: apply a columnar batch of events to the state and judge the rules.

Semantics are per event, in batch order, so the result never depends on how a stream
is cut into batches (the property tests check this against the plain-Python model in
:mod:`riskguard.state.reference`). For each event the kernel:

0. enters the event's revaluation epoch, applying price moves queued in the last one;
1. checks the feed rows (silence: the gap since the last event, or since the last
   heartbeat of a named source; consumer lag in live runs), then advances the clock;
2. updates windowed counters, orders, parents, positions, working quantities and
   exposures, or applies reference data (contract size, currency, exchange rates);
3. judges the rows whose metric the event type can move, on the event's own scopes
   (firm, account, strategy, symbol, and its venue's), then the restricted list; a
   mark, or a fill that changes a symbol's fill-derived reference price, also revalues
   and re-judges every holder of the symbol, at most once per revaluation epoch
   (``revalue_ms`` of event time), and an exchange-rate move every holder of a symbol
   priced in that currency;
4. escalates the latched state of a breaching scope (never lowers it) and writes one
   output row per transition or alert edge.

Output space is checked before each event; when it might run out the kernel returns
early (setting ``out.need``) and the caller drains, grows if needed, and resumes, so
nothing is dropped.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from riskguard import vocabulary
from riskguard.limits import vocabulary as metric_vocabulary
from riskguard.limits.vocabulary import (
    M_CONSUMER_LAG,
)
from riskguard.state import (
    bundles,
    codes,
    counters,
    jit,
    judging,
    lifecycle,
    quantities,
    rearming,
    refdata,
    revaluation,
    tables,
    valuation,
    values,
)
from riskguard.state.cache import pin_cache_to_sources
from riskguard.state.codes import (
    E_TRADE,
    FIRM,
    JUMP_CONFIRM,
    MARK_RING,
    N_AHEAD,
    N_DUPLICATE,
    N_JUMP,
    N_KEPT,
    N_LATE,
    N_SKEWED,
    O_FREE,
    OWN_TIME_NS,
)
from riskguard.state.counters import (
    C_DUP,
    count,
    count_dups,
    count_early,
    forget_ahead,
    note_early,
    recount_ahead,
    remember_ahead,
    settle_ahead_dups,
)
from riskguard.state.jit import helper
from riskguard.state.judging import KEEP, at_level, judge, judge_edges, matches, note
from riskguard.state.lifecycle import (
    on_amend,
    on_cancel_or_reject,
    on_new,
    on_position,
    on_replace,
    on_trade,
)
from riskguard.state.refdata import (
    FRESH,
    instrument_check,
    on_instrument,
    rate_check,
    remember_ahead_refdata,
    remember_instrument,
    remember_rate,
    restamp_ahead,
)
from riskguard.state.revaluation import (
    consistent,
    flush,
    flush_due,
    fx_move,
    price_move,
    rows_for_fx,
    rows_for_price_move,
    trade_reference,
)
from riskguard.state.tables import edge_get
from riskguard.state.valuation import settle_peaks
from riskguard.state.values import pair_at, value_of
from riskguard.vocabulary import (
    T_CANCEL,
    T_FILL,
    T_FX,
    T_HEARTBEAT,
    T_INSTRUMENT,
    T_MARK,
    T_NEW,
    T_PARENT,
    T_POSITION,
    T_REJECT,
    T_REPLACE,
)


@helper
def rows_for_event(ev, st, rules):  # type: ignore[no-untyped-def]
    """Decisions event ``ev`` may write at most: per row a transition or alert edge and
    each warning level, plus a revaluation (marks, fills, positions) or an FX move."""
    need = 6 * rules.rows.shape[0] + 2
    if ev.typ == T_MARK or ev.typ == T_FILL or ev.typ == T_POSITION:
        need += rows_for_price_move(st, rules, ev.symbol)
    elif ev.typ == T_FX:
        need += rows_for_fx(st, rules, ev.currency)
    return need


ON_TIME = 0
SKEWED = 1
AHEAD = 2
JUMP = 3


@helper
def _corrected(raw, wall, g, rules):  # type: ignore[no-untyped-def]
    """(corrected time, skew ns, verdict) for an event stamped ``raw``.

    Live (``wall`` >= 0): an event stamped more than ``skew_ns`` ahead of the wall clock
    is SKEWED and taken at the wall clock (never before the engine's clock). Replay: an
    event more than ``skew_ns`` ahead of the clock (the latest trusted event time) is
    AHEAD and taken at the clock, unless it is the JUMP_CONFIRM-th such event in a row:
    then the feed really jumped (a gap in the session, JUMP) and the clock follows. The
    events ahead before a jump are not reported as skewed; those followed by an event
    back on time are.
    """
    clock = g.last_event_ns
    if wall >= 0:
        if raw > wall + rules.skew_ns:
            return max(clock, wall), raw - wall, SKEWED
        return raw, 0, ON_TIME
    if clock < 0 or raw <= clock + rules.skew_ns:
        return raw, 0, ON_TIME
    if g.ahead_run + 1 < JUMP_CONFIRM:
        return clock, raw - clock, AHEAD
    return raw, raw - clock, JUMP


@helper
def _feed(e, now, wall, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Feed rows when time moves forward: before an event (``e`` >= 0) or on a tick (-1).

    Silence is measured from the last event (or the named source's last heartbeat; a
    source never heard from counts from the start), only when ``now`` is past the last
    time the feed rows were judged: a late or redelivered event never measures a
    silence. Consumer lag (wall time minus event time) is measured on every event of a
    live run (``wall`` -1 in replay).
    """
    g = st.globals[0]
    forward = now > g.feed_ns
    for j in range(rules.feed_rows.shape[0]):
        r = rules.feed_rows[j]
        row = rules.rows[r]
        if row.metric == M_CONSUMER_LAG:
            if e >= 0 and wall >= 0:
                judge(
                    r,
                    np.int64(FIRM),
                    np.int64(-1),
                    (wall - now) / 1e6,
                    e,
                    now,
                    st,
                    rules,
                    peaks,
                    out,
                )
            continue
        if not forward:
            continue
        last = st.sources[row.source].last_heard_ns if row.source >= 0 else g.last_event_ns
        if last < 0:
            last = g.start_ns
        judge(r, np.int64(FIRM), np.int64(-1), (now - last) / 1e6, e, now, st, rules, peaks, out)
    if forward:
        g.feed_ns = now


@helper
def _mark(ev, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A mark: older than the symbol's last applied mark is ignored; at the same time, a
    price already applied at that time is a redelivery, another price replaces it."""
    sym = st.symbols[ev.symbol]
    px = ev.price
    if now < sym.mark_ns:
        return
    if now == sym.mark_ns:
        ring = (sym.mark_px0, sym.mark_px1, sym.mark_px2, sym.mark_px3)
        for i in range(min(sym.n_mark_px, MARK_RING)):
            if ring[i] == px:
                note(out, e, np.int64(N_DUPLICATE), np.int64(0))
                return
        slot = sym.n_mark_px % MARK_RING
        sym.n_mark_px += 1
    else:
        slot = 0
        sym.n_mark_px = 1
    if slot == 0:
        sym.mark_px0 = px
    elif slot == 1:
        sym.mark_px1 = px
    elif slot == 2:
        sym.mark_px2 = px
    else:
        sym.mark_px3 = px
    sym.mark_ns = now
    sym.price_source = 2
    price_move(ev.symbol, px, e, now, st, rules, peaks, out)


@helper
def _order_event(ev, e, venue, now, at, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Lifecycle of an order event; returns the parent it credits, or -2 when not applied."""
    t = ev.typ
    if t == T_PARENT:
        pa = st.parents[ev.parent]
        if pa.declared != 0 and pa.qty == ev.qty:
            note(out, e, np.int64(N_DUPLICATE), np.int64(0))  # a redelivered parent changes nothing
            return -2
        pa.qty = ev.qty
        pa.declared = 1
        return ev.parent
    if t == T_NEW:
        return ev.parent if on_new(ev, e, now, st, rules, out) else -2
    if t == T_REPLACE:
        return -1 if on_replace(ev, e, now, st, rules, out) else -2
    if t == T_CANCEL or t == T_REJECT:
        return -1 if on_cancel_or_reject(ev, e, now, st, rules, out) else -2
    if ev.subtype == E_TRADE:
        return on_trade(ev, venue, now, at, st, rules, out)
    return on_amend(ev, e, now, st, rules, peaks, out)


@helper
def _judge_event(ev, e, t, side, venue, parent, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """The rows event ``ev`` (type ``t``) moves, on its own scopes; then the restricted
    list, for an order or trade in a restricted symbol."""
    for j in range(rules.by_type.shape[1]):
        r = rules.by_type[t, j]
        if r < 0:
            break
        row = rules.rows[r]
        if (row.side != 0 and row.side != side) or (row.venue >= 0 and row.venue != venue):
            continue
        s = at_level(row.level, ev.account, ev.strategy, ev.symbol, venue)
        if s < 0 or not matches(rules, st.scopes, r, s):
            continue
        p = pair_at(row.level, ev, st) if row.per_pair != 0 else -1
        v = value_of(r, s, p, parent, ev, st, rules)
        judge(r, s, p, v, e, now, st, rules, peaks, out)
    order = t == T_NEW or t == T_REPLACE or (t == T_FILL and ev.subtype == E_TRADE)
    if not order:
        return
    listed = st.symbols[ev.symbol].restricted != 0
    if not listed and st.edges.counts[0].live == 0:
        return  # nothing listed, no alert raised: nothing to breach or re-arm
    for j in range(rules.restricted_rows.shape[0]):
        r = rules.restricted_rows[j]
        row = rules.rows[r]
        hit = row.symbol == ev.symbol and (row.event_account < 0 or row.event_account == ev.account)
        if not (listed and hit) and (row.warns == 0 or peaks[r].edges <= 0.0):
            continue  # neither a breach here nor a raised alert of the row to re-arm
        s = at_level(row.level, ev.account, ev.strategy, ev.symbol, venue)
        if s < 0 or not matches(rules, st.scopes, r, s):
            continue
        if listed and hit:
            judge(r, s, np.int64(-1), 1.0, e, now, st, rules, peaks, out)
        elif edge_get(st.edges, (r << 32) | s) != 0:  # its alert re-arms at a clean order
            judge_edges(r, s, np.int64(-1), 0.0, e, now, np.int64(KEEP), st, rules, peaks, out)


@helper
def _reference_data(ev, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A mark, instrument or exchange-rate event; returns whether it is applied (a mark:
    True, read only for one ahead of the clock, which no applied mark is newer than). One
    older than the latest applied for its symbol (currency) is ignored, and values
    already applied at the same time are a redelivery (:mod:`riskguard.state.refdata`)."""
    if ev.typ == T_MARK:
        _mark(ev, e, now, st, rules, peaks, out)
        return True
    if ev.typ == T_INSTRUMENT:
        if instrument_check(ev.symbol, ev.factor, ev.currency, now, e, st, out) != FRESH:
            return False
        if not on_instrument(ev, e, st, out):
            return False
        remember_instrument(ev.symbol, ev.factor, ev.currency, now, st)
        return True
    if rate_check(ev.currency, ev.factor, now, e, st, out) != FRESH:
        return False
    fx_move(ev.currency, ev.factor, e, now, st, rules, peaks, out)
    remember_rate(ev.currency, ev.factor, now, st)
    return True


@helper
def _side_venue(ev, t, st):  # type: ignore[no-untyped-def]
    """An event's side and venue scope id; a cancel's, reject's, replace's or fill's
    missing ones are its order's."""
    side = np.int64(ev.side)
    venue = ev.venue
    order = t == T_CANCEL or t == T_REJECT or t == T_REPLACE or t == T_FILL
    if order and (side == 0 or venue < 0) and st.orders[ev.order].status != O_FREE:
        od = st.orders[ev.order]
        if side == 0:
            side = od.side
        if venue < 0:
            venue = od.venue
    return side, venue


@njit(cache=True, _nrt=False)
def apply_batch(start, wall, batch, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Apply events ``start..`` of ``batch``; returns the index of the next event to apply.

    ``batch`` is an EVENT record array; ``wall`` the wall clock in ns (live runs: it
    bounds event time and gives consumer lag) or -1. A return value less than the batch
    length means the output might not fit the next event (``out.counts[0].need`` says
    how many decisions it needs): drain it and call again from there.
    """
    n = batch.shape[0]
    cap = out.decisions.shape[0]
    g = st.globals[0]
    counts = out.counts[0]
    has_dups = False
    for k in range(st.counters.defs.shape[0]):
        has_dups = has_dups or st.counters.defs[k].kind == C_DUP
    history = rules.lateness_ns >= OWN_TIME_NS  # a backlog read: older than a ring, no window
    for e in range(start, n):
        ev = batch[e]
        t = ev.typ
        need = rows_for_event(ev, st, rules)
        if counts.n + need > cap:
            counts.need = need
            return e
        now, skew, verdict = _corrected(ev.ts, wall, g, rules)
        if flush_due(now, st, rules) and not flush(now, need, e, st, rules, peaks, out):
            return e
        if verdict == SKEWED:
            note(out, e, np.int64(N_SKEWED), skew)
        jumped = 0
        if verdict == AHEAD:
            g.ahead_run += 1
            forget_ahead(st, g.ahead_run - 1)
            note(out, e, np.int64(N_AHEAD), skew)
        elif verdict == JUMP:
            jumped = g.ahead_run
            g.ahead_run = 0
            note(out, e, np.int64(N_JUMP), skew)
        elif g.ahead_run > 0:
            note(out, e, np.int64(N_KEPT), g.ahead_run)
            if has_dups:
                settle_ahead_dups(st, g.ahead_run, now, False)
            g.ahead_run = 0
        if g.start_ns < 0:
            g.start_ns = now
        clock = g.last_event_ns
        _feed(e, now, wall, st, rules, peaks, out)
        g.last_event_ns = max(clock, now)
        if jumped > 0:
            if has_dups:
                settle_ahead_dups(st, jumped, now, True)
            restamp_ahead(st, jumped, clock, now)
            recount_ahead(st, jumped, now)
        if t == T_HEARTBEAT:
            src = st.sources[ev.source]
            src.last_heard_ns = max(src.last_heard_ns, now)
            continue
        if t == T_MARK or t == T_INSTRUMENT or t == T_FX:
            applied = _reference_data(ev, e, now, st, rules, peaks, out)
            if verdict == AHEAD and applied:
                remember_ahead_refdata(st, g.ahead_run - 1, ev)
            continue
        at = now
        late = clock - now
        if late > rules.lateness_ns:
            at = clock
        side, venue = _side_venue(ev, t, st)
        parent = -1
        if t == T_POSITION:
            if not on_position(ev, e, now, st, rules, peaks, out):
                continue
        elif t != T_PARENT and t != T_FILL:
            parent = _order_event(ev, e, venue, now, at, st, rules, peaks, out)
            if parent == -2:
                continue
            side, venue = _side_venue(ev, t, st)
            count(ev, side, venue, at, st, history)
            if t == T_NEW:
                count_early(ev, side, venue, at, st, history)
            else:
                note_early(ev, t, side, venue, st)
            if verdict == AHEAD:
                remember_ahead(st, g.ahead_run - 1, ev, t, side, venue, at)
            if t == T_NEW and has_dups:
                ahead = g.ahead_run - 1 if verdict == AHEAD else -1
                count_dups(ev, venue, now, at, st, history, ahead)
        else:
            trade = t == T_FILL and ev.subtype == E_TRADE
            if trade:
                count(ev, side, venue, at, st, history)
                if verdict == AHEAD:
                    remember_ahead(st, g.ahead_run - 1, ev, t, side, venue, at)
            parent = _order_event(ev, e, venue, now, at, st, rules, peaks, out)
            if parent == -2:
                continue
            if trade:  # booked first, then the price it traded at moves its symbol
                trade_reference(ev.symbol, ev.exec, ev.price, e, now, st, rules, peaks, out)
                if consistent(st, rules):
                    settle_peaks(st)
        if late > rules.lateness_ns:
            note(out, e, np.int64(N_LATE), late)
        _judge_event(ev, e, t, side, venue, parent, now, st, rules, peaks, out)
    return n


@njit(cache=True, _nrt=False)
def tick(now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Advance to the clock ``now`` without an event: queued revaluations, then feed silence.

    Returns False when the output was too small for the queued revaluations
    (``out.counts[0].need`` set): drain, grow and call again.
    """
    if not flush(now, rules.feed_rows.shape[0], np.int64(-1), st, rules, peaks, out):
        return False
    g = st.globals[0]
    if g.start_ns < 0:
        g.start_ns = now
    _feed(np.int64(-1), now, np.int64(-1), st, rules, peaks, out)
    return True


@njit(cache=True, _nrt=False)
def settle(st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """End of a stream: enter the next revaluation epoch, so queued moves apply now.

    Unlike :func:`tick`, no time passes for the feed rows. Returns False when the
    output was too small (``out.counts[0].need`` set): drain, grow and call again.
    """
    rw = rules.revalue_ns
    g = st.globals[0]
    if g.first_pending < 0:
        return True
    now = max(g.last_event_ns, (g.epoch + 1) * rw) if rw > 0 else g.last_event_ns
    return flush(now, np.int64(0), np.int64(-1), st, rules, peaks, out)


SOURCE_STAMP = pin_cache_to_sources(
    sources=(
        bundles,
        codes,
        jit,
        quantities,
        judging,
        valuation,
        revaluation,
        counters,
        lifecycle,
        rearming,
        refdata,
        tables,
        values,
        vocabulary,
        metric_vocabulary,
        sys.modules[__name__],
    ),
    jitted=(
        quantities,
        judging,
        valuation,
        revaluation,
        counters,
        lifecycle,
        rearming,
        refdata,
        tables,
        values,
        sys.modules[__name__],
    ),
)
