"""The key hierarchy of docs/protocol.md section 4, derived as OSCORE does.

One 32-byte site key per transformer site. Each node holds only its own
``node_secret`` (HKDF of the site key with the node's address and key
generation); from it both ends derive, exactly as RFC 8613 section 3.2.1, a
sender key per direction and one common IV, and build each message's nonce
from the sender id and the Partial IV (RFC 8613 section 5.2).

Public names:

- ``node_secret(site_key, addr, generation=0) -> 32 bytes``.
- ``derive(master_secret, id, kind, length, alg, master_salt=b"", id_context=None)``
  and ``hkdf_info(id, id_context, alg, kind, length)``: one OSCORE derivation
  (``kind`` is ``"Key"`` or ``"IV"``) and its CBOR ``info``.
- ``nonce(common_iv, sender_id, piv)`` and ``nonce_into(out, common_iv,
  sender_id, piv)``: the AEAD nonce of RFC 8613 section 5.2.
- ``Context.from_secret(master_secret, sender_id, recipient_id, alg=11,
  master_salt=b"", id_context=None)``: an OSCORE security context (sender key,
  recipient key, common IV, and the nonces of either side); ``Context(alg,
  sender_id, recipient_id, sender_key, recipient_key, common_iv)`` from parts.
- ``NodeKeys(node_secret, addr, alg=11)`` and ``NodeKeys.from_site_key(site_key,
  addr, generation=0, alg=11)``: both directions of one node's link, the node
  sending as ``bytes([addr])`` and the Pi as ``b""``; ``.node_context()`` and
  ``.pi_context()`` give each end's view as a ``Context``.
- ``node_id(addr)``, ``PI_ID``, ``ALG_AES_CCM_16_64_128`` (10),
  ``ALG_AES_CCM_16_64_256`` (11), ``ALGORITHMS`` (alg -> (key length, nonce
  length)), ``SITE_KEY_LEN``, ``NODE_ADDRS``.

The generation: re-using a (node, generation) secret with a fresh sequence
counter repeats nonces, which breaks AES-CCM. A replacement board or a node
whose flash was wiped is provisioned with the next generation, never with its
predecessor's secret (docs/security.md, "Key generations").

Everything raises ``CryptoError`` for bad lengths, addresses or algorithms.
"""

from phasecore import cbor
from phasecore.errors import CryptoError, quote
from phasecore.kdf import hkdf

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = [
    "node_secret",
    "derive",
    "hkdf_info",
    "nonce",
    "nonce_into",
    "Context",
    "NodeKeys",
    "node_id",
    "PI_ID",
    "ALG_AES_CCM_16_64_128",
    "ALG_AES_CCM_16_64_256",
    "ALGORITHMS",
    "SITE_KEY_LEN",
    "NODE_ADDRS",
    "MAX_GENERATION",
]

ALG_AES_CCM_16_64_128 = const(10)
ALG_AES_CCM_16_64_256 = const(11)
# COSE AES-CCM algorithms (RFC 9053 section 4.2): key length, nonce length (15 - L/8).
ALGORITHMS = {
    10: (16, 13),
    11: (32, 13),
    12: (16, 7),
    13: (32, 7),
    30: (16, 13),
    31: (32, 13),
    32: (16, 7),
    33: (32, 7),
}
SITE_KEY_LEN = const(32)
NODE_SECRET_LEN = const(32)
NODE_ADDRS = (1, 247)  # inclusive range of node link addresses (docs/protocol.md section 1)
MAX_GENERATION = const(0xFFFF)
PI_ID = b""
_NODE_INFO = b"phasekit node "
_PIV_LEN = const(5)  # the Partial IV occupies the last 5 nonce bytes (RFC 8613 section 5.2)


def _bytes(x, what):
    if not isinstance(x, (bytes, bytearray, memoryview)):
        raise CryptoError("%s must be bytes, not %s" % (what, type(x).__name__))
    return bytes(x)


def _check_addr(addr):
    if not isinstance(addr, int) or isinstance(addr, bool) or not NODE_ADDRS[0] <= addr <= NODE_ADDRS[1]:
        raise CryptoError("node address %s outside %d..%d" % (quote(addr), NODE_ADDRS[0], NODE_ADDRS[1]))


def _alg(alg):
    if alg not in ALGORITHMS:
        raise CryptoError("COSE algorithm %s is not an AES-CCM algorithm (10-13, 30-33)" % (quote(alg),))
    return ALGORITHMS[alg]


def node_id(addr):
    """Sender id (and kid) of node ``addr``: the address as one byte."""
    _check_addr(addr)
    return bytes((addr,))


def node_secret(site_key, addr, generation=0):
    """The node's master secret: HKDF-SHA256(salt=b"", IKM=site_key, info, L=32).

    info = b"phasekit node " | addr (1 byte) | generation (2 bytes, big-endian)
    (docs/protocol.md section 4).
    """
    site_key = _bytes(site_key, "site key")
    if len(site_key) != SITE_KEY_LEN:
        raise CryptoError("site key is %d bytes; must be %d" % (len(site_key), SITE_KEY_LEN))
    _check_addr(addr)
    if not isinstance(generation, int) or isinstance(generation, bool) or not 0 <= generation <= MAX_GENERATION:
        raise CryptoError("key generation %s outside 0..%d" % (quote(generation), MAX_GENERATION))
    info = _NODE_INFO + bytes((addr, generation >> 8, generation & 0xFF))
    return hkdf(site_key, NODE_SECRET_LEN, b"", info)


def hkdf_info(id, id_context, alg, kind, length):
    """CBOR info = [id, id_context, alg_aead, type, L] (RFC 8613 section 3.2.1)."""
    if kind not in ("Key", "IV"):
        raise CryptoError("OSCORE derivation type %s must be 'Key' or 'IV'" % (quote(kind),))
    id_context = None if id_context is None else _bytes(id_context, "ID context")
    return cbor.dumps([_bytes(id, "sender/recipient id"), id_context, alg, kind, length])


def derive(master_secret, id, kind, length, alg, master_salt=b"", id_context=None):
    """output = HKDF(salt=Master Salt, IKM=Master Secret, info, L) (RFC 8613 section 3.2.1)."""
    master_secret = _bytes(master_secret, "master secret")
    if not master_secret:
        raise CryptoError("master secret is empty")
    return hkdf(master_secret, length, master_salt, hkdf_info(id, id_context, alg, kind, length))


def nonce_into(out, common_iv, sender_id, piv):
    """Write the nonce for (sender id, Partial IV) into ``out`` (len(common_iv) bytes).

    RFC 8613 section 5.2: len(id) (1 byte) | id left-padded to nonce_len - 6 |
    PIV left-padded to 5, XORed with the common IV.
    """
    n = len(common_iv)
    idl = len(sender_id)
    pl = len(piv)
    if idl > n - 6:
        raise CryptoError("sender id of %d bytes too long for a %d-byte nonce (at most %d)" % (idl, n, n - 6))
    if not 1 <= pl <= _PIV_LEN:
        raise CryptoError("Partial IV of %d bytes; must be 1..5" % pl)
    if len(out) < n:
        raise CryptoError("nonce buffer of %d bytes, need %d" % (len(out), n))
    for i in range(n):
        out[i] = common_iv[i]
    out[0] ^= idl
    off = n - _PIV_LEN - idl
    for i in range(idl):
        out[off + i] ^= sender_id[i]
    off = n - pl
    for i in range(pl):
        out[off + i] ^= piv[i]
    return n


def nonce(common_iv, sender_id, piv):
    """The AEAD nonce for (sender id, Partial IV) as bytes (RFC 8613 section 5.2)."""
    common_iv = _bytes(common_iv, "common IV")
    out = bytearray(len(common_iv))
    nonce_into(out, common_iv, _bytes(sender_id, "sender id"), _bytes(piv, "Partial IV"))
    return bytes(out)


