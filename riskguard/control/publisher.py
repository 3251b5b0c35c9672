"""Publish transitions, cancel requests, heartbeats and gate data to the control topic.

Every publish uses the producer's ``acks=all`` and waits at most ``ack_timeout_s``
(``kafka.request_timeout_ms``, 1.5 s by default) for the broker's acknowledgement,
never aiokafka's 40 s, and never forever: an idempotent producer (Apache Kafka)
never expires a batch, it retries it until the broker answers, so a frozen broker
would hold the send's future open for good. A send not acknowledged in time counts
as failed here; aiokafka may still deliver it later, which a retry repeats
harmlessly (the newest state per scope is what counts). A transition
that could not be published stays pending, with the messages that follow it (its
cancel request), and is re-sent every second until the broker takes it; the
newest state per scope wins, which is what a compacted topic keeps anyway.

In one publish the state records of all its transitions are sent and acknowledged
first; only then is each transition's following messages (its cancel request) built
and sent, and awaited in turn: building and sending a large request never delays a
halt's state record.

A group-mode member also publishes cancel requests alone
(:meth:`ControlPublisher.publish_requests`): its own orders in a halt whose state record
another member wrote. They are sent and retried the same way, the newest per scope, and
dropped once this instance publishes a state of that scope itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from riskguard import log
from riskguard.control.records import HeartbeatRecord, heartbeat_message, state_message
from riskguard.ingest.producers import Producer
from riskguard.metrics import Metrics
from riskguard.vocabulary import Transition

Message = tuple[bytes, bytes]
"""A control message: (key, value)."""
Follow = Callable[[Transition], Sequence[Message]]
"""The messages that follow a transition's state record (its cancel request)."""
CHUNK: Final = 256
"""Gate data is sent in chunks of this many messages, each awaited before the next:
never more than this queued ahead of a halt's state record."""


