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
from riskguard.state.columnar import Batch, build
from riskguard.state.kernel import apply_batch, tick
from riskguard.state.keys import KeySpace, pair_key
from riskguard.state.layout import (
    G_JUDGED,
    G_LAST_ANY,
    NO,
    NRP,
    OI_OPEN,
    PF_COST,
    PF_POS,
    PF_REAL,
    PI_OWNER,
    PI_SYM,
    RI_RULE,
    RP_HI,
    RP_LO,
    RP_N,
    SF_COST,
    SF_GROSS,
    SF_NET,
    SF_PEAK,
    SF_REAL,
    SI_NPAIRS,
    SI_OPEN,
)
from riskguard.state.rulebook import Rulebook, compile_limits
from riskguard.state.store import StateStore
from riskguard.state.tables import (
    clear_alerts,
    clear_dups,
    dump_alerts,
    dump_dups,
    fill_alerts,
    fill_dups,
)
from riskguard.vocabulary import STATES, Transition, transition_id
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
        self.killswitch = KillSwitch(self.keys, lambda: self.store.si, self.clock)
        self.rulebook = self._install(limits)
        self._out_i = np.zeros((4096, NO), dtype=np.int64)
        self._out_f = np.zeros(4096)
        self.events_applied = 0
        self.kernel_ns = 0
        """Time spent inside the numba kernel (``apply_batch``), for benchmarks and metrics."""
        if warm:
            warm_up()

    # limits -------------------------------------------------------------------
    def _install(self, limits: Limits) -> Rulebook:
        book = compile_limits(limits, self.keys)
        self.store.reset_counters(book.ci)
        self.store.reserve(self.keys)
        self.rule_peaks = np.zeros((book.n_rows, NRP))
        self.rule_peaks[:, RP_HI] = -np.inf
        self.rule_peaks[:, RP_LO] = np.inf
        clear_alerts(self.store.alerts)
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
        positions: Sequence[str] | None = None,
        wall_ns: int | None = None,
    ) -> Result:
        """Apply events in order and return the transitions they caused.

        ``wall_ns`` is the wall-clock time of a live run (for ``consumer_lag_ms``);
        leave it out in replays, where lag is meaningless.
        """
        batch, bad = build(events, self.keys, positions)
        return self.apply_columnar(batch, bad, wall_ns)

    def apply_columnar(
        self, batch: Batch, bad: list[BadEvent] | None = None, wall_ns: int | None = None
    ) -> Result:
        """Apply an already-built batch (``state.columnar.build`` with this engine's keys).

        Split out of :meth:`apply` so benchmarks can time the kernel on its own.
        """
        wall = -1 if wall_ns is None or self.event_time else wall_ns
        result = Result(bad=bad or [])
        if len(batch) == 0:
            return result
        self.store.reserve(self.keys)
        closed = np.zeros(len(batch), dtype=np.int64)
        start = 0
        while start < len(batch):
            s = self.store
            began = time.perf_counter_ns()
            nxt, n_out, n_closed = apply_batch(
                start,
                wall,
                self.rulebook.revalue_ns,
                *batch.columns(),
                s.sf,
                s.si,
                s.pf,
                s.pi,
                s.of,
                s.oi,
                s.qf,
                s.qi,
                s.src_last,
                s.g,
                s.ci,
                s.cb,
                s.clast,
                s.csum,
                self.rulebook.ri,
                self.rulebook.rf,
                self.rule_peaks,
                self.rulebook.type_rows,
                self.rulebook.exp_rows,
                self.rulebook.feed_rows,
                s.dup,
                s.alerts,
                self._out_i,
                self._out_f,
                closed,
            )
            self.kernel_ns += time.perf_counter_ns() - began
            self._drain(n_out, batch, result.transitions)
            if n_closed:
                done = closed[:n_closed]
                self.keys.release_orders(done[s.oi[done, OI_OPEN] == 0].tolist())
            if nxt == start:  # one event needs more output rows than the buffer holds
                need = 8 * self.rulebook.n_rows * (int(s.si[batch.sym[start], SI_NPAIRS]) + 2)
                self._grow_out(max(need, 2 * self._out_i.shape[0]))
            start = nxt
        result.applied = len(batch)
        result.type_counts = np.bincount(batch.typ, minlength=8)
        self.events_applied += len(batch)
        return result

    def tick(self, now_ns: int | None = None) -> list[Transition]:
        """Advance to ``now_ns`` (default: the clock) without an event.

        Applies price moves queued for the next revaluation epoch, then checks feed
        silence.
        """
        now = self.clock() if now_ns is None else now_ns
        s = self.store
        book = self.rulebook
        out: list[Transition] = []
        while True:
            n_out, done = tick(
                now,
                book.revalue_ns,
                s.sf,
                s.si,
                s.pf,
                s.pi,
                book.ri,
                book.rf,
                self.rule_peaks,
                book.exp_rows,
                s.src_last,
                s.g,
                book.feed_rows,
                s.alerts,
                self._out_i,
                self._out_f,
            )
            self._drain(n_out, None, out, now)
            if done:
                return out
            self._grow_out(2 * self._out_i.shape[0])

    def judge_until(self, ts_ns: int) -> None:
        """Treat breaches from events at or before ``ts_ns`` as already decided.

        Set on restart to the event time the previous instance had reached, so
        rebuilding state by replaying input does not re-page or re-halt.
        """
        self.store.g[G_JUDGED] = max(int(self.store.g[G_JUDGED]), ts_ns)

    def _event_clock(self) -> int:
        return max(0, int(self.store.g[G_LAST_ANY]))

    def _grow_out(self, n: int) -> None:
        self._out_i = np.zeros((n, NO), dtype=np.int64)
        self._out_f = np.zeros(n)

    def _drain(self, n_out: int, batch: Batch | None, into: list[Transition], now: int = 0) -> None:
        if n_out == 0:
            return
        decided = self.clock()
        names = self.keys.scope_names
        for k in range(n_out):
            e, r, sid, old, new = (int(x) for x in self._out_i[k])
            rule = self.rulebook.row_rule[r]
            value = float(self._out_f[k])
            ts = int(batch.ts[e]) if batch is not None and e >= 0 else now
            if self.event_time:
                decided = ts
            scope = names[sid]
            alert = new < 0
            to = STATES[old] if alert else STATES[new]
            tr = Transition(
                id=transition_id(scope, decided, "ALERT:" + rule.name if alert else to),
                scope=scope,
                from_=STATES[old],
                to=to,
                kind="alert" if alert else "auto",
                ts=ts,
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
        for index, rule in enumerate(self.limits.rules):
            rows = [r for r, rr in enumerate(self.rulebook.ri[:, RI_RULE]) if rr == index]
            n = int(sum(self.rule_peaks[r, RP_N] for r in rows))
            hi = max((self.rule_peaks[r, RP_HI] for r in rows), default=-np.inf)
            lo = min((self.rule_peaks[r, RP_LO] for r in rows), default=np.inf)
            if n == 0:
                out.append(RulePeak(rule, 0, None, None, None))
                continue
            util = max(rule.utilisation(float(hi)), rule.utilisation(float(lo)))
            out.append(RulePeak(rule, n, float(hi), float(lo), None if util == -np.inf else util))
        return out

    def scope_values(self, scope: str) -> dict[str, float]:
        """Current stateful metrics of one scope (zeros for a scope never seen)."""
        sid = self.keys.find_scope(scope)
        if sid is None:
            return {
                "open_orders": 0.0,
                "gross_notional": 0.0,
                "net_notional": 0.0,
                "pnl": 0.0,
                "drawdown": 0.0,
                "realised_pnl": 0.0,
            }
        sf, si = self.store.sf, self.store.si
        pnl = sf[sid, SF_REAL] + sf[sid, SF_NET] - sf[sid, SF_COST]
        return {
            "open_orders": float(si[sid, SI_OPEN]),
            "gross_notional": float(sf[sid, SF_GROSS]),
            "net_notional": float(sf[sid, SF_NET]),
            "pnl": float(pnl),
            "drawdown": float(sf[sid, SF_PEAK] - pnl),
            "realised_pnl": float(sf[sid, SF_REAL]),
        }

    def position(self, owner: str, symbol: str) -> float:
        """Net position of scope ``owner`` (``firm``, ``account:X``, ``strategy:X``) in a symbol."""
        o = self.keys.find_scope(owner)
        y = self.keys.find_scope(f"symbol:{symbol}")
        if o is None or y is None:
            return 0.0
        p = self.keys.pairs.get(pair_key(o, y))
        return 0.0 if p is None else float(self.store.pf[p, PF_POS])

    def positions(self) -> dict[tuple[str, str], tuple[float, float, float]]:
        """Every (owner scope, symbol scope) -> (position, cost basis, realised P&L)."""
        self.store.reserve(self.keys)  # pairs interned by a batch not yet applied
        names, pf, pi = self.keys.scope_names, self.store.pf, self.store.pi
        return {
            (names[int(pi[p, PI_OWNER])], names[int(pi[p, PI_SYM])]): (
                float(pf[p, PF_POS]),
                float(pf[p, PF_COST]),
                float(pf[p, PF_REAL]),
            )
            for p in range(self.keys.n_pairs)
        }


_warm = False


def warm_up() -> None:
    """Compile (or load from cache) every kernel before the first real event."""
    global _warm  # noqa: PLW0603 - one compile per process, shared by all engines
    if _warm:
        return
    engine = Engine(warm_limits(), clock=lambda: 0, warm=False)
    engine.apply(warm_events())
    engine.tick(10**18)
    store = engine.store  # the snapshot-restore loaders, on empty input
    fill_dups(
        store.dup, np.zeros((0, 4), dtype=np.int64), np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    )
    fill_alerts(store.alerts, np.zeros((0, 2), dtype=np.int64))
    dump_dups(store.dup)  # snapshot capture, and limits reloads
    dump_alerts(store.alerts)
    clear_dups(store.dup)
    clear_alerts(store.alerts)
    _warm = True
