"""Cancel requests as the gate hands them over: which parts are due, cancel on disconnect.

Pure functions and small records over :class:`~riskguard.control.view.ControlView`
(standard library and msgspec only: the trading process embeds this). The contract is
``docs/control-topic.md``; ``docs/control-topic-vectors.json`` tests it.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from riskguard.control.records import CancelOrder, CancelRecord
from riskguard.control.view import ControlView


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """What ``on_cancel`` receives: cancel these working orders now.

    ``kind`` is ``"halt"`` (every working order of ``scope``), ``"reduce_only"`` (the
    working orders that would increase the scope's position) or ``"disconnect"`` (the
    gate has failed closed for ``cancel_on_disconnect_ms``: ``scope`` is ``firm`` and
    ``orders`` is empty, meaning *cancel everything you have working*). ``halt_id`` is
    the id of the transition that asked (``disconnect@<ns>`` for a disconnect);
    ``reason`` its evidence in words. A large scope's list arrives in ``parts`` requests
    numbered ``part`` = 0 … parts-1, each delivered on its own. ``ts``: when riskguard
    asked (a disconnect: when the gate decided), ns since the epoch. ``source``: the
    riskguard group-mode member that named these orders (those of its own input
    partitions; each member's parts are numbered 0 … parts-1 on their own, and one halt
    brings a request from every member), or ``""`` for a request naming every order
    (single mode, active-active, a disconnect).
    Each order has ``order_id``, ``account``, ``strategy``, ``symbol``, ``side``
    (``buy``/``sell``) and ``open_qty`` (the quantity not yet filled).
    """

    scope: str
    orders: tuple[CancelOrder, ...]
    reason: str
    halt_id: str
    kind: str
    part: int = 0
    parts: int = 1
    ts: int = 0
    source: str = ""

    @classmethod
    def of(cls, record: CancelRecord) -> CancelRequest:
        """The request one cancel record carries."""
        return cls(
            record.scope,
            record.orders,
            record.reason,
            record.halt_id,
            record.kind,
            record.part,
            record.parts,
            record.ts,
            record.named_by,
        )


Delivery = tuple[str, str, int]
"""(halt_id, source, part): one cancel part as handed over (``source`` ``""`` when it
names every order), remembered so that it is handed over once."""


def delivery(record: CancelRecord) -> Delivery:
    """The (halt_id, source, part) of ``record``, for the delivered bookkeeping."""
    return record.halt_id, record.named_by, record.part


def due_cancels(
    view: ControlView, scopes: Iterable[str], delivered: Container[Delivery]
) -> list[CancelRecord]:
    """The cancel parts of ``scopes`` due for delivery, by scope, then source (``""``
    first), then part.

    A part is due when its ``halt_id`` is the ``transition.id`` of its scope's latest
    state record (a part of an earlier halt, or of a halt since resumed or escalated,
    never is; a part read before its state record becomes due when the state is read),
    and its :func:`delivery` ``(halt_id, source, part)`` is not in ``delivered``: the
    parts group-mode members each named for one halt are each due once.
    """
    due: list[CancelRecord] = []
    for scope in scopes:
        parts = view.cancels.get(scope)
        state = view.states.get(scope)
        if not parts or state is None:
            continue
        standing = state.transition.id
        due.extend(
            parts[slot]
            for slot in sorted(parts)
            if parts[slot].halt_id == standing and (standing, *slot) not in delivered
        )
    return due


@dataclass
class DisconnectWatch:
    """Cancel on disconnect: due once the gate has failed closed for ``after_ms``.

    Feed it :meth:`step` with the health and the monotonic clock; it answers True once
    per outage (when the failure has lasted ``after_ms``), and re-arms when healthy.
    """

    after_ms: int
    failing_since_ns: int | None = None
    fired: bool = False

    def step(self, healthy: bool, mono_ns: int) -> bool:
        """True exactly when the disconnect request is due now."""
        if healthy:
            self.failing_since_ns = None
            self.fired = False
            return False
        if self.failing_since_ns is None:
            self.failing_since_ns = mono_ns
        if not self.fired and mono_ns - self.failing_since_ns >= self.after_ms * 1_000_000:
            self.fired = True
            return True
        return False
