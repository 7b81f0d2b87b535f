"""The sealing layer: compact COSE_Encrypt0 envelopes (docs/protocol.md section 2).

Every non-empty frame payload is one sealed envelope:

    HDR (1) | PIV (1..5) | CIPHERTEXT || TAG (8)
    HDR bits 7-6 version 0, bits 5-3 message kind, bits 2-0 PIV length

It is COSE_Encrypt0 (RFC 9052) with AES-CCM-16-64-256 in the manner of OSCORE
(RFC 8613): the fixed parts of the COSE structure are implied, the key id is
the link sender, the nonce is built from the sender id and its sequence
number (RFC 8613 section 5.2), and the kind and sequence number, sent in
clear, are authenticated through the external AAD ``[1, alg, kid, piv, kind]``.
``to_cose`` rebuilds the full COSE_Encrypt0 so any COSE library can verify it.

Public names:

- ``seal(kind, fields, sender) -> bytes`` and ``open(data, kid, recipients)
  -> Message``: the message layer. ``fields`` is the dict ``phasecore.msg``
  encodes for that kind; ``Message`` has ``kind``, ``kid``, ``seq`` and the
  decoded ``fields``. ``kid`` is ``kid_of(frame.src)``.
- ``seal_raw(kind, plaintext, sender)``, ``seal_into(out, kind, plaintext,
  sender) -> n`` (no allocation: the node's path, with
  ``msg.encode_reading_into`` and ``frame.encode_into``) and
  ``open_raw(data, kid, recipients) -> (kind, seq, plaintext)``: the same
  around plaintext bytes. An envelope is at most ``len(plaintext) +
  MAX_OVERHEAD`` bytes.
- ``SenderContext``, ``RecipientContext``, ``Recipients``: keys, nonce
  material, the sender's ``replay.SequenceCounter``, the recipient's
  ``replay.ReplayWindow``; ``contexts(keys_context, counter)`` builds one
  end's pair from the key hierarchy (``phasecore.keys``, docs/protocol.md
  section 4) and ``GatewayContexts`` holds the Pi's, one pair per node.
- ``header(data) -> (kind, seq)``: read the clear part without any key (the
  LoRa gateway and the server's de-duplication use it).
- ``kid_of(addr)``: the key id of a link address (the Pi, 0, is ``b""``).

``open`` checks, in this order, and raises: ``MalformedError`` (cannot parse),
``UnknownKeyError`` (no context for the kid), ``AuthenticationError`` (the tag
does not verify), ``ReplayError`` (sequence number seen or too old). The
replay window is updated only after the tag verifies, so forged traffic can
never move it. All four are ``SealError`` subclasses; a body that
authenticates but breaks the schema raises ``SchemaError`` from ``msg``.

Contexts keep scratch buffers for the nonce and AAD so a seal allocates
little; a context must not be used from two threads at once.
"""

from phasecore import ccm, keys, msg
from phasecore.errors import (
    AuthenticationError,
    MalformedError,
    ReplayError,
    SchemaError,
    SealError,
    UnknownKeyError,
    quote,
)
from phasecore.replay import PIV_MAX, ReplayWindow

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = (
    "seal",
    "open",
    "seal_raw",
    "open_raw",
    "header",
    "to_cose",
    "external_aad",
    "kid_of",
    "Message",
    "SenderContext",
    "RecipientContext",
    "Recipients",
    "contexts",
    "GatewayContexts",
    "ALG_AES_CCM_16_64_128",
    "ALG_AES_CCM_16_64_256",
    "TAG_LEN",
    "NONCE_LEN",
    "VERSION",
    "MAX_KIND",
    "MAX_OVERHEAD",
    "seal_into",
)

