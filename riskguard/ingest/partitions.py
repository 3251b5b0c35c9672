"""Group mode's state: one engine per owned input partition, beside a home engine.

A group member keeps the state of each input partition it owns in an
:class:`~riskguard.engine.Engine` of its own (docs/architecture.md, decision 54). A
partition's state is then a thing apart: it is checkpointed on its own
(:mod:`riskguard.ingest.partition_checkpoints`), a member that gains it restores it from
that checkpoint and reads on from the checkpoint's offset, and a member that loses it
drops its engine. The partitions it keeps are not touched by a rebalance.

Input is keyed by account, so every account lives in one partition, and group mode
judges locally only what one account's events decide (account rules, per-order rules:
:mod:`riskguard.limits.scale`). Each partition's engine therefore judges exactly what
one engine reading every partition would, with one documented difference: a symbol no
mark has reached is valued at the last fill *in its partition* (one engine: the last
fill it read in any). Marks, FX rates, instruments and heartbeats are broadcast to every
partition (decision 42), so every engine has them.

The **home engine** reads no account's events. It is what the rest of the sidecar was
built around: the kill switch's primary target (every engine of the member is a target,
:meth:`~riskguard.killswitch.KillSwitch.attach`, so a halt stands in all of them), the
limits in force and the rulebook the summed rules are judged with, and the reference
data (it applies the broadcast events of every batch: the marks the gates are sent).

Order ids handed out here (:meth:`PartitionEngines.working_order_ids`) are
``slot << SLOT_SHIFT | order id`` in the slot's engine; a slot is a small number fixed
for a partition while it is owned.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
from aiokafka.structs import TopicPartition

from riskguard import log
from riskguard.aggregate.contributions import Part, Parts, RowParts, contributions
from riskguard.aggregate.contributions import scope_leaves as engine_leaves
from riskguard.aggregate.contributions import scope_positions as engine_positions
from riskguard.decisions import FX_MISSING
from riskguard.engine import Engine, Result
from riskguard.events import Event, Fill, Fx, Heartbeat, Instrument, Mark
from riskguard.inspection import WorkingOrder
from riskguard.killswitch import KillSwitch, Target
from riskguard.limits import Limits
from riskguard.state.codes import OWN_TIME_NS
from riskguard.vocabulary import Transition

SLOT_SHIFT = 40
"""Order ids of :class:`PartitionEngines`: the slot in the bits from here up."""
_LOCAL = (1 << SLOT_SHIFT) - 1
BROADCAST_TYPES = (Mark, Fx, Instrument, Heartbeat)
"""Events every partition carries (decision 42), applied to the home engine too."""


def label(tp: TopicPartition) -> str:
    """``"topic/partition"``."""
    return f"{tp.topic}/{tp.partition}"


class PartitionEngines:
    """A group member's engines: ``home`` and one per owned partition (see the module).

    Implements what the consume loop needs of an engine (:meth:`apply`, :meth:`tick`,
    the clock), what the aggregation reads (:meth:`contributions`,
    :meth:`scope_positions`) and what the cancel tracker reads of orders. Owned by the
    engine's task, like an engine.
    """

    def __init__(self, home: Engine) -> None:
        self.home = home
        self.killswitch: KillSwitch = home.killswitch
        self.engines: dict[TopicPartition, Engine] = {}
        self._targets: dict[TopicPartition, Target] = {}
        self._slots: dict[TopicPartition, int] = {}
        self._own_time = False
        self.last_fills: dict[str, tuple[int, TopicPartition]] = {}
        """Symbol -> (event time, partition) of its latest fill read here, by event time
        (a partition read again from a checkpoint does not take it back): the fill price
        one engine reading them all values the symbol at before its first mark."""
        self._fx_alerted: set[str] = set()
        """Currencies whose ``fx-rate-missing`` alert went out (once per member, not once
        per partition that met the currency)."""
        self._log = log.get("sidecar")

    # the engines ---------------------------------------------------------------------
    @property
    def settings(self) -> Any:
        """The engines' settings (``EngineSettings``)."""
        return self.home.settings

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        return self.home.limits

    def fresh(self) -> Engine:
        """A new, empty engine for a partition: the home engine's limits, clock and
        settings, its kill switch not yet shared (:meth:`add` shares it)."""
        return Engine(
            self.home.limits,
            clock=self.home.clock,
            settings=self.home.settings,
            warm=False,
            values_only=self.home.values_only,
        )

    def add(self, tp: TopicPartition, engine: Engine) -> None:
        """Own ``tp`` with ``engine`` (fresh, or restored from a checkpoint): it shares
        the member's kill switch from now on (every standing state and judged time is
        latched in it) and counts at its own time while the others do."""
        self.drop(tp)
        engine.killswitch = self.killswitch
        self._targets[tp] = self.killswitch.attach(
            engine.keys,
            lambda e=engine: e.store.state.scopes,  # type: ignore[misc]
            lambda e=engine: e.store.reserve(e.keys),  # type: ignore[misc]
        )
        self._slots[tp] = next(i for i in range(len(self._slots) + 1) if i not in self._taken())
        engine.count_at_own_time(self._own_time)
        self.engines[tp] = engine

    def _taken(self) -> set[int]:
        return set(self._slots.values())

    def drop(self, tp: TopicPartition) -> Engine | None:
        """No longer own ``tp``: its engine is detached from the kill switch and
        returned (None when it was not owned)."""
        engine = self.engines.pop(tp, None)
        target = self._targets.pop(tp, None)
        self.last_fills = {y: at for y, at in self.last_fills.items() if at[1] != tp}
        self._slots.pop(tp, None)
        if target is not None:
            self.killswitch.detach(target)
        return engine

    def owned(self) -> set[TopicPartition]:
        """The partitions with an engine."""
        return set(self.engines)

    def all(self) -> list[Engine]:
        """Every partition's engine, by partition."""
        return [self.engines[tp] for tp in sorted(self.engines)]

    # the flow (what the consume loop calls) ------------------------------------------
    def apply(
        self, events: Sequence[Event], origins: Any = None, wall_ns: int | None = None
    ) -> Result:
        """Apply a consumed batch: each partition's events to its engine, in batch
        order, each engine's clock first moved up to the latest event time applied in
        any (one engine reading every partition measures lateness against that) and
        into that time's revaluation epoch (after the batch, every engine's: as one
        engine's); the broadcast events to the home engine too. ``origins`` is the
        batch's :class:`~riskguard.ingest.coordinates.Coordinates`. Events of a
        partition not owned (none should come: aiokafka drops a revoked partition's
        fetches) are logged and left out. Returns the results merged."""
        merged = Result()
        if not events:
            return merged
        clock = self.last_event_ns
        rw = self.home.rulebook.rules.revalue_ns
        entered: dict[int, int] = {}  # revaluation epoch -> the event time it began at
        broadcast: list[Event] = []
        for name, start, end in origins.parts():
            topic, _, p = name.rpartition("/")
            tp = TopicPartition(topic, int(p))
            engine = self.engines.get(tp)
            part = events[start:end]
            if engine is None:
                self._log.error("events of a partition not owned left out", partition=name)
                continue
            merged.transitions += _catch_up(engine, clock, entered)
            got = engine.apply(part, origins.slice(start, end), wall_ns)
            _merge(merged, got)
            if rw > 0 and int(engine.store.state.globals["epoch"][0]) > clock // rw:
                _note_entries(part, clock, engine.last_event_ns, rw, entered)
            clock = max(clock, engine.last_event_ns)
            fills = self.last_fills
            for e in part:
                if type(e) is Fill:
                    if e.symbol not in fills or fills[e.symbol][0] <= e.ts:
                        fills[e.symbol] = (e.ts, tp)
                elif isinstance(e, BROADCAST_TYPES):
                    broadcast.append(e)
        for engine in self.all():  # the ones read before the latest event too
            merged.transitions += _catch_up(engine, clock, entered)
        if clock > 0:  # kept by the home engine too: a partition dropped takes none back
            self.home.follow_clock(clock)
        if broadcast:
            merged.transitions += self.home.apply(broadcast, None, wall_ns).transitions
        merged.transitions = self._once(merged.transitions)
        return merged

    def _once(self, transitions: list[Transition]) -> list[Transition]:
        """``transitions`` without a second ``fx-rate-missing`` alert for a currency (each
        partition's engine raises its own the first time it meets the currency)."""
        out: list[Transition] = []
        for tr in transitions:
            if tr.rule == FX_MISSING and tr.reason:
                code = tr.reason.removeprefix("no ")[:3]  # "no EUR exchange rate yet: ..."
                if code in self._fx_alerted:
                    continue
                self._fx_alerted.add(code)
            out.append(tr)
        return out

    def tick(self, now_ns: int | None = None) -> list[Transition]:
        """Advance every engine's clock to ``now_ns`` (see :meth:`Engine.tick`)."""
        out = self.home.tick(now_ns)
        for engine in self.all():
            out += engine.tick(now_ns)
        return out

    def settle(self) -> list[Transition]:
        """:meth:`Engine.settle` of every engine."""
        out = self.home.settle()
        for engine in self.all():
            out += engine.settle()
        return out

    def judge_until(self, ts_ns: int) -> None:
        """:meth:`Engine.judge_until` of every engine."""
        for engine in [self.home, *self.all()]:
            engine.judge_until(ts_ns)

    def follow_clock(self, ts_ns: int) -> None:
        """:meth:`Engine.follow_clock` of every engine."""
        for engine in [self.home, *self.all()]:
            engine.follow_clock(ts_ns)

    def count_at_own_time(self, on: bool) -> None:
        """:meth:`Engine.count_at_own_time` of every partition's engine (new ones
        follow)."""
        self._own_time = on
        for engine in self.all():
            engine.count_at_own_time(on)

    def replace_limits(self, limits: Limits) -> list[Transition]:
        """:meth:`Engine.replace_limits` of every engine (the home engine first: it
        raises :class:`~riskguard.limits.LimitsError` before any engine changed)."""
        out = self.home.replace_limits(limits)
        for engine in self.all():
            out += engine.replace_limits(limits)
        return out

    @property
    def last_event_ns(self) -> int:
        """The latest event time applied in any engine (ns; -1 before any)."""
        return max(e.last_event_ns for e in [self.home, *self.engines.values()])

    @property
    def judged_ns(self) -> int:
        """Breaches from events at or before this time (ns) are decided already
        (:meth:`judge_until`, kept by the home engine for partitions gained later)."""
        return int(self.home.store.state.globals["judged_ns"][0])

    @property
    def events_applied(self) -> int:
        """Events applied to the partitions' engines (the home engine's copies of
        broadcast events not counted)."""
        return sum(e.events_applied for e in self.engines.values())

    @property
    def max_clock_skew_ms(self) -> int:
        """The engines' clock-skew bound."""
        return int(self.home.settings.max_clock_skew_ms)

    # reads ----------------------------------------------------------------------------
    def contributions(self, rules: Collection[str], now_ns: int) -> Parts:
        """The member's part of each summed rule in ``rules``: the sum of its engines'
        (:func:`~riskguard.aggregate.contributions.contributions`); with no partition
        owned, every rule with nothing counted."""
        engines = self.all() or [self.home]
        total = contributions(engines[0], rules, now_ns)
        for engine in engines[1:]:
            more = contributions(engine, rules, now_ns)
            for name, rows in more.items():
                total[name] = [_add_rows(a, b) for a, b in zip(total[name], rows, strict=True)]
        return total

    def scope_positions(self, scope: str) -> dict[str, float]:
        """The member's net positions of ``scope`` by symbol: the sum of its engines'
        (:func:`~riskguard.aggregate.contributions.scope_positions`)."""
        out: dict[str, float] = {}
        for engine in self.all():
            for symbol, qty in engine_positions(engine, scope).items():
                out[symbol] = out.get(symbol, 0.0) + qty
        return out

    def scope_leaves(self, scope: str) -> dict[str, tuple[float, float]]:
        """What the member's working (buy, sell) orders moving ``scope``'s position may
        still fill, by symbol: the sum of its engines'
        (:func:`~riskguard.aggregate.contributions.scope_leaves`)."""
        out: dict[str, tuple[float, float]] = {}
        for engine in self.all():
            for symbol, (buys, sells) in engine_leaves(engine, scope).items():
                b0, s0 = out.get(symbol, (0.0, 0.0))
                out[symbol] = (b0 + buys, s0 + sells)
        return out

    def positions(self) -> dict[tuple[str, str], tuple[float, float, float]]:
        """:meth:`Engine.positions` over every partition: an account's are its engine's,
        a shared owner's (firm, strategy) summed."""
        out: dict[tuple[str, str], tuple[float, float, float]] = {}
        for engine in self.all():
            for key, (qty, cost, realised) in engine.positions().items():
                q, c, r = out.get(key, (0.0, 0.0, 0.0))
                out[key] = (q + qty, c + cost, r + realised)
        return out

    def fill_prices(self) -> dict[str, tuple[float, float, float | None]]:
        """Per symbol (``symbol:<id>``) valued at a fill price (no mark yet) in the engine
        of its latest fill's partition: (that price, contract size, the rate of its
        currency or None when none is known). For the gates (:mod:`riskguard.ingest.
        pretrade`): the home engine, whose marks they get, reads no fill."""
        out: dict[str, tuple[float, float, float | None]] = {}
        for symbol, (_ts, tp) in self.last_fills.items():
            engine = self.engines.get(tp)
            name = f"symbol:{symbol}"
            sid = None if engine is None else engine.keys.find_scope(name)
            if engine is None or sid is None:
                continue
            st = engine.store.state
            if sid >= st.symbols.shape[0] or int(st.symbols["price_source"][sid]) != 1:
                continue
            sym = st.symbols[sid]
            cur = st.currencies[int(sym["currency"])]
            rate = float(cur["rate"]) if cur["known"] else None
            out[name] = (float(sym["ref_price"]), float(sym["multiplier"]), rate)
        return out

    def mark_coverage(self, names: int = 10) -> dict[str, Any]:
        """:meth:`Engine.mark_coverage` over every partition: symbols in play in any,
        unmarked when no mark has reached the engine holding them."""
        play: set[str] = set()
        unmarked: set[str] = set()
        oldest: dict[str, Any] | None = None
        for engine in self.all():
            live, blind, mark = engine.coverage()
            play |= set(live)
            unmarked |= set(blind)
            if mark is not None and (oldest is None or mark["ts"] < oldest["ts"]):
                oldest = mark
        return {
            "symbols": len(play),
            "unmarked": len(unmarked),
            "unmarked_symbols": sorted(unmarked)[:names],
            "oldest_mark": oldest,
        }

    # orders (the cancel tracker's) -----------------------------------------------------
    def _slotted(self) -> Iterator[tuple[int, Engine]]:
        for tp in sorted(self.engines):
            yield self._slots[tp], self.engines[tp]

    def working_order_ids(self, scope: str, *, increasing_only: bool = False) -> np.ndarray:
        """Order ids (int64, see the module) of the orders working in ``scope`` in every
        partition (:meth:`Engine.working_order_ids` of each)."""
        parts = [
            (slot << SLOT_SHIFT) | e.working_order_ids(scope, increasing_only=increasing_only)
            for slot, e in self._slotted()
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _split(self, oids: np.ndarray) -> Iterator[tuple[np.ndarray, Engine | None, np.ndarray]]:
        """(positions in ``oids``, the slot's engine or None, local ids) per slot."""
        slots = oids >> SLOT_SHIFT
        by_slot = {s: e for s, e in self._slotted()}
        for slot in np.unique(slots).tolist():
            at = np.flatnonzero(slots == slot)
            yield at, by_slot.get(int(slot)), oids[at] & _LOCAL

    def describe_orders(self, oids: np.ndarray) -> list[WorkingOrder]:
        """:meth:`Engine.describe_orders` of ids handed out here, in their order.
        Raises ``KeyError`` for an id of a partition no longer owned."""
        out: list[WorkingOrder | None] = [None] * len(oids)
        for at, engine, local in self._split(np.asarray(oids, dtype=np.int64)):
            if engine is None:
                raise KeyError("orders of a partition no longer owned")
            for i, order in zip(at.tolist(), engine.describe_orders(local), strict=True):
                out[i] = order
        return [o for o in out if o is not None]

    def position(self, owner: str, symbol: str) -> float:
        """:meth:`Engine.position` summed over the partitions owned (an account is held
        whole by one of them)."""
        return sum((e.position(owner, symbol) for _, e in self._slotted()), 0.0)

    def increasing(self, scope: str, oids: np.ndarray) -> np.ndarray:
        """:meth:`Engine.increasing` of ids handed out here (bool, in their order), each
        judged by its own partition's engine; an id of a partition no longer owned: False."""
        out = np.zeros(len(oids), dtype=bool)
        for at, engine, local in self._split(np.asarray(oids, dtype=np.int64)):
            if engine is not None:
                out[at] = engine.increasing(scope, local)
        return out

    def order_lives(self, oids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(status, serial) int64 arrays of ids handed out here; an id of a partition no
        longer owned reads status -1 (not working here) and serial -1."""
        oids = np.asarray(oids, dtype=np.int64)
        status = np.full(oids.shape[0], -1, dtype=np.int64)
        serial = np.full(oids.shape[0], -1, dtype=np.int64)
        for at, engine, local in self._split(oids):
            if engine is not None:
                s, n = engine.order_lives(local)
                status[at], serial[at] = s, n
        return status, serial

    def find_order(self, order_id: str, account: str | None = None) -> int | None:
        """The id handed out here of the order named ``order_id`` (its ClOrdID) in any
        partition (with ``account``: that account's; an id closed in one account may be
        reused in another, in another partition), None when none holds it."""
        for slot, engine in self._slotted():
            oid = engine.find_order(order_id, account)
            if oid is not None:
                return (slot << SLOT_SHIFT) | oid
        return None


def _catch_up(engine: Engine, clock: int, entered: dict[int, int]) -> list[Transition]:
    """Move ``engine``'s clock up to ``clock`` (ns), the latest event time applied in any
    partition, and into its revaluation epoch, as one engine reading every partition
    is: that one entered each epoch with the first event in it, whichever partition it
    came from (``entered``: epoch -> that event's time), and applied the price moves
    queued before then; a partition read after another had reached the next epoch would
    otherwise have its events valued at the moves of the epoch before. Not while the
    engine reads history at its own time (restoring: its events enter their own epochs,
    as they did when first read). Returns what the revaluation decided."""
    if clock <= 0 or engine.last_event_ns >= clock:
        return []
    rules = engine.rulebook.rules
    rw, history = rules.revalue_ns, rules.lateness_ns == OWN_TIME_NS
    epoch = int(engine.store.state.globals["epoch"][0])
    out: list[Transition] = []
    if rw > 0 and clock // rw > epoch and not history:
        began = min((k for k in entered if k > epoch), default=clock // rw)
        engine.follow_clock(entered.get(began, clock))
        out = engine.settle()  # enters exactly that epoch: its clock is in it
    engine.follow_clock(clock)
    return out


def _note_entries(
    part: Sequence[Event], clock: int, last_ns: int, rw: int, entered: dict[int, int]
) -> None:
    """Note in ``entered`` the time of the first event of ``part`` in each revaluation
    epoch (``rw`` ns wide) after the one of ``clock`` (an event ahead of ``last_ns``, the
    engine's clock after it, was skewed: not applied at its own time)."""
    for e in part:
        if clock // rw < e.ts // rw and e.ts <= last_ns:
            entered.setdefault(e.ts // rw, e.ts)
        clock = max(clock, e.ts)


def _merge(into: Result, got: Result) -> None:
    into.applied += got.applied
    into.transitions += got.transitions
    into.bad += got.bad
    into.duplicates += got.duplicates
    into.skewed += got.skewed
    into.late += got.late
    into.jumps += got.jumps
    into.type_counts = into.type_counts + got.type_counts


def _add_part(a: Part, b: Part) -> Part:
    return [None if x is None or y is None else x + y for x, y in zip(a, b, strict=True)]


def _add_rows(a: RowParts, b: RowParts) -> RowParts:
    out = dict(a)
    for scope, part in b.items():
        out[scope] = _add_part(out[scope], part) if scope in out else part
    return out
