"""From the kernel's output to what people read: transitions, alerts, resolves, refusals.

A mix-in of :class:`riskguard.engine.Engine`: each kernel decision becomes a
:class:`~riskguard.vocabulary.Transition` (a state change, an alert, a warning level
crossed, or a resolve naming the alert it ends), recorded by the kill switch; refused
reference data becomes a bad event; a currency met without a rate becomes a system alert.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from riskguard.events import BadEvent
from riskguard.limits.model import Rule
from riskguard.state.codes import (
    EDGE_ALERT,
    MAX_WARN,
    N_REFDATA,
    TO_ALERT,
    TO_JUDGED,
    TO_RESOLVE,
)
from riskguard.state.rearming import rearm_windows
from riskguard.state.rulebook import carried_rows
from riskguard.state.tables import carried_edges
from riskguard.vocabulary import (
    L_FIRM,
    L_SYMBOL,
    STATES,
    Transition,
    system_alert,
    transition_id,
)

if TYPE_CHECKING:
    from riskguard.killswitch import KillSwitch
    from riskguard.state.bundles import Edges, Output
    from riskguard.state.columnar import Built
    from riskguard.state.keys import KeySpace
    from riskguard.state.rulebook import Rulebook
    from riskguard.state.store import StateStore


FX_MISSING = "fx-rate-missing"
"""The system alert raised once for a currency a position or order met without a rate."""


class Decisions:
    """Reading the kernel's decisions (see :class:`riskguard.engine.Engine`)."""

    keys: KeySpace
    store: StateStore
    rulebook: Rulebook
    killswitch: KillSwitch
    clock: Callable[[], int]
    event_time: bool
    _out: Output
    _raised: dict[tuple[int, int, int], tuple[str, float]]
    rule_peaks: np.ndarray
    #: the raised windowed edges a tick re-reads: (the edge table's keys array they were
    #: read from, their keys, keys raised since; :meth:`_windowed_keys`)
    _windowed: tuple[np.ndarray | None, np.ndarray, list[int]]

    if TYPE_CHECKING:  # provided by Engine

        def _grow_out(self) -> None: ...

    def _rearm_windows(self, now: int) -> list[Transition]:
        """Clock tick at ``now`` (ns): the resolves of windowed alerts and warnings whose
        value has fallen back below their re-arm point (:mod:`riskguard.state.rearming`),
        in rule order, then scope name (a rule's rows, its venues, in order)."""
        keys = self._windowed_keys()
        if keys.shape[0] == 0:
            return []
        st, rules = self.store.state, self.rulebook.rules
        while not rearm_windows(now, keys, st, rules, self.rule_peaks, self._out):
            self._grow_out()
        self._windowed = (self._windowed[0], keys[keys >= 0], [])
        n = int(self._out.counts["n"][0])
        if n > 1:
            names, rule = self.keys.scope_names, rules.rows["rule"]
            d = self._out.decisions[:n]
            rs, ss = d["row"].tolist(), d["scope"].tolist()
            key = [(int(rule[r]), names[s], r) for r, s in zip(rs, ss, strict=True)]
            d[:] = d[sorted(range(n), key=key.__getitem__)]
        out: list[Transition] = []
        self._drain(out)
        return out

    def _windowed_keys(self) -> np.ndarray:
        """Keys (``row << 32 | scope``) of at least every raised edge of a windowed row:
        those of the alert-edge table when it was last read whole (at a replacement), and
        those raised since (:meth:`_drain`)."""
        table = self.store.state.edges.keys
        held, keys, raised = self._windowed
        if held is not table:
            live = table[table > 0] - 1
            rows = self.rulebook.rules.rows
            windowed = (rows["counter"] >= 0) & (rows["warns"] != 0)
            row = live >> 32
            keep = row < rows.shape[0]
            keep[keep] = windowed[row[keep]]
            keys, raised = live[keep], []
        elif raised:
            keys = np.unique(np.concatenate([keys, np.array(raised, dtype=np.int64)]))
            raised = []
        self._windowed = (table, keys, raised)
        return keys

    def _refused(self, built: Built, e: int, kind: int, where: str) -> BadEvent:
        symbol = self.keys.scope_names[int(built.batch["symbol"][e])]
        if kind == N_REFDATA:
            return BadEvent(
                "refdata_changed",
                f"instrument event changes the contract size or currency of {symbol}, which "
                "is already held or worked this session; reference data must come first",
                where,
            )
        return BadEvent(
            "no_price",
            f"opening position in {symbol} has no price, and no mark or fill has priced the "
            "symbol yet: give its average cost in 'price', or send a mark first",
            where,
        )

    def _unpriced_currencies(self) -> list[Transition]:
        """A system alert for each currency a position or order met without a rate."""
        cur = self.store.state.currencies
        noted = np.flatnonzero(cur["noted"] == 1)
        alerts = []
        for c in noted.tolist():
            cur["noted"][c] = 2
            code = self.keys.currency_names[c]
            symbols = self._symbols_in(c)
            alerts.append(
                self.killswitch.record(
                    system_alert(
                        FX_MISSING,
                        "fx_rate",
                        self.killswitch.state("firm"),
                        reason=(
                            f"no {code} exchange rate yet: positions and orders in {symbols}, "
                            "and the P&L and fees they realise, are not valued, and every "
                            "money metric of the scopes holding them is unknown (not "
                            f"evaluated) until an fx event for {code} arrives"
                        ),
                        now_ns=self.clock(),
                    )
                )
            )
        return alerts

    def _symbols_in(self, c: int) -> str:
        sym = self.store.state.symbols
        names: list[str] = []
        y = int(self.store.state.currencies["first_symbol"][c])
        while y >= 0 and len(names) < 10:
            names.append(self.keys.scope_names[y].partition(":")[2])
            y = int(sym["next_in_currency"][y])
        return ", ".join(names)

    def _drain(self, into: list[Transition]) -> None:
        """Turn the decisions into :class:`Transition` records, in order, and reset them.

        Ids are named after the evidence's time (:meth:`_evidence_ns`), not the decision
        time: instances deciding the same breach on the same input agree on its id.
        """
        counts = self._out.counts
        n_out = int(counts["n"][0])
        counts["n"] = 0
        counts["need"] = 0
        if n_out == 0:
            return
        decided = self.clock()
        names = self.keys.scope_names
        rows = self.rulebook.rules.rows
        positions = self.store.state.positions
        for _e, r, sid, old, new, value, ts, level, edge, pair in self._out.decisions[
            :n_out
        ].tolist():
            rule = self.rulebook.row_rule[r]
            if self.event_time:
                decided = ts
            scope = names[sid]
            symbol = None
            if pair >= 0:
                symbol = names[int(positions["symbol"][pair])].partition(":")[2]
            elif rule.metric == "restricted":
                symbol = names[int(rows["symbol"][r])].partition(":")[2]
            warn = not math.isnan(level)  # a warning level
            key = (r, pair if pair >= 0 else sid, edge)
            if new in (TO_ALERT, TO_JUDGED) and rows["counter"][r] >= 0:
                self._windowed[2].append(r << 32 | sid)  # re-read at each tick
            at = self._evidence_ns(rule, value, ts)
            if new == TO_JUDGED:  # raised without a page: its resolve names it
                crossed = rule.limit_for(value) if not warn else self._bound(rule, value)
                self._raised[key] = (
                    transition_id(scope, at, self._what(rule, level, symbol)),
                    crossed,
                )
                continue
            if new == TO_ALERT:
                crossed = rule.limit_for(value) if not warn else self._bound(rule, value)
                tr = Transition(
                    id=transition_id(scope, at, self._what(rule, level, symbol)),
                    scope=scope,
                    from_=STATES[old],
                    to=STATES[old],
                    kind="alert",
                    ts=ts,
                    decided_ns=decided,
                    rule=rule.name,
                    metric=rule.metric,
                    value=value,
                    limit=crossed,
                    level=level if warn else None,
                    symbol=symbol,
                    reason=self._reason(rule, r, value, ts),
                )
                self._raised[key] = (tr.id, crossed)
            elif new == TO_RESOLVE:
                # the bound the alert crossed (a band's lower one included), else the
                # nearer bound: an alert raised under other limits (a reload, a restart
                # from a snapshot of other limits) is not remembered
                fallback = self._bound(rule, value) if warn else self._nearer(rule, value)
                ends, crossed = self._raised.pop(key, (None, fallback))
                tr = Transition(
                    id=transition_id(scope, at, f"RESOLVE:{ends or rule.name}"),
                    scope=scope,
                    from_=STATES[old],
                    to=STATES[old],
                    kind="resolve",
                    ts=ts,
                    decided_ns=decided,
                    rule=rule.name,
                    metric=rule.metric,
                    value=value,
                    limit=crossed,
                    level=level if warn else None,
                    symbol=symbol,
                    ends=ends,
                )
            else:
                tr = Transition(
                    id=transition_id(scope, at, STATES[new]),
                    scope=scope,
                    from_=STATES[old],
                    to=STATES[new],
                    kind="auto",
                    ts=ts,
                    decided_ns=decided,
                    rule=rule.name,
                    metric=rule.metric,
                    value=value,
                    limit=rule.limit_for(value),
                    symbol=symbol,
                    reason=self._reason(rule, r, value, ts),
                )
            into.append(self.killswitch.record(tr))

    def _carry_alerts(
        self,
        old: tuple[Sequence[Rule], np.ndarray],
        edges: Edges,
        raised: dict[tuple[int, int, int], tuple[str, float]],
    ) -> list[Transition]:
        """After a limits reload or a restore under other limits (the new rulebook
        installed, its edges empty): the raised alerts and warnings of rules kept
        unchanged move to their new rows, so none is paged again and its resolve names
        it; those of rules removed or changed are resolved now (returned), since nothing
        would judge them again. ``old``: the old limits' ``all_rules`` and RULE rows."""
        rows = carried_rows(*old, self.rulebook)
        kept = carried_edges(edges, rows)
        self.store.state = self.store.state._replace(edges=kept)
        for key, bits in _live(kept):
            self.rule_peaks["edges"][key >> 32] += bin(bits).count("1")
        for (r, s, bit), alert in raised.items():
            if rows[r] >= 0:
                self._raised[(int(rows[r]), s, bit)] = alert
        out: list[Transition] = []
        for key, bits in _live(edges):
            r, s = key >> 32, key & 0xFFFFFFFF
            if r >= rows.shape[0] or rows[r] >= 0:
                continue
            for k in range(MAX_WARN + 1):
                bit = EDGE_ALERT if k == MAX_WARN else 1 << k
                if bits & bit:
                    out.append(self._dropped(old, r, s, bit, raised.get((r, s, bit))))
        return out

    def _dropped(
        self,
        old: tuple[Sequence[Rule], np.ndarray],
        r: int,
        s: int,
        bit: int,
        alert: tuple[str, float] | None,
    ) -> Transition:
        """The resolve of an alert (``bit``: a warning level's or EDGE_ALERT) raised by
        row ``r`` of ``old`` at scope or pair ``s``, whose rule a reload removed or changed."""
        row = old[1][r]
        rule = old[0][int(row["rule"])]
        names = self.keys.scope_names
        symbol = None
        sid = s
        if int(row["per_pair"]):  # s is a position pair: its symbol, the row's scope
            positions = self.store.state.positions
            y = int(positions["symbol"][s])
            symbol = names[y].partition(":")[2]
            level = int(row["level"])
            sid = 0 if level == L_FIRM else y if level == L_SYMBOL else int(positions["owner"][s])
        elif rule.metric == "restricted":
            symbol = names[int(row["symbol"])].partition(":")[2]
        scope = names[sid]
        state = STATES[int(self.store.state.scopes["state"][sid])]
        warn = bit != EDGE_ALERT
        level_at = rule.warn_at[bit.bit_length() - 1] if warn else None
        ends, crossed = alert if alert is not None else (None, rule.limit_for(math.inf))
        now = self.clock()
        still = rule.name in {x.name for x in self.rulebook.limits.all_rules}
        tr = Transition(
            id=transition_id(scope, now, f"RESOLVE:{ends or rule.name}"),
            scope=scope,
            from_=state,
            to=state,
            kind="resolve",
            ts=now,
            decided_ns=now,
            rule=rule.name,
            metric=rule.metric,
            limit=self._bound(rule, crossed) if warn and alert is None else crossed,
            level=level_at,
            symbol=symbol,
            reason=f"limits reload: rule {'changed' if still else 'removed'}",
            ends=ends,
        )
        return self.killswitch.record(tr)

    @staticmethod
    def _what(rule: Rule, level: float, symbol: str | None) -> str:
        """What an alert's id names: the warning level or ALERT, the rule, the symbol."""
        tag = "ALERT:" if math.isnan(level) else f"WARN{level:g}:"
        return f"{tag}{rule.name}" + (f":{symbol}" if symbol else "")

    @staticmethod
    def _evidence_ns(rule: Rule, value: float, ts: int) -> int:
        """The time a decision's id is named after: its triggering event's time, and for
        a feed silence the time the silence began (``ts`` less the silence), which every
        instance following the same input measures alike, whenever its clock ticks."""
        if rule.metric == "feed_silence_ms" and math.isfinite(value):
            return ts - round(value * 1e6)
        return ts

    def _reason(self, rule: Rule, row: int, value: float, ts: int) -> str | None:
        """The words a transition carries beside its evidence: a restricted list's reason,
        or why a feed went silent."""
        if rule.metric == "feed_silence_ms":
            return self._silence(rule, row, value, ts)
        return rule.reason or None

    @staticmethod
    def _nearer(rule: Rule, value: float) -> float:
        """The bound of ``rule`` nearer to ``value``: a band (``min`` and ``max``) is
        re-armed inside, by the bound its alert crossed."""
        if rule.min is not None and rule.max is not None:
            return rule.min if abs(value - rule.min) < abs(rule.max - value) else rule.max
        return rule.limit_for(value)

    @staticmethod
    def _bound(rule: Rule, value: float) -> float:
        """The bound a warning level of ``value`` is a fraction of: ``max`` if positive,
        else ``min``; in a band (``min`` < 0 < ``max``) the side ``value`` came closer to
        (a net short of -850,000 reaches 80 % of a ``min`` of -1,000,000, not of the
        ``max``)."""
        up = rule.max is not None and rule.max > 0
        if up and rule.min is not None and rule.min < 0:
            return rule.upper if value / rule.upper >= value / rule.lower else rule.lower
        return rule.upper if up else rule.lower

    def _silence(self, rule: Rule, row: int, value_ms: float, ts: int) -> str:
        """Why a feed-silence row breached, in words: whose heartbeat (or any event) has
        not come, since when (exact to the ms). A source never heard from is silent since
        start, which is what a fresh ``run`` without its trading system sees: say that it
        is expected, and what ends it: an operator's resume for a halt or REDUCE_ONLY (they
        latch), the source heard again for an alert (it re-arms and is resolved)."""
        source = int(self.rulebook.rules.rows[row]["source"])
        st = self.store.state
        if source >= 0:
            what = f"no heartbeat from {self.keys.source_names[source]}"
            heard = int(st.sources[source]["last_heard_ns"])
        else:
            what = "no event"
            heard = int(st.globals["last_event_ns"][0])
        began = ts - int(value_ms * 1e6)  # when the silence began: the last one, or the start
        seconds = f"{silence_seconds(value_ms)} s"
        if 0 <= heard <= began + 1_000_000:  # heard before the silence began (1 ms of rounding)
            when = datetime.fromtimestamp(heard / 1e9, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
            return f"{what} for {seconds} (last at {when} UTC)"
        if rule.action == "alert":
            ends = "the source is heard" if source >= 0 else "an event comes"
            then = f"the alert resolves when {ends}"
        else:
            state = "the halt" if rule.action == "halt" else "REDUCE_ONLY"
            then = f"{state} stays until an operator resumes"
        expected = "expected while the trading system is not running"
        return f"{what} since start, {seconds}: {expected}; {then}"


def _live(edges: Edges) -> list[tuple[int, int]]:
    """(key, raised bits) of every entry of an alert-edge table."""
    live = edges.keys > 0
    return list(zip((edges.keys[live] - 1).tolist(), edges.vals[live].tolist(), strict=True))


def silence_seconds(value_ms: float) -> str:
    """A silence of ``value_ms`` (ms, finite, >= 0) in seconds, exact to the millisecond,
    without trailing zeros: 2250 -> ``"2.25"``, 2000 -> ``"2"``, 2013.78 -> ``"2.014"``."""
    ms = round(value_ms)
    return f"{ms // 1000:,}.{ms % 1000:03d}".rstrip("0").rstrip(".")
