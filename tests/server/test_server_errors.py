"""The server's error hierarchy: ``ServerError`` and its kinds, old ``except ValueError`` sites still working."""

import importlib
import inspect
import pkgutil

import pytest

import phaseserver
from phaseserver.errors import ConfigError, ServerError, StorageError
from phaseserver.ingest import IngestConfig
from phaseserver.storage import Storage


def test_ingest_settings_errors_are_typed_and_still_value_errors():
    with pytest.raises(ConfigError, match="ingest: TLS needs a CA file"):
        IngestConfig("broker")
    with pytest.raises(ConfigError, match="needs both 'cert' and 'key'"):
        IngestConfig("broker", ca="ca.crt", cert="c.crt")
    assert issubclass(ConfigError, ServerError) and issubclass(ConfigError, ValueError)
    IngestConfig("broker", tls=False)  # a lab network: no CA needed


def test_a_database_that_cannot_be_opened_is_a_storage_error(tmp_path):
    bad = tmp_path / "server.db"
    bad.write_bytes(b"not a database, " * 512)
    with pytest.raises(StorageError, match="cannot open"):
        Storage(bad)
    assert issubclass(StorageError, ServerError)


def test_every_exception_class_the_server_defines_is_a_server_error():
    found = {}
    for info in pkgutil.walk_packages(phaseserver.__path__, "phaseserver."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[mod.__name__ + "." + name] = obj
    assert set(found) >= {"phaseserver.errors.ServerError", "phaseserver.errors.StorageError"}, sorted(found)
    assert [n for n, cls in found.items() if not issubclass(cls, ServerError)] == []
