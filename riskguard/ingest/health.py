"""Health: readiness checks, loop liveness, heartbeats, and broker reachability.

Ready means every check in :data:`READY_CHECKS` passed and the consume loop is
alive (it polled within ``runtime.stall_budget_ms``). Heartbeats go to the control
topic only while the loop is alive, so a gate fails closed on a stalled riskguard.

aiokafka's ``getmany`` just returns empty batches while the broker is down, which
looks exactly like a quiet market. The heartbeat, published every 250 ms with a
bounded timeout, is the probe: when no publish has succeeded for ``budget_ms``,
the broker counts as unreachable. riskguard then reports not-ready and alerts;
gates fail closed on their own because heartbeats stop arriving. Recovery is
automatic once a publish succeeds again.

A consume loop that stops polling (every fetch failing, e.g. a group member fenced by
another process under its name; or blocked) withholds the heartbeats: that silence
says nothing about the broker, so it is not counted as the broker's. The loop's own
edge raises ``consume-stalled`` (naming the last fetch error) and ``consume-recovered``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from riskguard import log
from riskguard.control.records import HeartbeatRecord
from riskguard.engine import Engine
from riskguard.ingest.partitions import PartitionEngines
from riskguard.ingest.ports import HeartbeatChannel, TransitionSink
from riskguard.metrics import Metrics
from riskguard.settings import RuntimeSettings
from riskguard.vocabulary import Transition, system_alert

Edge = Literal["lost", "recovered"]

STALLED = "consume-stalled"
RECOVERED = "consume-recovered"

READY_CHECKS = (
    "limits_loaded",
    "kernels_warm",
    "control_topic_read",
    "partitions_assigned",
    "broker_reachable",
)


class BrokerWatch:
    """Turns publish successes and failures into lost/recovered edges."""

    def __init__(self, budget_ms: int) -> None:
        self.budget_ms = budget_ms
        self.last_ok_mono = time.monotonic()
        self.reachable = True
        self.lost_alert: str | None = None
        """The id of the standing ``broker-unreachable`` alert (its recovery ends it)."""
        self.pauses = 0
        """Times riskguard itself did not run for longer than the budget (the process
        stopped or its event loop blocked): that silence is not the broker's."""
        self.last_pause_ms = 0.0
        self._last_look: float | None = None

    def _ran(self, now: float) -> bool:
        """Note that riskguard runs at ``now``; False when it had not run for longer than
        the budget since the previous look (the watch looks every tick), and then the
        broker's budget starts again: a SIGSTOP, a VM pause or a blocked event loop
        silences every publish without the broker being at fault."""
        last, self._last_look = self._last_look, now
        if last is None or (now - last) * 1000 <= self.budget_ms:
            return True
        self.pauses += 1
        self.last_pause_ms = (now - last) * 1000
        if self.reachable:
            self.last_ok_mono = now
        return False

    def observe(self, ok: bool, now_mono: float | None = None) -> Edge | None:
        """Record one publish result; returns ``recovered`` when the broker is back."""
        if not ok:
            return self.check(now_mono)
        self.last_ok_mono = time.monotonic() if now_mono is None else now_mono
        self._ran(self.last_ok_mono)
        if not self.reachable:
            self.reachable = True
            return "recovered"
        return None

    def withheld(self, now_mono: float | None = None) -> None:
        """No heartbeat is tried now (the consume loop is stalled): the silence is not
        the broker's, so its budget starts again when heartbeats resume."""
        now = time.monotonic() if now_mono is None else now_mono
        self._ran(now)
        if self.reachable:
            self.last_ok_mono = now

    def check(self, now_mono: float | None = None) -> Edge | None:
        """Called on a timer: ``lost`` once nothing succeeded for the budget.

        Independent of any publish in flight, so a publish blocked on its own
        timeout cannot delay detection.
        """
        now = time.monotonic() if now_mono is None else now_mono
        if self._ran(now) and self.reachable and self.silent_ms(now) > self.budget_ms:
            self.reachable = False
            return "lost"
        return None

    def silent_ms(self, now_mono: float | None = None) -> float:
        """Milliseconds since the last successful publish."""
        now = time.monotonic() if now_mono is None else now_mono
        return (now - self.last_ok_mono) * 1000

    def alert(self, edge: Edge, firm_state: str) -> Transition:
        """The alert for an edge (no state change: ``from`` equals ``to``).

        ``broker-recovered`` carries in ``ends`` the id of the ``broker-unreachable``
        alert it ends, so the notifiers resolve that incident.
        """
        rule = "broker-unreachable" if edge == "lost" else "broker-recovered"
        alert = system_alert(
            rule,
            "broker_silence_ms",
            firm_state,
            value=round(self.silent_ms(), 1),
            limit=float(self.budget_ms),
        )
        if edge == "lost":
            self.lost_alert = alert.id
        elif self.lost_alert is not None:
            alert = msgspec.structs.replace(alert, ends=self.lost_alert)
            self.lost_alert = None
        return alert


