"""The alarm tables (migrations 0200): episodes, their history, the rules' saved memory; one SQL for both engines.

``AlarmStore(db)`` over ``phaseserver.store.db.Database`` (``?`` placeholders,
SQLite or PostgreSQL). The engine calls the writers inside its transactions;
the API calls the readers, always with the tenant, which is filtered in SQL
through the site's current tenant (``site.tenant_id``), so a site moved to
another tenant takes its alarms along. The one thing to know: "active" is
``cleared_s IS NULL``, and the partial UNIQUE index on (object, type) over
active rows is what keeps one active alarm per object and type, also against
a second process.
"""

import json
from typing import Any, Iterable

from phasecore.errors import quote
from phaseserver.alarms.rules import Condition, Obj

__all__ = ("AlarmStore", "COLUMNS", "SYSTEM_TENANT", "UNASSIGNED_TENANT")

SYSTEM_TENANT = "system"  # the server's own alarms (notify backlog): the system administrator's
UNASSIGNED_TENANT = "unassigned"  # a site ingest saw before anyone assigned it (server-core's 0001)
COLUMNS = (
    "id",
    "tenant_id",
    "object",
    "object_kind",
    "site",
    "transformer",
    "node",
    "type",
    "severity",
    "max_severity",
    "value",
    "detail",
    "since_s",
    "raised_s",
    "updated_s",
    "updates",
    "acked_s",
    "acked_by",
    "ack_comment",
    "escalated_s",
    "cleared_s",
    "cleared_by",
    "clear_comment",
)
_SELECT = "SELECT " + ", ".join("a." + c for c in COLUMNS) + " FROM alarm a"
_LIST_MAX = 1000


def _row(t: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if t is None:
        return None
    d = dict(zip(COLUMNS, t))
    d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
    d["state"] = _state(d)
    return d


def _state(d: dict[str, Any]) -> str:
    if d["cleared_s"] is None:
        return "active_acked" if d["acked_s"] is not None else "active"
    return "cleared_acked" if d["acked_s"] is not None else "cleared"


def _detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), default=str)


