"""numba kernels: apply a columnar batch of events to the state arrays and check rules.

Semantics are per event, in batch order, so the result never depends on how a
stream is cut into batches (the property tests check this against the plain
Python model in :mod:`riskguard.state.reference`). For each event the kernel:

1. checks feed-silence rows (the gap since the last event, or since the last
   heartbeat of a named source), then advances the clock;
2. updates windowed counters, orders, parents, positions and exposures;
3. evaluates the rows whose metric the event type can move, on the event's four
   scopes (firm, account, strategy, symbol); a mark, or a fill that changes a
   symbol's fill-derived reference price, also revalues and re-evaluates every
   holder of the symbol, at most once per revaluation epoch (``revalue_ms`` of
   event time): later moves in the same epoch are applied together when the
   next epoch starts (step 0, before the feed-silence check);
4. escalates the latched state of a breaching scope (never lowers it) and writes
   one output row per transition or alert edge.

Output space is checked before each event; when it might run out the kernel
returns early and the caller drains and resumes, so nothing is dropped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from numba import njit

from riskguard.limits import vocabulary
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
from riskguard.state import counters, layout, primitives, tables
from riskguard.state.counters import _close, _counters, _dups
from riskguard.state.layout import (
    C_DUP,
    CI_KIND,
    FIRM,
    G_EPOCH,
    G_LAST_ANY,
    G_START,
    OF_CUM,
    OF_PRICE,
    OF_QTY,
    OI_ACC,
    OI_OPEN,
    OI_PARENT,
    OI_SIDE,
    OI_STRAT,
    OI_SYM,
    PF_POS,
    PI_ACC_PAIR,
    PI_FIRM_PAIR,
    QF_FILLED,
    QF_QTY,
    QI_DECLARED,
    RI_C1,
    RI_C2,
    RI_LEVEL,
    RI_METRIC,
    RI_MIN_ORDERS,
    RI_SOURCE,
    SF_REF,
    SF_VAL,
    SI_MARK_TS,
    SI_NPAIRS,
    SI_OPEN,
    SI_PRICE_SRC,
    SI_SLOT,
)
from riskguard.state.primitives import (
    _at_level,
    _check,
    _edge,
    _fill_pair,
    _flush,
    _link,
    _matches,
    _pair_delta,
    _price,
    _scope_value,
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


@njit(cache=True)
def apply_batch(  # type: ignore[no-untyped-def]
    start,
    wall,
    rw,
    typ,
    ts,
    acc_c,
    strat_c,
    sym_c,
    side,
    qty,
    price,
    oid,
    pid,
    src,
    pair,
    sf,
    si,
    pf,
    pi,
    of,
    oi,
    qf,
    qi,
    src_last,
    g,
    ci,
    cb,
    clast,
    csum,
    ri,
    rf,
    rp,
    type_rows,
    exp_rows,
    feed_rows,
    dup,
    alerts,
    out_i,
    out_f,
    closed,
):
    """Apply events ``start..`` of a batch. Returns (next event, outputs, closed orders).

    ``next event`` is the batch length when the batch is done; anything less means
    the output buffer is nearly full: drain it and call again from there.
    """
    n = typ.shape[0]
    nrows = ri.shape[0]
    cap = out_i.shape[0]
    n_out = 0
    n_closed = 0
    has_dups = False
    for k in range(ci.shape[0]):
        has_dups = has_dups or ci[k, CI_KIND] == C_DUP
    for e in range(start, n):
        t = typ[e]
        now = ts[e]
        need = 6 * nrows + 2
        if t == T_MARK or t == T_FILL:
            need += 2 * exp_rows.shape[0] * (si[sym_c[e], SI_NPAIRS] + 1)
        if n_out + need > cap:
            return e, n_out, n_closed
        # 0. a new revaluation epoch applies the price moves queued in the last one
        if rw > 0 and now // rw > g[G_EPOCH]:
            n_out, done = _flush(
                now,
                rw,
                need,
                e,
                g,
                sf,
                si,
                pf,
                pi,
                ri,
                rf,
                rp,
                exp_rows,
                alerts,
                out_i,
                out_f,
                n_out,
            )
            if not done:
                return e, n_out, n_closed
        if g[G_START] < 0:
            g[G_START] = now
        # 1. feed silence, measured before this event counts as a sign of life
        for j in range(feed_rows.shape[0]):
            r = feed_rows[j]
            if ri[r, RI_METRIC] == M_CONSUMER_LAG:  # live runs only: wall is -1 in replay
                if wall >= 0:
                    v = (wall - now) / 1e6
                    n_out, edge = _check(r, FIRM, v, e, now, g, ri, rf, rp, si, out_i, out_f, n_out)
                    if edge:
                        n_out = _edge(edge, r, FIRM, v, e, rp, si, alerts, out_i, out_f, n_out)
                continue
            source = ri[r, RI_SOURCE]
            last = src_last[source] if source >= 0 else g[G_LAST_ANY]
            if last < 0:
                last = g[G_START]
            v = (now - last) / 1e6
            n_out, edge = _check(r, FIRM, v, e, now, g, ri, rf, rp, si, out_i, out_f, n_out)
            if edge:
                n_out = _edge(edge, r, FIRM, v, e, rp, si, alerts, out_i, out_f, n_out)
        g[G_LAST_ANY] = max(g[G_LAST_ANY], now)
        if t == T_HEARTBEAT:
            src_last[src[e]] = max(src_last[src[e]], now)
            continue
        acc = acc_c[e]
        strat = strat_c[e]
        sym = sym_c[e]
        if t == T_MARK:
            if now >= si[sym, SI_MARK_TS]:
                si[sym, SI_MARK_TS] = now
                si[sym, SI_PRICE_SRC] = 2
                n_out = _price(
                    sym,
                    price[e],
                    rw,
                    e,
                    now,
                    g,
                    sf,
                    si,
                    pf,
                    pi,
                    ri,
                    rf,
                    rp,
                    exp_rows,
                    alerts,
                    out_i,
                    out_f,
                    n_out,
                )
            continue
        # 2. state
        if t != T_PARENT:
            _counters(e, t, now, acc, strat, sym, qty, price, si, ci, cb, clast, csum)
            if t == T_NEW and has_dups:
                _dups(e, now, acc, strat, sym, side, qty, price, si, ci, cb, clast, csum, dup, g)
        o = oid[e]
        parent = pid[e]
        if t == T_PARENT:
            qf[parent, QF_QTY] = qty[e]
            qi[parent, QI_DECLARED] = 1
        elif t == T_NEW:
            if oi[o, OI_OPEN] != 0:
                n_closed = _close(o, oi, si, closed, n_closed)
            oi[o, OI_OPEN] = 1
            oi[o, OI_ACC] = acc
            oi[o, OI_STRAT] = strat
            oi[o, OI_SYM] = sym
            oi[o, OI_PARENT] = parent
            oi[o, OI_SIDE] = side[e]
            of[o, OF_QTY] = qty[e]
            of[o, OF_CUM] = 0.0
            of[o, OF_PRICE] = price[e]
            si[FIRM, SI_OPEN] += 1
            si[acc, SI_OPEN] += 1
            si[strat, SI_OPEN] += 1
            si[sym, SI_OPEN] += 1
        elif t == T_REPLACE:
            if o >= 0 and oi[o, OI_OPEN] != 0:
                of[o, OF_QTY] = qty[e]
                of[o, OF_PRICE] = price[e]
                if of[o, OF_CUM] >= qty[e]:
                    n_closed = _close(o, oi, si, closed, n_closed)
        elif t == T_CANCEL or t == T_REJECT:
            if o >= 0 and oi[o, OI_OPEN] != 0:
                n_closed = _close(o, oi, si, closed, n_closed)
        elif t == T_FILL:
            if o >= 0 and oi[o, OI_OPEN] != 0:
                if parent < 0:
                    parent = oi[o, OI_PARENT]
                of[o, OF_CUM] += qty[e]
                if of[o, OF_CUM] >= of[o, OF_QTY]:
                    n_closed = _close(o, oi, si, closed, n_closed)
            if parent >= 0:
                qf[parent, QF_FILLED] += qty[e]
            x = price[e]
            if si[sym, SI_PRICE_SRC] < 2 and (si[sym, SI_PRICE_SRC] == 0 or sf[sym, SF_REF] != x):
                si[sym, SI_PRICE_SRC] = 1
                n_out = _price(
                    sym,
                    x,
                    rw,
                    e,
                    now,
                    g,
                    sf,
                    si,
                    pf,
                    pi,
                    ri,
                    rf,
                    rp,
                    exp_rows,
                    alerts,
                    out_i,
                    out_f,
                    n_out,
                )
            m = sf[sym, SF_VAL]
            d = qty[e] * side[e]
            p_strat = pair[e]
            p_acc = pi[p_strat, PI_ACC_PAIR]
            p_firm = pi[p_strat, PI_FIRM_PAIR]
            for p in (p_firm, p_acc, p_strat):
                _link(si, pi, p)
                q0, q1, dq, dc, dr = _fill_pair(pf, p, d, x)
                _pair_delta(sf, pi, p, dq * m, (q1 - q0) * m, dr, dc)
        # 3. rules this event type can move, on the event's own scopes
        for j in range(type_rows.shape[1]):
            r = type_rows[t, j]
            if r < 0:
                break
            level = ri[r, RI_LEVEL]
            s = _at_level(level, acc, strat, sym)
            if not _matches(ri, si, r, s):
                continue
            metric = ri[r, RI_METRIC]
            if (
                metric == M_ORDER_RATE
                or metric == M_MESSAGE_RATE
                or metric == M_REJECT_RATE
                or metric == M_FILL_NOTIONAL_RATE
                or metric == M_DUPLICATE_ORDERS
            ):
                v = csum[ri[r, RI_C1], si[s, SI_SLOT]]
            elif metric == M_CANCEL_RATIO:
                row = si[s, SI_SLOT]
                news = csum[ri[r, RI_C2], row]
                v = csum[ri[r, RI_C1], row] / news if news >= ri[r, RI_MIN_ORDERS] else np.nan
            elif metric == M_ORDER_QTY:
                v = qty[e]
            elif metric == M_ORDER_NOTIONAL:
                if not math.isnan(price[e]):
                    v = qty[e] * price[e]
                elif si[sym, SI_PRICE_SRC] > 0:
                    v = qty[e] * sf[sym, SF_REF]
                else:
                    v = np.nan
            elif metric == M_PRICE_DEVIATION:
                if not math.isnan(price[e]) and si[sym, SI_PRICE_SRC] > 0:
                    ref = sf[sym, SF_REF]
                    v = abs(price[e] - ref) / ref
                else:
                    v = np.nan
            elif metric == M_POSITION_QTY:
                p_strat = pair[e]  # position_qty is evaluated on fills only
                if level == L_ACCOUNT:
                    v = abs(pf[pi[p_strat, PI_ACC_PAIR], PF_POS])
                elif level == L_STRATEGY:
                    v = abs(pf[p_strat, PF_POS])
                else:
                    v = abs(pf[pi[p_strat, PI_FIRM_PAIR], PF_POS])
            elif metric == M_PARENT_OVERFILL:
                if parent >= 0 and qi[parent, QI_DECLARED] != 0:
                    v = qf[parent, QF_FILLED] / qf[parent, QF_QTY]
                else:
                    v = np.nan
            else:
                v = _scope_value(metric, sf, si, s)
            n_out, edge = _check(r, s, v, e, now, g, ri, rf, rp, si, out_i, out_f, n_out)
            if edge:
                n_out = _edge(edge, r, s, v, e, rp, si, alerts, out_i, out_f, n_out)
    return n, n_out, n_closed


@njit(cache=True)
def tick(  # type: ignore[no-untyped-def]
    now, rw, sf, si, pf, pi, ri, rf, rp, exp_rows, src_last, g, feed_rows, alerts, out_i, out_f
):
    """Advance to the clock ``now`` without an event: queued revaluations, then feed silence.

    Returns (outputs written, done); not done means the output buffer was too small
    for the queued revaluations: drain, grow and call again.
    """
    n_out, done = _flush(
        now,
        rw,
        feed_rows.shape[0],
        -1,
        g,
        sf,
        si,
        pf,
        pi,
        ri,
        rf,
        rp,
        exp_rows,
        alerts,
        out_i,
        out_f,
        0,
    )
    if not done:
        return n_out, False
    if g[G_START] < 0:
        g[G_START] = now
    for j in range(feed_rows.shape[0]):
        r = feed_rows[j]
        if ri[r, RI_METRIC] == M_CONSUMER_LAG:  # measured on events, not on the clock
            continue
        source = ri[r, RI_SOURCE]
        last = src_last[source] if source >= 0 else g[G_LAST_ANY]
        if last < 0:
            last = g[G_START]
        v = (now - last) / 1e6
        n_out, edge = _check(r, FIRM, v, -1, now, g, ri, rf, rp, si, out_i, out_f, n_out)
        if edge:
            n_out = _edge(edge, r, FIRM, v, -1, rp, si, alerts, out_i, out_f, n_out)
    return n_out, True


def _pin_cache_to_sources() -> str:
    """Make the on-disk numba cache depend on every file the kernels are built from.

    numba keys its cache on the jitted function's own bytecode and file stamp only:
    an edit to a helper in ``primitives.py``, a column index in ``layout.py`` or a
    metric code in ``vocabulary.py`` would otherwise leave a stale compiled kernel
    in use (we hit exactly that). Adding a digest of those sources to the cache
    index key makes any such change a cache miss, hence a recompile.
    """
    digest = hashlib.sha256()
    for module in (layout, primitives, counters, tables, vocabulary):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    stamp = digest.hexdigest()
    for dispatcher in (
        apply_batch,
        tick,
        tables.fill_dups,
        tables.fill_alerts,
        tables.dump_dups,
        tables.dump_alerts,
        tables.clear_dups,
        tables.clear_alerts,
    ):
        cache = getattr(dispatcher, "_cache", None)
        original = getattr(cache, "_index_key", None)
        if cache is None or original is None:  # numba without this internal: never cache
            if cache is not None:
                cache.disable()
            continue

        def keyed(sig, codegen, _original=original):  # type: ignore[no-untyped-def]
            return (_original(sig, codegen), stamp)

        cache._index_key = keyed
    return stamp


SOURCE_STAMP = _pin_cache_to_sources()
