"""structlog configured to write one JSON object per line, serialised by orjson.

Secrets never reach a log line: processors redact any key that looks like a
credential before rendering.

Libraries that log through the standard :mod:`logging` module (aiokafka, aiohttp,
asyncio), and :mod:`warnings`, are routed through the same structlog chain, so every
line on stderr is JSON. Their repeats are rate-limited: while a broker is down
aiokafka logs the same complaint many times a second; the same message (by its
format string) from the same logger is written at most once per
:data:`REPEAT_WINDOW_S`, and the next one written carries ``repeated``, the number of
copies left out meanwhile. Their records below WARNING are dropped unless riskguard
itself logs at DEBUG. An aiokafka error about a retriable Kafka error, which aiokafka
retries (a new broker's group coordinator not available yet), is written as a warning
with ``retried: true``: it is not an on-call engineer's problem unless it lasts, and
then readiness, lag and commits say so.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

SECRET_HINTS = ("token", "password", "secret", "sasl_plain", "authorization", "api_key")

REPEAT_WINDOW_S = 10.0
"""A library's same message from the same logger is written at most once per this long."""


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any credential-like key with ``"***"``."""
    for key in event:
        if any(hint in key.lower() for hint in SECRET_HINTS):
            event[key] = "***"
    return event


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is *now*.

    Binding the stream object at configure time breaks when the host swaps
    ``sys.stderr`` later (test runners, embedding applications): writes then go to
    a closed file and raise inside riskguard's error paths.
    """

    def msg(self, message: str | bytes) -> None:
        """Write one rendered line."""
        stream = sys.stderr
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            binary.write((message if isinstance(message, bytes) else message.encode()) + b"\n")
        else:
            stream.write((message.decode() if isinstance(message, bytes) else message) + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class RepeatLimiter:
    """Lets the same key through at most once per ``window_s``, counting the rest.

    Thread-safe (libraries log from their own threads too). Memory is bounded: at
    most ``max_keys`` keys are remembered, the oldest forgotten first.
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S, max_keys: int = 1024) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._seen: dict[Any, tuple[float, int]] = {}  # key -> (last written, left out since)
        self._lock = threading.Lock()

    def admit(self, key: Any, now: float | None = None) -> int | None:
        """None when ``key`` was written less than ``window_s`` ago (this copy is left
        out and counted); else how many copies were left out since it was last written."""
        t = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(key)
            if last is not None and t - last[0] < self.window_s:
                self._seen[key] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._seen) >= self.max_keys:
                del self._seen[next(iter(self._seen))]
            self._seen.pop(key, None)
            self._seen[key] = (t, 0)
            return last[1] if last is not None else 0


def repeats(left_out: int) -> dict[str, int]:
    """Log fields for copies a :class:`RepeatLimiter` left out: ``{"repeated": n}``, or
    nothing when none were."""
    return {"repeated": left_out} if left_out else {}


class StructlogHandler(logging.Handler):
    """A :mod:`logging` handler that writes records through structlog as JSON, with
    repeats rate-limited (:class:`RepeatLimiter`). It never raises."""

    def __init__(self, limiter: RepeatLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or RepeatLimiter()

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as one JSON line (or count it as a repeat)."""
        try:
            left_out = self.limiter.admit((record.name, record.levelno, str(record.msg)))
            if left_out is None:
                return
            fields: dict[str, Any] = {"logger": record.name}
            if left_out:
                fields["repeated"] = left_out
                fields["repeat_window_s"] = self.limiter.window_s
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            level = record.levelname.lower()
            if level == "error" and _retried(record):
                level = "warning"  # aiokafka retries it; a lasting fault shows elsewhere
                fields["retried"] = True
            method = level if level in ("debug", "info", "warning", "error", "critical") else "info"
            getattr(structlog.get_logger(), method)(record.getMessage(), **fields)
        except Exception:  # a log line must never take riskguard down
            self.handleError(record)


def _retried(record: logging.LogRecord) -> bool:
    """An aiokafka record that logs, as an error, a retriable Kafka error it retries
    (``Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError``
    while a new broker creates its offsets topic). A fault that lasts shows as
    not-ready, lag or failed commits, which riskguard reports itself."""
    if not record.name.startswith("aiokafka") or not isinstance(record.args, tuple):
        return False
    return any(getattr(arg, "retriable", False) is True for arg in record.args)


_handler: StructlogHandler | None = None


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send JSON logs to ``stream``, or to the current ``sys.stderr``, at ``level``.

    Also routes the standard :mod:`logging` records of libraries (aiokafka, aiohttp,
    asyncio) through the same chain (see the module docstring).
    """
    factory: Any
    renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    if stream is None:
        factory = lambda *_args: _StderrLogger()  # noqa: E731 - structlog wants a callable
    elif getattr(stream, "buffer", None) is not None:
        factory = structlog.BytesLoggerFactory(stream.buffer)
    else:  # text streams (e.g. io.StringIO)
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda obj, **kw: orjson.dumps(obj, **kw).decode()
        )
        factory = structlog.PrintLoggerFactory(stream)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(max(threshold, logging.WARNING) if threshold > logging.DEBUG else threshold)


def _route_stdlib(level: int) -> None:
    """Install (once; later calls only set the level) the structlog handler on the root
    logger of :mod:`logging`."""
    global _handler  # noqa: PLW0603 - one handler per process, replaced never duplicated
    logging.captureWarnings(True)  # warnings.warn() lines too (logger "py.warnings")
    root = logging.getLogger()
    if _handler is None or _handler not in root.handlers:
        _handler = StructlogHandler()
        root.addHandler(_handler)
    _handler.setLevel(level)
    root.setLevel(min(level, root.level) if root.level != logging.NOTSET else level)


def get(name: str) -> Any:
    """A bound logger tagged with ``logger=name``."""
    return structlog.get_logger().bind(logger=name)
