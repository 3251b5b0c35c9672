"""Active-active, without a broker: the ids two instances agree on, adoption of another
instance's transitions, four-eyes steps shared between two APIs, and the follower
(:class:`riskguard.ingest.peers.Peers`) acting on control records in order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from riskguard.control.approvals import ApprovalError, FourEyes
from riskguard.control.records import (
    ApprovalRecord,
    CancelRecord,
    HeartbeatRecord,
    encode_record,
    heartbeat_message,
    state_message,
)
from riskguard.control.users import Identity
from riskguard.control.view import Instant
from riskguard.engine import Engine
from riskguard.ingest import peers as peers_module
from riskguard.ingest.cancels import CancelTracker, incident_id
from riskguard.ingest.peers import Peers
from riskguard.journal import HaltJournal
from riskguard.limits import parse
from riskguard.metrics import Metrics
from riskguard.testing import FakeClock
from riskguard.vocabulary import Transition
from tests.builders import MS, T0, fill, heartbeat, new, parent, rules_toml

OVERFILL = rules_toml(
    'name = "overfill"\nmetric = "parent_overfill_ratio"\nscope = "strategy"\nmax = 1.0\n'
    'action = "halt"'
)
SILENCE = rules_toml(
    'name = "router-silent"\nmetric = "feed_silence_ms"\nscope = "firm"\n'
    'match = { source = "router-1" }\nmax = 2000\naction = "halt"'
)
RUNAWAY = [parent("P1", 100), *[fill(f"c{i}", t=i * MS, qty=30, parent_id="P1") for i in range(4)]]
ALICE = Identity("alice", "risk-admin")
BOB = Identity("bob", "risk-admin")


def engine(text: str, now_ms: int, instance: str | None = None) -> tuple[Engine, FakeClock]:
    clock = FakeClock(T0 + now_ms * MS)
    e = Engine(parse(text), clock=clock)
    e.killswitch.instance = instance
    return e, clock


def states(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if not t.is_alert]


# ids ----------------------------------------------------------------------------------
def test_two_instances_name_the_same_breach_alike_whatever_their_clocks_and_batches() -> None:
    a, _ = engine(OVERFILL, 10, "rg-1")
    b, _ = engine(OVERFILL, 37, "rg-2")
    (ha,) = states(a.apply(RUNAWAY).transitions)
    (hb,) = states(b.apply(RUNAWAY[:2]).transitions + b.apply(RUNAWAY[2:]).transitions)
    # the fourth fill (t = 3 ms) breached: the id names its time, not the decision's
    assert ha.id == hb.id == f"strategy:S@{T0 + 3 * MS}:HALTED"
    assert (ha.decided_ns, hb.decided_ns) == (T0 + 10 * MS, T0 + 37 * MS)
    assert (ha.instance, hb.instance) == ("rg-1", "rg-2")


def test_a_silence_is_named_after_when_it_began_and_a_halt_after_a_resume_anew() -> None:
    a, clock_a = engine(SILENCE, 0, "rg-1")
    b, clock_b = engine(SILENCE, 0, "rg-2")
    for e in (a, b):
        e.apply([heartbeat("router-1")])
    (ha,) = states(a.tick(T0 + 2100 * MS))
    (hb,) = states(b.tick(T0 + 2170 * MS))  # another clock, ticking at other moments
    assert ha.id == hb.id == f"firm@{T0}:HALTED"
    clock_a.now_ns = T0 + 3000 * MS
    resume = a.killswitch.resume("firm", "alice", "router restarting")
    assert resume is not None and resume.ends == ha.id
    assert b.killswitch.adopt(resume) == "adopted"
    # the feed is still silent since T0: both halt again, under a new id of their own
    (again_a,) = states(a.tick(T0 + 3100 * MS))
    clock_b.now_ns = T0 + 3200 * MS
    (again_b,) = states(b.tick(T0 + 3200 * MS))
    assert again_a.id == again_b.id == f"firm@{T0 + 3000 * MS}:HALTED" != ha.id


# adoption -----------------------------------------------------------------------------
def other(scope: str, to: str, kind: str, ts: int, **evidence: Any) -> Transition:
    return Transition(
        id=f"{scope}@{ts}:{to}",
        scope=scope,
        from_="ACTIVE",
        to=to,
        kind=kind,
        ts=ts,
        decided_ns=ts + MS,
        instance="rg-2",
        **evidence,
    )


def test_the_strictest_state_wins_and_only_a_resume_lowers_it() -> None:
    e, _ = engine(OVERFILL, 100, "rg-1")
    ks = e.killswitch
    seen: list[Transition] = []
    ks.subscribe(seen.append)
    ro = other("account:A", "REDUCE_ONLY", "auto", T0, rule="gross")
    assert ks.adopt(ro) == "adopted" and ks.state("account:A") == "REDUCE_ONLY"
    assert ks.adopt(ro) == "same" and seen == [ro]
    halt = other("account:A", "HALTED", "manual", T0 + MS, operator="olga", reason="drill")
    assert ks.adopt(halt) == "adopted" and ks.standing()["account:A"] is halt
    # an automatic state below ours, and a manual reduce-only, never lower it
    assert ks.adopt(ro) == "kept"
    later_ro = other("account:A", "REDUCE_ONLY", "manual", T0 + 5 * MS, operator="olga")
    assert ks.adopt(later_ro) == "kept" and ks.state("account:A") == "HALTED"
    # a resume that names it lifts it; breaches up to the resume are judged
    resume = other("account:A", "ACTIVE", "manual", T0 + 9 * MS, operator="alice", ends=halt.id)
    assert ks.adopt(resume) == "adopted" and ks.state("account:A") == "ACTIVE"
    sid = e.keys.find_scope("account:A")
    assert sid is not None and int(e.store.state.scopes["judged_ns"][sid]) == resume.decided_ns
    assert seen[-1] is resume and "account:A" not in ks.standing()
    # the same halt again, or an automatic one on evidence the resume judged, decided by
    # an instance that had not read the resume yet: stale
    assert ks.adopt(halt) == "kept" and ks.state("account:A") == "ACTIVE"
    judged_ro = other("account:A", "REDUCE_ONLY", "auto", T0 + 9 * MS, rule="gross")
    assert ks.adopt(judged_ro) == "kept" and ks.latest("account:A") is resume
    newer = other("account:A", "HALTED", "auto", T0 + 11 * MS, rule="gross")
    assert ks.adopt(newer) == "adopted" and ks.state("account:A") == "HALTED"


def test_a_resume_does_not_lift_a_halt_on_newer_evidence() -> None:
    e, _ = engine(OVERFILL, 100, "rg-1")
    ks = e.killswitch
    (halt,) = states(e.apply(RUNAWAY).transitions)  # decided here, on the fill at 3 ms
    stale = other("strategy:S", "ACTIVE", "manual", T0 + MS, operator="alice", ends="x@1:HALTED")
    assert ks.adopt(stale) == "kept" and ks.standing()["strategy:S"] is halt
    covering = other("strategy:S", "ACTIVE", "manual", T0 + 3 * MS, operator="alice", ends="y")
    assert ks.adopt(covering) == "adopted" and ks.state("strategy:S") == "ACTIVE"


def test_an_unknown_state_or_an_alert_changes_nothing() -> None:
    e, _ = engine(OVERFILL, 100)
    future = other("account:A", "FROZEN", "auto", T0)
    assert e.killswitch.adopt(future) == "unknown"
    assert e.killswitch.state("account:A") == "ACTIVE"


def test_scopes_never_seen_are_adopted_however_many() -> None:
    e, _ = engine(OVERFILL, 100)
    for i in range(300):  # past the scope records' capacity: they grow
        assert e.killswitch.adopt(other(f"account:N{i}", "HALTED", "manual", T0)) == "adopted"
    assert e.killswitch.state("account:N299") == "HALTED"


# four-eyes ----------------------------------------------------------------------------
class Trail:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []

    def record(self, kind: str, body: Any) -> None:
        self.records.append((kind, body))


class Desks:
    """Two APIs' four-eyes requests, each step of one relayed to the other by hand."""

    def __init__(self) -> None:
        self.now = T0
        self.out: dict[str, list[ApprovalRecord]] = {"rg-1": [], "rg-2": []}
        self.a = FourEyes(("firm",), 600.0, Trail(), lambda: self.now)
        self.b = FourEyes(("firm",), 600.0, Trail(), lambda: self.now)
        self.a.share("rg-1", self.out["rg-1"].append)
        self.b.share("rg-2", self.out["rg-2"].append)

    def deliver(self) -> None:
        for step in self.out["rg-1"]:
            self.b.mirror(step)
        for step in self.out["rg-2"]:
            self.a.mirror(step)
        self.out["rg-1"].clear()
        self.out["rg-2"].clear()


