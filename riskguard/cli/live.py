"""Live commands: ``run``, ``broker`` and ``audit``; and the registration of the
commands that talk to a running riskguard's API (:mod:`riskguard.cli.operate`:
``halt``, ``resume``, ``approve``, ``withdraw``; :mod:`riskguard.cli.status`) and of
``users`` (:mod:`riskguard.cli.users`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from riskguard.apache_kafka.dist import kafka_version
from riskguard.apache_kafka.server import ApacheKafkaBroker
from riskguard.broker import BrokerError, port_in_use
from riskguard.brokers import BROKER_KINDS, make_broker
from riskguard.cli import offline, operate, run, status, users
from riskguard.cli.common import (
    BROKER_EXIT_CODES_HELP,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RUN_EXIT_CODES_HELP,
    port_number,
)

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


def cmd_audit(args: argparse.Namespace) -> int:
    """Print an audit log, oldest first (:func:`riskguard.cli.offline.cmd_audit`)."""
    return offline.cmd_audit(args)


def _parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    text: str,
    description: str,
    epilog: str = EXIT_CODES_HELP,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=text,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the live commands."""
    r = _parser(
        sub,
        "run",
        "run the sidecar (consume, decide, halt, alert)",
        "Run riskguard beside a trading system: consume its events from Kafka, apply the "
        "limits, publish halts to the control topic, alert, and serve the API and the web "
        "console. SIGTERM/SIGINT stop it gracefully; SIGHUP reloads the limits and users.",
        RUN_EXIT_CODES_HELP,
    )
    r.add_argument(
        "--config", metavar="PATH", help="settings file (TOML); env and flags override it"
    )
    r.add_argument("--limits", metavar="PATH", help="limits file (overrides the settings file)")
    r.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers, comma-separated"
    )
    r.add_argument(
        "--http-host",
        help="API and console bind address (default 127.0.0.1; 0.0.0.0 or :: binds every "
        "interface, which is logged and shown in the status; empty is refused)",
    )
    r.add_argument("--http-port", type=int, help="API and console port (default 8321)")
    run.add_arguments(r)
    r.set_defaults(func=cmd_run)

    b = _parser(
        sub,
        "broker",
        "run a local broker: bundled Tansu, or Apache Kafka (Java 17+)",
        "Run a Kafka-protocol broker on loopback for local work and tests, in the "
        "foreground until Ctrl-C. Topics are lost on stop.",
        BROKER_EXIT_CODES_HELP,
    )
    b.add_argument("--port", type=port_number, default=0, help="port on 127.0.0.1 (default: free)")
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

    operate.add_parsers(sub)
    status.add_parser(sub)
    users.add_parser(sub)

    a = _parser(
        sub,
        "audit",
        "print an audit log",
        "Print riskguard's audit log (JSONL), oldest first: transitions, manual actions, "
        "refused requests, four-eyes steps, limits and users reloads.",
    )
    a.add_argument("file", help="path of the audit log (JSONL)")
    a.set_defaults(func=cmd_audit)
