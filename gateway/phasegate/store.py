"""Crash-safe store-and-forward buffer for the transformer Pi (SQLite, WAL).

Every reading, summary, event and command outcome is written here first; the
uplink drains the buffer in insertion order and deletes a row only after the
broker acknowledged it (MQTT QoS 1 PUBACK). A crash between publish and ack
sends the row again: delivery is at-least-once and the server deduplicates on
(sender, seq), which every row carries.

The buffer is bounded, and fair (docs/uplink.md section 6, "Retention").
When it is full, a row goes in this order, and every drop is counted per
kind in the database so the uplink can report it (nothing is dropped
silently):

1. node traffic before the Pi's own records: a row whose sender is not the
   Pi (a node's reading, aggregate, event, ack or heartbeat; a relayed frame)
   is always dropped before any row the Pi originated (sender 0: summaries,
   its events and alarms, its heartbeats, commands without a reply), so no
   node can push the Pi's own records out, whatever it sends;
2. among node traffic, from the source holding the most rows (max-min fair
   share: the buffer's dynamic per-source quota), so a flooding source
   loses its own rows and never another source's that holds fewer; within
   that source the least valuable kind first and then the oldest. A node's
   kinds are authenticated but chosen by the node, and its event severity
   buys nothing (an event and an alarm weigh the same), so they only order
   its own share. A relayed frame's kind comes from an unauthenticated
   header: relayed rows (bytes senders) of one source go oldest first,
   whatever their kind;
3. only when no node row is left, the Pi's own rows: heartbeats, then
   summaries, then events and acks, alarms last, oldest first within a kind.

Besides the outbox the file keeps a bounded **dead-letter** table: messages
from outside that the Pi could not handle (a refused operator command, a
node reply that failed, a relay packet that broke), with the error and the
first bytes of the payload, for an operator to read (``phasekit gateway
dead-letters CONFIG``). ``dead_letter`` is rate-limited per source and the
table holds at most ``DEAD_LETTER_MAX`` rows, so a flood costs a few writes a
minute, not one per message; every message is counted.

Durability: WAL with synchronous=FULL (``phaseuplink.sqlite``, shared with the
server's storage), so a committed put survives SIGKILL and power loss; puts
of one polling round share one transaction.

Identity: a row's ``sender`` and ``seq`` are what the server deduplicates on
(``phaseuplink.records``). Rows the Pi itself originates come with seq None and
get one here, in the insert's transaction: ``session * 2**32 + row id``, with
``session`` a random 31-bit number drawn each time the buffer is opened. A
row keeps its seq however often it is resent (the at-least-once the server
deduplicates), AUTOINCREMENT never reuses an id within a file, and a file
restored from a backup (whose ids run again) starts a new session, so a new
record never takes an old one's seq (1 chance in 2**31 per open).

Besides the outbox, ``replace`` swaps rows for others atomically (the uplink
turns a period's readings into one aggregate that way) and ``state``/``replace``
keep a few small values in the same transaction (the energy counter each
aggregate continues from).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple, Self

from phasecore.errors import quote
from phasegate.errors import StorageError
from phaseuplink import sqlite as _durable

# Value of each kind of the Pi's own data (sender 0), lowest dropped first among its rows.
PRIORITY = {
    "heartbeat": 0,
    "node_heartbeat": 0,
    "reading": 1,
    "interval": 2,
    "summary": 3,
    "event": 4,
    "ack": 4,
    "alarm": 5,
}
# The same within one node's share: its event severity is its own choice, so an alarm weighs
# what an event does. Relayed frames (bytes senders) weigh the same whatever their header says.
NODE_PRIORITY = dict(PRIORITY, alarm=PRIORITY["event"])
_RELAYED = 0
# Dead letters: at most this many rows kept, this many per source per minute written (the rest counted).
DEAD_LETTER_MAX = 1000
DEAD_LETTER_BURST = 10
_DEAD_LETTER_WINDOW_S = 60.0
_DEAD_PAYLOAD = 256  # bytes of the payload kept
_DEAD_ERROR = 300  # characters of the error kept


class DeadLetter(NamedTuple):
    id: int
    t_s: float
    source: str
    error: str
    size: int
    payload: bytes
    suppressed: int  # messages of this source counted, not stored, since its previous dead letter


class Row(NamedTuple):
    id: int
    kind: str
    topic: str
    payload: bytes
    sender: int | bytes
    seq: int | None
    created_s: float


# What put_many buffers: (kind, topic, payload, sender, seq, created_s); phaseuplink.records builds them.
Item = tuple[str, str, bytes | bytearray | memoryview, int | bytes | None, int | None, float | None]
# What SQLite stores in the state table.
StateValue = int | float | str | bytes | None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    sender NOT NULL,
    seq INTEGER,
    created_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drop_order ON outbox (priority, id);
CREATE INDEX IF NOT EXISTS outbox_kind_order ON outbox (kind, id);
CREATE TABLE IF NOT EXISTS dropped (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
);
CREATE INDEX IF NOT EXISTS outbox_sender_order ON outbox (sender, priority, id);
CREATE TABLE IF NOT EXISTS source_rows (
    sender PRIMARY KEY,
    rows INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS source_rows_by_rows ON source_rows (rows);
CREATE TRIGGER IF NOT EXISTS outbox_counted_in AFTER INSERT ON outbox BEGIN
    INSERT INTO source_rows (sender, rows) VALUES (NEW.sender, 1)
        ON CONFLICT(sender) DO UPDATE SET rows = rows + 1;
END;
CREATE TRIGGER IF NOT EXISTS outbox_counted_out AFTER DELETE ON outbox BEGIN
    UPDATE source_rows SET rows = rows - 1 WHERE sender = OLD.sender;
    DELETE FROM source_rows WHERE sender = OLD.sender AND rows <= 0;
END;
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t_s REAL NOT NULL,
    source TEXT NOT NULL,
    error TEXT NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    suppressed INTEGER NOT NULL
);
"""
# Per-source counts kept by the triggers above; rebuilt at open (a file from before them, or a repair).
_RECOUNT = """
DELETE FROM source_rows;
INSERT INTO source_rows (sender, rows) SELECT sender, COUNT(*) FROM outbox GROUP BY sender;
"""


