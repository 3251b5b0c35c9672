"""Operators' manual actions: halt, reduce_only, resume.

A manual action takes exactly the path of an automatic decision: the kill switch
decides the transition, the outbox sends it out. The action itself, changed or
not, is audited first (who asked what, and why).

Over HTTP (the API, the console, the CLI) ``operator`` is always the owner of the
token that made the request, and ``audit`` says so (``via: http``, the identity's
role, whether it was the break-glass token). Code running inside riskguard's own
process (tests, the demo) calls :meth:`ManualActions.manual` directly: its audit
record says ``via: process``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from riskguard.audit import AuditLog
from riskguard.ingest.ports import TransitionSink
from riskguard.killswitch import KillSwitch
from riskguard.vocabulary import State, Transition


class ManualActions:
    """Operators' actions on one kill switch. Implements
    :class:`~riskguard.ingest.ports.OperatorDesk`."""

    def __init__(self, killswitch: KillSwitch, audit: AuditLog, outbox: TransitionSink) -> None:
        self.killswitch = killswitch
        self.audit = audit
        self.outbox = outbox

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
        """``halt``, ``reduce_only`` or ``resume`` ``scope``; None when nothing changed.

        ``approved_by`` names the second risk-admin of a four-eyes resume; ``audit``
        adds fields to the audit record (default ``{"via": "process"}``).

        Raises :class:`ValueError` for an empty operator or reason or an unknown
        action, :class:`~riskguard.vocabulary.ScopeError` (a ``ValueError``) for a
        malformed scope; nothing changes then. Raises
        :class:`~riskguard.ingest.outbox.OutboxNotOpenError` for a change made before the
        control topic is open (the state is latched and audited, but not sent).
        """
        ks = self.killswitch
        if action == "resume":
            tr = ks.resume(scope, operator, reason, approved_by=approved_by)
        else:
            tr = ks.halt(scope, operator, reason, action=action)
        record: dict[str, Any] = {
            "action": action,
            "scope": scope,
            "operator": operator,
            "reason": reason,
            "changed": tr is not None,
            **(audit if audit is not None else {"via": "process"}),
        }
        if approved_by is not None:
            record["approved_by"] = approved_by
        self.audit.record("manual", record)
        if tr is not None:
            await self.outbox.send([tr])
        return tr

    def state(self, scope: str) -> State:
        """The latched state of ``scope`` (``"ACTIVE"`` for one never seen)."""
        return self.killswitch.state(scope)

    def standing(self) -> Mapping[str, Transition]:
        """Every scope not ACTIVE, with the transition that put it there."""
        return self.killswitch.standing()

    def record(self, kind: str, body: Any) -> None:
        """Audit one record."""
        self.audit.record(kind, body)

    def subscribe(self, listener: Callable[[Transition], Any]) -> Callable[[], None]:
        """Call ``listener`` with every kill-switch transition; returns an unsubscribe."""
        return self.killswitch.subscribe(listener)
