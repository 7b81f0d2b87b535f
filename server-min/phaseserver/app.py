"""Assemble the server from its configuration and run it until SIGTERM or SIGINT.

``build(config) -> Server`` opens (and migrates) the store, builds the ingest
core and its source (MQTT or AMQP, ``[ingest] source``), the metrics, the
maintenance jobs (roll-ups, retention, partitions) and, when the API package
is installed, the ASGI app (``phaseserver.api.app.create_app(server)``).
``await server.run(stop)`` runs all of it until ``stop`` (an
``asyncio.Event``) is set; ``run_forever(config)`` is the process's main,
setting ``stop`` on SIGTERM/SIGINT.

The one thing to know: blocking work (SQL, the broker clients) runs in
threads, each with its own database connection (``Database.clone``); the
event loop only serves HTTP and schedules. Other areas attach themselves
through ``EXTENSIONS``: a module named there has
``attach(server) -> object | None``; the object it returns may have
``async run(stop)`` (run alongside the rest) and ``close()``. The alarm
engine sees every committed batch through ``server.ingest.listeners``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from phasecore.errors import quote
from phaseserver.clock import Clock
from phaseserver.config import ServerConfig
from phaseserver.store import Store, open_store

__all__ = ("Server", "build", "run_forever", "setup_logging", "EXTENSIONS")

log = logging.getLogger(__name__)

# Modules of other areas that attach to a built server (see the module docstring), e.g.
# "phaseserver.alarms.engine". One per line.
EXTENSIONS: tuple[str, ...] = (
    "phaseserver.alarms",
    "phaseserver.web",
)


class Server:
    """Everything one server process runs; built by ``build``, run by ``run(stop)``."""

    def __init__(self, config: ServerConfig, clock: Clock, store: Store) -> None:
        from phaseserver.ingest.core import IngestCore, Limits
        from phaseserver.metrics import Metrics

        self.config = config
        self.clock = clock
        # The store of the event loop's side (API queries run in a thread pool on it; its lock
        # serialises them). Ingest and maintenance get their own connections.
        self.store = store
        self.metrics = Metrics(clock)
        ing = config.table("ingest")
        self.ingest = IngestCore(
            self._own_store(), clock, Limits.from_config(ing, config.table("storage")), self.metrics
        )
        self.source: Any = None  # the message source (phaseserver.ingest.mqtt / amqp), or None
        self.asgi_app: Any = None  # the HTTP app (server-api), or None
        self.extensions: list[Any] = []
        self.started_s: float | None = None
        self.ready = asyncio.Event() if _has_loop() else None

    def _own_store(self) -> Store:
        from phaseserver.store import open_store as _open

        return _open(self.config, self.clock, migrate=False)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Run ingest, maintenance, HTTP and extensions until ``stop`` is set; then close everything."""
        self.started_s = time.time()
        if self.ready is None:
            self.ready = asyncio.Event()
        tasks = [asyncio.create_task(self._maintenance(stop), name="maintenance")]
        if self.source is not None:
            tasks.append(asyncio.create_task(self.source.run(stop), name="ingest"))
        if self.asgi_app is not None and self.config.table("server")["http_port"]:
            tasks.append(asyncio.create_task(self._serve_http(stop), name="http"))
        for ext in self.extensions:
            if hasattr(ext, "run"):
                tasks.append(asyncio.create_task(ext.run(stop), name=type(ext).__name__))
        self.ready.set()
        log.info("server %s running: %s", self.config.table("server")["name"], ", ".join(t.get_name() for t in tasks))
        try:
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopping and t.exception() is not None:
                    log.error("%s stopped: %s; stopping the server", t.get_name(), quote(t.exception()))
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopping.cancel()
        finally:
            self.close()

    async def _maintenance(self, stop: asyncio.Event) -> None:
        """Roll-ups every rollup_interval_s, retention (and partitions) every retention_interval_s."""
        st = self.config.table("storage")
        store = self._own_store()
        try:
            next_rollup = 0.0
            next_retention = 0.0
            while not stop.is_set():
                now = time.monotonic()
                try:
                    if now >= next_retention:
                        next_retention = now + float(st["retention_interval_s"])
                        dropped = await asyncio.to_thread(store.retention, self.clock.now())
                        if any(dropped.values()):
                            log.info("retention: %s", dropped)
                    if now >= next_rollup:
                        next_rollup = now + float(st["rollup_interval_s"])
                        n = await asyncio.to_thread(store.rollup)
                        self.metrics.rollups(n)
                except Exception as e:  # one failed round must not stop the server; the next one retries
                    log.error("maintenance: %s", str(e)[:300])
                    self.metrics.error("maintenance")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.05, min(next_rollup, next_retention) - now))
                except asyncio.TimeoutError:
                    pass
        finally:
            store.close()

    async def _serve_http(self, stop: asyncio.Event) -> None:
        import uvicorn

        class _Uvicorn(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # SIGTERM and SIGINT belong to run_forever, which sets ``stop``

        s = self.config.table("server")
        server = _Uvicorn(
            uvicorn.Config(self.asgi_app, host=s["http_host"], port=s["http_port"], log_config=None, lifespan="on")
        )
        serving = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        await serving

    def close(self) -> None:
        for ext in self.extensions:
            if hasattr(ext, "close"):
                try:
                    ext.close()
                except Exception as e:  # closing one part must not keep the others open
                    log.warning("closing %s: %s", type(ext).__name__, e)
        self.ingest.close()
        self.store.close()


def _store_problem(store: Store) -> str | None:
    """For ``/readyz``: None when the store answers a query, else why not."""
    try:
        store.db.fetchone("SELECT 1")
    except Exception as e:  # any failure means: not ready
        return "store: %s" % str(e)[:200]
    return None


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def build(config: ServerConfig, clock: Clock | None = None) -> Server:
    """Everything ``config`` describes, built and connected (store migrated), not yet running."""
    clock = clock or config.clock()
    store = open_store(config, clock)
    server = Server(config, clock, store)
    source = config.table("ingest")["source"]
    if source == "mqtt":
        from phaseserver.ingest.mqtt import MqttSource

        server.source = MqttSource(config, server.ingest)
    elif source == "amqp":
        from phaseserver.ingest.amqp import AmqpSource

        server.source = AmqpSource(config, server.ingest)
    server.metrics.ready_checks.append(lambda: _store_problem(server.store))
    if server.source is not None:
        server.metrics.ready_checks.append(server.source.ready)
    from phaseserver.api.app import create_app

    server.asgi_app = create_app(server)
    for name in EXTENSIONS:
        ext = importlib.import_module(name).attach(server)
        if ext is not None:
            server.extensions.append(ext)
    return server


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "t": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)[-2000:]
        return json.dumps(out, separators=(",", ":"))


def setup_logging(config: ServerConfig) -> None:
    """Log to stderr as ``[server] log_format`` says (journald adds its own time stamps)."""
    s = config.table("server")
    handler = logging.StreamHandler(sys.stderr)
    if s["log_format"] == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(s["log_level"].upper())
    # pika logs every lost connection with a stack trace, and its connection chatter at INFO; the
    # AMQP source logs each loss itself, once, in one line.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def run_forever(config: ServerConfig) -> int:
    """The process: build, run until SIGTERM or SIGINT, close. Returns the exit status."""
    setup_logging(config)

    async def main() -> None:
        server = build(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop)

    asyncio.run(main())
    return 0
