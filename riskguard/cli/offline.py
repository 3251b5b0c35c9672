"""Offline commands: ``validate`` and ``replay``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import msgspec

from riskguard import examples
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from riskguard.limits import LimitsError, load
from riskguard.limits.vocabulary import describe
from riskguard.replay import ReplayError, ReplayReport, replay
from riskguard.vocabulary import Transition


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.6g}" if abs(v) < 1e6 else f"{v:,.0f}"


def format_transition(tr: Transition) -> str:
    """One human-readable line for a transition."""
    change = f"ALERT ({tr.to})" if tr.is_alert else f"{tr.from_} -> {tr.to}"
    why = f"{tr.rule}  {_num(tr.value)} vs limit {_num(tr.limit)}" if tr.rule else ""
    if tr.operator:
        why = f"by {tr.operator}: {tr.reason}"
    return f"{_time(tr.ts)}  {tr.scope:<24} {change:<26} {why}"


def print_summary(report: ReplayReport, out: TextIO) -> None:
    """The end-of-replay summary: counts, bad events, and per-rule peaks."""
    halts = sum(1 for t in report.transitions if t.to == "HALTED" and not t.is_alert)
    reduces = sum(1 for t in report.transitions if t.to == "REDUCE_ONLY" and not t.is_alert)
    alerts = sum(1 for t in report.transitions if t.is_alert)
    w = out.write
    w(f"\nreplay of {report.source}\n")
    w(f"  lines read     {report.lines:,}\n  events applied {report.applied:,}\n")
    w(f"  bad events     {report.bad:,}\n")
    for reason, n in report.bad_by_reason.most_common():
        w(f"    {reason:<28} {n:,}\n")
    for bad in report.bad_samples:
        w(f"    {bad.position}: {bad.reason}: {bad.detail}\n")
    if report.bad > len(report.bad_samples):
        w(f"    ... and {report.bad - len(report.bad_samples):,} more\n")
    w(f"  transitions    {halts} halt, {reduces} reduce-only, {alerts} alert\n")
    w(f"  elapsed        {report.elapsed_s:.2f} s ({report.events_per_s:,.0f} events/s)\n")
    w("\nrule peaks (peak / limit: 1.00 is at the limit, above it breaches)\n")
    w(f"  {'rule':<22} {'metric':<22} {'evaluated':>10} {'peak':>14} {'limit':>14} {'ratio':>7}\n")
    for p in report.peaks:
        r = p.rule
        peak = p.low if r.max is None else p.high
        limit = r.min if r.max is None else r.max
        ratio = "-" if p.utilisation is None else f"{p.utilisation:.2f}"
        w(
            f"  {r.name:<22} {r.metric:<22} {p.evaluations:>10,} {_num(peak):>14} "
            f"{_num(limit):>14} {ratio:>7}\n"
        )


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a limits file; list every problem."""
    if args.metrics:
        print(describe())
        return EXIT_OK
    if not args.file:
        print("riskguard validate: give a limits file (or --metrics)", file=sys.stderr)
        return EXIT_USAGE
    try:
        limits = load(args.file)
    except LimitsError as exc:
        print(f"{exc.source}: INVALID, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    actions: dict[str, int] = {}
    for r in limits.rules:
        actions[r.action] = actions.get(r.action, 0) + 1
    counts = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    print(f"{args.file}: OK, {len(limits.rules)} rule(s) ({counts}) sha256={limits.digest[:12]}")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a recorded session through the engine."""
    if args.example:
        events_path = examples.SESSION
        limits_path = Path(args.limits) if args.limits else examples.LIMITS
    else:
        if not args.events or not args.limits:
            print("riskguard replay: give EVENTS and --limits FILE (or --example)", file=sys.stderr)
            return EXIT_USAGE
        events_path, limits_path = Path(args.events), Path(args.limits)
    try:
        limits = load(limits_path)
    except LimitsError as exc:
        print(f"riskguard replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    jsonl = args.format == "jsonl"
    encoder = msgspec.json.Encoder()
    if not jsonl:
        out.write(f"{'event time (UTC)':<26}  {'scope':<24} {'change':<26} rule / evidence\n")

    def show(tr: Transition) -> None:
        if jsonl:
            out.buffer.write(encoder.encode(tr) + b"\n")
        elif not tr.is_alert or not args.quiet_alerts:
            out.write(format_transition(tr) + "\n")

    try:
        report = replay(
            events_path,
            limits,
            on_transition=show,
            progress=args.progress,
            batch_size=args.batch_size,
        )
    except ReplayError as exc:
        print(f"riskguard replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out.flush()
    print_summary(report, sys.stderr if jsonl else out)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``validate`` and ``replay``."""
    v = sub.add_parser("validate", help="check a limits file and list every problem")
    v.add_argument("file", nargs="?", help="limits file (TOML)")
    v.add_argument("--metrics", action="store_true", help="list the metric vocabulary")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("replay", help="run a recorded JSONL session through the engine")
    r.add_argument("events", nargs="?", help="JSONL file of events (.gz accepted)")
    r.add_argument("--limits", help="limits file (TOML)")
    r.add_argument(
        "--example",
        action="store_true",
        help="replay the bundled Knight-style session under the example limits",
    )
    r.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table for people (default); jsonl: one transition per line on "
        "stdout, summary on stderr",
    )
    r.add_argument("--quiet-alerts", action="store_true", help="table: hide alert lines")
    r.add_argument("--batch-size", type=int, default=8192, help=argparse.SUPPRESS)
    prog = r.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    r.set_defaults(func=cmd_replay)