# COSE algorithm identifiers (RFC 9053 section 4.2, table 6).
ALG_AES_CCM_16_64_128 = keys.ALG_AES_CCM_16_64_128
ALG_AES_CCM_16_64_256 = keys.ALG_AES_CCM_16_64_256
_KEY_LEN = {ALG_AES_CCM_16_64_128: 16, ALG_AES_CCM_16_64_256: 32}
TAG_LEN = const(8)
NONCE_LEN = const(13)
VERSION = const(0)
# Kinds 0..5 are defined (docs/protocol.md section 3), 6 and 7 are reserved.
MAX_KIND = const(5)
# The longest kid the nonce can carry: nonce length - 6 (RFC 8613 section 5.2).
_MAX_KID = const(7)
_PIV_BYTES = const(5)
# The smallest envelope: HDR, a one-byte PIV, an empty ciphertext and the tag.
_MIN_LEN = const(1 + 1 + 8)
# HDR, the longest PIV and the tag.
MAX_OVERHEAD = const(1 + 5 + 8)

# Enc_structure = ["Encrypt0", h'', external_aad] (RFC 9052 section 5.3) up to
# the external_aad byte string's head: 83, text(8) "Encrypt0", bytes(0).
_ENC0_PREFIX = b"\x83\x68Encrypt0\x40"


def kid_of(addr):
    """The key id of a link address: the Pi (0) is ``b""``, node n is ``bytes([n])``."""
    if addr == 0 and isinstance(addr, int):
        return keys.PI_ID
    if not isinstance(addr, int) or not 0 < addr <= 247:
        raise UnknownKeyError("link address %s has no key id (0..247)" % (quote(addr),))
    return keys.node_id(addr)


def _piv_len(seq):
    n = 1
    # No int.bit_length on MicroPython; shifting is exact on long ints too.
    while n < _PIV_BYTES and seq >> (8 * n):
        n += 1
    return n


class _Crypto:
    """Key, common IV and scratch buffers shared by sender and recipient contexts."""

    def __init__(self, kid, key, common_iv, alg, backend):
        if not isinstance(kid, (bytes, bytearray)) or len(kid) > _MAX_KID:
            raise SealError("kid %s must be bytes of at most %d" % (quote(kid), _MAX_KID))
        klen = _KEY_LEN.get(alg)
        if klen is None:
            raise SealError("COSE algorithm %s not supported (10 or 11, AES-CCM-16-64)" % (quote(alg),))
        if len(key) != klen:
            raise SealError("key of %d bytes for COSE algorithm %d, need %d" % (len(key), alg, klen))
        if len(common_iv) != NONCE_LEN:
            raise SealError("common IV of %d bytes, need %d" % (len(common_iv), NONCE_LEN))
        self.kid = bytes(kid)
        self.alg = alg
        self._ccm = ccm.CCM(key, TAG_LEN, NONCE_LEN, backend)
        self.backend = self._ccm.backend
        # Nonce = common IV xor (len(kid) | kid left-padded to 7 | PIV left-padded to 5):
        # the first 8 bytes are fixed per kid, only the last 5 change.
        n = bytearray(common_iv)
        kid_off = 1 + _MAX_KID - len(kid)
        n[0] ^= len(kid)
        for i in range(len(kid)):
            n[kid_off + i] ^= kid[i]
        self._iv_tail = bytes(n[8:])
        self._nonce = n
        # AAD = _ENC0_PREFIX | bstr head | 85 01 alg | bstr(kid) | bstr(piv) | kind
        fixed = _ENC0_PREFIX + b"\x00\x85\x01" + bytes((alg, 0x40 + len(self.kid))) + self.kid
        self._aad = bytearray(len(fixed) + 1 + _PIV_BYTES + 1)
        self._aad[: len(fixed)] = fixed
        self._aad_mv = memoryview(self._aad)
        self._piv_off = len(fixed)
        # external_aad length without the PIV bytes: 85 01 alg kid-head kid piv-head kind.
        self._ext_base = 6 + len(self.kid)

    def _prepare(self, kind, piv):
        """Fill the nonce and the AAD for (kind, piv); return the AAD as a memoryview."""
        n = len(piv)
        nonce = self._nonce
        tail = self._iv_tail
        pad = _PIV_BYTES - n
        for i in range(_PIV_BYTES):
            nonce[8 + i] = tail[i] ^ (piv[i - pad] if i >= pad else 0)
        aad = self._aad
        aad[len(_ENC0_PREFIX)] = 0x40 + self._ext_base + n
        p = self._piv_off
        aad[p] = 0x40 + n
        aad[p + 1 : p + 1 + n] = piv
        aad[p + 1 + n] = kind
        return self._aad_mv[: p + 2 + n]


