"""HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869), on plain hashlib.sha256.

MicroPython has ``hashlib.sha256`` but no ``hmac`` module, and its hash
objects give ``digest()`` once only and cannot be copied, so HMAC is built
here from two fresh hashes. Key derivation runs once per key at start-up, not
per frame, so this favours plainness over speed.

Public names:

- ``hmac_sha256(key, data) -> 32 bytes``.
- ``hmac_sha256_verify(key, data, tag)``: raises ``AuthenticationError``
  unless ``tag`` equals the MAC or its leftmost 16..32 bytes (RFC 2104
  section 5 truncation, at least half the output); compares every byte.
- ``hkdf_extract(salt, ikm) -> PRK`` (32 bytes). An empty or ``None`` salt
  is HashLen zero bytes (RFC 5869 section 2.2).
- ``hkdf_expand(prk, info, length) -> OKM``; ``length`` 0..8160 (255 *
  HashLen, RFC 5869 section 2.3), PRK at least 32 bytes.
- ``hkdf(ikm, length, salt=b"", info=b"")``: extract then expand.
- ``HASH_LEN``, ``MAX_OKM``.

Bad lengths and non-bytes arguments raise ``CryptoError``.
"""

import hashlib

from phasecore.errors import AuthenticationError, CryptoError

__all__ = ["hmac_sha256", "hmac_sha256_verify", "hkdf_extract", "hkdf_expand", "hkdf", "HASH_LEN", "MAX_OKM"]

HASH_LEN = 32
MAX_OKM = 255 * HASH_LEN
_BLOCK = 64  # SHA-256 block size B of RFC 2104


def _buf(x, what):
    if not isinstance(x, (bytes, bytearray, memoryview)):
        raise CryptoError("%s must be bytes, not %s" % (what, type(x).__name__))
    return x


def hmac_sha256(key, data):
    """HMAC-SHA256(key, data) as 32 bytes (RFC 2104)."""
    _buf(key, "HMAC key")
    _buf(data, "HMAC data")
    if len(key) > _BLOCK:
        # Keys longer than B are hashed first (RFC 2104 section 2).
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(data)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256_verify(key, data, tag):
    """Raise AuthenticationError unless ``tag`` is the (possibly truncated) MAC."""
    _buf(tag, "HMAC tag")
    n = len(tag)
    if not HASH_LEN // 2 <= n <= HASH_LEN:
        raise CryptoError("HMAC-SHA256 tag of %d bytes; must be 16..32" % n)
    mac = hmac_sha256(key, data)
    acc = 0
    for i in range(n):
        acc |= mac[i] ^ tag[i]
    if acc:
        raise AuthenticationError("HMAC-SHA256 tag does not verify")


def hkdf_extract(salt, ikm):
    """PRK = HMAC-SHA256(salt, IKM) (RFC 5869 section 2.2)."""
    if salt is None:
        salt = b""
    _buf(salt, "HKDF salt")
    _buf(ikm, "HKDF input key material")
    # An empty salt is HashLen zeros; HMAC pads the key with zeros to the block
    # size anyway, so b"" and bytes(32) give the same PRK.
    return hmac_sha256(salt if len(salt) else bytes(HASH_LEN), ikm)


def hkdf_expand(prk, info, length):
    """OKM of ``length`` bytes: T(1) | T(2) | ... (RFC 5869 section 2.3)."""
    _buf(prk, "HKDF PRK")
    if info is None:
        info = b""
    _buf(info, "HKDF info")
    if not isinstance(length, int) or isinstance(length, bool):
        raise CryptoError("HKDF length must be an int, not %s" % type(length).__name__)
    if not 0 <= length <= MAX_OKM:
        raise CryptoError("HKDF-SHA256 output length %d outside 0..%d (255 * HashLen)" % (length, MAX_OKM))
    if len(prk) < HASH_LEN:
        raise CryptoError("HKDF PRK of %d bytes; must be at least %d" % (len(prk), HASH_LEN))
    out = bytearray()
    t = b""
    i = 1
    while len(out) < length:
        t = hmac_sha256(prk, t + bytes(info) + bytes((i,)))
        out += t
        i += 1
    return bytes(out[:length])


def hkdf(ikm, length, salt=b"", info=b""):
    """HKDF-SHA256: extract with ``salt`` then expand with ``info`` to ``length`` bytes."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
