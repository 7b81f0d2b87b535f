"""phaseserver: the operations server of phasekit (server-min).

Ingest of the transformer Pis' uplink (``phaseserver.ingest``: MQTT 5 shared
subscriptions or a RabbitMQ quorum queue, each record stored once), storage
(``phaseserver.store``: SQLite embedded, PostgreSQL for scale), and, built on
them, the API, alarms, notifications and audit log. ``python -m phaseserver
run --config server.toml`` (or ``phasekit server run``) runs it; docs/server.md
describes every setting. The formats, topics and TLS set-up it shares with the
transformer Pi come from ``phaseuplink``; the server never imports the gateway
(``phasegate``). Errors: ``phaseserver.errors`` (``ServerError`` and its kinds).
"""

__all__ = ("errors", "config", "clock", "app", "cli", "store", "ingest", "metrics", "backup")
