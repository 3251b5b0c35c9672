"""Exchange rates and instruments delivered again, or out of order (numba helpers).

Reference data follows a mark's rule (``docs/events.md``, "Reference data delivered
again"): an ``fx`` older than the latest rate applied for its currency, or an
``instrument`` older than the latest applied for its symbol, is ignored; at that same
time, values already applied at it are a redelivery (noted as a duplicate), other
values replace them. Up to :data:`~riskguard.state.codes.MARK_RING` distinct values are
remembered per time. So the same event delivered twice, whatever came between (newer
rates, trades valued at them), leaves the state as delivered once: group mode publishes
reference data to every input partition, and one instance reads the copies of the
partitions it owns at different speeds.

Each check returns :data:`FRESH` (apply it, then :func:`remember_rate` or
:func:`remember_instrument` once applied), :data:`STALE` or :data:`SEEN`.
"""

from __future__ import annotations

import numpy as np

from riskguard.state.codes import MARK_RING, N_DUPLICATE, N_REFDATA
from riskguard.state.jit import helper
from riskguard.state.judging import note
from riskguard.vocabulary import T_FX, T_INSTRUMENT, T_MARK

FRESH = 0
STALE = 1
SEEN = 2


@helper
def rate_check(c, rate, now, e, st, out):  # type: ignore[no-untyped-def]
    """Whether rate ``rate`` of currency id ``c`` at event time ``now`` (ns) is new; a
    rate already applied at ``now`` is noted as a duplicate of event ``e``."""
    cur = st.currencies[c]
    if now < cur.rate_ns:
        return STALE
    if now == cur.rate_ns:
        ring = (cur.rate0, cur.rate1, cur.rate2, cur.rate3)
        for i in range(min(cur.n_rates, MARK_RING)):
            if ring[i] == rate:
                note(out, e, np.int64(N_DUPLICATE), np.int64(0))
                return SEEN
    return FRESH


@helper
def remember_rate(c, rate, now, st):  # type: ignore[no-untyped-def]
    """Rate ``rate`` of currency id ``c`` was applied at ``now``."""
    cur = st.currencies[c]
    if now == cur.rate_ns:
        slot = cur.n_rates % MARK_RING
        cur.n_rates += 1
    else:
        slot = 0
        cur.n_rates = 1
    if slot == 0:
        cur.rate0 = rate
    elif slot == 1:
        cur.rate1 = rate
    elif slot == 2:
        cur.rate2 = rate
    else:
        cur.rate3 = rate
    cur.rate_ns = now


@helper
def instrument_check(y, factor, c, now, e, st, out):  # type: ignore[no-untyped-def]
    """Whether contract size ``factor`` and currency id ``c`` of symbol id ``y`` at event
    time ``now`` (ns) are new; values already applied at ``now`` are noted as a
    duplicate of event ``e``."""
    sym = st.symbols[y]
    if now < sym.ref_ns:
        return STALE
    if now == sym.ref_ns:
        sizes = (sym.ref_mult0, sym.ref_mult1, sym.ref_mult2, sym.ref_mult3)
        codes = (sym.ref_cur0, sym.ref_cur1, sym.ref_cur2, sym.ref_cur3)
        for i in range(min(sym.n_refs, MARK_RING)):
            if sizes[i] == factor and codes[i] == c:
                note(out, e, np.int64(N_DUPLICATE), np.int64(0))
                return SEEN
    return FRESH


@helper
def remember_instrument(y, factor, c, now, st):  # type: ignore[no-untyped-def]
    """Contract size ``factor`` and currency id ``c`` of symbol id ``y`` were applied at
    ``now``."""
    sym = st.symbols[y]
    if now == sym.ref_ns:
        slot = sym.n_refs % MARK_RING
        sym.n_refs += 1
    else:
        slot = 0
        sym.n_refs = 1
    if slot == 0:
        sym.ref_mult0, sym.ref_cur0 = factor, c
    elif slot == 1:
        sym.ref_mult1, sym.ref_cur1 = factor, c
    elif slot == 2:
        sym.ref_mult2, sym.ref_cur2 = factor, c
    else:
        sym.ref_mult3, sym.ref_cur3 = factor, c
    sym.ref_ns = now


@helper
def remember_ahead_refdata(st, slot, ev):  # type: ignore[no-untyped-def]
    """Replay: a mark, rate or instrument stamped ahead of the clock was applied at the
    clock: kept in ``st.ahead[slot]`` with its own time, in case the feed jumped."""
    rec = st.ahead[slot]
    rec.typ = ev.typ
    rec.side = 0
    rec.venue = -1
    rec.ts = ev.ts
    rec.symbol = ev.symbol
    rec.currency = ev.currency
    rec.price = ev.price
    rec.factor = ev.factor


@helper
def restamp_ahead(st, n, clock, now):  # type: ignore[no-untyped-def]
    """Replay: the feed jumped. The marks, rates and instruments among the ``n`` events
    ahead of the clock were applied at the old ``clock``: each is now stamped with its
    own time (at most ``now``, the jump's), as the windows' counts move to the jump, so
    one older than it that arrives after the jump is ignored, as without the gap (at the
    old clock, an older mark moved the price back)."""
    for i in range(n):
        rec = st.ahead[i]
        at = min(rec.ts, now)
        if rec.typ == T_MARK:
            sym = st.symbols[rec.symbol]
            if sym.mark_ns >= clock:
                sym.mark_ns = max(sym.mark_ns, at)
                sym.mark_px0 = rec.price
                sym.n_mark_px = 1
        elif rec.typ == T_FX:
            cur = st.currencies[rec.currency]
            if cur.rate_ns >= clock:
                cur.rate_ns = max(cur.rate_ns, at)
                cur.rate0 = rec.factor
                cur.n_rates = 1
        elif rec.typ == T_INSTRUMENT:
            sym = st.symbols[rec.symbol]
            if sym.ref_ns >= clock:
                sym.ref_ns = max(sym.ref_ns, at)
                sym.ref_mult0, sym.ref_cur0 = rec.factor, rec.currency
                sym.n_refs = 1


@helper
def on_instrument(ev, e, st, out):  # type: ignore[no-untyped-def]
    """Reference data of symbol ``ev.symbol``: contract size ``ev.factor``, currency id
    ``ev.currency``; returns whether applied (a change once it is held or worked is not)."""
    y = ev.symbol
    sym = st.symbols[y]
    c = ev.currency
    if sym.multiplier == ev.factor and sym.currency == c:
        return True
    if sym.first_holder >= 0 or st.scopes[y].open_orders > 0:
        note(out, e, np.int64(N_REFDATA), np.int64(0))
        return False
    if sym.currency != c and sym.in_currency != 0:  # leave the old currency's list
        cur = st.currencies[sym.currency]
        if cur.first_symbol == y:
            cur.first_symbol = sym.next_in_currency
        else:
            k = cur.first_symbol
            while st.symbols[k].next_in_currency != y:
                k = st.symbols[k].next_in_currency
            st.symbols[k].next_in_currency = sym.next_in_currency
        sym.next_in_currency = -1
        sym.in_currency = 0
    if c != 0 and sym.in_currency == 0:
        cur = st.currencies[c]
        sym.next_in_currency = cur.first_symbol
        cur.first_symbol = y
        sym.in_currency = 1
    sym.currency = c
    sym.multiplier = ev.factor
    return True
