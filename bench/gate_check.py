"""``Gate.check``: the pre-trade check's cost per call, from memory, at scale.

A gate knows 10k scopes (accounts, strategies and symbols, 1% HALTED and 1%
REDUCE_ONLY with published positions, the rest resumed to ACTIVE), 10k symbols' marks
and the per-order rules of a limits file (fat finger, notional, collar, an alert, a
rule matching 1,000 strategies). The records are encoded as riskguard writes them
and fed to the gate's view directly (no broker: this measures the answer, not the
topic). Then ``check`` is timed call by call on orders drawn over those keys (limit
and market orders, buys and sells, some refused), beside ``allows`` on the same
orders. Reported: p50/p99/p99.9/max µs per call over all calls (each includes one
``perf_counter_ns`` pair, measured alone as the floor), the p99 of the quietest of 5
rounds (on a shared machine the overall p99 is mostly other processes' time slices),
and the verdict mix. Objects alive before timing are moved out of the collector's way
with ``gc.freeze()``, as a latency-sensitive process would after loading.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time
from typing import Any

from bench.common import percentiles, save, table
from riskguard.control.records import (
    HeartbeatRecord,
    MarkRecord,
    PositionRecord,
    Record,
    RuleRecord,
    RulesRecord,
    StateRecord,
    encode_record,
)
from riskguard.gate import Gate
from riskguard.vocabulary import Transition

SCOPES = 10_000
SYMBOLS = 10_000
ROUNDS = 5


def records(now_ns: int, rng: random.Random) -> list[Record]:
    """What a gate would have read from a busy firm's control topic."""
    out: list[Record] = [
        HeartbeatRecord(ts=now_ns, instance="bench", ready=True, interval_ms=250),
        RulesRecord(
            limits_sha256="0" * 64,
            rules=(
                RuleRecord("fat-finger", "order_qty", "strategy", "halt", max=10_000),
                RuleRecord("notional", "order_notional", "account", "halt", max=5e6),
                RuleRecord("collar", "price_deviation", "symbol", "halt", max=0.05),
                RuleRecord("big-order", "order_qty", "firm", "alert", max=5_000),
                RuleRecord(
                    "listed-fat-finger",
                    "order_qty",
                    "strategy",
                    "reduce_only",
                    match={"strategy": tuple(f"S{i}" for i in range(0, 5_000, 5))},
                    max=8_000,
                ),
            ),
            ts=now_ns,
        ),
    ]
    out += [MarkRecord(f"Y{i}", 10.0 + i % 500, now_ns) for i in range(SYMBOLS)]
    scopes = (
        [f"account:A{i}" for i in range(2_500)]
        + [f"strategy:S{i}" for i in range(5_000)]
        + [f"symbol:Y{i}" for i in range(2_500)]
    )
    for n, scope in enumerate(scopes):
        state = "HALTED" if n % 100 == 0 else "REDUCE_ONLY" if n % 100 == 1 else "ACTIVE"
        tr = Transition(
            id=f"{scope}@{now_ns}:{state}",
            scope=scope,
            from_="ACTIVE" if state != "ACTIVE" else "HALTED",
            to=state,
            kind="manual",
            ts=now_ns,
            decided_ns=now_ns,
            operator="bench",
            reason="scale",
        )
        out.append(StateRecord(scope, state, tr))
        if state == "REDUCE_ONLY":
            for _ in range(3):
                symbol = f"Y{rng.randrange(SYMBOLS)}"
                out.append(PositionRecord(scope, symbol, rng.choice([-1, 1]) * 500.0, now_ns))
    return out


