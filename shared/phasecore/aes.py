"""AES block encryption (FIPS-197), encryption direction only, with backends.

CCM (``phasecore.ccm``) needs only the forward cipher: CBC-MAC and CTR both
encrypt. So this module has no decryption, and every backend is used as one
ECB block at a time, the one mode every AES engine has (the ESP32 port's
``cryptolib`` offers only ECB and CBC).

Public names:

- ``new(key, backend=None) -> cipher``: ``key`` is 16, 24 or 32 bytes. The key
  schedule is computed once, in the cipher object.
- ``cipher.encrypt_block(block16) -> bytes``.
- ``cipher.encrypt_into(src, dst)``: encrypt the 16 bytes of ``src`` into the
  16-byte writable ``dst`` without allocating (``src`` may be ``dst``).
- ``cipher.raw_encrypt(src, dst)``: the same with no length checks, for callers
  that own exactly-16-byte buffers (``ccm``); on MicroPython it is the bound
  ``cryptolib`` method itself, so a block costs one C call.
- ``cipher.backend``, ``cipher.key_size`` (bytes).
- ``backends()``: names usable on this interpreter, fastest first.
- ``BACKENDS``: every name this module knows.

Backends: ``"pure"`` (this file, always present), ``"cryptolib"`` (MicroPython;
AES-128 and AES-256 only: the port refuses 24-byte keys), ``"cryptography"``
and ``"pycryptodome"`` (CPython). ``backend=None`` picks the first usable one
for the key size, so AES-192 on MicroPython falls back to pure Python. Every
backend gives the same bytes; tests/core/test_aes*.py check it.

The pure path is the classic 32-bit T-table implementation (four 256-entry
tables, one table look-up per byte per round). Its tables (about 9 KB of heap
on the unix port) are built on first use, not at import, so a node whose
cryptolib does the work never pays for them. On an ESP32 the words above 2**30
are not small ints, so the pure path allocates there; it is the fallback, not
the node's working path (cryptolib is built into the ESP32 port).
"""

from phasecore.errors import CryptoError, quote

try:
    import cryptolib as _cryptolib
except ImportError:
    _cryptolib = None

try:
    from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
    from cryptography.hazmat.primitives.ciphers import algorithms as _algorithms
    from cryptography.hazmat.primitives.ciphers import modes as _modes
except ImportError:
    _Cipher = None

try:
    from Crypto.Cipher import AES as _PyCryptodomeAES
except ImportError:
    _PyCryptodomeAES = None

__all__ = ["new", "backends", "BACKENDS", "BLOCK_SIZE", "KEY_SIZES"]

BLOCK_SIZE = 16
KEY_SIZES = (16, 24, 32)
BACKENDS = ("cryptolib", "cryptography", "pycryptodome", "pure")

# Tables of the pure path, built once by _tables() (write-once cache: the
# tables are constants, only their construction is deferred).
_TABLES = None


