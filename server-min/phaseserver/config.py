"""The server's settings file: one TOML file checked once at start against this schema.

``load(path)`` reads ``server.toml`` (phaseconf: unknown tables and keys are
errors, numbers are finite and bounded, every error names file, line, table
and key) and cross-checks what one table cannot see alone (PostgreSQL needs a
``dsn``; TLS needs a CA; a shared subscription needs MQTT 5). Every table is
optional; a missing one takes its defaults, so an empty file runs the
embedded default: SQLite next to the file, MQTT ingest from localhost:8883.

Tables and their owners (docs/server.md has every key):

- ``[server]``, ``[storage]``, ``[ingest]``, ``[clock]``: this module (server core).
- ``[auth]``, ``[audit]``, ``[commands]``: the API area fills ``AUTH``, ``AUDIT``,
  ``COMMANDS`` below; ``[web]``: the web page's area (``phaseserver.web.settings``).
- ``[alarms]``, ``[notify]``: the alarms area fills ``ALARMS``, ``NOTIFY`` below.

The one thing to know: relative paths in the file are relative to the file's
folder (``ServerConfig.resolve``), so a config and its certificates move together.

    cfg = load("/etc/phasekit/server.toml")
    cfg.table("storage")["engine"]       # "sqlite"
    cfg.resolve(cfg.table("storage")["path"])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import phaseconf
from phaseconf import REQUIRED, integer, one_of, port
from phasecore.errors import quote
from phaseserver.alarms import settings as _alarms_settings
from phaseserver.clock import SPEED_MAX, Clock
from phaseserver.errors import ConfigError
from phaseserver.notify import settings as _notify_settings
from phaseserver.web import settings as _web_settings
from phaseuplink import records

__all__ = ("SCHEMA", "ServerConfig", "load", "dump", "write", "defaults", "REQUIRED")

_LEVELS = one_of("debug", "info", "warning", "error")


def _ident_or_empty(v: object) -> str | None:
    if v == "":
        return None
    return phaseconf.ident(v)


def _bytes(lo: int, hi: int) -> Any:
    return integer(lo, hi, " bytes")


def _clock_time(v: object) -> str | None:
    # 0 means "the moment the server starts"; otherwise a Unix time in seconds.
    return phaseconf.number(0, 2**32, " (Unix seconds; 0 = start time)")(v)


SERVER = {
    # This instance's name: in logs, metrics and the default MQTT client id.
    "name": (str, "phaseserver", phaseconf.ident),
    "log_level": (str, "info", _LEVELS),
    # "json": one JSON object per line (journald, Loki); "text": human-readable lines.
    "log_format": (str, "text", one_of("text", "json")),
    # The HTTP listener (API, web page, /metrics, /healthz); port 0 serves no HTTP (an ingest-only worker).
    "http_host": (str, "127.0.0.1", None),
    "http_port": (int, 8080, integer(0, 65535)),
}

STORAGE = {
    "engine": (str, "sqlite", one_of("sqlite", "postgres")),
    # SQLite: the database file (relative to this file's folder).
    "path": (str, "phaseserver.db", None),
    # PostgreSQL: a libpq connection string, e.g. "host=/run/postgresql dbname=phasekit user=phaseserver".
    "dsn": (str, "", None),
    # PostgreSQL: a file holding the password (kept out of this file; mode 600).
    "password_file": (str, "", None),
    # Retention per level, in days of record time: raw records, hourly and daily roll-ups (0 = keep for ever).
    "retention_raw_days": (int, 90, integer(1, 36500)),
    "retention_hourly_days": (int, 730, integer(0, 36500)),
    "retention_daily_days": (int, 0, integer(0, 36500)),
    # PostgreSQL: daily partitions created this many days ahead of the clock.
    "partitions_ahead_days": (int, 2, integer(1, 60)),
    # Roll-ups rebuilt for the hours new records touched, this often; retention applied this often.
    "rollup_interval_s": ((int, float), 60, phaseconf.number(1, 86400, " s")),
    "retention_interval_s": ((int, float), 3600, phaseconf.number(60, 86400 * 7, " s")),
    # Dead letters kept at most (the oldest go first).
    "dead_letter_max_rows": (int, 100000, integer(100, 10**8)),
}

INGEST = {
    # Where batches come from: "mqtt" (Mosquitto or any MQTT 5 broker), "amqp" (a RabbitMQ
    # cluster's quorum queue), "none" (API only).
    "source": (str, "mqtt", one_of("mqtt", "amqp", "none")),
    "host": (str, "localhost", None),
    "port": (int, 8883, port),
    "tls": (bool, True, None),
    "ca": (str, "", None),
    "cert": (str, "", None),
    "key": (str, "", None),
    "username": (str, "", None),
    "password_file": (str, "", None),
    # MQTT: this worker's fixed client id (its persistent session); unique per worker.
    "client_id": (str, "phaseserver", phaseconf.ident),
    # MQTT 5 shared subscription group: workers with the same group share the uplink
    # ($share/<group>/phasekit/+/+/#); "" subscribes alone.
    "shared_group": (str, "", _ident_or_empty),
    # MQTT: how long the broker keeps this worker's session (and queues for it) while it is away.
    "session_expiry_s": (int, 7 * 86400, integer(60, 2**32 - 1)),
    "keepalive_s": (int, 60, integer(5, 65535)),
    "reconnect_min_s": ((int, float), 1, phaseconf.number(0.01, 3600, " s")),
    "reconnect_max_s": ((int, float), 30, phaseconf.number(0.01, 3600, " s")),
    # Messages delivered and not yet acknowledged, at most (MQTT 5 receive maximum; AMQP prefetch).
    "in_flight": (int, 200, integer(1, 65535)),
    # AMQP (RabbitMQ): virtual host, the quorum queue this group of workers consumes, its exchange.
    "amqp_vhost": (str, "/", None),
    "amqp_queue": (str, "phasekit.uplink", phaseconf.ident),
    "amqp_exchange": (str, "amq.topic", None),
    # Caps per message (issue 13): payload bytes of a batch topic and of the status topic, bytes a
    # batch may inflate to, records a batch may hold. Larger input is dead-lettered unread.
    "max_payload_bytes": (int, 256 * 1024, _bytes(64, 16 << 20)),
    "max_status_bytes": (int, 64, _bytes(8, 1024)),
    "max_plain_bytes": (int, 1 << 20, _bytes(1024, records.MAX_BATCH_PLAIN)),
    # A compressed batch may inflate to this many times its own size (above 2 KiB): its work stays
    # proportional to its bytes. The Pi's batches inflate 2-4 times (docs/uplink.md section 7).
    "max_inflate_ratio": (int, 16, integer(2, 1024)),
    "max_records": (int, 2000, integer(1, 100000)),
    # Messages waiting between the source and the database, bytes at most (back-pressure beyond).
    "max_queue_bytes": (int, 16 << 20, _bytes(1 << 16, 1 << 30)),
    # One transaction holds up to this many messages (or records), then they are acknowledged.
    "commit_max_messages": (int, 200, integer(1, 10000)),
    "commit_max_records": (int, 20000, integer(1, 10**6)),
    # Records stamped further ahead of the server clock than this are refused (a Pi's clock gone wrong).
    "max_future_s": (int, 86400, integer(0, 10**7)),
    # Bytes of a dead-lettered payload kept for the operator.
    "dead_letter_bytes": (int, 256, _bytes(0, 65536)),
}

CLOCK = {
    # Site time runs `speed` times faster than the wall clock from `start_s` on, starting at
    # `epoch_s` (phaseserver.clock). Only the accelerated site demo changes these.
    "speed": ((int, float), 1, phaseconf.number(1, SPEED_MAX)),
    "epoch_s": ((int, float), 0, _clock_time),
    "start_s": ((int, float), 0, _clock_time),
}

# ---- tables of the other areas (each fills its own dict; keys documented in docs/server.md)


def _addresses(v: object) -> str | None:
    import ipaddress

    if not isinstance(v, list) or len(v) > 64:
        return "expected a list of at most 64 IP addresses"
    for x in v:
        try:
            ipaddress.ip_address(x)
        except (TypeError, ValueError):
            return "%s is not an IP address" % (quote(str(x)[:40]),)
    return None


_LOOPBACK = ("127.0.0.1", "::1", "localhost")

# [auth]: server-api (passwords, sessions, tokens, API keys, login rate limits; phaseserver.auth).
AUTH: dict[str, tuple[Any, Any, Any]] = {
    # The Ed25519 key that signs access tokens (EdDSA JWTs); made (mode 600) at first start.
    "token_key_file": (str, "token.key", None),
    # The JWTs' iss and aud (RFC 8725: every token names who made it and for whom).
    "issuer": (str, "phaseserver", None),
    "audience": (str, "phasekit-api", None),
    "access_ttl_s": (int, 300, integer(30, 3600)),
    "refresh_ttl_s": (int, 7 * 86400, integer(300, 90 * 86400)),
    # Browser sessions: absolute lifetime, and the idle time after which one ends.
    "session_ttl_s": (int, 8 * 3600, integer(300, 30 * 86400)),
    "session_idle_s": (int, 1800, integer(60, 86400)),
    # The cookie's Secure flag: leave it on behind HTTPS; off only for plain http on localhost.
    "cookie_secure": (bool, True, None),
    # Argon2id cost (RFC 9106 section 4, second recommended option by default) and how many run at once.
    "argon2_time_cost": (int, 3, integer(1, 20)),
    "argon2_memory_kib": (int, 65536, integer(8192, 1 << 21)),
    "argon2_parallelism": (int, 4, integer(1, 16)),
    "argon2_concurrency": (int, 2, integer(1, 64)),
    # Login rate limits: failed passwords per account, attempts per source address, within the window.
    "login_account_failures": (int, 5, integer(1, 1000)),
    "login_address_attempts": (int, 20, integer(1, 100000)),
    "login_window_s": (int, 300, integer(10, 86400)),
    # Reverse proxies whose X-Forwarded-For is believed (the audit log records the client's address).
    "trusted_proxies": (list, [], _addresses),
}

# [audit]: server-api (the hash-chained log, head export; phaseserver.audit).
AUDIT: dict[str, tuple[Any, Any, Any]] = {
    # The Ed25519 key that signs the chain head; made (mode 600) at first start. Keep a copy of its
    # public half (phasekit server audit verify --public-key) where the server cannot change it.
    "key_file": (str, "audit.key", None),
    # Signed heads are appended here (JSON lines) as well as to the database; ship it elsewhere.
    "head_file": (str, "audit-heads.jsonl", None),
    "sign_every_s": ((int, float), 60, phaseconf.number(1, 86400, " s")),
}

# [commands]: server-api (operator commands through the API; phaseserver.commands).
COMMANDS: dict[str, tuple[Any, Any, Any]] = {
    "enabled": (bool, False, None),
    # The server's operator id and key file ('phasekit operator key --operator ID'); the Pis list the id
    # in [uplink] operators. Give every server process its own id.
    "operator_id": (str, "server-1", phaseconf.ident),
    "key_file": (str, "", None),
    # The persisted sequence counter (default: the key file's name + ".seq").
    "counter_file": (str, "", None),
    "ttl_s": (int, 300, integer(10, 86400)),
    "grace_s": (int, 120, integer(0, 86400)),
    "poll_s": ((int, float), 1.0, phaseconf.number(0.05, 3600, " s")),
    # The broker commands are published to; "" host: the [ingest] broker and its TLS files.
    "host": (str, "", None),
    "port": (int, 0, integer(0, 65535)),
    # MQTT client id, and so the certificate name under phasekit pki (one connection per name).
    "client_id": (str, "phaseserver-commands", phaseconf.ident),
    # TLS files of this connection ("": the [ingest] ones); TLS is on or off as [ingest] tls says.
    "ca": (str, "", None),
    "cert": (str, "", None),
    "key": (str, "", None),
}

# [web]: server-web (the page and its live-update stream; phaseserver.web.settings).
WEB: dict[str, tuple[Any, Any, Any]] = _web_settings.SCHEMA

# [alarms]: server-alarms (rules, thresholds, hysteresis).
ALARMS: dict[str, tuple[Any, Any, Any]] = _alarms_settings.SCHEMA

# [notify]: server-alarms (e-mail, webhooks, escalation).
NOTIFY: dict[str, tuple[Any, Any, Any]] = _notify_settings.SCHEMA

# table -> key -> (type, default or REQUIRED, check or None): the phaseconf schema format.
SCHEMA: dict[str, dict[str, tuple[Any, Any, Any]]] = {
    "server": SERVER,
    "storage": STORAGE,
    "ingest": INGEST,
    "clock": CLOCK,
    "auth": AUTH,
    "audit": AUDIT,
    "commands": COMMANDS,
    "web": WEB,
    "alarms": ALARMS,
    "notify": NOTIFY,
}


def defaults(name: str) -> dict[str, Any]:
    """The defaults of table ``name`` (every key; a table with a required key has none)."""
    return phaseconf.defaults(SCHEMA, name, ConfigError)


class ServerConfig:
    """A checked settings file: ``table(name)`` (defaults filled in, also for absent tables), ``resolve(path)``."""

    def __init__(self, settings: phaseconf.Settings) -> None:
        self.settings = settings
        self.path = settings.path

    def has(self, name: str) -> bool:
        return self.settings.has(name)

    def table(self, name: str) -> dict[str, Any]:
        if self.settings.has(name):
            return self.settings.table(name)
        if name not in SCHEMA:
            raise ConfigError("no table [%s] in the server's schema" % name)
        return defaults(name)

    def resolve(self, relpath: str) -> Path:
        """A path from the file: relative to the file's folder unless absolute."""
        return self.settings.resolve(relpath)

    def line(self, table: str, key: str | None = None) -> int:
        return self.settings.line(table, key)

    def where(self, table: str, key: str | None = None) -> str:
        """``file:line: [table] key`` for messages of cross-checks."""
        line = self.line(table, key) or self.line(table)
        where = "%s:%d" % (self.path, line) if line else str(self.path)
        return "%s: [%s]%s" % (where, table, " " + key if key else "")

    def clock(self) -> Clock:
        c = self.table("clock")
        return Clock(
            speed=float(c["speed"]),
            epoch_s=float(c["epoch_s"]) or None,
            start_s=float(c["start_s"]) or None,
        )

    def secret(self, table: str, key: str) -> str:
        """The first line of the file named by ``[table] key`` ("" when the key is empty)."""
        return self._read_secret(self.table(table)[key], self.where(table, key))

    def tenant_secret(self, tenant: str) -> str:
        """The first line of ``[notify.tenants."TENANT"] webhook_secret_file`` ("" when not set)."""
        name = self.table("notify")["tenants"].get(tenant, {}).get("webhook_secret_file", "")
        return self._read_secret(name, self.where_tenant(tenant, "webhook_secret_file"))

    def _read_secret(self, name: str, where: str) -> str:
        if not name:
            return ""
        path = self.resolve(name)
        try:
            return path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
        except (OSError, UnicodeDecodeError, IndexError) as e:
            raise ConfigError("%s: cannot read %s: %s" % (where, path, e)) from e

    def where_tenant(self, tenant: str, key: str | None = None) -> str:
        """``file:line: [notify.tenants."TENANT"] key``: the line of the key in the tenant's table, whichever
        TOML form wrote it (its own table, quoted or bare; an inline table), else of the nearest header."""
        heads = ['notify.tenants."%s"' % tenant, "notify.tenants.%s" % tenant, "notify.tenants.'%s'" % tenant]
        candidates: list[tuple[str, str | None]] = []
        if key is not None:
            candidates += [(h, key) for h in heads]
        candidates += [(h, None) for h in heads]
        candidates += [("notify.tenants", '"%s"' % tenant), ("notify.tenants", tenant), ("notify", "tenants")]
        candidates += [("notify.tenants", None), ("notify", None)]
        line = next((n for n in (self.line(t, k) for t, k in candidates) if n), 0)
        where = "%s:%d" % (self.path, line) if line else str(self.path)
        label = tenant if phaseconf.IDENT.match(tenant) else "?"  # a bad id is quoted by the problem itself
        return '%s: [notify.tenants."%s"]%s' % (where, label, " " + key if key else "")


