"""Start-up: ``riskguard run`` from process start to ``/livez`` and ``/readyz`` = 200, numba
cache cold and warm, and what the first-run compile spends its time on.

Cold: ``NUMBA_CACHE_DIR`` points at an empty folder, so every kernel compiles
(what a fresh container pays once). Warm: the same folder again, so kernels load
from the cache (every later restart). Both on the bundled broker with the
example limits, empty input and no snapshot; ``bench/restart.py`` covers
restarts with a large snapshot. ``/livez`` answers before the kernels are warm
(the API starts first), so the gap between the two is the warm-up.

The compile profile runs the warm-up alone in a fresh process with another empty
cache and numba's ``numba:compile`` events recorded: how many specialisations were
compiled, and which functions took the time (exclusive of the callees compiled
inside them), with the process's CPU time beside the wall time (on a shared
machine the CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench.common import run_config, save, table
from riskguard.broker import EmbeddedBroker, free_port
from riskguard.testing import spawn_run

#: Run in a fresh interpreter: warm the kernels with numba's compile events recorded.
PROFILE = r"""
import collections, json, time
w0, c0 = time.perf_counter(), time.process_time()
from numba.core import event
with event.install_recorder("numba:compile") as rec:
    from riskguard import engine
    w1, c1 = time.perf_counter(), time.process_time()
    engine.warm_up()
    w2, c2 = time.perf_counter(), time.process_time()
own = collections.Counter()
count = collections.Counter()
stack = []
for ts, ev in rec.buffer:
    fn = ev.data["dispatcher"].py_func
    name = fn.__module__.rsplit(".", 1)[-1] + "." + fn.__qualname__
    if ev.is_start:
        stack.append([name, ts, 0.0])
        continue
    name, began, inner = stack.pop()
    own[name] += ts - began - inner
    count[name] += 1
    if stack:
        stack[-1][2] += ts - began
print(json.dumps({
    "import_s": w1 - w0,
    "warm_up_s": w2 - w1,
    "warm_up_cpu_s": c2 - c1,
    "compilations": sum(count.values()),
    "functions": len(count),
    "by_function": [[n, round(s, 3), count[n]] for n, s in own.most_common()],
}))
"""


def compile_profile(cache: Path) -> subprocess.Popen[str]:
    """Start the first-run warm-up in a fresh process, with a fresh cache (see the
    docstring); :func:`profiled` waits for it."""
    return subprocess.Popen(
        [sys.executable, "-c", PROFILE],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def profiled(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The compile profile of :func:`compile_profile`'s process. Raises RuntimeError
    when it failed."""
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"compile profile failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _until_200(url: str, proc: subprocess.Popen[bytes], started: float) -> float:
    while time.perf_counter() - started < 600:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"riskguard run exited with {proc.returncode}")
    raise TimeoutError(f"{url} not 200 after 600 s")


def time_to_live_and_ready(bs: str, tmp: Path, cache: Path) -> tuple[float, float]:
    """Seconds from process start to ``/livez`` = 200, and to ``/readyz`` = 200."""
    run = uuid.uuid4().hex[:6]
    config = run_config(tmp, f"start-{run}", f'[kafka]\ninput_topics = ["start-{run}"]\n')
    port = free_port()
    started = time.perf_counter()
    proc = spawn_run(config, port, bs, env={"NUMBA_CACHE_DIR": str(cache)})
    try:
        live = _until_200(f"http://127.0.0.1:{port}/livez", proc, started)
        ready = _until_200(f"http://127.0.0.1:{port}/readyz", proc, started)
        return live, ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(warm_repeats: int, beside: bool = False) -> dict[str, Any]:
    """Cold start, ``warm_repeats`` warm starts, and the compile profile: after them, or
    with ``beside`` (``--quick``: each compile takes one core of two, so the suite waits
    for one compile, not two; the cold figures are then indicative only)."""
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        cache = t / "numba-cache"
        early = compile_profile(t / "numba-cache-profile") if beside else None
        cold_live, cold = time_to_live_and_ready(broker.bootstrap_servers, t, cache)
        warm_runs = [
            time_to_live_and_ready(broker.bootstrap_servers, t, cache) for _ in range(warm_repeats)
        ]
        profile = profiled(early or compile_profile(t / "numba-cache-profile"))
    warm = [ready for _live, ready in warm_runs]
    return {
        "ready_cold_cache_s": cold,
        "live_cold_cache_s": cold_live,
        "ready_warm_cache_s": min(warm),
        "live_warm_cache_s": min(live for live, _ready in warm_runs),
        "warm_runs_s": warm,
        "compile": profile,
    }


def report(r: dict[str, Any]) -> str:
    c = r["compile"]
    rows = [
        ("riskguard run -> /livez, /readyz", "live s", "ready s"),
        (
            "numba cache cold (first start)",
            f"{r['live_cold_cache_s']:.2f}",
            f"{r['ready_cold_cache_s']:.2f}",
        ),
        (
            "numba cache warm (best of runs)",
            f"{r['live_warm_cache_s']:.2f}",
            f"{r['ready_warm_cache_s']:.2f}",
        ),
        (
            "first-run warm-up alone: wall / CPU s",
            f"{c['warm_up_s']:.2f}",
            f"{c['warm_up_cpu_s']:.2f}",
        ),
        ("  compilations / functions", str(c["compilations"]), str(c["functions"])),
    ]
    for name, seconds, count in c["by_function"][:8]:
        rows.append((f"  {name} (x{count})", f"{seconds:.2f}", ""))
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="warm starts")
    parser.add_argument(
        "--quick", action="store_true", help="one warm start; the compile profile runs beside"
    )
    args = parser.parse_args(argv)
    result = run(1 if args.quick else args.repeats, beside=args.quick)
    print(report(result))
    print(f"wrote {save('startup', result)}")
    return result


if __name__ == "__main__":
    main()
