"""``riskguard demo``: Knight Capital's runaway, stopped, on the bundled broker.

One process runs everything over real Kafka-protocol TCP on loopback:

* the embedded broker (Tansu);
* riskguard, with the example limits, its API on a free port;
* a simulated trading system (:class:`~riskguard.demo.scenario.TradingSim`) trading 24
  equities and one futures contract (FESX: a contract size of 10, priced in EUR) on
  their venues, from an opening book carried from yesterday, with children that rest
  at the venue; its broker reports positions (a drop copy after each fill, the whole
  book every 5 s);
* its order router (:class:`~riskguard.demo.router.Router`), which asks the gate's
  ``check()`` before every order and cancels what riskguard's cancel requests name.

Once in the run a trader fat-fingers an order that ``check()`` refuses before sending;
EUR moves once; then the ``smars`` strategy stops counting child fills against its
parents (Knight's bug). The timeline shows the halt, the gate holding it, the cancel
request, the last order of the strategy closing and riskguard confirming it. With
``--trials N`` the runaway is resumed (once its orders are all closed) and restarted
N times, for latency percentiles.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer

from riskguard import events as wire
from riskguard import examples
from riskguard.broker import EmbeddedBroker
from riskguard.brokers import TANSU_FETCH_MAX_WAIT_MS
from riskguard.demo.book import FESX, FX_MOVED, FX_OPEN, reference_data
from riskguard.demo.report import MS, DemoReport, Trial
from riskguard.demo.router import Router, Send
from riskguard.demo.scenario import LIVE_STRATEGIES, Ticket, TradingSim
from riskguard.evidence import evidence
from riskguard.gate import Gate, Verdict
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import load
from riskguard.publish import publish
from riskguard.settings import load_settings

RUNAWAY = "strategy:smars"
#: the trader who fat-fingers: account, strategy, symbol; meant 500, typed 50,000
TRADER = ("ACC-EQ1", "desk-manual", "AAPL")
MEANT, TYPED = 500.0, 50_000.0
Line = Callable[[str], None]


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
                "kafka.fetch_max_wait_ms": TANSU_FETCH_MAX_WAIT_MS,
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
        report.cancel_deadline_ms = sidecar.limits.cancel_deadline_ms
        producer: AIOKafkaProducer | None = None
        try:
            await sidecar.start()
            report.api = sidecar.api_url
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=0)
            await producer.start()
            topic = settings.kafka.input_topics[0]
            out = producer
            partitions = len(await producer.partitions_for(topic))

            async def send(events: Sequence[wire.Event]) -> None:
                # keyed by account (riskguard.publish); the demo's riskguard runs in single
                # mode and reads every partition, so reference data goes to one partition
                # (a group-mode feed sends it to every partition: broadcast=True)
                await publish(
                    out, topic, events, partitions=partitions, broadcast=False, wait=False
                )
                report.events_produced += len(events)

            sim = TradingSim.live(seed=3, start_ns=time.time_ns())
            router = Router(sim, send, asyncio.Lock())
            sim.gate = router.check
            async with Gate(
                broker.bootstrap_servers,
                settings.kafka.control_topic,
                heartbeat_timeout_ms=1000,
                on_cancel=router.on_cancel,
                fetch_max_wait_ms=TANSU_FETCH_MAX_WAIT_MS,
            ) as gate:
                router.gate = gate
                while not gate.health() or gate.view.rules is None:
                    await asyncio.sleep(0.01)
                line(
                    f"riskguard ready: {len(sidecar.limits.rules)} rules from the example "
                    "limits; gate heartbeat fresh, per-order rules received"
                )
                api = report.api
                line(f"API {api}   metrics {api}/metrics   status {api}/v1/status")
                await _open(sidecar, sim, send, producer, report, line)
                await Desk(sidecar, gate, sim, router, report, line).trade(duration_s, trials)
                await _settle(sidecar, sim, router, producer, report, line)
        finally:  # Ctrl-C included: every client closed before the broker stops
            if producer is not None:
                await producer.stop()
            if sidecar.phase == "running":
                await sidecar.stop()
            else:
                await sidecar.close()
    return report


async def _applied(sidecar: Sidecar, n: int, timeout_s: float = 30.0) -> bool:
    """Wait until riskguard has applied ``n`` events (False on timeout)."""
    deadline = time.monotonic() + timeout_s
    while sidecar.engine.events_applied < n:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _open(
    sidecar: Sidecar,
    sim: TradingSim,
    send: Send,
    producer: AIOKafkaProducer,
    report: DemoReport,
    line: Line,
) -> None:
    """Start of day: reference data and opening marks, then the carried book."""
    ts = time.time_ns()
    heartbeat = wire.Heartbeat(ts=ts, source="router-1")
    refdata = reference_data(ts, sim.symbols)
    await send([heartbeat, *refdata, *sim.opening_marks(ts)])
    await producer.flush()
    await _applied(sidecar, report.events_produced)
    book = sim.open_book(time.time_ns())
    await send(book)
    await producer.flush()
    await _applied(sidecar, report.events_produced)
    report.instruments = sum(isinstance(e, wire.Instrument) for e in refdata)
    report.opening_positions = len(book)
    fut = next(p for p in book if p.symbol == FESX.symbol)
    mark = sim.price(FESX.symbol)
    # booked at its cost like a trade, it is valued at the mark from the next epoch on
    expected = abs(fut.qty) * mark * FESX.multiplier * FX_OPEN
    deadline = time.monotonic() + 3.0
    while abs(_gross(sidecar, fut.account) - expected) > 0.01 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    line(
        f"reference data: {report.instruments} instruments, {FESX.symbol} x{FESX.multiplier:g} "
        f"in {FESX.currency} on {FESX.venue}, {FESX.currency} at {FX_OPEN} USD; opening marks"
    )
    line(
        f"opening book: {len(book)} positions carried; riskguard values account:{fut.account}'s "
        f"{fut.qty:+g} {FESX.symbol} at {_gross(sidecar, fut.account):,.2f} USD gross "
        f"({abs(fut.qty):g} x {mark:,g} x {FESX.multiplier:g} x {FX_OPEN})"
    )


def _gross(sidecar: Sidecar, account: str) -> float:
    """riskguard's gross notional of an account, in the base currency."""
    return sidecar.engine.scope_values(f"account:{account}")["gross_notional"]


