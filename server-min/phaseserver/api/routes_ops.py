"""Operations routes: /healthz (alive), /readyz (able to serve), /metrics (Prometheus text), /openapi.json.

The one thing to know: /healthz and /readyz need no credential (a load
balancer or systemd probes them) and say nothing about the data; /metrics
needs the ``metrics.read`` permission (a ``monitor`` API key for Prometheus,
``Authorization: Bearer pk_...``) because its counters name sites and
transformers.
"""

from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from phaseserver.api.routing import Ctx, Endpoint, endpoint
from phaseserver.api.schemas import obj
from phaseserver.auth.roles import PUBLIC

__all__ = ("ENDPOINTS",)

ENDPOINTS: list[Endpoint] = []

_STATUS = obj({"status": {"type": "string"}, "detail": {"type": "string"}}, required=["status"])


@endpoint(
    ENDPOINTS,
    "GET",
    "/healthz",
    PUBLIC,
    "Liveness: the process answers",
    tag="operations",
    response=_STATUS,
    refusals=(503,),
)
async def healthz(ctx: Ctx) -> Any:
    metrics = ctx.api.metrics
    if metrics is not None and hasattr(metrics, "health"):
        ok, why = metrics.health()
        if not ok:
            return JSONResponse({"error": "unhealthy", "detail": why}, status_code=503)
    return {"status": "ok"}


@endpoint(
    ENDPOINTS,
    "GET",
    "/readyz",
    PUBLIC,
    "Readiness: the database answers and the server has started",
    tag="operations",
    response=_STATUS,
    refusals=(503,),
)
async def readyz(ctx: Ctx) -> Any:
    ok, why = await ctx.api.ready()
    if not ok:
        return JSONResponse({"error": "not_ready", "detail": why}, status_code=503)
    return {"status": "ready"}


@endpoint(
    ENDPOINTS,
    "GET",
    "/metrics",
    "metrics.read",
    "Prometheus metrics (text exposition format 0.0.4)",
    tag="operations",
    response={"type": "string"},
    media="text/plain",
)
async def metrics(ctx: Ctx) -> Response:
    parts = []
    if ctx.api.metrics is not None and hasattr(ctx.api.metrics, "render"):
        parts.append(ctx.api.metrics.render())
    parts.append(_api_metrics(ctx.api))
    return PlainTextResponse("".join(parts), media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _api_metrics(api: Any) -> str:
    lines = ["# HELP phaseserver_http_requests_total HTTP requests answered, by route and status class.",
             "# TYPE phaseserver_http_requests_total counter"]  # fmt: skip
    for key in sorted(api.requests):
        method, path, status = key.split(" ")
        lines.append(
            'phaseserver_http_requests_total{method="%s",route="%s",status="%s"} %d'
            % (method, _label(path), status, api.requests[key])
        )
    lines += ["# HELP phaseserver_http_request_p99_seconds 99th percentile latency of recent requests, by route.",
              "# TYPE phaseserver_http_request_p99_seconds gauge"]  # fmt: skip
    for route in sorted(api.latency_s):
        lat = sorted(api.latency_s[route])
        if lat:
            method, path = route.split(" ")
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            lines.append(
                'phaseserver_http_request_p99_seconds{method="%s",route="%s"} %.6f' % (method, _label(path), p99)
            )
    if api.commands is not None:
        lines += ["# HELP phaseserver_commands_total Operator commands by what became of them in this process.",
                  "# TYPE phaseserver_commands_total counter"]  # fmt: skip
        for name in sorted(api.commands.counters):
            lines.append('phaseserver_commands_total{what="%s"} %d' % (name, api.commands.counters[name]))
    return "\n".join(lines) + "\n"


@endpoint(
    ENDPOINTS,
    "GET",
    "/openapi.json",
    PUBLIC,
    "This API's OpenAPI 3.1 document",
    tag="operations",
    response={"type": "object"},
)
async def openapi_document(ctx: Ctx) -> Any:
    from phaseserver.api.openapi import document

    return document(ctx.api.endpoints, ctx.api.settings.title, ctx.api.settings.version)
