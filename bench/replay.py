"""Offline replay throughput against a bare ``orjson.loads`` loop over the same lines.

The floor is the cheapest thing that touches every event: parse each JSONL line into a
dict. riskguard's replay does more (typed validation, interning, state, rules), so the
ratio says what all of that costs on top of reading the file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import save, table
from riskguard.demo.scenario import TradingSim
from riskguard.engine import warm_up
from riskguard.events import encode
from riskguard.examples import LIMITS
from riskguard.limits import load
from riskguard.replay import replay


def make_session(path: Path, events: int) -> int:
    """Write at least ``events`` events of simulated flow (runaway in the middle)."""
    sim = TradingSim(seed=11, activity=0.35)
    sim.runaway_at_ns = None
    written = 0
    with path.open("wb") as f:
        while written < events:
            chunk = sim.run(1000)
            if sim.runaway_at_ns is None and written > events // 2:
                sim.runaway_at_ns = sim.start_ns  # start the runaway from now on
            f.write(b"".join(encode(e) + b"\n" for e in chunk))
            written += len(chunk)
    return written


def floor(path: Path) -> float:
    """Seconds for a bare orjson.loads loop over the file's lines."""
    start = time.perf_counter()
    loads = orjson.loads
    with path.open("rb") as f:
        for line in f:
            loads(line)
    return time.perf_counter() - start


def run(events: int, repeats: int = 3) -> dict[str, Any]:
    """Best of ``repeats`` for both, interleaved so machine noise hits both alike."""
    warm_up()
    limits = load(LIMITS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "session.jsonl"
        n = make_session(path, events)
        floors, replays = [], []
        transitions = 0
        for _ in range(repeats):
            floors.append(floor(path))
            start = time.perf_counter()
            report = replay(path, limits, progress=False)
            replays.append(time.perf_counter() - start)
            transitions = len(report.transitions)
    f, r = min(floors), min(replays)
    return {
        "events": n,
        "floor_events_per_s": n / f,
        "replay_events_per_s": n / r,
        "ratio": f / r,
        "transitions": transitions,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50k events, one repeat")
    args = parser.parse_args(argv)
    result = run(50_000, 1) if args.quick else run(args.events)
    print(
        table(
            [
                ("replay (JSONL)", "events", "events/s"),
                (
                    "floor: orjson.loads loop",
                    f"{result['events']:,}",
                    f"{result['floor_events_per_s']:,.0f}",
                ),
                (
                    "riskguard replay",
                    f"{result['events']:,}",
                    f"{result['replay_events_per_s']:,.0f}",
                ),
                ("ratio riskguard / floor", "", f"{result['ratio']:.2f}"),
            ]
        )
    )
    print(f"wrote {save('replay', result)}")
    return result


if __name__ == "__main__":
    main()
