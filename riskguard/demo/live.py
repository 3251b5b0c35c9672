"""``riskguard demo``: Knight Capital's runaway, stopped, on the bundled broker.

One process runs everything over real Kafka-protocol TCP on loopback:

* the embedded broker (Tansu);
* riskguard, with the example limits, its API on a free port;
* a simulated trading system whose order router asks the gate before every
  order, producing normal flow on 24 symbols, and then a runaway: the ``smars``
  strategy stops counting child fills against its parents.

The timeline shows when the runaway started, when the halt was decided and on
which rule, when the gate saw it and first refused an order, how many runaway
orders were sent after the halt, and the latencies. With ``--trials N`` the
runaway is resumed and restarted N times, for latency percentiles.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from riskguard import examples
from riskguard.broker import EmbeddedBroker
from riskguard.demo.scenario import STRATEGIES, SYMBOLS, TradingSim
from riskguard.events import encode
from riskguard.evidence import evidence
from riskguard.gate import Gate
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import load
from riskguard.settings import load_settings
from riskguard.vocabulary import Transition

RUNAWAY = "strategy:smars"
MS = 1_000_000


@dataclass
class Trial:
    """One runaway, from start to the gate refusing it."""

    runaway_ns: int
    halt: Transition | None = None
    gate_saw_ns: int | None = None
    first_refusal_ns: int | None = None
    resumed_ns: int | None = None
    sent_after_halt: int = 0

    @property
    def event_to_halt_ms(self) -> float | None:
        """Offending event's time to the halt being decided."""
        return (self.halt.decided_ns - self.halt.ts) / MS if self.halt else None

    @property
    def event_to_gate_ms(self) -> float | None:
        """Offending event's time to the gate holding the halt (refusing from then on)."""
        if self.halt is None or self.gate_saw_ns is None:
            return None
        return (self.gate_saw_ns - self.halt.ts) / MS


