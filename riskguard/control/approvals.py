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

With riskguard instances running active-active, each step taken here is handed to
:meth:`FourEyes.share`'s relay (published on the control topic as an
:class:`~riskguard.control.records.ApprovalRecord`), and the steps of the other
instances are applied with :meth:`FourEyes.mirror`: a request made through one
instance's API can be approved or withdrawn through another's.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from riskguard.control.records import ApprovalRecord
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
    instance: str = ""
    """The riskguard instance whose API took the request ("" when not shared)."""

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
        self.instance = ""
        self._relay: Callable[[ApprovalRecord], None] | None = None
        self._taken: Callable[[str, str, float], Awaitable[bool]] | None = None

    def share(
        self,
        instance: str,
        relay: Callable[[ApprovalRecord], None],
        taken: Callable[[str, str, float], Awaitable[bool]] | None = None,
    ) -> None:
        """Hand every step taken here from now on to ``relay`` (which publishes it for the
        other instances), as instance ``instance``. ``relay`` must not block; ``taken``
        (request id, event, timeout in s) says whether the broker took a step in time."""
        self.instance = instance
        self._relay, self._taken = relay, taken

    async def shared(self, request_id: str, timeout_s: float) -> bool | None:
        """Whether the request ``request_id`` reached the control topic within
        ``timeout_s`` seconds, so every instance lists it (None: not shared, a single
        instance). False: this instance alone knows it for now (it is retried)."""
        if self._taken is None:
            return None
        return await self._taken(request_id, "requested", timeout_s)

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
            instance=self.instance,
        )
        self._pending[req.request_id] = req
        self._audit("requested", req, who)
        self._share("requested", req, None)
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
        for req in old:  # every instance expires a request itself: nothing to share
            self._end(req, "expired unapproved", "expired", None, None, share=False)
        return old

    def mirror(self, step: ApprovalRecord) -> bool:
        """Apply a step another riskguard instance took (read from the control topic).

        ``requested`` adds the request, unless its id is known, it has expired, or
        another request for the scope is pending: then the one requested first (by time,
        then id) stays and the other ends (voided), which every instance decides alike.
        An end (``approved``, ``withdrawn``, ``voided``, ``expired``) ends the request
        here too, as it ended there; the resume itself reaches this instance as a state
        record. Nothing is shared back. Returns True when something changed.
        """
        self.expire()
        known = self._pending.get(step.request_id)
        if step.event != "requested":
            how = step.how or step.event
            if known is not None:
                self._end(known, how, step.event, None, None, share=False, via=step)
                return True
            self._remember(step.request_id, how)
            return False
        if known is not None or step.request_id in self._closed:
            return False
        if step.expires_ns <= self.clock():
            self._remember(step.request_id, "expired unapproved")
            return False
        req = PendingResume(
            request_id=step.request_id,
            scope=step.scope,
            requested_by=step.requested_by,
            reason=step.reason,
            requested_ns=step.requested_ns,
            expires_ns=step.expires_ns,
            lifts=step.lifts,
            instance=step.instance,
        )
        rival = next((p for p in self._pending.values() if p.scope == step.scope), None)
        if rival is not None:
            first, second = sorted((rival, req), key=lambda p: (p.requested_ns, p.request_id))
            why = (
                f"voided: a resume of {first.scope} was requested first, request "
                f"{first.request_id} by {first.requested_by}"
            )
            if second is req:
                self._remember(req.request_id, why)
                return False
            self._end(rival, why, "voided", None, None, share=False)
        self._pending[req.request_id] = req
        self._audit("requested", req, None, via=step)
        return True

    def _end(
        self,
        req: PendingResume,
        how: str,
        event: str,
        who: Identity | None,
        reason: str | None,
        *,
        share: bool = True,
        via: ApprovalRecord | None = None,
    ) -> None:
        del self._pending[req.request_id]
        self._remember(req.request_id, how)
        self._audit(event, req, who, reason, via=via)
        if share:
            self._share(event, req, how)

    def _remember(self, request_id: str, how: str) -> None:
        self._closed[request_id] = how
        while len(self._closed) > REMEMBER_CLOSED:
            self._closed.popitem(last=False)

    def _share(self, event: str, req: PendingResume, how: str | None) -> None:
        if self._relay is None:
            return
        self._relay(
            ApprovalRecord(
                event=event,
                request_id=req.request_id,
                scope=req.scope,
                requested_by=req.requested_by,
                reason=req.reason,
                requested_ns=req.requested_ns,
                expires_ns=req.expires_ns,
                instance=self.instance,
                ts=self.clock(),
                lifts=req.lifts,
                how=how,
            )
        )

    def _audit(
        self,
        event: str,
        req: PendingResume,
        who: Identity | None,
        reason: str | None = None,
        *,
        via: ApprovalRecord | None = None,
    ) -> None:
        body: dict[str, Any] = {"event": event, **req.public()}
        if who is not None:
            body |= {"by": who.name, "role": who.role, "break_glass": who.break_glass}
        if reason is not None and event != "requested":
            body["by_reason"] = reason
        if via is not None:  # taken on another instance: which one, and how it ended
            body |= {"via_instance": via.instance, "how": via.how or via.event}
        self.audit.record("approval", body)
