"""Request bodies of the operators' API: read, checked, and every problem named.

Each mutating endpoint takes a JSON object (``Content-Type: application/json``) with
known fields. :func:`read_body` answers 415 for another content type, 413 stating the
limit, 400 for a body that is not a JSON object or has unknown fields, and 422 for a
field that is missing, empty, too long or of the wrong JSON type, naming the field and
the type it got (``'scope' must be a string, got number``).

``operator`` is accepted only when it names the token's owner: riskguard records who
holds the token, never a name from the body, and a client that believes otherwise
is told so (422) rather than silently overridden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from riskguard.control.users import Identity, json_type
from riskguard.vocabulary import ScopeError, parse_scope

MAX_TEXT: Final = 500
"""Longest scope, reason or request id accepted, in characters."""


class BadRequestError(Exception):
    """A request refused before anything changed; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Form:
    """The fields an endpoint takes: required ones, and optional ones with their choices."""

    required: tuple[str, ...]
    optional: Mapping[str, tuple[str, ...]]
    """Optional field -> allowed values (empty: any non-empty string)."""


FORMS: Final[dict[str, Form]] = {
    "halt": Form(("scope", "reason"), {"action": ("halt", "reduce_only"), "operator": ()}),
    "resume": Form(("scope", "reason"), {"operator": ()}),
    "approve": Form(("request_id", "reason"), {"operator": ()}),
    "withdraw": Form(("request_id", "reason"), {"operator": ()}),
}


async def read_body(request: web.Request, limit: int) -> dict[str, Any]:
    """The request's JSON object. Raises :class:`BadRequestError` (415, 413, 400)."""
    if request.content_type != "application/json":
        raise BadRequestError(
            415,
            f"Content-Type must be application/json, got {request.content_type or 'none'}",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BadRequestError(413, f"request body too large: at most {limit} bytes") from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(400, "body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequestError(400, f"body must be a JSON object, got {json_type(body)}")
    return body


def check(body: Mapping[str, Any], form: str, who: Identity) -> dict[str, str]:
    """The body's fields for endpoint ``form``, checked; ``operator`` dropped.

    Raises :class:`BadRequestError`: 400 for unknown fields, 422 for a missing, empty,
    over-long or wrongly typed field, an invalid scope or choice, or an ``operator``
    that is not ``who``.
    """
    spec = FORMS[form]
    allowed = (*spec.required, *spec.optional)
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequestError(
            400, f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    out: dict[str, str] = {}
    for name in allowed:
        if name not in body:
            if name in spec.required:
                raise BadRequestError(422, f"'{name}' is required: a non-empty string")
            continue
        value = body[name]
        if not isinstance(value, str):
            raise BadRequestError(422, f"'{name}' must be a string, got {json_type(value)}")
        if not value.strip():
            raise BadRequestError(422, f"'{name}' must not be empty")
        if len(value) > MAX_TEXT:
            raise BadRequestError(422, f"'{name}' is longer than {MAX_TEXT} characters")
        choices = spec.optional.get(name, ())
        if choices and value not in choices:
            raise BadRequestError(
                422, f"'{name}' must be {' or '.join(map(repr, choices))}, got {value!r}"
            )
        out[name] = value
    claimed = out.pop("operator", None)
    if claimed is not None and claimed != who.name:
        raise BadRequestError(
            422,
            f"'operator' is {claimed!r} but this token belongs to {who.name!r}: riskguard "
            "records the token's owner; leave 'operator' out",
        )
    if "scope" in out:
        try:
            parse_scope(out["scope"])
        except ScopeError as exc:
            raise BadRequestError(422, str(exc)) from exc
    return out
