"""A single-node Apache Kafka (KRaft: broker and controller in one JVM) on loopback ports.

For tests and local work, like :class:`riskguard.broker.EmbeddedBroker` (Tansu), but
the real thing: idempotent producers, log compaction, consumer groups, SASL/SCRAM.
Its data lives in a temporary directory that :meth:`ApacheKafkaBroker.stop` deletes.

Start-up: the storage is formatted (``kafka.tools.StorageTool format``, which also
adds the SCRAM users), then ``kafka.Kafka`` runs with JVM flags that trade peak
speed for start-up time (:data:`FAST_START_JVM`; pass ``jvm_options`` to change
them, e.g. for benchmarks). ``start`` returns once a Kafka client gets cluster
metadata naming this broker, i.e. once it really serves requests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from riskguard.apache_kafka.dist import cache_dir, classpath, java_binary
from riskguard.broker import BrokerError, die_with_parent, free_port

#: JVM flags for a fast start: C1 only, the serial collector, a small heap, no
#: perf-data file. Peak throughput is lower; benchmarks may pass their own. On top,
#: a class-data-sharing archive of Kafka's classes (AppCDS) is written on the first
#: clean stop and used from then on (:func:`class_archive`). Measured on 2 shared
#: cores, format + start to first served request: JVM defaults 2.5-3.5 s, these
#: flags 2.5 s, these flags with the archive 1.3-1.5 s (the JVM's CPU time to first
#: request: 3.5 s, 2.1 s, 1.2 s). A clean stop takes 0.2-0.5 s.
FAST_START_JVM: tuple[str, ...] = (
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Xms128m",
    "-Xmx512m",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)

#: Server settings for a one-node test cluster. Internal topics have one partition
#: and one replica; the log cleaner wakes every 100 ms (default 15 s) with a small
#: dedupe buffer, and segments may be as small as Kafka allows, so a topic created
#: with e.g. ``segment.ms=100, min.cleanable.dirty.ratio=0.01, min.compaction.lag.ms=0``
#: is compacted within a second or two.
TEST_SERVER_CONFIG: Mapping[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "auto.create.topics.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.segment.bytes": str(1 << 20),
    "log.cleaner.threads": "1",
    "log.cleaner.backoff.ms": "100",
    "log.cleaner.dedupe.buffer.size": str(8 << 20),
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
}

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SAFE = re.compile(r"^[A-Za-z0-9._~+-]+$")  # survives --add-scram's [name=..,password=..]

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.config.name = org.apache.kafka.common.config
logger.config.level = warn
"""


def class_archive(java: str, jvm_options: Sequence[str], jars: Sequence[Path]) -> Path | None:
    """Where this JVM, with these options and jars, keeps its AppCDS archive.

    The archive (about 50 MB, in the jar cache) maps Kafka's parsed classes at start
    instead of loading them from the jars: measured on 2 cores, the broker's CPU time
    to first request falls from about 2.1 s to 1.2 s. Keyed by everything that must
    match for the JVM to accept it. None when the cache is not writable.
    """
    folder = cache_dir()
    if not os.access(folder, os.W_OK):
        return None
    binary = os.path.realpath(java)
    built = os.stat(binary).st_mtime_ns  # a JDK update makes a new archive
    key = "\n".join([binary, str(built), *jvm_options, *(j.name for j in jars)])
    return folder / f"classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


