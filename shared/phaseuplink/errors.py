"""The typed errors of phaseuplink.

Every error the uplink contract raises on bad input is an ``UplinkError``,
itself a ``ValueError`` (as ``RecordError`` always was), so callers that catch
``ValueError`` keep working and a receiver of hostile bytes can catch one class.
Each message names what was wrong and where.
"""

__all__ = ("UplinkError", "RecordError", "TopicError", "TLSSettingsError")


class UplinkError(ValueError):
    """Base class of every error phaseuplink raises on bad input."""


class RecordError(UplinkError):
    """A record or batch is malformed or breaks the uplink format; the message says what and where."""


class TopicError(UplinkError):
    """A topic is not in the phasekit topic tree, or an id cannot be a topic level."""


class TLSSettingsError(UplinkError):
    """TLS settings that cannot make a verified connection (no CA, a certificate without its key)."""