class Liveness:
    """Whether the consume loop is alive: it polled the broker within the stall budget.

    Before its first poll (start-up: warm-up, broker connection, recovery, each with a
    bounded wait) the process counts as alive, so a liveness probe does not kill a
    riskguard that is still compiling its kernels; readiness says it is not ready.
    """

    def __init__(self, stall_budget_ms: int) -> None:
        self.budget_s = stall_budget_ms / 1000
        self.last_poll_mono = time.monotonic()
        self.polling = False
        self.last_error: str | None = None
        """The latest fetch error since the latest poll (None: none)."""

    def begin(self) -> None:
        """The consume loop starts now: from here it must poll within the stall budget."""
        self.last_poll_mono = time.monotonic()
        self.polling = True

    def polled(self) -> None:
        """The consume loop just got an answer from ``getmany`` (maybe empty)."""
        self.last_poll_mono = time.monotonic()
        self.polling = True
        self.last_error = None

    def failed(self, error: str) -> None:
        """A fetch raised ``error`` (the loop tries again: not a poll)."""
        self.last_error = error

    def silent_ms(self) -> float:
        """Milliseconds since the loop last polled (or began)."""
        return (time.monotonic() - self.last_poll_mono) * 1000

    def healthy(self) -> bool:
        """Still starting, or the consume loop polled recently (it is not stalled)."""
        return not self.polling or time.monotonic() - self.last_poll_mono < self.budget_s


