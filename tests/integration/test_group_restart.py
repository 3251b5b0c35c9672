"""A group member restarted within the session timeout (static membership) gets its
partitions back without a rebalance, and restores them from its snapshot, then reads
each from the snapshot's offset: the other member rebuilds nothing, and the restarted
one holds every event of its partitions once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from riskguard.apache_kafka import ApacheKafkaBroker
from riskguard.engine import Engine
from riskguard.ingest.runtime import Sidecar
from riskguard.limits import parse
from tests.builders import rules_toml
from tests.integration.apache_kafka_fixtures import group_settings
from tests.integration.conftest import instance_settings
from tests.integration.test_scale_out import ACCOUNTS, account_positions, flow, produce, until

RATE = (
    'name = "acct-rate"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
    'max = 100000\naction = "halt"'
)
# every account sends 10 orders in the first flow: this alert is raised in each
BUSY = (
    'name = "acct-busy"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 600000\n'
    'max = 5\naction = "alert"'
)
LIMITS = rules_toml(RATE, BUSY)


def audited(path: Path, rule: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in (json.loads(line)["record"] for line in lines) if r.get("rule") == rule]


async def test_a_member_restarted_in_time_restores_its_partitions_from_its_snapshot(
    apache_kafka: ApacheKafkaBroker, tmp_path: Path
) -> None:
    base = group_settings(
        apache_kafka.bootstrap_servers,
        tmp_path,
        LIMITS,
        6,
        **{"scale.session_timeout_ms": 10_000, "runtime.snapshot_interval_s": 0.2},
    )
    settings = {n: instance_settings(base, tmp_path / n, n) for n in ("rg-a", "rg-b")}
    a, b = Sidecar(settings["rg-a"]), Sidecar(settings["rg-b"])
    await asyncio.gather(a.start(), b.start())
    tasks = [asyncio.create_task(m.run()) for m in (a, b)]
    b2: Sidecar | None = None
    try:

        def spread() -> bool:
            return all(
                len(m.assigned) == 3 and m.status()["scale"]["restored_seconds"] is not None
                for m in (a, b)
            )

        await until("three partitions each", spread, 60)
        # account rules only: nothing to sum, so the judging member's sums are whole (its
        # RiskguardGroupSumsIncomplete alert fired for ever: complete 0, "NOT JUDGED")
        [judge] = [m for m in (a, b) if m.status()["scale"]["aggregate"]["judging"]]
        await until("the judge's round", lambda: judge.status()["scale"]["aggregate"]["due"]
                    is False, 10)  # fmt: skip
        assert judge.status()["scale"]["aggregate"]["complete"] is True
        complete = judge.metrics.registry.get_sample_value("riskguard_aggregate_complete")
        assert complete == 1
        first = flow(time.time_ns(), 10, "a")
        await produce(base, first)
        await until("every event applied", lambda: a.flow.events_applied
                    + b.flow.events_applied == len(first), 30)  # fmt: skip
        rebuilds_a = a.status()["scale"]["rebuilds"]
        b_parts = set(b.assigned)
        await until("b's snapshot written", lambda: b.checkpoints.status()["last_written"], 10)
        audit_b = settings["rg-b"].runtime.audit_path

        def paged() -> set[str]:
            return {r["scope"] for r in audited(audit_b, "acct-busy") if r["kind"] == "alert"}

        await until("each of b's accounts paged acct-busy", lambda: len(paged()) == 6, 10)
        raised = paged()
        b.request_stop()
        assert await tasks[1]
        # b comes back without the alert rule: restored from its snapshot, it resolves
        # the alerts the snapshot holds (they were never resolved otherwise)
        Path(base.limits).write_text(rules_toml(RATE))
        b2 = Sidecar(settings["rg-b"])  # same instance, same state directory
        began = time.monotonic()
        await b2.start()
        tasks[1] = asyncio.create_task(b2.run())
        restarted = b2

        def back() -> bool:
            scale = restarted.status()["scale"]
            return scale["restored_seconds"] is not None and set(restarted.assigned) == b_parts

        await until("b owns its partitions again", back, 30)
        scale = b2.status()["scale"]
        print(
            f"\nrestart: b owned and restored its partitions {time.monotonic() - began:.2f} s "
            f"after its start began (restore {scale['restored_seconds']} s, from "
            f"{scale['restored_from']})"
        )
        assert scale["restored_from"] is not None and scale["restored_from"].startswith("snapshot-")
        names = {f"{tp.topic}/{tp.partition}" for tp in b_parts}
        assert set(scale["checkpoints"]) == names, scale["checkpoints"]
        assert all(str(c).startswith("snapshot-") for c in scale["checkpoints"].values()), (
            f"each partition restored from its checkpoint: {scale['checkpoints']}"
        )
        assert scale["snapshot_restores"] == len(b_parts) and scale["rebuilds"] == 0
        assert a.status()["scale"]["rebuilds"] == rebuilds_a, "a kept its partitions: no rebuild"

        def resolves() -> list[dict[str, Any]]:
            return [r for r in audited(audit_b, "acct-busy") if r["kind"] == "resolve"]

        await until("b's alerts resolved", lambda: len(resolves()) >= len(raised), 10)
        assert {r["scope"] for r in resolves()} == raised
        assert {r["reason"] for r in resolves()} == {"limits reload: rule removed"}
        second = flow(time.time_ns(), 5, "b")
        await produce(base, second)
        everything = first + second
        await until("the new events applied once", lambda: a.flow.events_applied
                    + b2.flow.events_applied == len(everything), 30)  # fmt: skip
        reference = Engine(parse(rules_toml(RATE)), event_time=True)
        reference.apply(everything)
        got = {**account_positions(a.flow), **account_positions(b2.flow)}
        assert got == account_positions(reference)
        assert len(got) == len(ACCOUNTS) * 3
        a.request_stop()
        b2.request_stop()
        assert all(await asyncio.gather(*tasks))
    finally:
        for m in (a, b, b2):
            if m is not None and not m.stopping:
                await m.stop()