class Desk:
    """The trading loop: steps the simulator, injects the fat finger, the FX move and
    the runaways, follows riskguard's transitions and the gate, resumes between trials."""

    def __init__(
        self,
        sidecar: Sidecar,
        gate: Gate,
        sim: TradingSim,
        router: Router,
        report: DemoReport,
        line: Line,
    ) -> None:
        self.sidecar, self.gate, self.sim, self.router = sidecar, gate, sim, router
        self.report, self.line = report, line
        self.seen = 0  # transitions already followed
        self.alerted: set[str] = set()  # rules whose first alert the timeline showed
        self.fx_before: tuple[float, float, int] | None = None  # FESX lots, gross, when to look
        self.deadline_ns = report.cancel_deadline_ms * MS
        router.on_refusal = self._refused

    @property
    def trial(self) -> Trial | None:
        return self.report.trials[-1] if self.report.trials else None

    def _refused(self, ticket: Ticket, verdict: Verdict, ns: int) -> None:
        trial = self.trial
        if ticket.strategy == "smars" and trial and trial.halt and trial.first_refusal_ns is None:
            trial.first_refusal_ns = ns
            self.line(f"gate refused a smars order before sending: {verdict.reason}")

    async def trade(self, duration_s: float, trials: int) -> None:
        sim, router = self.sim, self.router
        start = time.time_ns()
        end = start + int(duration_s * 1e9)
        sim.runaway_at_ns = start + (int(duration_s * 0.4 * 1e9) if trials == 1 else 2_000 * MS)
        fat_at = start + int(min(1.0, duration_s * 0.1) * 1e9)
        fx_at: int | None = start + int(duration_s * 0.6 * 1e9)
        fat_done = False
        self.line(
            f"simulated trading system: {len(LIVE_STRATEGIES)} strategies, {len(sim.symbols)} "
            "symbols on 4 venues; its router calls gate.check() before every order"
        )
        while True:
            now = time.time_ns()
            if now >= end + 5_000 * MS or (now >= end and self._settled(trials)):
                break
            self._follow(now)
            async with router.lock:
                events = sim.step(now)
                # before any await: the halt can come back before the next loop (a loaded
                # machine), and a halt read with no trial open was lost for the trial
                self._note_runaway(now)
                if not fat_done and now >= fat_at:
                    fat_done = True
                    events += self._fat_finger(now)
                if fx_at is not None and now >= fx_at:
                    fx_at = None
                    events.append(self._fx_move(now))
                self.report.broker_reports += sum(
                    isinstance(e, wire.Position) and e.kind == "broker" for e in events
                )
                await router.send(events)
            self._follow(time.time_ns())
            self._fx_follow(time.time_ns())
            await self._maybe_resume(trials)
            await asyncio.sleep(max(0.0, (now + sim.step_ms * MS - time.time_ns()) / 1e9))
        self._follow(time.time_ns())
        if self.trial is not None:
            self._count_sent(self.trial)

    def _note_runaway(self, now: int) -> None:
        """Open a trial as soon as the simulated router runs away (its first step)."""
        sim, latest = self.sim, self.trial
        if sim.runaway and (latest is None or latest.runaway_ns != sim.runaway_at_ns):
            self.report.trials.append(Trial(runaway_ns=sim.runaway_at_ns or now))
            self.line(
                f"RUNAWAY #{len(self.report.trials)}: strategy smars stops counting child "
                "fills against its parents (Knight's SMARS router)"
            )

    def _fat_finger(self, now: int) -> list[wire.Event]:
        account, strategy, symbol = TRADER
        typo = self.sim.manual(account, strategy, symbol, "buy", TYPED, now)
        if typo:
            self.report.fat_finger_sent += 1
            self.line(f"FAT FINGER SENT: {TYPED:,.0f} {symbol} went out")
            return typo
        assert self.router.last_refusal is not None  # the typo was just refused
        _, verdict = self.router.last_refusal
        self.report.fat_finger_reason = verdict.reason
        self.line(
            f"fat finger: a trader types {TYPED:,.0f} {symbol} instead of {MEANT:,.0f}; "
            f"gate.check() refused it before sending: {verdict.reason}"
        )
        meant = self.sim.manual(account, strategy, symbol, "buy", MEANT, now)
        self.line(f"the trader re-enters {MEANT:,.0f} {symbol}: {'sent' if meant else 'refused'}")
        return meant

    def _fesx(self) -> tuple[float, float]:
        """riskguard's FESX position of the futures account, and the account's gross (USD)."""
        account = LIVE_STRATEGIES["sx5e-hedge"][0]
        held = self.sidecar.engine.positions().get((f"account:{account}", f"symbol:{FESX.symbol}"))
        return (held[0] if held else 0.0), _gross(self.sidecar, account)

    def _fx_move(self, now: int) -> wire.Fx:
        self.report.fx_moves += 1
        self.fx_before = (*self._fesx(), now + 500 * MS)
        self.line(
            f"fx: {FESX.currency} moves {FX_OPEN} -> {FX_MOVED} USD; riskguard revalues every "
            f"{FESX.currency} position and working order"
        )
        return wire.Fx(ts=now, currency=FESX.currency, rate=FX_MOVED)

    def _fx_follow(self, now: int) -> None:
        if self.fx_before is None or now < self.fx_before[2]:
            return
        qty, gross, _ = self.fx_before
        self.fx_before = None
        after_qty, after = self._fesx()
        if not (qty and after_qty):
            self.line(f"after the fx move: the {FESX.symbol} account was flat, nothing to revalue")
            return
        self.line(
            f"after the fx move, riskguard values one {FESX.symbol} lot at "
            f"{after / abs(after_qty):,.2f} USD (was {gross / abs(qty):,.2f} at {FX_OPEN}): "
            f"price x {FESX.multiplier:g} x rate"
        )

    def _settled(self, trials: int) -> bool:
        """Every runaway asked for has started, and the last was halted and judged (its
        cancels closed or due). Until then the demo runs on past its duration (at most
        5 s): on a slow machine the last runaway may start, or be halted, late."""
        trial = self.trial
        return (
            len(self.report.trials) >= trials
            and trial is not None
            and trial.halt is not None
            and trial.working_after_deadline is not None
        )

    async def _maybe_resume(self, trials: int) -> None:
        trial = self.trial
        if (
            trial is None
            or trial.halt is None
            or trial.gate_saw_ns is None
            or trial.resumed_ns is not None
            or len(self.report.trials) >= trials
        ):
            return
        now = time.time_ns()
        done = trial.riskguard_confirmed and trial.working_after_deadline is not None
        overdue = now > trial.halt.decided_ns + self.deadline_ns + 2_000 * MS
        if not (done and now - trial.gate_saw_ns >= 200 * MS) and not overdue:
            return
        await self.sidecar.manual("resume", RUNAWAY, "demo", f"trial {len(self.report.trials)}")
        trial.resumed_ns = time.time_ns()
        self._count_sent(trial)
        self.sim.restart_runaway(time.time_ns() + 300 * MS)

    def _count_sent(self, trial: Trial) -> None:
        """Runaway orders the router decided to send after the gate held the halt, and
        between the halt's decision and then (judged on stamps, not wall-clock races)."""
        if trial.halt is None or trial.gate_saw_ns is None:
            return
        until = trial.resumed_ns or time.time_ns()
        sent = [ns for ns, strategy, ok in self.router.decisions if ok and strategy == "smars"]
        trial.sent_after_halt = sum(1 for ns in sent if trial.gate_saw_ns < ns < until)
        trial.sent_before_gate_held = sum(
            1 for ns in sent if trial.halt.decided_ns < ns <= trial.gate_saw_ns
        )

    # following riskguard ------------------------------------------------------------
    def _follow(self, now: int) -> None:
        """Note new transitions, the gate holding the halt, its cancel request and the
        scope's orders closing."""
        for tr in self.report.transitions[self.seen :]:
            trial = self.trial
            if tr.scope == RUNAWAY and tr.to == "HALTED" and trial and trial.halt is None:
                trial.halt = tr
                self.line(
                    f"HALT decided: {tr.scope} {tr.from_} -> {tr.to} ({evidence(tr)}); "
                    f"{(tr.decided_ns - tr.ts) / MS:.2f} ms after the offending event"
                )
            elif tr.kind == "alert" and (tr.rule or "") not in self.alerted:
                self.alerted.add(tr.rule or "")
                self.line(f"alert: {tr.scope}: {evidence(tr)} (more of it: in the summary)")
            elif tr.kind == "auto":
                self.line(f"transition: {tr.scope} {tr.from_} -> {tr.to} on rule {tr.rule}")
        self.seen = len(self.report.transitions)
        trial = self.trial
        if trial is None or trial.halt is None or trial.resumed_ns is not None:
            return
        halt = trial.halt
        if trial.gate_saw_ns is None and self.gate.state(RUNAWAY) == "HALTED":
            trial.gate_saw_ns = self.gate.seen_ns.get(RUNAWAY, now)
            self.line(
                f"gate holds the halt: {(trial.gate_saw_ns - halt.ts) / MS:.2f} ms after the "
                "offending event"
            )
        parts = self.router.parts(halt.id)
        if trial.cancel_request_ns is None and parts:
            trial.cancel_request_ns = parts[0].received_ns
            named = sum(len(p.named) for p in parts)
            self.line(
                f"CANCEL REQUEST for {halt.scope}: {named} working order(s) named; "
                f"on_cancel called {trial.halt_to_cancel_request_ms:.2f} ms after the halt"
            )
        if trial.gate_saw_ns is None or trial.cancel_request_ns is None:
            return
        self._judge(trial, now)

    def _judge(self, trial: Trial, now: int) -> None:
        """The halted scope's orders: all closed yet? still working at the deadline?"""
        assert trial.halt is not None and trial.cancel_request_ns is not None
        halt = trial.halt
        cutoff = trial.resumed_ns or now
        lives = [
            life
            for life in self.sim.book.lives.values()
            if life.sent_ns <= cutoff
            and (life.closed_ns is None or life.closed_ns > halt.decided_ns)
            and life.in_scope(halt.scope)
        ]
        due = halt.decided_ns + self.deadline_ns
        closed = all(life.closed_ns is not None for life in lives)
        if trial.all_cancelled_ns is None and closed:
            parts = self.router.parts(halt.id)
            trial.working_at_halt = sum(life.working_at(halt.decided_ns) for life in lives)
            trial.named = sum(len(p.named) for p in parts)
            trial.unnamed = sum(len(p.unnamed) for p in parts)
            trial.too_late = sum(len(p.too_late) for p in parts)
            trial.all_cancelled_ns = max(
                (life.closed_ns or 0 for life in lives), default=trial.cancel_request_ns
            )
            self.line(
                f"LAST ORDER CLOSED: {trial.working_at_halt} {halt.scope} order(s) were working "
                f"at the halt; the router cancelled {trial.named} named + {trial.unnamed} sent "
                f"while the halt was in flight ({trial.too_late} filled first); none left "
                f"working {trial.halt_to_all_cancelled_ms:.2f} ms after the halt"
            )
        if trial.working_after_deadline is None and (closed or now >= due):
            trial.working_after_deadline = sum(
                1 for life in lives if life.closed_ns is None or life.closed_ns > due
            )
        if not trial.riskguard_confirmed and halt.scope not in self.sidecar.cancels.requests:
            trial.riskguard_confirmed = True
            self.line(
                f"riskguard confirms: every order it named for {halt.scope} has closed "
                f"(cancel deadline {self.report.cancel_deadline_ms:,} ms, no page)"
            )


