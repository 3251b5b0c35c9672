"""What the console and ``riskguard status`` show beyond the sidecar's own status.

:func:`feeds` reads, from the engine and the metrics, how long each heartbeat source
has been silent (against the ``feed_silence_ms`` rules that watch it) and each input
partition's consumer lag. :class:`RecentTransitions` keeps the latest kill-switch
transitions. :func:`explained` adds to a transition as the API serialises it the
evidence sentence and the time people read (``riskguard.evidence``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from riskguard.engine import Engine
from riskguard.evidence import evidence, when
from riskguard.metrics import Metrics
from riskguard.vocabulary import Transition

RECENT: Final = 50
"""Transitions kept for ``/v1/status`` (``transitions``), newest first."""


def explained(tr: Transition) -> dict[str, Any]:
    """``tr`` as JSON builtins plus ``evidence`` (one sentence) and ``at`` (decision
    time, UTC, ms)."""
    out: dict[str, Any] = msgspec.to_builtins(tr)
    out["evidence"] = evidence(tr)
    out["at"] = when(tr.decided_ns)
    return out


def explain_dict(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Like :func:`explained`, for a transition already turned into JSON builtins."""
    tr = msgspec.convert(raw, Transition)
    return {**raw, "evidence": evidence(tr), "at": when(tr.decided_ns)}


class RecentTransitions:
    """The latest :data:`RECENT` kill-switch transitions (a listener of the kill switch)."""

    def __init__(self, size: int = RECENT) -> None:
        self._items: deque[Transition] = deque(maxlen=size)

    def __call__(self, tr: Transition) -> None:
        """Remember ``tr``."""
        self._items.append(tr)

    def latest(self) -> list[dict[str, Any]]:
        """Newest first, each :func:`explained`."""
        return [explained(tr) for tr in reversed(self._items)]


def feeds(engine: Engine, metrics: Metrics, now_ns: int | None = None) -> dict[str, Any]:
    """Feed silence per heartbeat source and consumer lag per input partition.

    ``sources``: one entry per heartbeat source seen or named by a ``feed_silence_ms``
    rule, with ``last_heard_ns`` (event time of its latest heartbeat, None when never),
    ``silent_ms`` (wall clock minus that, or since riskguard started when never heard),
    and the smallest ``limit_ms`` of the rules watching it with that rule's name.
    ``consumer_lag``: ``topic``, ``partition`` and ``messages`` (high watermark minus
    the next offset to apply) for each partition consumed.
    """
    now = time.time_ns() if now_ns is None else now_ns
    watch: dict[str, tuple[float, str]] = {}
    for rule in engine.limits.rules:
        if rule.metric == "feed_silence_ms" and rule.max is not None:
            for source in rule.match.get("source", ()):
                if source not in watch or rule.max < watch[source][0]:
                    watch[source] = (rule.max, rule.name)
    heard = engine.store.state.sources["last_heard_ns"]
    names = engine.keys.source_names
    started = int(engine.store.state.globals["start_ns"][0])
    sources = []
    for source in sorted(set(names) | set(watch)):
        sid = engine.keys.sources.get(source)
        last = int(heard[sid]) if sid is not None and sid < len(heard) else -1
        since = last if last >= 0 else started
        limit = watch.get(source)
        sources.append(
            {
                "source": source,
                "last_heard_ns": last if last >= 0 else None,
                "silent_ms": round((now - since) / 1e6, 1) if since >= 0 else None,
                "limit_ms": limit[0] if limit else None,
                "rule": limit[1] if limit else None,
            }
        )
    lag = [
        {
            "topic": sample.labels["topic"],
            "partition": int(sample.labels["partition"]),
            "messages": int(sample.value),
        }
        for family in metrics.consumer_lag.collect()
        for sample in family.samples
    ]
    lag.sort(key=lambda p: (p["topic"], p["partition"]))
    return {"sources": sources, "consumer_lag": lag}
