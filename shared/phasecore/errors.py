"""The typed errors of phasecore.

Every error the core raises on bad input is a subclass of ``PhasecoreError``,
itself a ``ValueError``, so a caller that must never crash on hostile bytes can
catch one class. Each names what was wrong and where.

``quote(value, limit=QUOTE_LIMIT)`` is how an error message shows a value it
was given: at most about ``limit`` characters, whatever the value (a string
of a megabyte, an integer of ten thousand digits, which CPython refuses to
print, a structure nested to the interpreter's limit, an object whose
``repr`` raises), and it never raises itself. Every message that quotes
input goes through it, so a hostile input cannot make an error message
large, slow or a crash of its own.
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


# What an error message quotes of a value, at most (characters, plus a short "..." marker).
QUOTE_LIMIT = 60
# Integers beyond this many bits are described, not printed: CPython refuses to turn an int of
# more than 4300 digits into a string (ValueError), and converting a long one costs quadratic time.
_INT_BITS = 200
_BIG = 1 << _INT_BITS
_DEPTH = 3


def quote(value, limit=QUOTE_LIMIT):
    """A short printable form of ``value`` for an error message; never longer than ``limit`` + 3, never raises."""
    try:
        text = _quote(value, limit, _DEPTH)
    except Exception:  # a hostile __repr__, MemoryError: say what it was, nothing more
        try:
            text = "<%s>" % type(value).__name__
        except Exception:
            text = "<?>"
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def _quote(v, budget, depth):
    if budget < 0:
        budget = 0
    t = type(v)
    if v is None or t is bool or t is float:
        return repr(v)
    if t is int:
        if -_BIG < v < _BIG:
            return "%d" % v
        return "<%sint of more than %d bits>" % ("negative " if v < 0 else "", _INT_BITS)
    if t is str or t is bytes or t is bytearray:
        if len(v) <= budget:
            return repr(v)
        return "%s...(%d %s)" % (repr(v[:budget]), len(v), "characters" if t is str else "bytes")
    if t is list or t is tuple or t is dict:
        if depth <= 0:
            return "[...]" if t is list else "(...)" if t is tuple else "{...}"
        parts = []
        used = 2
        items = v.items() if t is dict else v
        n = 0
        for item in items:
            if used > budget:
                parts.append("...")
                break
            if t is dict:
                k = _quote(item[0], budget - used, depth - 1)
                s = k + ": " + _quote(item[1], budget - used - len(k), depth - 1)
            else:
                s = _quote(item, budget - used, depth - 1)
            parts.append(s)
            used += len(s) + 2
            n += 1
        inner = ", ".join(parts)
        if t is list:
            return "[" + inner + "]"
        if t is dict:
            return "{" + inner + "}"
        return "(" + inner + ("," if n == 1 and len(parts) == 1 else "") + ")"
    # Anything else (Tag, Simple, memoryview, subclasses): its repr, cut; a repr that raises is caught above.
    s = repr(v)
    return s if len(s) <= budget else s[:budget] + "..."