@dataclass
class DemoReport:
    """What happened, for the timeline and ``--json``."""

    broker: str = ""
    api: str = ""
    trials: list[Trial] = field(default_factory=list)
    orders_sent: int = 0
    orders_refused: int = 0
    events_produced: int = 0
    transitions: list[Transition] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Percentiles over trials, plus counts."""
        halts = [t.event_to_halt_ms for t in self.trials if t.event_to_halt_ms is not None]
        gates = [t.event_to_gate_ms for t in self.trials if t.event_to_gate_ms is not None]
        return {
            "broker": self.broker,
            "api": self.api,
            "metrics_url": f"{self.api}/metrics",
            "status_url": f"{self.api}/v1/status",
            "trials": len(self.trials),
            "halted_trials": len(halts),
            "event_to_halt_ms": _percentiles(halts),
            "event_to_gate_ms": _percentiles(gates),
            "runaway_orders_sent_after_halt": sum(t.sent_after_halt for t in self.trials),
            "orders_sent": self.orders_sent,
            "orders_refused": self.orders_refused,
            "events_produced": self.events_produced,
            "halt_rules": sorted({t.halt.rule or "" for t in self.trials if t.halt}),
        }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


async def run_demo(
    duration_s: float = 20.0, trials: int = 1, say: Callable[[str], None] = print
) -> DemoReport:
    """Run the whole scenario; ``say`` receives timeline lines as they happen."""
    report = DemoReport()
    t0 = time.monotonic()

    def line(text: str) -> None:
        say(f"[{time.monotonic() - t0:6.2f}s] {text}")

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        report.broker = broker.bootstrap_servers
        line(f"embedded broker (Tansu) listening on {broker.bootstrap_servers}")
        settings = load_settings(
            env={},
            overrides={
                "kafka.bootstrap_servers": broker.bootstrap_servers,
                "kafka.input_topics": ["demo.events"],
                "kafka.control_topic": "demo.control",
                "kafka.dead_letter_topic": "demo.dead-letter",
                "http.port": 0,
                "http.token": secrets.token_urlsafe(24),
                "runtime.audit_log": str(Path(tmp) / "audit.jsonl"),
                "runtime.journal": str(Path(tmp) / "journal.jsonl"),
                "runtime.snapshot_dir": str(Path(tmp) / "snapshots"),
                "runtime.heartbeat_interval_ms": 100,
                "runtime.stop_timeout_s": 3,
                "runtime.instance": "demo",
            },
        )
        sidecar = Sidecar(settings, load(examples.LIMITS))
        sidecar.engine.killswitch.subscribe(report.transitions.append)
        try:
            await sidecar.start()
            report.api = sidecar.api_url
            async with Gate(
                broker.bootstrap_servers, "demo.control", heartbeat_timeout_ms=1000
            ) as gate:
                while not gate.health():
                    await asyncio.sleep(0.01)
                line(
                    f"riskguard ready: {len(sidecar.limits.rules)} rules from the example "
                    "limits; gate heartbeat fresh"
                )
                line(
                    f"API {report.api}   metrics {report.api}/metrics   "
                    f"status {report.api}/v1/status"
                )
                await _trade(sidecar, gate, report, duration_s, trials, line)
        finally:  # Ctrl-C included: every client closed before the broker stops
            if sidecar.phase == "running":
                await sidecar.stop()
            else:
                await sidecar.close()
    return report


async def _trade(
    sidecar: Sidecar,
    gate: Gate,
    report: DemoReport,
    duration_s: float,
    trials: int,
    line: Callable[[str], None],
) -> None:
    sent_log: list[tuple[int, str]] = []

    def ask_gate(account: str, strategy: str, symbol: str, side: str, reduces: bool) -> bool:
        verdict = gate.allows(account, strategy, symbol, side, reduces)  # type: ignore[arg-type]
        now = time.time_ns()
        if verdict:
            report.orders_sent += 1
            sent_log.append((now, strategy))
            return True
        report.orders_refused += 1
        trial = report.trials[-1] if report.trials else None
        if trial and trial.first_refusal_ns is None and strategy == "smars":
            trial.first_refusal_ns = now
            line(f"gate refused a smars order: {verdict.reason}")
        return False

    start = time.time_ns()
    sim = TradingSim(seed=3, start_ns=start, gate=ask_gate, exec_delay_ms=0)
    first_runaway = start + int(duration_s * 0.4 * 1e9) if trials == 1 else start + 2_000 * MS
    sim.runaway_at_ns = first_runaway
    producer = AIOKafkaProducer(
        bootstrap_servers=sidecar.settings.kafka.bootstrap_servers, linger_ms=0
    )
    await producer.start()
    line(
        f"simulated trading system: {len(STRATEGIES)} strategies, {len(SYMBOLS)} symbols; "
        "its router asks the gate before every order"
    )
    deadline = start + int(duration_s * 1e9)
    seen_transitions = 0
    try:
        while time.time_ns() < deadline:
            seen_transitions = _follow(report, gate, seen_transitions, line)
            now = time.time_ns()
            if sim.runaway and (
                not report.trials or report.trials[-1].runaway_ns != sim.runaway_at_ns
            ):
                report.trials.append(Trial(runaway_ns=sim.runaway_at_ns or now))
                line(
                    f"RUNAWAY #{len(report.trials)}: strategy smars stops counting child "
                    "fills against its parents (Knight's SMARS router)"
                )
            for ev in sim.step(now):
                key = getattr(ev, "account", "-").encode()
                await producer.send(sidecar.settings.kafka.input_topics[0], encode(ev), key=key)
                report.events_produced += 1
            seen_transitions = _follow(report, gate, seen_transitions, line)
            trial = report.trials[-1] if report.trials else None
            if (
                trial
                and trial.halt
                and trial.gate_saw_ns
                and trial.resumed_ns is None
                and len(report.trials) < trials
            ):
                await asyncio.sleep(0.2)
                await sidecar.manual("resume", RUNAWAY, "demo", f"trial {len(report.trials)}")
                trial.resumed_ns = time.time_ns()
                _count_after(trial, sent_log)
                sim.restart_runaway(time.time_ns() + 300 * MS)
            await asyncio.sleep(max(0.0, (now + sim.step_ms * MS - time.time_ns()) / 1e9))
        _follow(report, gate, seen_transitions, line)
        if report.trials:
            _count_after(report.trials[-1], sent_log)
    finally:
        await producer.stop()


def _follow(report: DemoReport, gate: Gate, seen: int, line: Callable[[str], None]) -> int:
    """Note new transitions and when the gate saw the runaway's halt."""
    for tr in report.transitions[seen:]:
        trial = report.trials[-1] if report.trials else None
        if tr.scope == RUNAWAY and tr.to == "HALTED" and trial and trial.halt is None:
            trial.halt = tr
            line(
                f"HALT decided: {tr.scope} {tr.from_} -> {tr.to} ({evidence(tr)}); "
                f"{(tr.decided_ns - tr.ts) / MS:.2f} ms after the offending event"
            )
        elif not tr.is_alert and tr.kind != "manual":
            line(f"transition: {tr.scope} {tr.from_} -> {tr.to} on rule {tr.rule}")
    trial = report.trials[-1] if report.trials else None
    if trial and trial.halt and trial.gate_saw_ns is None and gate.state(RUNAWAY) == "HALTED":
        trial.gate_saw_ns = gate.seen_ns.get(RUNAWAY, time.time_ns())
        line(
            f"gate holds the halt: {(trial.gate_saw_ns - trial.halt.ts) / MS:.2f} ms after "
            "the offending event"
        )
    return len(report.transitions)


def _count_after(trial: Trial, sent_log: list[tuple[int, str]]) -> None:
    """Runaway-strategy orders sent between the halt decision and its resume."""
    if trial.halt is not None:
        end = trial.resumed_ns or time.time_ns()
        trial.sent_after_halt = sum(
            1
            for ns, strategy in sent_log
            if strategy == "smars" and trial.halt.decided_ns < ns < end
        )
