"""The SQLite durability both uplink stores open their files with (phaseuplink.sqlite)."""

import sqlite3
import threading
import time

import pytest

from phaseuplink import sqlite as durable


def test_connect_sets_wal_full_sync_busy_timeout_and_autocommit(tmp_path):
    db = durable.connect(tmp_path / "x.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == int(durable.BUSY_TIMEOUT_S * 1000)
        assert db.isolation_level is None
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        assert not db.in_transaction  # autocommit: nothing left open behind the caller's back
    finally:
        db.close()
    # WAL is a property of the file: another connection sees it too.
    with sqlite3.connect(tmp_path / "x.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_writer_waits_for_another_connections_write_lock_instead_of_failing(tmp_path):
    path = tmp_path / "x.db"
    db = durable.connect(path)
    db.execute("CREATE TABLE t (x)")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a backup or the sqlite3 shell holding the write lock
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    try:
        db.execute("INSERT INTO t VALUES (1)")
        waited = time.monotonic() - t0
    finally:
        release.join()
        holder.close()
    assert 0.2 < waited < durable.BUSY_TIMEOUT_S
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    db.close()


def test_a_file_that_is_not_a_database_raises_sqlites_own_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database, " * 512)
    with pytest.raises(sqlite3.DatabaseError):
        durable.connect(bad)