class Context:
    """An OSCORE security context (RFC 8613 section 3): keys of both sides and the common IV.

    ``sender_key`` protects what this end sends, ``recipient_key`` what it
    receives; ``sender_nonce(piv)`` and ``recipient_nonce(piv)`` build the
    nonce of a message from this end or from the other end. Build one with
    ``Context.from_secret`` (derivation) or directly from its parts.
    """

    def __init__(self, alg, sender_id, recipient_id, sender_key, recipient_key, common_iv):
        key_len, nonce_len = _alg(alg)
        sender_id = _bytes(sender_id, "sender id")
        recipient_id = _bytes(recipient_id, "recipient id")
        for what, i in (("sender id", sender_id), ("recipient id", recipient_id)):
            if len(i) > nonce_len - 6:
                raise CryptoError(
                    "%s of %d bytes too long for algorithm %d (at most %d)" % (what, len(i), alg, nonce_len - 6)
                )
        if sender_id == recipient_id:
            raise CryptoError("sender and recipient id are both %s: their nonces would collide" % (quote(sender_id),))
        for what, k in (("sender key", sender_key), ("recipient key", recipient_key)):
            if len(_bytes(k, what)) != key_len:
                raise CryptoError("%s is %d bytes; algorithm %d needs %d" % (what, len(k), alg, key_len))
        if len(_bytes(common_iv, "common IV")) != nonce_len:
            raise CryptoError("common IV is %d bytes; algorithm %d needs %d" % (len(common_iv), alg, nonce_len))
        self.alg = alg
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.sender_key = bytes(sender_key)
        self.recipient_key = bytes(recipient_key)
        self.common_iv = bytes(common_iv)

    @classmethod
    def from_secret(
        cls, master_secret, sender_id, recipient_id, alg=ALG_AES_CCM_16_64_256, master_salt=b"", id_context=None
    ):
        """Derive a context as RFC 8613 section 3.2.1 does."""
        key_len, nonce_len = _alg(alg)
        return cls(
            alg,
            sender_id,
            recipient_id,
            derive(master_secret, sender_id, "Key", key_len, alg, master_salt, id_context),
            derive(master_secret, recipient_id, "Key", key_len, alg, master_salt, id_context),
            derive(master_secret, b"", "IV", nonce_len, alg, master_salt, id_context),
        )

    def sender_nonce(self, piv):
        return nonce(self.common_iv, self.sender_id, piv)

    def recipient_nonce(self, piv):
        return nonce(self.common_iv, self.recipient_id, piv)

    def __repr__(self):
        # Never print keys.
        return "Context(alg=%d, sender_id=%r, recipient_id=%r)" % (self.alg, self.sender_id, self.recipient_id)


class NodeKeys:
    """Both directions of one node's link: the node sends as ``bytes([addr])``, the Pi as ``b""``.

    ``node_key`` seals node -> Pi messages, ``pi_key`` seals Pi -> node
    messages; both share ``common_iv`` (the sender ids keep the nonces apart).
    """

    def __init__(self, secret, addr, alg=ALG_AES_CCM_16_64_256):
        key_len, nonce_len = _alg(alg)
        secret = _bytes(secret, "node secret")
        if len(secret) != NODE_SECRET_LEN:
            raise CryptoError("node secret is %d bytes; must be %d" % (len(secret), NODE_SECRET_LEN))
        self.addr = addr
        self.alg = alg
        self.node_id = node_id(addr)
        self.pi_id = PI_ID
        self.node_key = derive(secret, self.node_id, "Key", key_len, alg)
        self.pi_key = derive(secret, PI_ID, "Key", key_len, alg)
        self.common_iv = derive(secret, b"", "IV", nonce_len, alg)

    @classmethod
    def from_site_key(cls, site_key, addr, generation=0, alg=ALG_AES_CCM_16_64_256):
        """What the Pi (which holds the site key) derives for node ``addr``."""
        return cls(node_secret(site_key, addr, generation), addr, alg)

    def key_for(self, sender_id):
        """The key that protects messages sent by ``sender_id`` on this link."""
        if sender_id == self.node_id:
            return self.node_key
        if sender_id == PI_ID:
            return self.pi_key
        raise CryptoError("sender id %s is not on the link of node %d" % (quote(sender_id), self.addr))

    def nonce(self, sender_id, piv):
        self.key_for(sender_id)
        return nonce(self.common_iv, sender_id, piv)

    def node_context(self):
        """The node's view: it sends with ``node_key`` and receives with ``pi_key``."""
        return Context(self.alg, self.node_id, PI_ID, self.node_key, self.pi_key, self.common_iv)

    def pi_context(self):
        """The Pi's view of this node: it sends with ``pi_key`` and receives with ``node_key``."""
        return Context(self.alg, PI_ID, self.node_id, self.pi_key, self.node_key, self.common_iv)

    def __repr__(self):
        return "NodeKeys(addr=%d, alg=%d)" % (self.addr, self.alg)
