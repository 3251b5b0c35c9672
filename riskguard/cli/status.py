"""``riskguard status``: what a running riskguard holds, and whether it is ready.

The human form shows readiness and failing checks; each standing halt or reduce-only
scope with the time it was decided (UTC, ms) and its evidence
(:mod:`riskguard.evidence`); pending four-eyes approvals; silent feeds; failing
notifiers; rejected limits and users reloads; the other instances of an active-active
pair (live or not, the limits each judges with); in group mode, the input partitions
this instance owns and whether their state is restored, who judges the cross-partition
sums and whether they are whole, and symbols no mark reached; riskguard's topics
whose shape is wrong (``TOPIC:``) and those riskguard repaired (``topic repaired:``),
one line each. Exit 0 when riskguard is ready,
1 when it answered but is not ready (or refused the token), 2 when it cannot be reached
or is not riskguard.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Final

import msgspec

from riskguard.cli.client import (
    ApiError,
    add_connection,
    base_url,
    looks_like,
    read_token,
    request,
)
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, STATUS_EXIT_CODES_HELP
from riskguard.evidence import evidence, number, when
from riskguard.vocabulary import Transition

STATUS_KEYS: Final = ("version", "instance", "ready", "checks", "standing")


def _why(raw: dict[str, Any]) -> str:
    try:
        return evidence(msgspec.convert(raw, Transition))
    except msgspec.ValidationError:
        return str(raw.get("evidence") or raw.get("reason") or "?")


def _lines(reply: dict[str, Any]) -> list[str]:
    """The human form, one string per line."""
    failing = [k for k, ok in reply["checks"].items() if not ok]
    head = f"riskguard {reply['version']} on {reply['instance']}: "
    head += "READY" if reply["ready"] else "NOT READY"
    if failing:
        head += f" (failing: {', '.join(failing)})"
    out = [head, *_consume_lines(reply)]
    standing = reply["standing"]
    if not standing:
        out.append("  no scope is halted or reduce-only")
    else:
        width = max(len(s) for s in standing)
        out.append(f"  standing ({len(standing)}):")
        for scope, tr in sorted(standing.items()):
            since = when(tr.get("decided_ns"))
            out.append(f"    {scope:<{width}}  {tr.get('to', '?'):<11}  {since}  {_why(tr)}")
    out += _unfinished_lines(reply)
    for p in reply.get("approvals") or []:
        out.append(
            f"  pending approval {p['request_id']}: resume {p['scope']} asked by "
            f"{p['requested_by']} at {when(p['requested_ns'])} ({p['reason']}); "
            f"expires {when(p['expires_ns'])}"
        )
    for src in reply.get("sources") or []:
        limit, silent = src.get("limit_ms"), src.get("silent_ms")
        if limit is not None and silent is not None and silent > limit:
            heard = when(src.get("last_heard_ns")) if src.get("last_heard_ns") else "never"
            out.append(
                f"  feed {src['source']} silent {number(silent / 1000, 3)} s "
                f"(limit {number(limit / 1000, 3)} s, rule {src.get('rule')}); last heard {heard}"
            )
    for n in reply.get("notifiers") or []:
        if n.get("failing"):
            out.append(
                f"  notifier {n['sink']} FAILING: {n['failures']} failed attempt(s), "
                f"{n['queued']} queued; last error: {n['last_error']}"
            )
    limits = reply.get("limits") or {}
    if limits.get("last_reload_error"):
        out.append(
            f"  limits reload REJECTED (the limits in force stay: {limits.get('source')}, "
            f"{limits.get('rules')} rules): {limits['last_reload_error']}"
        )
    out += _peer_lines(reply)
    scale = reply.get("scale") or {}
    if scale.get("mode") == "group":
        owned = ", ".join(scale.get("owned") or []) or "none"
        restored = scale.get("restored_seconds")
        restore = "restoring" if restored is None else f"restored in {number(restored, 3)} s"
        if scale.get("assigned") is False:
            restore = "WAITING for the group to assign partitions"
        latest = list((scale.get("checkpoints") or {}).values())
        counts = f"gained at the latest assignment: {sum(c is not None for c in latest)} from a "
        counts += f"checkpoint, {sum(c is None for c in latest)} from their start"
        out.append(f"  group mode: owns {owned} ({restore}; {counts})")
        out += _group_lines(scale)
    topics = reply.get("topics") or {}
    for problem in topics.get("problems") or []:
        out.append(f"  TOPIC: {problem}")
    for repair in topics.get("repaired") or []:  # a line of topic_shape.TopicProblem
        out.append(f"  topic repaired: {str(repair).removesuffix('; repaired')}")
    snapshot = reply.get("snapshot") or {}
    if snapshot.get("failing"):
        since = snapshot.get("last_written") or "none this run"
        out.append(
            f"  SNAPSHOT FAILING: {snapshot['failing']} not written ({snapshot.get('last_error')});"
            f" a restart replays the input since the last one written ({since})"
        )
    if reply.get("instance_conflict"):
        out.append(f"  INSTANCE NAME CONFLICT: {reply['instance_conflict']}")
    http = reply.get("http") or {}
    if http.get("every_interface"):
        out.append(
            f"  API on every interface ({http.get('host')}:{http.get('port')}, http.host): "
            "other hosts can reach it"
        )
    users = reply.get("users") or {}
    if users.get("last_reload_error"):
        out.append(
            f"  users file reload REJECTED (the users in force stay): {users['last_reload_error']}"
        )
    return out


def _consume_lines(reply: dict[str, Any]) -> list[str]:
    """Events applied and the consumer lag (total, the partitions most behind), and a
    stalled consume loop (``consume-stalled``)."""
    applied, bad = reply.get("events_applied", 0), reply.get("bad_events", 0)
    line = f"  events applied {applied:,}, bad {bad:,}"
    lag = reply.get("consumer_lag")
    if lag is not None:  # absent from a riskguard older than the lag report
        behind = sorted((p for p in lag if p["messages"] > 0), key=lambda p: -p["messages"])
        total = sum(p["messages"] for p in behind)
        if not lag:
            line += "; consumer lag not measured yet"
        elif not behind:
            line += f"; consumer lag 0 ({len(lag)} partition(s) read to the end)"
        else:
            worst = ", ".join(
                f"{p['topic']}/{p['partition']} {p['messages']:,}" for p in behind[:3]
            )
            more = f", {len(behind) - 3} more" if len(behind) > 3 else ""
            line += f"; consumer lag {total:,} message(s) ({worst}{more})"
    consume = reply.get("consume") or {}
    if lag and (consume.get("stalled") or reply["checks"].get("broker_reachable") is False):
        line += " as last measured (no fetch gets through)"
    out = [line]
    if consume.get("stalled"):
        error = consume.get("last_error")
        why = f"every fetch fails: {error}" if error else "it is blocked"
        silent = number((consume.get("silent_ms") or 0) / 1000, 3)
        out.append(
            f"  CONSUME STALLED (consume-stalled): no poll of the broker for {silent} s, "
            f"{why}; no heartbeat from this instance (gates count it out)"
        )
    return out


def _unfinished_lines(reply: dict[str, Any]) -> list[str]:
    """What riskguard decided that has not reached its end: states the control topic has
    not taken (the gates do not see them), orders still working past the cancel
    deadline (``cancel-incomplete``), and the times riskguard itself did not run."""
    out = []
    pending = reply.get("control_pending") or []
    if pending:
        out.append(
            f"  NOT ON THE CONTROL TOPIC yet (gates do not see them; retried): {', '.join(pending)}"
        )
    cancels = reply.get("cancels") or {}
    incomplete = cancels.get("incomplete") or {}
    if incomplete.get("count"):
        orders = ", ".join(
            f"{o['order_id']} ({o['scope']})" for o in (incomplete.get("orders") or [])[:3]
        )
        more = incomplete["count"] - min(3, len(incomplete.get("orders") or []))
        out.append(
            f"  CANCEL INCOMPLETE (cancel-incomplete): {incomplete['count']} order(s) still "
            f"working past the {number(cancels.get('deadline_ms'))} ms deadline: {orders}"
            + (f" and {more} more" if more > 0 else "")
        )
    paused = reply.get("paused") or {}
    if paused.get("times"):
        out.append(
            f"  riskguard itself did not run {paused['times']} time(s), the last for "
            f"{_age(paused.get('last_ms') or 0)} (process stopped, VM paused or event loop "
            "blocked)"
        )
    return out


def _age(ms: float) -> str:
    """A heartbeat's age for people: ms under 10 s, then s, min, h."""
    if ms < 10_000:
        return f"{number(ms, 3)} ms"
    for unit, size in (("h", 3_600_000), ("min", 60_000)):
        if ms >= size:
            return f"{number(ms / size, 3)} {unit}"
    return f"{number(ms / 1000, 3)} s"


