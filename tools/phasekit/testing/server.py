"""The real server in a thread, for tests and benchmarks that need it beside them in one process.

``ServerThread(config)`` runs ``phaseserver.app.build(config)`` on its own
event loop in a daemon thread, exactly as ``phaseserver run`` runs it, and
returns once its ingest source is subscribed (at once when it has none, or
with ``wait_source=False``);
``close()`` stops it as SIGTERM would. ``mqtt_config(broker, db)`` writes
the server.toml for a ``phasekit.testing.broker.LocalBroker`` (mutual TLS)
and a SQLite file, and loads it. A process of its own is
``phasekit.testing.gateway.start_server``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ("ServerThread", "mqtt_config")


def mqtt_config(broker: Any, db: str | Path, client_id: str = "test-server", **ingest: Any) -> Any:
    """A checked ServerConfig: MQTT ingest from ``broker`` into the SQLite file ``db``, no HTTP."""
    from phaseserver import config

    db = Path(db)
    keys = {
        "host": broker.host,
        "port": broker.port,
        "ca": str(broker.tls.ca),
        "cert": str(broker.tls.client_cert),
        "key": str(broker.tls.client_key),
        "client_id": client_id,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    keys.update(ingest)
    return config.write(
        db.with_suffix(".toml"),
        {
            "server": {"http_port": 0},
            "storage": {"path": str(db), "retention_raw_days": 3650, "retention_hourly_days": 3650},
            "ingest": keys,
        },
    )


class ServerThread:
    """``phaseserver.app.build(config)`` running in a thread with its own event loop."""

    def __init__(self, config: Any, clock: Any = None, timeout_s: float = 30.0, wait_source: bool = True) -> None:
        from phaseserver import app

        self._app = app
        self.config = config
        self.clock = clock
        self.wait_source = wait_source
        self.server: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="phaseserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the server did not start within %.0f s" % timeout_s)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            try:
                self.loop = asyncio.get_running_loop()
                self.stop = asyncio.Event()
                self.server = self._app.build(self.config, self.clock)
                task = asyncio.create_task(self.server.run(self.stop))
                src = self.server.source if self.wait_source else None
                deadline = time.monotonic() + 20
                while src is not None and not src.subscribed.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            except BaseException as e:  # handed to the caller's thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await task

        asyncio.run(main())

    @property
    def stats(self) -> dict[str, Any]:
        """The server's metrics as a dict (records, duplicates, dead letters, ...)."""
        return dict(self.server.metrics.snapshot())

    def close(self) -> None:
        if self.server is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