def test_a_request_made_on_one_api_is_approved_on_the_other() -> None:
    d = Desks()
    req = d.a.request("firm", ALICE, "venue back", "firm@1:HALTED")
    d.deliver()
    (mirrored,) = d.b.pending()
    assert mirrored.request_id == req.request_id and mirrored.instance == "rg-1"
    with pytest.raises(ApprovalError) as same_person:
        d.b.approve(req.request_id, ALICE, "me again")
    assert same_person.value.status == 403
    d.b.approve(req.request_id, BOB, "positions checked")
    d.deliver()
    assert d.a.pending() == [] and d.b.pending() == []
    with pytest.raises(ApprovalError, match="approved by bob") as ended:
        d.a.approve(req.request_id, BOB, "again")
    assert ended.value.status == 409
    kinds = [body["event"] for kind, body in d.a.audit.records if kind == "approval"]  # type: ignore[attr-defined]
    assert kinds == ["requested", "approved"]


def test_two_requests_for_one_scope_keep_the_first_on_both() -> None:
    d = Desks()
    first = d.a.request("firm", ALICE, "venue back", None)
    d.now += MS
    second = d.b.request("firm", BOB, "also back", None)
    d.deliver()
    assert [p.request_id for p in d.a.pending()] == [first.request_id]
    assert [p.request_id for p in d.b.pending()] == [first.request_id]
    with pytest.raises(ApprovalError, match="requested first"):
        d.b.approve(second.request_id, ALICE, "x")


