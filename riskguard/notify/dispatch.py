"""Deliver notifications from a queue per sink, with retries and capped backoff.

The engine never waits for a sink: ``submit`` only enqueues. A failing sink is
visible in ``riskguard_notifier_failures_total`` and the logs, and its queue
keeps every notification until the sink is back (delivered in order).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from riskguard import log
from riskguard.metrics import Metrics
from riskguard.notify import sinks
from riskguard.settings import NotifierSettings
from riskguard.vocabulary import Transition


@dataclass
class _Sink:
    cfg: NotifierSettings
    routing_key: str | None
    queue: asyncio.Queue[Transition]
    task: asyncio.Task[None] | None = None
    delivered: int = 0
    failures: int = 0
    last_error: str = ""
    failing: bool = False  # the latest delivery attempt failed


class Notifier:
    """Fan transitions out to every configured sink."""

    def __init__(
        self, configs: tuple[NotifierSettings, ...], metrics: Metrics, source: str = "riskguard"
    ) -> None:
        self.metrics = metrics
        self.source = source
        self._log = log.get("notify")
        self._session: aiohttp.ClientSession | None = None
        self._sinks = [_Sink(c, _routing_key(c), asyncio.Queue()) for c in configs]

    async def start(self) -> None:
        """Open the HTTP session and start one worker per sink."""
        self._session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        for sink in self._sinks:
            sink.task = asyncio.create_task(self._worker(sink), name=f"notify-{sink.cfg.label}")

    def submit(self, tr: Transition) -> None:
        """Queue ``tr`` for every sink (never blocks)."""
        for sink in self._sinks:
            sink.queue.put_nowait(tr)
            self.metrics.notifier_queue.labels(sink.cfg.label).set(sink.queue.qsize())

    def status(self) -> list[dict[str, Any]]:
        """Per sink: queued, delivered, failures, last error, and ``failing`` (the
        latest delivery attempt failed)."""
        return [
            {
                "sink": s.cfg.label,
                "kind": s.cfg.kind,
                "queued": s.queue.qsize(),
                "delivered": s.delivered,
                "failures": s.failures,
                "last_error": s.last_error,
                "failing": s.failing,
            }
            for s in self._sinks
        ]

    async def _worker(self, sink: _Sink) -> None:
        label = sink.cfg.label
        while True:
            tr = await sink.queue.get()
            body = sinks.build(sink.cfg, tr, sink.routing_key, self.source)
            backoff = 0.2
            while body is not None:
                try:
                    await self._post(sink.cfg, body)
                    sink.delivered += 1
                    sink.failing = False
                    self.metrics.notifier_deliveries.labels(label).inc()
                    break
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    sink.failures += 1
                    sink.failing = True
                    sink.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    self.metrics.notifier_failures.labels(label).inc()
                    self._log.warning(
                        "notifier delivery failed",
                        sink=label,
                        error=sink.last_error,
                        retry_in_s=round(backoff, 2),
                        transition=tr.id,
                    )
                    await asyncio.sleep(backoff * (0.5 + random.random()))  # jitter
                    backoff = min(backoff * 2, sink.cfg.max_backoff_s)
            self.metrics.notifier_queue.labels(label).set(sink.queue.qsize())

    async def _post(self, cfg: NotifierSettings, body: Any) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with self._session.post(cfg.url, json=body, timeout=timeout) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:200]
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=text
                )

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queue to empty. True if all delivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(s.queue.qsize() for s in self._sinks) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not any(s.queue.qsize() for s in self._sinks)

    async def stop(self) -> None:
        """Cancel the workers and close the session (undelivered items are logged)."""
        for sink in self._sinks:
            if sink.queue.qsize():
                self._log.error(
                    "notifications not delivered at shutdown",
                    sink=sink.cfg.label,
                    count=sink.queue.qsize(),
                )
            if sink.task:
                sink.task.cancel()
        await asyncio.gather(*(s.task for s in self._sinks if s.task), return_exceptions=True)
        if self._session:
            await self._session.close()


def _routing_key(cfg: NotifierSettings) -> str | None:
    if cfg.routing_key:
        return cfg.routing_key
    if cfg.routing_key_file:
        return Path(cfg.routing_key_file).read_text().strip()
    return None
