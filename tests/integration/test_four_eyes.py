"""Four-eyes resume against a running sidecar: pending, approved by a second person,
refused to the same person, expired, withdrawn, voided by a new halt; both names kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from riskguard.brokers import BrokerKind
from riskguard.control.api import SHARE_WAIT_S
from riskguard.control.reader import read_to_end
from riskguard.control.view import ControlView
from riskguard.ingest.runtime import Sidecar
from riskguard.settings import Settings
from tests.integration.conftest import fresh_broker, local_settings
from tests.integration.people import audited, call, start, with_people
from tests.integration.test_sidecar import RUNAWAY, produce, wait_for

FIRM = {"scope": "firm", "reason": "venue outage"}


async def halted_firm(sidecar: Sidecar) -> None:
    status, _ = await call(sidecar, "POST", "/v1/halt", FIRM, "olga")
    assert status == 200 and sidecar.engine.killswitch.state("firm") == "HALTED"


async def ask(sidecar: Sidecar, who: str = "alice", scope: str = "firm") -> str:
    resume = {"scope": scope, "reason": "venue back, positions checked"}
    before = sidecar.engine.killswitch.state(scope)
    status, reply = await call(sidecar, "POST", "/v1/resume", resume, who)
    assert status == 202, reply
    assert reply["status"] == "pending" and reply["requested_by"] == who
    assert reply["state"] == before != "ACTIVE" and reply["expires_at"].endswith(" UTC")
    assert sidecar.engine.killswitch.state(scope) == before  # nothing lowered yet
    return str(reply["request_id"])


async def test_a_second_risk_admin_carries_out_the_resume(
    staffed: Sidecar, settings: Settings
) -> None:
    await halted_firm(staffed)
    request_id = await ask(staffed)
    halt_id = staffed.engine.killswitch.standing()["firm"].id
    _, st = await call(staffed, "GET", "/v1/status", who="vic")
    [pending] = st["approvals"]
    assert pending["request_id"] == request_id and pending["scope"] == "firm"
    assert pending["requested_by"] == "alice" and pending["lifts"] == halt_id
    # a second request for the same scope is refused: approve or withdraw the first
    again = {"scope": "firm", "reason": "again"}
    status, reply = await call(staffed, "POST", "/v1/resume", again, "bob")
    assert status == 409 and request_id in reply["error"]
    # the same person cannot approve
    body = {"request_id": request_id, "reason": "I checked too"}
    status, reply = await call(staffed, "POST", "/v1/approve", body, "alice")
    assert status == 403 and "different risk-admin" in reply["error"]
    assert staffed.engine.killswitch.state("firm") == "HALTED"
    # a different one can
    body = {"request_id": request_id, "reason": "confirmed with the desk"}
    status, reply = await call(staffed, "POST", "/v1/approve", body, "bob")
    assert status == 200 and reply["state"] == "ACTIVE", reply
    tr = reply["transition"]
    assert tr["operator"] == "alice" and tr["approved_by"] == "bob" and tr["ends"] == halt_id
    assert tr["reason"] == (
        "venue back, positions checked; approved by bob: confirmed with the desk"
    )
    # the control topic carries both names
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        view = await read_to_end(consumer, settings.kafka.control_topic, ControlView())
    finally:
        await consumer.stop()
    published = view.states["firm"].transition
    assert published.operator == "alice" and published.approved_by == "bob"
    # and so does the audit: the request, the refusal, the approval, the manual action
    steps = await audited(staffed, "approval", 2)
    assert [s["event"] for s in steps] == ["requested", "approved"]
    assert steps[1]["by"] == "bob" and steps[1]["requested_by"] == "alice"
    manual = [m for m in await audited(staffed, "manual", 2) if m["action"] == "resume"]
    assert manual[0]["operator"] == "alice" and manual[0]["approved_by"] == "bob"
    assert manual[0]["identity"] == "bob" and manual[0]["request_id"] == request_id
    refused = await audited(staffed, "refused", 2)
    assert {r["identity"] for r in refused} == {"alice", "bob"}
    # the request is gone: approving it again says how it ended
    status, reply = await call(staffed, "POST", "/v1/approve", body, "bob")
    assert status == 409 and "approved by bob" in reply["error"]


async def test_withdrawn_requests_and_new_halts_end_a_request(staffed: Sidecar) -> None:
    await halted_firm(staffed)
    first = await ask(staffed)
    body = {"request_id": first, "reason": "not yet"}
    status, reply = await call(staffed, "POST", "/v1/withdraw", body, "bob")
    assert status == 200 and reply["status"] == "withdrawn"
    status, reply = await call(staffed, "POST", "/v1/approve", body, "bob")
    assert status == 409 and "withdrawn by bob: not yet" in reply["error"]
    # an operator's halt of the scope, even when it is already halted, voids the request
    second = await ask(staffed)
    assert (await call(staffed, "POST", "/v1/halt", FIRM, "olga"))[0] == 200
    status, reply = await call(
        staffed, "POST", "/v1/approve", {"request_id": second, "reason": "ok"}, "bob"
    )
    assert status == 409 and "voided" in reply["error"] and "olga" in reply["error"]
    steps = await audited(staffed, "approval", 4)
    assert [s["event"] for s in steps] == ["requested", "withdrawn", "requested", "voided"]
    status, reply = await call(
        staffed, "POST", "/v1/approve", {"request_id": "r-unknown", "reason": "x"}, "bob"
    )
    assert status == 404 and "no pending request" in reply["error"]


async def test_pending_requests_expire(settings: Settings, tmp_path: Path) -> None:
    sidecar = await start(with_people(settings, tmp_path, approval_timeout_s=1.0))
    try:
        await halted_firm(sidecar)
        request_id = await ask(sidecar)
        await asyncio.sleep(2.2)  # the expiry sweep runs every second
        _, st = await call(sidecar, "GET", "/v1/status", who="vic")
        assert st["approvals"] == []
        body = {"request_id": request_id, "reason": "too late"}
        status, reply = await call(sidecar, "POST", "/v1/approve", body, "bob")
        assert status == 409 and "expired" in reply["error"]
        assert sidecar.engine.killswitch.state("firm") == "HALTED"
        steps = await audited(sidecar, "approval", 2)
        assert [s["event"] for s in steps] == ["requested", "expired"]
    finally:
        await sidecar.stop()


async def test_four_eyes_levels_are_configurable(settings: Settings, tmp_path: Path) -> None:
    sidecar = await start(with_people(settings, tmp_path, four_eyes=["strategy"]))
    try:
        await halted_firm(sidecar)
        status, reply = await call(sidecar, "POST", "/v1/resume", FIRM, "alice")
        assert status == 200 and reply["state"] == "ACTIVE"  # firm: one risk-admin now
        halt = {"scope": "strategy:s", "reason": "drill"}
        assert (await call(sidecar, "POST", "/v1/halt", halt, "olga"))[0] == 200
        await ask(sidecar, scope="strategy:s")
    finally:
        await sidecar.stop()


async def test_a_new_breach_of_the_scope_voids_its_request(
    settings: Settings, tmp_path: Path
) -> None:
    sidecar = await start(with_people(settings, tmp_path, four_eyes=["strategy"]))
    try:
        reduce = {"scope": "strategy:smars", "reason": "odd fills", "action": "reduce_only"}
        assert (await call(sidecar, "POST", "/v1/halt", reduce, "olga"))[0] == 200
        request_id = await ask(sidecar, scope="strategy:smars")
        await produce(settings, *RUNAWAY)  # children overfill their parent: rule 'overfill'
        await wait_for(lambda: sidecar.engine.killswitch.state("strategy:smars") == "HALTED")
        body = {"request_id": request_id, "reason": "ok"}
        status, reply = await call(sidecar, "POST", "/v1/approve", body, "bob")
        assert status == 409, reply
        assert "voided: strategy:smars went HALTED on rule overfill" in reply["error"]
        assert sidecar.engine.killswitch.state("strategy:smars") == "HALTED"
    finally:
        await sidecar.stop()


async def test_a_request_is_answered_once_every_instance_can_list_it(
    broker_kind: BrokerKind, tmp_path: Path
) -> None:
    # seen live: instance A answered 202 "pending r-…" and was SIGKILLed a moment later;
    # the request had not reached the control topic, so B answered the approval 404 and
    # A, restarted, did not list it either. Now the answer waits for the topic (or says
    # that it does not hold it yet).
    broker = fresh_broker(broker_kind)  # paused below: this test's alone
    settings = with_people(local_settings(broker, tmp_path), tmp_path)
    sidecar = await start(settings)
    try:
        await wait_for(sidecar.ready)
        await halted_firm(sidecar)
        status, reply = await call(sidecar, "POST", "/v1/resume", FIRM, "alice")
        assert status == 202 and reply["shared"] is True
        broker.pause()  # the broker takes nothing now
        try:
            consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
            halt = {"scope": "account:A1", "reason": "desk"}
            assert (await call(sidecar, "POST", "/v1/halt", halt, "olga"))[0] == 200
            began = time.monotonic()
            ask = {"scope": "account:A1", "reason": "desk back"}
            status, late = await call(sidecar, "POST", "/v1/resume", ask, "alice")
            waited = time.monotonic() - began
        finally:
            broker.resume()
        assert status == 202 and late["shared"] is False and waited >= SHARE_WAIT_S
        await consumer.start()
        try:
            view = await read_to_end(consumer, settings.kafka.control_topic, ControlView())
        finally:
            await consumer.stop()
        assert view.approvals["firm"].request_id == reply["request_id"]
    finally:
        await sidecar.stop()
        broker.stop()
