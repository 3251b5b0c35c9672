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
task on the running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from riskguard.control.reader import ControlView, read_to_end
from riskguard.control.records import StateRecord
from riskguard.vocabulary import STATE_CODE, order_scopes

__all__ = ["Gate", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one ``allows`` call. Truthy when the order may be sent."""

    allowed: bool
    reason: str
    state: Literal["ACTIVE", "REDUCE_ONLY", "HALTED", "UNKNOWN"]
    scope: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


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
        self._fresh_until = 0.0  # monotonic deadline of the current heartbeat
        self.last_error = ""

    async def start(self, timeout_s: float = 10.0) -> None:
        """Read the control topic to its end, then follow it in the background."""
        await self._consumer.start()
        await read_to_end(self._consumer, self.topic, self.view, timeout_s)
        now = time.time_ns()
        for scope in self.view.states:
            self.seen_ns[scope] = now
        self._note_heartbeat()
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
                self._note_heartbeat()

    def _note_heartbeat(self) -> None:
        """A heartbeat is fresh for the timeout, less the age it already had when read.

        The age uses riskguard's own timestamp, so replaying an old heartbeat from the
        topic after a restart never makes a silent riskguard look alive.
        """
        hb = self.view.heartbeat
        if hb is None:
            return
        age_ms = max(0.0, (time.time_ns() - hb.ts) / 1e6)
        remaining_ms = self.heartbeat_timeout_ms - age_ms
        self._fresh_until = self.view.heartbeat_seen_mono + remaining_ms / 1000

    # the question -----------------------------------------------------------
    def health(self) -> Verdict:
        """Whether riskguard is alive and ready (the fail-closed part of ``allows``)."""
        hb = self.view.heartbeat
        if hb is None:
            return Verdict(False, "fail closed: no heartbeat from riskguard yet", "UNKNOWN")
        if time.monotonic() >= self._fresh_until:
            silent_ms = (time.time_ns() - hb.ts) / 1e6
            return Verdict(
                False,
                f"fail closed: riskguard silent for {silent_ms:,.0f} ms "
                f"(timeout {self.heartbeat_timeout_ms} ms)",
                "UNKNOWN",
            )
        if not hb.ready:
            return Verdict(False, f"fail closed: riskguard {hb.instance} is not ready", "UNKNOWN")
        return Verdict(True, "riskguard alive", "ACTIVE")

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
        the position (``reduces_position=True``). ``side`` is validated and kept in the
        signature for per-side rules.
        """
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        health = self.health()
        if not health:
            return health
        worst: StateRecord | None = None
        for scope in order_scopes(account, strategy, symbol):
            record = self.view.states.get(scope)
            if record is not None and (
                worst is None or STATE_CODE[record.state] > STATE_CODE[worst.state]
            ):
                worst = record
        if worst is None or worst.state == "ACTIVE":
            return Verdict(True, "allowed", "ACTIVE")
        why = _evidence(worst)
        if worst.state == "REDUCE_ONLY" and reduces_position:
            return Verdict(
                True,
                f"{worst.scope} is REDUCE_ONLY; order reduces position",
                "REDUCE_ONLY",
                worst.scope,
            )
        return Verdict(False, f"{worst.scope} is {worst.state} ({why})", worst.state, worst.scope)  # type: ignore[arg-type]


def _evidence(record: StateRecord) -> str:
    tr = record.transition
    if tr.kind == "manual":
        return f"by {tr.operator}: {tr.reason}"
    return f"rule {tr.rule}: {tr.metric} {tr.value:.6g} vs limit {tr.limit:.6g}"
