"""The server's HTTP API: a Starlette app built from the server (``create_app``), its routes, middleware and lifespan.

``create_app(server)`` is what ``phaseserver.app.build`` calls: it makes the
services the routes need (``Api``: the database, the auth service, the
command service, the audit key, the metrics) from the server's configuration
and mounts every route of the modules in ``ROUTERS`` (each has
``ENDPOINTS``, see ``phaseserver.api.routing``). Other areas contribute routes
by adding their module to ``ROUTERS`` (the alarms area's
``phaseserver.alarms.routes``).

The one thing to know: every route goes through ``routing.dispatch``, which
authenticates, checks the route's permission and the CSRF token, and
validates inputs before the handler runs; and every route is in the OpenAPI
document at ``/openapi.json`` (``phaseserver.api.openapi``), generated from
the same declarations. The lifespan runs two periodic jobs: signing the audit
chain head (``[audit] sign_every_s``, and once more at shutdown) and tracking
operator commands (``[commands] poll_s``).
"""

import asyncio
import importlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phaseserver import audit
from phaseserver.api.routing import ApiError, Endpoint, dispatch, error_response
from phaseserver.auth import keyfile
from phaseserver.auth.passwords import Hasher
from phaseserver.auth.principal import Principal
from phaseserver.auth.ratelimit import LoginLimiter
from phaseserver.auth.service import AuthService, AuthSettings
from phaseserver.auth.sessions import COOKIE, CSRF_HEADER, check_csrf
from phaseserver.auth.tokens import TokenIssuer
from phaseserver.errors import AuthError

__all__ = ("ROUTERS", "Api", "ApiSettings", "create_app", "make_app", "endpoints")

log = logging.getLogger("phaseserver.api")
access_log = logging.getLogger("phaseserver.api.access")

# Modules of routes, each with ENDPOINTS (phaseserver.api.routing). One per line; other areas add theirs.
ROUTERS: tuple[str, ...] = (
    "phaseserver.api.routes_ops",
    "phaseserver.api.routes_auth",
    "phaseserver.api.routes_fleet",
    "phaseserver.api.routes_commands",
    "phaseserver.api.routes_audit",
    "phaseserver.api.routes_admin",
    "phaseserver.alarms.routes",
    "phaseserver.api.routes_web",
)


def endpoints(routers: tuple[str, ...] = ROUTERS) -> list[Endpoint]:
    """Every route of ``routers``; a route declared twice is a ``ValueError``."""
    out: list[Endpoint] = []
    for name in routers:
        out.extend(importlib.import_module(name).ENDPOINTS)
    seen: set[tuple[str, str]] = set()
    for ep in out:
        if (ep.method, ep.path) in seen:
            raise ValueError("route %s %s declared twice" % (ep.method, ep.path))
        seen.add((ep.method, ep.path))
    return out


@dataclass(frozen=True)
class ApiSettings:
    cookie_secure: bool = True
    trusted_proxies: frozenset[str] = frozenset()
    sign_every_s: float = 60.0
    command_poll_s: float = 1.0
    head_file: str | None = None
    title: str = "phasekit server API"
    version: str = "1"
    server_name: str = "phaseserver"
    extra: dict[str, Any] = field(default_factory=dict)


