"""The narrow interfaces the sidecar's parts are written against.

Recovery, limits reload, the operators' API, manual actions and health see each
other only through these Protocols, never through
:class:`~riskguard.ingest.runtime.Sidecar`. This module imports nothing of the
runtime, so no part can form an import cycle through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from riskguard.control.records import CancelRecord, HeartbeatRecord
from riskguard.inspection import WorkingOrder
from riskguard.killswitch import KillSwitch
from riskguard.limits import Limits
from riskguard.vocabulary import State, Transition


class TransitionSink(Protocol):
    """Where transitions and system alerts go out (the outbox)."""

    async def send(self, transitions: Sequence[Transition]) -> None:
        """Send state changes and alerts out, in order, through every outlet."""
        ...


class Reassertion(Protocol):
    """Where states restored at start go back out (the outbox)."""

    async def reassert(
        self, restored: Sequence[Transition], republish: Sequence[Transition]
    ) -> None:
        """Re-publish ``republish`` to the control topic; count every ``restored`` state."""
        ...


class CancelAsks(Protocol):
    """Where a group-mode member asks for the cancel of its own working orders in halts
    other members decided (the outbox)."""

    async def ask_cancels(self, transitions: Sequence[Transition]) -> None:
        """Publish this member's cancel request of each transition to HALTED or
        REDUCE_ONLY (its state record is another member's), and track its orders."""
        ...


class OrderBook(Protocol):
    """The working orders the cancel tracker names and watches: an engine, or a group
    member's engines (:class:`~riskguard.ingest.partitions.PartitionEngines`), whose
    order ids (int64) are its own."""

    @property
    def killswitch(self) -> KillSwitch:
        """The kill switch whose standing states the orders are judged under."""
        ...

    @property
    def limits(self) -> Limits:
        """The limits in force (``cancel_deadline_ms``)."""
        ...

    def working_order_ids(self, scope: str, *, increasing_only: bool = False) -> np.ndarray:
        """Ids of the orders working in ``scope``."""
        ...

    def increasing(self, scope: str, oids: np.ndarray) -> np.ndarray:
        """bool per order of ``oids``: would it increase ``scope``'s position (the
        reduce-only selection of :meth:`working_order_ids`)?"""
        ...

    def describe_orders(self, oids: np.ndarray) -> list[WorkingOrder]:
        """The orders of ``oids``, named."""
        ...

    def position(self, owner: str, symbol: str) -> float:
        """Net position of scope ``owner`` (firm, account, strategy) in ``symbol``."""
        ...

    def order_lives(self, oids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(status, serial) of each of ``oids``."""
        ...

    def find_order(self, order_id: str, account: str | None = None) -> int | None:
        """The id of the order whose ClOrdID is ``order_id`` (None: unknown); with
        ``account``, that account's (a ClOrdID closed in one account may be reused in
        another)."""
        ...


class CancelRequests(Protocol):
    """Builds the cancel request of each halt and tracks its orders (the cancel tracker)."""

    def request(self, tr: Transition, source: str | None = None) -> Sequence[CancelRecord]:
        """The cancel request of a transition to HALTED or REDUCE_ONLY, in parts (tagged
        with ``source``, a group-mode member, when given)."""
        ...

    def lifted(self, tr: Transition) -> None:
        """A resume: the scope's orders need not be cancelled any more."""
        ...

    def track(self, tr: Transition) -> object:
        """Track the orders of a halt another instance asked to cancel (no request built)."""
        ...


class RulesChannel(Protocol):
    """Where the per-order rules of the limits in force are published (the gate feed)."""

    async def rules_changed(self, limits: Limits) -> None:
        """``limits`` are in force now: publish their per-order rules."""
        ...


class ScopeStates(Protocol):
    """Reads trading states (the kill switch)."""

    def state(self, scope: str) -> State:
        """The latched trading state of ``scope`` (``"ACTIVE"`` for one never seen)."""
        ...


class StandingStates(Protocol):
    """Re-asserts states decided earlier (the kill switch)."""

    def restore(self, tr: Transition) -> bool:
        """Latch the state ``tr`` leads to; True when that changed the scope's state."""
        ...


class Recoverable(Protocol):
    """The engine as recovery sees it."""

    @property
    def killswitch(self) -> StandingStates:
        """Where standing states are re-asserted."""
        ...

    def judge_until(self, ts_ns: int) -> None:
        """Treat breaches from events at or before ``ts_ns`` (ns) as already judged."""
        ...


class LimitsOwner(Protocol):
    """Holds the limits in force and swaps them (the engine)."""

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        ...

    def replace_limits(self, limits: Limits) -> list[Transition]:
        """Swap in validated limits between two batches; returns what it decided (the
        resolves of alerts of rules removed or changed, and the judgements of rules
        added or changed on the book as it stands)."""
        ...


class HeartbeatChannel(Protocol):
    """Where heartbeats are published (the control topic's publisher)."""

    rewinds: int
    """Times the topic's offsets went back under the heartbeats (it was re-created)."""

    async def heartbeat(self, record: HeartbeatRecord) -> bool:
        """Publish one heartbeat; False when the broker did not take it."""
        ...


class AuditTrail(Protocol):
    """Where records for the audit log go (the audit log)."""

    def record(self, kind: str, body: Any) -> None:
        """Queue one record of ``kind`` (never blocks)."""
        ...


class OperatorDesk(Protocol):
    """Operators' manual actions, as the control API uses them."""

    async def manual(
        self,
        action: str,
        scope: str,
        operator: str,
        reason: str,
        *,
        approved_by: str | None = None,
        audit: Mapping[str, Any] | None = None,
    ) -> Transition | None:
        """``halt``, ``reduce_only`` or ``resume`` a scope; None when nothing changed.

        ``operator`` is the identity that asked (the token's owner), ``approved_by`` the
        second risk-admin of a four-eyes resume, ``audit`` extra fields for the audit
        record. Raises :class:`ValueError` for an empty operator or reason or an unknown
        action, :class:`~riskguard.vocabulary.ScopeError` (a ``ValueError``) for a
        malformed scope; nothing changes then.
        """
        ...

    def state(self, scope: str) -> State:
        """The trading state of ``scope`` after the action."""
        ...

    def standing(self) -> Mapping[str, Transition]:
        """Every scope not ACTIVE, with the transition that put it there."""
        ...

    def record(self, kind: str, body: Any) -> None:
        """Audit one record (a refused request, a four-eyes step)."""
        ...

    def subscribe(self, listener: Callable[[Transition], Any]) -> Callable[[], None]:
        """Call ``listener`` with every kill-switch transition; returns an unsubscribe."""
        ...


class Probes(Protocol):
    """Liveness and readiness, as the control API reports them."""

    def healthy(self) -> bool:
        """The consume loop polled within its stall budget."""
        ...

    def readiness(self) -> Mapping[str, bool]:
        """Every readiness check by name, plus ``loop_healthy``."""
        ...


class UsersFile(Protocol):
    """The users file in force, reloaded on SIGHUP (:class:`riskguard.control.roster.Roster`)."""

    @property
    def path(self) -> Any:
        """The users file (a path), or None: only the break-glass token."""
        ...

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the file in force; empty without one."""
        ...

    @property
    def last_error(self) -> str:
        """Why the latest reload was rejected; empty when it was not."""
        ...

    def reload(self, trigger: str) -> bool:
        """Re-read the file; True when a changed, valid file was swapped in."""
        ...