def test_an_expired_or_ended_request_is_not_brought_back() -> None:
    d = Desks()
    req = d.a.request("firm", ALICE, "venue back", None)
    step = d.out["rg-1"][0]
    d.a.withdraw(req.request_id, BOB, "not yet")
    d.deliver()
    assert d.b.mirror(step) is False and d.b.pending() == []  # the request came again
    late = msgspec.structs.replace(step, request_id="r-late", expires_ns=d.now)
    assert d.b.mirror(late) is False and d.b.pending() == []


# the follower ---------------------------------------------------------------------------
class Reasserted:
    def __init__(self) -> None:
        self.sent: list[Transition] = []

    async def reassert(self, restored: Any, republish: Any) -> None:
        self.sent += list(republish)


def follower(tmp_path: Path) -> tuple[Peers, Engine, Reasserted, Trail]:
    e, _ = engine(OVERFILL, 100, "rg-1")
    e.apply([new("o1"), new("o2", t=MS, account="B", strategy="T")])
    trail = Trail()
    out = Reasserted()
    peers = Peers(
        "rg-1",
        e.killswitch,
        HaltJournal(tmp_path / "journal.jsonl"),
        trail,
        Metrics(),
        CancelTracker(e, Metrics()),
    )
    peers.join(out, [T0], lambda: e.limits.digest, None)
    return peers, e, out, trail


def value(tr: Transition) -> bytes:
    return state_message(tr)[1]


async def test_the_follower_adopts_others_ignores_its_own_and_reasserts(tmp_path: Path) -> None:
    peers, e, out, trail = follower(tmp_path)
    halt = other("account:A", "HALTED", "manual", T0, operator="olga", reason="drill")
    mine = msgspec.structs.replace(
        other("strategy:T", "HALTED", "manual", T0), instance="rg-1"
    )  # read back: ours, not latched here, so it must stay untouched
    await peers.receive([value(halt), value(mine), b"not json"])
    assert e.killswitch.state("account:A") == "HALTED"
    assert e.killswitch.state("strategy:T") == "ACTIVE"
    assert [t.id for t in HaltJournal(tmp_path / "journal.jsonl").load().values()] == [halt.id]
    (adopted,) = [body for kind, body in trail.records if kind == "adopted"]
    assert adopted["by_instance"] == "rg-2" and adopted["id"] == halt.id
    tracked = peers.cancels.requests["account:A"]  # type: ignore[attr-defined]
    assert tracked.halt_id == halt.id and tracked.named == 1  # o1 works in account A
    lower = other("account:A", "REDUCE_ONLY", "auto", T0 + 2 * MS, rule="gross")
    await peers.receive([value(lower)])
    assert out.sent == [halt] and peers.reasserted == 1
    assert e.killswitch.state("account:A") == "HALTED"


