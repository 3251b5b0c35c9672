"""The operators' HTTP API and web console (aiohttp), bound to 127.0.0.1 by default.

Every request that changes something carries ``Authorization: Bearer <token>``; the
token's owner (:mod:`riskguard.control.users`) is who the audit log, the control
topic, the evidence and the alerts name, never a name from the body. Roles:
``viewer`` reads, ``operator`` also halts, ``risk-admin`` also resumes and approves.

- ``POST /v1/halt`` ``{scope, reason[, action]}`` (operator): halt, or ``action:
  "reduce_only"``. It also voids a pending resume of the scope.
- ``POST /v1/resume`` ``{scope, reason}`` (risk-admin): 200 with the transition, or,
  for a level in ``[http] four_eyes``, 202 ``{"status": "pending", "request_id"}``.
- ``POST /v1/approve`` ``{request_id, reason}`` (another risk-admin): carries it out.
- ``POST /v1/withdraw`` ``{request_id, reason}`` (risk-admin): ends a pending request.
- ``GET /v1/whoami`` (any role): the token's owner, role and what it may do.
- ``GET /v1/status``: standing scopes with evidence and health (any role once a users
  file is configured; open without one). ``/metrics``, ``/livez``, ``/readyz``: open.
- ``GET /``: the web console (static files from :mod:`riskguard.console`).

Errors are JSON ``{"error": message}`` and change nothing; refusals of the mutating
endpoints (401, 403, 4xx) are audited (kind ``refused``) with the identity when known.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

import msgspec
import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from riskguard import log
from riskguard.control.approvals import ApprovalError, FourEyes
from riskguard.control.overview import RecentTransitions, explain_dict, explained
from riskguard.control.requests import BadRequestError, check, read_body
from riskguard.control.roster import Roster
from riskguard.control.users import MAY, Action, Identity
from riskguard.evidence import when
from riskguard.ingest.ports import OperatorDesk, Probes
from riskguard.metrics import Metrics
from riskguard.settings import HttpSettings
from riskguard.vocabulary import Transition

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Act = Callable[[Identity, dict[str, str], dict[str, Any]], Awaitable[web.Response]]

SHARE_WAIT_S: Final = 2.0
"""A four-eyes request is answered once the control topic took it (every instance then
lists it), or after this long, saying ``shared: false`` (it is retried meanwhile)."""
EVERY_INTERFACE: Final = frozenset({"0.0.0.0", "::", "[::]"})
"""``http.host`` values that bind every interface (an empty host is refused by the
settings): allowed, on purpose (a pod's probes), but logged and shown in the status."""
CONSOLE_FILES: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _errors(limit: int) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body too large: at most {limit} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    return middleware


class ControlApi:
    """Routes over one sidecar's parts, seen through narrow interfaces.

    ``desk`` takes manual actions (and audits), ``probes`` answers ``/livez`` and
    ``/readyz``, ``status`` builds the ``/v1/status`` body, ``facts`` (optional) adds to
    it (feed silence, consumer lag: :func:`riskguard.control.overview.feeds`), ``metrics``
    serves ``/metrics``. Raises :class:`~riskguard.control.users.UsersError` when the
    users file cannot be used and :class:`~riskguard.settings.SettingsError` when the
    break-glass token file cannot be read.
    """

    def __init__(
        self,
        http: HttpSettings,
        desk: OperatorDesk,
        probes: Probes,
        status: Callable[[], dict[str, Any]],
        metrics: Metrics,
        facts: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.http = http
        self.desk = desk
        self.probes = probes
        self._status = status
        self._facts = facts
        self._metrics = metrics
        self._log = log.get("api")
        self.roster = Roster(http.users_file, http.resolved_token(), desk, metrics)
        self.four_eyes = FourEyes(http.four_eyes, http.approval_timeout_s, desk)
        self.recent = RecentTransitions()
        desk.subscribe(self.recent)
        desk.subscribe(self.four_eyes.on_transition)
        limit = self.http.max_body_bytes
        self.app = web.Application(middlewares=[_errors(limit)], client_max_size=limit)
        self.app.add_routes(
            [
                web.post("/v1/halt", self.halt),
                web.post("/v1/resume", self.resume),
                web.post("/v1/approve", self.approve),
                web.post("/v1/withdraw", self.withdraw),
                web.get("/v1/whoami", self.whoami),
                web.get("/v1/status", self.status),
                web.get("/metrics", self.metrics),
                web.get("/livez", self.livez),
                web.get("/readyz", self.readyz),
                web.get("/", self.console),
                web.get("/console/{name}", self.console),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = self.http.port

    async def start(self) -> str:
        """Serve; returns the base URL (the port is resolved when configured as 0).

        Starts watching the users file and expiring four-eyes requests. Raises
        :class:`OSError` when the address cannot be bound, and :class:`ssl.SSLError` or
        :class:`OSError` for an unusable TLS certificate or key.
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
        self.roster.start_watching()
        self._sweeper = asyncio.create_task(self._sweep(), name="four-eyes-expiry")
        self._log.info(
            "control API and console listening",
            url=url,
            users=self.roster.directory.summary(),
            break_glass=self.roster.status()["break_glass"],
            four_eyes=list(self.four_eyes.levels),
        )
        if self.http.host in EVERY_INTERFACE:
            self._log.warning(
                "the API listens on every interface (http.host): other hosts can reach it",
                host=self.http.host,
                port=self.port,
                users_file=self.roster.path is not None,
                break_glass=self.roster.status()["break_glass"],
            )
        return url

    async def stop(self) -> None:
        """Stop serving and watching. A second call (two stops racing) does nothing."""
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.roster.stop()
        runner, self._runner = self._runner, None
        if runner:
            await runner.cleanup()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.four_eyes.expire()

    # who is asking -------------------------------------------------------------
    def _identify(self, request: web.Request) -> Identity:
        """The token's owner. Raises :class:`BadRequestError` 403 when no token can be
        configured at all, 401 for a missing or unknown token."""
        directory = self.roster.directory
        if not directory.configured:
            raise BadRequestError(
                403,
                "no users file and no break-glass token configured: the API is read-only "
                "(see docs/operators.md)",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise BadRequestError(401, "missing bearer token (Authorization: Bearer <token>)")
        who = directory.identify(given.strip())
        if who is None:
            raise BadRequestError(401, "unknown bearer token")
        return who

    @staticmethod
    def _authorise(who: Identity, action: Action) -> None:
        """Raise :class:`BadRequestError` 403 unless ``who``'s role may ``action``."""
        if not who.may(action):
            needed = next(role for role, acts in MAY.items() if action in acts)
            raise BadRequestError(
                403,
                f"{who.name} has the role {who.role}: to {action} takes {needed} or above",
            )

    def _via(self, request: web.Request, who: Identity) -> dict[str, Any]:
        if who.break_glass:
            self._log.warning("break-glass token used", path=request.path, peer=request.remote)
        return {"via": "http", **who.audit(), "peer": request.remote}

    async def _act(self, request: web.Request, form: str, action: Action, act: Act) -> web.Response:
        """Identify, authorise, read and check the body, then ``act``; refusals audited."""
        who: Identity | None = None
        try:
            who = self._identify(request)
            self._authorise(who, action)
            body = check(await read_body(request, self.http.max_body_bytes), form, who)
            return await act(who, body, self._via(request, who))
        except (BadRequestError, ApprovalError) as exc:
            record: dict[str, Any] = {
                "path": request.path,
                "status": exc.status,
                "error": exc.message,
                "peer": request.remote,
            }
            record |= who.audit() if who else {"identity": None}
            self.desk.record("refused", record)
            self._log.warning("refused", **record)
            return _error(exc.status, exc.message)

    # mutating ---------------------------------------------------------------
    def _changed(self, scope: str, tr: Transition | None, **extra: Any) -> web.Response:
        return _json(
            {
                "changed": tr is not None,
                "scope": scope,
                "state": self.desk.state(scope),
                "transition": explained(tr) if tr else None,
                **extra,
            }
        )

    async def halt(self, request: web.Request) -> web.Response:
        """Manually halt (or set REDUCE_ONLY on) a scope; voids a pending resume of it."""

        async def act(who: Identity, body: dict[str, str], via: dict[str, Any]) -> web.Response:
            scope, action = body["scope"], body.get("action", "halt")
            tr = await self.desk.manual(action, scope, who.name, body["reason"], audit=via)
            self.four_eyes.void(scope, f"{who.name} asked to {action} {scope}")
            return self._changed(scope, tr)

        return await self._act(request, "halt", "halt", act)

    async def resume(self, request: web.Request) -> web.Response:
        """Lower a scope to ACTIVE, or ask a second risk-admin to (four-eyes levels)."""

        async def act(who: Identity, body: dict[str, str], via: dict[str, Any]) -> web.Response:
            scope, reason = body["scope"], body["reason"]
            if self.desk.state(scope) == "ACTIVE" or not self.four_eyes.needs_approval(scope):
                tr = await self.desk.manual("resume", scope, who.name, reason, audit=via)
                return self._changed(scope, tr)
            standing = self.desk.standing().get(scope)
            req = self.four_eyes.request(scope, who, reason, standing.id if standing else None)
            # answered once the other instances can list it (or said that they cannot yet)
            shared = await self.four_eyes.shared(req.request_id, SHARE_WAIT_S)
            return _json(
                {
                    "status": "pending",
                    "request_id": req.request_id,
                    "scope": scope,
                    "state": self.desk.state(scope),
                    "requested_by": who.name,
                    "expires_ns": req.expires_ns,
                    "expires_at": when(req.expires_ns),
                    **({} if shared is None else {"shared": shared}),
                },
                202,
            )

        return await self._act(request, "resume", "resume", act)

    async def approve(self, request: web.Request) -> web.Response:
        """Carry out another risk-admin's pending resume (four-eyes)."""

        async def act(who: Identity, body: dict[str, str], via: dict[str, Any]) -> web.Response:
            if who.break_glass:
                raise ApprovalError(
                    403, "the break-glass token cannot approve: four-eyes takes two named people"
                )
            req = self.four_eyes.approve(body["request_id"], who, body["reason"])
            reason = f"{req.reason}; approved by {who.name}: {body['reason']}"
            tr = await self.desk.manual(
                "resume",
                req.scope,
                req.requested_by,
                reason,
                approved_by=who.name,
                audit={**via, "request_id": req.request_id},
            )
            return self._changed(req.scope, tr, request_id=req.request_id)

        return await self._act(request, "approve", "approve", act)

    async def withdraw(self, request: web.Request) -> web.Response:
        """End a pending four-eyes request without resuming."""

        async def act(who: Identity, body: dict[str, str], via: dict[str, Any]) -> web.Response:
            req = self.four_eyes.withdraw(body["request_id"], who, body["reason"])
            return _json({"status": "withdrawn", "request_id": req.request_id, "scope": req.scope})

        return await self._act(request, "withdraw", "approve", act)

    # read-only --------------------------------------------------------------
    async def whoami(self, request: web.Request) -> web.Response:
        """The token's owner, role, and the actions that role may take."""
        try:
            who = self._identify(request)
        except BadRequestError as exc:
            return _error(exc.status, exc.message)
        return _json(
            {
                "name": who.name,
                "role": who.role,
                "break_glass": who.break_glass,
                "may": list(MAY[who.role]),
                "four_eyes": list(self.four_eyes.levels),
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        """Standing scopes with evidence, pending approvals, feeds, and health."""
        if self.roster.path is not None:  # people are named: reading takes a token too
            try:
                self._identify(request)
            except BadRequestError as exc:
                return _error(exc.status, exc.message)
        body = self._status()
        body["standing"] = {s: explain_dict(tr) for s, tr in body["standing"].items()}
        body["transitions"] = self.recent.latest()
        body["approvals"] = [
            {**p.public(), "requested_at": when(p.requested_ns), "expires_at": when(p.expires_ns)}
            for p in self.four_eyes.pending()
        ]
        body["four_eyes"] = {
            "levels": list(self.four_eyes.levels),
            "approval_timeout_s": self.http.approval_timeout_s,
        }
        body["users"] = self.roster.status()
        body["http"] = {
            "host": self.http.host,
            "port": self.port,
            "every_interface": self.http.host in EVERY_INTERFACE,
        }
        body["now_ns"] = time.time_ns()
        if self._facts is not None:
            body.update(self._facts())
        return _json(msgspec.to_builtins(body))

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

    async def console(self, request: web.Request) -> web.Response:
        """The web console's static files (``/`` is ``index.html``)."""
        name = request.match_info.get("name", "index.html")
        kind = CONSOLE_FILES.get(name)
        if kind is None:
            return _error(404, f"no console file {name!r}")
        data = (resources.files("riskguard") / "console" / name).read_bytes()
        return web.Response(body=data, content_type=kind, charset="utf-8", headers=CONSOLE_HEADERS)
