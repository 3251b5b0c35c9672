"""Getting back to where we were: standing states, before any event is consumed.

Order on start (the lifecycle in :mod:`riskguard.ingest.runtime`):

1. the newest valid snapshot (engine state and the input offsets it reflects),
   loaded by :class:`~riskguard.ingest.checkpoint.Checkpoints`;
2. :func:`recover`: standing states, merged from the local journal and the control
   topic (newest decision per scope wins) and re-asserted; states the topic lost
   are re-published through the outbox;
3. the previous instance's progress (``last_event_ns`` of its last heartbeat) marks
   breaches up to then as already judged, so replay decides nothing twice.

Written against narrow interfaces (:mod:`riskguard.ingest.ports`), not the sidecar.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from riskguard import log
from riskguard.control.reader import ControlView, read_to_end
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


async def recover(
    kafka: KafkaSettings,
    client_id: str,
    journal: HaltJournal,
    engine: Recoverable,
    outbox: Reassertion,
) -> Recovered:
    """Re-assert standing states from the journal and the control topic.

    Reads the control topic to its end with a consumer named ``client_id``, merges
    it with ``journal`` (newest decision per scope wins), latches every merged state
    in ``engine``, hands them to ``outbox`` (re-publishing those the topic lacks),
    compacts the journal, and marks the previous instance's progress as judged.

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
    reader = AIOKafkaConsumer(
        **kafka.client_options(consumer=True),
        enable_auto_commit=False,
        client_id=client_id,
    )
    await reader.start()
    try:
        view = await read_to_end(reader, kafka.control_topic, ControlView())
    finally:
        await reader.stop()
    merged = {scope: rec.transition for scope, rec in view.states.items()}
    stale: list[Transition] = []
    for scope, tr in latest.items():
        published = merged.get(scope)
        if published is None or tr.decided_ns > published.decided_ns:
            merged[scope] = tr
            stale.append(tr)
    restored = [tr for tr in merged.values() if engine.killswitch.restore(tr)]
    await outbox.reassert(restored, stale)
    done = Recovered(restored=[tr.scope for tr in restored])
    if stale:
        done.republished = sorted(t.scope for t in stale)
        sidecar_log.warning(
            "re-published states the control topic had lost", scopes=done.republished
        )
    await asyncio.to_thread(journal.compact, merged)
    if view.heartbeat is not None and view.heartbeat.last_event_ns > 0:
        engine.judge_until(view.heartbeat.last_event_ns)
    return done
