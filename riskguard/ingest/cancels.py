"""Cancel on halt: the request of each halt, and the confirmation that its orders closed.

On every transition to HALTED or REDUCE_ONLY (automatic or manual), the outbox asks
:meth:`CancelTracker.request` for the scope's cancel request: every working order of
the scope for a halt, only those that would increase the scope's position for
reduce-only (:meth:`riskguard.inspection.Inspection.working_order_ids`), as
:class:`~riskguard.control.records.CancelRecord` parts of at most
:data:`~riskguard.control.records.CANCEL_PART_MAX` orders (one empty part when nothing
was working), published by the outbox right after the state record.

The tracker remembers each request's orders by order id *and serial* (an id recycled
for another order means the named one closed long ago). After every applied batch and
on the clock tick, :meth:`CancelTracker.check`:

- drops the orders that closed (cancel, fill, reject: their ORDER status is no longer
  ``O_OPEN``, or the id was recycled);
- adds orders opened late (a router that ignores the gate,
  :mod:`riskguard.ingest.late_orders`): new working orders stamped after the decision
  of a HALTED scope they belong to, or of a REDUCE_ONLY one whose position they would
  increase;
- once any of them is still working ``cancel_deadline_ms`` (the limits file) after its
  halt's decision, raises ONE paging system alert ``cancel-incomplete`` listing them
  (the first :data:`LISTED`, and how many); orders joining a standing incident are sent
  as an update with the same alert id (the same PagerDuty incident and Alertmanager
  alert), at most once per :data:`UPDATE_INTERVAL_NS`;
- when none is left, sends ``cancel-complete``, whose ``ends`` is the incident's id:
  the notifiers resolve the incident with it; while orders keep opening late in a scope
  still halted or reduce-only (each closing before the next opens), not until
  :data:`LATE_QUIET_NS` has passed without one: one incident per rogue episode, not one per order.

A resume stops the tracking of its request. No I/O here: the caller sends the alerts.

A halt another active-active instance decided is tracked here too
(:meth:`CancelTracker.track`: its orders are confirmed should that instance die), under
the same incident id (:func:`incident_id`); a group member asks for its own orders
(:meth:`CancelTracker.request` with ``source``) and pages its own incident.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgspec
import numpy as np

from riskguard.control.records import CANCEL_PART_MAX, CancelOrder, CancelRecord
from riskguard.events import Event
from riskguard.evidence import evidence, number
from riskguard.ingest.cancel_orders import Overdue, Request
from riskguard.ingest.late_orders import Key, late_orders, standing_request
from riskguard.ingest.ports import OrderBook
from riskguard.ingest.reduce_breach import ReduceOnlyBreaches
from riskguard.inspection import WorkingOrder
from riskguard.metrics import Metrics
from riskguard.state.codes import O_OPEN
from riskguard.vocabulary import Transition, system_alert, transition_id

LISTED: Final = 10
"""Orders an alert names by id (the rest are counted)."""
STATUS_LISTED: Final = 100
"""Orders ``/v1/status`` lists under ``cancels.incomplete``."""
UPDATE_INTERVAL_NS: Final = 60 * 1_000_000_000
"""At most one update of a standing ``cancel-incomplete`` alert per minute."""
LATE_QUIET_NS: Final = 5 * 1_000_000_000
"""A standing incident resolves only once no order has opened late in a scope still
halted (or reduce-only) for this long (a router not asking the gate, its orders filling in ms, would
otherwise raise and resolve an incident per order)."""
INCOMPLETE: Final = "cancel-incomplete"
COMPLETE: Final = "cancel-complete"
METRIC: Final = "cancel_age_ms"
"""The alerts' metric: how long ago the oldest overdue halt was decided, in ms."""


def cancel_kind(tr: Transition) -> str:
    """``"halt"`` for a transition to HALTED, ``"reduce_only"`` for one to REDUCE_ONLY;
    ``ValueError`` for any other transition (no cancel request)."""
    if tr.is_alert or tr.to not in ("HALTED", "REDUCE_ONLY"):
        raise ValueError(f"transition {tr.id!r} to {tr.to} asks for no cancel")
    return "halt" if tr.to == "HALTED" else "reduce_only"


