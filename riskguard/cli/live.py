"""Live commands: ``run``, ``broker``, ``halt``, ``resume``, ``status`` and ``audit``.

``halt``, ``resume`` and ``status`` talk to a running riskguard through its HTTP
API, so a manual halt takes exactly the path of an automatic one. The token is
read from ``RISKGUARD_HTTP_TOKEN`` or ``--token-file``, never from a flag value.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from riskguard.apache_kafka.dist import kafka_version
from riskguard.apache_kafka.server import ApacheKafkaBroker
from riskguard.broker import BrokerError, port_in_use
from riskguard.brokers import BROKER_KINDS, make_broker
from riskguard.cli import offline, run
from riskguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from riskguard.evidence import sentence

DEFAULT_URL = "http://127.0.0.1:8321"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM or SIGINT (:mod:`riskguard.cli.run`)."""
    return run.cmd_run(args)


def cmd_broker(args: argparse.Namespace) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM/SIGHUP (or fetch Kafka's jars).

    The broker is stopped on every way out: a signal, its own exit, an error. Should
    this process be killed outright, the broker dies with it (``PR_SET_PDEATHSIG``).
    A ``--port`` already in use is refused (exit 2) before anything starts.
    """
    if args.fetch:
        return _fetch_kafka(args.kind)
    if args.port and port_in_use("127.0.0.1", args.port):
        print(
            f"riskguard broker: port {args.port} on 127.0.0.1 is already in use (another "
            "broker?): choose another --port, or leave it out for a free one",
            file=sys.stderr,
        )
        return EXIT_USAGE
    stop = threading.Event()
    signals = (*STOP_SIGNALS, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    broker = None
    try:
        broker = make_broker(args.kind, port=args.port)
        address = broker.start()
        kafka = broker if isinstance(broker, ApacheKafkaBroker) else None
        if kafka is None:
            print(f"embedded broker (Tansu, in memory) listening on {address}")
        else:
            print(f"Apache Kafka {kafka_version()} (KRaft, one node) listening on {address}")
            print(f"  data and log (deleted on stop): {kafka.log_path}")
        print(f"  export KAFKA_BOOTSTRAP_SERVERS={address}")
        print("Ctrl-C to stop; all topics are lost on stop.", flush=True)
        while not stop.wait(0.5):
            if not broker.running():
                tail = f"; its log:\n{kafka.log_tail()}" if kafka else ""
                print(f"riskguard broker: the broker exited unexpectedly{tail}", file=sys.stderr)
                return EXIT_FAILED
    except BrokerError as exc:
        print(f"riskguard broker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if broker is not None:
            broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _fetch_kafka(kind: str) -> int:
    """``--fetch``: Kafka's jars into the cache. Without Java or Maven: say so, exit 0."""
    if kind != "apache-kafka":
        print("riskguard broker: --fetch goes with --kind apache-kafka", file=sys.stderr)
        return EXIT_USAGE
    from riskguard.apache_kafka import KafkaUnavailableError, fetch  # noqa: PLC0415

    try:
        home = fetch()
    except KafkaUnavailableError as exc:  # optional: Tansu needs none of it
        print(
            f"riskguard broker: Apache Kafka not fetched ({exc}). Its tests will skip "
            "(and fail where CI is set); everything else works on Tansu.",
            file=sys.stderr,
        )
        return EXIT_OK
    except BrokerError as exc:
        print(f"riskguard broker: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Apache Kafka {kafka_version()} jars in {home}")
    return EXIT_OK


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return os.environ.get("RISKGUARD_HTTP_TOKEN")


def request(
    url: str,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, dict[str, Any]]:
    """One JSON request to the API; returns (status, body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except json.JSONDecodeError:
            return exc.code, {"error": exc.reason}


def _change(args: argparse.Namespace, path: str) -> int:
    body: dict[str, Any] = {"scope": args.scope, "operator": args.operator, "reason": args.reason}
    if path == "halt":
        body["action"] = args.action
    try:
        status, reply = request(f"{args.url}/v1/{path}", "POST", body, _token(args))
    except (urllib.error.URLError, OSError) as exc:
        print(f"riskguard {path}: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if status != 200:
        print(f"riskguard {path}: refused ({status}): {reply.get('error', reply)}", file=sys.stderr)
        return EXIT_FAILED
    if reply["changed"]:
        tr = reply["transition"]
        print(f"{tr['scope']}: {tr['from']} -> {tr['to']} (id {tr['id']})")
    else:
        print(f"{reply['scope']}: already {reply['state']}; nothing changed")
    return EXIT_OK


def cmd_halt(args: argparse.Namespace) -> int:
    """Manually halt (or reduce) a scope through the API."""
    return _change(args, "halt")


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume a scope through the API."""
    return _change(args, "resume")


def cmd_status(args: argparse.Namespace) -> int:
    """Print standing halts and health."""
    try:
        status, reply = request(f"{args.url}/v1/status")
    except (urllib.error.URLError, OSError) as exc:
        print(f"riskguard status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(reply, indent=2))
        return EXIT_OK if status == 200 else EXIT_FAILED
    print(
        f"riskguard {reply['version']} on {reply['instance']}: "
        f"{'READY' if reply['ready'] else 'NOT READY'}"
    )
    failing = [k for k, ok in reply["checks"].items() if not ok]
    if failing:
        print(f"  failing checks: {', '.join(failing)}")
    print(f"  events applied {reply['events_applied']:,}, bad {reply['bad_events']:,}")
    if not reply["standing"]:
        print("  no scope is halted or reduce-only")
    for scope, tr in sorted(reply["standing"].items()):
        why = (
            f"by {tr.get('operator')}: {tr.get('reason')}"
            if tr.get("kind") == "manual"
            else sentence(
                tr.get("rule"), tr.get("metric"), tr.get("value"), tr.get("limit"), tr.get("reason")
            )
        )
        print(f"  {scope:<28} {tr['to']:<12} {why}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """Print an audit log, oldest first (:func:`riskguard.cli.offline.cmd_audit`)."""
    return offline.cmd_audit(args)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the live commands."""
    r = sub.add_parser("run", help="run the sidecar (consume, decide, halt, alert)")
    r.add_argument("--config", help="settings file (TOML); env and flags override it")
    r.add_argument("--limits", help="limits file (overrides the settings file)")
    r.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    r.add_argument("--http-host", help="API bind address (default 127.0.0.1)")
    r.add_argument("--http-port", type=int, help="API port (default 8321)")
    run.add_arguments(r)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser(
        "broker", help="run a local broker: bundled Tansu, or Apache Kafka (Java 17+)"
    )
    b.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    b.add_argument(
        "--kind",
        choices=BROKER_KINDS,
        default="tansu",
        help="tansu (bundled, in memory; the default) or apache-kafka (one KRaft node)",
    )
    b.add_argument(
        "--fetch",
        action="store_true",
        help="with --kind apache-kafka: fetch its jars through Maven and exit "
        "(without Java or Maven: say so and exit 0; Apache Kafka is optional)",
    )
    b.set_defaults(func=cmd_broker)

    for name, func, text in (
        ("halt", cmd_halt, "halt a scope now (manual)"),
        ("resume", cmd_resume, "resume a halted scope"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--scope", required=True, help="firm | account:<id> | strategy:<id> | symbol:<id>"
        )
        p.add_argument("--reason", required=True, help="why (goes to the audit log)")
        p.add_argument("--operator", default=getpass.getuser(), help="your name")
        p.add_argument("--url", default=os.environ.get("RISKGUARD_URL", DEFAULT_URL))
        p.add_argument(
            "--token-file", help="file holding the API token (default: $RISKGUARD_HTTP_TOKEN)"
        )
        if name == "halt":
            p.add_argument("--action", choices=("halt", "reduce_only"), default="halt")
        p.set_defaults(func=func)

    s = sub.add_parser("status", help="standing halts and health of a running riskguard")
    s.add_argument("--url", default=os.environ.get("RISKGUARD_URL", DEFAULT_URL))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    a = sub.add_parser("audit", help="print an audit log")
    a.add_argument("file", help="audit log (JSONL)")
    a.set_defaults(func=cmd_audit)
