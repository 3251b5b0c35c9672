"""Memory: state per (account, symbol) position, and growth over a long stable stream.

Part 1 opens 10 positions in each of A accounts (one strategy each) under the
example limits, and reports per position: the numpy state (every array the
kernel reads, capacity slack included), the process RSS growth (numpy plus the
Python key tables), and both per tracked key. Part 2 streams M events over a
fixed key set (1,000 accounts x 20 symbols; orders open and close, ids are
recycled) and samples RSS every million (250k with --quick). Closed orders and
executions are remembered up to ``dedupe_max_ids`` each (docs/events.md, Memory): RSS
grows until that memory is full, and from then on it must not grow. Part 2 ends with
one snapshot at that size: the copy the event loop pays for, the write, the file and
the peak RSS (docs/deployment.md, Memory). Targets: <= 256 bytes of state per
position, and no growth once the redelivery memory is full.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench.common import progress, rss_bytes, save, table
from riskguard.engine import Engine, warm_up
from riskguard.events import CancelOrder, Event, Fill, Heartbeat, Mark, NewOrder, Side
from riskguard.examples import LIMITS
from riskguard.ingest.forked import CAN_FORK, fork_writer, wait_writer
from riskguard.limits import load
from riskguard.settings import EngineSettings
from riskguard.snapshot import SnapshotStore, chunks, freeze

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def deep_size(obj: object) -> int:
    """Bytes held by a Python object graph (each object once): the key tables."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif hasattr(o, "__dict__"):
            stack.append(vars(o))
    return total


def positions(accounts: int, per_account: int = 10, symbols: int = 2_000) -> dict[str, Any]:
    """State per position opened by one fill each. The redelivery memory is off here
    (``dedupe_horizon_s = 0``): each opening fill would otherwise leave an execution and
    an order remembered, which :func:`stable_stream` measures on its own."""
    warm_up()
    gc.collect()
    engine = Engine(load(LIMITS), event_time=True, settings=EngineSettings(dedupe_horizon_s=0.0))
    before_rss, before_np = rss_bytes(), engine.store.nbytes()
    rng = random.Random(3)
    chunk: list[Event] = []
    done = 0
    for a in range(accounts):
        account, strategy = f"ACC{a:06d}", f"ACC{a:06d}-s"
        for k, y in enumerate(rng.sample(range(symbols), per_account)):
            chunk.append(
                Fill(
                    ts=T0 + done * 1_000,
                    order_id=f"f{a}-{k}",
                    exec_id=f"x{a}-{k}",
                    account=account,
                    strategy=strategy,
                    symbol=f"SYM{y:05d}",
                    side="buy" if k % 2 else "sell",
                    qty=10.0,
                    price=100.0,
                )
            )
            done += 1
        if len(chunk) >= 100_000 or a == accounts - 1:
            engine.apply(chunk)
            chunk = []
            progress("positions", done, accounts * per_account)
    gc.collect()
    n = accounts * per_account
    state = engine.store.nbytes() - before_np
    rss = rss_bytes() - before_rss
    ks = engine.keys
    keys = ks.n_scopes + len(ks.pairs)
    python = deep_size(ks)
    pair_numpy = engine.store.state.positions.nbytes
    pair_python = deep_size((ks.pairs, ks.new_pairs))
    return {
        "breakdown_bytes_per_position": {
            "position_rows_numpy": pair_numpy / n,
            "position_tables_python": pair_python / n,
            "scope_rows_and_windows_numpy": (state - pair_numpy) / n,
            "scope_and_order_tables_python": (python - pair_python) / n,
        },
        "python_key_tables_bytes": python,
        "python_bytes_per_position": python / n,
        "state_bytes_per_position": (state + python) / n,
        "accounts": accounts,
        "positions": n,
        "scopes": engine.keys.n_scopes,
        "position_pairs": len(engine.keys.pairs),
        "numpy_state_bytes": state,
        "rss_growth_bytes": rss,
        "numpy_bytes_per_position": state / n,
        "rss_bytes_per_position": rss / n,
        "numpy_bytes_per_key": state / keys,
        "rss_bytes_per_key": rss / keys,
        "target_bytes_per_position": 256,
    }