def cancel_records(
    tr: Transition, orders: Sequence[WorkingOrder], ts: int, source: str | None = None
) -> list[CancelRecord]:
    """The cancel request of ``tr`` naming ``orders``, in parts of at most CANCEL_PART_MAX.

    Parts are numbered 0..parts-1 in the order of ``orders``; no order means one empty
    part. ``ts`` is when riskguard asked (ns since the epoch); ``source``, the group-mode
    member naming the orders of its partitions (None: every order, no ``source``).
    Raises ``ValueError`` for a transition that asks for no cancel (see :func:`cancel_kind`).
    """
    kind = cancel_kind(tr)
    reason = evidence(tr)
    chunks = [orders[i : i + CANCEL_PART_MAX] for i in range(0, len(orders), CANCEL_PART_MAX)]
    if not chunks:
        chunks = [()]
    return [
        CancelRecord(
            halt_id=tr.id,
            scope=tr.scope,
            kind=kind,
            reason=reason,
            part=part,
            parts=len(chunks),
            orders=tuple(
                CancelOrder(o.order_id, o.account, o.strategy, o.symbol, o.side, o.open_qty)
                for o in chunk
            ),
            ts=ts,
            source=source or msgspec.UNSET,
        )
        for part, chunk in enumerate(chunks)
    ]


def incident_id(halt_ts: int, halt_id: str, member: str | None = None) -> str:
    """The id of the ``cancel-incomplete`` incident whose oldest overdue halt is
    ``halt_id`` (its evidence at ``halt_ts``, ns): the same on every instance of an
    active-active pair; a group-mode ``member`` (its own orders only) has its own."""
    tail = f":{member}" if member else ""
    return transition_id("firm", halt_ts, f"ALERT:{INCOMPLETE}:{halt_id}{tail}")


