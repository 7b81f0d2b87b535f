"""Login routes: a browser session (cookie + CSRF token) or API tokens (access + refresh), logout, who am I.

- ``POST /api/v1/auth/login``: name and password -> the session cookie
  (HttpOnly, SameSite=Strict, Secure unless ``[auth] cookie_secure = false``)
  and the CSRF token the page sends back in ``X-CSRF-Token``.
- ``POST /api/v1/auth/token``: name and password -> ``access_token`` (JWT,
  5 minutes) and ``refresh_token`` (single use, rotated).
- ``POST /api/v1/auth/refresh``, ``/api/v1/auth/revoke``: use or revoke a refresh token.
- ``POST /api/v1/auth/logout``, ``GET /api/v1/auth/me``.

The one thing to know: every refused login answers the same 401 whatever
the reason (unknown name, wrong password, revoked account), costs the same
Argon2id time, and is audited with the real reason; past the rate limits it
answers 429 with ``Retry-After`` without checking the password.
"""

import asyncio
from typing import Any

from starlette.responses import JSONResponse, Response

from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.api.schemas import ACCOUNT_NAME, ROLE, obj
from phaseserver.auth.passwords import MAX_LENGTH
from phaseserver.auth.principal import SESSION
from phaseserver.auth.roles import PUBLIC, permissions_of
from phaseserver.auth.service import RateLimited
from phaseserver.auth.sessions import COOKIE
from phaseserver.errors import AuthError

__all__ = ("ENDPOINTS",)

ENDPOINTS: list[Endpoint] = []

_CREDENTIALS = obj(
    {"name": ACCOUNT_NAME, "password": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH}},
)
_TOKENS = obj(
    {
        "access_token": {"type": "string"},
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer"},
        "refresh_token": {"type": "string"},
    }
)
_REFRESH = obj({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 200}})
_ME = obj(
    {
        "kind": {"type": "string", "enum": ["session", "access_token", "api_key"]},
        "actor": {"type": "string"},
        "role": ROLE,
        "tenant_id": {"type": ["string", "null"]},
        "permissions": {"type": "array", "items": {"type": "string"}},
    }
)
_SESSION = obj(
    {
        "csrf_token": {"type": "string"},
        "expires_s": {"type": "number"},
        "me": _ME,
    }
)


async def _password(ctx: Ctx, method: str) -> Any:
    try:
        return await asyncio.to_thread(
            ctx.api.auth.check_password, ctx.body["name"], ctx.body["password"], ctx.source, method
        )
    except RateLimited as e:
        raise ApiError(
            429, "rate_limited", "too many login attempts", {"Retry-After": str(int(e.retry_after_s) + 1)}
        ) from None
    except AuthError:
        raise ApiError(401, "login_refused", "wrong name or password") from None


def _me(kind: str, actor: str, role: str, tenant: str | None) -> dict[str, Any]:
    return {"kind": kind, "actor": actor, "role": role, "tenant_id": tenant, "permissions": permissions_of(role)}


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/auth/login",
    PUBLIC,
    "Log in for a browser session",
    tag="auth",
    body=_CREDENTIALS,
    response=_SESSION,
    refusals=(401, 429),
)
async def login(ctx: Ctx) -> Response:
    acc = await _password(ctx, "session")
    token, csrf = await asyncio.to_thread(ctx.api.auth.open_session, acc, ctx.source)
    settings = ctx.api.auth.settings
    body = {
        "csrf_token": csrf,
        "expires_s": ctx.api.wall() + settings.session_ttl_s,
        "me": _me(SESSION, "user:%s" % acc.name, acc.role, acc.tenant_id),
    }
    response = JSONResponse(body)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.session_ttl_s),
        path="/",
        secure=ctx.api.settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/auth/logout",
    "self",
    "End this browser session",
    tag="auth",
    response=None,
)
async def logout(ctx: Ctx) -> Response:
    assert ctx.principal is not None
    await asyncio.to_thread(ctx.api.auth.logout, ctx.principal)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", secure=ctx.api.settings.cookie_secure, httponly=True, samesite="strict")
    return response


@endpoint(ENDPOINTS, "GET", "/api/v1/auth/me", "self", "Who the credential belongs to", tag="auth", response=_ME)
async def me(ctx: Ctx) -> Any:
    p = ctx.principal
    assert p is not None
    return _me(p.kind, p.actor, p.role, p.tenant_id)


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/auth/token",
    PUBLIC,
    "Log in for API tokens (access and refresh)",
    tag="auth",
    body=_CREDENTIALS,
    response=_TOKENS,
    refusals=(401, 429),
)
async def token(ctx: Ctx) -> Any:
    acc = await _password(ctx, "token")
    return await asyncio.to_thread(ctx.api.auth.issue_tokens, acc)


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/auth/refresh",
    PUBLIC,
    "Trade a refresh token for new tokens (it is used up)",
    tag="auth",
    body=_REFRESH,
    response=_TOKENS,
    refusals=(401,),
)
async def refresh(ctx: Ctx) -> Any:
    try:
        return await asyncio.to_thread(ctx.api.auth.refresh_tokens, ctx.body["refresh_token"], ctx.source)
    except AuthError:
        raise ApiError(401, "refresh_refused", "the refresh token is not valid") from None


@endpoint(
    ENDPOINTS,
    "POST",
    "/api/v1/auth/revoke",
    PUBLIC,
    "Revoke a refresh token and its family (RFC 7009: answers 204 whether it existed or not)",
    tag="auth",
    body=_REFRESH,
    response=None,
)
async def revoke(ctx: Ctx) -> None:
    await asyncio.to_thread(ctx.api.auth.revoke_refresh, ctx.body["refresh_token"])
