"""The engine: apply a batch of events -> update state -> evaluate rules -> transitions.

Pure and replayable: no I/O, the clock is injected, and the same events give
the same transitions however they are cut into batches. The live sidecar and
``riskguard replay`` both drive this one class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from riskguard.events import BadEvent, Event
from riskguard.killswitch import KillSwitch
from riskguard.limits.model import Limits, Rule
from riskguard.state.bundles import DECISION, OUT_COUNTS, PEAK, Output, fill_record
from riskguard.state.columnar import build
from riskguard.state.counters import C_DUP
from riskguard.state.kernel import apply_batch, tick
from riskguard.state.keys import KeySpace, pair_key
from riskguard.state.rulebook import Rulebook, compile_limits
from riskguard.state.store import StateStore
from riskguard.state.tables import empty_edges
from riskguard.vocabulary import EVENT_TYPES, STATES, Transition, transition_id
from riskguard.warmup import warm_events, warm_limits

Clock = Callable[[], int]


@dataclass(slots=True)
class Result:
    """What one :meth:`Engine.apply` did."""

    applied: int = 0
    transitions: list[Transition] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    #: events applied per type code (index = position in ``events.EVENT_TYPES``)
    type_counts: np.ndarray = field(default_factory=lambda: np.zeros(8, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class RulePeak:
    """Highest and lowest value a rule saw, and how close it came to its limit."""

    rule: Rule
    evaluations: int
    high: float | None
    low: float | None
    utilisation: float | None


def _output(cap: int, batch_len: int = 0) -> Output:
    return Output(
        decisions=np.zeros(cap, dtype=DECISION),
        closed=np.zeros(batch_len, dtype=np.int64),
        counts=np.zeros(1, dtype=OUT_COUNTS),
    )


def _peaks(rows: int) -> np.ndarray:
    return np.repeat(fill_record(PEAK, high=-np.inf, low=np.inf), rows)


class Engine:
    """State, rules and kill switch for one trading system. Owned by one task."""

    def __init__(
        self,
        limits: Limits,
        clock: Clock | None = None,
        *,
        warm: bool = True,
        event_time: bool = False,
    ) -> None:
        """``event_time=True`` (replay) makes the latest event time the clock, and
        stamps each automatic decision with its triggering event's time."""
        self.event_time = event_time
        self.clock: Clock = clock or (self._event_clock if event_time else time.time_ns)
        self.keys = KeySpace()
        self.store = StateStore()
        self.killswitch = KillSwitch(self.keys, lambda: self.store.state.scopes, self.clock)
        self.rulebook = self._install(limits)
        self._out = _output(4096)
        self.events_applied = 0
        self.kernel_ns = 0
        """Time spent inside the numba kernel (``apply_batch``), for benchmarks and metrics."""
        if warm:
            warm_up()

    # limits -------------------------------------------------------------------
    def _install(self, limits: Limits) -> Rulebook:
        book = compile_limits(limits, self.keys)
        self.store.reset_counters(book.counter_defs)
        self.store.reserve(self.keys)
        self.rule_peaks = _peaks(book.n_rows)
        self.store.state = self.store.state._replace(edges=empty_edges())
        return book

    def recompile(self) -> None:
        """Recompile the limits in force against the current key space (after a restore)."""
        self.rulebook = self._install(self.limits)

    def replace_limits(self, limits: Limits) -> None:
        """Swap in new limits between batches.

        Latched states and judged times are untouched; windows whose kind, scope and
        length did not change keep their counts; rule peaks and alert edges restart.
        """
        self.rulebook = self._install(limits)

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        return self.rulebook.limits

    # applying ---------------------------------------------------------------
    def apply(
        self,
        events: Sequence[Event],
        origins: Sequence[str] | None = None,
        wall_ns: int | None = None,
    ) -> Result:
        """Apply events in order and return the transitions they caused.

        ``origins[j]`` labels where event ``j`` came from (a line number, a Kafka
        coordinate), for the events rejected while building the batch. ``wall_ns`` is
        the wall-clock time of a live run (for ``consumer_lag_ms``); leave it out in
        replays, where lag is meaningless.
        """
        batch, bad = build(events, self.keys, origins)
        return self.apply_columnar(batch, bad, wall_ns)

    def apply_columnar(
        self, batch: np.ndarray, bad: list[BadEvent] | None = None, wall_ns: int | None = None
    ) -> Result:
        """Apply an already-built batch (``state.columnar.build`` with this engine's keys).

        Split out of :meth:`apply` so benchmarks can time the kernel on its own.
        """
        wall = -1 if wall_ns is None or self.event_time else wall_ns
        result = Result(bad=bad or [])
        n = len(batch)
        if n == 0:
            return result
        self.store.reserve(self.keys)
        if self._out.closed.shape[0] < n:
            self._out = self._out._replace(closed=np.zeros(n, dtype=np.int64))
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
            self._drain(batch["ts"], result.transitions)
            self._release_closed()
            if nxt == start:  # one event needs more output rows than the buffer holds
                self._grow_out()
            start = nxt
        result.applied = n
        result.type_counts = np.bincount(batch["typ"], minlength=len(EVENT_TYPES))
        self.events_applied += n
        return result

    def tick(self, now_ns: int | None = None) -> list[Transition]:
        """Advance to ``now_ns`` (default: the clock) without an event.

        Applies price moves queued for the next revaluation epoch, then checks feed
        silence.
        """
        now = self.clock() if now_ns is None else now_ns
        out: list[Transition] = []
        while True:
            self._make_room(0)
            done = tick(now, self.store.state, self.rulebook.rules, self.rule_peaks, self._out)
            self._drain(None, out, now)
            if done:
                return out
            self._grow_out()

    def judge_until(self, ts_ns: int) -> None:
        """Treat breaches from events at or before ``ts_ns`` as already decided.

        Set on restart to the event time the previous instance had reached, so
        rebuilding state by replaying input does not re-page or re-halt.
        """
        g = self.store.state.globals
        g["judged_ns"] = max(int(g["judged_ns"][0]), ts_ns)

    @property
    def last_event_ns(self) -> int:
        """The latest event time applied (ns since the epoch), -1 before any event."""
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

    def _release_closed(self) -> None:
        out = self._out
        k = int(out.counts["n_closed"][0])
        if k:
            done = out.closed[:k]
            still_closed = done[self.store.state.orders["open"][done] == 0]
            self.keys.release_orders(still_closed.tolist())
            out.counts["n_closed"] = 0

    def _drain(self, ts: np.ndarray | None, into: list[Transition], now: int = 0) -> None:
        """Turn the output rows into :class:`Transition` records, in order, and reset them."""
        counts = self._out.counts
        n_out = int(counts["n"][0])
        counts["n"] = 0
        counts["need"] = 0
        if n_out == 0:
            return
        decided = self.clock()
        names = self.keys.scope_names
        for e, r, sid, old, new, value in self._out.decisions[:n_out].tolist():
            rule = self.rulebook.row_rule[r]
            t = int(ts[e]) if ts is not None and e >= 0 else now
            if self.event_time:
                decided = t
            scope = names[sid]
            alert = new < 0
            to = STATES[old] if alert else STATES[new]
            tr = Transition(
                id=transition_id(scope, decided, "ALERT:" + rule.name if alert else to),
                scope=scope,
                from_=STATES[old],
                to=to,
                kind="alert" if alert else "auto",
                ts=t,
                decided_ns=decided,
                rule=rule.name,
                metric=rule.metric,
                value=value,
                limit=rule.limit_for(value),
            )
            into.append(self.killswitch.record(tr))

    # inspecting -------------------------------------------------------------
    def peaks(self) -> list[RulePeak]:
        """Per rule (file order): extremes seen and peak utilisation of the limit."""
        out = []
        p = self.rule_peaks
        rule_of_row = self.rulebook.rules.rows["rule"]
        for index, rule in enumerate(self.limits.rules):
            rows = p[rule_of_row == index]
            n = int(rows["evaluations"].sum())
            if n == 0:
                out.append(RulePeak(rule, 0, None, None, None))
                continue
            hi, lo = float(rows["high"].max()), float(rows["low"].min())
            util = max(rule.utilisation(hi), rule.utilisation(lo))
            out.append(RulePeak(rule, n, hi, lo, None if util == -np.inf else util))
        return out

    def scope_values(self, scope: str) -> dict[str, float]:
        """Current stateful metrics of one scope (zeros for a scope never seen)."""
        sid = self.keys.find_scope(scope)
        if sid is None:
            return dict.fromkeys(SCOPE_VALUES, 0.0)
        sc = self.store.state.scopes[sid]
        pnl = float(sc["realised_pnl"] + sc["net_notional"] - sc["cost_basis"])
        return {
            "open_orders": float(sc["open_orders"]),
            "gross_notional": float(sc["gross_notional"]),
            "net_notional": float(sc["net_notional"]),
            "pnl": pnl,
            "drawdown": float(sc["peak_pnl"]) - pnl,
            "realised_pnl": float(sc["realised_pnl"]),
        }

    def position(self, owner: str, symbol: str) -> float:
        """Net position of scope ``owner`` (``firm``, ``account:X``, ``strategy:X``) in a symbol."""
        o = self.keys.find_scope(owner)
        y = self.keys.find_scope(f"symbol:{symbol}")
        if o is None or y is None:
            return 0.0
        p = self.keys.pairs.get(pair_key(o, y))
        return 0.0 if p is None else float(self.store.state.positions["qty"][p])

    def positions(self) -> dict[tuple[str, str], tuple[float, float, float]]:
        """Every (owner scope, symbol scope) -> (position, cost basis, realised P&L)."""
        self.store.reserve(self.keys)  # pairs interned by a batch not yet applied
        names = self.keys.scope_names
        pos = self.store.state.positions[: self.keys.n_pairs]
        return {
            (names[owner], names[symbol]): (qty, cost, realised)
            for qty, cost, realised, owner, symbol in pos[
                ["qty", "cost", "realised", "owner", "symbol"]
            ].tolist()
        }


SCOPE_VALUES = ("open_orders", "gross_notional", "net_notional", "pnl", "drawdown", "realised_pnl")
"""The keys of :meth:`Engine.scope_values`."""
_warm = False


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
