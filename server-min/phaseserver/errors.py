"""The typed errors of phaseserver, one base class for the server.

Every error phaseserver raises on purpose is a ``ServerError``, so an
operator's wrapper (or a test) can tell the server's own refusals from a bug.
Bad uplink input (a batch that does not decode, a topic outside the tree) is
not an error of the server: ``phaseuplink.errors.UplinkError`` says what was
wrong with it, and the ingest counts, logs and dead-letters it instead of
failing (``phaseserver.ingest.core``).

- ``ConfigError``: the server's own settings (the TOML file, broker, TLS
  files); also a ValueError, as the settings errors always were.
- ``StorageError``: the database cannot be opened, migrated, read or written.
  ``ConflictError`` is its kind for a unique key that already holds a row
  (a user name taken, a site registered twice): the caller may tell the user.
  ``TransientStorageError`` is its kind for a failure that says nothing about
  the data (a deadlock, a serialization failure, a lost connection, a busy
  SQLite file): the same work done again may succeed, so ingest retries it
  and never dead-letters a message for it.
- ``IngestError``: a message source (MQTT, AMQP) cannot be set up.
- ``AuthError``: a credential, role or account that the server refuses; the
  API answers it with 401 or 403 and never says more than "refused".
- ``AuditError``: the audit log cannot be written, or its chain does not verify.
- ``CommandError``: an operator command the server cannot seal, send or track.
"""

__all__ = (
    "ServerError",
    "ConfigError",
    "StorageError",
    "ConflictError",
    "TransientStorageError",
    "IngestError",
    "AuthError",
    "AuditError",
    "CommandError",
)


class ServerError(Exception):
    """Base class of every error phaseserver raises on purpose."""


class ConfigError(ServerError, ValueError):
    """A setting of the server is missing or wrong; the message names it."""


class StorageError(ServerError):
    """The database cannot be opened, migrated, read or written."""


class ConflictError(StorageError):
    """A row with the same unique key exists already."""


class TransientStorageError(StorageError):
    """The database failed for a reason that is not the data's: retry the same work later."""


class IngestError(ServerError):
    """A message source cannot be set up (its settings are checked earlier, as ConfigError)."""


class AuthError(ServerError):
    """A credential, account or role the server refuses; the message says why (for logs, not for the client)."""


class AuditError(ServerError):
    """The audit log cannot be written or read, or a key or head file is unusable."""


class CommandError(ServerError, ValueError):
    """An operator command that cannot be sealed, sent or tracked; the message names what."""