class ApacheKafkaBroker:
    """One Apache Kafka node (broker and KRaft controller) on loopback ports.

    ``port`` (PLAINTEXT) and ``controller_port`` default to free ports. With
    ``scram_users`` (name -> password, each ``[A-Za-z0-9._~+-]+``), a SASL_PLAINTEXT
    listener on ``sasl_port`` accepts SCRAM-SHA-256 and SCRAM-SHA-512 for them.
    ``server_config`` adds to or overrides :data:`TEST_SERVER_CONFIG`. Use as a
    context manager, or call :meth:`start` and :meth:`stop`.

    Raises (from ``start``): :class:`~riskguard.apache_kafka.dist.KafkaUnavailableError`
    without Java or the jars; :class:`~riskguard.broker.BrokerError` when the broker
    exits or does not serve within the timeout (the message ends with its log).
    """

    kind = "apache-kafka"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scram_users: Mapping[str, str] | None = None,
        sasl_port: int = 0,
        controller_port: int = 0,
        server_config: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = FAST_START_JVM,
    ) -> None:
        for name, password in (scram_users or {}).items():
            if not (_SAFE.match(name) and _SAFE.match(password)):
                raise ValueError(f"SCRAM user {name!r}: name and password must match {_SAFE}")
        self.host = host
        self._fixed = (port, sasl_port, controller_port)
        self.port, self.sasl_port, self.controller_port = self._fixed
        self.scram_users = dict(scram_users or {})
        self.server_config = {**TEST_SERVER_CONFIG, **(server_config or {})}
        self.jvm_options = tuple(jvm_options)
        self.cluster_id = ""
        self.started_in_s = 0.0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dumping: tuple[Path, Path] | None = None  # (archive, where the JVM writes it)
        self._served = False  # only a JVM that served leaves a representative archive

    # addresses ---------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the PLAINTEXT listener, for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT (SCRAM) listener.

        Raises:
            BrokerError: the broker was made without ``scram_users``.
        """
        if not self.scram_users:
            raise BrokerError("no SASL listener: pass scram_users to ApacheKafkaBroker")
        return f"{self.host}:{self.sasl_port}"

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def log_dir(self) -> Path | None:
        """Kafka's ``log.dirs`` (one folder per partition) while it has a data dir."""
        return self._dir / "logs" if self._dir else None

    @property
    def log_path(self) -> Path | None:
        """The broker's log (stdout and stderr of the JVM) while it has a data dir."""
        return self._dir / "kafka.log" if self._dir else None

    def running(self) -> bool:
        """True while the JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """Its ERROR lines (up to 10, with the exception line after each), then the
        last ``lines`` lines of the broker's log ("" before it starts)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        errors = [
            f"{line}\n  {text[i + 1] if i + 1 < len(text) else ''}".rstrip()
            for i, line in enumerate(text)
            if " ERROR " in line
        ][:10]
        head = "errors:\n" + "\n".join(errors) + "\nlast lines:\n" if errors else ""
        return head + "\n".join(text[-lines:])

    # lifecycle ---------------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> str:
        """Format storage, start the JVM, wait until it serves. Returns the address.

        Free ports are picked anew (up to three tries) if one was taken meanwhile.
        """
        java, jars = java_binary(), classpath()
        began = time.monotonic()
        for attempt in range(3):
            self._pick_ports()
            try:
                self._launch(java, jars, began + timeout_s)
            except BrokerError as exc:
                retry = "Address already in use" in str(exc) and not any(self._fixed)
                self.stop()
                if retry and attempt < 2:
                    continue
                raise
            break
        self.started_in_s = time.monotonic() - began
        return self.bootstrap_servers

    def _pick_ports(self) -> None:
        port, sasl_port, controller_port = self._fixed
        self.port = port or free_port(self.host)
        self.controller_port = controller_port or free_port(self.host)
        self.sasl_port = (sasl_port or free_port(self.host)) if self.scram_users else 0

    def _properties(self, data: Path) -> str:
        listeners = [
            f"PLAINTEXT://{self.host}:{self.port}",
            f"CONTROLLER://{self.host}:{self.controller_port}",
        ]
        advertised = [listeners[0]]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data / "logs"),
            **self.server_config,
        }
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.scram_users:
            listeners.append(f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}")
            advertised.append(listeners[-1])
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            props["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            for mech in SCRAM_MECHANISMS:
                props[f"listener.name.sasl_plaintext.{mech.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocols)
        return "".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items())

    def _java(self, java: str, jars: list[Path], *args: str, cds: Sequence[str] = ()) -> list[str]:
        assert self._dir is not None
        return [
            java,
            *self.jvm_options,
            *cds,
            f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
            "-cp",
            ":".join(str(j) for j in jars),
            *args,
        ]

    def _launch(self, java: str, jars: list[Path], deadline: float) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="riskguard-kafka-"))
        (self._dir / "log4j2.properties").write_text(_LOG4J2)
        config = self._dir / "server.properties"
        config.write_text(self._properties(self._dir))
        self.cluster_id = _cluster_id()
        archive = class_archive(java, self.jvm_options, jars)
        quiet = "-Xlog:cds*=off"  # its notes on skipped classes would bury Kafka's own log
        use = [f"-XX:SharedArchiveFile={archive}", quiet] if archive and archive.is_file() else []
        # "--opt=value": a random cluster id may begin with "-"
        fmt = ["kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}"]
        fmt += [f"--config={config}"]
        for name, password in self.scram_users.items():
            for mech in SCRAM_MECHANISMS:
                fmt += ["--add-scram", f"{mech}=[name={name},password={password}]"]
        try:
            done = subprocess.run(
                self._java(java, jars, *fmt, cds=use),
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("formatting Kafka storage timed out") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise BrokerError(f"formatting Kafka storage failed:\n{tail}")
        if archive is not None and not use:  # first run: the JVM writes it when it exits
            for stale in archive.parent.glob("classes-*.tmp"):  # from killed runs
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink(missing_ok=True)
            self._dumping = archive, archive.with_suffix(f".{os.getpid()}-{id(self)}.tmp")
            use = [f"-XX:ArchiveClassesAtExit={self._dumping[1]}", quiet]
        on_main = threading.current_thread() is threading.main_thread()
        with (self._dir / "kafka.log").open("wb") as log:
            self._proc = subprocess.Popen(
                self._java(java, jars, "kafka.Kafka", str(config), cds=use),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches riskguard, which stops the JVM
                # PR_SET_PDEATHSIG follows the starting *thread*: only tie it to the main one
                preexec_fn=die_with_parent if on_main else None,  # noqa: PLW1509
            )
        atexit.register(self.stop)
        self._wait_serving(deadline)

    def _wait_serving(self, deadline: float) -> None:
        """Until a client gets metadata naming this broker (TCP alone is not enough)."""
        assert self._proc is not None
        last_error = "never listened"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"Apache Kafka exited with {self._proc.returncode} during start-up; "
                    f"its log:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    pass
            except OSError as exc:
                last_error = f"not listening: {exc}"
                time.sleep(0.1)
                continue
            last_error = _serves(self.bootstrap_servers)
            if not last_error:
                self._served = True
                return
            time.sleep(0.2)
        raise BrokerError(
            f"Apache Kafka did not serve requests on {self.bootstrap_servers} in time "
            f"({last_error}); its log:\n{self.log_tail()}"
        )

    def pause(self) -> None:
        """Freeze the JVM (SIGSTOP): connections stay open but nothing answers."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused JVM (SIGCONT)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (clean shutdown), SIGKILL after ``timeout_s``; then delete its data."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # in case someone froze it
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        dumping, self._dumping = self._dumping, None
        if dumping is not None:
            archive, written = dumping
            if self._served and written.is_file() and written.stat().st_size > 0:
                written.replace(archive)  # atomic: a concurrent start maps a whole file
            written.unlink(missing_ok=True)
        self._served = False
        data, self._dir = self._dir, None
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)

    def __enter__(self) -> ApacheKafkaBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _cluster_id() -> str:
    """A random cluster id in Kafka's format (base64url of a UUID, unpadded)."""
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _serves(bootstrap: str) -> str:
    """Empty when a client gets cluster metadata naming a broker and a controller, else why not."""

    async def probe() -> str:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        except Exception as exc:  # any failure means "not yet"; the caller retries
            return repr(exc)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        if not cluster.get("brokers") or cluster.get("controller_id", -1) < 0:
            return f"no broker or controller in metadata yet: {cluster}"
        return ""

    # asyncio.run needs a thread without a running loop (callers may be async tests)
    with ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, probe()).result()