@dataclass(eq=False)
class Health:
    """Readiness of one sidecar, its heartbeats, and the broker watch.

    Implements :class:`~riskguard.ingest.ports.Probes`. Checks start failed except
    those true by construction (limits loaded, kernels warm, broker reachable);
    the lifecycle marks the others with :meth:`passed` (the sidecar fails
    ``kernels_warm`` until its warm-up is done).
    """

    runtime: RuntimeSettings
    instance: str
    engine: Engine | PartitionEngines
    """The engine (group mode: the member's engines): clock, events, limits, states."""
    outbox: TransitionSink
    """Where broker alerts go."""
    metrics: Metrics
    checks: dict[str, bool] = field(init=False)
    """Each of :data:`READY_CHECKS`: passed or not."""
    liveness: Liveness = field(init=False)
    broker: BrokerWatch = field(init=False)
    sent: deque[int] = field(init=False)
    """The ``ts`` of the latest heartbeats this instance wrote (to tell them from those of
    another process using the same instance name)."""
    stalled_alert: str | None = field(init=False, default=None)
    """The id of the standing ``consume-stalled`` alert (``consume-recovered`` ends it)."""
    on_recovered: Callable[[], Awaitable[None]] | None = field(init=False, default=None)
    """Awaited after the ``broker-recovered`` alert went out (the broker may have come
    back empty: :func:`riskguard.ingest.recovery.republish`)."""

    def __post_init__(self) -> None:
        self.checks = dict.fromkeys(READY_CHECKS, False)
        self.checks["limits_loaded"] = self.checks["kernels_warm"] = True
        self.checks["broker_reachable"] = True
        self.liveness = Liveness(self.runtime.stall_budget_ms)
        self.broker = BrokerWatch(self.runtime.broker_budget_ms)
        self.sent = deque(maxlen=256)
        self._rewinds = 0  # the channel's rewinds acted on
        self._log = log.get("sidecar")

    def passed(self, check: str) -> None:
        """Mark one of :data:`READY_CHECKS` as passed. Raises :class:`KeyError` for another."""
        if check not in self.checks:
            raise KeyError(f"unknown readiness check {check!r}")
        self.checks[check] = True

    def healthy(self) -> bool:
        """The consume loop polled recently (it is not stalled)."""
        return self.liveness.healthy()

    def ready(self) -> bool:
        """Every readiness check passes and the loop is healthy."""
        return all(self.checks.values()) and self.healthy()

    def readiness(self) -> Mapping[str, bool]:
        """Every check by name, plus ``loop_healthy`` (for ``/readyz`` and the status)."""
        return {**self.checks, "loop_healthy": self.healthy()}

    async def heartbeats(self, channel: HeartbeatChannel) -> None:
        """Forever: publish a heartbeat each interval while the loop is alive.

        Each heartbeat names this instance and the digest of the limits in force; each
        publish result feeds the broker watch; the ``riskguard_ready`` gauge is
        refreshed on the same beat. A heartbeat whose offset went back (the control
        topic was re-created, the broker back without its data sooner than
        ``runtime.broker_budget_ms`` could notice) calls :attr:`on_recovered` too.
        """
        interval_ms = self.runtime.heartbeat_interval_ms
        while True:
            ready = self.ready()
            self.metrics.ready.set(1 if ready else 0)
            if self.healthy():
                beat = HeartbeatRecord(
                    ts=time.time_ns(),
                    instance=self.instance,
                    ready=ready,
                    interval_ms=interval_ms,
                    last_event_ns=self.engine.last_event_ns,
                    events_applied=self.engine.events_applied,
                    limits_sha256=self.engine.limits.digest,
                )
                self.sent.append(beat.ts)
                ok = await channel.heartbeat(beat)
                edge = self.broker.observe(ok)
                await self._broker_edge(edge)  # "recovered" publishes everything again
                if channel.rewinds > self._rewinds and self.on_recovered is not None:
                    self._rewinds = channel.rewinds  # noted by a heartbeat, however late
                    if edge != "recovered":  # not twice for one return of the broker
                        await self.on_recovered()  # back empty, faster than the budget saw
            else:
                self.broker.withheld()
            await asyncio.sleep(interval_ms / 1000)

    async def watch_broker(self) -> None:
        """Forever, every tick: has the broker taken nothing for the budget?

        Independent of the heartbeat, so a publish stuck on its own timeout cannot
        delay the detection.
        """
        seen = 0
        while True:
            await asyncio.sleep(self.runtime.tick_interval_ms / 1000)
            await self._loop_edge()
            if self.healthy():  # heartbeats are tried: their silence is the broker's
                await self._broker_edge(self.broker.check())
            else:
                self.broker.withheld()
            if self.broker.pauses != seen:
                seen = self.broker.pauses
                self._log.error(
                    "riskguard did not run (process stopped or event loop blocked); not "
                    "counted as the broker's silence",
                    paused_ms=round(self.broker.last_pause_ms, 1),
                    pauses=seen,
                )

    async def _loop_edge(self) -> None:
        """``consume-stalled`` when the consume loop has not polled for
        ``runtime.stall_budget_ms`` + ``runtime.broker_budget_ms``, naming its latest fetch
        error; ``consume-recovered`` (ending it) once it polls again."""
        healthy = self.healthy()
        if healthy == (self.stalled_alert is None):
            return
        live, firm = self.liveness, self.engine.killswitch.state("firm")
        silent, budget = round(live.silent_ms(), 1), live.budget_s * 1000 + self.broker.budget_ms
        if not healthy and silent <= budget:
            return  # paged when a lost broker would have been: a long rebuild is routine
        if not healthy:
            why = (
                f"every fetch fails: {live.last_error}"
                if live.last_error
                else "it is blocked (a batch, a rebalance or the event loop)"
            )
            reason = (
                f"the consume loop has not polled the broker for {silent:,} ms (budget "
                f"{budget:,.0f} ms): {why}; not ready, no heartbeat (gates fail closed on "
                "this instance)"
            )
            alert = system_alert(
                STALLED, "poll_silence_ms", firm, value=silent, limit=budget, reason=reason
            )
            self.stalled_alert = alert.id
            self._log.error("consume loop stalled", silent_ms=silent, error=live.last_error)
        else:
            alert = system_alert(RECOVERED, "poll_silence_ms", firm, value=0.0, limit=budget)
            alert = msgspec.structs.replace(alert, ends=self.stalled_alert)
            self.stalled_alert = None
            self._log.warning("consume loop recovered")
        await self.outbox.send([alert])

    async def _broker_edge(self, edge: Edge | None) -> None:
        """Not ready (and alert) when the broker has taken nothing for the budget."""
        self.checks["broker_reachable"] = self.broker.reachable
        self.metrics.broker_reachable.set(1 if self.broker.reachable else 0)
        if edge is None:
            return
        alert = self.broker.alert(edge, self.engine.killswitch.state("firm"))
        log_at = self._log.error if edge == "lost" else self._log.warning
        log_at(f"broker {edge}", silent_ms=alert.value, budget_ms=self.broker.budget_ms)
        await self.outbox.send([alert])
        if edge == "recovered" and self.on_recovered is not None:
            await self.on_recovered()