class AlarmStore:
    """Reads and writes of the alarm tables on one ``Database``."""

    def __init__(self, db: Any) -> None:
        self.db = db

    # ------------------------------------------------------------ tenancy

    def tenant_of(self, site: str) -> str:
        """The tenant of ``site`` now ('unassigned' if ingest has not registered it yet); the server's is 'system'."""
        if not site:
            return SYSTEM_TENANT
        row = self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))
        return row[0] if row else UNASSIGNED_TENANT

    def _scope(self, tenant: str | None) -> tuple[str, list[Any]]:
        # None: every tenant (the system administrator). The server's own alarms have no site.
        if tenant is None:
            return "", []
        if tenant == SYSTEM_TENANT:
            return " AND a.site IS NULL", []
        return " AND a.site IN (SELECT id FROM site WHERE tenant_id = ?)", [tenant]

    # ------------------------------------------------------------ the engine's writes

    def find_active(self, obj_key: str, typ: str) -> dict[str, Any] | None:
        return _row(
            self.db.fetchone(_SELECT + " WHERE a.object = ? AND a.type = ? AND a.cleared_s IS NULL", (obj_key, typ))
        )

    def insert(self, c: Condition, tenant: str, now: float) -> dict[str, Any] | None:
        """Raise a new episode; None when another active one of (object, type) exists (it won the race)."""
        o = c.obj
        row = self.db.fetchone(
            "INSERT INTO alarm (tenant_id, object, object_kind, site, transformer, node, type, severity,"
            " max_severity, value, detail, since_s, raised_s, updated_s, updates)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (object, type) WHERE cleared_s IS NULL DO NOTHING RETURNING id",
            (
                tenant,
                o.key,
                o.kind,
                o.site or None,
                o.transformer,
                o.node,
                c.type,
                c.severity,
                c.severity,
                c.value,
                _detail(c.detail),
                c.since_s,
                now,
                now,
            ),
        )
        if row is None:
            return None
        self.event(row[0], tenant, now, "raised", "system", None, c.severity)
        return self.get(row[0])

    def update(self, alarm: dict[str, Any], c: Condition, now: float) -> dict[str, Any]:
        """Update an active episode in place (severity, value, detail); logs a severity change."""
        self.db.execute(
            "UPDATE alarm SET severity = ?, max_severity = ?, value = ?, detail = ?, updated_s = ?,"
            " updates = updates + 1 WHERE id = ?",
            (
                c.severity,
                max(c.severity, alarm["max_severity"]),
                c.value,
                _detail(c.detail),
                now,
                alarm["id"],
            ),
        )
        if c.severity != alarm["severity"]:
            self.event(alarm["id"], alarm["tenant_id"], now, "updated", "system", None, c.severity)
        out = self.get(alarm["id"])
        assert out is not None
        return out

    def acknowledge(self, alarm_id: int, actor: str, comment: str, now: float) -> None:
        self.db.execute(
            "UPDATE alarm SET acked_s = ?, acked_by = ?, ack_comment = ? WHERE id = ? AND acked_s IS NULL",
            (now, actor, comment, alarm_id),
        )

    def clear(self, alarm_id: int, actor: str, comment: str | None, now: float) -> None:
        self.db.execute(
            "UPDATE alarm SET cleared_s = ?, cleared_by = ?, clear_comment = ? WHERE id = ? AND cleared_s IS NULL",
            (now, actor, comment, alarm_id),
        )

    def escalated(self, alarm_id: int, now: float) -> None:
        self.db.execute("UPDATE alarm SET escalated_s = ? WHERE id = ?", (now, alarm_id))

    def event(
        self, alarm_id: int, tenant: str, t_s: float, what: str, actor: str, comment: str | None, severity: int | None
    ) -> None:
        self.db.execute(
            "INSERT INTO alarm_event (alarm_id, tenant_id, t_s, what, actor, comment, severity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (alarm_id, tenant, t_s, what, actor, comment, severity),
        )

    def escalation_due(self, before_s: float, min_severity: int) -> list[dict[str, Any]]:
        """Active, unacknowledged, not yet escalated alarms raised at or before ``before_s``."""
        rows = self.db.fetchall(
            _SELECT + " WHERE a.cleared_s IS NULL AND a.acked_s IS NULL AND a.escalated_s IS NULL"
            " AND a.raised_s <= ? AND a.max_severity >= ? ORDER BY a.id LIMIT ?",
            (before_s, min_severity, _LIST_MAX),
        )
        return [r for r in map(_row, rows) if r is not None]

    # ------------------------------------------------------------ reads (tenant-scoped)

    def get(self, alarm_id: int, tenant: str | None = None) -> dict[str, Any] | None:
        where, params = self._scope(tenant)
        return _row(self.db.fetchone(_SELECT + " WHERE a.id = ?" + where, [alarm_id] + params))

    def active(self, tenant: str | None = None) -> list[dict[str, Any]]:
        where, params = self._scope(tenant)
        rows = self.db.fetchall(_SELECT + " WHERE a.cleared_s IS NULL" + where + " ORDER BY a.id", params)
        return [r for r in map(_row, rows) if r is not None]

    def query(
        self,
        tenant: str | None,
        state: str = "active",
        site: str | None = None,
        transformer: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Alarms newest first: ``state`` 'active' (not cleared), 'unacked' (active, not acknowledged),
        'cleared' or 'all'; optionally one site or transformer, raised in [since_s, until_s)."""
        where, params = self._scope(tenant)
        clauses = {
            "active": " AND a.cleared_s IS NULL",
            "unacked": " AND a.cleared_s IS NULL AND a.acked_s IS NULL",
            "cleared": " AND a.cleared_s IS NOT NULL",
            "all": "",
        }
        if state not in clauses:
            raise ValueError("state %s: expected one of %s" % (quote(state[:20]), ", ".join(clauses)))
        sql = _SELECT + " WHERE 1 = 1" + clauses[state] + where
        if site is not None:
            sql += " AND a.site = ?"
            params.append(site)
        if transformer is not None:
            sql += " AND a.transformer = ?"
            params.append(transformer)
        if since_s is not None:
            sql += " AND a.raised_s >= ?"
            params.append(since_s)
        if until_s is not None:
            sql += " AND a.raised_s < ?"
            params.append(until_s)
        sql += " ORDER BY a.raised_s DESC, a.id DESC LIMIT ?"
        params.append(max(1, min(int(limit), _LIST_MAX)))
        return [r for r in map(_row, self.db.fetchall(sql, params)) if r is not None]

    def history(self, alarm_id: int) -> list[dict[str, Any]]:
        rows = self.db.fetchall(
            "SELECT t_s, what, actor, comment, severity FROM alarm_event WHERE alarm_id = ? ORDER BY id",
            (alarm_id,),
        )
        return [dict(zip(("t_s", "what", "actor", "comment", "severity"), r)) for r in rows]

    # ------------------------------------------------------------ the rules' memory

    def save_memory(self, nodes: Iterable[dict[str, Any]], streams: Iterable[dict[str, Any]]) -> None:
        self.db.executemany(
            "INSERT INTO alarm_node (site, transformer, addr, generation, last_s, period_s, lora)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, transformer, addr) DO UPDATE SET"
            " generation = excluded.generation, last_s = excluded.last_s, period_s = excluded.period_s,"
            " lora = excluded.lora",
            [
                (n["site"], n["transformer"], n["addr"], n["generation"], n["last_s"], n["period_s"], n["lora"])
                for n in nodes
            ],
        )
        self.db.executemany(
            "INSERT INTO alarm_stream (site, transformer, data_s, allow_s) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (site, transformer) DO UPDATE SET data_s = excluded.data_s, allow_s = excluded.allow_s",
            [(s["site"], s["transformer"], s["data_s"], s["allow_s"]) for s in streams],
        )

    def load_memory(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nodes = self.db.fetchall("SELECT site, transformer, addr, generation, last_s, period_s, lora FROM alarm_node")
        streams = self.db.fetchall("SELECT site, transformer, data_s, allow_s FROM alarm_stream")
        return (
            [dict(zip(("site", "transformer", "addr", "generation", "last_s", "period_s", "lora"), r)) for r in nodes],
            [dict(zip(("site", "transformer", "data_s", "allow_s"), r)) for r in streams],
        )

    def ratings(self) -> dict[str, float]:
        """Per-transformer phase ratings an installer set (server-core's ``transformer.rating_a``)."""
        rows = self.db.fetchall("SELECT site, id, rating_a FROM transformer WHERE rating_a IS NOT NULL")
        return {"%s/%s" % (s, t): float(r) for s, t, r in rows if r and r > 0}


def obj_of(alarm: dict[str, Any]) -> Obj:
    """The ``Obj`` an alarm row is about."""
    if alarm["object_kind"] == "server":
        return Obj("")
    return Obj(alarm["site"], alarm["transformer"], alarm["node"])
