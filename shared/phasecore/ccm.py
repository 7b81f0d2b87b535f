"""AES-CCM authenticated encryption (RFC 3610, NIST SP 800-38C).

Built on nothing but single-block AES encryption (``phasecore.aes``): CBC-MAC
over B0 || encoded AAD || plaintext, and CTR with counter blocks A0, A1, ...
This runs on every frame on an ESP32, so a ``CCM`` object keeps the AES key
schedule and three 16-byte working buffers, and a seal allocates only its
output (``encrypt_into``/``decrypt_into`` allocate nothing at all).

Public names:

- ``CCM(key, tag_len=8, nonce_len=13, backend=None)``: tag length 4, 6, 8, 10,
  12, 14 or 16 bytes (RFC 3610 M); nonce length 7..13 bytes, which fixes the
  length field L = 15 - nonce_len and so the longest message, 2**(8L) - 1
  bytes (RFC 3610 section 2). ``backend`` is passed to ``aes.new``.
- ``.encrypt(nonce, plaintext, aad=b"") -> ciphertext || tag``.
- ``.decrypt(nonce, data, aad=b"") -> plaintext``; raises
  ``AuthenticationError`` when the tag does not verify and then releases no
  plaintext.
- ``.encrypt_into(out, nonce, plaintext, aad=b"") -> n`` and
  ``.decrypt_into(out, nonce, data, aad=b"") -> n``: the same into a caller's
  writable buffer, returning the number of bytes written; on a bad tag
  ``decrypt_into`` zeroes what it wrote before raising.
- ``TAG_LENGTHS``, ``NONCE_LENGTHS``.

A ``CCM`` object is not safe to share between threads (its buffers are
scratch space). Bad parameters raise ``CryptoError``. The caller owns nonce
uniqueness: CCM with a repeated nonce under one key loses confidentiality and
integrity (see docs/security.md).
"""

from phasecore import aes
from phasecore.errors import AuthenticationError, CryptoError, quote

__all__ = ["CCM", "TAG_LENGTHS", "NONCE_LENGTHS"]

TAG_LENGTHS = (4, 6, 8, 10, 12, 14, 16)
NONCE_LENGTHS = (7, 8, 9, 10, 11, 12, 13)


# A module-level tuple: a tuple display inside the function would be built,
# and allocated, on every call on MicroPython.
_BUFFERS = (bytes, bytearray, memoryview)


def _is_buffer(x):
    return isinstance(x, _BUFFERS)


def _xor_aad_length(x, alen):
    """XOR the encoding of l(a) into the start of ``x``; return its length.

    RFC 3610 section 2.2 / SP 800-38C A.2.2: 2 bytes when 0 < l(a) < 2^16 - 2^8,
    0xFF 0xFE + 4 bytes below 2^32, else 0xFF 0xFF + 8 bytes.
    """
    if alen < 0xFF00:
        x[0] ^= alen >> 8
        x[1] ^= alen & 0xFF
        return 2
    if alen < 0x100000000:
        x[0] ^= 0xFF
        x[1] ^= 0xFE
        n = 4
    else:
        x[0] ^= 0xFF
        x[1] ^= 0xFF
        n = 8
    for i in range(n):
        x[2 + i] ^= (alen >> (8 * (n - 1 - i))) & 0xFF
    return 2 + n


