"""Compile validated limits into the integer/float rows the kernel evaluates.

A rule whose ``match`` lists several values becomes one row per combination, so
the kernel only ever compares one scope id per row. Windowed metrics share
counters when they count the same thing at the same level over the same window.
Match values are interned up front: a rule may name a strategy that has not
traded yet, and must apply from its first event. ``match.side`` and ``match.venue`` of a
metric measured per order or fill select events: they become the row's event filter and
its counters' (a counter limited to one side or venue counts only those events).
Restricted-list entries become rows of metric ``restricted``, one per symbol, judged
only for events in a symbol flagged restricted (``Rules.restricted_rows``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
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
from riskguard.state.bundles import COUNTER, RULE, Rules
from riskguard.state.codes import MAX_WARN, NBUCKETS
from riskguard.state.keys import KeySpace
from riskguard.vocabulary import (
    A_ALERT,
    ACTION_CODE,
    EVENT_TYPES,
    L_ACCOUNT,
    L_STRATEGY,
    L_SYMBOL,
    L_VENUE,
    TYPE_CODE,
)

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
    values_only: Callable[[Rule], bool] | None = None,
) -> Rulebook:
    """Compile ``limits``, interning every match value into ``keys``.

    ``skew_ns`` and ``lateness_ns`` are the engine's time bounds (process settings,
    ``[engine]``), carried in :class:`Rules` for the kernel. Rules for which
    ``values_only`` is true get their rows, windows and peaks but no bounds and no
    warning levels: the kernel keeps their values and never decides on them (group
    mode's summed rules, judged on the instances' sums by :mod:`riskguard.aggregate`).
    """
    counters: dict[tuple[int, int, int, int, int], int] = {}

    def counter(kind: int, level: int, window_ms: int, side: int, venue: int) -> int:
        key = (kind, level, window_ms * 1_000_000, side, venue)
        if key not in counters:
            counters[key] = len(counters)
        return counters[key]

    rows: list[tuple[Any, ...]] = []
    row_rule: list[Rule] = []
    for index, rule in enumerate(limits.all_rules):
        spec = METRICS[rule.metric]
        level = LEVEL[rule.scope]
        sides = rule.event_filter("side")
        side = 0 if len(sides) != 1 else 1 if sides[0] == "buy" else -1
        judged = values_only is None or not values_only(rule)
        warns = rule.warn_at if judged else ()
        warn = [*warns, *[np.nan] * (MAX_WARN - len(warns))]
        for match, match_acc, source, venue, symbol, event_acc in _combinations(rule, keys):
            c1 = c2 = -1
            if spec.windowed:
                assert rule.window_ms is not None
                num, den = COUNTERS[spec.code]
                c1 = counter(num, level, rule.window_ms, side, venue)
                if den is not None:
                    c2 = counter(den, level, rule.window_ms, side, venue)
            action = ACTION_CODE[rule.action]
            row = {
                "metric": spec.code,
                "level": level,
                "action": action,
                "match": match,
                "match_account": match_acc,
                "counter": c1,
                "counter2": c2,
                "min_orders": rule.min_orders,
                "rule": index,
                "source": source,
                "side": side,
                "venue": venue,
                "symbol": symbol,
                "event_account": event_acc,
                "upper": rule.upper if judged else np.inf,
                "lower": rule.lower if judged else -np.inf,
                "warn0": warn[0],
                "warn1": warn[1],
                "warn2": warn[2],
                "warn3": warn[3],
                "rearm": rule.alert_rearm,
                "warn_rearm": rule.warn_rearm,
                "per_pair": int(spec.per_position),
                "warns": int(judged and (bool(rule.warn_at) or action == A_ALERT)),
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
    restricted = [r for r in range(n) if row_rule[r].metric == "restricted"]
    defs = np.zeros(len(counters), dtype=COUNTER)
    for (kind, level, window_ns, side, venue), k in counters.items():
        defs[k] = (kind, level, side, venue, -(-window_ns // NBUCKETS), window_ns)
    compiled = Rules(
        rows=compiled_rows,
        by_type=by_type,
        exposure_rows=np.array(exposure, dtype=np.int64),
        feed_rows=np.array(feed, dtype=np.int64),
        restricted_rows=np.array(restricted, dtype=np.int64),
        revalue_ns=limits.revalue_ms * 1_000_000,
        skew_ns=skew_ns,
        lateness_ns=lateness_ns,
    )
    return Rulebook(limits, compiled, tuple(row_rule), defs)


def restricted_symbols(book: Rulebook) -> list[int]:
    """Scope ids of the symbols the restricted list names."""
    rows = book.rules.rows
    return sorted({int(rows["symbol"][r]) for r in book.rules.restricted_rows.tolist()})


Combination = tuple[int, int, int, int, int, int]


def _combinations(rule: Rule, keys: KeySpace) -> list[Combination]:
    """(match scope id, match account id, source id, venue filter id, symbol filter id,
    event account filter id) for each row of ``rule``."""
    if rule.metric == "feed_silence_ms":
        sources = rule.match.get("source")
        if not sources:
            return [(-1, -1, -1, -1, -1, -1)]
        return [(-1, -1, keys.source(s), -1, -1, -1) for s in sources]
    if rule.metric == "restricted":
        symbol_ids = [keys.scope(L_SYMBOL, v) for v in rule.match["symbol"]]
        account_ids = [keys.scope(L_ACCOUNT, v) for v in rule.match.get("account", ())] or [-1]
        strategy_ids = [keys.scope(L_STRATEGY, v) for v in rule.match.get("strategy", ())] or [-1]
        combos = itertools.product(symbol_ids, account_ids, strategy_ids)
        return [(st, -1, -1, -1, y, a) for y, a, st in combos]
    level = LEVEL[rule.scope]
    own = rule.match.get(rule.scope, ())
    accounts = rule.match.get("account", ()) if rule.scope == "strategy" else ()
    own_ids = [keys.scope(level, v) for v in own] or [-1]
    acc_ids = [keys.scope(L_ACCOUNT, v) for v in accounts] or [-1]
    venue_ids = [keys.scope(L_VENUE, v) for v in rule.event_filter("venue")] or [-1]
    return [(m, a, -1, v, -1, -1) for m, a, v in itertools.product(own_ids, acc_ids, venue_ids)]


def carried_rows(old_rules: Sequence[Rule], old_rows: Array, new: Rulebook) -> Array:
    """For each row of an old rulebook (``old_rules``, its limits' ``all_rules``, and
    ``old_rows``, its RULE rows), the row of ``new`` that judges the same thing (int64,
    -1: none). A rule carries over when ``new`` has a rule equal to it in every field
    (its description aside): its rows come in the same order, one per match combination.
    A rule removed or changed in any bound, level, window, match or action has none."""
    same = {_definition(rule): i for i, rule in enumerate(new.limits.all_rules)}
    new_rows: dict[int, list[int]] = {}
    for r, i in enumerate(new.rules.rows["rule"].tolist()):
        new_rows.setdefault(i, []).append(r)
    out = np.full(old_rows.shape[0], -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for r, i in enumerate(old_rows["rule"].tolist()):
        j = same.get(_definition(old_rules[i]))
        if j is None:
            continue
        k = seen.get(i, 0)
        seen[i] = k + 1
        rows = new_rows.get(j, [])
        if k < len(rows):
            out[r] = rows[k]
    return out


def _definition(rule: Rule) -> tuple[Any, ...]:
    """What a rule judges and how: every field but its description."""
    match = tuple(sorted((k, tuple(v)) for k, v in rule.match.items()))
    return (
        rule.name,
        rule.metric,
        rule.scope,
        rule.action,
        rule.max,
        rule.min,
        rule.window_ms,
        match,
        rule.min_orders,
        tuple(rule.warn_at),
        rule.rearm,
        rule.reason,
    )