class SenderContext(_Crypto):
    """What a sender seals with: kid, key, common IV and a persisted ``SequenceCounter``.

    ``counter`` is a ``phasecore.replay.SequenceCounter`` (or anything with
    ``next()`` that keeps its contract): it must be the only counter ever used
    with this key.
    """

    def __init__(self, kid, key, common_iv, counter, alg=ALG_AES_CCM_16_64_256, backend=None):
        _Crypto.__init__(self, kid, key, common_iv, alg, backend)
        self.counter = counter


class RecipientContext(_Crypto):
    """What a recipient opens one sender's messages with: that sender's key and a replay window.

    ``window`` defaults to a fresh ``ReplayWindow()``; after a restart pass
    ``ReplayWindow.restore(last_seq)`` so old messages cannot be replayed.
    ``get(kid)`` returns the context itself for its own kid, so a node with a
    single peer passes its one context to ``open``.
    """

    def __init__(self, kid, key, common_iv, window=None, alg=ALG_AES_CCM_16_64_256, backend=None):
        _Crypto.__init__(self, kid, key, common_iv, alg, backend)
        self.window = ReplayWindow() if window is None else window

    def get(self, kid):
        return self if kid == self.kid else None


class Recipients:
    """Recipient contexts by kid, at most ``max_senders`` (the Pi's view of its nodes)."""

    def __init__(self, max_senders=247):
        self.max_senders = max_senders
        self._by_kid = {}

    def add(self, ctx):
        if ctx.kid not in self._by_kid and len(self._by_kid) >= self.max_senders:
            raise SealError("recipient table full (%d senders)" % self.max_senders)
        self._by_kid[ctx.kid] = ctx
        return ctx

    def get(self, kid):
        return self._by_kid.get(kid)

    def remove(self, kid):
        self._by_kid.pop(kid, None)

    def kids(self):
        return sorted(self._by_kid)

    def __contains__(self, kid):
        return kid in self._by_kid

    def __len__(self):
        return len(self._by_kid)


def contexts(link, counter, window=None, backend=None):
    """``(SenderContext, RecipientContext)`` for one end of a link.

    ``link`` is a ``phasecore.keys.Context`` (``NodeKeys.node_context()`` on a
    node, ``NodeKeys.pi_context()`` on the Pi): its sender id and key seal
    what this end sends, with ``counter``; its recipient id and key open
    what the other end sends, through ``window`` (a fresh ``ReplayWindow``
    unless one is restored).
    """
    snd = SenderContext(link.sender_id, link.sender_key, link.common_iv, counter, link.alg, backend)
    rcv = RecipientContext(link.recipient_id, link.recipient_key, link.common_iv, window, link.alg, backend)
    return snd, rcv