class ControlPublisher:
    """Owns the control topic's producer side."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        metrics: Metrics,
        data_producer: Producer | None = None,
        ack_timeout_s: float = 1.5,
    ) -> None:
        """``data_producer`` (default: ``producer``) sends the gate data
        (:meth:`publish_records`): on a producer of its own, a batch of it in flight
        never holds a transition's state record back. ``ack_timeout_s``: the longest
        wait for the broker's acknowledgement of a send (seconds)."""
        self.producer = producer
        self.ack_timeout_s = ack_timeout_s
        self.data_producer = data_producer or producer
        self.topic = topic
        self.metrics = metrics
        self.pending: dict[str, Transition] = {}
        #: per pending transition id: the messages that follow it (already built)
        self.pending_follow: dict[str, Sequence[Message]] = {}
        #: per scope: a cancel request published alone (:meth:`publish_requests`) not yet
        #: acknowledged, with the transition (another instance's) it follows
        self.pending_requests: dict[str, tuple[Transition, Sequence[Message]]] = {}
        #: per scope: the id of the latest transition published, or followed by a request
        #: sent alone: an older request is never re-sent over a newer one's keys
        self._latest: dict[str, str] = {}
        self._log = log.get("control")
        self.last_ok_mono = time.monotonic()
        self.rewinds = 0
        """Times a heartbeat's offset was lower than the previous heartbeat's (the topic
        was re-created: its records are gone)."""
        self._beat_offsets: dict[int, int] = {}  # per partition: the latest heartbeat's
        self._in_flight = 0
        self._quiet = asyncio.Event()  # set while no transition is being published
        self._quiet.set()

    async def publish(self, transitions: list[Transition], follow: Follow | None = None) -> bool:
        """Publish state changes (alerts are skipped). True when all were acknowledged.

        ``follow(tr)`` gives the messages to publish after ``tr``'s state record (its
        cancel request); it is called once per state change, after the broker
        acknowledged every state record of the publish. A failed publish keeps each
        transition and its messages pending (:meth:`retry_pending`).
        """
        items = [tr for tr in transitions if not tr.is_alert]
        if not items:
            return True
        for tr in items:  # our newer state of the scope supersedes a request sent alone
            self.pending_requests.pop(tr.scope, None)
            self._latest[tr.scope] = tr.id
        built: dict[str, Sequence[Message]] = {}
        self._in_flight += 1
        self._quiet.clear()  # gate data waits: nothing of it between a state and its request
        try:
            states = []
            for tr in items:
                key, value = state_message(tr)
                states.append(await self.producer.send(self.topic, value, key=key))
            await self._acked(states)  # on the topic: gates refuse from now on
            acked = time.time_ns()
            futures = []
            for tr in items:
                built[tr.id] = follow(tr) if follow is not None else ()
                for key, value in built[tr.id]:
                    futures.append(await self.producer.send(self.topic, value, key=key))
            await self._acked(futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.metrics.control_failures.inc()
            for tr in items:
                self.pending[tr.scope] = tr
                if follow is not None:  # not yet built: build now, so nothing is lost
                    self.pending_follow[tr.id] = built[tr.id] if tr.id in built else follow(tr)
            self.pending_follow = {
                t.id: self.pending_follow[t.id]
                for t in self.pending.values()
                if t.id in self.pending_follow
            }
            self._log.error(
                "control publish failed; will retry",
                error=repr(exc),
                scopes=[t.scope for t in items],
            )
            return False
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()
        self.last_ok_mono = time.monotonic()
        for tr in items:
            if self.pending.get(tr.scope) is tr:
                del self.pending[tr.scope]
                self.pending_follow.pop(tr.id, None)
        for tr in items:
            self.metrics.decision_latency.observe(max(0, acked - tr.ts) / 1e9)
        return True

    async def _acked(self, futures: Sequence[asyncio.Future[object]]) -> None:
        """Wait for the broker to acknowledge every send, at most ``ack_timeout_s``.

        Raises the first send's :class:`~aiokafka.errors.KafkaError`, or
        :class:`TimeoutError` when some are still unacknowledged (those are not
        cancelled: aiokafka may deliver them yet).
        """
        if not futures:
            return
        done, waiting = await asyncio.wait(futures, timeout=self.ack_timeout_s)
        errors = [exc for future in done if (exc := future.exception()) is not None]
        if errors:
            raise errors[0]
        if waiting:
            for future in waiting:  # its outcome, when it comes, is the retry's business
                future.add_done_callback(_retrieved)
            raise TimeoutError(
                f"{len(waiting)} of {len(futures)} sends not acknowledged "
                f"within {self.ack_timeout_s} s"
            )

    async def retry_pending(self) -> None:
        """Re-send what failed earlier (newest per scope), with the messages following each,
        and the cancel requests sent alone that failed."""
        if self.pending:
            items = list(self.pending.values())
            stored = dict(self.pending_follow)
            if await self.publish(items, lambda tr: stored.get(tr.id, ())):
                self._log.info("control publish recovered", scopes=[t.scope for t in items])
        if self.pending_requests:
            requests = list(self.pending_requests.values())
            if await self._send_requests(requests):
                self._log.info(
                    "cancel requests publish recovered", scopes=[t.scope for t, _ in requests]
                )

    async def publish_requests(
        self, requests: Sequence[tuple[Transition, Sequence[Message]]]
    ) -> bool:
        """Publish messages that follow transitions whose state records are already on the
        topic (another instance's): a group-mode member's cancel request of its own orders.

        Each ``(transition, messages)`` is sent as a transition's following messages are
        (``acks=all``, awaited at most ``ack_timeout_s``, gate data held back meanwhile).
        True when the broker acknowledged all; False when not (logged, counted): they stay
        pending, the newest per scope, and :meth:`retry_pending` re-sends them.
        """
        for tr, _ in requests:
            self._latest[tr.scope] = tr.id
        return await self._send_requests(requests)

    async def _send_requests(
        self, requests: Sequence[tuple[Transition, Sequence[Message]]]
    ) -> bool:
        requests = [(tr, m) for tr, m in requests if self._latest.get(tr.scope) == tr.id]
        if not requests:
            return True
        self._in_flight += 1
        self._quiet.clear()
        try:
            futures = []
            for _tr, messages in requests:
                for key, value in messages:
                    futures.append(await self.producer.send(self.topic, value, key=key))
            await self._acked(futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.metrics.control_failures.inc()
            for tr, messages in requests:
                if self._latest.get(tr.scope) == tr.id:  # else a newer one was sent since
                    self.pending_requests[tr.scope] = (tr, messages)
            self._log.error(
                "cancel request publish failed; will retry",
                error=repr(exc),
                scopes=[tr.scope for tr, _ in requests],
            )
            return False
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()
        self.last_ok_mono = time.monotonic()
        for tr, _ in requests:
            held = self.pending_requests.get(tr.scope)
            if held is not None and held[0] is tr:
                del self.pending_requests[tr.scope]
        return True

    async def publish_records(self, messages: Sequence[Message]) -> bool:
        """Publish gate data (rules, marks, positions) in chunks of :data:`CHUNK`, each
        awaited, and none while a transition is being published (transitions and their
        cancel requests go first). True when the broker took every message; False
        (logged at warning, counted) at the first chunk it did not take: the caller
        sends it again later."""
        try:
            for start in range(0, len(messages), CHUNK):
                await self._quiet.wait()
                futures = [
                    await self.data_producer.send(self.topic, value, key=key)
                    for key, value in messages[start : start + CHUNK]
                ]
                await self._acked(futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.metrics.control_failures.inc()
            self._log.warning("gate data publish failed; will retry", error=repr(exc))
            return False
        if messages:
            self.last_ok_mono = time.monotonic()
        return True

    async def heartbeat(self, record: HeartbeatRecord) -> bool:
        """Publish one heartbeat; False (logged at debug) if the broker did not take it.

        Its offset, when acknowledged (however late), is compared with the previous
        heartbeat's (one producer: acknowledged in order): lower, or in a partition no
        heartbeat went to before, the control topic was re-created (a broker restarted
        without its data, faster than the broker watch's budget notices, and perhaps
        re-created the topic with its default number of partitions), and :attr:`rewinds`
        counts it."""
        key, value = heartbeat_message(record)
        try:
            sent = await self.producer.send(self.topic, value, key=key)
            sent.add_done_callback(self._beat_acked)
            await self._acked([sent])
        except (KafkaError, TimeoutError, OSError) as exc:
            self._log.debug("heartbeat publish failed", error=repr(exc))
            return False
        self.last_ok_mono = time.monotonic()
        self.metrics.heartbeats.inc()
        return True

    def _beat_acked(self, future: asyncio.Future[Any]) -> None:
        """A heartbeat acknowledged (awaited or given up on): an offset below the
        previous heartbeat's means the topic was re-created."""
        if future.cancelled() or future.exception() is not None:
            return
        meta = future.result()
        if not isinstance(meta, RecordMetadata):
            return
        previous = self._beat_offsets.get(meta.partition, -1)
        # one key always lands in one partition of a topic: another partition means the
        # topic now has another number of them (a broker back empty re-created it with
        # its own default, Tansu's or a cluster's num.partitions), its offsets new
        moved = meta.partition not in self._beat_offsets and bool(self._beat_offsets)
        before = dict(self._beat_offsets)
        self._beat_offsets[meta.partition] = meta.offset
        if meta.offset < previous or moved:
            self.rewinds += 1
            self.metrics.control_rewinds.inc()
            self._log.error(
                "control topic re-created: its offsets went back"
                if not moved
                else "control topic re-created: the heartbeat moved to another partition",
                partition=meta.partition,
                offset=meta.offset,
                previous_heartbeats={str(p): o for p, o in before.items()},
            )


def _retrieved(future: asyncio.Future[object]) -> None:
    """Take the outcome of a send no one waits for any more (a failure after its ack
    timeout), so asyncio does not log it as an exception never retrieved."""
    if not future.cancelled():
        future.exception()
