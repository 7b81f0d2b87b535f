"""Fixtures of the server's tests: both storage engines, a real PostgreSQL per session, servers in threads.

- ``pg``: one PostgreSQL 15 for the whole session (``phasekit.testing.postgres``),
  each test gets its own database in it.
- ``store`` / ``engine``: parametrized over "sqlite" and "postgres": every test
  that takes ``store`` runs on both engines.
- ``server_config(tmp_path, engine, **tables)``: a checked ``ServerConfig`` for
  that engine (tests add their own tables).
- Helpers (``ServerThread``, ``make_config``, ``wait_until``) are in tests/support/server_support.py.
"""

import pytest

from phasekit.testing.postgres import LocalPostgres
from phaseserver.store import open_store
from server_support import ENGINES, make_config


@pytest.fixture(scope="session")
def pg():
    # fsync off: these tests check behaviour, not durability; the benchmarks run with fsync on.
    with LocalPostgres(fsync=False) as server:
        yield server


@pytest.fixture
def server_config(tmp_path, request):
    """``server_config(engine, **tables)`` -> ServerConfig (PostgreSQL databases made on demand)."""

    def make(engine="sqlite", **tables):
        return make_config(tmp_path, engine, request.getfixturevalue("pg") if engine == "postgres" else None, **tables)

    return make


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def store(engine, server_config):
    s = open_store(server_config(engine))
    yield s
    s.close()
