"""Storage of the server: ``open_store(config)`` gives the ``Store`` the configuration names.

- ``store.base``: the ``Store`` interface and its row types.
- ``store.db``: ``Database``, the one SQL layer (``?`` placeholders on both engines).
- ``store.migrate``: numbered SQL files, applied and recorded at start-up.
- ``store.sqlite`` (embedded default) and ``store.postgres`` (psycopg 3, daily
  partitions, COPY at ingest): the two engines, one test suite.

The one thing to know: ``open_store`` migrates the schema before it returns,
so every process that opens a store (server, ingest worker, CLI) sees the
current tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phasecore.errors import quote
from phaseserver.clock import Clock
from phaseserver.errors import ConfigError
from phaseserver.store.base import UNASSIGNED, Store
from phaseserver.store.db import Database

if TYPE_CHECKING:
    from phaseserver.config import ServerConfig

__all__ = ("open_store", "open_database", "Store", "Database", "UNASSIGNED")


def open_database(config: ServerConfig) -> Database:
    """A ``Database`` (one connection) for the ``[storage]`` table of ``config``; no migration."""
    st = config.table("storage")
    if st["engine"] == "sqlite":
        return Database.sqlite(str(config.resolve(st["path"])))
    dsn = st["dsn"]
    password = config.secret("storage", "password_file")
    if password:
        dsn = "%s password='%s'" % (dsn, password.replace("\\", "\\\\").replace("'", "\\'"))
    return Database.postgres(dsn)


def open_store(config: ServerConfig, clock: Clock | None = None, migrate: bool = True) -> Store:
    """The store of ``config`` (``[storage] engine``), migrated unless ``migrate=False``."""
    clock = clock or config.clock()
    db = open_database(config)
    st = config.table("storage")
    store: Store
    if db.engine == "sqlite":
        from phaseserver.store.sqlite import SQLiteStore

        store = SQLiteStore(db, clock, st)
    elif db.engine == "postgres":
        from phaseserver.store.postgres import PostgresStore

        store = PostgresStore(db, clock, st)
    else:  # pragma: no cover - config checks the engine
        raise ConfigError("unknown storage engine %s" % quote(db.engine))
    if migrate:
        store.migrate()
    return store
