"""SQLite durability of the uplink's two stores: the Pi's buffer and the server's records.

Delivery is at-least-once only if each end commits before it tells the other
end it has the data: the Pi's buffer (``phasegate.store``) commits a reading
before anyone may rely on it and deletes a row only after the broker's PUBACK;
the server (``phaseserver.store``) acknowledges an MQTT message only after
its commit (``manual_ack``). The one thing to know: that promise needs the
commit itself to survive a power cut, which is what ``connect`` sets up:

- ``journal_mode=WAL``: a writer does not block readers, and a commit is one
  append to the log plus one fsync (SQLite docs, "Write-Ahead Logging").
- ``synchronous=FULL``, not NORMAL: in WAL mode NORMAL fsyncs the log only at
  checkpoints, so a commit can be lost to a power cut after it returned
  (SQLite docs, "PRAGMA synchronous"); the ack that followed it would then
  have promised data that is gone. FULL fsyncs the log on every commit.
- busy timeout (5 s, the ``sqlite3`` module's own default, made explicit): a
  second connection holding the write lock (a backup, the ``sqlite3`` shell,
  a benchmark reading the file) makes a write wait for it rather than fail
  at once with "database is locked".
- autocommit (``isolation_level=None``): the caller opens its transactions
  itself (``BEGIN IMMEDIATE`` ... ``COMMIT``), so none is left open behind
  its back; ``check_same_thread=False``: the owner serialises access itself.

Errors are ``sqlite3.DatabaseError`` as SQLite raises them; each store turns
them into its own typed error naming its file.

Public: ``connect``, ``BUSY_TIMEOUT_S``.
"""

import os
import sqlite3

__all__ = ("connect", "BUSY_TIMEOUT_S")

BUSY_TIMEOUT_S = 5.0


def connect(path: str | os.PathLike[str], busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (or create) the SQLite file ``path`` with the durability above; returns the ``sqlite3.Connection``."""
    db = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db