def _peer_lines(reply: dict[str, Any]) -> list[str]:
    """The other instances heard from lately; those silent for longer in one line."""
    out = []
    for peer in reply.get("peers") or []:
        said = "live" if peer.get("live") else "NOT LIVE"
        digest = str(peer.get("limits_sha256") or "?")[:12]
        agree = "" if peer.get("limits_agree", True) else " (DIFFERENT limits from this one)"
        out.append(
            f"  peer {peer['instance']}: {said}, heartbeat {_age(peer.get('age_ms', 0))} "
            f"ago, limits {digest}{agree}"
        )
    gone = reply.get("peers_gone") or {}
    if gone.get("count"):
        named = gone.get("latest") or []
        names = ", ".join(named)
        more = f" and {gone['count'] - len(named)} more" if gone["count"] > len(named) else ""
        out.append(
            f"  {gone['count']} former peer(s) silent for over {_age(gone['after_ms'])}, no "
            f"longer listed (stopped, scaled in or renamed): {names}{more}"
        )
    return out


def _group_lines(scale: dict[str, Any]) -> list[str]:
    """Group mode: who judges the cross-partition sums and whether they are whole; the
    symbols in play no mark reached (a producer not sending marks to every partition)."""
    out: list[str] = []
    agg = scale.get("aggregate") or {}
    if agg.get("judging") and agg.get("due") is False:
        out.append("  cross-partition rules: none in these limits (nothing to sum)")
    elif agg.get("judging"):
        members = ", ".join(agg.get("instances") or []) or "none"
        if agg.get("complete") and not agg.get("other_limits"):
            out.append(f"  cross-partition rules: judged here, on the sums of {members}")
        else:
            why = (
                f"members under other limits: {', '.join(agg['other_limits'])}"
                if agg.get("other_limits")
                else f"missing {', '.join(agg.get('missing') or []) or 'none'}, superseded in "
                f"part {', '.join(agg.get('split') or []) or 'none'}"
            )
            out.append(f"  cross-partition rules: NOT JUDGED, the sums are not whole ({why})")
    elif agg.get("rules"):
        out.append("  cross-partition rules: judged by the owner of the first input partition")
    marks = scale.get("marks") or {}
    if marks.get("unmarked"):
        names = ", ".join(marks.get("unmarked_symbols") or [])
        out.append(
            f"  UNMARKED: {marks['unmarked']} symbol(s) held or worked that no mark reached "
            f"({names}): marks must go to every input partition"
        )
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Print standing halts and health; exit 0 only when riskguard is ready."""
    try:
        url = base_url(args.url)
        status, reply = request(f"{url}/v1/status", token=read_token(args.token_file))
        looks_like(reply, status, STATUS_KEYS, url)
        if status == 200 and not (
            isinstance(reply["checks"], dict)
            and isinstance(reply["standing"], dict)
            and isinstance(reply["ready"], bool)
        ):
            raise ApiError(f"{url} is not a riskguard API (its status has the wrong shape)")
    except ApiError as exc:
        print(f"riskguard status: {exc.message}", file=sys.stderr)
        return exc.code
    if status != 200:
        hint = " (give a token: --token-file or $RISKGUARD_HTTP_TOKEN)" if status == 401 else ""
        print(f"riskguard status: refused ({status}): {reply['error']}{hint}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print("\n".join(_lines(reply)))
    return EXIT_OK if reply["ready"] else EXIT_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``status``."""
    s = sub.add_parser(
        "status",
        help="standing halts and health of a running riskguard",
        description="Ask a running riskguard what it holds: readiness and failing checks, "
        "standing halts with the time (UTC) and evidence, pending approvals, silent feeds, "
        "failing notifiers, rejected reloads, the partitions owned in group mode. Exits 0 "
        "only when riskguard is ready.",
        epilog=STATUS_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection(s)
    s.add_argument("--json", action="store_true", help="print the whole status document as JSON")
    s.set_defaults(func=cmd_status)
