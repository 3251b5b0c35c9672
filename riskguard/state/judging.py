"""Judging a value against a rule row: latched escalation, alerts, warning levels, re-arming.

numba helpers of the kernel (:data:`riskguard.state.jit.helper`). A rule row's value is
recorded in its peaks, then:

- a breach (``value > upper`` or ``value < lower``) escalates the scope's latched state
  to the row's action if that is stricter (one decision);
- an alert row raises its edge on a breach (one alert decision) and re-arms once the
  value is back below the limit by ``rearm`` (a fraction of the limit: 0 = as soon as
  it is within), writing a resolve decision;
- a row with warning levels (``warn_at``, fractions of the limit: of ``max`` for an
  upper bound, of ``min`` for a lower one) raises one alert per level reached (a value
  exactly at a level reaches it), with the level in the evidence, and re-arms each level
  once the value is back below it by more than ``rearm`` (default 0.05), writing a
  resolve decision (docs/limits.md, Warnings). Utilisations are compared within
  LEVEL_RTOL (float error of value / limit), so a decimal value exactly at a level is at it.

Metrics measured per position (``position_qty``, ``position_break_qty``: the value is
that of one symbol) keep their alert and warning edges per position pair, so a break in
one symbol is not resolved by a clean reading in another.

A breach evidenced by an event at or before the scope's judged time (an operator resumed
after it, or the previous instance decided it) is recorded in the peaks but changes no
state and pages nothing. Behind the previous instance's progress (the global judged
time: a restart re-reading input), an alert or warning level it crosses is raised
silently (``TO_JUDGED``), so that its resolve comes, as in the run that paged it; behind
a resume only, nothing is raised (a later breach pages).
"""

from __future__ import annotations

import math

import numpy as np

from riskguard.state.codes import (
    EDGE_ALERT,
    FIRM,
    LEVEL_RTOL,
    MAX_WARN,
    TO_ALERT,
    TO_JUDGED,
    TO_RESOLVE,
)
from riskguard.state.jit import helper, inlined
from riskguard.state.tables import edge_get, edge_put
from riskguard.vocabulary import A_ALERT, L_ACCOUNT, L_FIRM, L_STRATEGY, L_SYMBOL

#: judge_edges modes
RAISE = 1
SILENT = 2
KEEP = 0


@helper
def at_level(level, account, strategy, symbol, venue):  # type: ignore[no-untyped-def]
    """The scope id of an event's scope at ``level`` (-1: the event has none there)."""
    if level == L_FIRM:
        return FIRM
    if level == L_ACCOUNT:
        return account
    if level == L_STRATEGY:
        return strategy
    if level == L_SYMBOL:
        return symbol
    return venue


@helper
def matches(rules, sc, r, s):  # type: ignore[no-untyped-def]
    """Whether row ``r`` applies to scope ``s`` (its match list, and a strategy's account)."""
    row = rules.rows[r]
    if row.match >= 0 and row.match != s:
        return False
    return not (row.match_account >= 0 and sc[s].account != row.match_account)


@helper
def emit(out, e, r, s, old, new, v, ts, level, edge, p):  # type: ignore[no-untyped-def]
    """Write one decision (``new``: a state, TO_ALERT or TO_RESOLVE; ``p`` the pair of a
    per-position metric, else -1)."""
    counts = out.counts[0]
    d = out.decisions[counts.n]
    d.event = e
    d.row = r
    d.scope = s
    d.from_state = old
    d.to_state = new
    d.value = v
    d.ts = ts
    d.level = level
    d.edge = edge
    d.pair = p
    counts.n += 1


@helper
def note(out, e, kind, value):  # type: ignore[no-untyped-def]
    """Write one note about event ``e``."""
    counts = out.counts[0]
    n = out.notes[counts.n_notes]
    n.event = e
    n.kind = kind
    n.value = value
    counts.n_notes += 1


@helper
def utilisation(row, v):  # type: ignore[no-untyped-def]
    """How far ``v`` has come towards the row's limit: 1.0 at it (the larger of the sides)."""
    u = -np.inf
    if row.upper > 0.0 and not math.isinf(row.upper):
        u = v / row.upper
    if row.lower < 0.0 and not math.isinf(row.lower):
        u = max(u, v / row.lower)
    return u


@helper
def _warn_level(row, k):  # type: ignore[no-untyped-def]
    if k == 0:
        return row.warn0
    if k == 1:
        return row.warn1
    if k == 2:
        return row.warn2
    return row.warn3


