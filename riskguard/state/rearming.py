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

Cost: nothing while no windowed row has a raised edge (one pass over the rule rows,
reading ``peaks[r].edges``); otherwise one pass over the alert-edge table, reading the
windowed entries.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from riskguard.limits.vocabulary import M_CANCEL_RATIO, M_FILL_NOTIONAL_RATE
from riskguard.state.codes import RING
from riskguard.state.jit import helper
from riskguard.state.judging import KEEP, judge_edges
from riskguard.state.quantities import money


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
    scope counting nothing would read it (NaN: a ``cancel_ratio`` under ``min_orders``
    new orders, an empty window included: 0 / 0 is not evaluated)."""
    row = rules.rows[r]
    c = st.counters
    slot = st.scopes[s].slot
    v = windowed_total(c, row.counter, slot, now)
    if row.metric == M_FILL_NOTIONAL_RATE:
        return money(v)
    if row.metric == M_CANCEL_RATIO:
        news = windowed_total(c, row.counter2, slot, now)
        return v / news if news >= row.min_orders else np.nan
    return v


@njit(cache=True, _nrt=False)
def rearm_windows(now, st, rules, peaks, out):  # type: ignore[no-untyped-def]
    """Clock tick at ``now`` (ns): re-arm the raised alert and warning edges of windowed
    rows whose value has fallen back below their re-arm point, one resolve decision each
    (event -1, time ``now``), in the edge table's order (the engine sorts them).

    Returns False, writing nothing and setting ``out.counts[0].need``, when the output
    might not hold every resolve: drain, grow and call again.
    """
    rows = rules.rows
    need = 0.0
    for r in range(rows.shape[0]):
        if rows[r].counter >= 0 and rows[r].warns != 0:
            need += peaks[r].edges
    if need == 0.0:
        return True
    counts = out.counts[0]
    if counts.n + need > out.decisions.shape[0]:
        counts.need = np.int64(need)
        return False
    keys = st.edges.keys
    for i in range(keys.shape[0]):
        if keys[i] <= 0:  # empty or deleted
            continue
        key = keys[i] - 1
        r = key >> 32
        if r >= rows.shape[0] or rows[r].counter < 0 or rows[r].warns == 0:
            continue
        s = key & 0xFFFFFFFF
        v = window_value(r, s, now, st, rules)
        if not math.isnan(v):  # NaN: not evaluated, nothing re-arms
            judge_edges(
                r, s, np.int64(-1), v, np.int64(-1), now, np.int64(KEEP), st, rules, peaks, out
            )
    return True
