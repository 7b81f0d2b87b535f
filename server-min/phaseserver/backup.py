"""Backup and restore of the server's store, on both engines.

- SQLite: ``sqlite_backup(db, path)`` uses SQLite's online backup API
  (``sqlite3.Connection.backup``): a consistent snapshot of the live file,
  page by page, while ingest goes on; WAL readers do not block the writer.
  ``sqlite_restore(backup, target)`` checks the copy (``PRAGMA
  integrity_check``) and moves it into place atomically, with the server
  stopped; the ``-wal`` and ``-shm`` files of the old database are removed
  so SQLite cannot replay a log that belongs to another file.
- PostgreSQL: ``pg_dump(dsn, path)`` writes the custom format (``-Fc``:
  compressed, one consistent snapshot taken in a single repeatable-read
  transaction, restorable table by table); ``pg_restore(dsn, path)`` loads it
  into an empty database (``--no-owner``, ``--exit-on-error``, one
  transaction). Chosen over ``pg_basebackup`` for the default because it
  needs no replication settings or WAL archive, restores into any
  PostgreSQL of the same or a newer major version, and a restored database
  is a normal one the server opens as it is. ``pg_basebackup`` plus WAL
  archiving (point-in-time recovery) is the choice when losing the last
  day's dump interval is not acceptable: docs/server.md says how.

The one thing to know: a restore is tested by opening the restored store and
asking it the same queries (tests/server/test_backup.py), not by comparing files.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from phaseserver.errors import StorageError
from phaseserver.store.db import Database

__all__ = ("sqlite_backup", "sqlite_restore", "pg_dump", "pg_restore", "pg_binary")


def sqlite_backup(db: Database, path: str | Path) -> None:
    """A consistent copy of the open SQLite database ``db`` into ``path`` (replaced if it exists)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    if tmp.exists():
        tmp.unlink()
    db.backup_sqlite(str(tmp))
    os.replace(tmp, path)


def sqlite_restore(backup: str | Path, target: str | Path) -> None:
    """Put the backup file ``backup`` in place of the database ``target`` (the server must be stopped)."""
    backup, target = Path(backup), Path(target)
    try:
        con = sqlite3.connect("file:%s?mode=ro" % backup, uri=True)
        try:
            result = con.execute("PRAGMA integrity_check").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise StorageError("%s is not a readable SQLite database: %s" % (backup, e)) from e
    if not result or result[0] != "ok":
        raise StorageError("%s fails its integrity check: %s" % (backup, str(result)[:200]))
    tmp = target.with_name(target.name + ".restoring")
    shutil.copyfile(backup, tmp)
    for suffix in ("-wal", "-shm"):
        side = target.with_name(target.name + suffix)
        if side.exists():
            side.unlink()
    os.replace(tmp, target)


def pg_binary(name: str) -> str:
    """Path of a PostgreSQL client program (``pg_dump``, ``pg_restore``): the newest Debian one, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return found[-1]
    which = shutil.which(name)
    if which:
        return which
    raise StorageError("%s not found: install PostgreSQL's client programs (Debian: postgresql-client)" % name)


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=24 * 3600)
    if p.returncode != 0:
        raise StorageError("%s failed (%d): %s" % (what, p.returncode, (p.stderr or p.stdout)[-1000:]))


def pg_dump(dsn: str, path: str | Path) -> None:
    """``pg_dump -Fc`` of the database at ``dsn`` into ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    _run([pg_binary("pg_dump"), "-Fc", "--no-owner", "-f", str(tmp), "-d", dsn], "pg_dump")
    os.replace(tmp, path)


def pg_restore(dsn: str, path: str | Path) -> None:
    """Load the dump ``path`` into the (empty) database at ``dsn``, in one transaction."""
    _run(
        [pg_binary("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction", "-d", dsn, str(path)],
        "pg_restore",
    )
