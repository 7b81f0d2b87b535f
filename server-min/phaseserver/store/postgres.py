"""The production store: PostgreSQL through psycopg 3, daily partitions, COPY at ingest.

Tables are those of ``migrations/postgres``. The time-series tables are
partitioned by range of ``t_s``: raw records (``reading``, ``aggregate``,
``summary``, ``record``, ``series_minute``) by UTC day, hourly roll-ups by
UTC month, daily roll-ups by UTC year. Partitions are created as records
need them (``prepare``, before the ingest transaction, under an advisory
lock so concurrent workers do not race) and ahead of the clock by the
maintenance job; retention drops whole partitions (``DROP TABLE`` of a
partition is instant and returns the space at once, where ``DELETE`` would
leave dead rows for VACUUM).

The one thing to know: a batch goes in with COPY into a session-private
staging table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING
RETURNING`` the key: the rows that come back are exactly the new ones, also
when two workers store the same record at the same moment, so everything
derived from new rows (the minute series, counters) stays exact.

Backup: ``pg_dump`` in the custom format (a consistent snapshot while ingest
goes on), restored with ``pg_restore`` (``phaseserver.backup``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

from phaseserver.errors import StorageError
from phaseserver.store.sql import DAY_TABLES, HOUR_TABLES, RAW_TABLES, SqlStore

__all__ = ("PostgresStore", "partition_bounds", "partition_name")

DAY = 86400
_KIND_TABLES = {
    "reading": ("reading", "series_minute"),
    "interval": ("aggregate", "series_minute"),
    "summary": ("summary",),
}
_OTHER_TABLES = ("record",)
# pg_advisory_lock key for partition DDL: "phaseserver partitions".
_PARTITION_LOCK = 0x7068706172
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def _utc(t_s: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t_s, datetime.timezone.utc)


def partition_bounds(table: str, t_s: int) -> tuple[int, int, str]:
    """``(lower, upper, suffix)`` of the partition of ``table`` that holds time ``t_s``.

    Raw tables: the UTC day; hourly roll-ups: the UTC month; daily roll-ups: the UTC year.
    """
    d = _utc(int(t_s))
    if table in DAY_TABLES:
        lo = datetime.datetime(d.year, 1, 1, tzinfo=datetime.timezone.utc)
        hi = datetime.datetime(d.year + 1, 1, 1, tzinfo=datetime.timezone.utc)
        suffix = "%04d" % d.year
    elif table in HOUR_TABLES:
        lo = datetime.datetime(d.year, d.month, 1, tzinfo=datetime.timezone.utc)
        hi = datetime.datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=datetime.timezone.utc)
        suffix = "%04d%02d" % (d.year, d.month)
    else:
        lo = datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)
        hi = lo + datetime.timedelta(days=1)
        suffix = "%04d%02d%02d" % (d.year, d.month, d.day)
    return int(lo.timestamp()), int(hi.timestamp()), suffix


def partition_name(table: str, t_s: int) -> str:
    return "%s_p%s" % (table, partition_bounds(table, t_s)[2])


class PostgresStore(SqlStore):
    """``store.base.Store`` on PostgreSQL."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._partitions: set[str] = set()
        self._staged: set[str] = set()
        self._batch_no = 0

    # ------------------------------------------------------------ partitions

    def _load_partitions(self) -> None:
        rows = self.db.fetchall(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
        )
        self._partitions = {str(r[0]) for r in rows}

    def ensure_partitions(self, table: str, lo_s: int, hi_s: int) -> int:
        """Create the partitions of ``table`` covering ``[lo_s, hi_s]`` that do not exist; returns how many."""
        if not self._partitions:
            self._load_partitions()
        wanted = []
        t = int(lo_s)
        while True:
            lo, hi, suffix = partition_bounds(table, t)
            name = "%s_p%s" % (table, suffix)
            if name not in self._partitions:
                wanted.append((name, lo, hi))
            if hi > hi_s:
                break
            t = hi
        if not wanted:
            return 0
        created = 0
        inside = self.db.in_transaction
        try:
            if not inside:
                self.db.execute("SELECT pg_advisory_lock(?)", (_PARTITION_LOCK,))
            for name, lo, hi in wanted:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM (%d) TO (%d)" % (name, table, lo, hi)
                )
                self._partitions.add(name)
                created += 1
        finally:
            if not inside:
                self.db.execute("SELECT pg_advisory_unlock(?)", (_PARTITION_LOCK,))
        return created

    def prepare(self, spans: Sequence[tuple[str, int, int]]) -> None:
        for kind, lo, hi in spans:
            for table in _KIND_TABLES.get(kind, _OTHER_TABLES):
                self.ensure_partitions(table, lo, hi)

    def prepare_rollups(self, t_s: int, daily: bool = False) -> None:
        for table in DAY_TABLES if daily else HOUR_TABLES:
            self.ensure_partitions(table, t_s, t_s)

    def add_batch(
        self, site: str, transformer: str, kind: str, records: Sequence[Any], received_s: float
    ) -> tuple[int, int]:
        if records:
            self.prepare([(kind, min(r.t_s for r in records), max(r.t_s for r in records))])
        try:
            return super().add_batch(site, transformer, kind, records, received_s)
        except StorageError:
            self._staged.clear()  # a rolled-back transaction takes the staging tables made inside it
            self._partitions.clear()
            raise

    def _lock_site(self, site: str) -> tuple[Any, ...] | None:
        # FOR SHARE: a site being moved to another tenant (assign_site updates the site row first)
        # waits for this transaction, and this one waits for the move: rows never carry a stale tenant.
        return self.db.fetchone("SELECT tenant_id FROM site WHERE id = ? FOR SHARE", (site,))

    def _lock_transformer(self, site: str, transformer: str) -> None:
        # Every write of one transformer's data starts by locking its row: two workers storing
        # batches of the same transformer take turns instead of locking minute rows, node rows and
        # counters in different orders (which deadlocks); different transformers still go in parallel.
        self.db.execute("SELECT 1 FROM transformer WHERE site = ? AND id = ? FOR UPDATE", (site, transformer))

    # ------------------------------------------------------------ bulk insert

    def _insert_new(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], key: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        stage = "stage_" + table
        if table not in self._staged:
            # ON COMMIT DELETE ROWS: emptied by one truncate at each commit. Within a transaction of many
            # batches, each batch's rows carry their own number: a per-batch DELETE would leave dead rows
            # that no autovacuum ever removes from a temporary table (every later scan would pay for them),
            # and a per-batch TRUNCATE costs a new file each time.
            self.db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s INCLUDING DEFAULTS, batch_no INTEGER)"
                " ON COMMIT DELETE ROWS" % (stage, table)
            )
            self._staged.add(table)
        self._batch_no += 1
        cols = ", ".join(columns)
        self.db.copy_rows(stage, (*columns, "batch_no"), [(*row, self._batch_no) for row in rows])
        keys = self.db.fetchall(
            "INSERT INTO %s (%s) SELECT %s FROM %s WHERE batch_no = ? ON CONFLICT DO NOTHING RETURNING %s"
            % (table, cols, cols, stage, ", ".join(key)),
            (self._batch_no,),
        )
        fresh = set(keys)
        idx = [columns.index(k) for k in key]
        new = []
        for row in rows:
            k = tuple(row[i] for i in idx)
            if k in fresh:
                fresh.discard(k)  # a key twice in one batch: the first is the one stored
                new.append(row)
        return new

    # ------------------------------------------------------------ maintenance

    def partitions(self, table: str) -> list[tuple[str, int, int]]:
        """``(name, lower, upper)`` of each partition of ``table``, oldest first."""
        rows = self.db.fetchall(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = ? AND n.nspname = current_schema()",
            (table,),
        )
        out = []
        for name, bound in rows:
            m = _BOUND.search(str(bound))
            if m:
                out.append((str(name), int(m.group(1)), int(m.group(2))))
        return sorted(out, key=lambda p: p[1])

    def retention(self, now_s: float) -> dict[str, int]:
        """Drop partitions wholly older than each level's retention (and older roll-up rows); create days ahead.

        Returns ``{level: partitions dropped + roll-up rows deleted}``.
        """
        st = self.storage
        now = int(now_s)
        ahead = int(st.get("partitions_ahead_days", 2))
        for table in (*RAW_TABLES,):
            self.ensure_partitions(table, now - now % DAY, now + ahead * DAY)
        out = {"raw": 0, "hourly": 0, "daily": 0, "dead_letters": self.prune_dead_letters()}
        levels = (
            ("raw", RAW_TABLES, int(st.get("retention_raw_days", 90))),
            ("hourly", HOUR_TABLES, int(st.get("retention_hourly_days", 0))),
            ("daily", DAY_TABLES, int(st.get("retention_daily_days", 0))),
        )
        for level, tables, days in levels:
            if not days:
                continue
            cutoff = now - now % DAY - days * DAY
            for table in tables:
                for name, _lo, hi in self.partitions(table):
                    if hi <= cutoff:
                        self.db.execute("DROP TABLE IF EXISTS %s" % name)
                        self._partitions.discard(name)
                        out[level] += 1
                if level != "raw":
                    # Roll-up partitions span a month or a year; the rows of the oldest one that
                    # passed their retention go by DELETE (a few thousand small rows a day).
                    out[level] += max(0, self.db.execute("DELETE FROM %s WHERE t_s < ?" % table, (cutoff,)))
        self.db.execute("DELETE FROM rollup_dirty WHERE t_s < ?", (now - int(st.get("retention_raw_days", 90)) * DAY,))
        return out

    def size_bytes(self, tables: Sequence[str]) -> dict[str, int]:
        """``pg_total_relation_size`` (heap, indexes, TOAST) of each table summed over its partitions."""
        out = {}
        for table in tables:
            names = [p[0] for p in self.partitions(table)] or [table]
            total = 0
            for name in names:
                total += int(self.db.scalar("SELECT pg_total_relation_size(?::regclass)", (name,), 0))
            out[table] = total
        return out

    def backup(self, path: str) -> None:
        """``pg_dump -Fc`` of the database into ``path`` (see phaseserver.backup)."""
        from phaseserver import backup

        backup.pg_dump(self.db.target, path)
