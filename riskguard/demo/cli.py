"""The ``riskguard demo`` command: timeline for people, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from riskguard import log
from riskguard.broker import BrokerError
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the Knight-style demo on the embedded broker."""
    from riskguard.demo.live import run_demo  # noqa: PLC0415 - pulls in Kafka and numba

    log.configure("error")  # the timeline is the output; errors still show
    say = (lambda _text: None) if args.json else (lambda text: print(text, flush=True))
    if not args.json:
        print(
            f"riskguard demo: Knight Capital, 1 August 2012, replayed live for "
            f"{args.duration:g} s\n",
            flush=True,
        )
    try:
        report = asyncio.run(run_demo(args.duration, args.trials, say))
    except BrokerError as exc:
        print(f"riskguard demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
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


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``demo``."""
    d = sub.add_parser("demo", help="see a Knight-style runaway halted, on the embedded broker")
    d.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    d.add_argument(
        "--trials",
        type=int,
        default=1,
        help="runaways to inject (resumed in between), for latency percentiles",
    )
    d.add_argument("--json", action="store_true", help="print a JSON summary only")
    d.set_defaults(func=cmd_demo)
