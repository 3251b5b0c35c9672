"""The CLI's side of the operators' API: the token, one JSON request, one clear error.

Every failure becomes an :class:`ApiError` carrying one line for people and the exit
code (:mod:`riskguard.cli.common`): an unreadable token file, an unreachable URL, a
server that does not answer like riskguard. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final

from riskguard.cli.common import EXIT_USAGE

DEFAULT_URL: Final = "http://127.0.0.1:8321"
TOKEN_ENV: Final = "RISKGUARD_HTTP_TOKEN"
URL_ENV: Final = "RISKGUARD_URL"


class ApiError(Exception):
    """A request that could not be made or answered; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def read_token(token_file: str | None) -> str | None:
    """Your API token: from ``token_file`` when given, else ``$RISKGUARD_HTTP_TOKEN``.

    Raises :class:`ApiError` (exit 2) when the file is missing, unreadable, empty, or
    holds more than one token (its content is never shown).
    """
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ApiError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ApiError(f"the token file {token_file} is not text") from exc
        if not token:
            raise ApiError(f"the token file {token_file} is empty")
        if not token.isprintable() or any(c.isspace() for c in token):
            # never echoed: the file may be another secret given by mistake
            raise ApiError(
                f"the token file {token_file} holds more than a token (several lines, "
                "spaces or control characters): give a file with your token alone"
            )
        return token
    return os.environ.get(TOKEN_ENV) or None


def base_url(url: str | None) -> str:
    """The API's base URL: ``url``, else ``$RISKGUARD_URL``, else :data:`DEFAULT_URL`.

    Raises :class:`ApiError` (exit 2) when it is not an ``http://`` or ``https://`` URL
    with a host (say ``127.0.0.1:8321``, without its scheme), naming where it came from.
    """
    given = url or os.environ.get(URL_ENV) or DEFAULT_URL
    chosen = given.rstrip("/")
    try:  # ValueError: an unclosed IPv6 bracket, a port that is not a number
        parts = urllib.parse.urlsplit(chosen)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        source = "--url" if url else f"${URL_ENV}"
        raise ApiError(
            f"{source} {given!r} is not an http(s) URL: give it as http://HOST:PORT "
            f"(the default is {DEFAULT_URL})"
        )
    return chosen


def _decode(url: str, method: str, status: int, kind: str, raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            f"{url} is not a riskguard API: {method} answered {status} "
            f"({kind or 'no content type'}, not a JSON object)"
        )
    return body


def request(
    url: str,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    token: str | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, dict[str, Any]]:
    """One JSON request to the API; returns (HTTP status, JSON object).

    Raises :class:`ApiError` (exit 2) when the server cannot be reached, takes the
    request without answering within ``timeout_s`` (a POST may then still be carried
    out: the message says so), or answers something other than a JSON object (it is
    not riskguard).
    """
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    base = urllib.parse.urlsplit(url)
    where = f"{base.scheme}://{base.netloc}"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            kind = resp.headers.get_content_type()
            return resp.status, _decode(where, method, resp.status, kind, resp.read())
    except urllib.error.HTTPError as exc:
        kind = exc.headers.get_content_type() if exc.headers else ""
        return exc.code, _decode(where, method, exc.code, kind, exc.read())
    except TimeoutError as exc:  # connected and sent, no answer (a URLError: no connection)
        maybe = (
            ": the request may still be carried out; check with `riskguard status` before "
            "repeating it"
            if method != "GET"
            else " (riskguard stopped, paused or overloaded?)"
        )
        raise ApiError(
            f"{where} took the request but did not answer within {timeout_s:g} s{maybe}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach {where}: {reason}") from exc


def looks_like(reply: dict[str, Any], status: int, keys: tuple[str, ...], url: str) -> None:
    """Raise :class:`ApiError` (exit 2) unless ``reply`` is riskguard's: an ``error``
    message (4xx), or a body with every one of ``keys``."""
    if "error" in reply and 400 <= status < 500:
        return
    if status < 300 and all(k in reply for k in keys):
        return
    raise ApiError(f"{url} is not a riskguard API (it answered {status} without {keys[0]!r})")


def add_connection(p: argparse.ArgumentParser, env: str = URL_ENV) -> None:
    """``--url`` and ``--token-file``, shared by every command that calls the API."""
    p.add_argument(
        "--url",
        default=None,
        help=f"riskguard's API base URL (default: ${env}, else {DEFAULT_URL})",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="path of a file holding your API token (default: the token itself in "
        "$RISKGUARD_HTTP_TOKEN)",
    )
