"""Compile validated limits into the integer/float rows the kernel evaluates.

A rule whose ``match`` lists several values becomes one row per combination, so
the kernel only ever compares one scope id per row. Windowed metrics share
counters when they count the same thing at the same level over the same window.
Match values are interned up front: a rule may name a strategy that has not
traded yet, and must apply from its first event.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from riskguard.limits.model import Limits, Rule
from riskguard.limits.vocabulary import (
    COUNTER_CODES,
    EVERY_EVENT_METRICS,
    EXPOSURE_METRICS,
    LEVEL,
    METRICS,
    codes,
    metrics_moved_by,
)
from riskguard.state.bundles import COUNTER, NBUCKETS, RULE, Rules
from riskguard.state.keys import KeySpace
from riskguard.vocabulary import ACTION_CODE, EVENT_TYPES, TYPE_CODE

Array = np.ndarray[Any, Any]

#: Metric codes each event type moves, on the event's own scopes (from the metric spec).
FAMILY: dict[int, frozenset[int]] = {
    TYPE_CODE[t]: codes(metrics_moved_by(t)) for t in EVENT_TYPES if metrics_moved_by(t)
}
#: Metric codes a price change moves for every scope holding the symbol.
EXPOSURE = codes(EXPOSURE_METRICS)
#: Metric codes judged before every event (feed silence, consumer lag).
FEED = codes(EVERY_EVENT_METRICS)
#: Counter kind codes per windowed metric code: (numerator, denominator or None).
COUNTERS: dict[int, tuple[int, int | None]] = {
    METRICS[m].code: kinds for m, kinds in COUNTER_CODES.items()
}


@dataclass(frozen=True, slots=True)
class Rulebook:
    """Kernel-ready rows for one :class:`Limits`. ``row_rule[r]`` is row ``r``'s rule."""

    limits: Limits
    rules: Rules
    row_rule: tuple[Rule, ...]
    counter_defs: Array
    """COUNTER records: the windowed counters the rows read."""

    @property
    def n_rows(self) -> int:
        """Number of compiled rows."""
        return int(self.rules.rows.shape[0])


def compile_limits(
    limits: Limits,
    keys: KeySpace,
    *,
    skew_ns: int = 5_000_000_000,
    lateness_ns: int = 1_000_000_000,
) -> Rulebook:
    """Compile ``limits``, interning every match value into ``keys``.

    ``skew_ns`` and ``lateness_ns`` are the engine's time bounds (process settings,
    ``[engine]``), carried in :class:`Rules` for the kernel.
    """
    counters: dict[tuple[int, int, int], int] = {}

    def counter(kind: int, level: int, window_ms: int) -> int:
        key = (kind, level, window_ms * 1_000_000)
        if key not in counters:
            counters[key] = len(counters)
        return counters[key]

    rows: list[tuple[Any, ...]] = []
    row_rule: list[Rule] = []
    for index, rule in enumerate(limits.rules):
        spec = METRICS[rule.metric]
        level = LEVEL[rule.scope]
        c1 = c2 = -1
        if spec.windowed:
            assert rule.window_ms is not None
            num, den = COUNTERS[spec.code]
            c1 = counter(num, level, rule.window_ms)
            if den is not None:
                c2 = counter(den, level, rule.window_ms)
        for match, match_acc, source in _combinations(rule, level, keys):
            row = {
                "metric": spec.code,
                "level": level,
                "action": ACTION_CODE[rule.action],
                "match": match,
                "match_account": match_acc,
                "counter": c1,
                "counter2": c2,
                "min_orders": rule.min_orders,
                "rule": index,
                "source": source,
                "upper": rule.upper,
                "lower": rule.lower,
            }
            rows.append(tuple(row[name] for name in RULE.names or ()))
            row_rule.append(rule)
    n = len(row_rule)
    compiled_rows = np.array(rows, dtype=RULE)
    metric = compiled_rows["metric"]
    by_type = np.full((len(EVENT_TYPES), max(1, n)), -1, dtype=np.int64)
    for t, fam in FAMILY.items():
        moved = [r for r in range(n) if int(metric[r]) in fam]
        by_type[t, : len(moved)] = moved
    exposure = [r for r in range(n) if int(metric[r]) in EXPOSURE]
    feed = [r for r in range(n) if int(metric[r]) in FEED]
    defs = np.zeros(len(counters), dtype=COUNTER)
    for (kind, level, window_ns), k in counters.items():
        defs[k] = (kind, level, -(-window_ns // NBUCKETS), window_ns)
    compiled = Rules(
        rows=compiled_rows,
        by_type=by_type,
        exposure_rows=np.array(exposure, dtype=np.int64),
        feed_rows=np.array(feed, dtype=np.int64),
        revalue_ns=limits.revalue_ms * 1_000_000,
        skew_ns=skew_ns,
        lateness_ns=lateness_ns,
    )
    return Rulebook(limits, compiled, tuple(row_rule), defs)


def _combinations(rule: Rule, level: int, keys: KeySpace) -> list[tuple[int, int, int]]:
    """(match scope id, match account id, source id) for each row of ``rule``."""
    if rule.metric == "feed_silence_ms":
        sources = rule.match.get("source")
        return [(-1, -1, keys.source(s)) for s in sources] if sources else [(-1, -1, -1)]
    own = rule.match.get(rule.scope, ())
    accounts = rule.match.get("account", ()) if rule.scope == "strategy" else ()
    own_ids = [keys.scope(level, v) for v in own] or [-1]
    acc_ids = [keys.scope(LEVEL["account"], v) for v in accounts] or [-1]
    return [(m, a, -1) for m, a in itertools.product(own_ids, acc_ids)]
