"""Ed25519 signature verification (RFC 8032 section 5.1, PureEdDSA), for signed OTA updates.

A node checks the release signature over an update manifest itself, so a
compromised Pi cannot push firmware: the Pi only carries the bytes, the
release key never leaves the release machine, and the node holds the 32-byte
public key. Verification only; nothing here signs.

Public names:

- ``verify(public_key, message, signature)``: returns None when the 64-byte
  ``signature`` is a valid Ed25519 signature of ``message`` under the 32-byte
  ``public_key``; raises ``phasecore.errors.SignatureError`` otherwise, with
  ``reason`` one of ``"type"``, ``"length"``, ``"s-range"``, ``"point"``,
  ``"small-order"``, ``"mismatch"``.
- ``PUBLIC_KEY_SIZE`` (32), ``SIGNATURE_SIZE`` (64).

The one thing to know -- the verification rule. ``verify`` accepts exactly
when all of these hold, in this order:

1. the key is 32 bytes and the signature 64 (Wycheproof "SignatureWithGarbage",
   "TruncatedSignature");
2. S, the little-endian integer in the signature's last 32 bytes, is below the
   group order L (RFC 8032 5.1.7 step 1; without it a signature has a second
   valid form S + L: malleability);
3. A (the key) and R (the signature's first 32 bytes) decode as RFC 8032 5.1.3
   says: y < p (so non-canonical encodings are refused), x^2 has a root, and
   x = 0 never comes with the sign bit set;
4. neither A nor R has small order ([8]P is not the identity). RFC 8032 does
   not ask this; it is the strict rule of libsodium. A small-order key is the
   one that matters: with A = identity, R = [S]B verifies every message, so a
   mis-provisioned key would accept forgeries from anyone;
5. the cofactorless equation [S]B = R + [k]A holds, k = SHA-512(R || A || M)
   read little-endian mod L, checked as [S]B + [k](-A) == R projectively.

Cofactorless, not the cofactored [8][S]B = [8]R + [8][k]A: RFC 8032 5.1.7
says either is sufficient, and the two differ only on signatures crafted with
a torsion component, which only the key holder can make. Cofactorless is what
OpenSSL, BoringSSL, Go and libsodium check, so this module accepts exactly
what the release tool (pyca/cryptography, i.e. OpenSSL) accepts, except
where rule 4 makes it stricter: OpenSSL accepts, for example, the all-zero
signature of 64 zero bytes under the all-zero key.
tests/core/test_ed25519_cpython.py holds both; the Wycheproof vectors (every
"valid" case passes either equation) and RFC 8032 section 7.1 vectors are in
tests/core/test_ed25519.py.

Why Ed25519 and not ECDSA P-256 (whose SHA-256 is native on the ESP32):
measured on the MicroPython unix port in a 100 KB heap, the P-256 curve
arithmetic of a verify takes about 5.8 ms and a whole Ed25519 verify of an
empty message about 5.7 ms; the difference is the pure-Python SHA-512 of the
manifest, about 3 ms per KB there (0.35 s per KB estimated on an ESP32). For
a 2 KB manifest that makes Ed25519 about twice as slow (1.4 s against 0.7 s
estimated on an ESP32, once per update); for a few hundred bytes, about 15%.
Ed25519 is kept for what it gives a firmware signature: deterministic
signing (no per-signature nonce for the release machine to get wrong), one
canonical 64-byte encoding and no DER parsing on the node, non-malleability
by the S < L rule, and RFC and Wycheproof vectors. Keep manifests small; the
firmware image itself is named in the manifest by its SHA-256, which
``hashlib`` computes natively. docs/ota-signing.md has the measurements.

Arithmetic: field elements are Python ints mod p = 2^255 - 19 (long ints on
MicroPython, which the ESP32 port has). Points are in extended twisted-Edwards
coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z (RFC 8032 5.1.4; Hisil et
al. 2008). [S]B + [k](-A) is one interleaved double-scalar multiplication with
width-5 NAF digits and tables of the odd multiples 1..15 of B and of A,
about 253 doublings and 85 additions. Sums and differences are left
unreduced (Python ints carry the sign) and every product is reduced with one
``% p``. The inputs are public, so nothing here needs to be constant-time.

Memory does not depend on the message: SHA-512 streams it, and the live
data is two 256-byte digit buffers and two 8-point tables, a few KB freed
when ``verify`` returns. Every field element is a heap object, though, so a
verify churns megabytes through the collector and wants about 20 KB of free
heap to run in (measured: docs/ota-signing.md). There is no recursion.
"""

from phasecore import sha512 as _sha512
from phasecore.errors import SignatureError

