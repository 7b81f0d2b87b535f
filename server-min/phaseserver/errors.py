"""The typed errors of phaseserver, one base class for the server.

Every error phaseserver raises on purpose is a ``ServerError``, so an
operator's wrapper (or a test) can tell the server's own refusals from a bug.
Bad uplink input (a batch that does not decode, a topic outside the tree) is
not an error of the server: ``phaseuplink.errors.UplinkError`` says what was
wrong with it, and the ingest counts and logs it instead of failing.

- ``ConfigError``: the server's own settings (broker, TLS files); also a
  ValueError, as the settings errors always were.
- ``StorageError``: the database cannot be opened or written.
- ``AuthError``: a credential, role or account that the server refuses; the
  API answers it with 401 or 403 and never says more than "refused".
- ``AuditError``: the audit log cannot be written, or its chain does not verify.
- ``CommandError``: an operator command the server cannot seal, send or track.
"""

__all__ = ("ServerError", "ConfigError", "StorageError", "AuthError", "AuditError", "CommandError")


class ServerError(Exception):
    """Base class of every error phaseserver raises on purpose."""


class ConfigError(ServerError, ValueError):
    """A setting of the server is missing or wrong; the message names it."""


class StorageError(ServerError):
    """The database cannot be opened or written."""


class AuthError(ServerError):
    """A credential, account or role the server refuses; the message says why (for logs, not for the client)."""


class AuditError(ServerError):
    """The audit log cannot be written or read, or a key or head file is unusable."""


class CommandError(ServerError, ValueError):
    """An operator command that cannot be sealed, sent or tracked; the message names what."""
