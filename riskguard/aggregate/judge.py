"""Judging the summed values of group mode's cross-partition rules.

One instance judges the sums (the owner of the first input partition, so that each
breach is decided once; :mod:`riskguard.ingest.aggregation`). Its kill switch latches
the decisions and every other instance adopts them from the control topic, as it adopts
an active-active peer's. The rules of judging are the kernel's
(:mod:`riskguard.state.judging`), applied to each scope's sum:

- a breach (``value > max`` or ``value < min``) escalates the scope to the rule's
  action if that is stricter; a breach whose evidence (the sums' newest ``as_of_ns``)
  is no newer than the scope's judged time (an operator resumed since) changes nothing;
- an alert rule raises once per breach and resolves once the value is back inside by
  ``rearm``; each warning level (``warn_at``) raises once and re-arms ``rearm`` (default
  0.05) below its level;
- an unknown sum (a currency without a rate on some instance) is not judged.

Raised alert and warning edges live in this object; the judging member publishes them
in its aggregation records (:meth:`SumJudge.raised_edges`), and a member that becomes
the judge takes over those of the newest judge (:meth:`SumJudge.take_over`): an alert
standing at a handover is not raised again, and its resolve names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from riskguard.aggregate.records import Cover, RaisedEdge, no_parts, row_sums
from riskguard.decisions import Decisions
from riskguard.limits.model import Rule
from riskguard.state.codes import LEVEL_RTOL
from riskguard.vocabulary import Transition, transition_id

if TYPE_CHECKING:
    from riskguard.engine import Engine

EdgeKey = tuple[str, int, str]
"""(rule name, compiled row of the rule, scope)."""
ALERT_EDGE = -1
"""The edge of an alert rule's own breach (warning levels are 0, 1, ...)."""


def _utilisation(rule: Rule, v: float) -> float:
    """The kernel's utilisation of a row: v over the upper bound if above 0, or over the
    lower one if below 0, the larger (:func:`riskguard.state.judging.utilisation`)."""
    u = -math.inf
    if rule.max is not None and rule.max > 0:
        u = v / rule.max
    if rule.min is not None and rule.min < 0:
        u = max(u, v / rule.min)
    return u


