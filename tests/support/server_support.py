"""Helpers of the server's tests (tests/server): configs for either engine, waiting; ``ServerThread`` re-exported."""

import itertools
import time

from phasekit.testing.server import ServerThread  # noqa: F401  (the tests import it from here)
from phaseserver import config as server_config_mod

ENGINES = ("sqlite", "postgres")
_names = itertools.count()


def make_config(tmp_path, engine, pg=None, **tables):
    storage = {"retention_raw_days": 3650, "retention_hourly_days": 3650}
    if engine == "sqlite":
        storage.update(engine="sqlite", path=str(tmp_path / ("server-%d.db" % next(_names))))
    else:
        name = "t%d_%d" % (int(time.time() * 1000) % 10**9, next(_names))
        storage.update(engine="postgres", dsn=pg.create_database(name))
    storage.update(tables.pop("storage", {}))
    body = {"server": {"http_port": 0}, "storage": storage, "ingest": {"source": "none"}}
    for name, keys in tables.items():
        body.setdefault(name, {}).update(keys)
    return server_config_mod.write(tmp_path / ("server-%d.toml" % next(_names)), body)


def wait_until(predicate, timeout):
    """True as soon as ``predicate()`` is; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
