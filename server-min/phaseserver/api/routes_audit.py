"""The audit log's route: search one tenant's entries by time range, object and action (auditor only).

``GET /api/v1/audit?from=&to=&object=&action=&before=&limit=`` answers the
newest entries first; ``object`` is exact or a prefix ending in ``*``
(``transformer:s1/*``), ``before`` pages back by sequence number
(``next_before`` of the previous page). The one thing to know: only the
``auditor`` role holds ``audit.read`` (IEC 62351-8 SECAUD); the entries are
the tenant's own (``tenant_id`` in SQL), and each carries its chain hash so
an auditor can check it against ``phasekit server audit verify``.
"""

import asyncio
from typing import Any

from phaseserver import audit
from phaseserver.api.routing import Ctx, Endpoint, endpoint
from phaseserver.api.schemas import NULLABLE_INT, TIME, array, obj

__all__ = ("ENDPOINTS",)

ENDPOINTS: list[Endpoint] = []

_ENTRY = obj(
    {
        "seq": {"type": "integer"},
        "t_s": {"type": "number"},
        "tenant_id": {"type": ["string", "null"]},
        "actor": {"type": "string"},
        "source": {"type": "string"},
        "action": {"type": "string"},
        "object": {"type": "string"},
        "before": {},
        "after": {},
        "hash": {"type": "string"},
    }
)
_TEXT = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f]+$"}


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/audit",
    "audit.read",
    "Search the tenant's audit log by time range, object and action, newest first",
    tag="audit",
    query={
        "from": dict(TIME, description="Unix seconds, inclusive"),
        "to": dict(TIME, description="Unix seconds, exclusive"),
        "object": dict(_TEXT, description="exact object, or a prefix ending in *"),
        "action": dict(_TEXT, description="e.g. login.failed, command.request, alarm.ack"),
        "before": {"type": "integer", "minimum": 1, "maximum": 2**53, "description": "entries before this seq"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    response=obj({"entries": array(_ENTRY), "next_before": NULLABLE_INT}),
)
async def search_audit(ctx: Ctx) -> Any:
    q = ctx.query
    limit = q.get("limit", 100)
    rows = await asyncio.to_thread(
        audit.search,
        ctx.api.db,
        ctx.tenant,
        q.get("from"),
        q.get("to"),
        q.get("object"),
        q.get("action"),
        q.get("before"),
        limit,
    )
    return {
        "entries": [e.public() for e in rows],
        "next_before": rows[-1].seq if len(rows) == limit else None,
    }