def load(path: str | Path) -> ServerConfig:
    """Read and check ``path``; raises ``ConfigError`` naming file, line, table and key."""
    cfg = ServerConfig(phaseconf.load(path, SCHEMA, (), ConfigError))
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: ServerConfig) -> None:
    st = cfg.table("storage")
    if st["engine"] == "postgres" and not st["dsn"]:
        raise ConfigError("%s: engine = \"postgres\" needs 'dsn' (a libpq connection string)" % cfg.where("storage"))
    if st["engine"] == "sqlite" and not st["path"]:
        raise ConfigError("%s: engine = \"sqlite\" needs 'path'" % cfg.where("storage"))
    if st["retention_hourly_days"] and st["retention_hourly_days"] < st["retention_raw_days"]:
        raise ConfigError(
            "%s: hourly roll-ups are built from raw records: keep them at least as long (>= %d days)"
            % (cfg.where("storage", "retention_hourly_days"), st["retention_raw_days"])
        )
    if st["retention_daily_days"] and st["retention_daily_days"] < st["retention_hourly_days"]:
        raise ConfigError(
            "%s: daily roll-ups are built from hourly ones: keep them at least as long (>= %d days)"
            % (cfg.where("storage", "retention_daily_days"), st["retention_hourly_days"])
        )
    ing = cfg.table("ingest")
    if ing["reconnect_min_s"] > ing["reconnect_max_s"]:
        raise ConfigError("%s: above reconnect_max_s" % cfg.where("ingest", "reconnect_min_s"))
    if ing["source"] != "none" and ing["tls"]:
        if not ing["ca"]:
            raise ConfigError("%s: tls = true needs 'ca' (the broker's CA certificate)" % cfg.where("ingest"))
        if bool(ing["cert"]) != bool(ing["key"]):
            raise ConfigError("%s: a client certificate needs both 'cert' and 'key'" % cfg.where("ingest"))
    if ing["source"] == "amqp" and ing["shared_group"]:
        raise ConfigError(
            "%s: shared_group is MQTT's; AMQP workers share the queue 'amqp_queue' instead"
            % cfg.where("ingest", "shared_group")
        )
    if ing["commit_max_records"] < ing["max_records"]:
        raise ConfigError(
            "%s: must hold at least one whole batch (max_records = %d)"
            % (cfg.where("ingest", "commit_max_records"), ing["max_records"])
        )
    if ing["max_queue_bytes"] < ing["max_payload_bytes"]:
        raise ConfigError("%s: must hold at least one message of max_payload_bytes" % cfg.where("ingest"))
    if not cfg.table("auth")["cookie_secure"] and cfg.table("server")["http_host"] not in _LOOPBACK:
        raise ConfigError(
            "%s: cookie_secure = false sends session cookies over plain http; allowed only with [server] "
            "http_host on the loopback (%s)" % (cfg.where("auth", "cookie_secure"), ", ".join(_LOOPBACK))
        )
    cmd = cfg.table("commands")
    if cmd["enabled"]:
        if not cmd["key_file"]:
            raise ConfigError("%s: enabled = true needs 'key_file' (phasekit operator key)" % cfg.where("commands"))
        if not cmd["host"] and ing["source"] == "none":
            raise ConfigError("%s: enabled = true needs 'host' when [ingest] has no broker" % cfg.where("commands"))
        if ing["tls"] and not (cmd["ca"] or ing["ca"]):
            raise ConfigError("%s: TLS needs 'ca' (here or in [ingest])" % cfg.where("commands"))
        if bool(cmd["cert"]) != bool(cmd["key"]):
            raise ConfigError("%s: a client certificate needs both 'cert' and 'key'" % cfg.where("commands"))
    for key, problem in _notify_settings.problems(cfg.table("notify")):
        raise ConfigError("%s: %s" % (cfg.where("notify", key), problem))
    for tenant, tkey, problem in _notify_settings.tenant_problems(cfg.table("notify")):
        sep = " " if problem.startswith("=") else ": "
        raise ConfigError("%s%s%s" % (cfg.where_tenant(tenant, tkey), sep, problem))


# ---------------------------------------------------------------- writing (tests, examples)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError("%s cannot be written to TOML" % quote(v))
        return repr(v)
    if isinstance(v, str):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_toml_value(x) for x in v)
    raise ConfigError("cannot write %s to TOML" % type(v).__name__)


def dump(tables: dict[str, dict[str, Any]]) -> str:
    """TOML text of ``{table: {key: value}}`` (plain values and lists; what the schema takes)."""
    out = []
    for name, keys in tables.items():
        out.append("[%s]" % name)
        out.extend("%s = %s" % (k, _toml_value(v)) for k, v in keys.items())
        out.append("")
    return "\n".join(out)


def write(path: str | Path, tables: dict[str, dict[str, Any]]) -> ServerConfig:
    """Write ``tables`` to ``path`` and load it back (so what was written is checked)."""
    Path(path).write_text(dump(tables))
    return load(path)
