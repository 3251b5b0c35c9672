"""Kernel: state update plus rule evaluation, numba against the plain-Python reference.

Events: Zipf-distributed over 10k accounts (2 strategies each) and 2k symbols, a mix
of every event type, under limits that use every metric of the vocabulary. Columns
are built once (outside the timing); the numba path is timed on ``apply_columnar``
over batches, the reference on the same events one by one (a prefix, since it is
slow), both reported in events/s.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import save, table
from riskguard import events as wire
from riskguard.engine import Engine, warm_up
from riskguard.limits import Limits, parse
from riskguard.limits.vocabulary import LISTED_METRICS, METRICS
from riskguard.state.columnar import build
from riskguard.state.reference import ReferenceModel

SCOPES = {"feed_silence_ms": "firm", "consumer_lag_ms": "firm"}


def every_metric_limits() -> Limits:
    """One rule per metric (alert, high limits: evaluation cost without a transition storm)."""
    return parse(every_metric_toml())


def every_metric_toml() -> str:
    """The limits file of :func:`every_metric_limits`."""
    lines = ["version = 1"]
    for i, (name, spec) in enumerate(METRICS.items()):
        if name in LISTED_METRICS:
            continue
        scope = SCOPES.get(name, ("account", "strategy", "symbol", "firm")[i % 4])
        if scope not in spec.scopes:
            scope = spec.scopes[0]
        lines += [
            "[[rule]]",
            f'name = "{name}"',
            f'metric = "{name}"',
            f'scope = "{scope}"',
            'action = "alert"',
            "max = 1e15",
        ]
        if spec.windowed:
            lines.append("window_ms = 1000")
    lines += ["[[restricted]]", 'symbols = ["none-such"]', 'reason = "bench"', 'action = "alert"']
    return "\n".join(lines)


def events(n: int, seed: int = 1) -> list[wire.Event]:
    rng = np.random.default_rng(seed)
    acc = np.minimum(rng.zipf(1.3, n), 10_000) - 1
    sym = np.minimum(rng.zipf(1.3, n), 2_000) - 1
    kind = rng.choice(7, n, p=[0.40, 0.30, 0.10, 0.05, 0.02, 0.10, 0.03])
    strat = rng.integers(0, 2, n)
    qty = rng.integers(1, 50, n).astype(float)
    price = 10.0 + rng.integers(0, 100, n) / 4
    side = rng.integers(0, 2, n)
    order = rng.integers(0, 50_000, n)
    out: list[wire.Event] = []
    t0 = 1_700_000_000_000_000_000
    for i in range(n):
        a = f"A{acc[i]}"
        k: dict[str, Any] = {"account": a, "strategy": f"{a}-s{strat[i]}", "symbol": f"Y{sym[i]}"}
        ts = t0 + i * 10_000
        oid = f"o{order[i]}"
        s: wire.Side = "buy" if side[i] else "sell"
        match kind[i]:
            case 0:
                out.append(
                    wire.NewOrder(ts=ts, order_id=oid, side=s, qty=qty[i], price=price[i], **k)
                )
            case 1:
                out.append(
                    wire.Fill(
                        ts=ts, order_id=oid, exec_id=str(i), side=s, qty=qty[i], price=price[i], **k
                    )
                )
            case 2:
                out.append(wire.CancelOrder(ts=ts, order_id=oid, **k))
            case 3:
                out.append(
                    wire.ReplaceOrder(ts=ts, order_id=oid, side=s, qty=qty[i], price=price[i], **k)
                )
            case 4:
                out.append(wire.RejectOrder(ts=ts, order_id=oid, **k))
            case 5:
                out.append(wire.Mark(ts=ts, symbol=k["symbol"], price=price[i]))
            case _:
                out.append(wire.Heartbeat(ts=ts, source="router"))
    return out


def run(n: int, reference_n: int, batch: int = 100_000) -> dict[str, Any]:
    warm_up()
    limits = every_metric_limits()
    evs = events(n)
    engine = Engine(limits, event_time=True)
    batches = [build(evs[i : i + batch], engine.keys) for i in range(0, n, batch)]
    started = time.perf_counter()
    for b in batches:
        engine.apply_columnar(b)
    kernel_s = time.perf_counter() - started
    ref = ReferenceModel(limits)
    started = time.perf_counter()
    for ev in evs[:reference_n]:
        ref.apply_one(ev)
    ref_s = time.perf_counter() - started
    k_rate, r_rate = n / kernel_s, reference_n / ref_s
    idle_us = tick_us(engine, engine.last_event_ns)
    raised, raised_us = raised_tick_us(evs[: min(n, 50_000)])
    return {
        "events": n,
        "reference_events": reference_n,
        "rules": len(limits.rules),
        "kernel_events_per_s": k_rate,
        "reference_events_per_s": r_rate,
        "ratio": k_rate / r_rate,
        "batch": batch,
        "tick_us_nothing_raised": idle_us,
        "windowed_alerts_raised": raised,
        "tick_us_windowed_raised": raised_us,
    }


def tick_us(engine: Engine, now: int, n: int = 2_000) -> float:
    """Mean µs of ``n`` clock ticks at ``now`` (the windows as they stand: nothing resolves
    after the first)."""
    engine.tick(now)
    started = time.perf_counter()
    for _ in range(n):
        engine.tick(now)
    return (time.perf_counter() - started) / n * 1e6


def raised_tick_us(evs: list[wire.Event]) -> tuple[int, float]:
    """Ticks while windowed alerts stand: every account that sent a new order breaches an
    ``order_rate`` alert of max 0 (1 s window); ticks at the last event's time, whose
    window still holds them all. Returns (alerts raised, mean µs per tick)."""
    rule = 'name = "rate0"\nmetric = "order_rate"\nscope = "account"\nwindow_ms = 1000\n'
    text = every_metric_toml() + f'\n[[rule]]\n{rule}max = 0\naction = "alert"\n'
    engine = Engine(parse(text), event_time=True)
    engine.apply(evs)
    return len(engine.raised_alerts()), tick_us(engine, engine.last_event_ns)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = run(50_000, 10_000) if args.quick else run(args.events, 100_000)
    print(
        table(
            [
                ("kernel (every metric)", "events", "events/s"),
                (
                    "riskguard numba kernel",
                    f"{result['events']:,}",
                    f"{result['kernel_events_per_s']:,.0f}",
                ),
                (
                    "plain-Python reference",
                    f"{result['reference_events']:,}",
                    f"{result['reference_events_per_s']:,.0f}",
                ),
                ("ratio kernel / reference", "", f"{result['ratio']:.1f}x"),
                ("tick, nothing raised", "", f"{result['tick_us_nothing_raised']:.1f} µs"),
                (
                    f"tick, {result['windowed_alerts_raised']:,} windowed alerts raised",
                    "",
                    f"{result['tick_us_windowed_raised']:.1f} µs",
                ),
            ]
        )
    )
    print(f"wrote {save('kernel', result)}")
    return result


if __name__ == "__main__":
    main()