class Api:
    """The services behind the routes; the routes reach it as ``ctx.api``."""

    def __init__(
        self,
        db: Any,
        auth: AuthService,
        settings: ApiSettings,
        store: Any = None,
        clock: Any = None,
        commands: Any = None,
        audit_key: Any = None,
        metrics: Any = None,
        server: Any = None,
    ):
        self.db = db
        self.auth = auth
        self.settings = settings
        self.store = store
        self.clock = clock
        self.commands = commands
        self.audit_key = audit_key
        self.metrics = metrics
        self.server = server
        self.endpoints: list[Endpoint] = []
        self.requests: dict[str, int] = {}  # "<route> <status class>" -> count
        self.latency_s: dict[str, list[float]] = {}  # route -> recent latencies (bounded)
        self.started_s = time.time()

    def wall(self) -> float:
        return self.auth.wall()

    async def authenticate(self, request: Request) -> Principal:
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        try:
            return await asyncio.to_thread(self.auth.authenticate, authorization, cookie)
        except AuthError as e:
            log.debug("refused %s %s: %s", request.method, request.url.path, e)
            raise ApiError(401, "unauthenticated", "a valid credential is needed") from None

    async def check_csrf(self, request: Request, principal: Principal) -> None:
        """A cookie-authenticated request that changes state must carry the session's CSRF token."""
        if principal.csrf_hash is None or not check_csrf(principal.csrf_hash, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token for this session")

    def observe(self, ep: Endpoint, status: int, seconds: float, principal: Principal | None, source: str) -> None:
        key = "%s %s %dxx" % (ep.method, ep.path, status // 100)
        self.requests[key] = self.requests.get(key, 0) + 1
        lat = self.latency_s.setdefault("%s %s" % (ep.method, ep.path), [])
        lat.append(seconds)
        if len(lat) > 2048:
            del lat[:1024]
        access_log.info(
            "%s %s %d %.1fms %s %s",
            ep.method,
            ep.path,
            status,
            seconds * 1000,
            principal.actor if principal else "-",
            source,
        )

    async def ready(self) -> tuple[bool, str]:
        """Whether the API can serve: its database answers (and the server says it is ready)."""
        try:
            await asyncio.to_thread(self.db.fetchone, "SELECT 1")
        except Exception as e:  # any database failure means not ready; the reason goes to the probe
            return False, "database: %s" % str(e)[:120]
        if self.metrics is not None and hasattr(self.metrics, "readiness"):
            ok, why = self.metrics.readiness()
            if not ok:
                return False, why
        return True, "ready"

    # ---- periodic jobs -----------------------------------------------------------------------

    async def sign_heads(self, stop: asyncio.Event) -> None:
        """Sign the audit chain head every ``sign_every_s`` and once more when stopping."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.sign_every_s)
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(audit.sign_head, self.db, self.audit_key, self.settings.head_file, self.wall())
            except Exception as e:  # one failed signing must not stop the server; the next one covers it
                log.error("audit head signing failed: %s", str(e)[:300])
            if stop.is_set():
                return

    async def track_commands(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.commands.poll)
            except Exception as e:  # a failed round is retried at the next one
                log.error("command tracking failed: %s", str(e)[:300])
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.command_poll_s)
            except asyncio.TimeoutError:
                pass


class _SecurityHeaders:
    """Headers every response carries: no sniffing, no framing, no caching of API data, a strict CSP."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for k, v in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
                ):
                    if k not in names:
                        headers.append((k, v))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _route(api: Api, ep: Endpoint) -> Route:
    async def handle(request: Request) -> Response:
        return await dispatch(api, ep, request)

    handle.__name__ = ep.operation_id
    return Route(ep.path, handle, methods=[ep.method])


def make_app(api: Api, routers: tuple[str, ...] = ROUTERS) -> Starlette:
    """The Starlette app over ``api``: every route of ``routers``, the security headers, the lifespan jobs."""
    api.endpoints = endpoints(routers)
    routes: list[BaseRoute] = [_route(api, ep) for ep in api.endpoints]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = []
        if api.audit_key is not None:
            tasks.append(asyncio.create_task(api.sign_heads(stop), name="audit-heads"))
        if api.commands is not None:
            tasks.append(asyncio.create_task(api.track_commands(stop), name="command-tracking"))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if api.commands is not None:
                api.commands.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", "no such route")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "method_not_allowed", "this route does not take %s" % request.method)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
    app.add_middleware(_SecurityHeaders)
    app.state.api = api
    return app


def _wall_of(server: Any) -> Callable[[], float]:
    clock = getattr(server, "clock", None)
    return clock.wall if clock is not None and hasattr(clock, "wall") else time.time


def create_app(server: Any) -> Starlette:
    """The ASGI app of a built server (``phaseserver.app.build``): services from its configuration."""
    cfg = server.config
    a, au, cm = cfg.table("auth"), cfg.table("audit"), cfg.table("commands")
    wall = _wall_of(server)
    db = server.store.db
    hasher = Hasher(a["argon2_time_cost"], a["argon2_memory_kib"], a["argon2_parallelism"], a["argon2_concurrency"])
    token_key = keyfile.load_or_create(str(cfg.resolve(a["token_key_file"])), "access-token")
    issuer = TokenIssuer(token_key, a["issuer"], a["audience"], a["access_ttl_s"])
    limiter = LoginLimiter(a["login_account_failures"], a["login_address_attempts"], a["login_window_s"])
    auth = AuthService(
        db,
        hasher,
        issuer,
        limiter,
        AuthSettings(a["session_ttl_s"], a["session_idle_s"], a["refresh_ttl_s"]),
        wall,
    )
    audit_key = keyfile.load_or_create(str(cfg.resolve(au["key_file"])), "audit")
    settings = ApiSettings(
        cookie_secure=a["cookie_secure"],
        trusted_proxies=frozenset(str(ipaddress.ip_address(x)) for x in a["trusted_proxies"]),
        sign_every_s=float(au["sign_every_s"]),
        command_poll_s=float(cm["poll_s"]),
        head_file=str(cfg.resolve(au["head_file"])) if au["head_file"] else None,
        server_name=cfg.table("server")["name"],
    )
    commands = None
    if cm["enabled"]:
        from phaseserver.commands import build_service

        commands = build_service(cfg, db, wall)
    api = Api(
        db,
        auth,
        settings,
        store=server.store,
        clock=getattr(server, "clock", None),
        commands=commands,
        audit_key=audit_key,
        metrics=getattr(server, "metrics", None),
        server=server,
    )
    return make_app(api)
