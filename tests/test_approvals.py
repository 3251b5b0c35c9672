"""Four-eyes requests on their own: who may approve, expiry, voiding, one per scope."""

from __future__ import annotations

from typing import Any

import pytest

from riskguard.control.approvals import ApprovalError, FourEyes
from riskguard.control.users import Identity
from riskguard.vocabulary import Transition

ALICE = Identity("alice", "risk-admin")
BOB = Identity("bob", "risk-admin")
S = 1_000_000_000


class Trail:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []

    def record(self, kind: str, body: Any) -> None:
        self.records.append((kind, body))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def trail() -> Trail:
    return Trail()


@pytest.fixture
def desk(clock: Clock, trail: Trail) -> FourEyes:
    return FourEyes(("firm", "account"), 600.0, trail, clock)


def breach(scope: str, to: str = "HALTED", kind: str = "auto") -> Transition:
    return Transition(
        id=f"{scope}@1:{to}",
        scope=scope,
        from_="REDUCE_ONLY",
        to=to,
        kind=kind,
        ts=1,
        decided_ns=1,
        rule="gross" if kind == "auto" else None,
        operator="olga" if kind == "manual" else None,
    )


def test_levels(desk: FourEyes) -> None:
    assert desk.needs_approval("firm") and desk.needs_approval("account:A")
    assert not desk.needs_approval("strategy:s") and not desk.needs_approval("symbol:X")


def test_only_another_person_approves(desk: FourEyes, trail: Trail) -> None:
    req = desk.request("firm", ALICE, "venue back", lifts="firm@1:HALTED")
    with pytest.raises(ApprovalError) as same:
        desk.approve(req.request_id, ALICE, "me")
    assert same.value.status == 403
    assert desk.approve(req.request_id, BOB, "checked") == req
    assert desk.pending() == []
    with pytest.raises(ApprovalError) as twice:
        desk.approve(req.request_id, BOB, "again")
    assert twice.value.status == 409 and "approved by bob" in twice.value.message
    events = [(b["event"], b.get("by")) for _, b in trail.records]
    assert events == [("requested", "alice"), ("approved", "bob")]


def test_one_pending_request_per_scope(desk: FourEyes) -> None:
    first = desk.request("account:A", ALICE, "x", None)
    with pytest.raises(ApprovalError) as caught:
        desk.request("account:A", BOB, "y", None)
    assert caught.value.status == 409 and first.request_id in caught.value.message
    desk.request("account:B", BOB, "y", None)  # another scope is fine
    assert [p.scope for p in desk.pending()] == ["account:A", "account:B"]


def test_requests_expire(desk: FourEyes, clock: Clock) -> None:
    req = desk.request("firm", ALICE, "x", None)
    clock.now += 599 * S
    assert desk.pending() == [req]
    clock.now += 1 * S
    assert desk.pending() == []
    with pytest.raises(ApprovalError, match="expired"):
        desk.approve(req.request_id, BOB, "late")


@pytest.mark.parametrize(
    ("tr", "voided"),
    [
        (breach("firm"), "firm went HALTED on rule gross"),
        (breach("firm", kind="manual"), "firm went HALTED by olga"),
        (breach("firm", to="REDUCE_ONLY"), "firm went REDUCE_ONLY"),
        (breach("account:A"), None),  # another scope
        (breach("firm", to="ACTIVE", kind="manual"), None),  # a resume is no breach
    ],
)
def test_a_breach_or_halt_of_the_scope_voids_its_request(
    desk: FourEyes, tr: Transition, voided: str | None
) -> None:
    req = desk.request("firm", ALICE, "x", None)
    desk.on_transition(tr)
    if voided is None:
        assert desk.pending() == [req]
        return
    assert desk.pending() == []
    with pytest.raises(ApprovalError) as caught:
        desk.approve(req.request_id, BOB, "ok")
    assert caught.value.status == 409 and voided in caught.value.message


def test_unknown_and_withdrawn_requests(desk: FourEyes) -> None:
    with pytest.raises(ApprovalError) as caught:
        desk.approve("r-nope", BOB, "x")
    assert caught.value.status == 404
    req = desk.request("firm", ALICE, "x", None)
    desk.withdraw(req.request_id, ALICE, "changed my mind")
    with pytest.raises(ApprovalError, match="withdrawn by alice: changed my mind"):
        desk.approve(req.request_id, BOB, "x")
