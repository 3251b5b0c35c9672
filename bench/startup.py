"""Start-up: ``riskguard run`` from process start to ``/readyz`` = 200, numba cache cold and warm.

Cold: ``NUMBA_CACHE_DIR`` points at an empty folder, so every kernel compiles
(what a fresh container pays once). Warm: the same folder again, so kernels load
from the cache (every later restart). Both on the bundled broker with the
example limits, empty input and no snapshot; ``bench/restart.py`` covers
restarts with a large snapshot.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.common import run_config, save, table, wait_ready
from riskguard.broker import EmbeddedBroker, free_port
from riskguard.testing import spawn_run


def time_to_ready(bs: str, tmp: Path, cache: Path) -> float:
    run = uuid.uuid4().hex[:6]
    config = run_config(tmp, f"start-{run}", f'[kafka]\ninput_topics = ["start-{run}"]\n')
    port = free_port()
    proc = spawn_run(config, port, bs, env={"NUMBA_CACHE_DIR": str(cache)})
    try:
        return wait_ready(port, proc, timeout_s=600)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(warm_repeats: int) -> dict[str, Any]:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cache = t / "numba-cache"
        cold = time_to_ready(broker.bootstrap_servers, t, cache)
        warm = [time_to_ready(broker.bootstrap_servers, t, cache) for _ in range(warm_repeats)]
    return {
        "ready_cold_cache_s": cold,
        "ready_warm_cache_s": min(warm),
        "warm_runs_s": warm,
    }


def report(r: dict[str, Any]) -> str:
    return table(
        [
            ("riskguard run -> ready", "seconds"),
            ("numba cache cold (first start)", f"{r['ready_cold_cache_s']:.2f}"),
            ("numba cache warm (best of runs)", f"{r['ready_warm_cache_s']:.2f}"),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="warm starts")
    parser.add_argument("--quick", action="store_true", help="one warm start")
    args = parser.parse_args(argv)
    result = run(1 if args.quick else args.repeats)
    print(report(result))
    print(f"wrote {save('startup', result)}")
    return result


if __name__ == "__main__":
    main()
