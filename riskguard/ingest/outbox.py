"""The outbox: the one place a transition leaves riskguard, always in the same order.

1. the control topic (``acks=all``, awaited: gates learn the state first), each
   transition to HALTED or REDUCE_ONLY followed by its cancel request (the scope's
   working orders, :mod:`riskguard.ingest.cancels`) in the same awaited publish;
   in group mode the parts are tagged with this member's name (``source``), and the
   member also asks for its own orders in halts other members decided
   (:meth:`Outbox.ask_cancels`);
2. the local journal (fsynced, in a thread; survives broker data loss);
3. metrics;
4. the audit log (queued);
5. the notifiers (queued per sink);
6. the log.

Automatic transitions and alerts from the engine, operators' manual actions,
system alerts (broker lost or back, limits file rejected) and states re-asserted
at start all go through here; nothing else writes to those outlets for a
transition. Alerts are not states: the control topic and the journal skip them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec

from riskguard import log
from riskguard.audit import AuditLog
from riskguard.control.publisher import ControlPublisher, Message
from riskguard.control.records import cancel_key, encode_record
from riskguard.ingest.ports import CancelRequests
from riskguard.journal import HaltJournal
from riskguard.metrics import Metrics
from riskguard.notify.dispatch import Notifier
from riskguard.vocabulary import Transition


class OutboxNotOpenError(RuntimeError):
    """A state change was sent before the control topic's producer was started."""


