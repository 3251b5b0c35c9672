"""What the live demo measured: one :class:`Trial` per runaway, and the summary (``--json``).

Every count here is judged after the fact from timestamps the demo recorded (the
venue's book of order lives, the router's stamped decisions, the gate's ``seen_ns``),
never by racing the wall clock, so a loaded machine changes the latencies but not the
verdicts.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from riskguard.ingest.cancels import INCOMPLETE
from riskguard.vocabulary import Transition

MS = 1_000_000


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 (median), p99 (nearest rank) and max, rounded to 3 decimals; None when empty."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


@dataclass
class Trial:
    """One runaway, from its start to its orders all closed (times: wall clock, ns).

    ``sent_after_halt``: runaway orders the router decided to send after the gate held
    the halt (must be 0); ``sent_before_gate_held``: those decided between the halt's
    decision and the gate reading it (the propagation gap). ``working_at_halt``: the
    halted scope's orders working at the venue when the halt was decided;
    ``working_after_deadline``: those of them (and of the gap) still working
    ``cancel_deadline_ms`` later (None until judged). ``named``, ``unnamed``,
    ``too_late``: orders riskguard's request named, the router's own it did not name,
    and cancels that came after a fill. ``riskguard_confirmed``: riskguard saw every
    order it named close.
    """

    runaway_ns: int
    halt: Transition | None = None
    gate_saw_ns: int | None = None
    first_refusal_ns: int | None = None
    resumed_ns: int | None = None
    sent_after_halt: int = 0
    sent_before_gate_held: int = 0
    working_at_halt: int = 0
    working_after_deadline: int | None = None
    cancel_request_ns: int | None = None
    all_cancelled_ns: int | None = None
    named: int = 0
    unnamed: int = 0
    too_late: int = 0
    riskguard_confirmed: bool = False

    def _since_halt(self, ns: int | None) -> float | None:
        return None if self.halt is None or ns is None else (ns - self.halt.decided_ns) / MS

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

    @property
    def halt_to_cancel_request_ms(self) -> float | None:
        """Halt decided to the router's ``on_cancel`` receiving its request."""
        return self._since_halt(self.cancel_request_ns)

    @property
    def halt_to_all_cancelled_ms(self) -> float | None:
        """Halt decided to the last of the scope's orders closed at the venue."""
        return self._since_halt(self.all_cancelled_ns)


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
    refused_by_cause: Counter[str] = field(default_factory=Counter)
    check_ns: list[int] = field(default_factory=list)
    fat_finger_sent: int = 0
    fat_finger_reason: str = ""
    instruments: int = 0
    opening_positions: int = 0
    fx_moves: int = 0
    broker_reports: int = 0
    positions_reconciled: bool | None = None
    bad_events: int = 0
    cancel_deadline_ms: int = 0
    rule_utilisation: dict[str, float | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Percentiles over trials, plus counts."""

        def over(name: str) -> dict[str, float | None]:
            values = [getattr(t, name) for t in self.trials]
            return percentiles([v for v in values if v is not None])

        judged = [t.working_after_deadline for t in self.trials if t.halt is not None]
        alerts: dict[str, Counter[str]] = {}
        for t in self.transitions:
            if t.kind == "alert":
                alerts.setdefault(t.rule or "", Counter())[t.scope] += 1
        return {
            "broker": self.broker,
            "api": self.api,
            "metrics_url": f"{self.api}/metrics",
            "status_url": f"{self.api}/v1/status",
            "trials": len(self.trials),
            "halted_trials": sum(t.halt is not None for t in self.trials),
            "halt_rules": sorted({t.halt.rule or "" for t in self.trials if t.halt}),
            "event_to_halt_ms": over("event_to_halt_ms"),
            "event_to_gate_ms": over("event_to_gate_ms"),
            "runaway_orders_sent_after_halt": sum(t.sent_after_halt for t in self.trials),
            "runaway_orders_sent_before_gate_held": sum(
                t.sent_before_gate_held for t in self.trials
            ),
            # issue 11: the kill that kills
            "working_orders_at_halt": sum(t.working_at_halt for t in self.trials),
            "working_orders_after_deadline": (
                None if None in judged else sum(w or 0 for w in judged)
            ),
            "cancel_deadline_ms": self.cancel_deadline_ms,
            "halt_to_cancel_request_ms": over("halt_to_cancel_request_ms"),
            "halt_to_all_cancelled_ms": over("halt_to_all_cancelled_ms"),
            "cancelled_on_request": {
                "named": sum(t.named for t in self.trials),
                "not_named_in_flight": sum(t.unnamed for t in self.trials),
                "too_late_filled": sum(t.too_late for t in self.trials),
            },
            "riskguard_confirmed_cancels": sum(t.riskguard_confirmed for t in self.trials),
            "cancel_incomplete_alerts": sum(alerts.get(INCOMPLETE, Counter()).values()),
            "fat_finger_sent": self.fat_finger_sent,
            "fat_finger_refusal": self.fat_finger_reason,
            "pre_trade_refused": sum(self.refused_by_cause.values()),
            "pre_trade_refused_by_cause": dict(sorted(self.refused_by_cause.items())),
            "gate_check_us": percentiles([ns / 1000 for ns in self.check_ns]),
            "gate_checks": len(self.check_ns),
            # issue 13: exposure as risk officers count it
            "instruments": self.instruments,
            "opening_positions": self.opening_positions,
            "fx_moves": self.fx_moves,
            "broker_reports": self.broker_reports,
            "position_breaks": sum(
                1
                for t in self.transitions
                if t.kind == "alert" and t.metric == "position_break_qty"
            ),
            "positions_reconciled": self.positions_reconciled,
            "alerts": {rule: dict(sorted(by.items())) for rule, by in sorted(alerts.items())},
            "warnings": sum(
                1 for t in self.transitions if t.kind == "alert" and t.level is not None
            ),
            "rule_utilisation": self.rule_utilisation,
            "orders_sent": self.orders_sent,
            "orders_refused": self.orders_refused,
            "events_produced": self.events_produced,
            "bad_events": self.bad_events,
        }
