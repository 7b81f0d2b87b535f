"""The alarm routes of the API: list, one alarm with its history and notifications, acknowledge, clear, worst.

Contributed to the API through ``phaseserver.api.app.ROUTERS``; each route
declares its permission (``phaseserver.auth.roles``): reading needs
``alarm.read`` (viewer, operator, installer), acknowledging ``alarm.ack`` and
clearing ``alarm.clear`` (operator only). Every query is scoped to the
caller's tenant in SQL (an alarm of another tenant is 404, exactly like one
that does not exist). The one thing to know: an acknowledgement or a clear
and its audit entry (``phaseserver.audit.record``: actor, tenant, time,
source address, the alarm before and after) are one transaction, so neither
exists without the other.

| method | path | permission |
|---|---|---|
| GET | /api/v1/alarms | alarm.read |
| GET | /api/v1/alarms/worst | alarm.read |
| GET | /api/v1/alarms/{id} | alarm.read |
| POST | /api/v1/alarms/{id}/ack | alarm.ack |
| POST | /api/v1/alarms/{id}/clear | alarm.clear |
"""

import asyncio
from typing import Any

from phaseserver import audit
from phaseserver.alarms.engine import AlarmEngine, AlarmNotFound, AlarmStateError, worst
from phaseserver.alarms.rules import SEVERITY_NAMES, TYPES
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.alarms.store import AlarmStore
from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.api.schemas import NULLABLE_INT, NULLABLE_NUMBER, NULLABLE_TEXT, SITE, TIME, TRANSFORMER, array, obj

__all__ = ("ENDPOINTS", "ALARM")

ENDPOINTS: list[Endpoint] = []

_COMMENT_MAX = 500
_STATES = ["active", "active_acked", "cleared", "cleared_acked"]
ALARM = obj(
    {
        "id": {"type": "integer"},
        "type": {"type": "string", "enum": sorted(TYPES)},
        "object": {"type": "string", "maxLength": 120},
        "object_kind": {"type": "string", "enum": ["server", "site", "transformer", "node"]},
        "site": NULLABLE_TEXT,
        "transformer": NULLABLE_TEXT,
        "node": NULLABLE_INT,
        "severity": {"type": "integer", "minimum": 1, "maximum": 4},
        "severity_name": {"type": "string", "enum": [SEVERITY_NAMES[k] for k in sorted(SEVERITY_NAMES)]},
        "max_severity": {"type": "integer", "minimum": 1, "maximum": 4},
        "state": {"type": "string", "enum": _STATES},
        "value": NULLABLE_NUMBER,
        "detail": {"type": "object"},
        "since_s": NULLABLE_NUMBER,
        "raised_s": {"type": "number"},
        "updated_s": {"type": "number"},
        "updates": {"type": "integer"},
        "acked_s": NULLABLE_NUMBER,
        "acked_by": NULLABLE_TEXT,
        "ack_comment": NULLABLE_TEXT,
        "escalated_s": NULLABLE_NUMBER,
        "cleared_s": NULLABLE_NUMBER,
        "cleared_by": NULLABLE_TEXT,
        "clear_comment": NULLABLE_TEXT,
    }
)
_EVENT = obj(
    {
        "t_s": {"type": "number"},
        "what": {"type": "string"},
        "actor": {"type": "string"},
        "comment": NULLABLE_TEXT,
        "severity": NULLABLE_INT,
    }
)
_ATTEMPT = obj(
    {
        "attempt": {"type": "integer"},
        "wall_s": {"type": "number"},
        "ok": {"type": "boolean"},
        "status": {"type": "string"},
        "detail": NULLABLE_TEXT,
    }
)
_NOTIFICATION = obj(
    {
        "id": {"type": "integer"},
        "transition": {"type": "string"},
        "channel": {"type": "string"},
        "target": {"type": "string"},
        "state": {"type": "string"},
        "attempts": {"type": "integer"},
        "log": array(_ATTEMPT),
    }
)
_ONE = obj({"alarm": ALARM, "history": array(_EVENT), "notifications": array(_NOTIFICATION)})
_LIST = obj({"alarms": array(ALARM, 1000)})
_WORST = obj(
    {
        "objects": {
            "type": "object",
            "additionalProperties": obj(
                {
                    "severity": {"type": "integer"},
                    "alarm_id": {"type": "integer"},
                    "type": {"type": "string"},
                    "alarms": {"type": "integer"},
                }
            ),
        }
    }
)
_COMMENT_BODY = obj({"comment": {"type": "string", "maxLength": _COMMENT_MAX}}, required=[])
_ID = {"id": {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}}  # a JSON-safe integer


def _public(a: dict[str, Any]) -> dict[str, Any]:
    out = {k: a[k] for k in ALARM["properties"] if k in a}
    out["severity_name"] = SEVERITY_NAMES.get(a["severity"], str(a["severity"]))
    return {k: out[k] for k in ALARM["properties"]}


