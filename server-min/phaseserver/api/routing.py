"""How a route is declared, and the one dispatcher that authenticates, authorises and validates before any handler.

A route is an ``Endpoint``: method, path, the permission it needs (a key of
``phaseserver.auth.roles.PERMISSIONS``, or ``PUBLIC``), its query parameters
and body as JSON Schema, its response schema. A module of routes exposes
``ENDPOINTS``, a list of them, made with the ``endpoint`` decorator::

    ENDPOINTS: list[Endpoint] = []

    @endpoint(ENDPOINTS, "POST", "/api/v1/alarms/{id}/ack", "alarm.ack", "Acknowledge an alarm",
              path={"id": {"type": "integer", "minimum": 1}}, body=ACK_BODY, response=ALARM)
    async def ack_alarm(ctx: Ctx) -> dict:
        tenant = ctx.tenant                      # the caller's tenant: filter every query by it
        return await ctx.run(alarms.ack, tenant, ctx.path["id"], ctx.body, ctx.principal.actor, ctx.source)

and is listed in ``phaseserver.api.app.ROUTERS``. The one thing to know: the
dispatcher (``dispatch``) refuses before the handler runs: no credential or
a bad one is 401, a role without the permission is 403, a cookie request
that changes state without its CSRF token is 403, and a body or query that
breaks its schema is 422 (400 for bad JSON, 413 too large, 415 not JSON); a
handler raises ``ApiError`` for its own refusals (404 for an object of
another tenant, exactly as for one that does not exist), and any other
exception is a bug: logged, counted, answered 500 without details.
The OpenAPI document (``phaseserver.api.openapi``) is generated from the
same declarations, so what it says is what the dispatcher enforces.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from phasecore.errors import quote
from phaseserver.api.schema import SchemaViolation, bound_integers, check_schema, coerce_query, validate
from phaseserver.auth.principal import SESSION, Principal
from phaseserver.auth.roles import PERMISSIONS, PUBLIC, allowed
from phaseserver.errors import ServerError

__all__ = ("Endpoint", "endpoint", "Ctx", "ApiError", "dispatch", "error_response", "MAX_BODY", "SAFE_METHODS")

log = logging.getLogger("phaseserver.api")

MAX_BODY = 65536
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
Handler = Callable[["Ctx"], Awaitable[Any]]


class ApiError(ServerError):
    """A refusal the client is told about: HTTP ``status``, a short ``code`` and a ``detail`` for people."""

    def __init__(self, status: int, code: str, detail: str = "", headers: dict[str, str] | None = None):
        ServerError.__init__(self, "%d %s: %s" % (status, code, detail))
        self.status = status
        self.code = code
        self.detail = detail[:300]
        self.headers = headers or {}


def error_response(status: int, code: str, detail: str = "", headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail[:300]}, status_code=status, headers=headers)


@dataclass(frozen=True)
class Endpoint:
    """One route: what it needs (permission, inputs) and what it gives (response), as the OpenAPI document says."""

    method: str
    path: str
    permission: str
    summary: str
    handler: Handler
    tag: str = "api"
    path_params: dict[str, dict] = field(default_factory=dict)
    query: dict[str, dict] = field(default_factory=dict)  # name -> schema (+ "required": True inside "x" below)
    required_query: tuple[str, ...] = ()
    body: dict | None = None
    response: dict | None = None  # JSON schema of the success body; None: no body (204)
    status: int = 200
    media: str = "application/json"
    description: str = ""
    refusals: tuple[int, ...] = ()  # statuses the handler itself may answer besides the dispatcher's

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def endpoint(
    registry: list[Endpoint],
    method: str,
    path: str,
    permission: str,
    summary: str,
    *,
    tag: str = "api",
    path_params: dict[str, dict] | None = None,
    query: dict[str, dict] | None = None,
    required_query: tuple[str, ...] = (),
    body: dict | None = None,
    response: dict | None = None,
    status: int = 200,
    media: str = "application/json",
    description: str = "",
    refusals: tuple[int, ...] = (),
) -> Callable[[Handler], Handler]:
    """Declare the decorated handler as a route and append it to ``registry``; checks the declaration now."""
    if permission != PUBLIC and permission not in PERMISSIONS:
        raise ValueError("route %s %s: unknown permission %s" % (method, path, quote(permission)))
    path_params = {k: bound_integers(v) for k, v in (path_params or {}).items()}
    query = {k: bound_integers(v) for k, v in (query or {}).items()}
    body = bound_integers(body) if body is not None else None
    for name, schema in dict(path_params or {}, **(query or {})).items():
        check_schema(schema, "%s %s %s" % (method, path, name))
    if body is not None:
        check_schema(body, "%s %s body" % (method, path))
    if response is not None and media == "application/json":
        check_schema(response, "%s %s response" % (method, path))

    def wrap(handler: Handler) -> Handler:
        names = {p[1:-1].split(":")[0] for p in path.split("/") if p.startswith("{")}
        if names != set(path_params or {}):
            raise ValueError("route %s %s: path parameters %s not all declared" % (method, path, sorted(names)))
        registry.append(
            Endpoint(
                method,
                path,
                permission,
                summary,
                handler,
                tag,
                dict(path_params or {}),
                dict(query or {}),
                tuple(required_query),
                body,
                response,
                status,
                media,
                description or (handler.__doc__ or "").strip(),
                tuple(refusals),
            )
        )
        return handler

    return wrap


class Ctx:
    """What a handler gets: the request, the services, who asks (``principal``), and its validated inputs."""

    def __init__(self, request: Request, api: Any, ep: Endpoint, principal: Principal | None, source: str):
        self.request = request
        self.api = api
        self.endpoint = ep
        self.principal = principal
        self.source = source
        self.path: dict[str, Any] = {}
        self.query: dict[str, Any] = {}
        self.body: Any = None
        self.response_headers: dict[str, str] = {}

    @property
    def tenant(self) -> str:
        """The caller's tenant id: every data query filters by it. 403 for the system administrator."""
        if self.principal is None or self.principal.tenant_id is None:
            raise ApiError(403, "forbidden", "this needs an account of a tenant")
        return self.principal.tenant_id

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(db, *args)`` in a worker thread (the database calls block)."""
        return await asyncio.to_thread(fn, self.api.db, *args)


def _source(request: Request, trusted_proxies: frozenset[str]) -> str:
    # The peer's address; X-Forwarded-For only when the peer is a proxy we were told to trust
    # (otherwise any client could write whatever address it likes into the audit log).
    peer = request.client.host if request.client else "-"
    if peer in trusted_proxies:
        fwd = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in fwd.split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return peer[:64]


async def _read_json(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise ApiError(413, "too_large", "the body is limited to %d bytes" % MAX_BODY)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(413, "too_large", "the body is limited to %d bytes" % MAX_BODY)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, "bad_json", "the body is not JSON: %s" % str(e)[:80]) from None


def _no_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _inputs(ctx: Ctx, ep: Endpoint, request: Request) -> None:
    for name, schema in ep.path_params.items():
        raw = request.path_params.get(name, "")
        value = coerce_query(str(raw), schema, "path." + name)
        validate(value, schema, "path." + name)
        ctx.path[name] = value
    for name, schema in ep.query.items():
        raws = request.query_params.getlist(name)
        if not raws:
            if name in ep.required_query:
                raise SchemaViolation("query." + name, "is required")
            continue
        if len(raws) > 1:
            raise SchemaViolation("query." + name, "is given more than once")
        value = coerce_query(raws[0], schema, "query." + name)
        validate(value, schema, "query." + name)
        ctx.query[name] = value


async def dispatch(api: Any, ep: Endpoint, request: Request) -> Response:
    """Authenticate, authorise, validate, run the handler, and turn every outcome into a response."""
    t0 = time.perf_counter()
    source = _source(request, api.settings.trusted_proxies)
    principal = None
    status = 500
    try:
        if ep.permission != PUBLIC:
            principal = await api.authenticate(request)
            if not allowed(principal.role, ep.permission):
                raise ApiError(403, "forbidden", "role %s lacks %s" % (principal.role, ep.permission))
            if principal.kind == SESSION and request.method not in SAFE_METHODS:
                await api.check_csrf(request, principal)
        ctx = Ctx(request, api, ep, principal, source)
        try:
            _inputs(ctx, ep, request)
            if ep.body is not None:
                ctx.body = await _read_json(request)
                validate(ctx.body, ep.body, "body")
        except SchemaViolation as e:
            raise ApiError(422, "invalid", str(e)) from None
        result = await ep.handler(ctx)
        if isinstance(result, Response):
            response = result
        elif ep.response is None:
            response = Response(status_code=204 if ep.status == 200 else ep.status)
        else:
            response = JSONResponse(result, status_code=ep.status)
        response.headers.update(ctx.response_headers)
    except ApiError as e:
        headers = dict(e.headers)
        if e.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="phasekit"')
        response = error_response(e.status, e.code, e.detail, headers)
    except Exception:
        log.exception("%s %s failed", request.method, ep.path)
        response = error_response(500, "internal", "the server failed; the log says why")
    status = response.status_code
    api.observe(ep, status, time.perf_counter() - t0, principal, source)
    return response
