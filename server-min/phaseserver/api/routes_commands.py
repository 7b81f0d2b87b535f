"""Operator command routes: ask for a command on one node or the transformer's balancer, list them, follow one.

``POST /api/v1/transformers/{site}/{transformer}/commands`` needs
``command.send`` (operator): ``{"node": 7, "op": "move", "phase": "C"}``,
``{"node": 7, "op": "lock"}`` (pause balancing of the node), ``"unlock"``
(resume), ``{"node": 7, "op": "set_limits", "limits": {"i_max_mA": 20000}}``
or ``"report"``; ``{"op": "pause"}`` and ``{"op": "resume"}`` pause and
resume the balancer of the whole transformer (no node, or node 0; no
automatic moves while paused, operator moves still go). The answer (202) is the command as recorded: ``state``
``sent`` once the broker took it (``send_failed`` if it did not), and later
``done``, ``refused``, ``failed``, ``expired``, ``unsupported``, ``no_ack``
or ``timeout`` as ``phaseserver.commands`` tracks it; ``GET
/api/v1/commands/{id}`` follows it. The one thing to know: the request is
audited before the command leaves the server, and a node or transformer of
another tenant is 404 like a missing one.
"""

import asyncio
from typing import Any

from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.api.schemas import NULLABLE_NUMBER, NULLABLE_TEXT, TX_PATH, array, obj
from phaseserver.commands import LIMITS, OPS, STATES, TRANSFORMER_OPS, NotFound
from phaseserver.errors import CommandError

__all__ = ("ENDPOINTS",)

ENDPOINTS: list[Endpoint] = []

_LIMITS = obj({k: {"type": "integer", "minimum": lo, "maximum": hi} for k, (lo, hi) in LIMITS.items()}, required=[])
_NODE_OPS = [op for op in OPS if op not in TRANSFORMER_OPS]
# Two forms, told apart by the op: a command for one node, or pause/resume of the transformer's balancer.
_REQUEST = {
    "type": "object",
    "oneOf": [
        obj(
            {
                "node": {"type": "integer", "minimum": 1, "maximum": 247, "description": "the node's link address"},
                "op": {"type": "string", "enum": _NODE_OPS},
                "phase": {"type": "string", "enum": ["A", "B", "C"], "description": "move only: the target phase"},
                "limits": _LIMITS,
            },
            required=["node", "op"],
        ),
        obj(
            {
                "node": {"type": "integer", "minimum": 0, "maximum": 0, "description": "none, or 0: the transformer"},
                "op": {"type": "string", "enum": list(TRANSFORMER_OPS)},
            },
            required=["op"],
        ),
    ],
}
_COMMAND = obj(
    {
        "id": {"type": "integer"},
        "site": {"type": "string"},
        "transformer": {"type": "string"},
        "node": {"type": "integer"},
        "op": {"type": "string", "enum": list(OPS)},
        "params": {"type": "object"},
        "deadline_s": {"type": "integer"},
        "requested_by": {"type": "string"},
        "requested_s": {"type": "number"},
        "sent_s": NULLABLE_NUMBER,
        "state": {"type": "string", "enum": list(STATES)},
        "outcome_s": NULLABLE_NUMBER,
        "ack": {"type": ["object", "null"]},
        "detail": NULLABLE_TEXT,
    }
)


def _service(ctx: Ctx) -> Any:
    if ctx.api.commands is None:
        raise ApiError(503, "commands_disabled", "this server sends no commands ([commands] enabled = false)")
    return ctx.api.commands


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/transformers/{site}/{transformer}/commands",
    "command.send",
    "Seal and send an operator command to one node (move, lock, unlock, set_limits, report)"
    " or to the transformer (pause, resume its balancer)",
    tag="commands",
    path_params=TX_PATH,
    body=_REQUEST,
    response=_COMMAND,
    status=202,
    refusals=(404, 503),
)
async def send_command(ctx: Ctx) -> Any:
    service = _service(ctx)
    assert ctx.principal is not None
    params: dict[str, Any] = {}
    if "phase" in ctx.body:
        params["phase"] = ctx.body["phase"]
    params.update(ctx.body.get("limits", {}))
    try:
        c = await asyncio.to_thread(
            service.request,
            ctx.tenant,
            ctx.principal.actor,
            ctx.source,
            ctx.path["site"],
            ctx.path["transformer"],
            int(ctx.body.get("node", 0)),  # an integer, maybe written 7.0 (JSON Schema's integer)
            ctx.body["op"],
            params,
        )
    except NotFound as e:
        raise ApiError(404, "not_found", str(e)) from None
    except CommandError as e:
        raise ApiError(422, "invalid", str(e)) from None
    return c.public()


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/transformers/{site}/{transformer}/commands",
    "command.read",
    "The newest operator commands of a transformer",
    tag="commands",
    path_params=TX_PATH,
    query={"limit": {"type": "integer", "minimum": 1, "maximum": 1000}},
    response=obj({"commands": array(_COMMAND)}),
    refusals=(503,),
)
async def list_commands(ctx: Ctx) -> Any:
    service = _service(ctx)
    rows = await asyncio.to_thread(
        service.list, ctx.tenant, ctx.path["site"], ctx.path["transformer"], ctx.query.get("limit", 100)
    )
    return {"commands": [c.public() for c in rows]}


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/commands/{id}",
    "command.read",
    "One operator command and its outcome",
    tag="commands",
    path_params={"id": {"type": "integer", "minimum": 1, "maximum": 2**53}},
    response=_COMMAND,
    refusals=(404, 503),
)
async def get_command(ctx: Ctx) -> Any:
    service = _service(ctx)
    c = await asyncio.to_thread(service.get, ctx.tenant, ctx.path["id"])
    if c is None:
        raise ApiError(404, "not_found", "no command %d" % ctx.path["id"])
    return c.public()
