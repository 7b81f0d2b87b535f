"""Alarms: types from the data, a lifecycle, propagation, and the notifications they cause.

- ``settings``: the ``[alarms]`` table; ``rules``: the alarm types (sans-IO);
  ``engine``: lifecycle, hysteresis, propagation, escalation; ``store``: the
  tables (migrations 0200); ``routes``: the API's alarm routes.
- ``attach(server)``: what ``phaseserver.app.build`` calls (``EXTENSIONS``):
  an engine on its own database connection, listening to the ingest core's
  committed batches, and the notification dispatcher (``phaseserver.notify``);
  ``server.alarms`` is the engine (the API's routes use it).

The one thing to know: evaluation is driven both by ingest (every committed
batch, on the ingest thread, in microseconds when nothing changes) and by
time (``AlarmEngine.run``: a sweep every ``sweep_s`` and at the moment the
next silence is due, on the server's injected clock).
"""

import asyncio
import logging
from typing import Any

__all__ = ("attach", "AlarmService")

log = logging.getLogger(__name__)


class AlarmService:
    """The engine and the dispatcher of one server process: ``run(stop)`` runs both, ``close()`` ends them."""

    def __init__(self, engine: Any, dispatcher: Any, databases: list[Any]) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self._databases = databases

    async def run(self, stop: asyncio.Event) -> None:
        jobs = [self.engine.run(stop)]
        if self.dispatcher is not None:
            jobs.append(self.dispatcher.run(stop))
        await asyncio.gather(*jobs)

    def close(self) -> None:
        for db in self._databases:
            db.close()

    def render(self) -> str:
        """Prometheus text (0.0.4) of the alarms and notifications, for ``/metrics`` to append."""
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append("# HELP phaseserver_%s %s" % (name, help_))
            out.append("# TYPE phaseserver_%s %s" % (name, kind))
            out.extend("phaseserver_%s%s %d" % (name, labels, v) for labels, v in samples)

        rows = self.engine.db.fetchall(
            "SELECT type, severity, COUNT(*) FROM alarm WHERE cleared_s IS NULL GROUP BY type, severity"
        )
        metric(
            "alarms_active",
            "gauge",
            "Active alarms, by type and severity.",
            [('{type="%s",severity="%d"}' % (t, sev), n) for t, sev, n in sorted(rows)] or [('{type="none"}', 0)],
        )
        metric(
            "alarm_transitions_total",
            "counter",
            "Alarm transitions made by this process, by kind.",
            [('{what="%s"}' % k, v) for k, v in sorted(self.engine.stats.items())],
        )
        if self.dispatcher is not None:
            metric(
                "notifications_total",
                "counter",
                "Notifications by outcome (dropped: the outbox was full).",
                [('{outcome="%s"}' % k, v) for k, v in sorted(self.dispatcher.stats.items())],
            )
            metric(
                "notifications_pending",
                "gauge",
                "Notifications waiting in the outbox.",
                [("", self.dispatcher.pending())],
            )
        return "\n".join(out) + "\n"


def attach(server: Any) -> AlarmService | None:
    """Build the engine and dispatcher from ``server.config`` and hook them to ``server.ingest``; None if disabled."""
    from phaseserver.alarms.engine import AlarmEngine
    from phaseserver.alarms.settings import AlarmSettings
    from phaseserver.notify.dispatch import Dispatcher
    from phaseserver.notify.settings import NotifySettings
    from phaseserver.store import open_database

    cfg = server.config
    settings = AlarmSettings.from_table(cfg.table("alarms"))
    if not settings.enabled:
        log.info("alarms: disabled ([alarms] enabled = false)")
        return None
    notify = NotifySettings.from_table(
        cfg.table("notify"),
        secret=lambda key: cfg.secret("notify", key),
        resolve=lambda p: str(cfg.resolve(p)),
        tenant_secret=cfg.tenant_secret,
    )
    db = open_database(cfg)
    databases = [db]
    dispatcher = None
    if notify.enabled and notify.has_channel:
        ddb = db.clone()
        databases.append(ddb)
        dispatcher = Dispatcher(ddb, notify, wall=server.clock.wall)
    engine = AlarmEngine(db, settings, server.clock, dispatcher)
    engine.start()
    server.ingest.listeners.append(engine.on_committed)
    server.alarms = engine
    return AlarmService(engine, dispatcher, databases)