class CCM:
    """AES-CCM with one key, one tag length and one nonce length."""

    def __init__(self, key, tag_len=8, nonce_len=13, backend=None):
        if tag_len not in TAG_LENGTHS:
            raise CryptoError("CCM tag length %s not one of 4, 6, 8, 10, 12, 14, 16" % (quote(tag_len),))
        if nonce_len not in NONCE_LENGTHS:
            raise CryptoError("CCM nonce length %s outside 7..13" % (quote(nonce_len),))
        self._aes = aes.new(key, backend)
        self._enc = self._aes.raw_encrypt
        self.backend = self._aes.backend
        self.tag_len = tag_len
        self.nonce_len = nonce_len
        self._L = 15 - nonce_len
        # Longest message the L-byte length field can state (RFC 3610 section 2:
        # 0 <= l(m) < 2^(8L)).
        self.max_message = (1 << (8 * self._L)) - 1
        self._x = bytearray(16)  # CBC-MAC chaining value
        self._a = bytearray(16)  # counter block A_i
        self._s = bytearray(16)  # key stream block S_i = E(A_i)
        self._t = bytearray(16)  # decrypt: received tag xor S_0

    # -- the two passes ------------------------------------------------------

    def _check(self, nonce, aad):
        if not _is_buffer(nonce) or len(nonce) != self.nonce_len:
            raise CryptoError(
                "CCM nonce must be %d bytes, got %s"
                % (self.nonce_len, len(nonce) if _is_buffer(nonce) else type(nonce).__name__)
            )
        if not _is_buffer(aad):
            raise CryptoError("CCM aad must be bytes, not %s" % type(aad).__name__)

    def _check_len(self, msg_len):
        if msg_len > self.max_message:
            raise CryptoError(
                "CCM message of %d bytes too long for nonce length %d (at most %d)"
                % (msg_len, self.nonce_len, self.max_message)
            )

    def _start(self, nonce, msg_len, aad):
        """CBC-MAC over B0 and the encoded AAD; set A to A_1 and S to S_0 = E(A_0)."""
        x = self._x
        enc = self._enc
        L = self._L
        nlen = self.nonce_len
        # B0 = flags | N | l(m)   (RFC 3610 2.2; SP 800-38C A.2.1)
        x[0] = (0x40 if len(aad) else 0) | (((self.tag_len - 2) // 2) << 3) | (L - 1)
        for i in range(nlen):
            x[1 + i] = nonce[i]
        n = msg_len
        for i in range(15, nlen, -1):
            x[i] = n & 0xFF
            n >>= 8
        enc(x, x)
        alen = len(aad)
        if alen:
            pos = _xor_aad_length(x, alen)
            for b in aad:
                x[pos] ^= b
                pos += 1
                if pos == 16:
                    enc(x, x)
                    pos = 0
            if pos:
                # The last block is zero-padded: xor with zeros changes nothing.
                enc(x, x)
        # A_i = flags' | N | i with flags' = L - 1 (RFC 3610 2.3).
        a = self._a
        a[0] = L - 1
        for i in range(nlen):
            a[1 + i] = nonce[i]
        for i in range(nlen + 1, 16):
            a[i] = 0
        self._enc(a, self._s)  # S_0, kept for the tag
        a[15] = 1

    def _next_counter(self):
        a = self._a
        i = 15
        while True:
            v = (a[i] + 1) & 0xFF
            a[i] = v
            if v or i == 16 - self._L:
                return
            i -= 1

    def _tag_into(self, out, off):
        """T = first M bytes of X xor S_0. S_0 must still be in self._s."""
        x = self._x
        s = self._s
        for i in range(self.tag_len):
            out[off + i] = x[i] ^ s[i]

    # -- public API ------------------------------------------------------------

    def encrypt_into(self, out, nonce, plaintext, aad=b""):
        """Write ciphertext || tag to ``out``; return its length."""
        if not _is_buffer(plaintext):
            raise CryptoError("CCM plaintext must be bytes, not %s" % type(plaintext).__name__)
        n = len(plaintext)
        self._check(nonce, aad)
        self._check_len(n)
        total = n + self.tag_len
        if len(out) < total:
            raise CryptoError("CCM output buffer of %d bytes, need %d" % (len(out), total))
        self._start(nonce, n, aad)
        # The tag is written from S_0 (in _s) and X at the end, but _s is
        # reused for S_1.. below: write the tag part of S_0 aside in out first.
        s = self._s
        tl = self.tag_len
        for i in range(tl):
            out[n + i] = s[i]
        x = self._x
        a = self._a
        enc = self._enc
        pos = 0
        while pos < n:
            enc(a, s)
            self._next_counter()
            end = pos + 16 if pos + 16 <= n else n
            j = 0
            for i in range(pos, end):
                p = plaintext[i]
                x[j] ^= p
                out[i] = p ^ s[j]
                j += 1
            enc(x, x)
            pos = end
        for i in range(tl):
            out[n + i] ^= x[i]
        return total

    def decrypt_into(self, out, nonce, data, aad=b""):
        """Verify and decrypt ciphertext || tag into ``out``; return the plaintext length."""
        if not _is_buffer(data):
            raise CryptoError("CCM data must be bytes, not %s" % type(data).__name__)
        self._check(nonce, aad)
        tl = self.tag_len
        if len(data) < tl:
            raise AuthenticationError("CCM data of %d bytes is shorter than the %d-byte tag" % (len(data), tl))
        n = len(data) - tl
        self._check_len(n)
        if len(out) < n:
            raise CryptoError("CCM output buffer of %d bytes, need %d" % (len(out), n))
        self._start(nonce, n, aad)
        s = self._s
        # Received tag xor S_0 must equal the first M bytes of the final X;
        # keep it aside because _s is reused for S_1, S_2, ...
        diff = self._t
        for i in range(tl):
            diff[i] = data[n + i] ^ s[i]
        x = self._x
        a = self._a
        enc = self._enc
        pos = 0
        while pos < n:
            enc(a, s)
            self._next_counter()
            end = pos + 16 if pos + 16 <= n else n
            j = 0
            for i in range(pos, end):
                p = data[i] ^ s[j]
                out[i] = p
                x[j] ^= p
                j += 1
            enc(x, x)
            pos = end
        # Compare the whole tag without an early exit.
        acc = 0
        for i in range(tl):
            acc |= diff[i] ^ x[i]
        if acc:
            for i in range(n):
                out[i] = 0
            raise AuthenticationError("CCM tag does not verify")
        return n

    def encrypt(self, nonce, plaintext, aad=b""):
        """Return ciphertext || tag (bytes)."""
        if not _is_buffer(plaintext):
            raise CryptoError("CCM plaintext must be bytes, not %s" % type(plaintext).__name__)
        out = bytearray(len(plaintext) + self.tag_len)
        self.encrypt_into(out, nonce, plaintext, aad)
        return bytes(out)

    def decrypt(self, nonce, data, aad=b""):
        """Return the plaintext of ciphertext || tag; AuthenticationError if forged."""
        if not _is_buffer(data):
            raise CryptoError("CCM data must be bytes, not %s" % type(data).__name__)
        out = bytearray(max(len(data) - self.tag_len, 0))
        n = self.decrypt_into(out, nonce, data, aad)
        return bytes(out) if n == len(out) else bytes(out[:n])
