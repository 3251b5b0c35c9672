"""Restart-to-ready time of ``riskguard run`` with a snapshot of N applied events.

Builds engine state from N simulated events, writes it as a snapshot, then starts a
real ``riskguard run`` process on the bundled broker with that snapshot folder and
times process start to ``/readyz`` = 200, beside the same process with no snapshot.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import run_config, save, table, wait_ready
from riskguard.broker import EmbeddedBroker, free_port
from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.examples import LIMITS
from riskguard.limits import load
from riskguard.snapshot import SnapshotStore, capture
from riskguard.testing import spawn_run


def build_snapshot(folder: Path, events: int) -> tuple[int, int]:
    engine = Engine(load(LIMITS), event_time=True)
    sim = TradingSim(seed=2, activity=0.5)
    applied = 0
    while applied < events:
        applied += engine.apply(sim.run(20_000)).applied
    data = capture(engine, {"bench.events/0": 0})
    SnapshotStore(folder).write(data)
    return applied, len(data)


def time_to_ready(broker: EmbeddedBroker, snapshots: Path, tmp: Path) -> float:
    port = free_port()
    config = run_config(
        tmp,
        f"rg-{port}",
        '[kafka]\ninput_topics = ["bench.events"]\n',
        "snapshot_interval_s = 0\n",
        snapshots=snapshots,
    )
    proc = spawn_run(config, port, broker.bootstrap_servers)
    try:
        return wait_ready(port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 50_000 if args.quick else args.events
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        t = Path(tmp)
        applied, size = build_snapshot(t / "snapshots", n)
        with_snap = time_to_ready(broker, t / "snapshots", t)
        without = time_to_ready(broker, t / "empty", t)
    result = {
        "events_in_snapshot": applied,
        "snapshot_bytes": size,
        "ready_with_snapshot_s": with_snap,
        "ready_without_snapshot_s": without,
    }
    print(
        table(
            [
                ("restart to ready", "seconds"),
                (
                    f"with a snapshot of {applied:,} events ({size / 1e6:,.1f} MB)",
                    f"{with_snap:.2f}",
                ),
                ("with no snapshot (empty input)", f"{without:.2f}"),
            ]
        )
    )
    print(f"wrote {save('restart', result)}")
    return result


if __name__ == "__main__":
    main()
