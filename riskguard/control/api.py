"""The operators' HTTP API (aiohttp), bound to 127.0.0.1 by default.

``POST /v1/halt`` and ``POST /v1/resume`` take ``{scope, operator, reason}`` (halt also
``action``: ``halt`` or ``reduce_only``) and need ``Authorization: Bearer <token>``,
compared in constant time. Without a configured token they are refused: a kill
switch must not be resumable by anyone who can reach the port.

``GET /v1/status``, ``/metrics``, ``/livez`` and ``/readyz`` are read-only and open.
Every error is 4xx JSON with a message, and changes nothing.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import orjson
from aiohttp import web

from riskguard import log
from riskguard.ingest.ports import OperatorDesk, Probes
from riskguard.metrics import Metrics
from riskguard.settings import HttpSettings
from riskguard.vocabulary import ScopeError, parse_scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_TEXT = 500


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "request body too large")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise


class ControlApi:
    """Routes over one sidecar's parts, seen through narrow interfaces.

    ``desk`` takes manual actions, ``probes`` answers ``/livez`` and ``/readyz``,
    ``status`` builds the ``/v1/status`` body, ``metrics`` serves ``/metrics``.
    """

    def __init__(
        self,
        http: HttpSettings,
        desk: OperatorDesk,
        probes: Probes,
        status: Callable[[], dict[str, Any]],
        metrics: Metrics,
    ) -> None:
        self.http = http
        self.desk = desk
        self.probes = probes
        self._status = status
        self._metrics = metrics
        self.token = self.http.resolved_token()
        self._log = log.get("api")
        self.app = web.Application(middlewares=[_errors], client_max_size=self.http.max_body_bytes)
        self.app.add_routes(
            [
                web.post("/v1/halt", self.halt),
                web.post("/v1/resume", self.resume),
                web.get("/v1/status", self.status),
                web.get("/metrics", self.metrics),
                web.get("/livez", self.livez),
                web.get("/readyz", self.readyz),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port = self.http.port

    async def start(self) -> str:
        """Serve; returns the base URL (the port is resolved when configured as 0).

        Raises :class:`OSError` when the address cannot be bound, and
        :class:`ssl.SSLError` or :class:`OSError` for an unusable TLS certificate or key.
        """
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        context = None
        if self.http.tls_certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.http.tls_certfile, self.http.tls_keyfile)
        site = web.TCPSite(self._runner, self.http.host, self.http.port, ssl_context=context)
        await site.start()
        if self.http.port == 0:  # an ephemeral port was asked for: report the real one
            self.port = int(self._runner.addresses[0][1])
        scheme = "https" if context else "http"
        url = f"{scheme}://{self.http.host}:{self.port}"
        self._log.info("control API listening", url=url, mutations_enabled=bool(self.token))
        return url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner:
            await self._runner.cleanup()

    # mutating ---------------------------------------------------------------
    def _authorised(self, request: web.Request) -> web.Response | None:
        if not self.token:
            return _error(403, "no API token configured: halt and resume over HTTP are disabled")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode(), self.token.encode()
        ):
            self._log.warning(
                "refused: bad or missing token", path=request.path, peer=request.remote
            )
            return _error(401, "missing or wrong bearer token")
        return None

    async def _body(
        self, request: web.Request, action_allowed: bool
    ) -> tuple[dict[str, str], web.Response | None]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return {}, _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return {}, _error(400, "body must be a JSON object: {scope, operator, reason}")
        allowed = {"scope", "operator", "reason"} | ({"action"} if action_allowed else set())
        unknown = sorted(set(body) - allowed)
        if unknown:
            return {}, _error(400, f"unknown field(s): {', '.join(unknown)}")
        for name in ("scope", "operator", "reason"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                return {}, _error(422, f"'{name}' is required: a non-empty string")
            if len(value) > MAX_TEXT:
                return {}, _error(422, f"'{name}' is longer than {MAX_TEXT} characters")
        try:
            parse_scope(body["scope"])
        except ScopeError as exc:
            return {}, _error(422, str(exc))
        action = body.get("action", "halt")
        if action_allowed and action not in ("halt", "reduce_only"):
            return {}, _error(422, "'action' must be 'halt' or 'reduce_only'")
        return {**body, "action": action}, None

    async def _change(self, request: web.Request, action: str | None) -> web.Response:
        refused = self._authorised(request)
        if refused:
            return refused
        body, bad = await self._body(request, action_allowed=action is None)
        if bad:
            return bad
        act = action or body["action"]
        tr = await self.desk.manual(act, body["scope"], body["operator"], body["reason"])
        state = self.desk.state(body["scope"])
        return _json(
            {
                "changed": tr is not None,
                "scope": body["scope"],
                "state": state,
                "transition": msgspec.to_builtins(tr) if tr else None,
            }
        )

    async def halt(self, request: web.Request) -> web.Response:
        """Manually halt (or set REDUCE_ONLY on) a scope."""
        return await self._change(request, None)

    async def resume(self, request: web.Request) -> web.Response:
        """Lower a scope to ACTIVE."""
        return await self._change(request, "resume")

    # read-only --------------------------------------------------------------
    async def status(self, _request: web.Request) -> web.Response:
        """Standing scopes with evidence, and health."""
        return _json(self._status())

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        return web.Response(
            body=self._metrics.exposition(), content_type="text/plain", charset="utf-8"
        )

    async def livez(self, _request: web.Request) -> web.Response:
        """Alive: the process answers and the consume loop is not stalled."""
        ok = self.probes.healthy()
        return _json({"live": ok}, 200 if ok else 503)

    async def readyz(self, _request: web.Request) -> web.Response:
        """Ready: limits loaded, kernels warm, control topic read, partitions assigned."""
        checks = dict(self.probes.readiness())
        ok = all(checks.values())
        return _json({"ready": ok, "checks": checks}, 200 if ok else 503)
