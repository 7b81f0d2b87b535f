"""The typed errors of phaseserver, one base class for the server.

Every error phaseserver raises on purpose is a ``ServerError``, so an
operator's wrapper (or a test) can tell the server's own refusals from a bug.
Bad uplink input (a batch that does not decode, a topic outside the tree) is
not an error of the server: ``phaseuplink.errors.UplinkError`` says what was
wrong with it, and the ingest counts and logs it instead of failing.

- ``ConfigError``: the server's own settings (broker, TLS files); also a
  ValueError, as the settings errors always were.
- ``StorageError``: the database cannot be opened or written.
"""

__all__ = ("ServerError", "ConfigError", "StorageError")


class ServerError(Exception):
    """Base class of every error phaseserver raises on purpose."""


class ConfigError(ServerError, ValueError):
    """A setting of the server is missing or wrong; the message names it."""


class StorageError(ServerError):
    """The database cannot be opened or written."""
