"""The real server with its HTTP listener on a free loopback port, tenants and accounts: what a browser opens.

``WebServer(folder, tables)`` writes a server.toml from ``tables`` (adding
the HTTP listener on 127.0.0.1 and a free port, cookies without ``Secure``
as plain http on the loopback needs, and Argon2id at its lowest cost so
logins in tests stay fast), runs it exactly as ``phasekit server run`` does
(``phasekit.testing.server.ServerThread``: ``phaseserver.app.build``, then
``Server.run``, uvicorn included) and returns once ``/healthz`` answers.
``add_people(tenant, {name: role})`` makes the tenant and its accounts the
way ``phasekit server tenant add`` and ``user add`` do; ``close()`` stops
the server as SIGTERM would. ``url`` is its address.

The one thing to know: ``server.ingest`` is the server's real ingest core;
calling its ``handle`` from the caller's thread stores data exactly as a
broker's message would (the server here has no message source of its own).
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from phasekit.errors import PhasekitError
from phasekit.testing.postgres import free_port
from phasekit.testing.server import ServerThread

__all__ = ("WebServer", "PASSWORD")

PASSWORD = "correct horse battery"


def _cli() -> Any:
    from phaseserver.auth.manage import Actor

    return Actor("cli:test", None, None, None, "cli")


class WebServer:
    """A running server on ``url`` (127.0.0.1), built from ``tables`` plus an HTTP listener."""

    def __init__(self, folder: str | Path, tables: dict[str, dict[str, Any]], timeout_s: float = 30.0) -> None:
        from phaseserver import config

        folder = Path(folder)
        port = free_port()
        merged: dict[str, dict[str, Any]] = {
            "server": {"name": "web-test", "http_host": "127.0.0.1", "http_port": port},
            "ingest": {"source": "none"},
            "auth": {"cookie_secure": False, "argon2_time_cost": 1, "argon2_memory_kib": 8192,
                     "argon2_parallelism": 1},
            "audit": {"sign_every_s": 3600},
        }  # fmt: skip
        for name, keys in tables.items():
            merged.setdefault(name, {}).update(keys)
        self.config = config.write(folder / "server.toml", merged)
        self.url = "http://127.0.0.1:%d" % port
        self.thread = ServerThread(self.config, wait_source=False, timeout_s=timeout_s)
        self.server = self.thread.server
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise PhasekitError("the server's HTTP listener did not answer within %.0f s" % timeout_s)
            time.sleep(0.05)

    def manager(self) -> Any:
        from phaseserver.auth.manage import Manager

        return Manager(self.server.store.db, self.server.asgi_app.state.api.auth.hasher, time.time)

    def add_people(self, tenant: str, accounts: dict[str, str], password: str = PASSWORD) -> None:
        """Tenant ``tenant`` (made if new) and an account per ``name: role`` with ``password``."""
        m = self.manager()
        if self.server.store.db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant,)) is None:
            m.add_tenant(_cli(), tenant, "Utility %s" % tenant)
        for name, role in accounts.items():
            m.add_account(_cli(), name, tenant if role not in ("sysadmin", "monitor") else None, role, password)

    def assign(self, site: str, tenant: str) -> None:
        """Move ``site`` (first seen by ingest, so unassigned) to ``tenant``, as the system administrator does."""
        self.manager().assign_site(_cli(), self.server.store, site, tenant)

    def close(self) -> None:
        self.thread.close()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
