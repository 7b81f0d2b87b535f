"""The operator web page: static assets shipped in the package, and the live-update hub behind them.

- ``index.html``, ``app.js``, ``app.css`` (and ``icon.svg``): the page. Plain
  HTML, one JavaScript module and one style sheet, no build step, nothing
  from elsewhere; ``phaseserver.api.routes_web`` serves them.
- ``Assets``: the files read once, with their gzip form and a content hash;
  ``index.html`` names the script and style sheet with their hash
  (``app.js?v=HASH``), so those can be cached for good and a new version is
  fetched the moment the page changes.
- ``live``: the hub the page's Server-Sent Events stream subscribes to;
  ``settings``: the ``[web]`` table.
- ``attach(server)``: what ``phaseserver.app.build`` calls (``EXTENSIONS``):
  the hub on its own database connection, woken by the ingest core's commits;
  ``server.web`` is the ``WebService`` the routes use.

The one thing to know: the page gets everything through the same API routes
as any client (session cookie, CSRF token on changes), so it holds no
privilege of its own; the server sends it no data inside the HTML.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from importlib import resources
from typing import Any, NamedTuple

from phaseserver.web.live import LiveHub
from phaseserver.web.settings import WebSettings

__all__ = ("Asset", "Assets", "WebService", "attach", "FILES", "page_weight")

# name -> media type: every file the page is made of (the routes serve only these).
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# Files index.html names with their content hash (cached for good by the browser).
VERSIONED = ("app.js", "app.css", "icon.svg")


class Asset(NamedTuple):
    name: str
    media: str
    body: bytes
    gzipped: bytes
    etag: str  # a strong validator: the content's hash, quoted
    version: str  # the first 16 hex digits of the hash (the ?v= of index.html)


def _asset(name: str, body: bytes) -> Asset:
    digest = hashlib.sha256(body).hexdigest()
    # mtime=0: the same bytes every start, so the gzip form is reproducible.
    return Asset(name, FILES[name], body, gzip.compress(body, 9, mtime=0), '"%s"' % digest[:32], digest[:16])


class Assets:
    """The page's files, read from the installed package once."""

    def __init__(self) -> None:
        folder = resources.files(__name__)
        raw = {name: folder.joinpath(name).read_bytes() for name in FILES}
        files = {name: _asset(name, raw[name]) for name in VERSIONED}
        html = raw["index.html"]
        for name in VERSIONED:
            html = html.replace(
                b'"/static/%s"' % name.encode(), b'"/static/%s?v=%s"' % (name.encode(), files[name].version.encode())
            )
        files["index.html"] = _asset("index.html", html)
        self.files = files

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)


def page_weight(assets: Assets | None = None) -> dict[str, tuple[int, int]]:
    """Bytes of each file of the page as sent: name -> (plain, gzipped)."""
    a = assets or Assets()
    return {name: (len(f.body), len(f.gzipped)) for name, f in a.files.items()}


class WebService:
    """What the web routes use: the settings, the assets and the live hub of one server process."""

    def __init__(self, settings: WebSettings, hub: LiveHub, assets: Assets | None = None, own_db: Any = None) -> None:
        self.settings = settings
        self.hub = hub
        self.assets = assets or Assets()
        self._own_db = own_db

    async def run(self, stop: asyncio.Event) -> None:
        await self.hub.run(stop)

    def render(self) -> str:
        """Prometheus text (0.0.4) of the live channel, for ``/metrics`` to append."""
        hub = self.hub
        return (
            "# HELP phaseserver_web_live_streams Live-update streams open in this process.\n"
            "# TYPE phaseserver_web_live_streams gauge\n"
            "phaseserver_web_live_streams %d\n"
            "# HELP phaseserver_web_live_polls_total Looks for changes made for the live streams.\n"
            "# TYPE phaseserver_web_live_polls_total counter\n"
            "phaseserver_web_live_polls_total %d\n"
            "# HELP phaseserver_web_live_poll_errors_total Looks for changes that failed (the database away).\n"
            "# TYPE phaseserver_web_live_poll_errors_total counter\n"
            "phaseserver_web_live_poll_errors_total %d\n" % (len(hub.subscribers), hub.polls, hub.errors)
        )

    def close(self) -> None:
        self.hub.close()
        if self._own_db is not None:
            self._own_db.close()


def attach(server: Any) -> WebService:
    """The page's service for a built server: the hub on a database connection of its own, heard by ingest."""
    settings = WebSettings.from_table(server.config.table("web"))
    db = server.store.db.clone()
    service = WebService(settings, LiveHub(db, settings), own_db=db)
    ingest = getattr(server, "ingest", None)
    if ingest is not None:
        ingest.listeners.append(service.hub.on_committed)
    server.web = service
    return service
