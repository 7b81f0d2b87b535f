"""The web page's routes: the page itself, its two assets, and its live-update stream.

- ``GET /``: ``index.html`` (public: it holds no data and no secret; what it
  shows comes from the API after logging in). Its own Content-Security-Policy
  allows scripts, styles and connections from this server only, no inline
  script or style, and Trusted Types, so no string can become markup or code.
- ``GET /static/app.js``, ``/static/app.css``, ``/static/icon.svg``: ``app.js``, ``app.css``, ``icon.svg``; with the
  ``?v=`` that ``index.html`` names them by (their content hash) they are
  cached for good, without it revalidated (ETag). Gzipped when the browser
  takes it.
- ``GET /api/v1/live``: Server-Sent Events (``phaseserver.web.live`` says why
  SSE): ``hello`` once, then ``change`` messages naming what changed
  (``{"alarms": bool, "audit": bool, "transformers": [...] | "all"}``), a
  comment line when quiet, and ``end`` before the server closes it (at
  ``[web] live_max_s``, when the server stops, or when the session ended).

The one thing to know: the stream is for the browser's session only (a
bearer credential is refused with 403 ``session_only``: API clients read the
routes themselves), it is re-checked against the session every
``live_recheck_s``, and its number is bounded per session and per process
(429 past either).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from phaseserver.api.routing import ApiError, Ctx, Endpoint, endpoint
from phaseserver.auth.principal import SESSION, Principal
from phaseserver.auth.roles import PUBLIC, allowed
from phaseserver.auth.sessions import COOKIE
from phaseserver.errors import AuthError
from phaseserver.web import FILES, VERSIONED, Asset, WebService
from phaseserver.web.live import SYSTEM_TENANT, LiveHub, LiveLimit, Subscriber
from phaseserver.web.settings import WebSettings

__all__ = ("ENDPOINTS", "PAGE_CSP", "web_service")

log = logging.getLogger("phaseserver.api.web")

ENDPOINTS: list[Endpoint] = []

# The page's policy: everything from this server, nothing inline, no plug-ins, no framing, and Trusted Types
# enforced with no policy at all (so innerHTML, eval and their kin throw: text goes in through textContent).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
_IMMUTABLE = "public, max-age=31536000, immutable"
_TOPICS = (("fleet", "fleet.read"), ("alarms", "alarm.read"), ("audit", "audit.read"))


def web_service(api: Any) -> WebService:
    """The server's WebService (``phaseserver.web.attach``), or one made for an app built without it."""
    web = getattr(api.server, "web", None)
    if isinstance(web, WebService):
        return web
    web = getattr(api, "_web_fallback", None)
    if web is None:
        cfg = getattr(api.server, "config", None)
        settings = WebSettings.from_table(cfg.table("web")) if cfg is not None else WebSettings()
        web = WebService(settings, LiveHub(api.db, settings))
        api._web_fallback = web
    return web


def _serve(ctx: Ctx, asset: Asset, cache: str) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if ctx.request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in ctx.request.headers.get("accept-encoding", "").lower():
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.media, headers=headers)


def _enabled(ctx: Ctx) -> WebService:
    web = web_service(ctx.api)
    if not web.settings.enabled:
        raise ApiError(404, "not_found", "the web page is not served here ([web] enabled = false)")
    return web


@endpoint(
    ENDPOINTS,
    "GET",
    "/",
    PUBLIC,
    "The operator web page",
    tag="web",
    response={"type": "string"},
    media="text/html",
    refusals=(404,),
    description="304 to a matching If-None-Match.",
)
async def page(ctx: Ctx) -> Response:
    web = _enabled(ctx)
    asset = web.assets.get("index.html")
    assert asset is not None
    response = _serve(ctx, asset, "no-cache")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def _static_route(name: str) -> None:
    async def handler(ctx: Ctx) -> Response:
        web = _enabled(ctx)
        asset = web.assets.get(name)
        assert asset is not None  # VERSIONED names only files that exist
        # Only the current version may be cached for good; an old ?v= gets today's file, revalidated.
        cache = _IMMUTABLE if ctx.query.get("v") == asset.version else "no-cache"
        return _serve(ctx, asset, cache)

    handler.__name__ = "static_" + name.replace(".", "_")
    endpoint(
        ENDPOINTS,
        "GET",
        "/static/" + name,
        PUBLIC,
        "The page's %s (cached for good with the ?v= index.html names it by; 304 to a matching If-None-Match)" % name,
        tag="web",
        query={"v": {"type": "string", "pattern": "^[0-9a-f]{1,64}$", "maxLength": 64, "description": "content hash"}},
        response={"type": "string"},
        media=FILES[name].split(";")[0],
        refusals=(404,),
    )(handler)