class StoreError(StorageError):
    """The buffer cannot be opened or written (disk full, corrupt file, bad argument)."""


class Store:
    """A bounded, ordered, durable outbox.

    ``Store(path, max_rows=200_000)``; use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str], max_rows: int = 200_000):
        if max_rows < 1:
            raise StoreError("max_rows must be at least 1, got %s" % (quote(max_rows),))
        self.path = str(path)
        self.max_rows = int(max_rows)
        self.session = secrets.randbits(31)
        try:
            self._db = _durable.connect(self.path)
            self._db.executescript(_SCHEMA)
            self._db.executescript("BEGIN IMMEDIATE;" + _RECOUNT + "COMMIT;")
        except sqlite3.DatabaseError as e:
            raise StoreError("cannot open buffer %s: %s" % (self.path, e)) from e
        self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        # Dead letters: per source, (window start, written in it, counted but not written since the last row).
        self._dead: dict[str, list[float]] = {}
        self.dead_counts: dict[str, int] = {}  # every dead letter offered, per source, since open

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return self._count

    def put(
        self,
        kind: str,
        topic: str,
        payload: bytes,
        sender: int | bytes | None = b"",
        seq: int | None = None,
        created_s: float | None = None,
    ) -> int:
        """Buffer one message; returns its row id (the order it will be sent in)."""
        return self.put_many([(kind, topic, payload, sender, seq, created_s)])[0]

    def put_many(self, items: Iterable[Item]) -> list[int]:
        """Buffer several messages in one transaction; returns their row ids.

        Each item is ``(kind, topic, payload, sender, seq, created_s)``
        (``phaseuplink.records`` builds them); ``created_s`` is the record's time,
        None means now. ``sender`` is an int (a record src) or bytes.
        """
        return self.replace((), items)

    def replace(
        self,
        delete_ids: Iterable[int],
        items: Iterable[Item],
        state: Mapping[str, StateValue] | None = None,
        dropped: Mapping[str, int] | None = None,
    ) -> list[int]:
        """In one transaction: delete rows ``delete_ids``, buffer ``items``, set ``state`` (a dict).

        ``dropped`` ({kind: n}) adds to the drop counts, for deleted rows that
        could not be carried on (say so in the log too). Returns the new row
        ids. Either all of it happens or none.
        """
        rows = [self._check(item) for item in items]
        delete_ids = list(delete_ids)
        ids: list[int] = []
        try:
            with self._transaction():
                deleted = self._delete(delete_ids)
                self._count -= deleted
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO outbox (kind, priority, topic, payload, sender, seq, created_s)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    rowid = cur.lastrowid
                    assert rowid is not None  # set by every INSERT (sqlite3 docs, Cursor.lastrowid)
                    ids.append(rowid)
                    if row[5] is None:  # the Pi's own record: sequenced here (module docstring)
                        self._db.execute(
                            "UPDATE outbox SET seq = ? WHERE id = ?",
                            ((self.session << 32) + rowid, rowid),
                        )
                self._count += len(rows)
                for key, value in sorted((state or {}).items()):
                    self._db.execute(
                        "INSERT INTO state (key, value) VALUES (?, ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )
                self._count_dropped(dropped or {})
                if self._count > self.max_rows:
                    self._drop(self._count - self.max_rows)
        except sqlite3.DatabaseError as e:
            self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            raise StoreError("cannot write buffer %s: %s" % (self.path, e)) from e
        return ids

    def state(self, key: str, default: Any = None) -> Any:
        """A value set by ``replace(..., state={key: value})``, or ``default``."""
        # Any: the value has the type replace(state=...) stored under this key, which differs by key.
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def pending(self, limit: int = 500, after_id: int = 0, kind: str | None = None, offset: int = 0) -> list[Row]:
        """The oldest ``limit`` buffered rows with id > after_id (of ``kind`` if given), in send order.

        ``offset`` skips that many first (``pending(1, kind=k, offset=n - 1)``
        tells whether at least n rows wait, without reading them).
        """
        if kind is None:
            cur = self._db.execute(
                "SELECT id, kind, topic, payload, sender, seq, created_s FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ? OFFSET ?",
                (after_id, limit, offset),
            )
        else:
            cur = self._db.execute(
                "SELECT id, kind, topic, payload, sender, seq, created_s FROM outbox"
                " WHERE kind = ? AND id > ? ORDER BY id LIMIT ? OFFSET ?",
                (kind, after_id, limit, offset),
            )
        return [Row(*r) for r in cur.fetchall()]

    def before(self, kind: str, before_s: float, limit: int = 100000) -> list[Row]:
        """Rows of ``kind`` whose time (created_s) is before ``before_s``, oldest id first."""
        cur = self._db.execute(
            "SELECT id, kind, topic, payload, sender, seq, created_s FROM outbox"
            " WHERE kind = ? AND created_s < ? ORDER BY id LIMIT ?",
            (kind, before_s, limit),
        )
        return [Row(*r) for r in cur.fetchall()]

    def supersede(self, kind: str) -> int:
        """Keep only the newest row of each sender of ``kind``; returns how many older rows were deleted.

        For records whose newest says all the older ones did (cumulative
        counters: node heartbeats). A deleted row that was in flight was sent.
        """
        try:
            with self._transaction():
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE kind = ? AND id NOT IN"
                    " (SELECT MAX(id) FROM outbox WHERE kind = ? GROUP BY sender)",
                    (kind, kind),
                )
                deleted = cur.rowcount
        except sqlite3.DatabaseError as e:
            raise StoreError("cannot write buffer %s: %s" % (self.path, e)) from e
        self._count -= deleted
        return deleted

    def counts(self) -> dict[str, int]:
        """Buffered rows per kind."""
        return dict(self._db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind ORDER BY kind").fetchall())

    def ack(self, ids: Iterable[int]) -> int:
        """Delete rows the broker acknowledged; returns how many were deleted."""
        ids = list(ids)
        if not ids:
            return 0
        try:
            with self._transaction():
                deleted = self._delete(ids)
        except sqlite3.DatabaseError as e:
            raise StoreError("cannot write buffer %s: %s" % (self.path, e)) from e
        self._count -= deleted
        return deleted

    def _delete(self, ids: list[int]) -> int:
        deleted = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            cur = self._db.execute("DELETE FROM outbox WHERE id IN (%s)" % ",".join("?" * len(chunk)), chunk)
            deleted += cur.rowcount
        return deleted

    def dropped(self) -> dict[str, int]:
        """Cumulative count of rows dropped by the retention policy, per kind."""
        return dict(self._db.execute("SELECT kind, count FROM dropped ORDER BY kind").fetchall())

    def _check(self, item: Item) -> tuple[str, int, str, bytes, int | bytes, int | None, float]:
        try:
            kind, topic, payload, sender, seq, created_s = item
        except (TypeError, ValueError):
            raise StoreError(
                "an item is (kind, topic, payload, sender, seq, created_s), got %s" % (quote(item),)
            ) from None
        if kind not in PRIORITY:
            raise StoreError("unknown kind %s; expected one of %s" % (quote(kind), ", ".join(sorted(PRIORITY))))
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise StoreError("payload must be bytes, got %s" % type(payload).__name__)
        if not isinstance(topic, str) or not topic:
            raise StoreError("topic must be a non-empty str, got %s" % (quote(topic),))
        if sender is None:
            sender = 0
        elif isinstance(sender, (bytes, bytearray, memoryview)):
            sender = bytes(sender)
        elif type(sender) is not int or sender < 0:
            raise StoreError("sender must be a non-negative int or bytes, got %s" % (quote(sender),))
        if seq is not None and (type(seq) is not int or seq < 0):
            raise StoreError("seq must be a non-negative int or None, got %s" % (quote(seq),))
        if sender == 0:
            priority = PRIORITY[kind]
        elif isinstance(sender, bytes):
            priority = _RELAYED  # an unauthenticated header cannot buy priority
        else:
            priority = NODE_PRIORITY[kind]
        return (
            kind,
            priority,
            topic,
            bytes(payload),
            sender,
            seq,
            time.time() if created_s is None else float(created_s),
        )

    def _drop(self, excess: int) -> None:
        """Delete ``excess`` rows in the retention order of the module docstring, and count them."""
        while excess > 0:
            top = self._db.execute(
                "SELECT sender, rows FROM source_rows WHERE NOT (typeof(sender) = 'integer' AND sender = 0)"
                " ORDER BY rows DESC LIMIT 2"
            ).fetchall()
            if top:
                # The largest source gives rows until it is one below the next largest (or excess is met).
                n = min(excess, max(1, top[0][1] - (top[1][1] if len(top) > 1 else 0)))
                victims = self._db.execute(
                    "SELECT id, kind FROM outbox WHERE sender = ? ORDER BY priority, id LIMIT ?", (top[0][0], n)
                ).fetchall()
            else:
                prio = self._db.execute("SELECT MIN(priority) FROM outbox").fetchone()[0]
                victims = self._db.execute(
                    "SELECT id, kind FROM outbox WHERE priority = ? ORDER BY id LIMIT ?", (prio, excess)
                ).fetchall()
            if not victims:
                break
            per_kind: dict[str, int] = {}
            for _, kind in victims:
                per_kind[kind] = per_kind.get(kind, 0) + 1
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
            self._count_dropped(per_kind)
            excess -= len(victims)
            self._count -= len(victims)

    def sources(self) -> dict[int | bytes, int]:
        """Buffered rows per sender (0 the Pi's own; a node's record src; a relayed frame's bytes)."""
        return dict(self._db.execute("SELECT sender, rows FROM source_rows").fetchall())

    # -------------------------------------------------------------- dead letters

    def dead_letter(
        self, source: str, payload: bytes | bytearray | memoryview, error: str, t_s: float | None = None
    ) -> bool:
        """Keep a message from outside that could not be handled; True if a row was written.

        At most ``DEAD_LETTER_BURST`` rows per ``source`` a minute are written
        (the next one carries how many were only counted in between) and the
        table keeps the newest ``DEAD_LETTER_MAX``; the error and the payload
        are cut. A buffer that cannot be written loses the dead letter, not
        the caller's message loop: it returns False.
        """
        now = time.time() if t_s is None else float(t_s)
        self.dead_counts[source] = self.dead_counts.get(source, 0) + 1
        w = self._dead.setdefault(source, [now, 0, 0])
        if now - w[0] >= _DEAD_LETTER_WINDOW_S or now < w[0]:
            w[0], w[1] = now, 0
        if w[1] >= DEAD_LETTER_BURST:
            w[2] += 1
            return False
        data = bytes(payload[:_DEAD_PAYLOAD])
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO dead_letter (t_s, source, error, size, payload, suppressed) VALUES (?, ?, ?, ?, ?, ?)",
                    (now, source[:40], error[:_DEAD_ERROR], len(payload), data, int(w[2])),
                )
                self._db.execute(
                    "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?", (DEAD_LETTER_MAX,)
                )
        except sqlite3.DatabaseError:
            return False
        w[1] += 1
        w[2] = 0
        return True

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        cur = self._db.execute(
            "SELECT id, t_s, source, error, size, payload, suppressed FROM dead_letter ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*r) for r in cur.fetchall()]

    def _count_dropped(self, per_kind: Mapping[str, int]) -> None:
        for kind, n in sorted(per_kind.items()):
            self._db.execute(
                "INSERT INTO dropped (kind, count) VALUES (?, ?)"
                " ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count",
                (kind, n),
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
        return False
