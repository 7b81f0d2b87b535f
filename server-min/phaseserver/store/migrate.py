"""Schema migrations: numbered SQL files per engine, applied in order at start-up and recorded.

Files live in ``phaseserver/store/migrations/<engine>/NNNN_name.sql`` (``sqlite``
and ``postgres``; one file per step and engine, the same number on both).
``migrate(db)`` applies every file whose number is not yet in the table

    schema_migration(version, name, applied_s)

each in its own transaction together with its row, so a step is applied
wholly or not at all (PostgreSQL and SQLite both have transactional DDL).
Numbers are owned by area, with gaps (0001-0099 core: records, roll-ups,
registry, counters, dead letters; 0100-0199 the API: tenants' users, roles,
sessions, keys, audit, commands; 0200-0299 alarms and notifications), so a
missing lower number is applied even after a higher one: each area's steps
depend only on its own earlier steps and on 0001.

The one thing to know: a file once released is never edited; a change is a
new file. Several server processes starting at once (ingest workers) are
safe: on PostgreSQL the steps run under an advisory lock, on SQLite under
BEGIN IMMEDIATE, and each re-reads what is applied once it holds the lock.
A database that records a step this code does not have was migrated by a
newer phaseserver: ``StorageError``, nothing touched.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import NamedTuple

from phasecore.errors import quote
from phaseserver.clock import Clock
from phaseserver.errors import StorageError
from phaseserver.store.db import Database

__all__ = ("Migration", "migrations", "migrate", "applied", "split_statements", "MIGRATIONS_DIR")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]{1,60})\.sql$")
# pg_advisory_xact_lock key: "phaseserver migrations" (any fixed 64-bit number, ours alone).
_LOCK_KEY = 0x70686D6967


class Migration(NamedTuple):
    version: int
    name: str
    path: Path


def migrations(engine: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``engine`` in version order; a misnamed or duplicate file is a StorageError."""
    out: dict[int, Migration] = {}
    base = Path(folder) / engine
    if not base.is_dir():
        raise StorageError("no migrations folder for engine %s at %s" % (quote(engine), base))
    for path in sorted(base.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _FILE.match(path.name)
        if not m:
            raise StorageError("migration file %s is not named NNNN_name.sql" % path.name)
        version = int(m.group(1))
        if version in out:
            raise StorageError("two migrations numbered %04d: %s and %s" % (version, out[version].path.name, path.name))
        out[version] = Migration(version, m.group(2), path)
    return [out[v] for v in sorted(out)]


_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migration ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_s %s NOT NULL)"
)


def _ensure_table(db: Database) -> None:
    db.execute(_TABLE % ("REAL" if db.engine == "sqlite" else "DOUBLE PRECISION"))


def applied(db: Database) -> dict[int, str]:
    """``{version: name}`` of the steps recorded in the database."""
    _ensure_table(db)
    return {int(v): str(n) for v, n in db.fetchall("SELECT version, name FROM schema_migration ORDER BY version")}


def migrate(db: Database, clock: Clock | None = None, folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the missing steps in order; returns the versions applied now (empty when up to date)."""
    clock = clock or Clock()
    steps = migrations(db.engine, folder)
    known = {m.version for m in steps}
    done = applied(db)
    newer = sorted(set(done) - known)
    if newer:
        raise StorageError(
            "the database has schema steps %s that this phaseserver does not know: it was migrated by a newer "
            "version; run that version (or restore a backup made before it)" % ", ".join("%04d" % v for v in newer)
        )
    out = []
    for step in steps:
        if step.version in done:
            continue
        sql = step.path.read_text(encoding="utf-8")
        if _apply(db, step, sql, clock.now()):
            out.append(step.version)
    return out


def _apply(db: Database, step: Migration, sql: str, now: float) -> bool:
    record = "INSERT INTO schema_migration (version, name, applied_s) VALUES (%d, '%s', %s)" % (
        step.version,
        step.name,
        quote(float(now)),
    )
    if db.engine == "postgres":
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
            if db.fetchone("SELECT 1 FROM schema_migration WHERE version = ?", (step.version,)):
                return False  # another process applied it while we waited for the lock
            try:
                db.executescript(sql)
            except StorageError as e:
                raise StorageError("migration %04d_%s failed: %s" % (step.version, step.name, e)) from e
            db.execute(record)
        return True
    # SQLite: executescript would commit what is open, so the step is split into its statements and
    # run inside one BEGIN IMMEDIATE (the write lock first, then the re-check), with its record.
    with db.transaction():
        if db.fetchone("SELECT 1 FROM schema_migration WHERE version = ?", (step.version,)):
            return False
        try:
            for statement in split_statements(sql):
                db.execute(statement)
        except StorageError as e:
            raise StorageError("migration %04d_%s failed: %s" % (step.version, step.name, e)) from e
        db.execute(record)
    return True


def split_statements(sql: str) -> list[str]:
    """The complete SQL statements of a script, in order (SQLite's own notion of complete)."""
    out = []
    buf: list[str] = []
    for line in sql.splitlines():
        buf.append(line)
        text = "\n".join(buf)
        if sqlite3.complete_statement(text):
            if text.strip().strip(";").strip() and not _only_comments(text):
                out.append(text)
            buf = []
    rest = "\n".join(buf).strip()
    if rest and not _only_comments(rest):
        raise StorageError("migration script ends in an incomplete statement: %s" % rest[:80])
    return out


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") or line.strip() == ";" for line in text.splitlines())
