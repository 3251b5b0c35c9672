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
from riskguard.state import bundles, counters, jit, lifecycle, primitives, tables
from riskguard.state.bundles import (
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
)
from riskguard.state.counters import C_DUP, count, count_dups
from riskguard.state.jit import helper
from riskguard.state.lifecycle import on_amend, on_cancel_or_reject, on_new, on_replace, on_trade
from riskguard.state.primitives import (
    at_level,
    flush,
    judge,
    matches,
    near,
    note,
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


@helper
def rows_for_event(ev, st, rules):  # type: ignore[no-untyped-def]
    """Decisions event ``ev`` may write at most (its own rows, plus a revaluation)."""
    need = 6 * rules.rows.shape[0] + 2
    if ev.typ == T_MARK or ev.typ == T_FILL:
        need += rows_for_price_move(st, rules, ev.symbol)
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
                judge(r, np.int64(FIRM), (wall - now) / 1e6, e, now, st, rules, peaks, out)
            continue
        if not forward:
            continue
        last = st.sources[row.source].last_heard_ns if row.source >= 0 else g.last_event_ns
        if last < 0:
            last = g.start_ns
        judge(r, np.int64(FIRM), (now - last) / 1e6, e, now, st, rules, peaks, out)
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
def _fill_price(ev, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """A trade moves the symbol's fill-derived reference price (no mark yet)."""
    sym = st.symbols[ev.symbol]
    if sym.price_source < 2 and (sym.price_source == 0 or sym.ref_price != ev.price):
        sym.price_source = 1
        price_move(ev.symbol, ev.price, e, now, st, rules, peaks, out)


@helper
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
            return ev.qty * abs(px)
        return ev.qty * abs(sym.ref_price) if sym.price_source > 0 else np.nan
    if metric == M_PRICE_DEVIATION:
        if not math.isnan(px) and sym.price_source > 0 and sym.ref_price != 0.0:
            return abs(px - sym.ref_price) / abs(sym.ref_price)
        return np.nan
    if metric == M_POSITION_QTY:  # evaluated on fills only
        pos = st.positions
        if row.level == L_ACCOUNT:
            return abs(pos[ev.account_pair].qty)
        if row.level == L_STRATEGY:
            return abs(pos[ev.strategy_pair].qty)
        return abs(pos[pos[ev.account_pair].firm_pair].qty)
    if metric == M_PARENT_OVERFILL:
        if parent >= 0 and st.parents[parent].declared != 0:
            pa = st.parents[parent]
            if near(pa.filled, pa.qty):
                return 1.0
            return pa.filled / pa.qty
        return np.nan
    return scope_value(metric, st.scopes, s)


@helper
def _order_event(ev, e, now, at, st, rules, out):  # type: ignore[no-untyped-def]
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
        return ev.parent if on_new(ev, e, now, st, out) else -2
    if t == T_REPLACE:
        return -1 if on_replace(ev, e, now, st, out) else -2
    if t == T_CANCEL or t == T_REJECT:
        return -1 if on_cancel_or_reject(ev, e, now, st, out) else -2
    if ev.exec_type == E_TRADE:
        return on_trade(ev, now, at, st, rules, out)
    return on_amend(ev, e, st, rules, out)


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
    for e in range(start, n):
        ev = batch[e]
        t = ev.typ
        need = rows_for_event(ev, st, rules)
        if counts.n + need > cap:
            counts.need = need
            return e
        now, skew, verdict = _corrected(ev.ts, wall, g, rules)
        if not flush(now, need, e, st, rules, peaks, out):
            return e
        if verdict == SKEWED:
            note(out, e, np.int64(N_SKEWED), np.int64(skew))
        elif verdict == AHEAD:
            g.ahead_run += 1
            note(out, e, np.int64(N_AHEAD), np.int64(skew))
        elif verdict == JUMP:
            g.ahead_run = 0
            note(out, e, np.int64(N_JUMP), np.int64(skew))
        elif g.ahead_run > 0:
            note(out, e, N_KEPT, g.ahead_run)
            g.ahead_run = 0
        if g.start_ns < 0:
            g.start_ns = now
        clock = g.last_event_ns
        _feed(e, now, wall, st, rules, peaks, out)
        g.last_event_ns = max(clock, now)
        if t == T_HEARTBEAT:
            src = st.sources[ev.source]
            src.last_heard_ns = max(src.last_heard_ns, now)
            continue
        if t == T_MARK:
            _mark(ev, e, now, st, rules, peaks, out)
            continue
        at = now
        late = clock - now
        if late > rules.lateness_ns:
            at = clock
        parent = -1
        if t == T_FILL and ev.exec_type == E_TRADE:
            _fill_price(ev, e, now, st, rules, peaks, out)
        if t != T_PARENT and t != T_FILL:
            parent = _order_event(ev, e, now, at, st, rules, out)
            if parent == -2:
                continue
            count(batch, e, at, st)
            if t == T_NEW and has_dups:
                count_dups(batch, e, now, at, st)
        else:
            if t == T_FILL and ev.exec_type == E_TRADE:
                count(batch, e, at, st)
            parent = _order_event(ev, e, now, at, st, rules, out)
            if parent == -2:
                continue
        if late > rules.lateness_ns:
            note(out, e, np.int64(N_LATE), np.int64(late))
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
    if rw <= 0 or g.first_pending < 0:
        return True
    now = max(g.last_event_ns, (g.epoch + 1) * rw)
    return flush(now, np.int64(0), np.int64(-1), st, rules, peaks, out)


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
    modules = (bundles, jit, primitives, counters, lifecycle, tables, vocabulary, metric_vocabulary)
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    stamp = digest.hexdigest()[:16]
    for module in (primitives, counters, lifecycle, tables, sys.modules[__name__]):
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
