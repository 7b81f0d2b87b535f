"""The OpenAPI 3.1 document of the API, generated from the routes' own declarations.

Each ``Endpoint`` (``phaseserver.api.routing``) gives one operation: its
path and query parameters, its request body and its responses, all as the
JSON Schemas the dispatcher validates against, plus the responses the
dispatcher itself may give (401 without a valid credential, 403 without the
permission or the CSRF token, 422 for input that breaks the schema, 400/413/415
for a body that is not JSON, too large or of another type). The one thing to
know: the document is derived, never written by hand, so it cannot drift from
what the server does; the property-based test (schemathesis) holds the
running server to it.
"""

from typing import Any

from phaseserver.api.routing import Endpoint
from phaseserver.api.schemas import ERROR
from phaseserver.auth.roles import PERMISSIONS, PUBLIC

__all__ = ("document", "SECURITY_SCHEMES")

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token (EdDSA JWT, typ at+jwt, from /api/v1/auth/token) or an API key (pk_...).",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "phasekit_session",
        "description": "A browser session from /api/v1/auth/login; state-changing requests also send X-CSRF-Token.",
    },
}

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "The body is not JSON",
    401: "No valid credential",
    403: "The credential's role lacks the permission, or the CSRF token is missing",
    404: "No such object for this tenant",
    409: "The object exists already",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "An input breaks its schema",
    429: "Too many attempts",
    503: "Not ready",
}


def _error(status: int) -> dict[str, Any]:
    return {"description": _REASONS.get(status, "Refused"), "content": {"application/json": {"schema": ERROR}}}


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "tags": [ep.tag],
        "x-permission": ep.permission,
    }
    if ep.description:
        op["description"] = ep.description
    if ep.permission != PUBLIC:
        roles = ", ".join(sorted(PERMISSIONS[ep.permission]))
        op["description"] = (
            op.get("description", "") + "\n\nPermission `%s` (roles: %s)." % (ep.permission, roles)
        ).strip()
    params = []
    for name, schema in ep.path_params.items():
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, schema in ep.query.items():
        p: dict[str, Any] = {"name": name, "in": "query", "required": name in ep.required_query, "schema": schema}
        if "description" in schema:
            p["description"] = schema["description"]
        params.append(p)
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.body}}}
    responses: dict[str, Any] = {}
    if ep.response is None:
        responses[str(204 if ep.status == 200 else ep.status)] = {"description": _REASONS.get(204, "OK")}
    else:
        responses[str(ep.status)] = {
            "description": _REASONS.get(ep.status, "OK"),
            "content": {ep.media: {"schema": ep.response}},
        }
    statuses = set(ep.refusals)
    if ep.permission != PUBLIC:
        statuses |= {401, 403}
        op["security"] = [{"bearer": []}, {"session": []}]
    else:
        op["security"] = []
    if ep.path_params or ep.query or ep.body is not None:
        statuses.add(422)
    if ep.body is not None:
        statuses |= {400, 413, 415}
    for status in sorted(statuses):
        responses[str(status)] = _error(status)
    if 401 in statuses:
        responses["401"]["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="phasekit"'}
        }
    if 429 in statuses:
        responses["429"]["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    op["responses"] = responses
    return op


def document(endpoints: list[Endpoint], title: str = "phasekit server API", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of ``endpoints``."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": title,
            "version": version,
            "description": "The operations server of phasekit: fleet, series, nodes, alarms, operator commands, "
            "audit log, accounts and keys. Every route names the permission it needs (x-permission); "
            "docs/server.md has the role table.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }
