"""phaseserver: the minimal aggregation server of phasekit.

For now: MQTT ingest of the transformer Pis' uplink (``phaseserver.ingest``)
into SQLite with deduplication on each record's identity
(``phaseserver.storage``). ``python -m phaseserver --help`` runs it.
The formats, topics and TLS set-up it shares with the transformer Pi come
from ``phaseuplink``; the server never imports the gateway (``phasegate``).
Errors: ``phaseserver.errors`` (``ServerError`` and its kinds).
"""

__all__ = ("errors", "ingest", "storage")
