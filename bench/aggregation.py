"""Group mode's aggregation topic: what one instance's record costs, and what judging the
sums costs as instances are added, to find where the topic becomes the limit.

An engine in group mode (summed rules counted, not judged) applies simulated flow
keyed by account. Then, without a broker (this measures the work, not the topic):

- **read**: :func:`~riskguard.aggregate.contributions.contributions` of every summed
  rule of the example limits (what the publisher does every
  ``scale.aggregate_interval_ms``, under the consume loop's lock), µs per call;
- **record**: its encoded size (bytes) and encode time;
- **judge**: for N instances (N records over N x 2 partitions, each the measured record
  under another name, every sum new to the judge: the worst round),
  :func:`~riskguard.aggregate.records.cover` plus
  :meth:`~riskguard.aggregate.judge.SumJudge.judge`, µs per round (the judging instance
  does at most one round per interval, whatever N is); then again with every non-firm
  rule given ``--scopes`` scopes (a large firm's thousand strategies or symbols).

From these and the interval, bench/README.md (Aggregation) computes the topic's bytes
per second, the judge's CPU share, and the N at which either becomes the limit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import save, table
from bench.scale_out import group_limits
from riskguard.aggregate.contributions import contributions
from riskguard.aggregate.judge import SumJudge
from riskguard.aggregate.records import Contribution, Held, cover, decode, encode
from riskguard.demo.scenario import TradingSim
from riskguard.engine import Engine
from riskguard.events import Event
from riskguard.limits.scale import is_summed, summed_rules

INTERVAL_MS = 200  # the default scale.aggregate_interval_ms


def best_us(fn: Any, repeat: int) -> float:
    """Median µs of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1_000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000, help="flow applied first")
    p.add_argument("--scopes", type=int, default=1_000, help="scopes per rule, large case")
    p.add_argument("--quick", action="store_true", help="small sizes, for CI")
    args = p.parse_args()
    n_events = 20_000 if args.quick else args.events
    repeat = 20 if args.quick else 200
    limits = group_limits()
    names = [r.name for r in summed_rules(limits)]
    engine = Engine(limits, warm=True, event_time=True, values_only=is_summed)
    sim = TradingSim(seed=5, activity=0.6, start_ns=time.time_ns() - 60_000_000_000)
    sim.runaway_at_ns = None
    events: list[Event] = []
    while len(events) < n_events:
        events += sim.run(5_000)
    engine.apply(events[:n_events])
    now = engine.last_event_ns
    read_us = best_us(lambda: contributions(engine, names, now), repeat)
    parts = contributions(engine, names, now)
    scopes = sum(len(row) for rows in parts.values() for row in rows)
    digest = limits.digest

    rules = summed_rules(limits)
    large = {
        r.name: [
            {"firm": [1.0]}
            if r.scope == "firm"
            else {
                f"{r.scope}:K{k}": [float(k), 1.0][: 2 if r.metric == "cancel_ratio" else 1]
                for k in range(args.scopes)
            }
            for _row in parts[r.name]
        ]
        for r in rules
    }

    def record(i: int, parts: Any = parts) -> Contribution:
        return Contribution(
            group="bench",
            instance=f"rg-{i}",
            partitions=(f"t/{2 * i}", f"t/{2 * i + 1}"),
            limits_digest=digest,
            as_of_ns=now,
            sent_ns=now,
            parts=parts,
        )

    encode_us = best_us(lambda: encode(record(0)), repeat)
    result: dict[str, Any] = {
        "events": n_events,
        "summed_rules": names,
        "read_us": round(read_us, 1),
        "encode_us": round(encode_us, 1),
        "interval_ms": INTERVAL_MS,
    }
    for case, case_parts in (("measured", parts), ("large", large)):
        one = encode(record(0, case_parts))
        dec = round(best_us(lambda one=one: decode(one), repeat), 1)
        n_scopes = sum(len(row) for rows in case_parts.values() for row in rows)
        rows = sweep(engine, limits, rules, digest, [record(i, case_parts) for i in range(64)],
                     len(one), dec, repeat)  # fmt: skip
        result[case] = {"scope_parts": n_scopes, "record_bytes": len(one), "decode_us": dec,
                        "by_instances": rows}  # fmt: skip
    save("aggregation", result)
    print(
        f"aggregation: {len(names)} summed rules; read parts {read_us:,.1f} µs "
        f"({scopes} scope parts after {n_events:,} events), encode {encode_us:,.1f} µs"
    )
    for case in ("measured", "large"):
        c = result[case]
        print(
            f"\n{case}: {c['scope_parts']:,} scope parts, record {c['record_bytes']:,} bytes, "
            f"decode {c['decode_us']:,.1f} µs"
        )
        print(
            table(
                [("instances", "judge µs", "records/s", "topic B/s", "read B/s", "judge CPU")]
                + [
                    (
                        str(r["instances"]),
                        f"{r['judge_us']:,.0f}",
                        f"{r['records_per_s']:,.0f}",
                        f"{r['topic_bytes_per_s']:,}",
                        f"{r['read_bytes_per_s']:,}",
                        f"{100 * r['judge_cpu_share']:.1f}%",
                    )
                    for r in c["by_instances"]
                ]
            )
        )


def sweep(
    engine: Engine,
    limits: Any,
    rules: Any,
    digest: str,
    records: list[Contribution],
    size: int,
    decode_us: float,
    repeat: int,
) -> list[dict[str, Any]]:
    """Judge cost and topic load for 2..64 instances publishing ``records``."""
    rows: list[dict[str, Any]] = []
    for n in (2, 4, 8, 16, 32, 64):
        held = {f"rg-{i}": Held(i, records[i]) for i in range(n)}
        whole = frozenset(f"t/{k}" for k in range(2 * n))

        def one_round(held: dict[str, Held] = held, whole: frozenset[str] = whole) -> None:
            SumJudge(engine).judge(cover(held, whole), rules, digest)  # every sum new

        judge_us = best_us(one_round, max(3, repeat // n))
        per_s = n * 1000 / INTERVAL_MS  # records/s when every instance's parts change
        rounds = 1000 / INTERVAL_MS  # the judge takes the sums once per interval at most
        rows.append(
            {
                "instances": n,
                "judge_us": round(judge_us, 1),
                "records_per_s": per_s,
                "topic_bytes_per_s": round(per_s * size),
                "read_bytes_per_s": round(per_s * size * n),
                # a round per interval, every record decoded by the judging instance
                "judge_cpu_share": round((rounds * judge_us + per_s * decode_us) / 1e6, 4),
            }
        )
    return rows


if __name__ == "__main__":
    main()
