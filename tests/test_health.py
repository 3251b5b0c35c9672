"""Broker reachability edges, on a fake monotonic clock."""

from __future__ import annotations

import time

from riskguard.ingest.health import BrokerWatch, Liveness
from riskguard.notify import sinks
from riskguard.settings import NotifierSettings


def test_lost_after_budget_then_recovered() -> None:
    w = BrokerWatch(budget_ms=3000)
    w.observe(True, now_mono=100.0)
    assert w.check(now_mono=102.9) is None and w.reachable
    assert w.observe(False, now_mono=103.0) is None  # exactly at the budget: not yet
    assert w.check(now_mono=103.2) == "lost" and not w.reachable
    assert w.check(now_mono=110.0) is None  # one edge per outage
    assert w.observe(True, now_mono=111.0) == "recovered" and w.reachable
    alert = BrokerWatch(1000).alert("lost", "ACTIVE")
    assert (alert.kind, alert.rule, alert.from_, alert.to) == (
        "alert",
        "broker-unreachable",
        "ACTIVE",
        "ACTIVE",
    )


def test_recovery_resolves_the_unreachable_incident_in_every_notifier() -> None:
    w = BrokerWatch(budget_ms=1000)
    lost = w.alert("lost", "ACTIVE")
    back = w.alert("recovered", "ACTIVE")
    assert (back.rule, back.ends) == ("broker-recovered", lost.id)
    assert w.alert("recovered", "ACTIVE").ends is None  # nothing left to end
    pd = NotifierSettings(kind="pagerduty", url="http://pd")
    assert sinks.build(pd, lost, "k", "rg")["event_action"] == "trigger"
    assert sinks.build(pd, back, "k", "rg") == {
        "routing_key": "k",
        "event_action": "resolve",
        "dedup_key": lost.id,
    }
    am = NotifierSettings(kind="alertmanager", url="http://am")
    (fire,), (end,) = sinks.build(am, lost, None, "rg"), sinks.build(am, back, None, "rg")
    assert end["labels"] == fire["labels"] and fire["labels"]["severity"] == "warning"
    assert "endsAt" in end and "endsAt" not in fire
    assert sinks.slack(back)["text"].startswith(":white_check_mark:")


def test_alive_while_starting_then_only_while_polling() -> None:
    live = Liveness(stall_budget_ms=50)
    time.sleep(0.08)
    assert live.healthy()  # still starting (compiling, connecting): alive, not stalled
    live.begin()
    assert live.healthy()
    time.sleep(0.08)
    assert not live.healthy()  # the loop started and has not polled within the budget
    live.polled()
    assert live.healthy()


def test_withheld_heartbeats_are_not_the_brokers_silence() -> None:
    w = BrokerWatch(budget_ms=1000)
    w.observe(True, now_mono=100.0)
    w.withheld(now_mono=105.0)  # a stalled loop tried no heartbeat until now
    assert w.check(now_mono=105.9) is None and w.reachable
    assert w.check(now_mono=106.1) == "lost"  # heartbeats tried again, none taken
    w.withheld(now_mono=107.0)  # a loss already seen stays until a publish succeeds
    assert not w.reachable and w.observe(True, now_mono=107.1) == "recovered"


def test_riskguard_not_running_is_not_the_brokers_silence() -> None:
    """A SIGSTOP, a VM pause or a blocked event loop silences every publish; the watch
    looks every tick, so a gap between two looks longer than the budget is riskguard's
    own silence (counted, logged), and the broker gets its whole budget again."""
    w = BrokerWatch(budget_ms=3000)
    w.observe(True, now_mono=100.0)
    for t in (100.1, 100.2):
        assert w.check(now_mono=t) is None
    assert w.check(now_mono=107.3) is None and w.reachable  # stopped 7.1 s: not lost
    assert (w.pauses, round(w.last_pause_ms)) == (1, 7100)
    assert w.observe(False, now_mono=107.4) is None  # a publish failing after the pause
    t = 107.4
    while t < 110.2:  # looked at every tick: the broker's own silence from 107.3 on
        t += 0.1
        assert w.check(now_mono=t) is None
    assert w.check(now_mono=110.45) == "lost" and w.pauses == 1