def orders(n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """(account, strategy, symbol, side, qty, price) drawn over the known keys."""
    out = []
    for _ in range(n):
        symbol = rng.randrange(SYMBOLS)
        mark = 10.0 + symbol % 500
        market = rng.random() < 0.2
        price = None if market else round(mark * rng.uniform(0.93, 1.07), 2)
        qty = float(rng.choice([100, 200, 500, 1_000, 6_000, 9_000, 20_000]))
        out.append(
            (
                f"A{rng.randrange(2_500)}",
                f"S{rng.randrange(5_000)}",
                f"Y{symbol}",
                rng.choice(["buy", "sell"]),
                qty,
                price,
            )
        )
    return out


def timed(calls: list[tuple[Any, ...]], fn: Any) -> tuple[list[float], int]:
    """µs per call, one ``perf_counter_ns`` pair each; and how many were allowed."""
    clock = time.perf_counter_ns
    out: list[float] = []
    allowed = 0
    for args in calls:
        t0 = clock()
        verdict = fn(*args)
        t1 = clock()
        out.append((t1 - t0) / 1_000)
        allowed += verdict.allowed
    return out, allowed


def timer_floor(n: int) -> list[float]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        t1 = clock()
        out.append((t1 - t0) / 1_000)
    return out


async def run(n: int) -> dict[str, Any]:
    rng = random.Random(11)
    gate = Gate("127.0.0.1:9", heartbeat_timeout_ms=3_600_000)  # never started: no broker
    try:
        values = [encode_record(r) for r in records(time.time_ns(), rng)]
        started = time.perf_counter()
        gate.view.fold(values)
        fold_s = time.perf_counter() - started
        view = gate.view
        assert view.rules is not None and len(view.states) == SCOPES and len(view.marks) == SYMBOLS
        calls = orders(n, rng)
        allows_calls = [(a, s, y, side, False) for a, s, y, side, _q, _p in calls]
        timed(calls[: min(n, 2_000)], gate.check)  # warm-up
        gate.refusals.clear()
        gc.collect()
        gc.freeze()
        size = n // ROUNDS
        rounds = [timed(calls[i * size : (i + 1) * size], gate.check) for i in range(ROUNDS)]
        check_us = [us for times, _ in rounds for us in times]
        check_allowed = sum(allowed for _, allowed in rounds)
        quietest = min(percentiles(times)["p99"] for times, _ in rounds)
        allows_us, _ = timed(allows_calls, gate.allows)
        floor_us = timer_floor(n)
        gc.unfreeze()
        n = size * ROUNDS
        return {
            "scopes": len(view.states),
            "symbols": len(view.marks),
            "rules": len(view.order_rules),
            "records_folded": len(values),
            "fold_records_per_s": len(values) / fold_s,
            "calls": n,
            "check_us": percentiles(check_us),
            "check_quietest_round_p99_us": quietest,
            "allows_us": percentiles(allows_us),
            "timer_floor_us": percentiles(floor_us),
            "check_allowed": check_allowed,
            "check_refused": n - check_allowed,
            "refusals_by_cause": dict(gate.refusals.most_common()),
        }
    finally:
        await gate._consumer.stop()  # created by Gate(), never started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k calls instead of 200k")
    parser.add_argument("--calls", type=int, default=None)
    args = parser.parse_args()
    n = args.calls or (20_000 if args.quick else 200_000)
    result = asyncio.run(run(n))
    rows = [("gate (10k scopes, 10k symbols)", "p50 µs", "p99 µs", "p99.9 µs", "max µs")]
    for label, key in (
        ("check()", "check_us"),
        ("allows()", "allows_us"),
        ("perf_counter_ns pair", "timer_floor_us"),
    ):
        p = result[key]
        rows.append(
            (label, f"{p['p50']:.2f}", f"{p['p99']:.2f}", f"{p['p99.9']:.2f}", f"{p['max']:.1f}")
        )
    print(table(rows))
    quietest = result["check_quietest_round_p99_us"]
    print(f"check() p99 in the quietest of {ROUNDS} rounds: {quietest:.2f} µs")
    print(
        f"check verdicts: {result['check_allowed']:,} allowed, "
        f"{result['check_refused']:,} refused {result['refusals_by_cause']}"
    )
    print(f"wrote {save('gate_check', {'quick': args.quick, **result})}")


if __name__ == "__main__":
    main()
