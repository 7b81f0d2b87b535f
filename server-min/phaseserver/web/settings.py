"""The ``[web]`` table of server.toml: the operator page and its live-update channel.

``SCHEMA`` is the table's phaseconf schema (``phaseserver.config`` merges it
into the file's schema); ``WebSettings.from_table(table)`` turns the checked
table into what ``phaseserver.web.live`` and ``phaseserver.api.routes_web``
read. The one thing to know: every live stream costs the server one open
connection and a few hundred bytes, never a query of its own: one poll per
process (every ``live_poll_s`` while anyone listens) finds what changed for
every listener at once, so the limits below bound connections, not work.
"""

from typing import Any, NamedTuple

from phaseconf import integer, number

__all__ = ("SCHEMA", "WebSettings")

# key -> (type, default, check); phaseconf fills the defaults and checks types and ranges.
SCHEMA: dict[str, tuple[Any, Any, Any]] = {
    # Serve the page at / (the API is served either way).
    "enabled": (bool, True, None),
    # How often the live channel looks in the database for changes made by other processes
    # (ingest workers, a second API process). This process's own ingest wakes it at once.
    "live_poll_s": ((int, float), 1.0, number(0.1, 60, " s")),
    # Open live streams: per process, and per browser session (a person with several tabs).
    "live_max_streams": (int, 200, integer(1, 100000)),
    "live_streams_per_session": (int, 4, integer(1, 100)),
    # A stream ends after this long (the page reconnects at once and reloads what it shows), so
    # a stream never outlives a change of the rules it was opened under by much.
    "live_max_s": ((int, float), 3600.0, number(10, 86400, " s")),
    # The session behind a stream is checked again this often: logout, revocation, a role change
    # or expiry end the stream.
    "live_recheck_s": ((int, float), 30.0, number(1, 3600, " s")),
    # A comment line is sent when nothing else was for this long (proxies close idle connections,
    # and a write is how a vanished client is noticed).
    "live_heartbeat_s": ((int, float), 15.0, number(1, 600, " s")),
}


class WebSettings(NamedTuple):
    enabled: bool = True
    live_poll_s: float = 1.0
    live_max_streams: int = 200
    live_streams_per_session: int = 4
    live_max_s: float = 3600.0
    live_recheck_s: float = 30.0
    live_heartbeat_s: float = 15.0

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> "WebSettings":
        """The settings of a checked ``[web]`` table (missing keys take their defaults)."""
        keys = {k: table[k] for k in cls._fields if k in table}
        for k in keys:
            if k.endswith("_s"):
                keys[k] = float(keys[k])
        return cls(**keys)