class GatewayContexts:
    """The Pi's contexts for all its nodes: one persisted counter, a window per node.

    The Pi sends to node ``addr`` under that node's Pi key (``kid`` ``b""``),
    all with the one ``counter``: every key sees increasing, never repeated
    sequence numbers, and the Pi persists one value instead of one per node.
    ``recipients`` is the table ``open`` takes for frames from the nodes.

        gw = GatewayContexts(counter)
        gw.add(keys.NodeKeys.from_site_key(site_key, 7))
        wire = frame.encode(7, 0, seal.seal(msg.COMMAND, body, gw.sender(7)))
        m = seal.open(f.payload, seal.kid_of(f.src), gw.recipients)
    """

    def __init__(self, counter, max_nodes=247, backend=None):
        self.counter = counter
        self.backend = backend
        self.recipients = Recipients(max_nodes)
        self._senders = {}

    def add(self, node_keys, window=None):
        """Add (or re-key) node ``node_keys.addr`` from its ``phasecore.keys.NodeKeys``."""
        snd, rcv = contexts(node_keys.pi_context(), self.counter, window, self.backend)
        self.recipients.add(rcv)
        self._senders[node_keys.addr] = snd
        return rcv

    def sender(self, addr):
        """The context that seals messages from the Pi to node ``addr``."""
        ctx = self._senders.get(addr)
        if ctx is None:
            raise UnknownKeyError("no key for node %s" % (quote(addr),))
        return ctx

    def remove(self, addr):
        self._senders.pop(addr, None)
        self.recipients.remove(kid_of(addr))

    def addrs(self):
        return sorted(self._senders)


class Message:
    """An opened message: ``kind``, sender ``kid``, sequence number ``seq`` and decoded ``fields``."""

    __slots__ = ("kind", "kid", "seq", "fields")

    def __init__(self, kind, kid, seq, fields):
        self.kind = kind
        self.kid = kid
        self.seq = seq
        self.fields = fields

    def __repr__(self):
        fields = quote(self.fields)
        return "Message(kind=%d, kid=%s, seq=%d, fields=%s)" % (self.kind, quote(self.kid), self.seq, fields)


def _check_kind(kind):
    if not isinstance(kind, int) or not 0 <= kind <= MAX_KIND:
        raise SchemaError("message kind %s outside 0..%d" % (quote(kind), MAX_KIND))


def seal_into(out, kind, plaintext, sender):
    """Seal ``plaintext`` into ``out`` (bytearray or memoryview); return the envelope length.

    Takes the sender's next sequence number. Allocates only small views (and a
    long int per number above 2**30 on an ESP32), so the node can seal every
    reading into one buffer of ``len(plaintext) + OVERHEAD`` bytes.
    """
    _check_kind(kind)
    # The number is taken (and its block persisted) before anything is sent.
    seq = sender.counter.next()
    if not 0 <= seq <= PIV_MAX:
        raise SealError("sequence number %s outside 0..PIV_MAX" % (quote(seq),))
    n = _piv_len(seq)
    total = 1 + n + len(plaintext) + TAG_LEN
    if len(out) < total:
        # The number is lost, which is harmless: numbers may be skipped, never repeated.
        raise SealError("envelope buffer of %d bytes, need %d" % (len(out), total))
    out[0] = (VERSION << 6) | (kind << 3) | n
    for i in range(n, 0, -1):
        out[i] = seq & 0xFF
        seq >>= 8
    mv = memoryview(out)
    aad = sender._prepare(kind, mv[1 : 1 + n])
    sender._ccm.encrypt_into(mv[1 + n : total], sender._nonce, plaintext, aad)
    return total


def seal_raw(kind, plaintext, sender):
    """Seal ``plaintext`` (bytes) as a message of ``kind``; return the envelope as bytes."""
    out = bytearray(len(plaintext) + MAX_OVERHEAD)
    n = seal_into(out, kind, plaintext, sender)
    return bytes(out[:n]) if n < len(out) else bytes(out)


def seal(kind, fields, sender):
    """Encode ``fields`` as a message of ``kind`` (``phasecore.msg.encode``, validated) and seal it."""
    return seal_raw(kind, msg.encode(kind, fields), sender)


