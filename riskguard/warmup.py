"""A tiny limits file and event stream that exercise every kernel path once.

The engine runs them through a throwaway instance at start-up so numba compiles
(or loads from its cache) before the first real event arrives. The first run of a
fresh install compiles (:data:`COMPILE_NOTICE` says so at once); every later run
loads the kernels from numba's cache (``NUMBA_CACHE_DIR``) in about a second.
"""

from __future__ import annotations

import os
from typing import Any

from riskguard import events as wire
from riskguard.limits import Limits, parse
from riskguard.limits.vocabulary import LISTED_METRICS, METRICS

COMPILE_NOTICE = (
    "compiling riskguard's numba kernels: first run only, about 25 s on 2 cores "
    "(later runs load them from numba's cache)"
)
"""What riskguard says, at once, before a first-run compile."""


def kernels_cached() -> bool:
    """True when numba's on-disk cache holds this build's kernels: starting needs no compile.

    Looks for the cache index of the two kernels called at warm-up (their files are
    named after a digest of the kernel sources, :data:`riskguard.state.kernel.SOURCE_STAMP`).
    """
    from riskguard.state import kernel  # noqa: PLC0415 - numba, only when asked

    for dispatcher in (kernel.apply_batch, kernel.tick):
        files = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        index = getattr(files, "_index_path", None)
        if not isinstance(index, str) or not os.path.isfile(index):
            return False
    return True


def warm_limits() -> Limits:
    """One alert rule per metric (with warning levels), with match fields, and a restricted
    list, so every row kind compiles."""
    lines = ["version = 1"]
    for name, spec in METRICS.items():
        if name in LISTED_METRICS:
            continue
        lines += [
            "[[rule]]",
            f'name = "warm-{name}"',
            f'metric = "{name}"',
            f'scope = "{spec.scopes[-1]}"',
            'action = "alert"',
            "max = 0.5",
        ]
        if spec.windowed:
            lines.append("window_ms = 1000")
        if name == "feed_silence_ms":
            lines.append('match = { source = "w" }')
        elif spec.by_event:
            lines.append('match = { side = "buy", venue = "XWRM" }')
        lines.append("warn_at = [0.5, 0.9]")
    lines += ["[[restricted]]", 'symbols = ["Y"]', 'reason = "warm-up"', 'action = "alert"']
    return parse("\n".join(lines), source="<warm-up>")


def warm_events() -> list[wire.Event]:
    """Every event type and kernel path: fees, a correction and a bust, a fill before its
    new, a cancel before its new, redeliveries, a second account, reference data in
    another currency, opening and broker positions, a restricted symbol, a venue, a
    skewed heartbeat."""
    k: dict[str, Any] = {"account": "A", "strategy": "S", "symbol": "X"}
    k2: dict[str, Any] = {"account": "B", "strategy": "S", "symbol": "X"}
    ky: dict[str, Any] = {"account": "A", "strategy": "S", "symbol": "Y"}
    return [
        wire.Instrument(ts=1, symbol="Y", multiplier=50.0, currency="EUR"),
        wire.Position(ts=1, account="A", symbol="Y", qty=2.0, kind="open", price=5.0),
        wire.Fx(ts=1, currency="EUR", rate=1.1),
        wire.Position(ts=1, account="A", strategy="S", symbol="Y", qty=1.0, kind="broker"),
        wire.NewOrder(ts=1, order_id="y1", side="buy", qty=1.0, price=5.0, venue="XWRM", **ky),
        wire.Heartbeat(ts=1, source="w"),
        wire.Mark(ts=2, symbol="X", price=10.0),
        wire.Mark(ts=2, symbol="X", price=10.0),
        wire.ParentOrder(ts=3, parent_id="P", side="buy", qty=10.0, **k),
        wire.NewOrder(ts=4, order_id="o1", side="buy", qty=5.0, price=10.0, parent_id="P", **k),
        wire.NewOrder(ts=4, order_id="o1", side="buy", qty=5.0, price=10.0, parent_id="P", **k),
        wire.NewOrder(ts=4, order_id="o2", side="buy", qty=5.0, price=None, **k),
        wire.ReplaceOrder(ts=5, order_id="o1", side="buy", qty=6.0, price=10.5, **k),
        wire.Fill(ts=6, order_id="o1", exec_id="e1", side="buy", qty=6.0, price=10.0, fee=0.1, **k),
        wire.Fill(ts=7, order_id="o2", exec_id="e2", side="sell", qty=2.0, price=-1.0, **k2),
        wire.Fill(
            ts=7,
            order_id="o2",
            exec_id="e3",
            exec_type="correct",
            ref_exec_id="e2",
            side="sell",
            qty=1.0,
            price=11.0,
            **k2,
        ),
        wire.Fill(ts=7, order_id="o2", exec_id="e4", exec_type="bust", ref_exec_id="e2", **k2),
        wire.CancelOrder(ts=8, order_id="o2", **k),
        wire.RejectOrder(ts=9, order_id="o3", **k),
        wire.Fill(ts=9, order_id="o4", exec_id="e5", side="buy", qty=1.0, price=9.0, **k),
        wire.NewOrder(ts=9, order_id="o4", side="buy", qty=2.0, price=9.0, **k),
        wire.Mark(ts=10, symbol="X", price=9.0),
        wire.Heartbeat(ts=10**15, source="w"),
    ]
