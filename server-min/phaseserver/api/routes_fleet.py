"""Fleet routes: the transformers of the caller's tenant, one transformer's series, moves and nodes, CSV export.

All read ``fleet.read`` (viewer, operator, installer); the installer's
``PUT /api/v1/transformers/{site}/{transformer}`` (name, phase rating: the
rating the over-current alarm uses) needs ``registry.write`` and is audited.
The one thing to know: every query takes the caller's tenant
(``ctx.tenant``) and filters by it in SQL, so another tenant's transformer
answers 404 exactly like one that does not exist. Series are columnar
(``{"t_s": [...], "i_a": [...], ...}``), amperes and fractions, at a
resolution of 60 s to a day (an hour or more come from the roll-ups).
"""

import asyncio
from typing import Any

from starlette.responses import StreamingResponse

from phasecore import codes
from phaseserver import audit
from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.api.schemas import NULLABLE_INT, NULLABLE_NUMBER, NULLABLE_TEXT, TIME, TX_PATH, array, obj
from phaseserver.store import queries
from phaseserver.store.base import RESOLUTIONS

__all__ = ("ENDPOINTS", "MAX_POINTS", "MAX_EXPORT_S")

ENDPOINTS: list[Endpoint] = []
MAX_POINTS = 20000
MAX_EXPORT_S = 35 * 86400
# The phase and outcome names are phasecore.codes' (the one table of wire codes); phase 3 is "none".
_PHASES = (*codes.PHASE_NAMES[:3], None)
_OUTCOMES = codes.OUTCOME_NAMES

_ALARM = {
    "type": ["object", "null"],
    "properties": {
        "id": {"type": "integer"},
        "type": {"type": "string"},
        "severity": {"type": "integer"},
        "object": {"type": "string"},
        "raised_s": {"type": "number"},
        "acknowledged": {"type": "boolean"},
    },
    "required": ["id", "type", "severity", "object", "raised_s", "acknowledged"],
    "additionalProperties": False,
}
_TX = obj(
    {
        "site": {"type": "string"},
        "transformer": {"type": "string"},
        "name": NULLABLE_TEXT,
        "online": {"type": "boolean"},
        "status": NULLABLE_TEXT,
        "status_s": NULLABLE_NUMBER,
        "last_seen_s": NULLABLE_NUMBER,
        "last_t_s": NULLABLE_INT,
        "nodes": {"type": "integer"},
        "fw": NULLABLE_TEXT,
        "backlog": NULLABLE_INT,
        "worst_alarm": _ALARM,
    }
)
_PHASE = {"type": ["string", "null"], "enum": list(_PHASES)}
_RANGE = {
    "from": dict(TIME, description="start, Unix seconds (default: 24 h before 'to')"),
    "to": dict(TIME, description="end (exclusive), Unix seconds (default: now)"),
}
_NUMS = array({"type": "number"})
_SERIES = obj(
    {
        "site": {"type": "string"},
        "transformer": {"type": "string"},
        "from": {"type": "integer"},
        "to": {"type": "integer"},
        "resolution": {"type": "integer"},
        "t_s": array({"type": "integer"}),
        "i_a": _NUMS,
        "i_b": _NUMS,
        "i_c": _NUMS,
        "i_n": _NUMS,
        "cuf": _NUMS,
        "i_max": _NUMS,
        "minutes": array({"type": "integer"}),
    }
)
_MOVE = obj(
    {
        "t_s": {"type": "integer"},
        "node": NULLABLE_INT,
        "to_phase": _PHASE,
        "outcome": {"type": ["string", "null"]},
        "phase_after": _PHASE,
    }
)
_NODE = obj(
    {
        "addr": {"type": "integer"},
        "generation": {"type": "integer"},
        "src": {"type": "integer"},
        "phase": _PHASE,
        "status": NULLABLE_INT,
        "last_t_s": NULLABLE_INT,
        "last_seen_s": NULLABLE_NUMBER,
        "fw": NULLABLE_TEXT,
    }
)
_TX_SETTINGS = obj(
    {
        "name": {"type": ["string", "null"], "maxLength": 80},
        "rating_a": {"type": ["number", "null"], "minimum": 1, "maximum": 100000},
    },
    required=[],
)


