"""Four-eyes resume: a resume at a wide scope needs a second risk-admin.

A resume of a scope whose level is in ``[http] four_eyes`` (firm and account by
default) does not lower the scope: it becomes a pending request, answered with its
``request_id``. A *different* risk-admin approves it (``POST /v1/approve``) and only
then is the resume carried out, naming both people. A request ends when it is
approved, withdrawn (by any risk-admin), expired (``approval_timeout_s`` after it was
made) or voided: a new breach or halt of its scope (a transition of that scope to
REDUCE_ONLY or HALTED, or an operator's halt of it even when nothing changed) means the
person who asked judged a situation that no longer holds. At most one request per
scope is pending. Every step is audited (kind ``approval``).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from riskguard.control.users import Identity
from riskguard.ingest.ports import AuditTrail
from riskguard.vocabulary import LEVELS, Transition, parse_scope

REMEMBER_CLOSED: Final = 1_000
"""How many ended requests are remembered, to say why an id is no longer pending."""


class ApprovalError(Exception):
    """A four-eyes request that cannot be acted on; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PendingResume:
    """One resume waiting for a second risk-admin. Times are ns since the epoch, UTC."""

    request_id: str
    scope: str
    requested_by: str
    reason: str
    requested_ns: int
    expires_ns: int
    lifts: str | None
    """The id of the standing transition the resume would lift, when the request was made."""

    def public(self) -> dict[str, Any]:
        """As listed in ``/v1/status`` (``approvals``)."""
        return asdict(self)


class FourEyes:
    """Pending resume requests. ``levels`` are the scope levels that need them."""

    def __init__(
        self,
        levels: Sequence[str],
        timeout_s: float,
        audit: AuditTrail,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.levels = tuple(levels)
        self.timeout_ns = int(timeout_s * 1e9)
        self.audit = audit
        self.clock = clock
        self._pending: dict[str, PendingResume] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()

    def needs_approval(self, scope: str) -> bool:
        """True when a resume of ``scope`` needs a second risk-admin.

        Raises :class:`~riskguard.vocabulary.ScopeError` for a malformed scope.
        """
        level, _ = parse_scope(scope)
        return LEVELS[level] in self.levels

    def pending(self) -> list[PendingResume]:
        """Requests still pending, oldest first (expired ones are ended first)."""
        self.expire()
        return sorted(self._pending.values(), key=lambda p: p.requested_ns)

    def request(self, scope: str, who: Identity, reason: str, lifts: str | None) -> PendingResume:
        """Record ``who``'s request to resume ``scope``.

        Raises :class:`ApprovalError` (409) when a request for the scope is already
        pending: approve or withdraw that one.
        """
        self.expire()
        for p in self._pending.values():
            if p.scope == scope:
                raise ApprovalError(
                    409,
                    f"a resume of {scope} is already pending: request {p.request_id} by "
                    f"{p.requested_by}; approve or withdraw it",
                )
        now = self.clock()
        req = PendingResume(
            request_id="r-" + secrets.token_hex(6),
            scope=scope,
            requested_by=who.name,
            reason=reason,
            requested_ns=now,
            expires_ns=now + self.timeout_ns,
            lifts=lifts,
        )
        self._pending[req.request_id] = req
        self._audit("requested", req, who)
        return req

    def _find(self, request_id: str) -> PendingResume:
        self.expire()
        req = self._pending.get(request_id)
        if req is not None:
            return req
        ended = self._closed.get(request_id)
        if ended is not None:
            raise ApprovalError(409, f"request {request_id} is no longer pending: {ended}")
        raise ApprovalError(404, f"no pending request {request_id!r}")

    def approve(self, request_id: str, who: Identity, reason: str) -> PendingResume:
        """End the request as approved by ``who`` and return it (the caller resumes).

        Raises :class:`ApprovalError`: 404 for an unknown id, 409 for one that ended
        (saying how), 403 when ``who`` made the request (four-eyes means two people).
        """
        req = self._find(request_id)
        if who.name == req.requested_by:
            raise ApprovalError(
                403,
                f"{who.name} asked for this resume and cannot also approve it: "
                "a different risk-admin must (four-eyes)",
            )
        self._end(req, f"approved by {who.name}", "approved", who, reason)
        return req

    def withdraw(self, request_id: str, who: Identity, reason: str) -> PendingResume:
        """End the request as withdrawn by ``who``. Raises :class:`ApprovalError` like
        :meth:`approve` (anyone allowed to approve may withdraw)."""
        req = self._find(request_id)
        self._end(req, f"withdrawn by {who.name}: {reason}", "withdrawn", who, reason)
        return req

    def void(self, scope: str, why: str) -> list[PendingResume]:
        """End every request for ``scope``: ``why`` it no longer holds."""
        ended = [p for p in self._pending.values() if p.scope == scope]
        for req in ended:
            self._end(req, f"voided: {why}", "voided", None, why)
        return ended

    def on_transition(self, tr: Transition) -> None:
        """Kill-switch listener: a breach or halt of a scope voids its pending resume."""
        if (
            not tr.is_alert
            and tr.to != "ACTIVE"
            and any(p.scope == tr.scope for p in self._pending.values())
        ):
            cause = (
                f"{tr.scope} went {tr.to} by {tr.operator}"
                if tr.kind == "manual"
                else f"{tr.scope} went {tr.to} on rule {tr.rule}"
            )
            self.void(tr.scope, cause)

    def expire(self) -> list[PendingResume]:
        """End the requests past their deadline; returns them."""
        now = self.clock()
        old = [p for p in self._pending.values() if p.expires_ns <= now]
        for req in old:
            self._end(req, "expired unapproved", "expired", None, None)
        return old

    def _end(
        self,
        req: PendingResume,
        how: str,
        event: str,
        who: Identity | None,
        reason: str | None,
    ) -> None:
        del self._pending[req.request_id]
        self._closed[req.request_id] = how
        while len(self._closed) > REMEMBER_CLOSED:
            self._closed.popitem(last=False)
        self._audit(event, req, who, reason)

    def _audit(
        self, event: str, req: PendingResume, who: Identity | None, reason: str | None = None
    ) -> None:
        body: dict[str, Any] = {"event": event, **req.public()}
        if who is not None:
            body |= {"by": who.name, "role": who.role, "break_glass": who.break_glass}
        if reason is not None and event != "requested":
            body["by_reason"] = reason
        self.audit.record("approval", body)
