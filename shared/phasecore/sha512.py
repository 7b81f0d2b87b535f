"""SHA-512 (FIPS 180-4), for Ed25519 where ``hashlib`` has no sha512.

Ed25519 (RFC 8032) hashes with SHA-512, and MicroPython's ``hashlib`` offers
only sha256 and sha1 (the ESP32 port builds ``MICROPY_PY_HASHLIB_SHA256`` and
``..._SHA1``, nothing wider). ``new()`` returns ``hashlib.sha512`` where the
interpreter has it (CPython) and the pure-Python ``SHA512`` below otherwise;
both give the same bytes, and the tests hold the pure path to FIPS 180-4
examples and to ``hashlib`` on CPython.

The one thing to know: on MicroPython every 64-bit word is a heap-allocated
long int (small ints are 31 bits on the ESP32, 63 on the unix port), so each
128-byte block costs a few thousand short-lived allocations. Memory stays
constant -- one 80-word schedule per hash object, one 128-byte buffer, no
per-call lists -- but time is what it is: hash what must be hashed (a manifest),
not a firmware image (hash that with the native ``hashlib.sha256``).

Public names:

- ``new(data=b"")``: a hash object with ``update(data)`` and ``digest()``
  (``hashlib.sha512`` when present, else ``SHA512``).
- ``digest(data) -> 64 bytes``: one-shot.
- ``SHA512(data=b"")``: the pure-Python hash object, always available.
  ``digest()`` does not finalise it: more ``update()`` calls may follow and
  ``digest()`` may be called again (unlike MicroPython's hashlib objects).
- ``native()``: True when ``new()`` uses the interpreter's own SHA-512.
- ``DIGEST_SIZE`` (64), ``BLOCK_SIZE`` (128).

Data that is not bytes, bytearray or memoryview raises ``CryptoError``.
"""

import struct

from phasecore.errors import CryptoError

try:
    import hashlib as _hashlib

    _native = getattr(_hashlib, "sha512", None)
except ImportError:  # pragma: no cover - every supported interpreter has hashlib
    _native = None

__all__ = ["new", "digest", "SHA512", "native", "DIGEST_SIZE", "BLOCK_SIZE"]

DIGEST_SIZE = 64
BLOCK_SIZE = 128
_M64 = 0xFFFFFFFFFFFFFFFF

# FIPS 180-4 section 4.2.3: the first 64 bits of the fractional parts of the
# cube roots of the first 80 primes.
_K = (
    0x428A2F98D728AE22,
    0x7137449123EF65CD,
    0xB5C0FBCFEC4D3B2F,
    0xE9B5DBA58189DBBC,
    0x3956C25BF348B538,
    0x59F111F1B605D019,
    0x923F82A4AF194F9B,
    0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242,
    0x12835B0145706FBE,
    0x243185BE4EE4B28C,
    0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F,
    0x80DEB1FE3B1696B1,
    0x9BDC06A725C71235,
    0xC19BF174CF692694,
    0xE49B69C19EF14AD2,
    0xEFBE4786384F25E3,
    0x0FC19DC68B8CD5B5,
    0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275,
    0x4A7484AA6EA6E483,
    0x5CB0A9DCBD41FBD4,
    0x76F988DA831153B5,
    0x983E5152EE66DFAB,
    0xA831C66D2DB43210,
    0xB00327C898FB213F,
    0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2,
    0xD5A79147930AA725,
    0x06CA6351E003826F,
    0x142929670A0E6E70,
    0x27B70A8546D22FFC,
    0x2E1B21385C26C926,
    0x4D2C6DFC5AC42AED,
    0x53380D139D95B3DF,
    0x650A73548BAF63DE,
    0x766A0ABB3C77B2A8,
    0x81C2C92E47EDAEE6,
    0x92722C851482353B,
    0xA2BFE8A14CF10364,
    0xA81A664BBC423001,
    0xC24B8B70D0F89791,
    0xC76C51A30654BE30,
    0xD192E819D6EF5218,
    0xD69906245565A910,
    0xF40E35855771202A,
    0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8,
    0x1E376C085141AB53,
    0x2748774CDF8EEB99,
    0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63,
    0x4ED8AA4AE3418ACB,
    0x5B9CCA4F7763E373,
    0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC,
    0x78A5636F43172F60,
    0x84C87814A1F0AB72,
    0x8CC702081A6439EC,
    0x90BEFFFA23631E28,
    0xA4506CEBDE82BDE9,
    0xBEF9A3F7B2C67915,
    0xC67178F2E372532B,
    0xCA273ECEEA26619C,
    0xD186B8C721C0C207,
    0xEADA7DD6CDE0EB1E,
    0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA,
    0x0A637DC5A2C898A6,
    0x113F9804BEF90DAE,
    0x1B710B35131C471B,
    0x28DB77F523047D84,
    0x32CAAB7B40C72493,
    0x3C9EBE0A15C9BEBC,
    0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6,
    0x597F299CFC657E2A,
    0x5FCB6FAB3AD6FAEC,
    0x6C44198C4A475817,
)

