"""Getting back to where we were: standing states, before any event is consumed.

Order on start (the lifecycle in :mod:`riskguard.ingest.runtime`):

1. the newest valid snapshot (engine state and the input offsets it reflects),
   loaded by :class:`~riskguard.ingest.checkpoint.Checkpoints`;
2. :func:`recover`: standing states, merged from the local journal and the control
   topic (newest decision per scope wins) and re-asserted; states the topic lost
   are re-published through the outbox;
3. the progress of the instances before this one (the newest ``last_event_ns`` of any
   instance's last heartbeat: this instance's previous run, or another instance of an
   active-active pair, whose decisions are on the topic) marks breaches up to then as
   already judged, so replay decides nothing twice.

While running, :func:`republish` puts the standing states and the gates' data back on
the control topic each time the broker comes back after an outage: it may have come
back empty (its data lost), and gates reading an empty topic would see no halt.

The consumer that read the topic can be handed in and is then left open, positioned at
the end of what was read: :class:`~riskguard.ingest.peers.Peers` follows the topic from
there, so no record falls between recovery and following.

Written against narrow interfaces (:mod:`riskguard.ingest.ports`), not the sidecar.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from riskguard import log
from riskguard.control.reader import ControlView, read_to_end
from riskguard.ingest.connect import started
from riskguard.ingest.ports import Reassertion, Recoverable
from riskguard.journal import HaltJournal
from riskguard.settings import KafkaSettings
from riskguard.vocabulary import Transition


@dataclass
class Recovered:
    """What :func:`recover` put back: scopes re-asserted, and those re-published."""

    restored: list[str] = field(default_factory=list)
    """Scopes whose state was latched again, in the order they were restored."""
    republished: list[str] = field(default_factory=list)
    """Scopes the control topic had lost (or had older), sorted."""
    view: ControlView = field(default_factory=ControlView)
    """The control topic as read to its end."""


async def recover(
    kafka: KafkaSettings,
    client_id: str,
    journal: HaltJournal,
    engine: Recoverable,
    outbox: Reassertion,
    reader: AIOKafkaConsumer | None = None,
) -> Recovered:
    """Re-assert standing states from the journal and the control topic.

    Reads the control topic to its end with ``reader`` (started, and left open at the
    end of the topic) or else a consumer of its own named ``client_id`` (closed after),
    merges it with ``journal`` (newest decision per scope wins), latches every merged
    state in ``engine``, hands them to ``outbox`` (re-publishing those the topic lacks),
    compacts the journal, and marks the progress of earlier instances as judged.

    Raises :class:`TimeoutError` or aiokafka's ``KafkaError`` when the control topic
    cannot be read to its end, and :class:`OSError` when the journal cannot be
    compacted.
    """
    sidecar_log = log.get("sidecar")
    latest = journal.load()
    if journal.unreadable:
        sidecar_log.warning(
            "journal lines unreadable, skipped",
            count=journal.unreadable,
            path=str(journal.path),
        )
    if reader is not None:
        view = await read_to_end(reader, kafka.control_topic, ControlView())
    else:
        own = AIOKafkaConsumer(
            **kafka.client_options(consumer=True),
            enable_auto_commit=False,
            client_id=client_id,
        )
        await started(own)
        try:
            view = await read_to_end(own, kafka.control_topic, ControlView())
        finally:
            await own.stop()
    merged = {scope: rec.transition for scope, rec in view.states.items()}
    stale: list[Transition] = []
    for scope, tr in latest.items():
        published = merged.get(scope)
        if published is None or tr.decided_ns > published.decided_ns:
            merged[scope] = tr
            stale.append(tr)
    restored = [tr for tr in merged.values() if engine.killswitch.restore(tr)]
    await outbox.reassert(restored, stale)
    done = Recovered(restored=[tr.scope for tr in restored], view=view)
    if stale:
        done.republished = sorted(t.scope for t in stale)
        sidecar_log.warning(
            "re-published states the control topic had lost", scopes=done.republished
        )
    await asyncio.to_thread(journal.compact, merged)
    progress = max((p.record.last_event_ns for p in view.heartbeats.values()), default=-1)
    if progress > 0:
        engine.judge_until(progress)
    return done


class Resendable(Protocol):
    """The gates' data feed (:class:`~riskguard.ingest.pretrade.PreTradeFeed`)."""

    def resend(self) -> None:
        """Publish everything again at the next round: rules, marks and positions."""


async def republish(
    standing: Iterable[Transition],
    outbox: Reassertion,
    feed: Resendable,
    ensure: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The broker is back after an outage: create riskguard's topics if they are gone
    (``ensure``, :func:`~riskguard.ingest.topics.ensure_topics`: compacted, as many
    partitions as configured, before a producer's auto-creation gets the defaults;
    failing, it is logged), publish ``standing`` (every scope not ACTIVE, with the
    transition that put it there) again, and have ``feed`` publish the gates' rules,
    marks and REDUCE_ONLY positions again. Records the topic still holds are the same
    records (compaction keeps one; gates already have them); a failed publish stays
    pending and is retried (:meth:`~riskguard.ingest.outbox.Outbox.retry_pending`)."""
    if ensure is not None:
        try:
            await ensure()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.get("sidecar").error("topics not re-created after the outage", error=repr(exc))
    states = list(standing)
    await outbox.reassert((), states)
    feed.resend()
    log.get("sidecar").warning(
        "broker back: standing states and gate data published again", scopes=len(states)
    )