@helper
def could_rearm(row, v):  # type: ignore[no-untyped-def]
    """Whether value ``v`` of ``row`` could re-arm any of its edges (:func:`judge_edges`):
    within the bounds of an alert row, or below a warning level by its re-arm margin.
    False means judging ``v`` without raising (KEEP) changes nothing."""
    if row.action == A_ALERT and not (v > row.upper or v < row.lower):
        return True
    u = utilisation(row, v)
    for k in range(MAX_WARN):
        f = _warn_level(row, k)
        if math.isnan(f):
            break
        if u < f - row.warn_rearm - LEVEL_RTOL * f:
            return True
    return False


@helper
def could_raise(row, v):  # type: ignore[no-untyped-def]
    """Whether value ``v`` of ``row`` breaches it or reaches a warning level: what
    :func:`judge_edges` raises. While no edge of the row is raised anywhere (its peaks'
    ``edges`` 0) and this is False, :func:`judge_edges` changes nothing, and :func:`judge`
    skips it (the common case: a value well within its limits)."""
    if row.action == A_ALERT and (v > row.upper or v < row.lower):
        return True
    u = utilisation(row, v)
    for k in range(MAX_WARN):
        f = _warn_level(row, k)
        if math.isnan(f):
            break
        if u >= f - LEVEL_RTOL * f:
            return True
    return False


@helper
def judge_edges(r, s, p, v, e, now, mode, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Warning levels and an alert row's own edge: raise what is crossed, re-arm the rest.
    ``mode``: RAISE (page what is crossed), SILENT (evidence the previous instance
    judged: raise without a page) or KEEP (a person judged it: raise nothing). Returns
    the bits left raised."""
    row = rules.rows[r]
    sc = st.scopes[s]
    key = r << 32 | (p if p >= 0 else s)
    bits = edge_get(st.edges, key) if peaks[r].edges > 0.0 else np.int64(0)
    u = utilisation(row, v)
    before = bits
    for k in range(MAX_WARN):
        f = _warn_level(row, k)
        if math.isnan(f):
            break
        bit = np.int64(1) << k
        if bits & bit:
            if u < f - row.warn_rearm - LEVEL_RTOL * f:
                bits &= ~bit
                emit(out, e, r, s, sc.state, np.int64(TO_RESOLVE), v, now, f, bit, p)
        elif u >= f - LEVEL_RTOL * f and mode != KEEP:
            bits |= bit
            to = TO_ALERT if mode == RAISE else TO_JUDGED
            emit(out, e, r, s, sc.state, np.int64(to), v, now, f, bit, p)
    if row.action == A_ALERT:
        breach = v > row.upper or v < row.lower
        if bits & EDGE_ALERT:
            if not breach and (row.rearm <= 0.0 or u < 1.0 - row.rearm - LEVEL_RTOL):
                bits &= ~EDGE_ALERT
                emit(
                    out,
                    e,
                    r,
                    s,
                    sc.state,
                    np.int64(TO_RESOLVE),
                    v,
                    now,
                    np.nan,
                    np.int64(EDGE_ALERT),
                    p,
                )
        elif breach and mode != KEEP:
            bits |= EDGE_ALERT
            to = TO_ALERT if mode == RAISE else TO_JUDGED
            emit(out, e, r, s, sc.state, np.int64(to), v, now, np.nan, np.int64(EDGE_ALERT), p)
    if bits != before:
        peaks[r].edges += _popcount(bits) - _popcount(before)
        edge_put(st.edges, key, bits)
    return bits


@helper
def _popcount(x):  # type: ignore[no-untyped-def]
    n = 0.0
    while x:
        n += 1.0
        x &= x - 1
    return n


@inlined
def judge(r, s, p, v, e, now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Record value ``v`` of row ``r`` at scope ``s`` (event ``e``, corrected time ``now``);
    ``p`` is the position pair of a per-position metric (its edges' key), else -1.

    NaN means the metric does not apply (or is unknown): nothing is recorded.
    """
    if math.isnan(v):
        return
    peak = peaks[r]
    peak.evaluations += 1.0
    if v > peak.high:
        peak.high = v
        peak.high_scope = s
    if v < peak.low:
        peak.low = v
        peak.low_scope = s
    row = rules.rows[r]
    scope = st.scopes[s]
    replayed = now <= st.globals[0].judged_ns
    live = not replayed and now > scope.judged_ns
    if row.warns != 0 and (peaks[r].edges > 0.0 or could_raise(row, v)):
        mode = RAISE if live else SILENT if replayed else KEEP
        judge_edges(r, s, p, v, e, now, np.int64(mode), st, rules, peaks, out)
    if row.action == A_ALERT:
        return
    if (v > row.upper or v < row.lower) and live and scope.state < row.action:
        emit(out, e, r, s, scope.state, row.action, v, now, np.nan, np.int64(0), p)
        scope.state = row.action
