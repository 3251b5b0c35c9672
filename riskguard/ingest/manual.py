"""Operators' manual actions: halt, reduce_only, resume.

A manual action takes exactly the path of an automatic decision: the kill switch
decides the transition, the outbox sends it out. The action itself, changed or
not, is audited first (who asked what, and why).
"""

from __future__ import annotations

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
        self, action: str, scope: str, operator: str, reason: str
    ) -> Transition | None:
        """``halt``, ``reduce_only`` or ``resume`` ``scope``; None when nothing changed.

        Raises :class:`ValueError` for an empty operator or reason or an unknown
        action, :class:`~riskguard.vocabulary.ScopeError` (a ``ValueError``) for a
        malformed scope; nothing changes then. Raises
        :class:`~riskguard.ingest.outbox.OutboxNotOpenError` for a change made before the
        control topic is open (the state is latched and audited, but not sent).
        """
        ks = self.killswitch
        if action == "resume":
            tr = ks.resume(scope, operator, reason)
        else:
            tr = ks.halt(scope, operator, reason, action=action)
        self.audit.record(
            "manual",
            {
                "action": action,
                "scope": scope,
                "operator": operator,
                "reason": reason,
                "changed": tr is not None,
            },
        )
        if tr is not None:
            await self.outbox.send([tr])
        return tr

    def state(self, scope: str) -> State:
        """The latched state of ``scope`` (``"ACTIVE"`` for one never seen)."""
        return self.killswitch.state(scope)
