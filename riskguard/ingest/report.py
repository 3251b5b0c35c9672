"""What ``GET /v1/status`` says about one sidecar: standing scopes with their evidence, and
a summary of every part's health (``riskguard status`` renders it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from riskguard import __version__

if TYPE_CHECKING:
    from riskguard.engine import Engine
    from riskguard.ingest.cancels import CancelTracker
    from riskguard.ingest.checkpoint import Checkpoints
    from riskguard.ingest.consume import ConsumeLoop
    from riskguard.ingest.health import Health
    from riskguard.ingest.outbox import Outbox
    from riskguard.ingest.partitions import PartitionEngines
    from riskguard.ingest.peers import Peers
    from riskguard.ingest.pretrade import PreTradeFeed
    from riskguard.ingest.reload import LimitsReloader
    from riskguard.ingest.scaleout import GroupMode
    from riskguard.ingest.topic_shape import TopicWatch
    from riskguard.journal import HaltJournal
    from riskguard.limits import Limits
    from riskguard.notify.dispatch import Notifier
    from riskguard.settings import Settings


class Reported(Protocol):
    """What the status reads of a sidecar (:class:`riskguard.ingest.runtime.Sidecar`)."""

    instance: str
    settings: Settings
    engine: Engine
    flow: Engine | PartitionEngines
    health: Health
    intake: ConsumeLoop
    reloader: LimitsReloader
    peers: Peers
    outbox: Outbox
    cancels: CancelTracker
    feed: PreTradeFeed
    notifier: Notifier
    checkpoints: Checkpoints
    journal: HaltJournal
    group: GroupMode | None
    topics: TopicWatch

    @property
    def phase(self) -> str: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def bad_events(self) -> int: ...
    @property
    def before_session(self) -> int: ...
    @property
    def restored(self) -> list[str]: ...
    @property
    def republished(self) -> list[str]: ...
    def ready(self) -> bool: ...


def status(sidecar: Reported) -> dict[str, Any]:
    """The status document of ``sidecar``: a JSON object of the instance, its phase and
    readiness checks, the times it did not run itself (``paused``), the standing scopes
    with their transitions, event counts, the limits in force, and each part's own
    report (``flow``, ``cancels``, ``gate_feed``, ``notifiers``, ``snapshot``,
    ``topics``, the peers, and ``scale`` in group mode)."""
    standing = {
        scope: msgspec.to_builtins(tr) for scope, tr in sidecar.engine.killswitch.standing().items()
    }
    last = sidecar.flow.last_event_ns
    return {
        "instance": sidecar.instance,
        "version": __version__,
        "phase": sidecar.phase,
        "ready": sidecar.ready(),
        "checks": dict(sidecar.health.readiness()),
        "paused": {  # riskguard itself did not run past the broker budget (not the broker)
            "times": sidecar.health.broker.pauses,
            "last_ms": round(sidecar.health.broker.last_pause_ms, 1),
        },
        "consume": consume(sidecar.health),
        "standing": standing,
        "events_applied": sidecar.flow.events_applied,
        "bad_events": sidecar.bad_events,
        "skipped_before_session": sidecar.before_session,
        "flow": sidecar.intake.flow.status(),
        "input_read_to_end_seconds": sidecar.intake.caught_up_s,  # None: still reading
        "last_event_ns": last if last > 0 else None,
        "limits": {
            "last_reload_error": sidecar.reloader.last_error or None,
            "source": sidecar.limits.source,
            "sha256": sidecar.limits.digest,
            "rules": len(sidecar.limits.rules),
        },
        **sidecar.peers.status(),  # peers, peer_adoptions, instance_conflict
        "control_pending": sidecar.outbox.pending(),
        "cancels": sidecar.cancels.status(),
        "gate_feed": sidecar.feed.status(),
        "notifiers": sidecar.notifier.status(),
        "restored_at_start": sidecar.restored,
        "snapshot": sidecar.checkpoints.status(),
        "republished_at_start": sidecar.republished,
        "topics": sidecar.topics.status(),
        "journal": str(sidecar.journal.path),
        "state_dir": str(sidecar.settings.runtime.state_path),
        **({"scale": sidecar.group.status()} if sidecar.group is not None else {}),
    }


def consume(health: Health) -> dict[str, Any]:
    """The consume loop as ``/v1/status`` says it (``consume``): ``stalled`` while the
    ``consume-stalled`` alert stands (``stalled_alert``, its id), ``silent_ms`` since
    the loop last polled the broker (ms, 0.1 ms steps) and ``last_error``, its latest
    fetch error since then (None: none)."""
    return {
        "stalled": health.stalled_alert is not None,
        "stalled_alert": health.stalled_alert,
        "silent_ms": round(health.liveness.silent_ms(), 1),
        "last_error": health.liveness.last_error,
    }