async def _settle(
    sidecar: Sidecar,
    sim: TradingSim,
    router: Router,
    producer: AIOKafkaProducer,
    report: DemoReport,
    line: Line,
) -> None:
    """After trading: everything applied, positions reconciled with the broker, counts."""
    await producer.flush()
    applied = await _applied(sidecar, report.events_produced, timeout_s=15.0)
    report.orders_sent, report.orders_refused = sim.stats.sent, sim.stats.refused
    report.refused_by_cause, report.check_ns = router.refused, router.check_ns
    report.bad_events = sidecar.bad_events
    report.rule_utilisation = {
        p.rule.name: None if p.utilisation is None else round(p.utilisation, 3)
        for p in sidecar.engine.peaks()
    }
    theirs: dict[tuple[str, str], float] = {}
    for (account, _, symbol), qty in sim.book.positions.items():
        theirs[account, symbol] = round(theirs.get((account, symbol), 0.0) + qty, 9)
    ours = {
        (owner.partition(":")[2], symbol.partition(":")[2]): qty
        for (owner, symbol), (qty, _, _) in sidecar.engine.positions().items()
        if owner.startswith("account:")
    }
    report.positions_reconciled = applied and all(
        ours.get(key, 0.0) == qty for key, qty in theirs.items()
    )
    line(
        f"broker: {report.broker_reports:,} position reports (a drop copy after each fill, "
        f"the whole book every 5 s); riskguard's positions equal the broker's: "
        f"{'yes' if report.positions_reconciled else 'NO'}"
    )
