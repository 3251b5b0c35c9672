"""The orders of one halt's cancel request, and an order overdue (riskguard.ingest.cancels).

:class:`Request` holds what a halt's request named and what is still working, by order
id *and serial* (an id recycled for another order means the named one closed long ago),
in numpy arrays so that a runaway's thousands of orders are checked in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from riskguard.evidence import number
from riskguard.inspection import WorkingOrder


@dataclass(eq=False)
class Request:
    """The orders of one halt's cancel request still working (and those opened late)."""

    halt_id: str
    scope: str
    kind: str
    ts: int
    """The halt's evidence time (``Transition.ts``, ns): names the incident."""
    decided_ns: int
    deadline_ns: int | None
    """When its orders must have closed (ns); None: no deadline (``cancel_deadline_ms`` 0)."""
    oids: np.ndarray
    """Order ids (int64) still working."""
    serials: np.ndarray
    """Their serials (int64): an id whose serial changed was recycled."""
    orders: list[WorkingOrder]
    late: np.ndarray
    """bool per order: opened in the scope after the halt (or, increasing its position,
    after the reduce-only): riskguard.ingest.late_orders."""
    named: int = 0
    """Orders the request named when it was published."""
    joined: int = 0
    """Orders :meth:`add` took since the request was made (opened late)."""
    closed: int = 0
    """Orders seen closing since."""
    _joined: list[tuple[int, int]] = field(default_factory=list, repr=False)
    """(order id, serial) of orders :meth:`add` took since the last :meth:`flush`."""

    def keep(self, mask: np.ndarray) -> list[tuple[int, int]]:
        """Keep only the orders where ``mask`` (bool, one per order of :attr:`oids`
        after :meth:`flush`) is true; returns (order id, serial) of those dropped."""
        if mask.all():
            return []
        gone = ~mask
        dropped = list(zip(self.oids[gone].tolist(), self.serials[gone].tolist(), strict=True))
        idx = np.flatnonzero(mask)
        self.closed += len(dropped)
        self.oids, self.serials, self.late = self.oids[idx], self.serials[idx], self.late[idx]
        self.orders = [self.orders[i] for i in idx.tolist()]
        return dropped

    def add(self, oid: int, serial: int, order: WorkingOrder) -> None:
        """Track one more order, opened in the scope after the halt (in the arrays at
        the next :meth:`flush`: a runaway may add thousands a batch)."""
        self.joined += 1
        self._joined.append((oid, serial))
        self.orders.append(order)

    def flush(self) -> None:
        """Put the orders :meth:`add` took into :attr:`oids`, :attr:`serials`, :attr:`late`."""
        if self._joined:
            joined = np.array(self._joined, dtype=np.int64).reshape(-1, 2)
            self.oids = np.concatenate((self.oids, joined[:, 0]))
            self.serials = np.concatenate((self.serials, joined[:, 1]))
            self.late = np.concatenate((self.late, np.ones(len(self._joined), dtype=bool)))
            self._joined = []

    def order_keys(self) -> list[tuple[int, int]]:
        """(order id, serial) of every order it tracks."""
        self.flush()
        return list(zip(self.oids.tolist(), self.serials.tolist(), strict=True))


@dataclass(frozen=True, slots=True)
class Overdue:
    """One order still working past its halt's deadline."""

    order: WorkingOrder
    request: Request
    late: bool
    """Opened in the scope after its halt or reduce-only (riskguard.ingest.late_orders)."""

    def describe(self) -> str:
        """``o7 (A/smars RSHYY buy 100; halt of strategy:smars)`` for an alert."""
        o, r = self.order, self.request
        kind = "halt" if r.kind == "halt" else r.kind.replace("_", "-")
        why = f"opened after the {kind} of" if self.late else f"{kind} of"
        return (
            f"{o.order_id} ({o.account}/{o.strategy} {o.symbol} {o.side} "
            f"{number(o.open_qty)}; {why} {r.scope})"
        )

    def as_dict(self) -> dict[str, Any]:
        """For ``/v1/status``."""
        o, r = self.order, self.request
        return {
            "order_id": o.order_id,
            "account": o.account,
            "strategy": o.strategy,
            "symbol": o.symbol,
            "side": o.side,
            "open_qty": o.open_qty,
            "scope": r.scope,
            "halt_id": r.halt_id,
            "late": self.late,
        }
