"""Helpers of the server's tests (tests/server): configs for either engine, waiting; ``ServerThread`` re-exported."""

import asyncio
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


def drain_dispatcher(dispatcher, until, describe, timeout_s=10.0):
    """Run a notification Dispatcher's loop until ``until()`` holds; fail with ``describe()`` after ``timeout_s``."""

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop, poll_s=0.02))
        t_end = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < t_end, "dispatcher did not get there: %s" % (describe(),)
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(go())
