"""A runaway that ignores the halt: the cancel tracker's cost per batch as orders pile up.

The Knight case: a strategy is HALTED, and its router keeps opening orders (it does not
ask the gate). Each batch of 500 new orders in the halted scope is applied to the engine
(the floor, measured in the same run) and then checked by the cancel tracker
(:meth:`riskguard.ingest.cancels.CancelTracker.check`), which must add every one of them
to the halt's request, keep the ``cancel-incomplete`` page standing and count them,
while the orders it already tracks stay working. Reported per size of the pile
(orders tracked): the check's ms per batch, and its ratio to the engine's apply of the
same batch. Until this session the check listed every overdue order again on each
batch: 260 ms per batch at 100,000 orders (100x the apply); now it counts the ones
that joined and lists them only when an alert update is due or when asked.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import save, table
from riskguard import events as wire
from riskguard.engine import Engine, warm_up
from riskguard.ingest.cancels import CancelTracker
from riskguard.limits import parse
from riskguard.metrics import Metrics

BATCH = 500
LIMITS = parse(
    'version = 1\ncancel_deadline_ms = 1000\n\n[[rule]]\nname = "fat"\nmetric = "order_qty"\n'
    'scope = "firm"\nmax = 1e9\naction = "halt"\n'
)


def run(total: int, marks: tuple[int, ...]) -> list[dict[str, Any]]:
    """Pile ``total`` orders into a halted strategy; measure at each of ``marks``."""
    wall = time.time_ns()
    engine = Engine(LIMITS, clock=lambda: wall)
    tracker = CancelTracker(engine, Metrics(), clock=lambda: wall)
    halt = engine.killswitch.halt("strategy:runaway", "ops", "bench")
    assert halt is not None
    tracker.request(halt)
    wall += 2_000_000_000  # past the cancel deadline: every order is overdue
    rows: list[dict[str, Any]] = []
    applied_s = checked_s = 0.0
    batches = 0
    n = 0
    while n < total:
        events = [
            wire.NewOrder(ts=wall + i, order_id=f"o{n + i}", account="A", strategy="runaway",
                          symbol="X", side="buy", qty=1.0, price=10.0)
            for i in range(BATCH)
        ]  # fmt: skip
        n += BATCH
        wall += 1_000_000
        t0 = time.perf_counter()
        engine.apply(events, wall_ns=wall)
        t1 = time.perf_counter()
        tracker.check(events, wall)
        t2 = time.perf_counter()
        applied_s += t1 - t0
        checked_s += t2 - t1
        batches += 1
        if n in marks:
            rows.append(
                {
                    "orders_tracked": tracker.overdue_count,
                    "check_ms_per_batch": checked_s / batches * 1000,
                    "apply_ms_per_batch": applied_s / batches * 1000,
                    "ratio_check_to_apply": checked_s / applied_s,
                }
            )
            applied_s = checked_s = 0.0
            batches = 0
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="up to 20,000 orders")
    args = parser.parse_args(argv)
    warm_up()
    marks = (2_000, 20_000) if args.quick else (2_000, 20_000, 100_000)
    rows = run(marks[-1], marks)
    print(
        table(
            [("orders tracked", "check ms/batch", "apply ms/batch", "check / apply")]
            + [
                (
                    f"{r['orders_tracked']:,}",
                    f"{r['check_ms_per_batch']:.2f}",
                    f"{r['apply_ms_per_batch']:.2f}",
                    f"{r['ratio_check_to_apply']:.2f}",
                )
                for r in rows
            ]
        )
    )
    print(f"wrote {save('runaway', {'batch': BATCH, 'runs': rows})}")
    return {"runs": rows}


if __name__ == "__main__":
    main()
