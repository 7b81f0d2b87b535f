"""The typed errors of phasecore.

Every error the core raises on bad input is a subclass of ``PhasecoreError``,
itself a ``ValueError``, so a caller that must never crash on hostile bytes can
catch one class. Each names what was wrong and where.
"""


class PhasecoreError(ValueError):
    """Base class of every error phasecore raises on bad input."""


class CBORError(PhasecoreError):
    """Base class of CBOR codec errors."""


class CBORDecodeError(CBORError):
    """Bytes are not well-formed CBOR, or exceed a decoder limit."""


class CBOREncodeError(CBORError):
    """An object cannot be encoded (unsupported type, out-of-range int)."""


class FrameError(PhasecoreError):
    """A link frame is malformed (bad length, bad CRC, oversize)."""


class CryptoError(PhasecoreError):
    """Bad key, nonce or parameter length given to a cipher."""


class SealError(PhasecoreError):
    """Base class of errors from opening a sealed message."""


class MalformedError(SealError):
    """The sealed envelope cannot be parsed."""


class UnknownKeyError(SealError):
    """The key id named in the envelope has no key at this recipient."""


class AuthenticationError(SealError):
    """The authentication tag does not verify: forged or corrupted."""


class ReplayError(SealError):
    """The sequence number was already seen or is older than the window."""


class SchemaError(PhasecoreError):
    """A decoded message breaks the schema (type, range, unknown kind)."""


class SequenceExhaustedError(PhasecoreError):
    """A sender ran out of sequence numbers for its key: rekey required."""


class COSEError(MalformedError):
    """A COSE structure is malformed or uses a parameter phasecore.cose does not support."""


class SignatureError(PhasecoreError):
    """A signature does not verify, or a key or signature is malformed.

    ``reason`` names the check that failed, for callers and logs that must
    tell a corrupted download from a forgery: ``"type"``, ``"length"``,
    ``"s-range"`` (S not below the group order), ``"point"`` (an encoding that
    is not a canonical curve point), ``"small-order"``, ``"mismatch"`` (the
    verification equation does not hold).
    """

    def __init__(self, message, reason="mismatch"):
        super().__init__(message)
        self.reason = reason


class OtaRefused(PhasecoreError):
    """A firmware bundle (or a step of its update) is refused; ``reason`` is the ``phasecore.codes.R_OTA_*`` code.

    The same code goes into the node's ack and OTA status message, so the Pi
    and the operator see why (``phasecore.codes.OTA_REASON_NAMES``).
    """

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
