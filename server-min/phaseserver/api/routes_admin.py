"""Administration routes: accounts and API keys (security administrator), tenants and sites (system administrator).

Every change goes through ``phaseserver.auth.manage`` (the same code as the
CLI), which enforces who may touch what and audits it with before and after.
The one thing to know: an API key's text is in the answer of the request
that made it and nowhere else, ever; the server keeps only its hash.
"""

import asyncio
from typing import Any

from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.api.schemas import ACCOUNT_NAME, ID, NULLABLE_NUMBER, ROLE, array, obj
from phaseserver.auth.manage import TENANT_PATTERN, Actor, Manager
from phaseserver.auth.passwords import MAX_LENGTH, MIN_LENGTH
from phaseserver.auth.roles import SYSTEM_ROLES, TENANT_ROLES, UNASSIGNED
from phaseserver.errors import AuthError, ConflictError

__all__ = ("ENDPOINTS",)

ENDPOINTS: list[Endpoint] = []

_TENANT_ID = {"type": "string", "pattern": TENANT_PATTERN, "maxLength": 32}
_ACCOUNT = obj(
    {
        "name": {"type": "string"},
        "tenant_id": {"type": ["string", "null"]},
        "role": ROLE,
        "created_s": {"type": "number"},
        "active": {"type": "boolean"},
    }
)
_NEW_ACCOUNT = obj(
    {
        "name": ACCOUNT_NAME,
        "role": ROLE,
        "password": {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH},
        "tenant": dict(_TENANT_ID, description="system administrator only: the tenant of a new secadmin"),
    },
    required=["name", "role", "password"],
)
_KEY = obj(
    {
        "id": {"type": "string"},
        "tenant_id": {"type": ["string", "null"]},
        "role": ROLE,
        "name": {"type": "string"},
        "created_by": {"type": "string"},
        "created_s": {"type": "number"},
        "expires_s": NULLABLE_NUMBER,
        "active": {"type": "boolean"},
    }
)
_KEY_ROLE = {"type": "string", "enum": [*TENANT_ROLES, "monitor"]}
_NEW_KEY = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
        "role": _KEY_ROLE,
        "ttl_s": {"type": "integer", "minimum": 60, "maximum": 10 * 365 * 86400},
    },
    required=["name", "role"],
)
_TENANT = obj({"id": {"type": "string"}, "name": {"type": "string"}, "created_s": {"type": "number"}})
_SITE = obj(
    {"id": {"type": "string"}, "tenant_id": {"type": "string"}, "name": {"type": ["string", "null"]},
     "first_seen_s": {"type": "number"}}
)  # fmt: skip
_REFUSALS = (404, 409)


def _actor(ctx: Ctx) -> Actor:
    p = ctx.principal
    assert p is not None
    return Actor(p.actor, p.role, p.tenant_id, p.account_id, ctx.source)


def _manager(ctx: Ctx) -> Manager:
    return Manager(ctx.api.db, ctx.api.auth.hasher, ctx.api.wall)


async def _call(fn: Any, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except AuthError as e:
        raise ApiError(403, "forbidden", str(e)) from None
    except LookupError as e:
        raise ApiError(404, "not_found", str(e)) from None
    except ConflictError as e:
        raise ApiError(409, "conflict", str(e)[:120]) from None


def _tenant_of_query(ctx: Ctx) -> str | None:
    """Whose accounts or keys: the caller's tenant; the system administrator names one (or none: system)."""
    p = ctx.principal
    assert p is not None
    if p.tenant_id is not None:
        return p.tenant_id
    return ctx.query.get("tenant")


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/accounts",
    "user.manage",
    "Accounts of the caller's tenant (system administrator: of ?tenant=, or the system accounts)",
    tag="admin",
    query={"tenant": _TENANT_ID},
    response=obj({"accounts": array(_ACCOUNT)}),
)
async def list_accounts(ctx: Ctx) -> Any:
    return {"accounts": await _call(_manager(ctx).list_accounts, _actor(ctx), _tenant_of_query(ctx))}


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/accounts",
    "user.manage",
    "Add an account (audited)",
    tag="admin",
    body=_NEW_ACCOUNT,
    response=_ACCOUNT,
    status=201,
    refusals=_REFUSALS,
)
async def add_account(ctx: Ctx) -> Any:
    actor = _actor(ctx)
    b = ctx.body
    tenant: str | None
    if actor.tenant_id is not None:
        if b.get("tenant", actor.tenant_id) != actor.tenant_id:
            raise ApiError(403, "forbidden", "accounts are added to the caller's own tenant")
        tenant = actor.tenant_id
    else:
        tenant = None if b["role"] in SYSTEM_ROLES else b.get("tenant")
        if tenant is None and b["role"] not in SYSTEM_ROLES:
            raise ApiError(422, "invalid", "body.tenant is required for a tenant role")
    return await _call(_manager(ctx).add_account, actor, b["name"], tenant, b["role"], b["password"])


