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


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send JSON logs to ``stream`` (stderr by default) at ``level``."""
    out = stream or sys.stderr
    binary = getattr(out, "buffer", None)
    factory: Any
    if binary is not None:  # bytes straight from orjson, no decode/encode round trip
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(binary)
    else:  # text streams (e.g. io.StringIO in tests)
        renderer = structlog.processors.JSONRenderer(
            serializer=lambda obj, **kw: orjson.dumps(obj, **kw).decode()
        )
        factory = structlog.PrintLoggerFactory(out)
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