__all__ = ["verify", "PUBLIC_KEY_SIZE", "SIGNATURE_SIZE"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# Curve constants (RFC 8032 section 5.1): field prime p = 2^255 - 19, group
# order L = 2^252 + 27742317777372353535851937790883648493, d = -121665/121666,
# sqrt(-1) = 2^((p-1)/4), base point B = (x, 4/5) with x even. Written out in
# hex; tests/core/test_ed25519_cpython.py recomputes each from its definition.
_P = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED
_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
_D = 0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3
_D2 = 0x2406D9DC56DFFCE7198E80F2EEF3D13000E0149A8283B156EBD69B9426B2F159
_SQRT_M1 = 0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0
_BX = 0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A
_BY = 0x6666666666666666666666666666666666666666666666666666666666666658
_Y_MASK = (1 << 255) - 1
_NAF_LEN = 256  # a width-5 NAF of a number below 2^253 + 16 has at most 254 digits


def _bytes(x, what):
    if not isinstance(x, (bytes, bytearray, memoryview)):
        raise SignatureError("%s must be bytes, not %s" % (what, type(x).__name__), "type")
    return bytes(x)


def _sq(x, n):
    """x^(2^n) mod p."""
    p = _P
    for _ in range(n):
        x = x * x % p
    return x


def _pow_p58(z):
    """z^((p-5)/8) = z^(2^252 - 3) mod p by ref10's addition chain: 251 squarings, 11 products.

    Plain Python, so the decoder needs no three-argument pow() (a build
    option of MicroPython ports), and faster than it: 0.3 ms against 0.5 ms on the unix port.
    """
    p = _P
    t0 = z * z % p  # z^2
    t1 = z * _sq(t0, 2) % p  # z^9
    t0 = t0 * t1 % p  # z^11
    t0 = t1 * (t0 * t0 % p) % p  # z^31 = z^(2^5 - 1)
    t0 = _sq(t0, 5) * t0 % p  # z^(2^10 - 1)
    t1 = _sq(t0, 10) * t0 % p  # z^(2^20 - 1)
    t1 = _sq(t1, 20) * t1 % p  # z^(2^40 - 1)
    t0 = _sq(t1, 10) * t0 % p  # z^(2^50 - 1)
    t1 = _sq(t0, 50) * t0 % p  # z^(2^100 - 1)
    t1 = _sq(t1, 100) * t1 % p  # z^(2^200 - 1)
    t0 = _sq(t1, 50) * t0 % p  # z^(2^250 - 1)
    return _sq(t0, 2) * z % p  # z^(2^252 - 3)


def _decode(s, what):
    """32 bytes -> extended point (X, Y, Z, T) with Z = 1 (RFC 8032 section 5.1.3)."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= _Y_MASK
    if y >= _P:
        raise SignatureError("%s is not a canonical encoding: y >= p (RFC 8032 5.1.3 step 1)" % what, "point")
    p = _P
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    # x = u v^3 (u v^7)^((p-5)/8), the candidate root (RFC 8032 5.1.3 step 2)
    x = u * v3 % p * _pow_p58(u * v3 % p * v3 % p * v % p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != (p - u) % p:
            raise SignatureError(
                "%s is not a point on edwards25519: no square root for x (RFC 8032 5.1.3 step 3)" % what, "point"
            )
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        raise SignatureError("%s encodes x = 0 with the sign bit set (RFC 8032 5.1.3 step 4)" % what, "point")
    if (x & 1) != sign:
        x = p - x
    return x, y, 1, x * y % p


def _double(X, Y, Z, need_t):
    """2P in extended coordinates ("dbl-2008-hwcd", RFC 8032 5.1.4); T only when asked (T is unused by doubling)."""
    p = _P
    a = X * X % p
    b = Y * Y % p
    c = 2 * Z * Z % p
    h = a + b
    e = h - (X + Y) * (X + Y) % p
    g = a - b
    f = c + g
    return e * f % p, g * h % p, f * g % p, (e * h % p if need_t else 0)


def _add(X1, Y1, Z1, T1, q, negate):
    """P + Q (or P - Q), Q in cached form (Y+X, Y-X, 2Z, 2dT) ("add-2008-hwcd-3", RFC 8032 5.1.4)."""
    p = _P
    ypx, ymx, z2, t2d = q
    if negate:  # -(x, y) = (-x, y): swaps Y+X with Y-X and negates T
        ypx, ymx, t2d = ymx, ypx, -t2d
    a = (Y1 - X1) * ymx % p
    b = (Y1 + X1) * ypx % p
    c = T1 * t2d % p
    d = Z1 * z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % p, g * h % p, f * g % p, e * h % p


def _cached(X, Y, Z, T):
    p = _P
    return (Y + X) % p, (Y - X) % p, 2 * Z % p, T * _D2 % p


def _odd_multiples(X, Y, Z, T):
    """Cached 1P, 3P, 5P, ..., 15P: the table a width-5 NAF digit indexes by |d| >> 1."""
    two = _cached(*_double(X, Y, Z, True))
    table = [_cached(X, Y, Z, T)]
    for _ in range(7):
        X, Y, Z, T = _add(X, Y, Z, T, two, False)
        table.append(_cached(X, Y, Z, T))
    return table


def _naf5(n, out):
    """Width-5 NAF of 0 <= n < 2^253 + 16 into the bytearray ``out``, least significant digit first.

    Digits d are in {0, +-1, +-3, ..., +-15}; each nonzero one is stored as the
    table index (|d| >> 1) + 1 with bit 7 set when d < 0, so 0 stays 0 and
    the buffer is one byte a digit. Every nonzero digit is followed by at
    least four zeros: about one digit in six is nonzero. Returns the index of
    the top nonzero digit + 1.
    """
    i = top = 0
    while n:
        if n & 1:
            d = n & 31
            if d > 16:
                d -= 32
                out[i] = (((-d) >> 1) + 1) | 0x80
            else:
                out[i] = (d >> 1) + 1
            n -= d
            top = i + 1
        else:
            out[i] = 0
        n >>= 1
        i += 1
    return top


def _is_small_order(X, Y, Z):
    """[8]P is the identity (0 : Z : Z), i.e. the order of P divides the cofactor 8."""
    for _ in range(3):
        X, Y, Z, _t = _double(X, Y, Z, False)
    return X == 0 and Y == Z


def _s_b_minus_k_a(s, k, a_point):
    """[s]B - [k]A by interleaved width-5 NAF (Straus); returns (X, Y, Z)."""
    # The digit buffers first, while the heap is least fragmented: the tables
    # below are 64 long-lived ints scattered among short-lived ones.
    ns = bytearray(_NAF_LEN)
    nk = bytearray(_NAF_LEN)
    top = max(_naf5(s, ns), _naf5(k, nk))
    tb = _odd_multiples(_BX, _BY, 1, _BX * _BY % _P)
    ta = _odd_multiples(*a_point)
    X, Y, Z, T = 0, 1, 1, 0
    for i in range(top - 1, -1, -1):
        ds = ns[i]
        dk = nk[i]
        X, Y, Z, T = _double(X, Y, Z, ds or dk)
        if ds:
            X, Y, Z, T = _add(X, Y, Z, T, tb[(ds & 0x7F) - 1], ds & 0x80)
        if dk:
            # subtracting [k]A: a positive digit adds -|d|A
            X, Y, Z, T = _add(X, Y, Z, T, ta[(dk & 0x7F) - 1], not (dk & 0x80))
    return X, Y, Z


def verify(public_key, message, signature):
    """Raise SignatureError unless ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    pk = _bytes(public_key, "public key")
    sig = _bytes(signature, "signature")
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise SignatureError("message must be bytes, not %s" % type(message).__name__, "type")
    if len(pk) != PUBLIC_KEY_SIZE:
        raise SignatureError("public key is %d bytes; an Ed25519 public key is 32" % len(pk), "length")
    if len(sig) != SIGNATURE_SIZE:
        raise SignatureError("signature is %d bytes; an Ed25519 signature is 64" % len(sig), "length")
    s = int.from_bytes(sig[32:], "little")
    if s >= _L:
        raise SignatureError(
            "signature S is not below the group order L (RFC 8032 5.1.7): malleated or corrupt", "s-range"
        )
    a = _decode(pk, "public key")
    if _is_small_order(a[0], a[1], a[2]):
        raise SignatureError("public key is a point of small order: it would verify forged signatures", "small-order")
    r_bytes = sig[:32]
    r = _decode(r_bytes, "signature R")
    if _is_small_order(r[0], r[1], r[2]):
        raise SignatureError("signature R is a point of small order", "small-order")
    h = _sha512.new(r_bytes)
    h.update(pk)
    h.update(message)
    k = int.from_bytes(h.digest(), "little") % _L
    X, Y, Z = _s_b_minus_k_a(s, k, a)
    # R' == R with R affine (x, y, 1): X == x Z and Y == y Z (mod p), no inversion needed.
    if (X - r[0] * Z) % _P or (Y - r[1] * Z) % _P:
        raise SignatureError("signature does not verify: [S]B != R + [k]A (RFC 8032 5.1.7)", "mismatch")