def stable_stream(events: int, every: int, max_ids: int, chunk: int = 50_000) -> dict[str, Any]:
    """RSS every ``every`` events of flow over a fixed key set, with at most ``max_ids``
    closed orders and executions remembered (``engine.dedupe_max_ids``). The trend is
    taken from the first sample a whole interval after that memory is full: before, RSS
    grows as it fills, by design. Then one snapshot as the sidecar takes it: the event loop's share
    (:func:`riskguard.snapshot.freeze`), the write, the file and the peak RSS."""
    warm_up()
    engine = Engine(load(LIMITS), event_time=True, settings=EngineSettings(dedupe_max_ids=max_ids))
    rng = random.Random(5)
    open_orders: list[tuple[str, dict[str, Any]]] = []
    seq = 0
    t = T0
    samples: list[tuple[int, int, bool]] = []
    gc.collect()
    empty = rss_bytes()
    applied = 0
    while applied < events:
        batch: list[Event] = []
        while len(batch) < chunk:
            t += 20_000  # 50k events/s of event time
            seq += 1
            r = rng.random()
            if seq % 5_000 == 0:
                batch.append(Heartbeat(ts=t, source="router-1"))
            elif r < 0.05:
                y = rng.randrange(20)
                batch.append(Mark(ts=t, symbol=f"S{y}", price=100.0 + rng.uniform(-1, 1)))
            elif not open_orders or rng.random() < (0.7 if len(open_orders) < 2_000 else 0.3):
                a = rng.randrange(1_000)
                keys: dict[str, Any] = {
                    "account": f"A{a}",
                    "strategy": f"A{a}-s",
                    "symbol": f"S{rng.randrange(20)}",
                }
                oid = f"o{seq}"
                side: Side = "buy" if rng.random() < 0.5 else "sell"
                batch.append(NewOrder(ts=t, order_id=oid, side=side, qty=5.0, price=100.0, **keys))
                open_orders.append((oid, keys))
            else:
                oid, keys = open_orders.pop(rng.randrange(len(open_orders)))
                if rng.random() < 0.8:
                    batch.append(
                        Fill(
                            ts=t,
                            order_id=oid,
                            exec_id=oid,
                            side="buy",
                            qty=5.0,
                            price=100.0,
                            **keys,
                        )
                    )
                else:
                    batch.append(CancelOrder(ts=t, order_id=oid, **keys))
        engine.apply(batch)
        applied += len(batch)
        if applied % every == 0:
            gc.collect()
            ks = engine.keys
            full = min(len(ks.closed_orders), len(ks.exec_times)) >= max_ids
            samples.append((applied, rss_bytes(), full))
        progress("stable stream", applied, events)
    # from the first sample taken a whole interval after the memory was full: the sample
    # at which it fills still sees the tables it filled settle (dicts and arrays resize)
    after = [(e, r) for (e, r, _), (_, _, was) in zip(samples[1:], samples, strict=False) if was]
    if len(after) < 2:
        raise SystemExit(f"the redelivery memory ({max_ids:,} ids) was not full in time")
    base = after[0][1]
    # the trend, not last minus first: RSS moves by a few MB as the allocator works
    millions = np.array([e for e, _ in after], dtype=float) / 1e6
    rss = np.array([r for _, r in after], dtype=float)
    slope = float(np.polyfit(millions, rss, 1)[0])
    growth = float(slope * (millions[-1] - millions[0]))
    return {
        "events": applied,
        "dedupe_max_ids": max_ids,
        "memory_full_at_events": next(e for e, _, full in samples if full),
        "rss_samples": [{"events": e, "rss_bytes": r, "full": f} for e, r, f in samples],
        "rss_at_full_bytes": base,
        "rss_at_start_bytes": empty,
        "bytes_per_remembered_id": (base - empty) / (2 * max_ids),
        "rss_range_after_full_bytes": int(rss.max() - rss.min()),
        "rss_trend_bytes_per_million_events": slope,
        "growth_after_full_bytes": growth,
        "growth_after_full_pct": 100.0 * growth / base,
        "open_orders_at_end": len(open_orders),
        "order_ids_allocated": engine.keys.n_orders,
        "snapshot": snapshot_cost(engine),
    }


