"""Re-arming windowed alerts and warnings on the clock tick.

A windowed value (``order_rate``, ``message_rate``, ``reject_rate``, ``cancel_ratio``,
``fill_notional_rate``, ``fill_count``, ``duplicate_orders``) falls as its window moves
on, with no event: judged only on the events that move it, an alert or warning raised by
a burst stayed raised for ever once the flow stopped. At each tick :func:`rearm_windows`
re-reads the value of every windowed row with a raised edge, at the tick's time, exactly
as an event of that scope counting nothing would read it (:func:`window_value`: the
buckets the window would hold once moved to the tick's bucket, summed as
:func:`riskguard.state.counters.advance` sums them), and re-arms what is back below its
re-arm point, writing a resolve decision. A tick only re-arms: it raises nothing and
escalates no state (raising and halting are judged on the events of the metric's
family, whatever the rule's warning levels), and it moves no counter, so what later
events count is as without the tick.

Cost: the engine keeps the keys of the raised windowed edges (every raise is one of its
decisions; the alert-edge table is read whole only when it is replaced: a reload, a
restore, a rehash), so a tick re-reads those windows only, and with none raised it calls
no kernel at all.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from riskguard.limits.vocabulary import M_CANCEL_RATIO, M_FILL_NOTIONAL_RATE
from riskguard.state.codes import MAX_WARN, RING
from riskguard.state.jit import helper
from riskguard.state.judging import KEEP, could_rearm, judge_edges
from riskguard.state.quantities import money
from riskguard.state.tables import edge_get


@helper
def windowed_total(c, k, slot, now):  # type: ignore[no-untyped-def]
    """What counter ``k`` of scope row ``slot`` holds once moved to the bucket of ``now``
    (ns), without moving it: its total when ``now`` is not past its newest bucket, else
    the sum, in ring order, of the buckets the ring would keep."""
    b = now // c.defs[k].width_ns
    last = c.last_bucket[k, slot]
    if b <= last:
        return c.total[k, slot]
    tot = 0.0
    for j in range(RING):
        held = last - (last - j) % RING  # the bucket index slot j holds
        tot += c.buckets[k, slot, j] if held > b - RING else 0.0
    return tot


@helper
def window_value(r, s, now, st, rules):  # type: ignore[no-untyped-def]
    """Value of windowed row ``r`` at scope ``s`` at time ``now``, as an event of the
    scope counting nothing would read it (a ``cancel_ratio`` with no cancel in the window
    reads 0, an empty window included; NaN, not evaluated, when it holds cancels but fewer
    than ``min_orders`` new orders)."""
    row = rules.rows[r]
    c = st.counters
    slot = st.scopes[s].slot
    v = windowed_total(c, row.counter, slot, now)
    if row.metric == M_FILL_NOTIONAL_RATE:
        return money(v)
    if row.metric == M_CANCEL_RATIO:
        news = windowed_total(c, row.counter2, slot, now)
        if v == 0.0:
            return 0.0  # no cancel left in the window: an empty window re-arms
        return v / news if news >= row.min_orders else np.nan
    return v


@njit(cache=True, _nrt=False)
def rearm_windows(now, keys, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Clock tick at ``now`` (ns): re-arm the raised alert and warning edges of windowed
    rows whose value has fallen back below their re-arm point, one resolve decision each
    (event -1, time ``now``).

    ``keys`` (int64, ``row << 32 | scope``) holds every raised edge of a windowed row, and
    may hold more (the engine's candidates: the table is what counts); each one no longer
    raised after the call is set to -1. Returns False, writing nothing and setting
    ``out.counts[0].need``, when the output might not hold every resolve: drain, grow and
    call again.
    """
    counts = out.counts[0]
    need = (MAX_WARN + 1) * keys.shape[0]
    if counts.n + need > out.decisions.shape[0]:
        counts.need = need
        return False
    rows = rules.rows
    for i in range(keys.shape[0]):
        key = keys[i]
        r = key >> 32
        if key < 0 or r >= rows.shape[0] or rows[r].counter < 0 or rows[r].warns == 0:
            keys[i] = -1
            continue
        s = key & 0xFFFFFFFF
        v = window_value(r, s, now, st, rules)
        if math.isnan(v):  # not evaluated: nothing re-arms
            if edge_get(st.edges, key) == 0:
                keys[i] = -1
            continue
        if not could_rearm(rows[r], v):
            continue  # still above every re-arm point: nothing to read in the table
        # KEEP raises nothing: a key no longer raised (resolved at an event) keeps none
        left = judge_edges(
            r, s, np.int64(-1), v, np.int64(-1), now, np.int64(KEEP), st, rules, peaks, out
        )
        if left == 0:
            keys[i] = -1
    return True