async def test_the_follower_reports_peers_and_a_second_process_under_its_name(
    tmp_path: Path,
) -> None:
    peers, _, _, _ = follower(tmp_path)
    at = Instant(T0 + 100 * MS, 0)
    other_beat = HeartbeatRecord(
        ts=T0, instance="rg-2", ready=True, interval_ms=250, limits_sha256="0" * 64
    )
    ours = HeartbeatRecord(ts=T0, instance="rg-1", ready=True, interval_ms=250)
    await peers.receive([heartbeat_message(other_beat)[1], heartbeat_message(ours)[1]], at)
    report = peers.status(Instant(T0 + 600 * MS, 500 * MS))
    (peer,) = report["peers"]
    assert peer["instance"] == "rg-2" and peer["live"] and peer["age_ms"] == 600.0
    assert not peer["limits_agree"] and report["instance_conflict"] is None
    assert not peers.status(Instant(T0 + 2100 * MS, 2000 * MS))["peers"][0]["live"]
    impostor = msgspec.structs.replace(ours, ts=T0 + MS)  # a heartbeat we never wrote
    await peers.receive([encode_record(impostor)], at)
    assert "another process heartbeats as 'rg-1'" in str(peers.status()["instance_conflict"])


class Asks:
    """A group member's outbox as the follower uses it: builds each request as the
    outbox does (tracked, tagged with the member) and keeps what it would publish."""

    def __init__(self, tracker: CancelTracker, source: str) -> None:
        self.tracker, self.source = tracker, source
        self.asked: list[CancelRecord] = []

    async def ask_cancels(self, transitions: Sequence[Transition]) -> None:
        for tr in transitions:
            self.asked += self.tracker.request(tr, self.source)


def member(tmp_path: Path) -> tuple[Peers, Engine, Asks]:
    """A group-mode follower ``rg-1`` holding o1 (account A) and o2 (account B)."""
    peers, e, _, _ = follower(tmp_path)
    tracker = peers.cancels
    assert isinstance(tracker, CancelTracker)
    peers.asks = asks = Asks(tracker, "rg-1")
    return peers, e, asks


async def test_a_group_member_asks_for_its_own_orders_in_another_members_halt(
    tmp_path: Path,
) -> None:
    peers, e, asks = member(tmp_path)
    halt = other("firm", "HALTED", "manual", T0, operator="olga", reason="drill")
    await peers.receive([value(halt)])
    assert e.killswitch.state("firm") == "HALTED"
    assert [(r.halt_id, r.source, r.part) for r in asks.asked] == [(halt.id, "rg-1", 0)]
    assert sorted(o.order_id for o in asks.asked[0].orders) == ["o1", "o2"]
    assert peers.cancels.requests["firm"].named == 2  # type: ignore[attr-defined]
    # the same halt read again (a re-publish) asks nothing more
    await peers.receive([value(halt)])
    assert len(asks.asked) == 1


async def test_a_group_member_asks_nothing_for_a_halt_lifted_in_the_same_records(
    tmp_path: Path,
) -> None:
    peers, e, asks = member(tmp_path)
    halt = other("account:A", "HALTED", "manual", T0, operator="olga", reason="drill")
    resume = other("account:A", "ACTIVE", "manual", T0 + MS, operator="alice", ends=halt.id)
    await peers.receive([value(halt), value(resume)])
    assert e.killswitch.state("account:A") == "ACTIVE"
    assert asks.asked == [] and peers.cancels.requests == {}  # type: ignore[attr-defined]
    ro = other("strategy:T", "REDUCE_ONLY", "auto", T0 + 2 * MS, rule="gross")
    escalated = other("strategy:T", "HALTED", "manual", T0 + 3 * MS, operator="olga")
    await peers.receive([value(ro), value(escalated)])
    assert [(r.halt_id, r.kind) for r in asks.asked] == [(escalated.id, "halt")]


