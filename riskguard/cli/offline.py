"""Offline commands: ``validate`` and ``replay``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import msgspec

from riskguard import audit, examples
from riskguard.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    REPLAY_EXIT_CODES_HELP,
    VALIDATE_EXIT_CODES_HELP,
)
from riskguard.evidence import number, percent, ratio, versus
from riskguard.inspection import RulePeak
from riskguard.limits import LimitsError, LimitsUnreadableError, load
from riskguard.limits.scale import check_group_limits, summed_rules
from riskguard.limits.vocabulary import describe
from riskguard.replay import ReplayError, ReplayReport, replay
from riskguard.settings import EngineSettings
from riskguard.state.codes import JUMP_CONFIRM
from riskguard.vocabulary import Transition
from riskguard.warmup import COMPILE_NOTICE, kernels_cached

#: How many keys (worst skew first) and skewed events the summary lists.
SHOWN_SKEW_KEYS = 10
SHOWN_SKEW_SAMPLES = 5


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def format_transition(tr: Transition) -> str:
    """One human-readable line for a transition (the value with enough digits to differ
    from its limit, :func:`riskguard.evidence.versus`)."""
    change = f"ALERT ({tr.to})" if tr.is_alert else f"{tr.from_} -> {tr.to}"
    if tr.kind == "resolve":
        change = f"RESOLVED ({tr.to})"
    elif tr.level is not None:
        change = f"WARNING {percent(tr.level)} ({tr.to})"
    why = ""
    if tr.rule:
        value, limit = versus(tr.value, tr.limit)
        why = f"{tr.rule}  {value} vs limit {limit}"
        if tr.symbol:
            why += f"  ({tr.symbol})"
    if tr.operator:
        why = f"by {tr.operator}: {tr.reason}"
    return f"{_time(tr.ts)}  {tr.scope:<24} {change:<26} {why}"


def peak_row(p: RulePeak) -> tuple[str, str, str, str]:
    """(peak, limit, ratio, scope) of a rule for the peaks table, all from one side.

    For a two-sided band the side that came closer to its limit is shown: its extreme
    value, that side's limit, the ratio of the two and the scope that reached it.
    Before any evaluation: ``-`` for all but the limit.
    """
    r = p.rule
    value, scope = p.worst
    if value is None or p.high is None or p.low is None:
        return "-", number(r.min if r.max is None else r.max), "-", "-"
    low_side = r.utilisation(p.low) > r.utilisation(p.high)  # as RulePeak.worst chooses
    if low_side:
        limit = r.min if r.min is not None else r.max
    else:
        limit = r.max if r.max is not None else r.min
    util = r.utilisation(value)
    shown_value, shown_limit = versus(value, limit)
    return shown_value, shown_limit, ratio(None if util == -math.inf else util), scope or "-"


def _ms(ns: int) -> str:
    return f"{number(ns / 1e6)} ms"


def print_summary(
    report: ReplayReport, out: TextIO, settings: EngineSettings | None = None
) -> None:
    """The end-of-replay summary: counts (bad, duplicate, skewed and late events) and
    per-rule peaks. ``settings`` are the engine settings the replay ran with (for the
    bounds the summary quotes; default :class:`EngineSettings`)."""
    cfg = settings or EngineSettings()
    halts = sum(1 for t in report.transitions if t.to == "HALTED" and not t.is_alert)
    reduces = sum(1 for t in report.transitions if t.to == "REDUCE_ONLY" and not t.is_alert)
    alerts = sum(1 for t in report.transitions if t.kind == "alert")
    resolved = sum(1 for t in report.transitions if t.kind == "resolve")
    w = out.write
    w(f"\nreplay of {report.source}\n")
    w(f"  lines read     {report.lines:,}\n  events applied {report.applied:,}\n")
    w(f"  duplicates     {report.duplicates:,}  (redeliveries, not applied again)\n")
    w(f"  bad events     {report.bad:,}\n")
    for reason, n in report.bad_by_reason.most_common():
        w(f"    {reason:<28} {n:,}\n")
    for bad in report.bad_samples:
        w(f"    {bad.position}: {bad.reason}: {bad.detail}\n")
    if report.bad > len(report.bad_samples):
        w(f"    ... and {report.bad - len(report.bad_samples):,} more\n")
    w(
        f"  skewed         {report.skewed:,}  (stamped over {cfg.max_clock_skew_ms:,} ms ahead "
        "of the clock; applied at the clock)\n"
    )
    worst = sorted(report.skew_by_key.items(), key=lambda kv: (-kv[1], kv[0]))
    if worst:
        w("    worst skew per key:\n")
    for key, skew in worst[:SHOWN_SKEW_KEYS]:
        w(f"      {key:<26} {_ms(skew)} ahead\n")
    if len(worst) > SHOWN_SKEW_KEYS:
        w(f"      ... and {len(worst) - SHOWN_SKEW_KEYS:,} more keys\n")
    samples = report.skew_samples[:SHOWN_SKEW_SAMPLES]
    if samples:
        w("    first skewed events:\n")
    for s in samples:
        w(f"      {s.origin}: {s.key} stamped {_time(s.ts)}, {_ms(s.skew_ns)} ahead\n")
    if report.skewed > len(samples) > 0:
        w(f"      ... and {report.skewed - len(samples):,} more skewed events\n")
    w(
        f"  late           {report.late:,}  (over {cfg.max_lateness_ms:,} ms behind the clock; "
        "counted in windows as now)\n"
    )
    if report.jumps:
        w(
            f"  clock jumps    {report.jumps:,}  (gaps in event time followed: "
            f"{JUMP_CONFIRM} events in a row far ahead)\n"
        )
    w(
        f"  transitions    {halts} halt, {reduces} reduce-only, {alerts} alert, "
        f"{resolved} resolved (alerts re-armed)\n"
    )
    w(f"  elapsed        {report.elapsed_s:.2f} s ({report.events_per_s:,.0f} events/s)\n")
    w("\nrule peaks (peak / limit: 1.00 is at the limit, above it breaches)\n")
    w(
        f"  {'rule':<22} {'metric':<22} {'evaluated':>10} {'peak':>14} {'limit':>14} "
        f"{'ratio':>7}  reached by\n"
    )
    for p in report.peaks:
        r = p.rule
        peak, limit, util, scope = peak_row(p)
        w(
            f"  {r.name:<22} {r.metric:<22} {p.evaluations:>10,} {peak:>14} "
            f"{limit:>14} {util:>7}  {scope}\n"
        )


def cmd_audit(args: argparse.Namespace) -> int:
    """Print an audit log, oldest first: UTC time with ms, kind, record.

    Exit 2 (one line) when the file cannot be read or is not an audit log; exit 1 when
    lines were skipped as unreadable (a torn write after a crash), after printing the rest.
    """
    torn: list[int] = []
    try:
        for number, rec in audit.lines(args.file):
            if rec is None:
                torn.append(number)
                continue
            when = audit.utc_ms(rec["logged_ns"], " ", " UTC")
            body = json.dumps(rec["record"], sort_keys=True)
            print(f"{when}  {rec['kind']:<14} {body}")
    except BrokenPipeError:
        raise  # the reader went away: not the audit log's fault (riskguard.cli.main)
    except OSError as exc:
        print(f"riskguard audit: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except audit.AuditFormatError as exc:
        sys.stdout.flush()
        print(f"riskguard audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if torn:
        print(
            f"riskguard audit: {len(torn)} line(s) not JSON, skipped (first: line {torn[0]})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


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
        if args.group:  # what `run` in group mode refuses, at start and on reload
            check_group_limits(limits)
    except LimitsUnreadableError as exc:  # like run and replay: an unusable input, exit 2
        print(f"riskguard validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LimitsError as exc:
        print(f"{exc.source}: INVALID, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    if not limits.rules:
        print(
            f"{args.file}: OK, but it has no rules: nothing would ever halt or alert "
            f"sha256={limits.digest[:12]}"
        )
        return EXIT_OK
    actions: dict[str, int] = {}
    for r in limits.rules:
        actions[r.action] = actions.get(r.action, 0) + 1
    counts = ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    print(f"{args.file}: OK, {len(limits.rules)} rule(s) ({counts}) sha256={limits.digest[:12]}")
    summed = [r.name for r in summed_rules(limits)]
    if args.group and summed:
        print(
            f"  group mode sums {len(summed)} cross-partition rule(s) through the aggregation "
            f"topic (judged up to scale.aggregate_interval_ms later): {', '.join(summed)}"
        )
    return EXIT_OK


#: The largest bound in ms (or s, for the horizon) the engine can hold as int64 ns.
_MAX_MS = (2**63 - 1) // 1_000_000
_MAX_S = _MAX_MS // 1000


def engine_settings(args: argparse.Namespace) -> EngineSettings | str:
    """The :class:`EngineSettings` of the ``--max-clock-skew-ms``, ``--max-lateness-ms``,
    ``--dedupe-horizon-s`` and ``--dedupe-max-ids`` flags, or a one-line problem."""
    for flag, value, top in (
        ("--max-clock-skew-ms", args.max_clock_skew_ms, _MAX_MS),
        ("--max-lateness-ms", args.max_lateness_ms, _MAX_MS),
        ("--dedupe-horizon-s", args.dedupe_horizon_s, _MAX_S),
    ):
        if not (math.isfinite(value) and 0 <= value <= top):
            return f"{flag} must be a number from 0 to {top:,}, got {value}"
    if args.dedupe_max_ids < 1:
        return f"--dedupe-max-ids must be at least 1, got {args.dedupe_max_ids}"
    return EngineSettings(
        max_clock_skew_ms=args.max_clock_skew_ms,
        max_lateness_ms=args.max_lateness_ms,
        dedupe_horizon_s=args.dedupe_horizon_s,
        dedupe_max_ids=args.dedupe_max_ids,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a recorded session through the engine."""
    if args.example and args.events:
        print(
            f"riskguard replay: --example replays the bundled session, so {args.events} "
            "would be ignored: give EVENTS --limits FILE, or --example alone",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.example:
        events_path = examples.SESSION
        limits_path = Path(args.limits) if args.limits else examples.LIMITS
    else:
        if not args.events or not args.limits:
            print("riskguard replay: give EVENTS and --limits FILE (or --example)", file=sys.stderr)
            return EXIT_USAGE
        events_path, limits_path = Path(args.events), Path(args.limits)
    settings = engine_settings(args)
    if isinstance(settings, str):
        print(f"riskguard replay: {settings}", file=sys.stderr)
        return EXIT_USAGE
    try:
        limits = load(limits_path)
    except LimitsError as exc:
        print(f"riskguard replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    jsonl = args.format == "jsonl"
    encoder = msgspec.json.Encoder()
    headed = jsonl  # the table's header goes out with its first line: none before an error

    def head() -> None:
        nonlocal headed
        if not headed:
            out.write(f"{'event time (UTC)':<26}  {'scope':<24} {'change':<26} rule / evidence\n")
            headed = True

    def show(tr: Transition) -> None:
        if jsonl:
            out.buffer.write(encoder.encode(tr) + b"\n")
        elif not tr.is_alert or not args.quiet_alerts:
            head()
            out.write(format_transition(tr) + "\n")

    if not kernels_cached():
        print(f"riskguard replay: {COMPILE_NOTICE}", file=sys.stderr, flush=True)
    try:
        report = replay(
            events_path,
            limits,
            on_transition=show,
            progress=args.progress,
            batch_size=args.batch_size,
            settings=settings,
        )
    except ReplayError as exc:
        print(f"riskguard replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    head()
    out.flush()
    print_summary(report, sys.stderr if jsonl else out, settings)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``validate`` and ``replay``."""
    raw = argparse.RawDescriptionHelpFormatter
    v = sub.add_parser(
        "validate",
        help="check a limits file and list every problem",
        epilog=VALIDATE_EXIT_CODES_HELP,
        formatter_class=raw,
    )
    v.add_argument("file", nargs="?", help="limits file (TOML)")
    v.add_argument("--metrics", action="store_true", help="list the metric vocabulary")
    v.add_argument(
        "--group",
        action="store_true",
        help='also refuse the rules [scale] mode = "group" cannot judge (scopes spanning '
        "input partitions whose metric is not a sum over accounts), and list those it sums "
        "through the aggregation topic (docs/deployment.md, Scale-out)",
    )
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser(
        "replay",
        help="run a recorded JSONL session through the engine",
        epilog=REPLAY_EXIT_CODES_HELP,
        formatter_class=raw,
    )
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
    engine = EngineSettings()
    r.add_argument(
        "--max-clock-skew-ms",
        type=int,
        default=engine.max_clock_skew_ms,
        metavar="MS",
        help="an event stamped more than this ahead of the latest trusted event time is "
        "applied at that time (default %(default)s; docs/events.md, Clock skew)",
    )
    r.add_argument(
        "--max-lateness-ms",
        type=int,
        default=engine.max_lateness_ms,
        metavar="MS",
        help="an event more than this behind the clock counts in windows as now "
        "(default %(default)s)",
    )
    r.add_argument(
        "--dedupe-horizon-s",
        type=float,
        default=engine.dedupe_horizon_s,
        metavar="S",
        help="event time for which closed orders and executions are remembered, to "
        "recognise redeliveries and find a bust's execution (default %(default)s)",
    )
    r.add_argument(
        "--dedupe-max-ids",
        type=int,
        default=engine.dedupe_max_ids,
        metavar="N",
        help="at most this many closed orders and executions are remembered (default %(default)s)",
    )
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