class Outbox:
    """Sends transitions out through every outlet, in a fixed order.

    Implements :class:`~riskguard.ingest.ports.TransitionSink` and
    :class:`~riskguard.ingest.ports.Reassertion`. State changes need the control
    topic: :meth:`open` it once the producer has started. With ``cancels``, every
    transition to HALTED or REDUCE_ONLY is followed on the control topic by its cancel
    request, and a resume stops the tracking of the scope's request. A transition
    that names no instance (a system alert) is stamped with ``instance``. ``source``
    (group mode: this member's name; None elsewhere) tags every cancel request's parts.
    """

    def __init__(
        self,
        journal: HaltJournal,
        metrics: Metrics,
        audit: AuditLog,
        notifier: Notifier,
        cancels: CancelRequests | None = None,
        instance: str | None = None,
    ) -> None:
        self.journal = journal
        self.instance = instance
        """Stamped on transitions that name no instance yet (system alerts)."""
        self.metrics = metrics
        self.audit = audit
        self.notifier = notifier
        self.cancels = cancels
        self.source: str | None = None
        """Group mode: this member's name, the ``source`` of its cancel requests."""
        self._control: ControlPublisher | None = None
        self._log = log.get("sidecar")
        #: sends still running, their callers perhaps cancelled (see :meth:`send`)
        self._sending: set[asyncio.Task[None]] = set()

    def open(self, control: ControlPublisher) -> None:
        """Start sending state changes to the control topic through ``control``."""
        self._control = control

    def _publisher(self) -> ControlPublisher:
        if self._control is None:
            raise OutboxNotOpenError("the control topic is not open yet: riskguard is starting")
        return self._control

    async def send(self, transitions: Sequence[Transition]) -> None:
        """Send transitions and alerts out: control topic, journal, metrics, audit,
        notifiers, log.

        A control publish that fails stays pending and is retried
        (:meth:`retry_pending`); a journal write that fails is logged (the control
        topic still has the state). Raises :class:`OutboxNotOpenError` for a state change
        sent before :meth:`open`, before anything went out.

        A send, once begun, reaches every outlet even if its caller is cancelled (a stop
        cancels the clock task, perhaps while it waits for the broker's ack of a halt it
        decided): the transition was decided, so it is journalled, audited and notified.
        :meth:`retry_pending` waits for such sends first.
        """
        items = [
            tr
            if tr.instance is not None or self.instance is None
            else msgspec.structs.replace(tr, instance=self.instance)
            for tr in transitions
        ]
        await self._finish(self._send(items))

    async def _finish(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to its end even if the caller is cancelled (see :meth:`send`)."""
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        await asyncio.shield(task)

    async def ask_cancels(self, transitions: Sequence[Transition]) -> None:
        """Group mode: this member's cancel request of each transition to HALTED or
        REDUCE_ONLY another member decided (adopted here): the working orders of this
        member's partitions in the scope, its parts tagged with :attr:`source`, now
        tracked for the confirmation.

        Published as a halt's own request is (``acks=all``, awaited, gate data held
        back), without the state record (the deciding member wrote it); one the broker
        did not take is retried by :meth:`retry_pending`. A request that cannot be built
        is logged and skipped. Like :meth:`send`, a publish once begun goes on if the
        caller is cancelled. Raises :class:`OutboxNotOpenError` before :meth:`open`.
        """
        items = [tr for tr in transitions if tr.to != "ACTIVE" and not tr.is_alert]
        if items:
            publisher = self._publisher()
            requests = [(tr, self._cancel_request(tr)) for tr in items]
            await self._finish(self._ask(publisher, requests))

    async def _ask(
        self, publisher: ControlPublisher, requests: list[tuple[Transition, list[Message]]]
    ) -> None:
        await publisher.publish_requests(requests)
        for tr, messages in requests:
            self._log.info(
                "cancel request for another member's halt",
                scope=tr.scope,
                id=tr.id,
                by_instance=tr.instance,
                parts=len(messages),
            )

    async def _send(self, items: list[Transition]) -> None:
        if any(not tr.is_alert for tr in items):
            follow = self._cancel_request if self.cancels is not None else None
            await self._publisher().publish(items, follow)
            try:
                await asyncio.to_thread(self.journal.append, items)
            except OSError as exc:  # the control topic still has it; say so loudly
                self._log.error("journal write failed", path=str(self.journal.path), error=str(exc))
        for tr in items:
            self.metrics.transition(tr)
            self.audit.record("transition", tr)
            self.notifier.submit(tr)
            self._log.warning(
                "transition",
                scope=tr.scope,
                from_state=tr.from_,
                to=tr.to,
                kind=tr.kind,
                rule=tr.rule,
                value=tr.value,
                limit=tr.limit,
                operator=tr.operator,
                reason=tr.reason,
                id=tr.id,
            )

    def _cancel_request(self, tr: Transition) -> list[Message]:
        """The messages following ``tr``'s state record: its cancel request, if it asks one.

        Never raises: a request that cannot be built is logged, and the state record
        still goes out (a gate refuses the scope's orders either way).
        """
        assert self.cancels is not None
        if tr.to == "ACTIVE":
            self.cancels.lifted(tr)
            return []
        try:
            records = self.cancels.request(tr, self.source)
        except Exception:  # the halt itself must go out whatever happened here
            self._log.exception("cancel request could not be built", scope=tr.scope, id=tr.id)
            return []
        return [(cancel_key(r.scope, r.part, r.named_by), encode_record(r)) for r in records]

    async def reassert(
        self, restored: Sequence[Transition], republish: Sequence[Transition]
    ) -> None:
        """States put back at start: re-publish those the control topic lost, count all.

        They were journalled, audited and notified when first decided, so only the
        control topic (for ``republish``) and the state metrics hear of them again.
        Raises :class:`OutboxNotOpenError` when there is something to re-publish before
        :meth:`open`.
        """
        if republish:
            await self._publisher().publish(list(republish))
        for tr in restored:
            self.metrics.transition(tr)

    async def retry_pending(self) -> None:
        """Wait for the sends in flight (:meth:`send`), then re-send the control
        publishes that failed (newest state per scope)."""
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._control is not None:
            await self._control.retry_pending()

    def pending(self) -> list[str]:
        """Scopes whose latest state the control topic has not acknowledged yet."""
        return sorted(self._control.pending) if self._control is not None else []