class SumJudge:
    """Judges :class:`~riskguard.aggregate.records.Cover` sums for ``engine``'s kill switch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.edges: dict[EdgeKey, set[int]] = {}
        """Raised warning levels (0, 1, ...) and alert edge (:data:`ALERT_EDGE`) per key;
        only keys with one raised are kept."""
        self.raised: dict[tuple[EdgeKey, int], tuple[str, float]] = {}
        self.values: dict[str, dict[str, float]] = {}
        """Latest sums judged: rule name -> scope -> value (rows of a rule: the largest
        utilisation), for status."""
        self.judged: dict[EdgeKey, tuple[float, int, bool]] = {}
        """The sum each (rule, row, scope) was last judged at, with the scope's judged
        time then and whether the sums' evidence was newer than it: an unchanged sum is
        not judged again (no event moved it, so it carries no new evidence) unless an
        operator resumed the scope since (its judged time moved) or the evidence has
        become newer than the resume (the kernel judges a breach standing after a
        resume again at the scope's next event)."""
        self.unsummed: tuple[str, ...] = ()
        """Rules some record of the latest cover did not count (other limits)."""
        self._digest = ""

    def raised_edges(self) -> tuple[RaisedEdge, ...]:
        """The alerts and warnings raised and not resolved, for this member's record."""
        return tuple(
            RaisedEdge(rule, row, scope, bit, alert_id, limit)
            for ((rule, row, scope), bit), (alert_id, limit) in sorted(self.raised.items())
        )

    def take_over(self, edges: Sequence[RaisedEdge], digest: str) -> None:
        """Hold ``edges`` (the previous judge's, counted under the limits of ``digest``)
        as raised here: they are not raised again, and resolve naming their alert. Sums
        already judged are forgotten (each is judged again on the next cover)."""
        self.edges, self.raised, self.judged, self._digest = {}, {}, {}, digest
        for e in edges:
            key = (e.rule, e.row, e.scope)
            self.edges.setdefault(key, set()).add(e.bit)
            self.raised[(key, e.bit)] = (e.alert_id, e.limit)

    def judge(
        self,
        cover: Cover,
        rules: Sequence[Rule],
        digest: str,
        lag: Mapping[str, int] | None = None,
    ) -> list[Transition]:
        """Judge every row of ``rules`` (the summed rules of the limits in force, whose
        digest is ``digest``) on ``cover`` (complete). Returns the transitions latched
        (state changes first recorded by the kill switch) in rule order. Nothing is
        judged on records counted under other limits (a reload under way). ``lag``: per
        member, how far this engine's clock is ahead of the member's (ns), for the
        expiry of window counts (:func:`~riskguard.aggregate.records.row_sums`)."""
        if digest != self._digest:  # new limits: edges restart, as the kernel's do
            self.edges, self.raised, self.judged, self._digest = {}, {}, {}, digest
        if not cover.complete or cover.digests != {digest}:
            return []
        book = self.engine.rulebook
        out: list[Transition] = []
        unsummed: list[str] = []
        values: dict[str, dict[str, float]] = {}
        names = ", ".join(r.instance for r in cover.records)
        now = self.engine.clock()  # windows end here (a silent member's counts expire)
        why = f"summed over {len(cover.records)} instance(s): {names}"
        for rule in rules:
            n_rows = sum(1 for r in book.row_rule if r.name == rule.name)
            for j in range(n_rows):
                sums = row_sums(
                    cover.records,
                    rule.name,
                    j,
                    rule.metric,
                    rule.min_orders,
                    window_ms=rule.window_ms,
                    now_ns=now,
                    lag=lag,
                )
                if sums is None:
                    unsummed.append(rule.name)
                    break
                if rule.scope == "firm":
                    sums.setdefault("firm", no_parts(rule.metric, rule.min_orders))
                for key in self.edges:  # a scope alerted before and now at 0 (or NaN)
                    if key[0] == rule.name and key[1] == j and key[2] not in sums:
                        sums[key[2]] = no_parts(rule.metric, rule.min_orders)
                seen = values.setdefault(rule.name, {})
                for scope, s in sorted(sums.items()):
                    if math.isnan(s.value):
                        continue
                    old = seen.get(scope)
                    if old is None or _utilisation(rule, s.value) > _utilisation(rule, old):
                        seen[scope] = s.value
                    judged_ns = self._judged_ns(scope)
                    seen_as = (s.value, judged_ns, cover.as_of_ns > judged_ns)
                    if self.judged.get((rule.name, j, scope)) == seen_as:
                        continue
                    self.judged[(rule.name, j, scope)] = seen_as
                    reason = f"{why}{'; ' + rule.reason if rule.reason else ''}"
                    out += self._one(rule, j, scope, s.value, cover.as_of_ns, reason)
                    if not self.edges.get((rule.name, j, scope)):  # keep raised edges only
                        self.edges.pop((rule.name, j, scope), None)
        self.values, self.unsummed = values, tuple(unsummed)
        return out

    def _judged_ns(self, scope: str) -> int:
        st = self.engine.store.state
        judged = int(st.globals["judged_ns"][0])
        sid = self.engine.keys.find_scope(scope)
        if sid is not None and sid < st.scopes.shape[0]:
            judged = max(judged, int(st.scopes["judged_ns"][sid]))
        return judged

    def _one(
        self, rule: Rule, j: int, scope: str, v: float, at: int, reason: str
    ) -> list[Transition]:
        ks = self.engine.killswitch
        live = at > self._judged_ns(scope)
        key = (rule.name, j, scope)
        bits = self.edges.setdefault(key, set())
        u = _utilisation(rule, v)
        now = self.engine.clock()
        state = ks.state(scope)
        out: list[Transition] = []

        def edge(kind: str, bit: int, level: float | None, limit: float) -> None:
            if kind == "alert":
                tag = f"WARN{level:g}:" if level is not None else "ALERT:"
                tid = transition_id(scope, at, f"{tag}{rule.name}")
                self.raised[(key, bit)] = (tid, limit)
            else:
                ends, limit = self.raised.pop((key, bit), (None, limit))
                tid = transition_id(scope, at, f"RESOLVE:{ends or rule.name}")
            tr = Transition(
                id=tid,
                scope=scope,
                from_=state,
                to=state,
                kind=kind,
                ts=at,
                decided_ns=now,
                rule=rule.name,
                metric=rule.metric,
                value=v,
                limit=limit,
                level=level,
                reason=reason if kind == "alert" else None,
                ends=None if kind == "alert" else ends,
            )
            out.append(ks.record(tr))

        for k, f in enumerate(rule.warn_at):
            if k in bits:
                if u < f - rule.warn_rearm - LEVEL_RTOL * f:
                    bits.discard(k)
                    edge("resolve", k, f, Decisions._bound(rule, v))
            elif live and u >= f - LEVEL_RTOL * f:
                bits.add(k)
                edge("alert", k, f, Decisions._bound(rule, v))
        breach = v > rule.upper or v < rule.lower
        if rule.action == "alert":
            if ALERT_EDGE in bits:
                if not breach and (
                    rule.alert_rearm <= 0.0 or u < 1.0 - rule.alert_rearm - LEVEL_RTOL
                ):
                    bits.discard(ALERT_EDGE)
                    edge("resolve", ALERT_EDGE, None, Decisions._nearer(rule, v))
            elif breach and live:
                bits.add(ALERT_EDGE)
                edge("alert", ALERT_EDGE, None, rule.limit_for(v))
            return out
        if breach and live:
            to = "HALTED" if rule.action == "halt" else "REDUCE_ONLY"
            tr = ks.escalate(
                Transition(
                    id=transition_id(scope, at, to),
                    scope=scope,
                    from_=state,
                    to=to,
                    kind="auto",
                    ts=at,
                    decided_ns=now,
                    rule=rule.name,
                    metric=rule.metric,
                    value=v,
                    limit=rule.limit_for(v),
                    reason=reason,
                )
            )
            if tr is not None:
                out.append(tr)
        return out


__all__ = ["ALERT_EDGE", "RaisedEdge", "SumJudge"]