def _tx_row(row: Any, alarm: dict | None) -> dict[str, Any]:
    return {
        "site": row.site,
        "transformer": row.transformer,
        "name": row.name,
        "online": row.status == "online",
        "status": row.status,
        "status_s": row.status_s,
        "last_seen_s": row.last_seen_s,
        "last_t_s": row.last_t_s,
        "nodes": int(row.nodes),
        "fw": row.fw,
        "backlog": row.backlog,
        "worst_alarm": alarm,
    }


def _fleet(db: Any, store: Any, tenant: str) -> list[dict[str, Any]]:
    worst = queries.worst_alarms(db, tenant)
    return [_tx_row(r, worst.get((r.site, r.transformer))) for r in store.fleet(tenant)]


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/fleet",
    "fleet.read",
    "The tenant's transformers with online state and worst active alarm",
    tag="fleet",
    response=obj({"transformers": array(_TX)}),
)
async def fleet(ctx: Ctx) -> Any:
    rows = await asyncio.to_thread(_fleet, ctx.api.db, ctx.api.store, ctx.tenant)
    return {"transformers": rows}


async def _transformer(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]

    def get(db: Any) -> Any:
        row = ctx.api.store.transformer(tenant, site, tx)
        if row is None:
            return None
        return _tx_row(row, queries.worst_alarms(db, tenant).get((site, tx)))

    row = await ctx.run(get)
    if row is None:
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))
    return row


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}",
    "fleet.read",
    "One transformer: online state, nodes, firmware, backlog, worst active alarm",
    tag="fleet",
    path_params=TX_PATH,
    response=_TX,
    refusals=(404,),
)
async def transformer(ctx: Ctx) -> Any:
    return await _transformer(ctx)


def _range(ctx: Ctx, default_span_s: int = 86400, max_span_s: int | None = None) -> tuple[int, int]:
    """``[from, to)`` of a request: ``to`` defaults to now (site time), ``from`` to ``default_span_s`` before.

    An empty or inverted range is empty (no error: JSON Schema cannot say "from < to", and nothing is
    wrong with asking for nothing); a range longer than ``max_span_s`` is cut to its last ``max_span_s``.
    """
    now = int(ctx.api.clock.now()) if ctx.api.clock is not None else int(ctx.api.wall())
    end = ctx.query.get("to", now)
    start = min(ctx.query.get("from", max(0, end - default_span_s)), end)
    if max_span_s is not None and end - start > max_span_s:
        start = end - max_span_s
    return start, end