async def test_a_group_member_holding_the_state_under_another_id_asks_under_theirs(
    tmp_path: Path,
) -> None:
    """Two members halting the firm at once each latch their own id; gates act on the
    latest record on the topic, so each asks for its orders under the other's id too."""
    peers, e, asks = member(tmp_path)
    mine = e.killswitch.halt("firm", "bob", "drill")
    assert mine is not None
    theirs = other("firm", "HALTED", "manual", T0 + MS, operator="olga", reason="drill")
    await peers.receive([value(theirs)])
    assert e.killswitch.standing()["firm"] is mine  # "same": our evidence stays
    assert [r.halt_id for r in asks.asked] == [theirs.id]
    same_id = msgspec.structs.replace(mine, instance="rg-2")  # both decided one id
    await peers.receive([value(same_id)])
    assert len(asks.asked) == 1


async def test_outside_group_mode_an_adopted_halt_is_only_tracked(tmp_path: Path) -> None:
    peers, e, _, _ = follower(tmp_path)
    assert peers.asks is None
    mine = e.killswitch.halt("firm", "bob", "drill")
    assert mine is not None
    theirs = other("firm", "HALTED", "manual", T0 + MS, operator="olga", reason="drill")
    halt = other("account:A", "HALTED", "manual", T0, operator="olga", reason="drill")
    await peers.receive([value(theirs), value(halt)])
    tracked = peers.cancels.requests  # type: ignore[attr-defined]
    assert list(tracked) == ["account:A"] and tracked["account:A"].halt_id == halt.id


def test_overdue_cancels_of_one_halt_raise_one_incident_id() -> None:
    clocks = (FakeClock(T0 + 1000 * MS), FakeClock(T0 + 1040 * MS))
    text = OVERFILL.replace("version = 1", "version = 1\ncancel_deadline_ms = 100")
    ids = []
    for clock in clocks:
        e = Engine(parse(text), clock=clock)
        tracker = CancelTracker(e, Metrics(), clock)
        e.apply([new("o1")])
        tr = e.killswitch.halt("account:A", "olga", "drill")
        assert tr is not None
        tracker.request(msgspec.structs.replace(tr, id="account:A@1:HALTED", ts=T0))
        clock.advance(ms=500)
        (alert,) = tracker.check()
        ids.append(alert.id)
    assert ids[0] == ids[1] == incident_id(T0, "account:A@1:HALTED")


async def test_a_peer_silent_past_the_bound_is_counted_gone_not_listed(tmp_path: Path) -> None:
    # a group member removed by scale-in (or an instance stopped for good) heartbeats no
    # more: listed as not live for PEER_GONE_MS, then only counted, most recent named first
    peers, _, _, _ = follower(tmp_path)
    bound_ms = peers_module.PEER_GONE_MS
    beats = [
        HeartbeatRecord(ts=T0 + i * MS, instance=f"rg-{i}", ready=True, interval_ms=250)
        for i in range(2, 9)
    ]
    await peers.receive([heartbeat_message(b)[1] for b in beats], Instant(T0 + 10 * MS, 0))
    early = peers.status(Instant(T0 + 10 * MS + (bound_ms - 1000) * MS, (bound_ms - 1000) * MS))
    assert [p["instance"] for p in early["peers"]] == [f"rg-{i}" for i in range(2, 9)]
    assert not any(p["live"] for p in early["peers"]) and early["peers_gone"]["count"] == 0
    fresh = HeartbeatRecord(ts=T0 + bound_ms * MS, instance="rg-3", ready=True, interval_ms=250)
    await peers.receive([heartbeat_message(fresh)[1]], Instant(T0 + bound_ms * MS, bound_ms * MS))
    late = peers.status(Instant(T0 + (bound_ms + 20) * MS, (bound_ms + 20) * MS))
    (listed,) = late["peers"]
    assert listed["instance"] == "rg-3" and listed["live"]
    gone = late["peers_gone"]
    assert gone["count"] == 6 and gone["after_ms"] == bound_ms
    assert gone["latest"] == ["rg-8", "rg-7", "rg-6", "rg-5", "rg-4"]  # the newest heard first