def header(data):
    """``(kind, seq)`` from an envelope's clear part; ``MalformedError`` if it cannot be parsed.

    Nothing here is authenticated until ``open`` verifies the tag.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError("sealed envelope must be bytes, not %s" % type(data).__name__)
    size = len(data)
    if size < _MIN_LEN:
        raise MalformedError("sealed envelope of %d bytes is shorter than the %d-byte minimum" % (size, _MIN_LEN))
    hdr = data[0]
    if hdr >> 6 != VERSION:
        raise MalformedError("envelope version %d at byte 0, only %d is defined" % (hdr >> 6, VERSION))
    kind = (hdr >> 3) & 7
    if kind > MAX_KIND:
        raise MalformedError("envelope kind %d at byte 0 is reserved" % kind)
    n = hdr & 7
    if not 1 <= n <= _PIV_BYTES:
        raise MalformedError("PIV length %d at byte 0 outside 1..5" % n)
    if size < 1 + n + TAG_LEN:
        raise MalformedError("sealed envelope of %d bytes too short for a %d-byte PIV and the tag" % (size, n))
    if n > 1 and data[1] == 0:
        raise MalformedError("PIV at byte 1 is not in shortest form (leading zero)")
    seq = 0
    for i in range(1, 1 + n):
        seq = (seq << 8) | data[i]
    return kind, seq


def open_raw(data, kid, recipients):
    """Verify and decrypt an envelope from sender ``kid``; return ``(kind, seq, plaintext)``.

    ``recipients`` is a ``Recipients`` table or a single ``RecipientContext``.
    """
    kind, seq = header(data)
    if not isinstance(kid, bytes):
        kid = _as_kid(kid)
    ctx = recipients.get(kid)
    if ctx is None:
        raise UnknownKeyError("no key for kid %s" % (quote(kid),))
    n = data[0] & 7
    mv = memoryview(data)
    aad = ctx._prepare(kind, mv[1 : 1 + n])
    body = mv[1 + n :]
    out = bytearray(len(body) - TAG_LEN)
    try:
        ctx._ccm.decrypt_into(out, ctx._nonce, body, aad)
    except AuthenticationError:
        raise AuthenticationError(
            "tag of kind-%d message %d from kid %s does not verify" % (kind, seq, quote(kid))
        ) from None
    # Only an authentic message may move the window (RFC 8613 section 7.4).
    try:
        ctx.window.accept(seq)
    except ReplayError as e:
        raise ReplayError("kid %s: %s" % (quote(kid), e)) from None
    return kind, seq, bytes(out)


def open(data, kid, recipients):
    """Open an envelope from sender ``kid`` and decode its body; return a ``Message``.

    Raises the ``SealError``s of ``open_raw`` in their order; a body that
    authenticates but breaks the schema then raises ``SchemaError`` or
    ``CBORDecodeError`` from ``phasecore.msg`` (the sequence number counts as
    seen: the sender did send it).
    """
    if not isinstance(kid, bytes):
        kid = _as_kid(kid)
    kind, seq, plaintext = open_raw(data, kid, recipients)
    return Message(kind, kid, seq, msg.decode(kind, plaintext))


def _as_kid(kid):
    if isinstance(kid, (bytearray, memoryview)):
        return bytes(kid)
    raise UnknownKeyError("kid must be bytes, not %s" % type(kid).__name__)


def external_aad(kind, kid, piv, alg=ALG_AES_CCM_16_64_256):
    """The external AAD, CBOR ``[1, alg, kid, piv, kind]`` (``phasecore.cose.compact_external_aad``)."""
    from phasecore import cose

    return cose.compact_external_aad(kind, kid, piv, alg)


def to_cose(data, kid, alg=ALG_AES_CCM_16_64_256):
    """Rebuild the full COSE_Encrypt0 of an envelope: ``(cose_bytes, external_aad)``.

    The object is ``16([h'', {4: kid, 6: piv}, ciphertext || tag])`` (RFC 9052
    section 5.2, built by ``phasecore.cose.rebuild``); with ``external_aad``,
    the recipient's key and the nonce ``keys.nonce(common_iv, kid, piv)`` (or
    the Base IV ``cose.base_iv(common_iv, kid)``) it verifies in any COSE
    library. Nothing is verified here.
    """
    from phasecore import cose

    kind, _ = header(data)
    n = data[0] & 7
    return cose.rebuild(bytes(kid), bytes(data[1 : 1 + n]), kind, bytes(data[1 + n :]), alg)
