"""Queries the API's pages need beyond the Store interface, each filtered by tenant in SQL.

The Store (``phaseserver.store.base``) answers the fleet, one transformer,
its series, nodes, moves and CSV export; this module adds what joins other
areas' tables: the worst active alarm per transformer (the alarms area's
``alarm`` table), and the transformer registry changes an installer makes.
The one thing to know: every function takes the tenant as its first
argument after the database and puts it in the WHERE clause; none accepts
None (the system administrator reads no tenant's data through the API).
"""

from typing import Any

__all__ = ("worst_alarms", "set_transformer")


def worst_alarms(db: Any, tenant: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(site, transformer): worst active alarm}`` of the tenant: highest severity, then the oldest."""
    rows = db.fetchall(
        "SELECT site, transformer, id, type, severity, object, raised_s, acked_s FROM alarm"
        " WHERE tenant_id = ? AND cleared_s IS NULL AND site IS NOT NULL AND transformer IS NOT NULL"
        " ORDER BY severity DESC, raised_s, id",
        (tenant,),
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for site, tx, aid, typ, severity, obj, raised_s, acked_s in rows:
        out.setdefault(
            (site, tx),
            {
                "id": int(aid),
                "type": typ,
                "severity": int(severity),
                "object": obj,
                "raised_s": float(raised_s),
                "acknowledged": acked_s is not None,
            },
        )
    return out


def set_transformer(
    db: Any, tenant: str, site: str, transformer: str, name: str | None, rating_a: float | None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Set a transformer's name and phase rating (installer); ``(before, after)`` or None if not the tenant's."""
    r = db.fetchone(
        "SELECT name, rating_a FROM transformer WHERE tenant_id = ? AND site = ? AND id = ?",
        (tenant, site, transformer),
    )
    if r is None:
        return None
    before = {"name": r[0], "rating_a": r[1]}
    after = {"name": name, "rating_a": rating_a}
    db.execute(
        "UPDATE transformer SET name = ?, rating_a = ? WHERE tenant_id = ? AND site = ? AND id = ?",
        (name, rating_a, tenant, site, transformer),
    )
    return before, after
