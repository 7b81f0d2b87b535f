"""The embedded store: one SQLite file (WAL, synchronous=FULL), no database server to run.

The default of ``[storage]`` and what ``make demo`` uses. Tables are those of
``migrations/sqlite``; the raw tables are ``WITHOUT ROWID`` with the
de-duplication key as primary key, so rows of one transformer are clustered
by time and a range query reads them in order.

The one thing to know: SQLite has one writer at a time (``BEGIN IMMEDIATE``),
so new rows are told from copies by looking up the batch's keys in its time
range first and inserting only the new ones: exact, because no other writer
can come in between. Several ingest workers on one SQLite file work but
take turns; scale out with PostgreSQL (docs/server.md).

Backup: the online backup API (``sqlite3.Connection.backup``) copies a
consistent snapshot while ingest goes on; restore is copying that file back
with the server stopped (``phaseserver.backup``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phaseserver.store.sql import DAY_TABLES, HOUR_TABLES, RAW_TABLES, SqlStore

__all__ = ("SQLiteStore",)

DAY = 86400


class SQLiteStore(SqlStore):
    """``store.base.Store`` on SQLite."""

    def _insert_new(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], key: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        idx = [columns.index(k) for k in key]
        t_i = columns.index("t_s")
        site, tx = rows[0][1], rows[0][2]
        where = "site = ? AND transformer = ? AND t_s >= ? AND t_s <= ?"
        args: tuple[Any, ...] = (site, tx, min(r[t_i] for r in rows), max(r[t_i] for r in rows))
        if "kind" in key:
            where += " AND kind = ?"
            args = (*args, rows[0][columns.index("kind")])
        existing = set(self.db.fetchall("SELECT %s FROM %s WHERE %s" % (", ".join(key), table, where), args))
        new = []
        for row in rows:
            k = tuple(row[i] for i in idx)
            if k in existing:
                continue
            existing.add(k)
            new.append(row)
        if new:
            self.db.copy_rows(table, columns, new)
        return new

    def retention(self, now_s: float) -> dict[str, int]:
        st = self.storage
        out = {"raw": 0, "hourly": 0, "daily": 0, "dead_letters": self.prune_dead_letters()}
        levels = (
            ("raw", RAW_TABLES, int(st.get("retention_raw_days", 90))),
            ("hourly", HOUR_TABLES, int(st.get("retention_hourly_days", 0))),
            ("daily", DAY_TABLES, int(st.get("retention_daily_days", 0))),
        )
        transformers = self.db.fetchall("SELECT site, id FROM transformer")
        for level, tables, days in levels:
            if not days:
                continue
            cutoff = int(now_s) - int(now_s) % DAY - days * DAY
            for table in tables:
                for site, tx in transformers:
                    # Per transformer: the primary key starts (site, transformer, t_s), so this is a range delete.
                    with self.db.transaction():
                        out[level] += max(
                            0,
                            self.db.execute(
                                "DELETE FROM %s WHERE site = ? AND transformer = ? AND t_s < ?" % table,
                                (site, tx, cutoff),
                            ),
                        )
        self.db.execute(
            "DELETE FROM rollup_dirty WHERE t_s < ?", (int(now_s) - int(st.get("retention_raw_days", 90)) * DAY,)
        )
        return out

    def backup(self, path: str) -> None:
        """A consistent copy of the database into the file ``path`` (online: ingest may go on)."""
        self.db.backup_sqlite(path)