for _name in VERSIONED:
    _static_route(_name)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return ("event: %s\ndata: %s\n\n" % (name, json.dumps(data, separators=(",", ":")))).encode()


async def _still_valid(ctx: Ctx, cookie: str, was: Principal) -> bool:
    """Whether the stream's session is still the one it was opened under (same account, role, tenant)."""
    try:
        now = await asyncio.to_thread(ctx.api.auth.authenticate, None, cookie)
    except AuthError:
        return False
    except Exception as e:  # the database away: keep the stream, look again next time
        log.warning("live: session re-check failed: %s", str(e)[:200])
        return True
    return (now.account_id, now.role, now.tenant_id, now.session_hash) == (
        was.account_id,
        was.role,
        was.tenant_id,
        was.session_hash,
    )


async def _stream(ctx: Ctx, web: WebService, sub: Subscriber, cookie: str, who: Principal) -> AsyncIterator[bytes]:
    s = web.settings
    mono = time.monotonic
    try:
        # retry: how long EventSource waits before it reconnects (milliseconds).
        yield b"retry: 2000\n" + _event("hello", {"topics": sorted(sub.topics), "poll_s": s.live_poll_s})
        start = mono()
        next_check = start + s.live_recheck_s
        while True:
            now = mono()
            timeout = min(s.live_heartbeat_s, start + s.live_max_s - now, next_check - now)
            if timeout > 0 and not sub.event.is_set():
                try:
                    await asyncio.wait_for(sub.event.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            if sub.ended is not None:
                yield _event("end", {"reason": sub.ended, "reconnect": True})
                return
            now = mono()
            if now >= start + s.live_max_s:
                yield _event("end", {"reason": "stream lifetime reached", "reconnect": True})
                return
            if now >= next_check:
                next_check = now + s.live_recheck_s
                if not await _still_valid(ctx, cookie, who):
                    yield _event("end", {"reason": "session ended", "reconnect": False})
                    return
            news = sub.take()
            yield _event("change", news) if news is not None else b": keep-alive\n\n"
    finally:
        web.hub.close_one(sub)


@endpoint(
    ENDPOINTS,
    "GET",
    "/api/v1/live",
    "self",
    "Live updates for the web page (Server-Sent Events; browser session only)",
    tag="web",
    response={"type": "string"},
    media="text/event-stream",
    refusals=(404, 429),
    description="A text/event-stream: 'hello' once; 'change' with {alarms, audit, transformers} when something "
    "the caller may see changed (reload it through the other routes); 'end' before the server closes the "
    "stream. Only for a session cookie: a bearer credential gets 403 session_only.",
)
async def live(ctx: Ctx) -> Response:
    web = _enabled(ctx)
    who = ctx.principal
    assert who is not None
    cookie = ctx.request.cookies.get(COOKIE)
    if who.kind != SESSION or not cookie or who.session_hash is None:
        raise ApiError(403, "session_only", "the live stream is for the web page's session; API clients poll")
    topics = [topic for topic, permission in _TOPICS if allowed(who.role, permission)]
    try:
        sub = web.hub.open(who.session_hash, who.tenant_id or SYSTEM_TENANT, topics)
    except LiveLimit as e:
        raise ApiError(429, "too_many_streams", str(e), {"Retry-After": "10"}) from None
    return StreamingResponse(
        _stream(ctx, web, sub, cookie, who),
        media_type="text/event-stream",
        # no-transform and X-Accel-Buffering: a proxy must pass each message on at once, not buffer them.
        headers={"Cache-Control": "no-store, no-transform", "X-Accel-Buffering": "no"},
    )
