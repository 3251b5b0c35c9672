"""structlog configured to write one JSON object per line, serialised by orjson.

Secrets never reach a log line: processors redact any key that looks like a
credential before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

SECRET_HINTS = ("token", "password", "secret", "sasl_plain", "authorization", "api_key")


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


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send JSON logs to ``stream``, or to the current ``sys.stderr``, at ``level``."""
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    """A bound logger tagged with ``logger=name``."""
    return structlog.get_logger().bind(logger=name)
