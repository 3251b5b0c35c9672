"""The ``riskguard demo`` command: timeline for people, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from riskguard import log
from riskguard.broker import BrokerError
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from riskguard.demo.live import DemoReport

#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the Knight-style demo on the embedded broker.

    Exit codes: 0 every runaway was halted; 1 one was not; 2 bad arguments or no
    broker; 130 interrupted (Ctrl-C: everything is stopped, no traceback).
    """
    if not (math.isfinite(args.duration) and args.duration > 0):
        print(
            f"riskguard demo: --duration must be seconds above 0, got {args.duration:g}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.trials < 1:
        print(f"riskguard demo: --trials must be 1 or more, got {args.trials}", file=sys.stderr)
        return EXIT_USAGE
    log.configure("error")  # the timeline is the output; errors still show
    say = (lambda _text: None) if args.json else (lambda text: print(text, flush=True))
    if not args.json:
        print(
            f"riskguard demo: Knight Capital, 1 August 2012, replayed live for "
            f"{args.duration:g} s\n",
            flush=True,
        )
    try:
        from riskguard.demo.live import run_demo  # noqa: PLC0415 - pulls in Kafka and numba
        from riskguard.warmup import COMPILE_NOTICE, kernels_cached  # noqa: PLC0415

        if not kernels_cached():
            print(f"riskguard demo: {COMPILE_NOTICE}", file=sys.stderr, flush=True)
        report = asyncio.run(_interruptible(run_demo(args.duration, args.trials, say)))
    except BrokerError as exc:
        print(f"riskguard demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("riskguard demo: interrupted; everything it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        halt, gate = summary["event_to_halt_ms"], summary["event_to_gate_ms"]
        print("\nsummary")
        print(
            f"  runaways / halted          {summary['trials']} / {summary['halted_trials']} "
            f"(rule: {', '.join(summary['halt_rules']) or '-'})"
        )
        print(f"  event -> halt decided      p50 {halt['p50']} ms, p99 {halt['p99']} ms")
        print(f"  event -> gate refusing     p50 {gate['p50']} ms, p99 {gate['p99']} ms")
        print(f"  runaway orders after halt  {summary['runaway_orders_sent_after_halt']}")
        print(
            f"  orders sent / refused      {summary['orders_sent']:,} / "
            f"{summary['orders_refused']:,}  ({summary['events_produced']:,} events)"
        )
        print(f"  metrics were at            {summary['metrics_url']}")
        print(f"  status was at              {summary['status_url']}")
    return EXIT_OK if summary["halted_trials"] == summary["trials"] > 0 else EXIT_FAILED


async def _interruptible(demo: Coroutine[Any, Any, DemoReport]) -> DemoReport:
    """Run ``demo``; SIGINT or SIGTERM cancels it, so its clean-up runs (clients closed,
    then the broker) and :func:`cmd_demo` says "interrupted" instead of a traceback."""
    task = asyncio.ensure_future(demo)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo``."""
    d = sub.add_parser("demo", help="see a Knight-style runaway halted, on the embedded broker")
    d.add_argument("--duration", type=float, default=20.0, help="seconds, above 0 (default 20)")
    d.add_argument(
        "--trials",
        type=int,
        default=1,
        help="runaways to inject, 1 or more (resumed in between), for latency percentiles",
    )
    d.add_argument("--json", action="store_true", help="print a JSON summary only")
    d.set_defaults(func=cmd_demo)
