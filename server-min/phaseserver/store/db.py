"""The database layer both stores and every other part of the server talk SQL through.

``Database`` wraps one connection to SQLite (stdlib ``sqlite3``, the embedded
default) or PostgreSQL (psycopg 3) behind one small API, so SQL that both
engines accept is written once:

    db = Database.sqlite("phaseserver.db")          # or Database.postgres("host=... dbname=...")
    with db.transaction():                          # BEGIN IMMEDIATE (SQLite) / BEGIN (PostgreSQL)
        db.execute("INSERT INTO site (id, tenant_id) VALUES (?, ?)", ("s1", "unassigned"))
        n = db.fetchone("SELECT COUNT(*) FROM site")[0]
    db.copy_rows("reading", ("t_s", "src"), rows)   # COPY on PostgreSQL, executemany on SQLite

The one thing to know: callers write ``?`` placeholders only. They are
translated to psycopg's ``%s`` (and a literal ``%`` doubled) outside string
literals, once per distinct statement. Where the engines' SQL differs, a
module keeps ``SQL = {"sqlite": ..., "postgres": ...}`` and picks
``SQL[db.engine]``.

- Autocommit outside ``transaction()``: every statement is its own
  transaction; inside, everything commits together or rolls back on any
  exception. A nested ``transaction()`` joins the outer one.
- Thread safety: one connection, guarded by a lock held for each call and for
  a whole transaction. A component that works in parallel (an ingest worker,
  the API's thread pool) opens its own ``Database`` (``db.clone()``).
- Errors: every driver error becomes ``StorageError`` naming the statement
  (cut short), a unique-key violation ``ConflictError``. A PostgreSQL
  connection that broke is opened again on the next call.
- Durability: SQLite opens in WAL with ``synchronous=FULL``
  (``phaseuplink.sqlite``: the ingest acknowledges a message after its commit,
  so the commit must survive a power cut); PostgreSQL's default
  ``synchronous_commit=on`` gives the same.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from phasecore.errors import quote
from phaseserver.errors import ConflictError, StorageError, TransientStorageError
from phaseuplink import sqlite as _durable

__all__ = ("Database", "ENGINES", "translate")

ENGINES = ("sqlite", "postgres")
_QUOTE_MAX = 120
Params = Sequence[Any]


def _cut(text: str, limit: int = _QUOTE_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def translate(sql: str) -> str:
    """``?`` placeholders to ``%s`` and ``%`` to ``%%``, outside quoted literals and identifiers."""
    out = []
    quote = ""
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Database:
    """One connection to SQLite or PostgreSQL; ``engine`` says which. Open with ``sqlite()`` or ``postgres()``."""

    def __init__(self, engine: str, target: str, connect_timeout_s: float = 10.0) -> None:
        if engine not in ENGINES:
            raise StorageError("unknown database engine %s (known: %s)" % (quote(_cut(engine, 40)), ", ".join(ENGINES)))
        self.engine = engine
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._depth = 0
        self._translated: dict[str, str] = {}
        self._conn: Any = None
        self._connect()

    # ------------------------------------------------------------ opening

    @classmethod
    def sqlite(cls, path: str) -> Database:
        """The SQLite file ``path`` (created if missing), WAL and synchronous=FULL."""
        return cls("sqlite", str(path))

    @classmethod
    def postgres(cls, dsn: str, connect_timeout_s: float = 10.0) -> Database:
        """A PostgreSQL database by libpq connection string (``host=... port=... dbname=... user=...``)."""
        return cls("postgres", dsn, connect_timeout_s)

    def clone(self) -> Database:
        """Another connection to the same database (for another thread)."""
        return Database(self.engine, self.target, self.connect_timeout_s)

    def _connect(self) -> None:
        if self.engine == "sqlite":
            try:
                self._conn = _durable.connect(self.target)
                self._conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as e:
                raise StorageError("cannot open SQLite file %s: %s" % (_cut(self.target), e)) from e
            return
        import psycopg

        try:
            self._conn = psycopg.connect(
                self.target,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout_s)),
                application_name="phaseserver",
            )
        except psycopg.Error as e:
            raise StorageError("cannot connect to PostgreSQL (%s): %s" % (_safe_dsn(self.target), _cut(str(e)))) from e

    def _connection(self) -> Any:
        if self.engine == "postgres" and (self._conn is None or self._conn.closed or self._conn.broken):
            if self._depth:
                raise TransientStorageError("the PostgreSQL connection broke inside a transaction")
            self._connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ statements

    def _sql(self, sql: str) -> str:
        if self.engine == "sqlite":
            return sql
        t = self._translated.get(sql)
        if t is None:
            t = translate(sql)
            if len(self._translated) < 4096:  # statements are the code's own: a small, fixed set
                self._translated[sql] = t
        return t

    def _fail(self, e: BaseException, sql: str) -> StorageError:
        text = "%s: %s [in: %s]" % (self.engine, _cut(str(e), 300), _cut(sql))
        if isinstance(e, sqlite3.IntegrityError) and "UNIQUE" in str(e):
            return ConflictError(text)
        if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
            return TransientStorageError(text)
        if self.engine == "postgres":
            import psycopg

            if isinstance(e, psycopg.errors.UniqueViolation):
                return ConflictError(text)
            state = getattr(getattr(e, "diag", None), "sqlstate", None) or ""
            # Class 40 transaction rollback (deadlock, serialization), 08 connection, 53 resources,
            # 57P operator intervention (shutdown), 55P03 lock not available (PostgreSQL appendix A).
            if (
                isinstance(e, psycopg.OperationalError)
                or state[:2] in ("40", "08", "53")
                or state[:3] == "57P"
                or (state == "55P03")
            ):
                return TransientStorageError(text)
        return StorageError(text)

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.engine == "sqlite":
            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the rows it changed (-1 when the engine does not say)."""
        with self._lock:
            try:
                cur = self._connection().execute(self._sql(sql), params)
                return cur.rowcount
            except self._errors() as e:
                raise self._fail(e, sql) from e

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one statement for each row of parameters; returns the rows changed in total."""
        with self._lock:
            try:
                if self.engine == "sqlite":
                    return self._connection().executemany(sql, rows).rowcount
                with self._connection().cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
                    return cur.rowcount
            except self._errors() as e:
                raise self._fail(e, sql) from e

    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query (a tuple), or None."""
        with self._lock:
            try:
                row = self._connection().execute(self._sql(sql), params).fetchone()
            except self._errors() as e:
                raise self._fail(e, sql) from e
            return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a query, as tuples."""
        with self._lock:
            try:
                return [tuple(r) for r in self._connection().execute(self._sql(sql), params).fetchall()]
            except self._errors() as e:
                raise self._fail(e, sql) from e

    def scalar(self, sql: str, params: Params = (), default: Any = None) -> Any:
        """The first column of the first row, or ``default`` when there is no row (or it is NULL)."""
        row = self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    def executescript(self, sql: str) -> None:
        """Several statements without parameters (migrations). Not inside ``transaction()`` on SQLite."""
        with self._lock:
            try:
                if self.engine == "sqlite":
                    if self._depth:
                        raise StorageError("executescript inside a transaction would commit it (SQLite)")
                    self._connection().executescript(sql)
                else:
                    self._connection().execute(sql)
            except self._errors() as e:
                if self.engine == "sqlite" and self._conn is not None and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise self._fail(e, sql) from e

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Params]) -> int:
        """Append rows to ``table``: PostgreSQL COPY (the fastest bulk path), SQLite executemany.

        No de-duplication: COPY has no ON CONFLICT. Callers that need it copy into a
        staging table and insert from there. Returns the rows written.
        """
        for name in (table, *columns):
            if not name.replace("_", "").isalnum():
                raise StorageError("copy_rows: %s is not a plain identifier" % quote(_cut(name, 40)))
        cols = ", ".join(columns)
        if self.engine == "sqlite":
            marks = ", ".join("?" * len(columns))
            return self.executemany("INSERT INTO %s (%s) VALUES (%s)" % (table, cols, marks), rows)
        sql = "COPY %s (%s) FROM STDIN" % (table, cols)
        with self._lock:
            n = 0
            try:
                with self._connection().cursor() as cur, cur.copy(sql) as copy:
                    for row in rows:
                        copy.write_row(row)
                        n += 1
            except self._errors() as e:
                raise self._fail(e, sql) from e
            return n

    def backup_sqlite(self, path: str) -> None:
        """SQLite only: a consistent copy of the database into the file ``path`` (the online backup API)."""
        if self.engine != "sqlite":
            raise StorageError("backup_sqlite on a %s database" % self.engine)
        with self._lock:
            try:
                target = sqlite3.connect(str(path))
                try:
                    self._connection().backup(target)
                finally:
                    target.close()
            except sqlite3.Error as e:
                raise StorageError("cannot back up %s to %s: %s" % (_cut(self.target), _cut(path), e)) from e

    # ------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """All statements inside commit together; any exception rolls them back (and propagates)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            begin = "BEGIN IMMEDIATE" if self.engine == "sqlite" else "BEGIN"
            self.execute(begin)
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            try:
                self._connection().execute("COMMIT")
            except self._errors() as e:
                self._rollback()
                raise self._fail(e, "COMMIT") from e

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _rollback(self) -> None:
        try:
            if self._conn is not None and not getattr(self._conn, "closed", False):
                self._conn.execute("ROLLBACK")
        except self._errors():
            pass  # nothing was open, or the connection is gone: nothing left to undo

    def __repr__(self) -> str:
        where = self.target if self.engine == "sqlite" else _safe_dsn(self.target)
        return "Database(%s, %s)" % (self.engine, where)


def _safe_dsn(dsn: str) -> str:
    """The connection string without its password, for messages."""
    parts = []
    for part in str(dsn).split():
        key = part.split("=", 1)[0]
        parts.append(key + "=***" if key == "password" else part)
    text = " ".join(parts)
    if "://" in text and "@" in text:  # postgresql://user:secret@host/db
        scheme, rest = text.split("://", 1)
        cred, _, host = rest.rpartition("@")
        text = "%s://%s@%s" % (scheme, cred.split(":", 1)[0] + ":***" if ":" in cred else cred, host)
    return _cut(text)