def _engine(ctx: Ctx) -> AlarmEngine:
    """The running engine (``phaseserver.alarms.attach``), or one over the API's database without rules or
    notifier (alarms disabled: people can still acknowledge and clear what is stored)."""
    engine = getattr(ctx.api.server, "alarms", None)
    if engine is None:
        engine = getattr(ctx.api, "_alarms_fallback", None)
        if engine is None:
            clock = ctx.api.clock
            engine = AlarmEngine(ctx.api.db, AlarmSettings(), clock)
            ctx.api._alarms_fallback = engine
    return engine


def _audited(ctx: Ctx, action: str, tenant: str) -> Any:
    actor, source, wall = ctx.principal.actor if ctx.principal else "-", ctx.source, ctx.api.wall

    def on_change(db: Any, before: dict[str, Any], after: dict[str, Any]) -> None:
        audit.record(
            db, actor, tenant, action, "alarm:%d" % after["id"], _public(before), _public(after), source, now=wall()
        )

    return on_change


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/alarms",
    "alarm.read",
    "Alarms of the caller's tenant, newest first",
    tag="alarms",
    query={
        "state": {"type": "string", "enum": ["active", "unacked", "cleared", "all"]},
        "site": SITE,
        "transformer": TRANSFORMER,
        "since_s": TIME,
        "until_s": TIME,
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    response=_LIST,
    description="state: active (default; not cleared, acknowledged or not), unacked, cleared or all. "
    "since_s/until_s bound the raise time.",
)
async def list_alarms(ctx: Ctx) -> Any:
    q = ctx.query
    rows = await ctx.run(
        lambda db: AlarmStore(db).query(
            ctx.tenant,
            q.get("state", "active"),
            q.get("site"),
            q.get("transformer"),
            q.get("since_s"),
            q.get("until_s"),
            q.get("limit", 200),
        )
    )
    return {"alarms": [_public(a) for a in rows]}


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/alarms/worst",
    "alarm.read",
    "The worst active alarm of each node, transformer and site (propagated up the tree)",
    tag="alarms",
    response=_WORST,
)
async def worst_alarms(ctx: Ctx) -> Any:
    active = await ctx.run(lambda db: AlarmStore(db).active(ctx.tenant))
    return {"objects": {k: w._asdict() for k, w in worst(active).items()}}


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/alarms/{id}",
    "alarm.read",
    "One alarm with its history and notifications",
    tag="alarms",
    path_params=_ID,
    response=_ONE,
    refusals=(404,),
)
async def get_alarm(ctx: Ctx) -> Any:
    alarm_id = ctx.path["id"]

    def read(db: Any) -> dict[str, Any] | None:
        store = AlarmStore(db)
        a = store.get(alarm_id, ctx.tenant)
        if a is None:
            return None
        return {"alarm": _public(a), "history": store.history(alarm_id), "notifications": _notifications(db, alarm_id)}

    out = await ctx.run(read)
    if out is None:
        raise ApiError(404, "not_found", "no alarm %d" % alarm_id)
    return out


def _notifications(db: Any, alarm_id: int) -> list[dict[str, Any]]:
    from phaseserver.notify.dispatch import notification_log

    return notification_log(db, alarm_id)


async def _change(ctx: Ctx, what: str) -> Any:
    alarm_id = ctx.path["id"]
    tenant = ctx.tenant
    comment = (ctx.body or {}).get("comment", "")
    engine = _engine(ctx)
    fn = engine.acknowledge if what == "ack" else engine.clear
    actor = ctx.principal.actor if ctx.principal else "-"
    try:
        before, after = await asyncio.to_thread(
            fn, alarm_id, tenant, actor, comment, _audited(ctx, "alarm." + what, tenant)
        )
    except AlarmNotFound:
        raise ApiError(404, "not_found", "no alarm %d" % alarm_id) from None
    except AlarmStateError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return _public(after)


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/alarms/{id}/ack",
    "alarm.ack",
    "Acknowledge an alarm (with an optional comment); audited",
    tag="alarms",
    path_params=_ID,
    body=_COMMENT_BODY,
    response=ALARM,
    refusals=(404, 409),
)
async def ack_alarm(ctx: Ctx) -> Any:
    return await _change(ctx, "ack")


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/alarms/{id}/clear",
    "alarm.clear",
    "Clear an active alarm by hand (with an optional comment); audited; a condition that still holds is raised again",
    tag="alarms",
    path_params=_ID,
    body=_COMMENT_BODY,
    response=ALARM,
    refusals=(404, 409),
)
async def clear_alarm(ctx: Ctx) -> Any:
    return await _change(ctx, "clear")
