"""Memory: state per (account, symbol) position, and growth over a long stable stream.

Part 1 opens 10 positions in each of A accounts (one strategy each) under the
example limits, and reports per position: the numpy state (every array the
kernel reads, capacity slack included), the process RSS growth (numpy plus the
Python key tables), and both per tracked key. Part 2 streams M events over a
fixed key set (1,000 accounts x 20 symbols; orders open and close, ids are
recycled) and samples RSS every million: after the first million it must not
grow. Target: <= 256 bytes of state per position, and no growth.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
from typing import Any

import numpy as np

from bench.common import progress, rss_bytes, save, table
from riskguard.engine import Engine, warm_up
from riskguard.events import CancelOrder, Event, Fill, Heartbeat, Mark, NewOrder
from riskguard.examples import LIMITS
from riskguard.limits import load

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
    warm_up()
    gc.collect()
    engine = Engine(load(LIMITS), event_time=True)
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
    keys = engine.keys.n_scopes + len(engine.keys.pairs)
    python = deep_size(engine.keys)
    k = engine.keys
    pair_numpy = engine.store.state.positions.nbytes
    pair_python = deep_size((k.pairs, k.new_pairs))
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


def stable_stream(events: int, chunk: int = 100_000) -> dict[str, Any]:
    """RSS after each million events of flow over a fixed key set."""
    warm_up()
    engine = Engine(load(LIMITS), event_time=True)
    rng = random.Random(5)
    open_orders: list[tuple[str, dict[str, str]]] = []
    seq = 0
    t = T0
    samples: list[tuple[int, int]] = []
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
                keys = {
                    "account": f"A{a}",
                    "strategy": f"A{a}-s",
                    "symbol": f"S{rng.randrange(20)}",
                }
                oid = f"o{seq}"
                side = "buy" if rng.random() < 0.5 else "sell"
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
        if applied % 1_000_000 == 0:
            gc.collect()
            samples.append((applied, rss_bytes()))
            progress("stable stream", applied, events)
    base = samples[0][1]
    # the trend, not last minus first: RSS moves by a few MB as the allocator works
    millions = np.array([e for e, _ in samples], dtype=float) / 1e6
    rss = np.array([r for _, r in samples], dtype=float)
    slope = float(np.polyfit(millions, rss, 1)[0]) if len(samples) > 1 else 0.0
    growth = float(slope * (millions[-1] - millions[0]))
    return {
        "events": applied,
        "rss_samples": [{"events": e, "rss_bytes": r} for e, r in samples],
        "rss_range_after_first_million_bytes": int(rss.max() - rss.min()),
        "rss_trend_bytes_per_million_events": slope,
        "growth_after_first_million_bytes": growth,
        "growth_after_first_million_pct": 100.0 * growth / base,
        "open_orders_at_end": len(open_orders),
        "order_ids_allocated": engine.keys.n_orders,
    }


def report(r: dict[str, Any]) -> str:
    p, s = r["positions"], r["stable"]
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
            "stable stream: RSS at 1M events",
            f"{s['rss_samples'][0]['rss_bytes'] / 2**20:,.1f} MiB",
        ),
        (
            f"stable stream: RSS at {s['events'] / 1e6:,.0f}M events",
            f"{s['rss_samples'][-1]['rss_bytes'] / 2**20:,.1f} MiB",
        ),
        (
            "RSS trend after the first million (target: none)",
            f"{s['growth_after_first_million_pct']:+.2f}%",
        ),
        (
            "RSS range over the samples",
            f"{s['rss_range_after_first_million_bytes'] / 2**20:,.1f} MiB",
        ),
    ]
    return table(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="10k accounts, 2M events")
    args = parser.parse_args(argv)
    accounts, events = (10_000, 2_000_000) if args.quick else (args.accounts, args.events)
    stable = stable_stream(events)  # first: RSS samples untouched by the positions part
    result = {"positions": positions(accounts), "stable": stable}
    print(report(result))
    print(f"wrote {save('memory', result)}")
    return result


if __name__ == "__main__":
    main()
