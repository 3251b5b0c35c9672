"""The control topic as a reader sees it: the latest record of each kind and key.

No I/O and no clock of its own: the caller says when each batch was read (an
:class:`Instant`), which lets the gate's decisions (:mod:`riskguard.control.decision`)
be run against recorded inputs, such as ``docs/control-topic-vectors.json``.

What the view keeps, each replaced by the next readable record of its key in topic
order (``docs/control-topic.md``, "Reading"):

* ``states``: scope -> :class:`StateRecord`;
* ``heartbeats``: instance -> its latest :class:`HeartbeatRecord` and when it was read
  (a :class:`Pulse`; riskguard instances running active-active each heartbeat under
  their own ``instance``), and ``heartbeat``: the latest heartbeat of any instance;
* ``cancels``: scope -> (source, part) -> :class:`CancelRecord` (``source`` ``""``
  for a request naming every order, else the group-mode member that named these: each
  member's parts sit beside the others'; parts of different halts may coexist, as on
  the compacted topic; a gate delivers only the standing halt's);
* ``rules``: the latest :class:`RulesRecord`, compiled into ``order_rules``;
* ``marks``: symbol -> :class:`MarkRecord`;
* ``instruments``: symbol -> :class:`InstrumentRecord`;
* ``homes``: strategy -> :class:`HomeRecord` (its home account);
* ``positions``: (scope, symbol) -> :class:`PositionRecord` (read through
  :meth:`ControlView.position`, which applies the staleness rule);
* ``approvals``: scope -> the latest :class:`ApprovalRecord` (a four-eyes step, for
  riskguard's own instances; a gate ignores it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from riskguard.control.records import (
    ApprovalRecord,
    CancelRecord,
    HeartbeatRecord,
    HomeRecord,
    InstrumentRecord,
    MarkRecord,
    PositionRecord,
    Record,
    RuleRecord,
    RulesRecord,
    StateRecord,
    decode_record,
)


@dataclass(frozen=True, slots=True)
class Instant:
    """One reading of both local clocks, in ns.

    ``wall_ns`` is ``time.time_ns()`` (comparable with riskguard's timestamps);
    ``mono_ns`` is ``time.monotonic_ns()`` (for elapsed time, immune to clock steps).
    """

    wall_ns: int
    mono_ns: int

    @classmethod
    def now(cls) -> Instant:
        """The current wall and monotonic time."""
        return cls(time.time_ns(), time.monotonic_ns())


MAX_INSTANCES: Final = 64
"""Instances whose latest heartbeat a view keeps; beyond, the one read longest ago is
forgotten (instance names from restarted pods come and go)."""


@dataclass(frozen=True, slots=True)
class Pulse:
    """The latest heartbeat of one riskguard instance, and when it was read."""

    record: HeartbeatRecord
    read: Instant

    def age_ns(self, at: Instant) -> int:
        """Its age at ``at``, in ns: the age it already had when read, by riskguard's own
        ``ts`` (never below 0, for a reader whose clock is behind riskguard's), plus the
        monotonic time since it was read. A heartbeat replayed from the topic long after
        it was written is therefore old from the moment it is read."""
        return max(0, self.read.wall_ns - self.record.ts) + (at.mono_ns - self.read.mono_ns)


@dataclass(frozen=True, slots=True)
class OrderRule:
    """A per-order rule in the form ``check()`` evaluates fast.

    ``match`` is ``((field, keys), ...)`` with ``keys`` a frozenset; ``upper``/``lower``
    are the bounds (``inf``/``-inf`` when absent). ``record`` is the rule as published.
    """

    record: RuleRecord
    match: tuple[tuple[str, frozenset[str]], ...]
    upper: float
    lower: float


def compile_rule(rule: RuleRecord) -> OrderRule:
    """The fast form of one published rule."""
    return OrderRule(
        rule,
        tuple((name, frozenset(keys)) for name, keys in rule.match.items()),
        math.inf if rule.max is None else rule.max,
        -math.inf if rule.min is None else rule.min,
    )


def valid(record: Record) -> bool:
    """Whether a decoded record's numbers and parts make sense (else it is unreadable).

    Cancel parts need ``0 <= part < parts`` and finite open quantities; marks a finite
    price; marks and instruments a finite multiplier > 0 and a rate None or finite > 0;
    positions a finite quantity; rules finite bounds with ``min <= max``.
    """
    if isinstance(record, CancelRecord):
        return 0 <= record.part < record.parts and all(
            math.isfinite(o.open_qty) for o in record.orders
        )
    if isinstance(record, MarkRecord | InstrumentRecord):
        size = math.isfinite(record.multiplier) and record.multiplier > 0
        rate = record.rate is None or (math.isfinite(record.rate) and record.rate > 0)
        priced = not isinstance(record, MarkRecord) or math.isfinite(record.price)
        return priced and size and rate
    if isinstance(record, PositionRecord):
        return math.isfinite(record.qty)
    if isinstance(record, RulesRecord):
        for rule in record.rules:
            bounds = [b for b in (rule.min, rule.max) if b is not None]
            if not all(math.isfinite(b) for b in bounds):
                return False
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                return False
    return True


@dataclass
class ControlView:
    """The latest record of each key, and the latest heartbeat of each riskguard
    instance, as read from the topic.

    ``heartbeats`` maps each instance to its latest :class:`Pulse` (replaced whole on
    every heartbeat, so another thread may read it at any time); ``heartbeat`` and
    ``heartbeat_read`` are the latest heartbeat of any instance and when it was read
    (local clocks). ``records`` counts readable records, ``unreadable`` the non-null
    values that could not be decoded or failed :func:`valid` (tombstones, null values,
    are neither).
    """

    states: dict[str, StateRecord] = field(default_factory=dict)
    heartbeats: dict[str, Pulse] = field(default_factory=dict)
    heartbeat: HeartbeatRecord | None = None
    heartbeat_read: Instant | None = None
    cancels: dict[str, dict[tuple[str, int], CancelRecord]] = field(default_factory=dict)
    rules: RulesRecord | None = None
    order_rules: tuple[OrderRule, ...] = ()
    marks: dict[str, MarkRecord] = field(default_factory=dict)
    instruments: dict[str, InstrumentRecord] = field(default_factory=dict)
    positions: dict[tuple[str, str], PositionRecord] = field(default_factory=dict)
    homes: dict[str, HomeRecord] = field(default_factory=dict)
    approvals: dict[str, ApprovalRecord] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0
    # the value of ``records`` when a scope's state, or a position, was last read
    _state_seq: dict[str, int] = field(default_factory=dict, repr=False)
    _position_seq: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def apply(self, values: Iterable[bytes | None], at: Instant | None = None) -> list[StateRecord]:
        """Fold message values in offset order, read at ``at`` (default: now).

        Returns the state records among them (:meth:`fold` returns every record).
        Never raises on bad values.
        """
        return [r for r in self.fold(values, at) if isinstance(r, StateRecord)]

    def fold(self, values: Iterable[bytes | None], at: Instant | None = None) -> list[Record]:
        """Fold message values in offset order, read at ``at``; return the records applied.

        Tombstones (``None``) and values that do not decode (or fail :func:`valid`)
        change nothing. A readable record replaces the previous one of its kind and key,
        as named in its value: a scope's state, a scope's cancel part (per source), the
        rules, a symbol's mark or instrument, a (scope, symbol) position, a strategy's
        home, a scope's four-eyes step; a heartbeat replaces the previous heartbeat of its
        instance (and is the latest of any). Never raises on bad values.
        """
        read_at = at or Instant.now()
        applied: list[Record] = []
        for value in values:
            record = decode_record(value)
            if record is None or not valid(record):
                self.unreadable += value is not None
                continue
            self.records += 1
            applied.append(record)
            if isinstance(record, HeartbeatRecord):
                # read time first: a thread reading between these two lines judges the
                # old heartbeat by its true age, never a new one as already old
                self.heartbeat_read = read_at
                self.heartbeat = record
                pulses = dict(self.heartbeats)  # replaced whole: readers never see it change
                pulses.pop(record.instance, None)  # re-inserted last: most recently read
                pulses[record.instance] = Pulse(record, read_at)
                while len(pulses) > MAX_INSTANCES:
                    del pulses[next(iter(pulses))]
                self.heartbeats = pulses
            elif isinstance(record, StateRecord):
                self.states[record.scope] = record
                self._state_seq[record.scope] = self.records
            elif isinstance(record, CancelRecord):
                self.cancels.setdefault(record.scope, {})[record.slot] = record
            elif isinstance(record, RulesRecord):
                # compiled first: a reader between the lines sees old rules, or new ones whole
                self.order_rules = tuple(compile_rule(r) for r in record.rules)
                self.rules = record
            elif isinstance(record, MarkRecord):
                self.marks[record.symbol] = record
            elif isinstance(record, InstrumentRecord):
                self.instruments[record.symbol] = record
            elif isinstance(record, ApprovalRecord):
                self.approvals[record.scope] = record
            elif isinstance(record, HomeRecord):
                self.homes[record.strategy] = record
            else:
                key = (record.scope, record.symbol)
                self.positions[key] = record
                self._position_seq[key] = self.records
        return applied

    def leaves(self, scope: str, symbol: str) -> tuple[float, float]:
        """What the working (buy, sell) orders moving ``scope``'s published position in
        ``symbol`` may still fill, from the record :meth:`position` reads (0.0 and 0.0
        when none is current, or the record does not say: older riskguard versions)."""
        record = self._current(scope, symbol)
        return (0.0, 0.0) if record is None else record.leaves

    def position(self, scope: str, symbol: str) -> float:
        """riskguard's published net position of ``scope`` in ``symbol``; 0.0 when none is current.

        A position record is current when it was read after the scope's latest state
        record, or its ``ts`` is at or after that state's ``transition.decided_ns``. Any
        other is left from an earlier REDUCE_ONLY episode (the topic keeps it until its
        key is written again) and reads as 0, the strict answer: every order increases
        a flat position.
        """
        record = self._current(scope, symbol)
        return 0.0 if record is None else record.qty

    def _current(self, scope: str, symbol: str) -> PositionRecord | None:
        """The current position record of ``scope`` in ``symbol`` (see :meth:`position`)."""
        key = (scope, symbol)
        record = self.positions.get(key)
        if record is None:
            return None
        state = self.states.get(scope)
        if state is None:
            return record
        current = (
            self._position_seq.get(key, 0) > self._state_seq.get(scope, 0)
            or record.ts >= state.transition.decided_ns
        )
        return record if current else None

    def standing(self) -> dict[str, StateRecord]:
        """Scopes whose latest state is not ACTIVE."""
        return {s: r for s, r in self.states.items() if r.state != "ACTIVE"}
