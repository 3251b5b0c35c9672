"""Payloads for each alert sink. Pure functions of a transition: easy to test and reuse.

* PagerDuty Events API v2: ``dedup_key`` is the halt's (or alert's) transition id; a
  resume *resolves* the incident it ends, and so does a system alert that ends an
  earlier one (``cancel-complete`` ends ``cancel-incomplete``, ``broker-recovered``
  ends ``broker-unreachable``: its ``ends`` is that alert's id), and a rule's resolve
  (its alert or warning re-armed, ``kind = "resolve"``).
* Slack incoming webhook: one readable line.
* Alertmanager ``POST /api/v2/alerts``: a firing alert per halt or alert, ``endsAt``
  on the resume or the alert that ends it (same labels). The instance that decided is
  an annotation, not a label: two riskguard instances deciding the same halt (one id)
  post one Alertmanager alert, which either one's resume ends.

PagerDuty and Alertmanager therefore show one incident per halt however many
riskguard instances decided it; the generic webhook carries the transition's ``id``
for the receiver to do the same, and Slack posts a line per instance that decided.
* Generic JSON webhook: the transition itself (can be the trading system's own
  kill endpoint).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from riskguard.evidence import evidence
from riskguard.settings import NotifierSettings
from riskguard.vocabulary import Transition

ALERT_SEVERITY: Final = {
    "cancel-incomplete": "critical",
    "consume-stalled": "error",
    "reduce-only-breach": "critical",
    "sums-incomplete": "error",
    "topic-shape": "error",
}
"""System alerts above ``warning``: orders left working in a halted scope are the kill
switch failing at its job, and so is a reduce-only position grown by an order sent
after the decision; firm-wide sums not taken (group mode) leave cross-partition
rules unjudged; a control topic not compacted loses standing halts to retention; a
consume loop that stopped polling judges nothing and withholds its heartbeats."""
ENDED_BY: Final = {
    "cancel-complete": "cancel-incomplete",
    "broker-recovered": "broker-unreachable",
    "consume-recovered": "consume-stalled",
    "sums-complete": "sums-incomplete",
    "topic-shape-ok": "topic-shape",
}
"""Alerts that end an earlier one (by its id, in ``ends``), and the alert they end."""


def resolves(tr: Transition) -> bool:
    """``tr`` ends an earlier incident: a resume, a resolve (an alert or warning re-armed),
    or a system alert naming the alert it ends."""
    if tr.kind == "resolve":
        return True
    if tr.is_alert:
        return tr.ends is not None
    return tr.to == "ACTIVE"


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def summary(tr: Transition) -> str:
    """One line a person reads on a phone: the scope, what happened and why (the value
    with enough digits to differ from its limit, :func:`riskguard.evidence.evidence`);
    an alert that ends another says ``RESOLVED``."""
    if tr.kind == "manual":
        verb = "RESUMED" if tr.to == "ACTIVE" else tr.to
        return f"riskguard: {tr.scope} {verb} by {tr.operator}: {tr.reason}"
    what = ("RESOLVED" if tr.ends else "ALERT") if tr.is_alert else tr.to
    return f"riskguard: {tr.scope} {what} - {evidence(tr)}"


def severity(tr: Transition) -> str:
    """PagerDuty severity: halts are critical, and so is ``cancel-incomplete``; an alert
    that ends another has that one's severity (the same Alertmanager labels)."""
    if tr.is_alert:
        rule = tr.rule or ""
        return ALERT_SEVERITY.get(ENDED_BY.get(rule, rule), "warning")
    return "critical" if tr.to == "HALTED" else "error" if tr.to == "REDUCE_ONLY" else "info"


def pagerduty(tr: Transition, routing_key: str, source: str) -> dict[str, Any] | None:
    """Events API v2 body, or None when nothing should be sent."""
    if resolves(tr):
        if not tr.ends:
            return None
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": tr.ends}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": tr.id,
        "payload": {
            "summary": summary(tr)[:1024],
            "source": source,
            "severity": severity(tr),
            "timestamp": _iso(tr.decided_ns),
            "component": tr.scope,
            "group": tr.rule or "manual",
            "class": tr.metric or "manual",
            "custom_details": msgspec.to_builtins(tr),
        },
    }


def slack(tr: Transition) -> dict[str, Any]:
    """Incoming-webhook body."""
    icon = ":rotating_light:" if tr.to == "HALTED" else ":warning:"
    if resolves(tr):
        icon = ":white_check_mark:"
    return {"text": f"{icon} {summary(tr)}"}


def alertmanager(tr: Transition, source: str) -> list[dict[str, Any]]:
    """``/api/v2/alerts`` body: the alert for a halt (or alert), or its end."""
    ending = resolves(tr)
    alert_id = tr.ends if (ending and tr.ends) else tr.id
    labels = {
        "alertname": "RiskguardHalt" if not tr.is_alert else "RiskguardLimitAlert",
        "scope": tr.scope,
        "severity": "warning" if tr.kind == "resolve" else severity(tr),
        "halt_id": alert_id,
    }
    body: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": summary(tr), "rule": tr.rule or "manual", "instance": source},
        "startsAt": _iso(tr.decided_ns),
    }
    if ending:
        body["endsAt"] = _iso(tr.decided_ns)
        if not tr.is_alert:
            labels["severity"] = "critical"  # same label set as the firing alert it ends
    return [body]


def webhook(tr: Transition) -> dict[str, Any]:
    """The transition as JSON (the control-topic record's evidence)."""
    out: dict[str, Any] = msgspec.to_builtins(tr)
    return out


def build(
    cfg: NotifierSettings, tr: Transition, routing_key: str | None, source: str
) -> Any | None:
    """The body to POST to ``cfg.url`` for ``tr``, or None to skip."""
    if cfg.kind == "pagerduty":
        return pagerduty(tr, routing_key or "", source)
    if cfg.kind == "slack":
        return slack(tr)
    if cfg.kind == "alertmanager":
        return alertmanager(tr, source)
    return webhook(tr)
