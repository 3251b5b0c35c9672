"""``python -m bench --quick`` runs every benchmark end to end (so they never rot).

No timing is asserted: the machines are shared and noisy, and the numbers belong in
``bench/README.md`` and closing notes. What is checked is that every benchmark ran,
wrote its result file with the machine it ran on, and the targets table covers
every target of the benchmark issue.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from bench.__main__ import BENCHES

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_run_and_record_their_machine() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = ROOT / "bench" / "results"
    for name in BENCHES:
        data = orjson.loads((results / f"{name}.json").read_bytes())
        assert data["bench"] == name
        machine = data["machine"]
        for field in ("cpus", "python", "numba", "aiokafka", "broker"):
            assert machine[field], (name, field)
    summary = orjson.loads((results / "summary.json").read_bytes())
    assert summary["failed"] == []
    names = [row[0] for row in summary["targets"]]
    for target in (
        "kernel events/s",
        "kernel / Python",
        "gate.check p99",
        "halt -> on_cancel",
        "halt -> orders closed",
        "pipeline",
        "gate p99",
        "state bytes",
        "RSS trend",
    ):
        assert any(n.startswith(target) for n in names), (target, names)
    assert all(row[1] != "not run" for row in summary["targets"])
    assert "== targets" in done.stdout
