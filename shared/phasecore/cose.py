"""COSE_Encrypt0 (RFC 9052 section 5.3) with AES-CCM (RFC 9053 section 4.2).

phasekit sends a compact form of COSE_Encrypt0 on air (docs/protocol.md
section 2, as OSCORE does in RFC 8613 section 6). This module is the full
structure, and the bridge that proves the compact form is COSE: from the parts
of an envelope it rebuilds the COSE_Encrypt0 object and its external AAD, and
any COSE library verifies that object with the recipient key.

Public names:

- ``encrypt(key, plaintext, alg, external_aad=b"", kid=None, iv=None,
  partial_iv=None, base_iv=None, nonce=None, protected=None, unprotected=None,
  tagged=True, backend=None) -> bytes``. The nonce is ``iv`` (sent as header
  5), or ``base_iv`` XOR the left-padded ``partial_iv`` (header 6, RFC 9052
  section 3.1), or an implied ``nonce`` the recipient knows. ``protected``
  defaults to ``{1: alg}``.
- ``decrypt(key, data, external_aad=b"", alg=None, base_iv=None, nonce=None,
  tagged=None, backend=None) -> plaintext``; ``alg`` is needed only when the
  object does not name it. ``tagged``: None accepts both forms, True requires
  tag 16, False refuses it.
- ``decode(data, tagged=None) -> Encrypt0`` and ``encode(protected,
  unprotected, ciphertext, tagged=True)``: the structure without crypto.
- ``enc_structure(protected, external_aad)``: the AAD, ``["Encrypt0",
  protected, external_aad]`` as CBOR (RFC 9052 section 5.3).
- Compact-form bridge (docs/protocol.md section 2): ``compact_external_aad(kind,
  kid, piv, alg)``, ``rebuild(kid, piv, kind, ciphertext, alg=11, tagged=True)
  -> (cose_bytes, external_aad)``, ``base_iv(common_iv, kid)`` (the Base IV a
  generic library needs so that its Partial IV nonce equals the OSCORE nonce),
  ``to_compact(data, alg=11) -> (kid, piv, ciphertext)``.
- ``ALGORITHMS`` (alg -> (key, tag, nonce) lengths), ``ALG_AES_CCM_*``,
  ``HDR_ALG``, ``HDR_CRIT``, ``HDR_KID``, ``HDR_IV``, ``HDR_PARTIAL_IV``,
  ``TAG_ENCRYPT0``.

Errors: ``COSEError`` (a ``MalformedError``) for anything that is not a
well-formed COSE_Encrypt0 we support, including bad CBOR; ``AuthenticationError``
when the tag does not verify; ``CryptoError`` for bad keys or caller
parameters.

This module is for tools, tests and the gateway's COSE view; the node's hot
path is ``phasecore.seal``, which never builds the full structure.
"""

from phasecore import cbor
from phasecore.ccm import CCM
from phasecore.errors import CBORError, COSEError, CryptoError, quote
from phasecore.keys import nonce as _oscore_nonce

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = [
    "encrypt",
    "decrypt",
    "decode",
    "encode",
    "enc_structure",
    "Encrypt0",
    "compact_external_aad",
    "rebuild",
    "base_iv",
    "to_compact",
    "ALGORITHMS",
    "ALG_AES_CCM_16_64_128",
    "ALG_AES_CCM_16_64_256",
    "HDR_ALG",
    "HDR_CRIT",
    "HDR_KID",
    "HDR_IV",
    "HDR_PARTIAL_IV",
    "TAG_ENCRYPT0",
]

# RFC 9053 section 4.2, table 6: alg -> (key bytes, tag bytes, nonce bytes).
# "16"/"64" in the name is L in bits: 2 length bytes (13-byte nonce) or 8 (7-byte nonce).
ALG_AES_CCM_16_64_128 = const(10)
ALG_AES_CCM_16_64_256 = const(11)
ALGORITHMS = {
    10: (16, 8, 13),
    11: (32, 8, 13),
    12: (16, 8, 7),
    13: (32, 8, 7),
    30: (16, 16, 13),
    31: (32, 16, 13),
    32: (16, 16, 7),
    33: (32, 16, 7),
}

