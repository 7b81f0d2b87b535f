"""Server-side storage of uplink records (SQLite, WAL): each record once, duplicates dropped and counted.

A transformer Pi delivers at least once (``phasegate.uplink``): after a
broker outage or a crash between publish and PUBACK the same batch arrives
again. Every record has an identity fixed on the Pi (``phaseuplink.records``),
and the table's UNIQUE constraint on it makes a second copy a no-op that is
counted, never a second row:

    UNIQUE (site, transformer, kind, src, seq)

(src 0 is the Pi, whose buffer sequences its own records; a node's src
includes its key generation, under which its sequence numbers never repeat).

The body is kept as JSON text of the validated fields, so SQLite's
``json_extract`` can query it (``json_extract(body, '$.current_mA')``).
``n`` is the number of node readings a row stands for: 1 for a reading, the
aggregate's ``n`` for an interval record, NULL otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from phaseserver.errors import StorageError
from phaseuplink import sqlite as _durable

if TYPE_CHECKING:
    from phaseuplink.records import Record

__all__ = ("Storage", "StorageError")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    kind TEXT NOT NULL,
    src INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_s INTEGER NOT NULL,
    n INTEGER,
    body TEXT NOT NULL,
    received_s REAL NOT NULL,
    UNIQUE (site, transformer, kind, src, seq)
);
CREATE INDEX IF NOT EXISTS record_time ON record (site, transformer, kind, t_s);
CREATE TABLE IF NOT EXISTS counter (
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (site, transformer, name)
);
CREATE TABLE IF NOT EXISTS status (
    site TEXT NOT NULL,
    transformer TEXT NOT NULL,
    status TEXT NOT NULL,
    t_s REAL NOT NULL,
    PRIMARY KEY (site, transformer)
);
"""


class Storage:
    """``Storage(path)``: records of every site and transformer in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        try:
            # WAL, synchronous=FULL: the MQTT message is acknowledged after the commit, so
            # the commit must survive a power cut (phaseuplink.sqlite says why).
            self._db = _durable.connect(self.path)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StorageError("cannot open %s: %s" % (self.path, e)) from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_batch(
        self, site: str, transformer: str, kind: str, records: Iterable[Record], received_s: float | None = None
    ) -> tuple[int, int]:
        """Store the records of one decoded batch; returns ``(new, duplicates)``.

        ``records`` are ``phaseuplink.records.Record``s. One transaction: the
        caller acknowledges the MQTT message after this returns.
        """
        now = time.time() if received_s is None else received_s
        rows: list[tuple[str, str, str, int, int, int, int | None, str, float]] = []
        for r in records:
            n: int | None
            if kind == "reading":
                n = 1
            elif kind == "interval":
                n = r.body["n"]
            else:
                n = None
            rows.append(
                (
                    site,
                    transformer,
                    kind,
                    r.src,
                    r.seq,
                    r.t_s,
                    n,
                    json.dumps(r.body, sort_keys=True, separators=(",", ":")),
                    now,
                )
            )
        try:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO record (site, transformer, kind, src, seq, t_s, n, body, received_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            new = self._db.total_changes - before
            dup = len(rows) - new
            self._bump(site, transformer, "batches", 1)
            self._bump(site, transformer, "records", new)
            self._bump(site, transformer, "duplicates", dup)
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            self._rollback()
            raise StorageError("cannot store a %s batch from %s/%s: %s" % (kind, site, transformer, e)) from e
        return new, dup

    def count_invalid(self, site: str, transformer: str, batches: int = 0, records: int = 0) -> None:
        """Count refused batches and records (they are logged by the caller, not stored)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._bump(site, transformer, "invalid_batches", batches)
            self._bump(site, transformer, "invalid_records", records)
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            self._rollback()
            raise StorageError("cannot count invalid input: %s" % e) from e

    def set_status(self, site: str, transformer: str, status: str, t_s: float | None = None) -> None:
        """The transformer's retained status (``online``/``offline``) as last seen."""
        self._db.execute(
            "INSERT INTO status (site, transformer, status, t_s) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(site, transformer) DO UPDATE SET status = excluded.status, t_s = excluded.t_s",
            (site, transformer, status, time.time() if t_s is None else t_s),
        )

    # ------------------------------------------------------------- queries

    def status(self, site: str, transformer: str) -> str | None:
        row = self._db.execute(
            "SELECT status FROM status WHERE site = ? AND transformer = ?", (site, transformer)
        ).fetchone()
        return None if row is None else row[0]

    def counters(self, site: str | None = None, transformer: str | None = None) -> dict[str, int]:
        """``{name: value}`` summed over the matching transformers: batches, records, duplicates, invalid_*."""
        where, args = _where(site, transformer)
        return dict(
            self._db.execute(
                "SELECT name, SUM(value) FROM counter%s GROUP BY name ORDER BY name" % where, args
            ).fetchall()
        )

    def duplicates(self, site: str | None = None, transformer: str | None = None) -> int:
        """Records that arrived again and were dropped."""
        return self.counters(site, transformer).get("duplicates", 0)

    def count(self, kind: str | None = None, site: str | None = None, transformer: str | None = None) -> int:
        where, args = _where(site, transformer, kind)
        return self._db.execute("SELECT COUNT(*) FROM record" + where, args).fetchone()[0]

    def readings_per_node(
        self, site: str | None = None, transformer: str | None = None, kind: str = "reading"
    ) -> dict[int, int]:
        """``{src: readings}``: raw readings (``kind="reading"``) or readings aggregated (``"interval"``)."""
        where, args = _where(site, transformer, kind)
        return dict(
            self._db.execute("SELECT src, SUM(n) FROM record%s GROUP BY src ORDER BY src" % where, args).fetchall()
        )

    def keys(self, kind: str, site: str | None = None, transformer: str | None = None) -> list[tuple[int, int]]:
        """Every stored ``(src, seq)`` of ``kind``, sorted."""
        where, args = _where(site, transformer, kind)
        return self._db.execute("SELECT src, seq FROM record%s ORDER BY src, seq" % where, args).fetchall()

    def records(
        self, kind: str, site: str | None = None, transformer: str | None = None
    ) -> list[tuple[int, int, int, Any]]:
        """``[(src, seq, t_s, body dict)]`` of ``kind`` in (src, seq) order."""
        # Any: the body is JSON of the kind's fields, as decode_body gave them.
        where, args = _where(site, transformer, kind)
        rows = self._db.execute("SELECT src, seq, t_s, body FROM record%s ORDER BY src, seq" % where, args)
        return [(src, seq, t, json.loads(body)) for src, seq, t, body in rows.fetchall()]

    def _bump(self, site: str, transformer: str, name: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counter (site, transformer, name, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(site, transformer, name) DO UPDATE SET value = value + excluded.value",
                (site, transformer, name, n),
            )

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass  # no transaction was open: nothing to undo


def _where(site: str | None, transformer: str | None, kind: str | None = None) -> tuple[str, list[str]]:
    clauses: list[str] = []
    args: list[str] = []
    for col, val in (("site", site), ("transformer", transformer), ("kind", kind)):
        if val is not None:
            clauses.append("%s = ?" % col)
            args.append(val)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