# FIPS 180-4 section 5.3.5: the initial hash value.
_H0 = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)

_PAD = b"\x80" + bytes(BLOCK_SIZE - 1)


def _buf(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CryptoError("SHA-512 input must be bytes, not %s" % type(data).__name__)
    return data


def _compress(h, w, block, off):
    """Fold the 128-byte block at ``block[off:]`` into the 8-word state list ``h``.

    ``w`` is the caller's 80-entry schedule list, reused block after block.
    Every operation on a 64-bit word allocates on MicroPython, so the rounds
    are written for few operations rather than for looks (FIPS 180-4 section
    6.4.2 is the reference):

    - a rotation right by n of the 64-bit x is bits n..n+63 of the 128-bit
      x2 = x | x << 64, so a sum of three rotations is three shifts of x2 and
      two XORs (FIPS 180-4 section 4.1.3);
    - nothing is masked to 64 bits until a value is stored: bits above 63 of
      the Sigma, Ch and Maj terms only reach bits above 63 of the sums (carries
      run upwards), and every stored word is masked.
    """
    m = _M64
    w[0:16] = struct.unpack_from(">16Q", block, off)
    for t in range(16, 80):
        x = w[t - 15]
        x2 = x | x << 64
        s0 = (x2 >> 1) ^ (x2 >> 8) ^ (x >> 7)
        x = w[t - 2]
        x2 = x | x << 64
        w[t] = (w[t - 16] + s0 + w[t - 7] + ((x2 >> 19) ^ (x2 >> 61) ^ (x >> 6))) & m
    a, b, c, d, e, f, g, hh = h
    k = _K
    for t in range(80):
        x2 = e | e << 64
        t1 = hh + ((x2 >> 14) ^ (x2 >> 18) ^ (x2 >> 41)) + (g ^ (e & (f ^ g))) + k[t] + w[t]
        x2 = a | a << 64
        t2 = ((x2 >> 28) ^ (x2 >> 34) ^ (x2 >> 39)) + ((a & b) | (c & (a | b)))
        hh = g
        g = f
        f = e
        e = (d + t1) & m
        d = c
        c = b
        b = a
        a = (t1 + t2) & m
    h[0] = (h[0] + a) & m
    h[1] = (h[1] + b) & m
    h[2] = (h[2] + c) & m
    h[3] = (h[3] + d) & m
    h[4] = (h[4] + e) & m
    h[5] = (h[5] + f) & m
    h[6] = (h[6] + g) & m
    h[7] = (h[7] + hh) & m


class SHA512:
    """Pure-Python SHA-512 hash object (FIPS 180-4 section 6.4)."""

    digest_size = DIGEST_SIZE
    block_size = BLOCK_SIZE

    def __init__(self, data=b""):
        self._h = list(_H0)
        self._w = [0] * 80
        self._buf = bytearray(BLOCK_SIZE)
        self._fill = 0  # bytes waiting in _buf
        self._count = 0  # message bytes so far
        self.update(data)

    def update(self, data):
        """Absorb ``data``; whole blocks are read in place, without copying."""
        mv = memoryview(_buf(data))
        n = len(mv)
        self._count += n
        i = 0
        if self._fill:
            take = min(BLOCK_SIZE - self._fill, n)
            self._buf[self._fill : self._fill + take] = mv[:take]
            self._fill += take
            i = take
            if self._fill < BLOCK_SIZE:
                return
            _compress(self._h, self._w, self._buf, 0)
            self._fill = 0
        while n - i >= BLOCK_SIZE:
            _compress(self._h, self._w, mv, i)
            i += BLOCK_SIZE
        if i < n:
            self._buf[0 : n - i] = mv[i:]
            self._fill = n - i

    def digest(self):
        """The 64-byte digest of everything absorbed so far (the object stays usable)."""
        h = list(self._h)
        tail = bytearray(2 * BLOCK_SIZE)
        fill = self._fill
        tail[0:fill] = self._buf[0:fill]
        # Padding (FIPS 180-4 section 5.1.2): 0x80, zeros, then the 128-bit
        # big-endian bit length, ending on a block boundary.
        blocks = 1 if fill < BLOCK_SIZE - 16 else 2
        end = blocks * BLOCK_SIZE
        tail[fill : end - 16] = _PAD[: end - 16 - fill]
        bits = self._count * 8
        struct.pack_into(">QQ", tail, end - 16, (bits >> 64) & _M64, bits & _M64)
        w = self._w
        for off in range(0, end, BLOCK_SIZE):
            _compress(h, w, tail, off)
        return struct.pack(">8Q", h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])


def native():
    """True when ``new()`` hands out the interpreter's own SHA-512."""
    return _native is not None


def new(data=b""):
    """A SHA-512 hash object: ``hashlib.sha512`` if present, else ``SHA512``."""
    _buf(data)
    if _native is not None:
        return _native(data)
    return SHA512(data)


def digest(data):
    """SHA-512 of ``data`` as 64 bytes."""
    return new(data).digest()