# Header parameter labels (RFC 9052 section 3.1, table 3).
HDR_ALG = const(1)
HDR_CRIT = const(2)
HDR_KID = const(4)
HDR_IV = const(5)
HDR_PARTIAL_IV = const(6)
_UNDERSTOOD = (HDR_ALG, HDR_CRIT, HDR_KID, HDR_IV, HDR_PARTIAL_IV)
TAG_ENCRYPT0 = const(16)

# The compact envelope's version, first element of its external AAD array.
_COMPACT_AAD_VERSION = const(1)
_MAX_PIV = const(5)


def _buf(x, what):
    if not isinstance(x, (bytes, bytearray, memoryview)):
        raise CryptoError("%s must be bytes, not %s" % (what, type(x).__name__))
    return bytes(x)


def _alg_params(alg):
    if type(alg) is not int or alg not in ALGORITHMS:
        raise COSEError("COSE algorithm %s not supported (AES-CCM: 10-13, 30-33)" % (quote(alg),))
    return ALGORITHMS[alg]


def enc_structure(protected, external_aad=b""):
    """CBOR of Enc_structure = ["Encrypt0", protected, external_aad] (RFC 9052 section 5.3)."""
    return cbor.dumps(["Encrypt0", _buf(protected, "protected header"), _buf(external_aad, "external AAD")])


class Encrypt0:
    """A decoded COSE_Encrypt0.

    ``protected`` is the serialized protected bucket exactly as received (the
    AAD covers those bytes), ``phdr`` and ``uhdr`` the two header maps,
    ``ciphertext`` the ciphertext with its tag, ``tagged`` whether tag 16 was
    present.
    """

    def __init__(self, protected, phdr, uhdr, ciphertext, tagged):
        self.protected = protected
        self.phdr = phdr
        self.uhdr = uhdr
        self.ciphertext = ciphertext
        self.tagged = tagged

    def header(self, label, default=None):
        if label in self.phdr:
            return self.phdr[label]
        return self.uhdr.get(label, default)

    @property
    def alg(self):
        return self.header(HDR_ALG)

    @property
    def kid(self):
        return self.header(HDR_KID)

    @property
    def iv(self):
        return self.header(HDR_IV)

    @property
    def partial_iv(self):
        return self.header(HDR_PARTIAL_IV)

    def __repr__(self):
        return "Encrypt0(phdr=%s, uhdr=%s, %d bytes)" % (quote(self.phdr), quote(self.uhdr), len(self.ciphertext))


def _check_headers(phdr, uhdr):
    """Header rules of RFC 9052 section 3 that a recipient must enforce."""
    for bucket in (phdr, uhdr):
        for label in bucket:
            # label = int / tstr (RFC 9052 section 3). A bool would alias 1 in a dict.
            if type(label) is not int and not isinstance(label, str):
                raise COSEError("header label %s is not an int or a text string" % (quote(label),))
    for label in phdr:
        if label in uhdr:
            raise COSEError("header %s in both the protected and the unprotected bucket" % (quote(label),))
    if HDR_CRIT in uhdr:
        raise COSEError("crit (2) must be in the protected bucket")
    crit = phdr.get(HDR_CRIT)
    if crit is not None:
        if not isinstance(crit, list) or not crit:
            raise COSEError("crit (2) must be a non-empty array of labels")
        for label in crit:
            if label not in _UNDERSTOOD:
                raise COSEError("critical header %s is not understood" % (quote(label),))
            if label not in phdr:
                raise COSEError("critical header %s is not in the protected bucket" % (quote(label),))
    for bucket in (phdr, uhdr):
        alg = bucket.get(HDR_ALG)
        if alg is not None and type(alg) is not int and not isinstance(alg, str):
            raise COSEError("alg (1) must be an int or a text string, not %s" % type(alg).__name__)
        for label in (HDR_KID, HDR_IV, HDR_PARTIAL_IV):
            v = bucket.get(label)
            if v is not None and not isinstance(v, bytes):
                raise COSEError("header %d must be a byte string, not %s" % (label, type(v).__name__))
    if (HDR_IV in phdr or HDR_IV in uhdr) and (HDR_PARTIAL_IV in phdr or HDR_PARTIAL_IV in uhdr):
        raise COSEError("IV (5) and Partial IV (6) must not both be present (RFC 9052 section 3.1)")


