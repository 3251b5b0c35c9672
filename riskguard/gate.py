"""The gate: the small library a trading system embeds to ask "may I send this order?".

It reads riskguard's compacted control topic from the beginning (so it knows every
standing halt even when it starts late), follows it live, and answers
:meth:`Gate.allows` from memory in microseconds. It **fails closed**: when
riskguard's heartbeat is older than ``heartbeat_timeout_ms``, or riskguard says
it is not ready, every order is refused with the reason.

Usage in an order router (asyncio)::

    from riskguard.gate import Gate

    async with Gate("kafka:9092", heartbeat_timeout_ms=2000) as gate:
        ...
        verdict = gate.allows(account, strategy, symbol, side, reduces_position=False)
        if not verdict:
            reject_order(reason=verdict.reason)   # e.g. "strategy:smars is HALTED (...)"
        else:
            send_order()

``allows`` never blocks and never does I/O; the topic is followed by a background
task on the running event loop. The record format and the exact decision rules are
the public contract in ``docs/control-topic.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from riskguard.control import decision
from riskguard.control.decision import Verdict
from riskguard.control.reader import read_to_end
from riskguard.control.view import ControlView, Instant

__all__ = ["Gate", "Verdict"]


class Gate:
    """Follows the control topic and answers ``allows()``. Fails closed on silence."""

    def __init__(
        self,
        bootstrap_servers: str,
        control_topic: str = "riskguard.control",
        *,
        heartbeat_timeout_ms: int = 2000,
        request_timeout_ms: int = 30_000,
        **kafka_options: Any,
    ) -> None:
        self.topic = control_topic
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.view = ControlView()
        #: wall-clock ns at which each scope's latest record was read (for latency checks)
        self.seen_ns: dict[str, int] = {}
        options = {"fetch_max_wait_ms": 1, **kafka_options}  # low wait: halts arrive fast
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            request_timeout_ms=request_timeout_ms,
            **options,
        )
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""

    async def start(self, timeout_s: float = 10.0) -> None:
        """Read the control topic to its end, then follow it in the background.

        Until the end is reached ``allows`` refuses (no heartbeat yet): a heartbeat
        read before a later halt never lets an order through. Raises ``TimeoutError``
        when the topic is missing or cannot be read to its end within ``timeout_s``.
        """
        await self._consumer.start()
        view = ControlView()
        await read_to_end(self._consumer, self.topic, view, timeout_s)
        self.view = view
        now = time.time_ns()
        for scope in self.view.states:
            self.seen_ns[scope] = now
        self._task = asyncio.create_task(self._follow(), name="riskguard-gate")

    async def stop(self) -> None:
        """Stop following (``allows`` then fails closed once the heartbeat ages out)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def __aenter__(self) -> Gate:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _follow(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=100)
            except KafkaError as exc:
                self.last_error = repr(exc)
                await asyncio.sleep(0.1)
                continue
            for messages in batch.values():
                changed = self.view.apply(m.value for m in messages)
                now = time.time_ns()
                for record in changed:
                    self.seen_ns[record.scope] = now

    # the question -----------------------------------------------------------
    def health(self) -> Verdict:
        """Whether riskguard is alive and ready (the fail-closed part of ``allows``).

        A heartbeat is fresh for ``heartbeat_timeout_ms`` less the age it already had
        when read, by riskguard's own timestamp, so replaying an old heartbeat from the
        topic after a restart never makes a silent riskguard look alive.
        """
        return decision.health(self.view, self.heartbeat_timeout_ms, Instant.now())

    def state(self, scope: str) -> str:
        """The published state of one scope (ACTIVE if never published)."""
        record = self.view.states.get(scope)
        return record.state if record else "ACTIVE"

    def allows(
        self,
        account: str,
        strategy: str,
        symbol: str,
        side: Literal["buy", "sell"],
        reduces_position: bool,
    ) -> Verdict:
        """May this order be sent? Checks firm, account, strategy and symbol.

        HALTED anywhere refuses. REDUCE_ONLY anywhere allows only orders that reduce
        the position (``reduces_position=True``); a state this gate does not know
        refuses. ``side`` is validated and kept in the signature for per-side rules.
        Raises ``ValueError`` when ``side`` is not ``"buy"`` or ``"sell"``. The rules
        are those of ``docs/control-topic.md`` (:func:`riskguard.control.decision.allows`).
        """
        return decision.allows(
            self.view,
            self.heartbeat_timeout_ms,
            Instant.now(),
            account,
            strategy,
            symbol,
            side,
            reduces_position,
        )