def _build_tables():
    """S-box and the four encryption T-tables (FIPS-197 sections 5.1.1-5.1.3).

    The S-box is computed (multiplicative inverse in GF(2^8) followed by the
    affine map) rather than pasted, walking p over the generator 3 and q over
    its inverse so the loop is 255 steps.
    """
    sbox = bytearray(256)
    p = q = 1
    while True:
        # p *= 3 in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1
        p = p ^ ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)
        # q /= 3: q *= 0xF6 (the inverse of 3), done as the classic xor-shift chain
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ ((q << 1) | (q >> 7)) ^ ((q << 2) | (q >> 6)) ^ ((q << 3) | (q >> 5)) ^ ((q << 4) | (q >> 4))
        sbox[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    sbox[0] = 0x63
    t0 = [0] * 256
    t1 = [0] * 256
    t2 = [0] * 256
    t3 = [0] * 256
    for i in range(256):
        s = sbox[i]
        s2 = ((s << 1) ^ (0x1B if s & 0x80 else 0)) & 0xFF
        s3 = s2 ^ s
        # Column of MixColumns applied to (s, 0, 0, 0): (2s, s, s, 3s), big-endian word.
        w = (s2 << 24) | (s << 16) | (s << 8) | s3
        t0[i] = w
        t1[i] = ((w >> 8) | (w << 24)) & 0xFFFFFFFF
        t2[i] = ((w >> 16) | (w << 16)) & 0xFFFFFFFF
        t3[i] = ((w >> 24) | (w << 8)) & 0xFFFFFFFF
    return bytes(sbox), t0, t1, t2, t3


def _tables():
    global _TABLES
    if _TABLES is None:
        _TABLES = _build_tables()
    return _TABLES


def _expand_key(key, sbox):
    """Round-key words w[0 .. 4*(Nr+1)-1] (FIPS-197 section 5.2)."""
    nk = len(key) // 4
    nr = nk + 6
    w = [0] * (4 * (nr + 1))
    for i in range(nk):
        w[i] = (key[4 * i] << 24) | (key[4 * i + 1] << 16) | (key[4 * i + 2] << 8) | key[4 * i + 3]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = w[i - 1]
        if i % nk == 0:
            # SubWord(RotWord(t)) xor Rcon
            t = (
                (sbox[(t >> 16) & 0xFF] << 24) | (sbox[(t >> 8) & 0xFF] << 16) | (sbox[t & 0xFF] << 8) | sbox[t >> 24]
            ) ^ (rcon << 24)
            rcon = ((rcon << 1) ^ (0x1B if rcon & 0x80 else 0)) & 0xFF
        elif nk > 6 and i % nk == 4:
            t = (sbox[t >> 24] << 24) | (sbox[(t >> 16) & 0xFF] << 16) | (sbox[(t >> 8) & 0xFF] << 8) | sbox[t & 0xFF]
        w[i] = w[i - nk] ^ t
    return w, nr


def _check_key(key):
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise CryptoError("AES key must be bytes, not %s" % type(key).__name__)
    n = len(key)
    if n not in KEY_SIZES:
        raise CryptoError("AES key is %d bytes; must be 16, 24 or 32" % n)
    return bytes(key)


def _check_block(src, dst):
    if len(src) != BLOCK_SIZE:
        raise CryptoError("AES block is %d bytes; must be 16" % len(src))
    if dst is not None and len(dst) != BLOCK_SIZE:
        raise CryptoError("AES output buffer is %d bytes; must be 16" % len(dst))


class _Base:
    """What every backend shares: the checked entry points over raw_encrypt."""

    backend = None

    def encrypt_into(self, src, dst):
        """Encrypt 16 bytes of ``src`` into writable 16-byte ``dst`` (may be ``src``)."""
        _check_block(src, dst)
        self.raw_encrypt(src, dst)

    def encrypt_block(self, block):
        """Encrypt one 16-byte block; returns 16 new bytes."""
        _check_block(block, None)
        out = bytearray(BLOCK_SIZE)
        self.raw_encrypt(block, out)
        return bytes(out)


class _PureAES(_Base):
    backend = "pure"

    def __init__(self, key):
        sbox, t0, t1, t2, t3 = _tables()
        self.key_size = len(key)
        self._rk, self._nr = _expand_key(key, sbox)
        last = 4 * self._nr
        # The last round key as bytes: the final round works byte by byte.
        lk = bytearray(16)
        for j in range(4):
            w = self._rk[last + j]
            lk[4 * j] = w >> 24
            lk[4 * j + 1] = (w >> 16) & 0xFF
            lk[4 * j + 2] = (w >> 8) & 0xFF
            lk[4 * j + 3] = w & 0xFF
        self._last = bytes(lk)
        self._t = (sbox, t0, t1, t2, t3)

    def raw_encrypt(self, src, dst):
        S, T0, T1, T2, T3 = self._t
        rk = self._rk
        # AddRoundKey(0) on the state read as four big-endian column words.
        s0 = ((src[0] << 24) | (src[1] << 16) | (src[2] << 8) | src[3]) ^ rk[0]
        s1 = ((src[4] << 24) | (src[5] << 16) | (src[6] << 8) | src[7]) ^ rk[1]
        s2 = ((src[8] << 24) | (src[9] << 16) | (src[10] << 8) | src[11]) ^ rk[2]
        s3 = ((src[12] << 24) | (src[13] << 16) | (src[14] << 8) | src[15]) ^ rk[3]
        # Rounds 1 .. Nr-1: SubBytes, ShiftRows, MixColumns, AddRoundKey as
        # four table look-ups per column (FIPS-197 5.1; Daemen-Rijmen 4.2).
        for k in range(4, 4 * self._nr, 4):
            t0 = T0[s0 >> 24] ^ T1[(s1 >> 16) & 255] ^ T2[(s2 >> 8) & 255] ^ T3[s3 & 255] ^ rk[k]
            t1 = T0[s1 >> 24] ^ T1[(s2 >> 16) & 255] ^ T2[(s3 >> 8) & 255] ^ T3[s0 & 255] ^ rk[k + 1]
            t2 = T0[s2 >> 24] ^ T1[(s3 >> 16) & 255] ^ T2[(s0 >> 8) & 255] ^ T3[s1 & 255] ^ rk[k + 2]
            s3 = T0[s3 >> 24] ^ T1[(s0 >> 16) & 255] ^ T2[(s1 >> 8) & 255] ^ T3[s2 & 255] ^ rk[k + 3]
            s0 = t0
            s1 = t1
            s2 = t2
        # Final round: SubBytes, ShiftRows, AddRoundKey (no MixColumns).
        lk = self._last
        dst[0] = S[s0 >> 24] ^ lk[0]
        dst[1] = S[(s1 >> 16) & 255] ^ lk[1]
        dst[2] = S[(s2 >> 8) & 255] ^ lk[2]
        dst[3] = S[s3 & 255] ^ lk[3]
        dst[4] = S[s1 >> 24] ^ lk[4]
        dst[5] = S[(s2 >> 16) & 255] ^ lk[5]
        dst[6] = S[(s3 >> 8) & 255] ^ lk[6]
        dst[7] = S[s0 & 255] ^ lk[7]
        dst[8] = S[s2 >> 24] ^ lk[8]
        dst[9] = S[(s3 >> 16) & 255] ^ lk[9]
        dst[10] = S[(s0 >> 8) & 255] ^ lk[10]
        dst[11] = S[s1 & 255] ^ lk[11]
        dst[12] = S[s3 >> 24] ^ lk[12]
        dst[13] = S[(s0 >> 16) & 255] ^ lk[13]
        dst[14] = S[(s1 >> 8) & 255] ^ lk[14]
        dst[15] = S[s2 & 255] ^ lk[15]


class _CryptolibAES(_Base):
    backend = "cryptolib"

    def __init__(self, key):
        if len(key) == 24:
            raise CryptoError("backend cryptolib does not support AES-192 (24-byte key)")
        self.key_size = len(key)
        # Mode 1 = ECB. The object may only ever encrypt: we never decrypt.
        # encrypt(src, dst) writes into dst without allocating; src may be dst.
        self.raw_encrypt = _cryptolib.aes(key, 1).encrypt


class _CryptographyAES(_Base):
    backend = "cryptography"

    def __init__(self, key):
        self.key_size = len(key)
        # An ECB encryptor carries no state between blocks, so one context
        # serves every block of this key.
        self._update = _Cipher(_algorithms.AES(key), _modes.ECB()).encryptor().update

    def raw_encrypt(self, src, dst):
        dst[:] = self._update(src)

    def encrypt_block(self, block):
        _check_block(block, None)
        return self._update(bytes(block))


class _PyCryptodomeAESWrap(_Base):
    backend = "pycryptodome"

    def __init__(self, key):
        self.key_size = len(key)
        self._encrypt = _PyCryptodomeAES.new(key, _PyCryptodomeAES.MODE_ECB).encrypt

    def raw_encrypt(self, src, dst):
        self._encrypt(src, output=dst)


_CLASSES = {
    "pure": _PureAES,
    "cryptolib": _CryptolibAES if _cryptolib is not None else None,
    "cryptography": _CryptographyAES if _Cipher is not None else None,
    "pycryptodome": _PyCryptodomeAESWrap if _PyCryptodomeAES is not None else None,
}


def backends():
    """Names of the backends usable on this interpreter, in order of preference."""
    return [name for name in BACKENDS if _CLASSES[name] is not None]


def new(key, backend=None):
    """A cipher object for ``key`` (16, 24 or 32 bytes).

    ``backend`` is one of ``backends()``; ``None`` takes the first one that
    supports the key size. Raises ``CryptoError`` for a bad key or an unknown
    or unavailable backend.
    """
    key = _check_key(key)
    if backend is None:
        for name in BACKENDS:
            cls = _CLASSES[name]
            if cls is None or (name == "cryptolib" and len(key) == 24):
                continue
            return cls(key)
    if backend not in _CLASSES:
        raise CryptoError("unknown AES backend %s; known: %s" % (quote(backend), ", ".join(BACKENDS)))
    cls = _CLASSES[backend]
    if cls is None:
        raise CryptoError("AES backend %s is not available on this interpreter" % (quote(backend),))
    return cls(key)