def decode(data, tagged=None):
    """Parse a COSE_Encrypt0 (tagged or not, as ``tagged`` allows) into an ``Encrypt0``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise COSEError("COSE_Encrypt0 must be bytes, not %s" % type(data).__name__)
    try:
        obj = cbor.loads(data)
    except CBORError as e:
        raise COSEError("COSE_Encrypt0 is not well-formed CBOR: %s" % e)
    was_tagged = isinstance(obj, cbor.Tag)
    if was_tagged:
        if obj.tag != TAG_ENCRYPT0:
            raise COSEError("CBOR tag %d is not COSE_Encrypt0 (16)" % obj.tag)
        obj = obj.value
    if tagged is True and not was_tagged:
        raise COSEError("COSE_Encrypt0 without its tag 16 where the tag is required")
    if tagged is False and was_tagged:
        raise COSEError("COSE_Encrypt0 tagged 16 where the untagged form is required")
    if not isinstance(obj, list) or len(obj) != 3:
        raise COSEError("COSE_Encrypt0 must be an array of 3 items")
    protected, uhdr, ciphertext = obj
    if not isinstance(protected, bytes):
        raise COSEError("protected bucket must be a byte string, not %s" % type(protected).__name__)
    if protected:
        try:
            phdr = cbor.loads(protected)
        except CBORError as e:
            raise COSEError("protected bucket is not well-formed CBOR: %s" % e)
        if not isinstance(phdr, dict):
            raise COSEError("protected bucket must hold a map, not %s" % type(phdr).__name__)
    else:
        phdr = {}
    if not isinstance(uhdr, dict):
        raise COSEError("unprotected bucket must be a map, not %s" % type(uhdr).__name__)
    if ciphertext is None:
        raise COSEError("detached ciphertext (nil) is not supported")
    if not isinstance(ciphertext, bytes):
        raise COSEError("ciphertext must be a byte string, not %s" % type(ciphertext).__name__)
    _check_headers(phdr, uhdr)
    return Encrypt0(protected, phdr, uhdr, ciphertext, was_tagged)


def encode(protected, unprotected, ciphertext, tagged=True):
    """CBOR of [protected, unprotected, ciphertext], with tag 16 when ``tagged``.

    ``protected`` is the serialized bucket (bytes); ``unprotected`` a map.
    """
    arr = [_buf(protected, "protected header"), unprotected, _buf(ciphertext, "ciphertext")]
    return cbor.dumps(cbor.Tag(TAG_ENCRYPT0, arr) if tagged else arr)


def _partial_iv_nonce(base, piv, nonce_len):
    """RFC 9052 section 3.1: left-pad the Partial IV to the nonce length, XOR the Base IV."""
    base = _buf(base, "base IV")
    if len(base) != nonce_len:
        raise CryptoError("base IV is %d bytes; the algorithm's nonce is %d" % (len(base), nonce_len))
    if not 1 <= len(piv) <= nonce_len:
        raise COSEError("Partial IV of %d bytes; must be 1..%d" % (len(piv), nonce_len))
    out = bytearray(base)
    off = nonce_len - len(piv)
    for i in range(len(piv)):
        out[off + i] ^= piv[i]
    return bytes(out)


def _ccm(key, alg, backend):
    key_len, tag_len, nonce_len = _alg_params(alg)
    key = _buf(key, "key")
    if len(key) != key_len:
        raise CryptoError("key is %d bytes; COSE algorithm %d needs %d" % (len(key), alg, key_len))
    return CCM(key, tag_len, nonce_len, backend)


def encrypt(
    key,
    plaintext,
    alg,
    external_aad=b"",
    kid=None,
    iv=None,
    partial_iv=None,
    base_iv=None,
    nonce=None,
    protected=None,
    unprotected=None,
    tagged=True,
    backend=None,
):
    """Encrypt ``plaintext`` into a COSE_Encrypt0 (bytes). See the module docstring."""
    key_len, tag_len, nonce_len = _alg_params(alg)
    phdr = {HDR_ALG: alg} if protected is None else dict(protected)
    uhdr = {} if unprotected is None else dict(unprotected)
    if kid is not None:
        uhdr[HDR_KID] = _buf(kid, "kid")
    if iv is not None and partial_iv is not None:
        raise CryptoError("give iv or partial_iv, not both (RFC 9052 section 3.1)")
    if iv is not None:
        iv = _buf(iv, "IV")
        if nonce is not None and _buf(nonce, "nonce") != iv:
            raise CryptoError("nonce and iv differ")
        uhdr[HDR_IV] = iv
        nonce = iv
    elif partial_iv is not None:
        partial_iv = _buf(partial_iv, "Partial IV")
        uhdr[HDR_PARTIAL_IV] = partial_iv
        if base_iv is not None:
            full = _partial_iv_nonce(base_iv, partial_iv, nonce_len)
            if nonce is not None and _buf(nonce, "nonce") != full:
                raise CryptoError("nonce differs from base IV xor Partial IV")
            nonce = full
    if nonce is None:
        raise CryptoError("no nonce: give iv, partial_iv with base_iv, or nonce")
    nonce = _buf(nonce, "nonce")
    if len(nonce) != nonce_len:
        raise CryptoError("nonce is %d bytes; COSE algorithm %d needs %d" % (len(nonce), alg, nonce_len))
    _check_headers(phdr, uhdr)
    prot = cbor.dumps(phdr) if phdr else b""
    ccm = _ccm(key, alg, backend)
    ct = ccm.encrypt(nonce, _buf(plaintext, "plaintext"), enc_structure(prot, external_aad))
    return encode(prot, uhdr, ct, tagged)


def decrypt(key, data, external_aad=b"", alg=None, base_iv=None, nonce=None, tagged=None, backend=None):
    """Verify and decrypt a COSE_Encrypt0; return the plaintext. See the module docstring."""
    msg = decode(data, tagged)
    msg_alg = msg.alg
    if msg_alg is None:
        if alg is None:
            raise COSEError("COSE_Encrypt0 names no algorithm and none was given")
        msg_alg = alg
    elif alg is not None and alg != msg_alg:
        raise COSEError("COSE_Encrypt0 says algorithm %s, expected %s" % (quote(msg_alg), quote(alg)))
    key_len, tag_len, nonce_len = _alg_params(msg_alg)
    iv = msg.iv
    piv = msg.partial_iv
    if iv is not None:
        if len(iv) != nonce_len:
            raise COSEError("IV (5) is %d bytes; algorithm %d needs %d" % (len(iv), msg_alg, nonce_len))
        if nonce is not None and _buf(nonce, "nonce") != iv:
            raise COSEError("IV (5) differs from the expected nonce")
        nonce = iv
    elif piv is not None and base_iv is not None:
        full = _partial_iv_nonce(base_iv, piv, nonce_len)
        if nonce is not None and _buf(nonce, "nonce") != full:
            raise CryptoError("nonce differs from base IV xor Partial IV")
        nonce = full
    if nonce is None:
        raise COSEError(
            "no IV: the object has %s and no %s was given"
            % (
                "a Partial IV" if piv is not None else "neither IV nor Partial IV",
                "base IV" if piv is not None else "nonce",
            )
        )
    nonce = _buf(nonce, "nonce")
    if len(nonce) != nonce_len:
        raise CryptoError("nonce is %d bytes; COSE algorithm %d needs %d" % (len(nonce), msg_alg, nonce_len))
    ccm = _ccm(key, msg_alg, backend)
    return ccm.decrypt(nonce, msg.ciphertext, enc_structure(msg.protected, external_aad))


# ---------------------------------------------------------------- compact envelope bridge


def compact_external_aad(kind, kid, piv, alg=ALG_AES_CCM_16_64_256):
    """External AAD of a compact envelope: CBOR [1, alg, kid, piv, kind] (docs/protocol.md section 2)."""
    return cbor.dumps([_COMPACT_AAD_VERSION, alg, _buf(kid, "kid"), _buf(piv, "Partial IV"), kind])


def _check_compact(kid, piv, kind):
    if len(kid) > 7:
        raise COSEError("kid of %d bytes; the compact form allows at most 7" % len(kid))
    if not 1 <= len(piv) <= _MAX_PIV or (len(piv) > 1 and piv[0] == 0):
        raise COSEError("Partial IV %s is not 1..5 bytes in shortest form" % (quote(piv),))
    if kind is not None and (type(kind) is not int or not 0 <= kind <= 7):
        raise COSEError("message kind %s outside 0..7" % (quote(kind),))


def rebuild(kid, piv, kind, ciphertext, alg=ALG_AES_CCM_16_64_256, tagged=True):
    """The full COSE_Encrypt0 of a compact envelope and its external AAD: ``(cose_bytes, external_aad)``.

    The object is ``16([h'', {4: kid, 6: piv}, ciphertext || tag])``: the
    algorithm is implied, as in OSCORE, and authenticated by the external
    AAD. A generic library verifies it given the key, ``alg`` and
    ``base_iv(common_iv, kid)`` as the key's Base IV.
    """
    kid = _buf(kid, "kid")
    piv = _buf(piv, "Partial IV")
    _check_compact(kid, piv, kind)
    _alg_params(alg)
    cose = encode(b"", {HDR_KID: kid, HDR_PARTIAL_IV: piv}, _buf(ciphertext, "ciphertext"), tagged)
    return cose, compact_external_aad(kind, kid, piv, alg)


def base_iv(common_iv, kid):
    """Base IV that makes RFC 9052's Partial IV nonce equal the OSCORE nonce of ``kid``.

    OSCORE: nonce = common_iv XOR (len(kid) | pad(kid) | pad5(piv));
    COSE: nonce = base_iv XOR pad(piv). So base_iv = common_iv XOR (len(kid) | pad(kid) | 0^5).
    """
    return _oscore_nonce(common_iv, kid, b"\x00")


def to_compact(data, alg=ALG_AES_CCM_16_64_256):
    """The compact parts ``(kid, piv, ciphertext)`` of a COSE_Encrypt0 in the rebuilt form.

    The object must have an empty protected bucket and kid and Partial IV
    headers (an unprotected alg, if present, must equal ``alg``); anything else
    has no compact form and raises ``COSEError``.
    """
    msg = decode(data)
    if msg.protected:
        raise COSEError("a compact envelope has an empty protected bucket")
    extra = [label for label in msg.uhdr if label not in (HDR_ALG, HDR_KID, HDR_PARTIAL_IV)]
    if extra:
        raise COSEError("headers %s have no place in a compact envelope" % (quote(sorted(extra)),))
    if msg.uhdr.get(HDR_ALG, alg) != alg:
        raise COSEError("algorithm %s, the compact envelope uses %s" % (quote(msg.uhdr[HDR_ALG]), quote(alg)))
    kid = msg.kid
    piv = msg.partial_iv
    if kid is None or piv is None:
        raise COSEError("a compact envelope needs kid (4) and Partial IV (6)")
    _check_compact(kid, piv, None)
    tag_len = _alg_params(alg)[1]
    if len(msg.ciphertext) < tag_len:
        raise COSEError("ciphertext of %d bytes is shorter than the %d-byte tag" % (len(msg.ciphertext), tag_len))
    return kid, piv, msg.ciphertext
