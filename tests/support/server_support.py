"""Helpers of the server's tests (tests/server): configs for either engine, a server in a thread, waiting."""

import asyncio
import itertools
import threading
import time

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


class ServerThread:
    """``phaseserver.app.build(config)`` running in a thread with its own event loop."""

    def __init__(self, config, clock=None):
        from phaseserver import app

        self.app = app
        self.config = config
        self.clock = clock
        self.server = None
        self._error = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        if self._error:
            raise self._error

    def _main(self):
        async def main():
            try:
                self.loop = asyncio.get_running_loop()
                self.stop = asyncio.Event()
                self.server = self.app.build(self.config, self.clock)
                task = asyncio.create_task(self.server.run(self.stop))
                src = self.server.source
                deadline = time.monotonic() + 20
                while src is not None and not src.subscribed.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            except BaseException as e:  # reported to the test's thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await task

        asyncio.run(main())

    def close(self):
        if self.server is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until(predicate, timeout):
    """True as soon as ``predicate()`` is; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