def snapshot_cost(engine: Engine) -> dict[str, Any]:
    """One snapshot of ``engine`` as the sidecar takes it (ingest/checkpoint.py): forked
    (the event loop pays for the fork; the child freezes and writes), then, for platforms
    without ``fork()``, the copy between batches and the write (a thread in the sidecar).
    The peak is the process's highest RSS so far, so it is the snapshot's when it passes
    everything before; the child's peak counts the pages it shares with the parent."""
    gc.collect()
    before = rss_bytes()
    out: dict[str, Any] = {"rss_before_bytes": before}
    with tempfile.TemporaryDirectory() as tmp:
        if CAN_FORK:
            began = time.perf_counter()
            writer = fork_writer(engine, {"bench/0": 0}, SnapshotStore(f"{tmp}/forked"))
            forked = time.perf_counter()
            wait_writer(writer)
            out |= {
                "fork_pause_s": forked - began,
                "fork_write_s": time.perf_counter() - forked,
                "child_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                * 1024,
            }
        began = time.perf_counter()
        frozen = freeze(engine, {"bench/0": 0})
        froze = time.perf_counter()
        path = SnapshotStore(tmp).write(chunks(frozen))
        wrote = time.perf_counter()
        size = path.stat().st_size
    return out | {
        "freeze_s": froze - began,
        "write_s": wrote - froze,
        "file_bytes": size,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def report(r: dict[str, Any]) -> str:
    p, s = r["positions"], r["stable"]
    sn = s["snapshot"]
    rows = [
        ("memory", "value"),
        (f"positions ({p['accounts']:,} accounts x 10 symbols)", f"{p['positions']:,}"),
        ("numpy state per position (target <= 256 B)", f"{p['numpy_bytes_per_position']:,.0f} B"),
        ("Python key tables per position", f"{p['python_bytes_per_position']:,.0f} B"),
        ("all state per position (numpy + Python)", f"{p['state_bytes_per_position']:,.0f} B"),
        ("RSS growth per position (incl. freed input)", f"{p['rss_bytes_per_position']:,.0f} B"),
        ("numpy state per tracked key (scope or pair)", f"{p['numpy_bytes_per_key']:,.0f} B"),
        *(
            (f"  of which {name.replace('_', ' ')}", f"{v:,.0f} B/position")
            for name, v in p["breakdown_bytes_per_position"].items()
        ),
        ("RSS growth, all positions", f"{p['rss_growth_bytes'] / 2**20:,.0f} MiB"),
        (
            f"stable stream: redelivery memory ({s['dedupe_max_ids']:,} ids) full at",
            f"{s['memory_full_at_events']:,} events",
        ),
        ("stable stream: RSS an interval later", f"{s['rss_at_full_bytes'] / 2**20:,.1f} MiB"),
        (
            "  per remembered order or execution (RSS from the start)",
            f"{s['bytes_per_remembered_id']:,.0f} B",
        ),
        (
            f"stable stream: RSS at {s['events']:,} events",
            f"{s['rss_samples'][-1]['rss_bytes'] / 2**20:,.1f} MiB",
        ),
        (
            "RSS trend once that memory is full (target: none)",
            f"{s['growth_after_full_pct']:+.2f}%",
        ),
        ("RSS range over those samples", f"{s['rss_range_after_full_bytes'] / 2**20:,.1f} MiB"),
        *(
            (
                ("snapshot: fork (the event loop's pause)", f"{sn['fork_pause_s'] * 1e3:,.1f} ms"),
                ("snapshot: the forked child's freeze and write", f"{sn['fork_write_s']:,.2f} s"),
                (
                    "snapshot: the child's peak RSS (shared pages included)",
                    f"{sn['child_peak_rss_bytes'] / 2**20:,.0f} MiB",
                ),
            )
            if "fork_pause_s" in sn
            else ()
        ),
        ("snapshot without fork: copy (event loop)", f"{sn['freeze_s'] * 1e3:,.0f} ms"),
        ("snapshot without fork: write (a thread)", f"{sn['write_s']:,.2f} s"),
        ("snapshot: file", f"{sn['file_bytes'] / 2**20:,.0f} MiB"),
        (
            "snapshot: peak RSS / RSS before",
            f"{sn['peak_rss_bytes'] / 2**20:,.0f} / {sn['rss_before_bytes'] / 2**20:,.0f} MiB",
        ),
    ]
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--max-ids",
        type=int,
        default=EngineSettings().dedupe_max_ids,
        help="closed orders and executions remembered in the stable stream",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10k accounts; 1M events sampled every 250k, 50k ids remembered",
    )
    args = parser.parse_args(argv)
    if args.quick:
        accounts, events, every, max_ids = 10_000, 1_000_000, 250_000, 50_000
    else:
        accounts, events, every, max_ids = args.accounts, args.events, 1_000_000, args.max_ids
    # first: RSS samples (and the snapshot's peak) untouched by the positions part
    stable = stable_stream(events, every, max_ids)
    result = {"positions": positions(accounts), "stable": stable}
    print(report(result))
    print(f"wrote {save('memory', result)}")
    return result


if __name__ == "__main__":
    main()
