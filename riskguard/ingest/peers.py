"""The other riskguard instances of an active-active pair, as the control topic shows them.

Two (or more) instances consume the same input and publish to the same control topic,
each under its own ``runtime.instance`` (``docs/deployment.md``). Each decides on its
own; :class:`Peers` keeps them one kill switch. From the end of what recovery read
(the same consumer, so no record falls in between) it follows the control topic and:

- **adopts the other instances' state records** (:meth:`riskguard.killswitch.KillSwitch.adopt`):
  an operator's halt, reduce-only or resume through another instance's API, and the
  automatic decisions another instance made first. An adopted transition is latched,
  journalled, counted in the state gauge, audited (kind ``adopted``, naming the
  instance) and its halt's orders are tracked for the cancel confirmation; it is never
  published again, paged or sent to the notifiers (its instance did that), and no
  cancel request is built for it (its instance published one). Its own records,
  read back, change nothing here.
- **in group mode, asks for the cancel of its own orders** in the halts and
  reduce-onlys it adopts (:attr:`Peers.asks`): each member holds the orders of its
  own partitions only, so the deciding member's request names only those. Once the
  records read are folded, each such transition still standing gets this member's
  cancel request (its parts tagged with its name), tracked for the confirmation as
  above. So does a halt another member decided on its own while this one held the
  same state under another id (two members halting a scope at once): gates act on
  whichever record is latest on the topic.
- **re-publishes ours** when another instance's record would show the gates less than
  this instance holds (an automatic state below ours, or a resume of a halt decided on
  newer evidence), or a halt an operator's resume here already lifted (decided there
  before that resume was read): the latest record of a scope on the compacted topic is
  what gates act on, so it must be the strictest standing state, or the resume.
- **mirrors four-eyes steps** (:class:`~riskguard.control.records.ApprovalRecord`) into
  the API's :class:`~riskguard.control.approvals.FourEyes`, and publishes this
  instance's steps (:meth:`Peers.relay`), so a request made through one API can be
  approved through another.
- **keeps every instance's latest heartbeat**, for ``/v1/status`` (``peers``: ready,
  live, the digest of the limits each judges with; an instance silent for over
  :data:`PEER_GONE_MS` only counted in ``peers_gone``) and to notice another process
  heartbeating under this instance's name (``instance_conflict``: adoption between
  the two would silently stop).

A record that cannot be read, or a scope that cannot be parsed, is logged and skipped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from riskguard import log
from riskguard.control.approvals import FourEyes
from riskguard.control.publisher import ControlPublisher
from riskguard.control.records import (
    ApprovalRecord,
    HeartbeatRecord,
    StateRecord,
    approval_key,
    encode_record,
)
from riskguard.control.view import ControlView, Instant
from riskguard.ingest.connect import started
from riskguard.ingest.ports import AuditTrail, CancelAsks, CancelRequests, Reassertion
from riskguard.journal import HaltJournal
from riskguard.killswitch import KillSwitch
from riskguard.metrics import Metrics
from riskguard.settings import KafkaSettings
from riskguard.vocabulary import ScopeError, Transition

PEER_TIMEOUT_MS: Final = 2000
"""A peer counts as live in ``/v1/status`` while its latest heartbeat is younger than this
and says ready (the gates' default ``heartbeat_timeout_ms``)."""
PEER_GONE_MS: Final = 600_000
"""A peer whose latest heartbeat is older than this (10 min) is no longer listed in
``/v1/status`` ``peers``, only counted in ``peers_gone``: a group member removed by
scale-in, an instance stopped for good or renamed. Until then it is listed, not live."""
GONE_NAMED: Final = 5
"""``peers_gone`` names this many of them, the most recently heard first."""
POLL_MS: Final = 100
"""How long one fetch of the control topic waits for records."""
RETRY_S: Final = 1.0
"""How long to wait after a failed fetch or publish before trying again."""
TAKEN_KEPT: Final = 1024
"""Four-eyes steps remembered as taken by the broker (for :meth:`Peers.taken`)."""


async def control_reader(kafka: KafkaSettings, client_id: str) -> AIOKafkaConsumer:
    """A started consumer for the control topic, without a group: it reads the topic back
    at start (:func:`~riskguard.ingest.recovery.recover`), then follows it (:class:`Peers`).
    Fetches wait at most 50 ms, so another instance's halt is adopted within ms."""
    consumer = AIOKafkaConsumer(
        **kafka.client_options(consumer=True),
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        client_id=client_id,
    )
    return await started(consumer)


@dataclass(eq=False)
class Peers:
    """Follows the control topic for the other instances' records (see the module).

    Owned by the event loop of the sidecar: adoption happens between two batches of the
    consume loop, as an operator's action does.
    """

    instance: str
    killswitch: KillSwitch
    journal: HaltJournal
    audit: AuditTrail
    metrics: Metrics
    cancels: CancelRequests
    outbox: Reassertion | None = None
    """Where this instance's states go out again when a peer showed less."""
    sent: Collection[int] = ()
    """The ``ts`` of this instance's latest heartbeats (others under its name conflict)."""
    limits_digest: Callable[[], str] = str
    """The digest of the limits this instance judges with (compared with the peers')."""
    four_eyes: FourEyes | None = None
    asks: CancelAsks | None = None
    """Group mode: where this member asks for the cancel of its own working orders in the
    halts other members decided (the outbox). None (single mode, active-active): an
    adopted halt's orders are only tracked, the deciding instance named them all."""
    view: ControlView = field(default_factory=ControlView)
    adopted: int = 0
    """Transitions of other instances adopted since start."""
    reasserted: int = 0
    """Times this instance re-published a state a peer's record would have lowered."""
    conflict: str | None = None
    """Why another process seems to heartbeat under this instance's name (None: none)."""
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False, repr=False)
    _publisher: ControlPublisher | None = field(default=None, init=False, repr=False)
    _outgoing: asyncio.Queue[ApprovalRecord] | None = field(default=None, init=False, repr=False)
    _taken: OrderedDict[tuple[str, str], None] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    """(request id, event) of this instance's latest steps the broker took."""
    _errors: log.RepeatLimiter = field(default_factory=log.RepeatLimiter, init=False, repr=False)

    def __post_init__(self) -> None:
        self._log = log.get("peers")

    # lifecycle -----------------------------------------------------------------------
    def join(
        self,
        outbox: Reassertion,
        sent: Collection[int],
        limits_digest: Callable[[], str],
        four_eyes: FourEyes | None,
    ) -> None:
        """Wire the parts this instance's peers act through: ``outbox`` re-publishes our
        states, ``sent`` holds our heartbeats' ``ts``, ``limits_digest`` gives our limits'
        digest, and ``four_eyes`` (the API's requests) shares its steps with them."""
        self.outbox, self.sent, self.limits_digest = outbox, sent, limits_digest
        self.four_eyes = four_eyes
        if four_eyes is not None:
            four_eyes.share(self.instance, self.relay, self.taken)

    def open(
        self, consumer: AIOKafkaConsumer, view: ControlView, publisher: ControlPublisher
    ) -> None:
        """Follow the topic with ``consumer`` from where it stands (the end of ``view``,
        what recovery read) and publish four-eyes steps through ``publisher``.

        Pending four-eyes requests in ``view`` (any instance's, this one's previous run
        included) are put back into the API's requests.
        """
        self._consumer = consumer
        self._publisher = publisher
        self.view = view
        if self.four_eyes is not None:
            for step in view.approvals.values():
                if step.event == "requested":
                    self.four_eyes.mirror(step)

    async def run(self) -> None:
        """Forever: read the control topic and act on the other instances' records."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("peers: call open() with the recovery consumer first")
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
            except KafkaError as exc:
                self._trouble("control topic read failed", exc)
                await asyncio.sleep(RETRY_S)
                continue
            for messages in batch.values():
                await self.receive([m.value for m in messages])

    def progress(self) -> int:
        """The latest ``last_event_ns`` (ns) any instance's heartbeat reported (this one's
        included), -1 before any: events up to then were judged by some instance."""
        return max((p.record.last_event_ns for p in self.view.heartbeats.values()), default=-1)

    # reading -------------------------------------------------------------------------
    async def receive(self, values: Sequence[bytes | None], at: Instant | None = None) -> None:
        """Fold control messages read at ``at`` (default: now) and act on them, in order.

        Never raises on bad values; a journal that cannot be written is logged (the
        control topic has the state).
        """
        adopted: list[Transition] = []
        keep: dict[str, Transition] = {}
        ask: dict[str, Transition] = {}  # group mode: scope -> the halt to ask cancels for
        for record in self.view.fold(values, at):
            if isinstance(record, StateRecord):
                tr = record.transition
                if tr.instance == self.instance:
                    continue  # our own, read back
                done = self._adopt(tr)
                if done == "adopted":
                    adopted.append(tr)
                    keep.pop(tr.scope, None)
                    ask[tr.scope] = tr
                elif done == "same" and self._held_apart(tr):
                    ask[tr.scope] = tr
                elif done == "kept":
                    mine = self.killswitch.latest(tr.scope)
                    if mine is not None:
                        keep[tr.scope] = mine
            elif isinstance(record, ApprovalRecord):
                if record.instance != self.instance and self.four_eyes is not None:
                    self.four_eyes.mirror(record)
            elif isinstance(record, HeartbeatRecord):
                self._check_name(record)
        self.metrics.peers_live.set(sum(p["live"] for p in self.status()["peers"]))
        if self.asks is not None:  # before the journal: cancels are what is urgent
            # a halt lifted or replaced later in the same records needs no request
            due = [t for t in ask.values() if self.killswitch.state(t.scope) == t.to]
            try:
                await self.asks.ask_cancels([t for t in due if t.to != "ACTIVE"])
            except Exception:  # the adoption stands whatever the request does
                self._log.exception("could not ask for the cancels of adopted halts")
        if adopted:
            try:
                await asyncio.to_thread(self.journal.append, adopted)
            except OSError as exc:
                self._log.error("journal write failed", path=str(self.journal.path), error=str(exc))
        if keep and self.outbox is not None:
            self.reasserted += len(keep)
            self._log.warning(
                "another instance published less than this one holds; re-published ours",
                scopes=sorted(keep),
            )
            await self.outbox.reassert((), list(keep.values()))

    def _adopt(self, tr: Transition) -> str:
        """Adopt one transition of another instance; returns what happened."""
        try:
            done = self.killswitch.adopt(tr)
        except ScopeError as exc:
            self._trouble("unreadable scope in another instance's record", exc)
            return "unknown"
        self.metrics.peer_transitions.labels(done).inc()
        if done != "adopted":
            return done
        self.adopted += 1
        self.metrics.standing(tr)
        self.audit.record("adopted", {"by_instance": tr.instance, **msgspec.to_builtins(tr)})
        if tr.to == "ACTIVE":
            self.cancels.lifted(tr)
        elif self.asks is None:  # group mode: asked for and tracked in receive()
            try:
                self.cancels.track(tr)
            except Exception:  # the adoption stands whatever the tracker does
                self._log.exception("could not track the orders of an adopted halt", id=tr.id)
        self._log.info(
            "adopted another instance's transition",
            scope=tr.scope,
            to=tr.to,
            kind=tr.kind,
            id=tr.id,
            by_instance=tr.instance,
            operator=tr.operator,
        )
        return done

    def _held_apart(self, tr: Transition) -> bool:
        """Group mode: ``tr`` (another member's, its scope's state already ours) halts or
        reduces the scope under another id than the transition this member stands on."""
        if self.asks is None or tr.to == "ACTIVE":
            return False
        mine = self.killswitch.latest(tr.scope)
        return mine is not None and mine.id != tr.id

    def _check_name(self, beat: HeartbeatRecord) -> None:
        """A heartbeat under this instance's name that it did not write: a conflict."""
        if beat.instance != self.instance or beat.ts in self.sent:
            return
        self.conflict = (
            f"another process heartbeats as {self.instance!r} (a heartbeat at ts {beat.ts} "
            "this one did not write): give each riskguard its own runtime.instance"
        )
        self._trouble("instance name conflict", RuntimeError(self.conflict))

    def _trouble(self, what: str, exc: BaseException) -> None:
        left_out = self._errors.admit(what)
        if left_out is not None:
            self._log.error(what, error=repr(exc), **log.repeats(left_out))

    # four-eyes steps -----------------------------------------------------------------
    def relay(self, step: ApprovalRecord) -> None:
        """Queue one of this instance's four-eyes steps for the control topic (never
        blocks; :meth:`publish_steps` sends them in order)."""
        if self._outgoing is None:
            self._outgoing = asyncio.Queue()
        self._outgoing.put_nowait(step)

    async def publish_steps(self) -> None:
        """Forever: publish the queued four-eyes steps in order, each until the broker
        takes it."""
        if self._outgoing is None:
            self._outgoing = asyncio.Queue()
        while True:
            step = await self._outgoing.get()
            message = (approval_key(step.scope), encode_record(step))
            while self._publisher is None or not await self._publisher.publish_records([message]):
                await asyncio.sleep(RETRY_S)
            self._taken[(step.request_id, step.event)] = None
            while len(self._taken) > TAKEN_KEPT:
                self._taken.popitem(last=False)

    async def taken(self, request_id: str, event: str, timeout_s: float) -> bool:
        """Whether the broker took this instance's step ``event`` of ``request_id``
        within ``timeout_s`` (the other instances can read it from then on)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (request_id, event) not in self._taken:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # reports -------------------------------------------------------------------------
    def status(self, at: Instant | None = None) -> dict[str, Any]:
        """For ``/v1/status``: each other instance's latest heartbeat heard within
        :data:`PEER_GONE_MS` (``peers``), how many were silent for longer
        (``peers_gone``: ``count``, ``after_ms``, ``latest`` names), and how this one
        follows them."""
        now = at or Instant.now()
        digest = self.limits_digest()
        peers = []
        gone: list[tuple[int, str]] = []
        for name, pulse in sorted(self.view.heartbeats.items()):
            if name == self.instance:
                continue
            beat = pulse.record
            age_ns = pulse.age_ns(now)
            if age_ns > PEER_GONE_MS * 1_000_000:
                gone.append((age_ns, name))
                continue
            peers.append(
                {
                    "instance": name,
                    "ready": beat.ready,
                    "live": beat.ready and age_ns < PEER_TIMEOUT_MS * 1_000_000,
                    "age_ms": round(age_ns / 1e6, 1),
                    "limits_sha256": beat.limits_sha256,
                    "limits_agree": beat.limits_sha256 in (None, digest),
                    "last_event_ns": beat.last_event_ns if beat.last_event_ns > 0 else None,
                    "events_applied": beat.events_applied,
                }
            )
        gone.sort()
        return {
            "peers": peers,
            "peers_gone": {
                "count": len(gone),
                "after_ms": PEER_GONE_MS,
                "latest": [name for _, name in gone[:GONE_NAMED]],
            },
            "adopted": self.adopted,
            "reasserted": self.reasserted,
            "instance_conflict": self.conflict,
        }
