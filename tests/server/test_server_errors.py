"""The server's error hierarchy: ``ServerError`` and its kinds, old ``except ValueError`` sites still working."""

import importlib
import inspect
import pkgutil

import pytest

import phaseserver
from phaseserver import config
from phaseserver.errors import ConfigError, ConflictError, ServerError, StorageError, TransientStorageError
from phaseserver.store.db import Database


def test_settings_errors_are_typed_and_still_value_errors(tmp_path):
    p = tmp_path / "server.toml"
    p.write_text("[ingest]\ntls = true\n")
    with pytest.raises(ConfigError, match="tls = true needs 'ca'"):
        config.load(p)
    p.write_text("[ingest]\nca = 'ca.crt'\ncert = 'c.crt'\n")
    with pytest.raises(ConfigError, match="needs both 'cert' and 'key'"):
        config.load(p)
    assert issubclass(ConfigError, ServerError) and issubclass(ConfigError, ValueError)
    p.write_text("[ingest]\ntls = false\n")
    config.load(p)  # a lab network: no CA needed


def test_a_database_that_cannot_be_opened_is_a_storage_error(tmp_path):
    bad = tmp_path / "server.db"
    bad.write_bytes(b"not a database, " * 512)
    with pytest.raises(StorageError, match="cannot open SQLite file"):
        Database.sqlite(str(bad))
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL"):
        Database.postgres("host=127.0.0.1 port=1 dbname=x password=s3cret connect_timeout=1")
    try:
        Database.postgres("host=127.0.0.1 port=1 dbname=x password=s3cret connect_timeout=1")
    except StorageError as e:
        assert "s3cret" not in str(e)  # the password is never in a message
    assert issubclass(StorageError, ServerError)
    assert issubclass(ConflictError, StorageError) and issubclass(TransientStorageError, StorageError)


def test_sql_errors_are_typed_and_name_the_statement(tmp_path):
    db = Database.sqlite(str(tmp_path / "x.db"))
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ConflictError, match="INSERT INTO t"):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(StorageError, match="no such table"):
        db.fetchall("SELECT * FROM nowhere")
    with pytest.raises(StorageError, match="not a plain identifier"):
        db.copy_rows("t; DROP TABLE t", ("k",), [(2,)])
    db.close()


def test_every_exception_class_the_server_defines_is_a_server_error():
    found = {}
    for info in pkgutil.walk_packages(phaseserver.__path__, "phaseserver."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[mod.__name__ + "." + name] = obj
    assert set(found) >= {"phaseserver.errors.ServerError", "phaseserver.errors.StorageError"}, sorted(found)
    assert [n for n, cls in found.items() if not issubclass(cls, ServerError)] == []
