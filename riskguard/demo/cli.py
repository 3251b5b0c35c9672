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
    from riskguard.demo.report import DemoReport

#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the Knight-style demo on the embedded broker.

    Exit codes: 0 its guarantees held (:func:`kept`); 1 one did not; 2 bad arguments or
    no broker; 130 interrupted (Ctrl-C: everything is stopped, no traceback).
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
        print_summary(summary)
    return EXIT_OK if kept(summary) else EXIT_FAILED


def kept(summary: dict[str, Any]) -> bool:
    """The demo's guarantees: every runaway halted, no runaway order sent once the gate
    held the halt, no order of a halted scope working past the cancel deadline, the fat
    finger never sent, and riskguard's positions equal to the broker's at the end."""
    return (
        summary["halted_trials"] == summary["trials"] > 0
        and summary["runaway_orders_sent_after_halt"] == 0
        and summary["working_orders_after_deadline"] == 0
        and summary["fat_finger_sent"] == 0
        and summary["positions_reconciled"] is True
    )


def _ms(p: dict[str, Any], unit: str = "ms") -> str:
    if p["p50"] is None:
        return "-"
    return f"p50 {p['p50']} {unit}, p99 {p['p99']} {unit}, max {p['max']} {unit}"


def print_summary(summary: dict[str, Any]) -> None:
    cancelled = summary["cancelled_on_request"]
    rows = [
        (
            "runaways / halted",
            f"{summary['trials']} / {summary['halted_trials']} "
            f"(rule: {', '.join(summary['halt_rules']) or '-'})",
        ),
        ("event -> halt decided", _ms(summary["event_to_halt_ms"])),
        ("event -> gate refusing", _ms(summary["event_to_gate_ms"])),
        (
            "runaway orders after halt",
            f"{summary['runaway_orders_sent_after_halt']} (decided after the gate held it)",
        ),
        ("working orders at halt", str(summary["working_orders_at_halt"])),
        (
            "cancelled on request",
            f"{cancelled['named']} named + {cancelled['not_named_in_flight']} in flight "
            f"({cancelled['too_late_filled']} filled first)",
        ),
        ("halt -> cancel request", _ms(summary["halt_to_cancel_request_ms"])),
        ("halt -> all cancelled", _ms(summary["halt_to_all_cancelled_ms"])),
        (
            "working after deadline",
            f"{summary['working_orders_after_deadline']} "
            f"({summary['cancel_deadline_ms']:,} ms; cancel-incomplete pages: "
            f"{summary['cancel_incomplete_alerts']})",
        ),
        ("fat finger sent", str(summary["fat_finger_sent"])),
        (
            "refused before sending",
            f"{summary['pre_trade_refused']:,} "
            + "("
            + ", ".join(f"{k} {v:,}" for k, v in summary["pre_trade_refused_by_cause"].items())
            + ")",
        ),
        (
            "gate.check()",
            _ms(summary["gate_check_us"], "us") + f" ({summary['gate_checks']:,} calls)",
        ),
        (
            "book",
            f"{summary['instruments']} instruments, {summary['opening_positions']} opening "
            f"positions, {summary['fx_moves']} fx move(s)",
        ),
        (
            "reconciliation",
            f"{summary['broker_reports']:,} broker reports, {summary['position_breaks']} breaks, "
            f"positions equal: {summary['positions_reconciled']}",
        ),
        (
            "alerts",
            ", ".join(
                f"{rule} {sum(by.values())} ({', '.join(by)})"
                for rule, by in summary["alerts"].items()
            )
            or "none",
        ),
        (
            "orders sent / refused",
            f"{summary['orders_sent']:,} / {summary['orders_refused']:,}  "
            f"({summary['events_produced']:,} events, {summary['bad_events']} bad)",
        ),
        ("metrics were at", summary["metrics_url"]),
        ("status was at", summary["status_url"]),
    ]
    print("\nsummary")
    for label, value in rows:
        print(f"  {label:<27}{value}")


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
