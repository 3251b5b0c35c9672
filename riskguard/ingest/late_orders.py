"""Orders opened late: working orders a router opened in a stopped scope after its decision.

The gate refuses new orders in a HALTED scope, and in a REDUCE_ONLY scope those that
would increase its position; a router that does not ask the gate (or sent faster than
riskguard published) opens them anyway. :func:`late_orders` finds them in an applied
batch for the cancel tracker (:class:`riskguard.ingest.cancels.CancelTracker`), which
tracks them in the scope's cancel request like the orders the request named:

- an order (a ``new``, or a confirmed replace that reopens one: docs/events.md) stamped
  after the decision of a scope it belongs to that stands HALTED joins that halt (the
  widest such scope);
- otherwise, one stamped after the decision of a scope it belongs to that stands
  REDUCE_ONLY joins it when it would *increase* that scope's position, judged as the
  reduce-only request judges (:meth:`riskguard.inspection.Inspection.working_order_ids`
  with ``increasing_only``: the position is 0 or has the sign of the order's side), on
  the position after the batch; the widest such scope. A reducing order does not join.
  A group-mode member judges only account scopes (it knows part of any other scope's
  position, and its request names every order there): it joins no order to another
  scope's reduce-only.

Only orders still working after the batch, and not already tracked, are returned.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

import numpy as np

from riskguard.events import Event, NewOrder, ReplaceOrder
from riskguard.ingest.cancel_orders import Request
from riskguard.ingest.ports import OrderBook
from riskguard.state.codes import O_OPEN
from riskguard.vocabulary import Transition, order_scopes

Key = tuple[int, int]
"""(order id, serial): one life of an order."""


def late_orders(
    book: OrderBook,
    events: Sequence[Event],
    tracked: Container[Key],
    member: str | None = None,
) -> dict[str, tuple[Transition, list[Key]]]:
    """The orders ``events`` (applied to ``book``) opened late, by the scope whose
    request they join: scope -> (its standing transition, their keys in event order).

    ``tracked``: keys already in a request (skipped); ``member``: a group-mode member
    (None: single mode), which judges reduce-only for account scopes only.
    """
    standing = book.killswitch.standing()
    halted = {s: tr for s, tr in standing.items() if tr.to == "HALTED"}
    reducing = {
        s: tr
        for s, tr in standing.items()
        if tr.to == "REDUCE_ONLY" and (member is None or s.startswith("account:"))
    }
    if not halted and not reducing:
        return {}
    out: dict[str, tuple[Transition, list[Key]]] = {}
    candidates: list[tuple[Key, list[str]]] = []  # reduce-only scopes each may join
    seen: set[Key] = set()
    for ev in events:
        if not isinstance(ev, NewOrder | ReplaceOrder):  # a replace may reopen one
            continue
        scopes = order_scopes(ev.account, ev.strategy, ev.symbol, ev.venue)
        covering = next(
            (halted[s] for s in scopes if s in halted and ev.ts > halted[s].decided_ns), None
        )  # a scope latched HALTED: the order's effective state is HALTED
        under = (
            []
            if covering is not None
            else [s for s in scopes if s in reducing and ev.ts > reducing[s].decided_ns]
        )
        if covering is None and not under:
            continue
        oid = book.find_order(ev.order_id, ev.account)
        if oid is None:
            continue
        status, serial = book.order_lives(np.array([oid], dtype=np.int64))
        key = (oid, int(serial[0]))
        if int(status[0]) != O_OPEN or key in tracked or key in seen:
            continue
        seen.add(key)
        if covering is not None:
            out.setdefault(covering.scope, (covering, []))[1].append(key)
        else:
            candidates.append((key, under))
    if candidates:
        _join_increasing(book, candidates, reducing, out)
    return out


def _join_increasing(
    book: OrderBook,
    candidates: list[tuple[Key, list[str]]],
    reducing: dict[str, Transition],
    out: dict[str, tuple[Transition, list[Key]]],
) -> None:
    """Add to ``out`` each candidate that would increase the position of one of its
    reduce-only scopes (the widest), judged in one call per scope."""
    by_scope: dict[str, list[Key]] = {}
    for key, scopes in candidates:
        for s in scopes:
            by_scope.setdefault(s, []).append(key)
    up: set[tuple[str, Key]] = set()
    for s, keys in by_scope.items():
        mask = book.increasing(s, np.array([k[0] for k in keys], dtype=np.int64))
        up.update((s, k) for k, m in zip(keys, mask.tolist(), strict=True) if m)
    for key, scopes in candidates:
        joins = next((s for s in scopes if (s, key) in up), None)
        if joins is not None:
            out.setdefault(joins, (reducing[joins], []))[1].append(key)


def standing_request(tr: Transition, deadline_ms: int) -> Request:
    """An empty request for a standing halt or reduce-only ``tr`` (its own request done,
    or not from us), for orders opened late to join; ``deadline_ms``, the limits'
    ``cancel_deadline_ms`` (0: no deadline)."""
    return Request(
        halt_id=tr.id,
        scope=tr.scope,
        kind="halt" if tr.to == "HALTED" else "reduce_only",
        ts=tr.ts,
        decided_ns=tr.decided_ns,
        deadline_ns=tr.decided_ns + deadline_ms * 1_000_000 if deadline_ms else None,
        oids=np.zeros(0, dtype=np.int64),
        serials=np.zeros(0, dtype=np.int64),
        orders=[],
        late=np.zeros(0, dtype=bool),
    )
