"""phaseserver: the minimal aggregation server of phasekit.

For now: MQTT ingest of the transformer Pis' uplink (``phaseserver.ingest``)
into SQLite with deduplication on each record's identity
(``phaseserver.storage``). ``python -m phaseserver --help`` runs it.
"""

__all__ = ("ingest", "storage")