@endpoint(
    ENDPOINTS,
    "PUT",
    "/api/v1/accounts/{name}/role",
    "user.manage",
    "Give an account another role (audited; its sessions and refresh tokens end)",
    tag="admin",
    path_params={"name": ACCOUNT_NAME},
    body=obj({"role": ROLE}),
    response=_ACCOUNT,
    refusals=_REFUSALS,
)
async def set_role(ctx: Ctx) -> Any:
    return await _call(_manager(ctx).set_role, _actor(ctx), ctx.path["name"], ctx.body["role"])


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/accounts/{name}/revoke",
    "user.manage",
    "Revoke an account for good (audited; its sessions and refresh tokens end)",
    tag="admin",
    path_params={"name": ACCOUNT_NAME},
    response=_ACCOUNT,
    refusals=_REFUSALS,
)
async def revoke_account(ctx: Ctx) -> Any:
    return await _call(_manager(ctx).revoke_account, _actor(ctx), ctx.path["name"])


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/keys",
    "key.manage",
    "API keys of the caller's tenant (system administrator: the system keys)",
    tag="admin",
    response=obj({"keys": array(_KEY)}),
)
async def list_keys(ctx: Ctx) -> Any:
    assert ctx.principal is not None
    return {"keys": await _call(_manager(ctx).list_keys, _actor(ctx), ctx.principal.tenant_id)}


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/keys",
    "key.manage",
    "Make an API key; its text is in this answer only (audited)",
    tag="admin",
    body=_NEW_KEY,
    response=obj({"key": {"type": "string"}, "info": _KEY}),
    status=201,
    refusals=_REFUSALS,
)
async def add_key(ctx: Ctx) -> Any:
    actor = _actor(ctx)
    b = ctx.body
    text, info = await _call(_manager(ctx).add_key, actor, actor.tenant_id, b["role"], b["name"], b.get("ttl_s"))
    return {"key": text, "info": info}


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/keys/{id}/revoke",
    "key.manage",
    "Revoke an API key (audited)",
    tag="admin",
    path_params={"id": {"type": "string", "pattern": "^[0-9a-f]{16}$", "maxLength": 16}},
    response=_KEY,
    refusals=_REFUSALS,
)
async def revoke_key(ctx: Ctx) -> Any:
    return await _call(_manager(ctx).revoke_key, _actor(ctx), ctx.path["id"])


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/tenants",
    "tenant.manage",
    "Every tenant",
    tag="admin",
    response=obj({"tenants": array(_TENANT)}),
)
async def list_tenants(ctx: Ctx) -> Any:
    return {"tenants": await _call(_manager(ctx).list_tenants, _actor(ctx))}


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/tenants",
    "tenant.manage",
    "Add a tenant (a utility) (audited)",
    tag="admin",
    body=obj({"id": _TENANT_ID, "name": {"type": "string", "minLength": 1, "maxLength": 120}}),
    response=_TENANT,
    status=201,
    refusals=_REFUSALS,
)
async def add_tenant(ctx: Ctx) -> Any:
    if ctx.body["id"] == UNASSIGNED:
        raise ApiError(409, "conflict", "%s is the tenant of sites nobody assigned" % UNASSIGNED)
    return await _call(_manager(ctx).add_tenant, _actor(ctx), ctx.body["id"], ctx.body["name"])


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/sites",
    "tenant.manage",
    "Every site with its tenant (sites first seen by ingest are 'unassigned')",
    tag="admin",
    response=obj({"sites": array(_SITE)}),
)
async def list_sites(ctx: Ctx) -> Any:
    return {"sites": await _call(_manager(ctx).list_sites, _actor(ctx))}


@endpoint(
    ENDPOINTS,
    "PUT",
    "/api/v1/sites/{site}/tenant",
    "tenant.manage",
    "Assign a site, with everything stored for it, to a tenant (audited in both tenants)",
    tag="admin",
    path_params={"site": ID},
    body=obj({"tenant": _TENANT_ID}),
    response=obj({"id": {"type": "string"}, "tenant_id": {"type": "string"}}),
    refusals=_REFUSALS,
)
async def assign_site(ctx: Ctx) -> Any:
    return await _call(_manager(ctx).assign_site, _actor(ctx), ctx.api.store, ctx.path["site"], ctx.body["tenant"])