def _resolution(start: int, end: int, asked: int) -> int:
    """The finest resolution at or above ``asked`` that keeps the series within MAX_POINTS points."""
    for step in RESOLUTIONS:
        if step >= asked and (end - start) // step <= MAX_POINTS:
            return step
    return RESOLUTIONS[-1]


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}/series",
    "fleet.read",
    "Phase currents, neutral current and CUF over a time range at a resolution",
    tag="fleet",
    path_params=TX_PATH,
    query=dict(
        _RANGE,
        resolution={
            "type": "integer",
            "enum": list(RESOLUTIONS),
            "description": "seconds per point (default 60); coarsened to keep at most 20000 points",
        },
    ),
    response=_SERIES,
    refusals=(404,),
)
async def series(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]
    start, end = _range(ctx)
    step = _resolution(start, end, ctx.query.get("resolution", 60))
    start = max(start, end - MAX_POINTS * step)

    def get(db: Any) -> Any:
        if ctx.api.store.transformer(tenant, site, tx) is None:
            return None
        return ctx.api.store.series(tenant, site, tx, start, end, step)

    points = await ctx.run(get)
    if points is None:
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))
    out: dict[str, Any] = {"site": site, "transformer": tx, "from": start, "to": end, "resolution": step}
    for i, name in enumerate(("t_s", "i_a", "i_b", "i_c", "i_n", "cuf", "i_max", "minutes")):
        col = [p[i] for p in points]
        out[name] = col if name in ("t_s", "minutes") else [round(float(v), 4) for v in col]
    return out


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}/moves",
    "fleet.read",
    "The moves in a time range (balancer's and operators'), with their outcome",
    tag="fleet",
    path_params=TX_PATH,
    query=_RANGE,
    response=obj({"moves": array(_MOVE)}),
    refusals=(404,),
)
async def moves(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]
    start, end = _range(ctx)

    def get(db: Any) -> Any:
        if ctx.api.store.transformer(tenant, site, tx) is None:
            return None
        return ctx.api.store.moves(tenant, site, tx, start, end)

    rows = await ctx.run(get)
    if rows is None:
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))

    def phase(v: Any) -> str | None:
        return _PHASES[v] if isinstance(v, int) and 0 <= v < 3 else None

    return {
        "moves": [
            {
                "t_s": int(m["t_s"]),
                "node": m["node"],
                "to_phase": phase(m["to_phase"]),
                "outcome": _OUTCOMES[m["outcome"]]
                if isinstance(m["outcome"], int) and 0 <= m["outcome"] < len(_OUTCOMES)
                else None,
                "phase_after": phase(m["phase_after"]),
            }
            for m in rows
        ]
    }


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}/nodes",
    "fleet.read",
    "The transformer's nodes: phase, last seen, firmware, key generation",
    tag="fleet",
    path_params=TX_PATH,
    response=obj({"nodes": array(_NODE)}),
    refusals=(404,),
)
async def nodes(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]

    def get(db: Any) -> Any:
        if ctx.api.store.transformer(tenant, site, tx) is None:
            return None
        return ctx.api.store.nodes(tenant, site, tx)

    rows = await ctx.run(get)
    if rows is None:
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))
    return {
        "nodes": [
            {
                "addr": int(n.addr),
                "generation": int(n.generation),
                "src": int(n.src),
                "phase": _PHASES[n.phase] if isinstance(n.phase, int) and 0 <= n.phase <= 3 else None,
                "status": n.status,
                "last_t_s": n.last_t_s,
                "last_seen_s": n.last_seen_s,
                "fw": n.fw,
            }
            for n in rows
        ]
    }


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}/export.csv",
    "fleet.read",
    "CSV export of raw readings or the per-minute series over a time range (at most 35 days, the last ones)",
    tag="fleet",
    path_params=TX_PATH,
    query=dict(_RANGE, what={"type": "string", "enum": ["readings", "series"], "description": "default readings"}),
    response={"type": "string"},
    media="text/csv",
    refusals=(404,),
)
async def export_csv(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]
    start, end = _range(ctx, max_span_s=MAX_EXPORT_S)
    what = ctx.query.get("what", "readings")
    if await ctx.run(lambda db: ctx.api.store.transformer(tenant, site, tx)) is None:
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))
    chunks = ctx.api.store.export_csv(tenant, site, tx, start, end, what)
    filename = "%s_%s_%s_%d_%d.csv" % (site, tx, what, start, end)
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="%s"' % filename},
    )


@endpoint(
    ENDPOINTS,
    "PUT",
    "/api/v1/transformers/{site}/{transformer}",
    "registry.write",
    "Set a transformer's name and phase current rating (audited)",
    tag="fleet",
    path_params=TX_PATH,
    body=_TX_SETTINGS,
    response=_TX,
    refusals=(404,),
)
async def set_transformer(ctx: Ctx) -> Any:
    tenant, site, tx = ctx.tenant, ctx.path["site"], ctx.path["transformer"]
    assert ctx.principal is not None
    actor = ctx.principal.actor

    def change(db: Any) -> bool:
        with db.transaction():
            row = ctx.api.store.transformer(tenant, site, tx)
            if row is None:
                return False
            current = db.fetchone(
                "SELECT name, rating_a FROM transformer WHERE tenant_id = ? AND site = ? AND id = ?", (tenant, site, tx)
            )
            assert current is not None
            name = ctx.body.get("name", current[0])
            rating = ctx.body.get("rating_a", current[1])
            result = queries.set_transformer(db, tenant, site, tx, name, rating)
            assert result is not None
            before, after = result
            audit.record(
                db, actor, tenant, "transformer.settings", "transformer:%s/%s" % (site, tx), before, after, ctx.source,
                now=ctx.api.wall(),
            )  # fmt: skip
            return True

    if not await ctx.run(change):
        raise ApiError(404, "not_found", "no transformer %s/%s" % (site, tx))
    return await _transformer(ctx)
