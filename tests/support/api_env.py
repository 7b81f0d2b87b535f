"""A real server for the API tests: built from a settings file, two tenants with data, an account per role.

``ApiEnv(folder, engine="sqlite"|"postgres", dsn=None)`` writes a server
TOML (no message source; SQLite in ``folder`` or the given PostgreSQL DSN;
cookies without Secure, as over http://testserver; Argon2id at its lowest
cost so a hundred logins stay fast; everything else as shipped), builds the
server with ``phaseserver.app.build`` (the real store, migrations and
``create_app``), and fills it through the real ingest core with two
tenants' transformers: ``t1`` owns ``s1/tx1`` and ``t2`` owns ``s2/tx2``,
each with a few hours of 1-minute readings from 6 nodes, summaries and a
move's ack. ``env.client()`` is Starlette's TestClient over the real app.
Accounts: ``ACCOUNTS`` (name -> (tenant, role)), password ``PASSWORD``.
CPython only.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its TestClient and warns about httpx; both work.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from phasekit.testing import batches
from phaseserver import config as server_config
from phaseserver.app import build
from phaseserver.auth.manage import Actor, Manager
from phaseuplink import records

PASSWORD = "correct horse battery"
HOURS = 3
# The data ends at the last whole hour: the ingest accepts records within its window around now.
T0 = int(time.time()) // 3600 * 3600 - HOURS * 3600
ACCOUNTS = {
    "v1": ("t1", "viewer"),
    "o1": ("t1", "operator"),
    "i1": ("t1", "installer"),
    "s1": ("t1", "secadmin"),
    "a1": ("t1", "auditor"),
    "v2": ("t2", "viewer"),
    "o2": ("t2", "operator"),
    "a2": ("t2", "auditor"),
    "root": (None, "sysadmin"),
}
CLI = Actor("cli:test", None, None, None, "cli")


def write_config(folder: Path, engine: str = "sqlite", dsn: str | None = None, **extra: dict[str, Any]) -> Any:
    tables: dict[str, dict[str, Any]] = {
        "server": {"name": "api-test", "http_port": 0},
        "storage": {"engine": engine, "path": "server.db"} if engine == "sqlite" else {"engine": engine, "dsn": dsn},
        "ingest": {"source": "none"},
        "auth": {
            "cookie_secure": False,
            "argon2_time_cost": 1,
            "argon2_memory_kib": 8192,
            "argon2_parallelism": 1,
            "login_account_failures": 5,
            "login_address_attempts": 1000,
        },
        "audit": {"sign_every_s": 3600},
    }
    for name, keys in extra.items():
        tables.setdefault(name, {}).update(keys)
    return server_config.write(folder / "server.toml", tables)


def ingest_site(server: Any, site: str, tx: str, t0: int = T0, hours: int = HOURS, nodes: int = 6) -> None:
    """A few hours of one transformer's uplink, through the real ingest core."""
    core = server.ingest
    items = batches.readings(nodes, t0, 60 * hours, seed=hash((site, tx)) & 0xFFFF)
    for payload in batches.batches(items, 1000):
        out = core.handle(batches.topic(site, tx, "reading"), payload, t0 + 60 * 60 * hours)
        assert out.new, out
    summaries = [
        records.summary(t0 + 900 * k, dict(batches.SAMPLE_SUMMARY, time_s=t0 + 900 * k)) for k in range(4 * hours)
    ]
    core.handle(batches.topic(site, tx, "summary"), batches.encode(summaries), t0 + 3600 * hours)
    move = {"id": 1, "op": 1, "deadline_s": t0 + 600, "phase": 2, "expect_phase": 0}
    ack = {"id": 1, "outcome": 0, "phase": 2}
    core.handle(
        batches.topic(site, tx, "ack"),
        batches.encode([records.ack(t0 + 400, move, ack, addr=3, seq=77)]),
        t0 + 3600 * hours,
    )
    core.handle(batches.topic(site, tx, "status"), b"online", t0 + 3600 * hours)


SITE_KEY = bytes(range(32))  # obviously synthetic (docs/security.md section 7)


def commands_table(folder: Path, broker: Any, operator_id: str = "server-1", **keys: Any) -> dict[str, Any]:
    """A [commands] table for a ``phasekit.testing.broker.LocalBroker``, with the operator's key file written."""
    from phaseuplink.operator import format_key_file, operator_key

    key_file = folder / ("%s.key" % operator_id)
    key_file.write_text(format_key_file(*operator_key(SITE_KEY, operator_id)))
    key_file.chmod(0o600)
    tls = broker.tls
    table = {
        "enabled": True,
        "operator_id": operator_id,
        "key_file": str(key_file),
        "host": broker.host,
        "port": broker.port,
        "ca": str(tls.ca),
        "cert": str(tls.client_cert),
        "key": str(tls.client_key),
        "client_id": "commands-%s" % operator_id,
    }
    table.update(keys)
    return table


class ApiEnv:
    """A built server with two tenants' data and accounts; ``client()`` for requests.

    ``broker``: a LocalBroker to enable operator commands through (``[commands]``).
    """

    def __init__(
        self, folder: Path, engine: str = "sqlite", dsn: str | None = None, broker: Any = None, **extra: dict[str, Any]
    ):
        self.folder = Path(folder)
        if broker is not None:
            extra = dict(extra, commands=commands_table(self.folder, broker, **extra.pop("commands", {})))
        self.config = write_config(self.folder, engine, dsn, **extra)
        self.server = build(self.config)
        self.app = self.server.asgi_app
        self.api = self.app.state.api
        self.db = self.server.store.db
        m = self.manager()
        for t in ("t1", "t2"):
            m.add_tenant(CLI, t, "Utility %s" % t)
        ingest_site(self.server, "s1", "tx1")
        ingest_site(self.server, "s2", "tx2")
        m.assign_site(CLI, self.server.store, "s1", "t1")
        m.assign_site(CLI, self.server.store, "s2", "t2")
        for name, (tenant, role) in ACCOUNTS.items():
            m.add_account(CLI, name, tenant, role, PASSWORD)
        self.keys = {
            "viewer1": m.add_key(CLI, "t1", "viewer", "k-viewer1")[0],
            "operator1": m.add_key(CLI, "t1", "operator", "k-operator1")[0],
            "auditor1": m.add_key(CLI, "t1", "auditor", "k-auditor1")[0],
            "viewer2": m.add_key(CLI, "t2", "viewer", "k-viewer2")[0],
            "monitor": m.add_key(CLI, None, "monitor", "prometheus")[0],
        }
        self._tokens: dict[str, dict[str, Any]] = {}

    def manager(self) -> Manager:
        return Manager(self.db, self.api.auth.hasher, time.time)

    def client(self, **kw: Any) -> TestClient:
        return TestClient(self.app, **kw)

    def tokens(self, client: TestClient, name: str) -> dict[str, Any]:
        """Access and refresh tokens of an account, from the real token route (cached per account)."""
        if name not in self._tokens:
            r = client.post("/api/v1/auth/token", json={"name": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            self._tokens[name] = r.json()
        return self._tokens[name]

    def bearer(self, client: TestClient, name: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.tokens(client, name)["access_token"]}

    def key(self, name: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.keys[name]}

    def close(self) -> None:
        self.server.close()
