"""``halt``, ``resume``, ``approve`` and ``withdraw``: manual actions through the API.

A manual halt takes exactly the path of an automatic one. Who acts is the owner of
the token (``--token-file`` or ``$RISKGUARD_HTTP_TOKEN``), never a name given here.
A resume at a four-eyes level (firm and account by default) becomes a request that a
second risk-admin approves (``riskguard approve REQUEST_ID``). After a resume takes
effect, the command watches the scope for :data:`REHALT_WATCH_S`: when a breach that
still stands halts it again at once, it says so, by which rule and value, and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
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
from riskguard.cli.common import (
    APPROVE_EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    HALT_EXIT_CODES_HELP,
    RESUME_EXIT_CODES_HELP,
    WITHDRAW_EXIT_CODES_HELP,
)
from riskguard.evidence import evidence, when
from riskguard.vocabulary import Transition

REHALT_WATCH_S: Final = 1.0
"""How long after a resume the command watches for the scope being halted again."""
REPLY_KEYS: Final = ("changed", "scope", "state")


def _say_refused(command: str, status: int, reply: dict[str, Any]) -> int:
    hint = " (give a token: --token-file or $RISKGUARD_HTTP_TOKEN)" if status == 401 else ""
    print(
        f"riskguard {command}: refused ({status}): {reply.get('error', reply)}{hint}",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    token = read_token(args.token_file)
    url = base_url(args.url)
    status, reply = request(f"{url}/v1/{path}", "POST", body, token)
    if status == 200:
        keys = ("status", "request_id") if path == "withdraw" else REPLY_KEYS
    else:
        keys = ("status", "request_id")  # 202: a pending four-eyes request
    looks_like(reply, status, keys, url)
    return status, reply


def _rehalted(args: argparse.Namespace, resumed: dict[str, Any]) -> Transition | None:
    """The transition that halted the resumed scope again within the watch, if any."""
    token = read_token(args.token_file)
    deadline = time.monotonic() + REHALT_WATCH_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            status, reply = request(f"{base_url(args.url)}/v1/status", token=token)
        except ApiError:
            return None
        standing = reply.get("standing") if status == 200 else None
        if not isinstance(standing, dict):
            return None
        raw = standing.get(resumed["scope"])
        if raw is not None:
            try:
                tr = msgspec.convert(raw, Transition)
            except msgspec.ValidationError:
                return None
            if tr.decided_ns >= resumed["decided_ns"]:
                return tr
    return None


def _report(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    """Print what changed; for a resume, watch for an immediate re-halt."""
    if not reply["changed"]:
        print(f"{reply['scope']}: already {reply['state']}; nothing changed")
        return EXIT_OK
    tr = reply["transition"]
    print(f"{tr['scope']}: {tr['from']} -> {tr['to']} (id {tr['id']})")
    if tr["to"] != "ACTIVE":
        return EXIT_OK
    again = _rehalted(args, tr)
    if again is None:
        return EXIT_OK
    after_ms = (again.decided_ns - tr["decided_ns"]) / 1e6
    verb = "re-halted" if again.to == "HALTED" else f"set {again.to} again"
    print(
        f"{again.scope}: {verb} {after_ms:.0f} ms after the resume "
        f"({again.from_} -> {again.to} at {when(again.decided_ns)}): {evidence(again)}. "
        "The breach still stands: remove its cause before resuming again."
    )
    return EXIT_FAILED


def _run(command: str, args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    try:
        status, reply = _post(args, path, body)
        if status == 202 and reply.get("status") == "pending":
            rid = reply["request_id"]
            at = f" --url {args.url}" if args.url else ""  # where this request was made
            print(
                f"{reply['scope']}: resume requested, pending a second risk-admin's approval "
                f"(request {rid}, expires {reply.get('expires_at', '?')}).\n"
                f"  approve: riskguard approve {rid}{at} --reason '...'\n"
                f"  withdraw: riskguard withdraw {rid}{at} --reason '...'"
            )
            if reply.get("shared") is False:
                print(
                    "  not on the control topic yet (the broker did not take it in time; "
                    "retried): only this instance lists it, so approve it through this URL"
                )
            return EXIT_OK
        if status != 200:
            return _say_refused(command, status, reply)
        if path == "withdraw":
            print(f"request {reply.get('request_id')} ({reply.get('scope')}): withdrawn")
            return EXIT_OK
        return _report(args, reply)
    except ApiError as exc:
        print(f"riskguard {command}: {exc.message}", file=sys.stderr)
        return exc.code


def cmd_halt(args: argparse.Namespace) -> int:
    """Manually halt (or reduce) a scope through the API."""
    body = {"scope": args.scope, "reason": args.reason, "action": args.action}
    return _run("halt", args, "halt", body)


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume a scope through the API (or ask for it, at a four-eyes level)."""
    return _run("resume", args, "resume", {"scope": args.scope, "reason": args.reason})


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve another risk-admin's pending resume: it is carried out now."""
    body = {"request_id": args.request_id, "reason": args.reason}
    return _run("approve", args, "approve", body)


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Withdraw a pending resume request."""
    body = {"request_id": args.request_id, "reason": args.reason}
    return _run("withdraw", args, "withdraw", body)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``halt``, ``resume``, ``approve`` and ``withdraw``."""
    raw = argparse.RawDescriptionHelpFormatter
    epilogs = {
        "halt": HALT_EXIT_CODES_HELP,
        "resume": RESUME_EXIT_CODES_HELP,
        "approve": APPROVE_EXIT_CODES_HELP,
        "withdraw": WITHDRAW_EXIT_CODES_HELP,
    }
    for name, func, text, desc in (
        (
            "halt",
            cmd_halt,
            "halt a scope now (operator or risk-admin)",
            "Halt a scope (or set it reduce-only) through riskguard's API. The halt is "
            "recorded under your token's owner; it also voids a pending resume of the scope.",
        ),
        (
            "resume",
            cmd_resume,
            "resume a halted scope (risk-admin; four-eyes at firm and account)",
            "Lower a halted or reduce-only scope to ACTIVE (risk-admin). At a four-eyes "
            "level (firm and account by default) this asks for a second risk-admin's "
            "approval and prints the request id. A resume that a standing breach re-halts "
            f"within {REHALT_WATCH_S:g} s is reported, with the rule and value, and exits 1.",
        ),
    ):
        p = sub.add_parser(
            name, help=text, description=desc, epilog=epilogs[name], formatter_class=raw
        )
        p.add_argument(
            "--scope",
            required=True,
            help="firm | account:<id> | strategy:<id> | symbol:<id> | venue:<MIC>",
        )
        p.add_argument("--reason", required=True, help="why (goes to the audit log)")
        if name == "halt":
            p.add_argument(
                "--action",
                choices=("halt", "reduce_only"),
                default="halt",
                help="halt: no orders; reduce_only: only orders that reduce a position "
                "(the scope's own; a symbol's or venue's: the firm's) (default: halt)",
            )
        add_connection(p)
        p.set_defaults(func=func)
    for name, func, text, desc in (
        (
            "approve",
            cmd_approve,
            "approve another risk-admin's pending resume (four-eyes)",
            "Approve a pending resume request made by another risk-admin: the resume is "
            "carried out now, recorded with both names. You cannot approve your own.",
        ),
        (
            "withdraw",
            cmd_withdraw,
            "withdraw a pending resume request",
            "End a pending resume request without resuming (any risk-admin).",
        ),
    ):
        p = sub.add_parser(
            name, help=text, description=desc, epilog=epilogs[name], formatter_class=raw
        )
        p.add_argument("request_id", help="the request id printed by `riskguard resume`")
        p.add_argument("--reason", required=True, help="why (goes to the audit log)")
        add_connection(p)
        p.set_defaults(func=func)
