"""The engine: apply a batch of events -> update state -> evaluate rules -> transitions.

Pure and replayable: no I/O, the clock is injected, and the same events give the same
transitions however they are cut into batches. The live sidecar and ``riskguard
replay`` both drive this one class. Inspection (positions, values, peaks) is in
:mod:`riskguard.inspection`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from riskguard.decisions import Decisions
from riskguard.events import BadEvent, Event
from riskguard.inspection import Inspection, RulePeak
from riskguard.killswitch import KillSwitch
from riskguard.limits.load import LimitsError
from riskguard.limits.model import Limits, Rule
from riskguard.limits.vocabulary import METRICS
from riskguard.settings import EngineSettings
from riskguard.state.bundles import (
    CLOSED,
    DECISION,
    NOTE,
    OUT_COUNTS,
    PEAK,
    Edges,
    Output,
    fill_record,
)
from riskguard.state.codes import (
    N_AHEAD,
    N_BUSTED,
    N_DUPLICATE,
    N_JUMP,
    N_KEPT,
    N_LATE,
    N_NOPRICE,
    N_REFDATA,
    N_REUSED,
    N_SKEWED,
    OWN_TIME_NS,
)
from riskguard.state.columnar import Built, build
from riskguard.state.counters import C_DUP
from riskguard.state.kernel import apply_batch, settle, tick
from riskguard.state.keys import KeySpace
from riskguard.state.revaluation import judge_scopes
from riskguard.state.rulebook import (
    EXPOSURE,
    Rulebook,
    carried_rows,
    compile_limits,
    restricted_symbols,
)
from riskguard.state.store import StateStore
from riskguard.state.tables import empty_edges
from riskguard.vocabulary import EVENT_TYPES, Transition
from riskguard.warmup import warm_events, warm_limits

Clock = Callable[[], int]
#: Metric codes a scope holds between events (judged on a reload that adds or changes a rule)
SCOPE_METRICS = EXPOSURE | {METRICS["open_orders"].code}
__all__ = ["Engine", "Result", "RulePeak", "Skewed", "is_warm", "warm_up"]


@dataclass(frozen=True, slots=True)
class Skewed:
    """An event stamped too far ahead of the clock (applied at the corrected time)."""

    origin: str
    """Where it came from (a line number, a Kafka coordinate)."""
    key: str
    """Whose clock it is: ``source:<name>`` for a heartbeat, else its account, or symbol."""
    skew_ns: int
    ts: int
    """Its own (uncorrected) timestamp."""


@dataclass(slots=True)
class Result:
    """What one :meth:`Engine.apply` did."""

    applied: int = 0
    transitions: list[Transition] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    duplicates: int = 0
    """Redeliveries recognised and not applied again (docs/events.md, Redelivery)."""
    skewed: list[Skewed] = field(default_factory=list)
    late: int = 0
    """Events beyond the lateness bound, counted in windows as now."""
    jumps: int = 0
    """Replay: gaps in event time the clock followed (three events in a row ahead)."""
    #: events applied per type code (index = position in ``EVENT_TYPES``)
    type_counts: np.ndarray = field(
        default_factory=lambda: np.zeros(len(EVENT_TYPES), dtype=np.int64)
    )


def _output(cap: int, batch_len: int = 0) -> Output:
    return Output(
        decisions=np.zeros(cap, dtype=DECISION),
        notes=np.zeros(2 * batch_len, dtype=NOTE),
        closed=np.zeros(batch_len, dtype=CLOSED),
        counts=np.zeros(1, dtype=OUT_COUNTS),
    )


def _peaks(rows: int) -> np.ndarray:
    return np.repeat(fill_record(PEAK, high=-np.inf, low=np.inf, high_scope=-1, low_scope=-1), rows)


class Engine(Inspection, Decisions):
    """State, rules and kill switch for one trading system. Owned by one task."""

    def __init__(
        self,
        limits: Limits,
        clock: Clock | None = None,
        *,
        warm: bool = True,
        event_time: bool = False,
        settings: EngineSettings | None = None,
        values_only: Callable[[Rule], bool] | None = None,
    ) -> None:
        """``event_time=True`` (replay) makes the latest event time the clock, and
        stamps each automatic decision with its triggering event's time. ``settings``
        bound clock skew, lateness and the redelivery memory (defaults: EngineSettings).
        Rules for which ``values_only`` is true are counted and valued, never judged
        here (group mode's summed rules: :func:`riskguard.state.rulebook.compile_limits`)."""
        self.event_time = event_time
        self.values_only = values_only
        self.settings = settings or EngineSettings()
        self.clock: Clock = clock or (self._event_clock if event_time else time.time_ns)
        self.keys = KeySpace(limits.base_currency)
        self.store = StateStore()
        #: raised alert and warning edges -> the id of the alert that raised them, so that
        #: its resolve can name it and the bound it crossed: (row, scope or pair, edge bit)
        #: -> (transition id, limit)
        self._raised: dict[tuple[int, int, int], tuple[str, float]] = {}
        self.killswitch = KillSwitch(
            self.keys,
            lambda: self.store.state.scopes,
            self.clock,
            reserve=lambda: self.store.reserve(self.keys),
        )
        self._own_time = False
        self.rulebook = self._install(limits)
        self._out = _output(4096)
        self._ahead: list[Skewed] = []  # replay: ahead of the clock, skewed unless a jump
        self.events_applied = 0
        self.kernel_ns = 0
        """Time spent inside the numba kernel (``apply_batch``), for benchmarks and metrics."""
        if warm:
            warm_up()

    # limits -------------------------------------------------------------------
    def _install(self, limits: Limits) -> Rulebook:
        book = compile_limits(
            limits,
            self.keys,
            skew_ns=self.settings.skew_ns,
            lateness_ns=OWN_TIME_NS if self._own_time else self.settings.lateness_ns,
            values_only=self.values_only,
        )
        self.store.reset_counters(book.counter_defs)
        self.store.reserve(self.keys)
        flags = self.store.state.symbols["restricted"]
        flags[:] = 0
        flags[restricted_symbols(book)] = 1
        self.rule_peaks = _peaks(book.n_rows)
        self.store.state = self.store.state._replace(edges=empty_edges())
        self._raised, self._windowed = {}, (None, np.zeros(0, dtype=np.int64), [])
        return book

    def recompile(self) -> None:
        """Recompile the limits in force against the current key space (after a restore)."""
        self.rulebook = self._install(self.limits)

    def replace_limits(self, limits: Limits) -> list[Transition]:
        """Swap in new limits between batches; returns what it decided.

        Latched states and judged times are untouched; windows whose kind, scope and
        length did not change keep their counts (duplicate-order windows their recent
        orders); rule peaks restart. A rule kept unchanged keeps its raised alerts and
        warnings (none is paged again, and its resolve still names it); those of a rule
        removed or changed are resolved here (a pager would otherwise hold them open
        forever). A rule added or changed whose metric a scope holds (exposure, P&L,
        open orders) is judged at once on the book as it stands (its decisions returned
        too); other metrics at their next evaluation.
        Raises :class:`LimitsError` (nothing changes) for another ``base_currency``: every
        amount held is in the old one, so that takes a restart.
        """
        if limits.base_currency != self.keys.base_currency:
            raise LimitsError(
                limits.source,
                [
                    f"'base_currency' {limits.base_currency!r} differs from "
                    f"{self.keys.base_currency!r} in force: every amount held is in it; "
                    "restart riskguard to change it"
                ],
            )
        old = (self.limits.all_rules, self.rulebook.rules.rows)
        edges, raised, width = self.store.state.edges, self._raised, self.rulebook.rules.revalue_ns
        self.rulebook = self._install(limits)
        self.rebase_epochs(width)
        resolves = self._carry_alerts(old, edges, raised)
        return resolves + self._judge_new_rows(carried_rows(*old, self.rulebook))

    def rebase_epochs(self, width_ns: int) -> None:
        """Renumber revaluation epochs counted in ``width_ns`` in the width of the limits in
        force (a reload or restore that changed ``revalue_ms``; see
        :meth:`StateStore.rebase_epochs`)."""
        self.store.rebase_epochs(width_ns, self.rulebook.rules.revalue_ns)

    def _judge_new_rows(self, carried: np.ndarray) -> list[Transition]:
        """Judge the rows a reload added or changed (none of ``carried``) whose metric a
        scope holds (exposure, P&L, open orders) on the book as it stands, at the
        engine's clock: a limit tightened below the value halts now, not at the next
        fill or mark of a held symbol (which, after the close, may be the next day)."""
        now = self.last_event_ns
        kept = set(carried[carried >= 0].tolist())
        metric = self.rulebook.rules.rows["metric"].tolist()
        rows = [r for r, m in enumerate(metric) if r not in kept and m in SCOPE_METRICS]
        if now < 0 or not rows:
            return []
        n = self.keys.n_scopes
        self.store.reserve(self.keys)
        need = 5 * len(rows) * n  # four warning levels and a state or alert per scope
        if self._out.decisions.shape[0] < need:
            self._out = _output(need, self._out.closed.shape[0])
        self._make_room(0)
        picked = np.array(rows, dtype=np.int64)
        st, rules = self.store.state, self.rulebook.rules
        judge_scopes(picked, n, now, st, rules, self.rule_peaks, self._out)
        out: list[Transition] = []
        self._drain(out)
        return out

    def count_at_own_time(self, on: bool) -> None:
        """``on``: every event counts in windows at its own time, however far behind the
        clock (``off``: beyond ``settings.max_lateness_ms`` it counts as now, the live
        rule). For a rebuild reading several partitions at different speeds: an event of
        a partition read behind the others is history, not a late delivery, and counted
        as now it would fill today's windows with it (a false breach right after). An
        event older than a counter's whole ring is then in none of its windows (live, it
        counts in the oldest bucket: a firm window ahead of a partition read behind would
        pile that partition's history into it)."""
        self._own_time = on  # kept across a limits reload
        bound = OWN_TIME_NS if on else self.settings.lateness_ns
        rules = self.rulebook.rules._replace(lateness_ns=bound)
        self.rulebook = dataclasses.replace(self.rulebook, rules=rules)

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        return self.rulebook.limits

    def raised_alerts(self) -> list[tuple[int, int, int, str, float]]:
        """The alerts and warnings raised and not resolved yet, for snapshots: one
        ``(rule row, scope or pair id, edge bit, alert's transition id, limit it
        crossed)`` each, so that a resolve after a restart still names the alert it
        ends (a pager closes the incident by that id)."""
        return [(r, s, b, tid, crossed) for (r, s, b), (tid, crossed) in self._raised.items()]

    def restore_raised_alerts(self, rows: Sequence[Sequence[Any]]) -> None:
        """Take back :meth:`raised_alerts` from a snapshot of the same limits (rows are
        rule rows). Raises :class:`ValueError` for a row that is not of that shape."""
        raised: dict[tuple[int, int, int], tuple[str, float]] = {}
        for row in rows:
            r, s, b, tid, crossed = row
            if not isinstance(tid, str):
                raise ValueError(f"raised alert {row!r}: id is not a string")
            raised[(int(r), int(s), int(b))] = (tid, float(crossed))
        self._raised = raised

    def carry_alerts(
        self,
        rules: Sequence[Rule],
        rows: np.ndarray,
        edges: Edges,
        raised: Sequence[Sequence[Any]],
    ) -> list[Transition]:
        """After restoring a snapshot taken under other limits (``rules``: their
        ``all_rules``, ``rows``: their RULE rows; ``edges`` and ``raised``, as in
        :meth:`raised_alerts`, the snapshot's): what :meth:`replace_limits` does with
        raised alerts. Returns the resolves of those of rules removed or changed. Raises
        :class:`ValueError` for a raised alert not of that shape."""
        self.restore_raised_alerts(raised)
        before, self._raised = self._raised, {}
        return self._carry_alerts((rules, rows), edges, before)

    # applying ---------------------------------------------------------------
    def apply(
        self,
        events: Sequence[Event],
        origins: Sequence[str] | None = None,
        wall_ns: int | None = None,
    ) -> Result:
        """Apply events in order and return the transitions they caused.

        ``origins[j]`` labels where event ``j`` came from (a line number, a Kafka
        coordinate), for bad and skewed events. ``wall_ns`` is the wall-clock time of a
        live run: it bounds event time (clock skew) and gives ``consumer_lag_ms``; leave
        it out in replays.
        """
        return self.apply_columnar(build(events, self.keys, origins), origins, wall_ns)

    def apply_columnar(
        self, built: Built, origins: Sequence[str] | None = None, wall_ns: int | None = None
    ) -> Result:
        """Apply an already-built batch (``state.columnar.build`` with this engine's keys).

        Split out of :meth:`apply` so benchmarks can time the kernel on its own.
        """
        batch = built.batch
        wall = -1 if wall_ns is None or self.event_time else wall_ns
        result = Result(bad=list(built.bad), duplicates=built.duplicates)
        n = len(batch)
        if n == 0:
            return result
        self.store.reserve(self.keys)
        if self._out.closed.shape[0] < n:
            self._out = _output(self._out.decisions.shape[0], n)
        skipped = 0
        start = 0
        while start < n:
            self._make_room(n - start)
            began = time.perf_counter_ns()
            nxt = apply_batch(
                start,
                wall,
                batch,
                self.store.state,
                self.rulebook.rules,
                self.rule_peaks,
                self._out,
            )
            self.kernel_ns += time.perf_counter_ns() - began
            self._drain(result.transitions)
            skipped += self._read_notes(built, origins, result)
            self._remember_closed()
            if nxt == start:  # one event needs more output rows than the buffer holds
                self._grow_out()
            start = nxt
        self.store.forget(self.keys, self.settings.horizon_ns, self.settings.dedupe_max_ids)
        result.transitions += self._unpriced_currencies()
        result.applied = n - skipped
        result.type_counts = np.bincount(batch["typ"], minlength=len(EVENT_TYPES))
        self.events_applied += result.applied
        return result

    def tick(self, now_ns: int | None = None) -> list[Transition]:
        """Advance to ``now_ns`` (default: the clock) without an event.

        Applies price moves queued for the next revaluation epoch, checks feed silence,
        then resolves the windowed alerts and warnings whose window has emptied.
        """
        now = self.clock() if now_ns is None else now_ns
        out: list[Transition] = []
        while True:
            self._make_room(0)
            done = tick(now, self.store.state, self.rulebook.rules, self.rule_peaks, self._out)
            self._drain(out)
            if done:
                return out + self._rearm_windows(now)
            self._grow_out()

    def settle(self) -> list[Transition]:
        """End of a stream (a replay's last line): apply the price moves and own-price lots
        still waiting for the next revaluation epoch, and judge their holders, as the next
        event or clock tick would have. No time passes for feed silence."""
        out: list[Transition] = []
        while True:
            self._make_room(0)
            done = settle(self.store.state, self.rulebook.rules, self.rule_peaks, self._out)
            self._drain(out)
            if done:
                return out
            self._grow_out()

    def unsettled_skew(self) -> list[Skewed]:
        """Replay, end of stream: events still ahead of the clock (no event came back on
        time, and too few for a jump), reported as skewed; forgets them."""
        ahead, self._ahead = self._ahead, []
        return ahead

    def judge_until(self, ts_ns: int) -> None:
        """Treat breaches from events at or before ``ts_ns`` as already decided.

        Set on restart to the event time the previous instance had reached, so
        rebuilding state by replaying input does not re-page or re-halt.
        """
        g = self.store.state.globals
        g["judged_ns"] = max(int(g["judged_ns"][0]), ts_ns)

    def follow_clock(self, ts_ns: int) -> None:
        """Group mode: move the engine's clock up to ``ts_ns`` (ns), the latest event time
        another member has applied; never back. The clock is what lateness is measured
        against: one instance reading every partition counts an event more than
        ``settings.max_lateness_ms`` behind the latest event of *any* partition as now,
        and a member knowing only its own partitions' times counted a partition delivered
        behind the others at its own, older time (out of one instance's windows)."""
        g = self.store.state.globals
        g["last_event_ns"] = max(int(g["last_event_ns"][0]), ts_ns)

    @property
    def last_event_ns(self) -> int:
        """The engine's clock: the latest (corrected) event time applied, -1 before any."""
        return int(self.store.state.globals["last_event_ns"][0])

    def _event_clock(self) -> int:
        return max(0, self.last_event_ns)

    def _make_room(self, events: int) -> None:
        """Size the hash tables for one kernel call over ``events`` events."""
        dup_counters = int(np.count_nonzero(self.store.state.counters.defs["kind"] == C_DUP))
        self.store.make_room(self._out.decisions.shape[0], events * dup_counters)

    def _grow_out(self) -> None:
        need = int(self._out.counts["need"][0])
        cap = max(need, 2 * self._out.decisions.shape[0])
        self._out = _output(cap, self._out.closed.shape[0])

    def _remember_closed(self) -> None:
        """Orders that stopped working: remembered until the redelivery horizon."""
        counts = self._out.counts
        k = int(counts["n_closed"][0])
        if k:
            closed = self._out.closed[:k]
            self.keys.closed_orders.extend(closed["closed_ns"], closed["order"])
            counts["n_closed"] = 0

    def _read_notes(self, built: Built, origins: Sequence[str] | None, into: Result) -> int:
        """Turn the kernel's notes into counts, bad events and skew reports.

        Returns how many events were not applied (redeliveries and bad events).
        """
        counts = self._out.counts
        k = int(counts["n_notes"][0])
        counts["n_notes"] = 0
        skipped = 0
        for e, kind, value in self._out.notes[:k].tolist():
            j = built.index[e]
            where = origins[j] if origins is not None else f"event {j}"
            if kind == N_DUPLICATE:
                into.duplicates += 1
                skipped += 1
            elif kind == N_LATE:
                into.late += 1
            elif kind in (N_SKEWED, N_AHEAD):
                ts = int(built.batch["ts"][e])
                skew = Skewed(where, self._whose(built, e), value, ts)
                (into.skewed if kind == N_SKEWED else self._ahead).append(skew)
            elif kind == N_KEPT:
                into.skewed += self._ahead
                self._ahead.clear()
            elif kind == N_JUMP:
                into.jumps += 1
                self._ahead.clear()
            elif kind == N_REUSED:
                skipped += 1
                oid = int(built.batch["order"][e])
                into.bad.append(
                    BadEvent(
                        "order_id_reused",
                        f"{('new order', 'replace of')[value]} {self.keys.order_names[oid]!r} "
                        "reuses the id of a working order with other fields",
                        where,
                    )
                )
            elif kind == N_BUSTED:
                skipped += 1
                into.bad.append(
                    BadEvent(
                        "exec_busted",
                        "correction or bust of an execution that was already busted",
                        where,
                    )
                )
            elif kind in (N_REFDATA, N_NOPRICE):
                skipped += 1
                into.bad.append(self._refused(built, e, kind, where))
        return skipped

    def _whose(self, built: Built, e: int) -> str:
        rec = built.batch[e]
        names = self.keys.scope_names
        if rec["source"] >= 0:
            return f"source:{self.keys.source_names[int(rec['source'])]}"
        if rec["account"] >= 0:
            return names[int(rec["account"])]
        return names[int(rec["symbol"])]


_warm = False


def is_warm() -> bool:
    """The kernels were compiled (or loaded) by :func:`warm_up` in this process."""
    return _warm


def warm_up() -> None:
    """Compile (or load from cache) every kernel before the first real event."""
    global _warm  # noqa: PLW0603 - one compile per process, shared by all engines
    if _warm:
        return
    engine = Engine(warm_limits(), clock=lambda: 0, warm=False)
    engine.apply(warm_events())
    engine.tick(10**18)
    store = engine.store  # the table rehashes, on a forced resize
    store.make_room(4 * store.state.edges.keys.shape[0], 4 * store.state.dups.slots.shape[0])
    _warm = True