@dataclass(eq=False)
class CancelTracker:
    """Builds each halt's cancel request and confirms its orders close.

    Implements :class:`~riskguard.ingest.ports.CancelRequests`. ``clock`` is the wall
    clock in ns (decisions are stamped with it). Owned by the engine's task.
    """

    engine: OrderBook
    """The engine (single mode), or a group member's engines
    (:class:`~riskguard.ingest.partitions.PartitionEngines`)."""
    metrics: Metrics
    clock: Callable[[], int] = time.time_ns
    member: str | None = None
    """Group mode: this member's name, in its own incident's id (:func:`incident_id`)."""
    restoring: bool = field(init=False, default=False)
    """Between a rebuild and its restore: nothing is confirmed (orders are not known)."""
    requests: dict[str, Request] = field(init=False, default_factory=dict)
    """The request of each scope with orders still to close, by scope."""
    incident: str | None = field(init=False, default=None)
    """The id of the standing ``cancel-incomplete`` alert, None when there is none."""
    overdue_count: int = field(init=False, default=0)
    """Orders past their deadline at the last check (``riskguard_cancel_incomplete``)."""
    confirmed: int = field(init=False, default=0)
    """Requests whose every order closed."""
    _named: set[tuple[int, int]] = field(init=False, default_factory=set)
    _incident_ns: int = field(init=False, default=0)
    _incident_halt: tuple[int, float] = field(init=False, default=(0, 0.0))
    """(decided_ns, deadline ms) of the oldest halt the incident named."""
    _updated_ns: int = field(init=False, default=0)
    _changes: int = field(init=False, default=0)
    """Moves whenever the orders tracked change (a request made, lifted or emptied, an
    order closed or joined)."""
    _joins: int = field(init=False, default=0)
    """Moves whenever an order opened late joins a request."""
    _checked: tuple[int, tuple[str, ...], int] | None = field(init=False, default=None)
    """(:attr:`_changes`, the halt ids past their deadline, :attr:`_joins`) at the last
    check that left nothing to send: the same again needs no work (a runaway keeps many
    orders overdue for many batches)."""
    _listed: tuple[int, tuple[str, ...]] = field(init=False, default=(-1, ()))
    """(:attr:`_changes`, past halt ids) when the overdue orders were last listed whole;
    with only late joins since and no alert update due, a check counts the joins
    instead of listing every order again (O(joined), not O(working), per batch)."""
    _listed_joins: dict[str, int] = field(init=False, default_factory=dict)
    """Per past halt id: its request's :attr:`Request.joined` when last listed."""
    _listed_count: int = field(init=False, default=0)
    _past: list[Request] = field(init=False, default_factory=list)
    """The requests past their deadline at the last check."""
    _overdue: list[Overdue] | None = field(init=False, default=None)
    """The overdue orders as last listed; None: to list again from :attr:`_past`."""
    _late: dict[str, int] = field(init=False, default_factory=dict)
    """Halted scope -> wall clock (ns) when an order opened late in it last joined."""
    _held_until: int | None = field(init=False, default=None)
    """While the standing incident is held open (:data:`LATE_QUIET_NS`): until when."""
    breaches: ReduceOnlyBreaches = field(init=False, default_factory=ReduceOnlyBreaches)
    """Reduce-only positions grown or flipped by orders opened late (their alerts)."""
    _tracked: dict[tuple[int, int], int] = field(init=False, default_factory=dict)
    """(order id, serial) -> how many requests track it (a firm's and a strategy's
    halt may both name an order): orders opened late are told apart in O(1)."""

    # requests ----------------------------------------------------------------------
    def request(self, tr: Transition, source: str | None = None) -> list[CancelRecord]:
        """The cancel request of a transition to HALTED or REDUCE_ONLY, now tracked, its
        parts tagged with ``source`` (a group-mode member; None: untagged).

        Replaces the scope's earlier request (a later halt of a scope overwrites it).
        Raises ``ValueError`` for a transition that asks for no cancel.
        """
        req = self.track(tr)
        self.metrics.cancel_requests.labels(req.kind).inc()
        self.metrics.cancel_orders.inc(req.oids.size)
        return cancel_records(tr, req.orders, self.clock(), source)

    def track(self, tr: Transition) -> Request:
        """Track the working orders of a transition to HALTED or REDUCE_ONLY without
        building its request: one another riskguard instance decided and asked for.

        Replaces the scope's earlier request. Raises ``ValueError`` for a transition
        that asks for no cancel.
        """
        kind = cancel_kind(tr)
        engine = self.engine
        # a group member knows part of a cross-member position: it names every order
        whole = self.member is None or tr.scope.startswith("account:")
        oids = engine.working_order_ids(tr.scope, increasing_only=kind == "reduce_only" and whole)
        orders = engine.describe_orders(oids)
        deadline_ms = engine.limits.cancel_deadline_ms
        self._drop(tr.scope)
        req = self.requests[tr.scope] = Request(
            halt_id=tr.id,
            scope=tr.scope,
            kind=kind,
            ts=tr.ts,
            decided_ns=tr.decided_ns,
            deadline_ns=tr.decided_ns + deadline_ms * 1_000_000 if deadline_ms else None,
            oids=oids,
            serials=engine.order_lives(oids)[1],
            orders=orders,
            late=np.zeros(oids.size, dtype=bool),
            named=oids.size,
        )
        self._count(req.order_keys(), +1)
        self._changes += 1
        return req

    def reindexed(self) -> None:
        """The engine's ids were renumbered (a group-mode rebuild): each request keeps its
        halt and deadline and forgets its orders until :meth:`restored`."""
        none, self.restoring = np.zeros(0, dtype=np.int64), True
        for scope, req in self.requests.items():
            self.requests[scope] = replace(
                req, oids=none, serials=none, orders=[], late=np.zeros(0, dtype=bool), _joined=[]
            )
        self._named, self._tracked = set(), {}
        self._changes += 1

    def restored(self) -> None:
        """The rebuilt state is whole: each standing halt's request tracks its working orders
        again (same deadline), so a rebuild never passes for the orders having closed."""
        standing, self.restoring = self.engine.killswitch.standing(), False
        for scope, req in list(self.requests.items()):
            tr = standing.get(scope)
            if tr is not None and tr.id == req.halt_id:
                self.track(tr)

    def lifted(self, tr: Transition) -> None:
        """A resume: the scope's orders need not close any more; stop tracking them."""
        self._drop(tr.scope)

    def _drop(self, scope: str) -> None:
        """Stop tracking the request of ``scope`` (lifted, or replaced by a newer one)."""
        req = self.requests.pop(scope, None)
        if req is not None:
            self._count(req.order_keys(), -1)
            self._changes += 1

    # confirmation ------------------------------------------------------------------
    def check(self, events: Sequence[Event] = (), now_ns: int | None = None) -> list[Transition]:
        """After a batch (its ``events``) or a clock tick: the alerts to send (maybe none):
        reduce-only breaches of the batch (:mod:`riskguard.ingest.reduce_breach`), then
        those of the cancels; ``now_ns`` is the wall clock (default: the tracker's).
        None while restoring."""
        now = self.clock() if now_ns is None else now_ns
        breaches: list[Transition] = []
        if events:
            self._opened_late(events)
            if not self.restoring:
                breaches = self.breaches.observe(self.engine, events, self.member, now)
        return [*breaches, *self._confirm(now)]

    def _confirm(self, now: int) -> list[Transition]:
        """The cancel alerts due at ``now`` (wall clock, ns): see :meth:`check`."""
        if self.restoring or (not self.requests and self.incident is None):
            return []
        past: list[Request] = []
        for scope, req in list(self.requests.items()):
            req.flush()
            status, serial = self.engine.order_lives(req.oids)
            closed = req.keep((status == O_OPEN) & (serial == req.serials))
            self._count(closed, -1)
            if not req.orders:
                del self.requests[scope]
                self.confirmed += 1
                if req.named:
                    self.metrics.cancel_confirmation.observe(max(0, now - req.decided_ns) / 1e9)
                continue
            if req.deadline_ns is not None and now >= req.deadline_ns:
                past.append(req)
        past_ids = tuple(req.halt_id for req in past)
        checked = (self._changes, past_ids, self._joins)
        if checked == self._checked:
            return []  # the same orders overdue as at the last check, which sent all
        self._past = past
        due = self.incident is None or now - self._updated_ns >= UPDATE_INTERVAL_NS
        if (self._changes, past_ids) == self._listed and not due:
            # only orders opened late joined since the last listing, and the standing
            # alert's update is not due: count them; list them when asked
            joined = sum(r.joined - self._listed_joins.get(r.halt_id, 0) for r in past)
            self._overdue = None
            self.overdue_count = self._listed_count + joined
            self.metrics.cancel_incomplete.set(self.overdue_count)
            return []
        overdue, seen = _listing(past)
        self._overdue, self.overdue_count = overdue, len(overdue)
        if not overdue and self.incident is not None and now < self._quiet_at():
            # orders still open late in a halted scope: the incident stays, checked again
            # at every tick (never skipped as unchanged) until the quiet has passed
            self._held_until, self._listed, self._checked = self._quiet_at(), (-1, ()), None
            self.metrics.cancel_incomplete.set(0)
            return []
        self._listed, self._listed_count = (self._changes, past_ids), len(overdue)
        self._listed_joins = {r.halt_id: r.joined for r in past}
        self.metrics.cancel_incomplete.set(len(overdue))
        alerts = self._alerts(overdue, seen, now)
        # an update held back (UPDATE_INTERVAL_NS) is still to send: check again then
        self._checked = checked if seen <= self._named or self.incident is None else None
        return alerts

    def _quiet_at(self) -> int:
        """When :data:`LATE_QUIET_NS` has passed since an order last opened late in a
        scope still halted or reduce-only (0: none did; a resume ends the wait at once)."""
        standing = self.engine.killswitch.standing()
        self._late = {s: ns for s, ns in self._late.items() if s in standing}
        return max(self._late.values(), default=-LATE_QUIET_NS) + LATE_QUIET_NS

    @property
    def overdue(self) -> list[Overdue]:
        """The orders past their deadline at the last check (what the alert names), in
        request order; listed again here after checks that only counted late joins."""
        if self._overdue is None:
            self._overdue = _listing(self._past)[0]
        return self._overdue

    def _count(self, keys: Sequence[tuple[int, int]], step: int, *, late: bool = False) -> None:
        """Add ``step`` to how many requests track each of ``keys`` (``late``: orders
        opened late joining, counted apart from other changes)."""
        if not keys:
            return
        if late:
            self._joins += 1
        else:
            self._changes += 1
        tracked = self._tracked
        for key in keys:
            n = tracked.get(key, 0) + step
            if n > 0:
                tracked[key] = n
            else:
                tracked.pop(key, None)

    def _alerts(
        self, overdue: list[Overdue], keys: set[tuple[int, int]], now: int
    ) -> list[Transition]:
        firm = self.engine.killswitch.state("firm")
        if not overdue:
            if self.incident is None:
                return []
            ends, named, held = self.incident, len(self._named), self._held_until
            self.incident, self._named, self._held_until = None, set(), None
            took = number((now - self._incident_ns) / 1e6)
            decided_ns, deadline_ms = self._incident_halt
            alert = system_alert(
                COMPLETE,
                METRIC,
                firm,
                value=round((now - decided_ns) / 1e6, 1),
                limit=deadline_ms,
                reason=(
                    f"the {named} order(s) named by alert {ends} have closed, or their halt "
                    f"was lifted, {took} ms after the alert"
                    + (
                        f"; held open until no order had opened late in a halted or "
                        f"reduce-only scope for "
                        f"{LATE_QUIET_NS / 1e9:g} s"
                        if held is not None
                        else ""
                    )
                ),
                now_ns=now,
            )
            return [msgspec.structs.replace(alert, ends=ends)]
        joined = keys - self._named
        recent = now - self._updated_ns < UPDATE_INTERVAL_NS
        if self.incident is not None and (not joined or recent):
            return []
        oldest = min((o.request for o in overdue), key=lambda r: (r.ts, r.halt_id))
        alert = self._incomplete(overdue, oldest, firm, now)
        if self.incident is None:
            tid = incident_id(oldest.ts, oldest.halt_id, self.member)
            alert = msgspec.structs.replace(alert, id=tid)
            self.incident, self._incident_ns = alert.id, now
            self._incident_halt = (oldest.decided_ns, alert.limit or 0.0)
        else:  # an update: the same incident in every notifier
            alert = msgspec.structs.replace(alert, id=self.incident)
        self._updated_ns = now
        self._named |= keys
        return [alert]

    def _incomplete(
        self, overdue: list[Overdue], oldest: Request, firm: str, now: int
    ) -> Transition:
        assert oldest.deadline_ns is not None  # only requests with a deadline are overdue
        listed = "; ".join(o.describe() for o in overdue[:LISTED])
        more = len(overdue) - LISTED
        late = sum(o.late and o.request.kind == "halt" for o in overdue)
        raised = sum(o.late and o.request.kind == "reduce_only" for o in overdue)
        reason = (
            f"{len(overdue)} order(s) still working after riskguard asked for their cancel: "
            f"{listed}" + (f"; and {more} more" if more > 0 else "")
        )
        if late:
            reason += (
                f". {late} of them opened in the halted scope after the halt was decided "
                "(sent before the gate held it, or by a router not asking the gate)"
            )
        if raised:
            reason += (
                f". {raised} of them opened in a reduce-only scope after it was decided, "
                "increasing its position (sent before the gate held it, or by a router "
                "not asking the gate)"
            )
        return system_alert(
            INCOMPLETE,
            METRIC,
            firm,
            value=round((now - oldest.decided_ns) / 1e6, 1),
            limit=float((oldest.deadline_ns - oldest.decided_ns) // 1_000_000),
            reason=reason,
            now_ns=now,
        )

    def _opened_late(self, events: Sequence[Event]) -> None:
        """Track working orders opened by ``events`` after the decision of a halted scope,
        or increasing a reduce-only one (:func:`~riskguard.ingest.late_orders.late_orders`),
        described in one call per request: a runaway opens thousands."""
        found = late_orders(self.engine, events, self._tracked, self.member)
        for scope, (tr, joined) in found.items():
            if scope not in self.requests:
                deadline_ms = self.engine.limits.cancel_deadline_ms
                self.requests[scope] = standing_request(tr, deadline_ms)
            req = self.requests[scope]
            named = self.engine.describe_orders(np.array([k[0] for k in joined], dtype=np.int64))
            for key, order in zip(joined, named, strict=True):
                req.add(*key, order)
            self._count(joined, +1, late=True)
            self._late[scope] = self.clock()

    # reports -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """For ``/v1/status``: the deadline, the requests waiting, what is overdue."""
        return {
            "deadline_ms": self.engine.limits.cancel_deadline_ms,
            "requests": [
                {
                    "halt_id": r.halt_id,
                    "scope": r.scope,
                    "kind": r.kind,
                    "decided_ns": r.decided_ns,
                    "deadline_ns": r.deadline_ns,
                    "named": r.named,
                    "closed": r.closed,
                    "working": len(r.orders),
                }
                for r in self.requests.values()
            ],
            "confirmed": self.confirmed,
            "incomplete": {
                "alert_id": self.incident,
                "count": self.overdue_count,
                "held_until_ns": self._held_until,
                "orders": [o.as_dict() for o in _listing(self._past, STATUS_LISTED)[0]],
            },
        }


def _listing(past: Sequence[Request], limit: int | None = None) -> tuple[list[Overdue], set[Key]]:
    """The orders of ``past`` requests, each once, in request order (the first ``limit``
    of them; None: all), and their (order id, serial) keys."""
    overdue: list[Overdue] = []
    seen: set[Key] = set()
    for req in past:
        for i, key in enumerate(req.order_keys()):
            if limit is not None and len(overdue) >= limit:
                return overdue, seen
            if key not in seen:
                seen.add(key)
                overdue.append(Overdue(req.orders[i], req, bool(req.late[i])))
    return overdue, seen
