"""phasecore.seal: the compact COSE_Encrypt0 envelope of docs/protocol.md section 2, on both interpreters."""

from phasecore import cbor, cose, frame, keys, msg, seal
from phasecore.errors import (
    AuthenticationError,
    MalformedError,
    PhasecoreError,
    ReplayError,
    SchemaError,
    SealError,
    UnknownKeyError,
)
from phasecore.replay import PIV_MAX, ReplayWindow, SequenceCounter
from portable import raises, unhex

KEY = bytes(range(32))
IV = bytes(range(100, 113))
# The typical reading of docs/protocol.md's byte budget, as CBOR.
READING_CBOR = unhex("8819090a191d3a1940761a0012d6871901f4185f0100")


class Store:
    def __init__(self, value=None):
        self.value = value

    def load(self):
        return self.value

    def save(self, n):
        self.value = n


def _sender(kid=b"\x07", start=None, key=KEY, alg=seal.ALG_AES_CCM_16_64_256):
    st = Store(start)
    return seal.SenderContext(kid, key, IV, SequenceCounter(st.load, st.save), alg)


def _recipient(kid=b"\x07", key=KEY, alg=seal.ALG_AES_CCM_16_64_256):
    return seal.RecipientContext(kid, key, IV, alg=alg)


def test_known_answers_from_independent_implementation():
    # Expected envelopes computed with pycryptodome's AES-CCM and cbor2 from
    # the construction in docs/protocol.md (nonce of RFC 8613 5.2, AAD the
    # Enc_structure ["Encrypt0", h'', [1, alg, kid, piv, kind]]).
    env = seal.seal_raw(0, READING_CBOR, _sender(b"\x07", 70000))
    assert env == unhex("03011170a1409f679b4d8755f27a9e2025e38727321fbfc3f2f274dc3d554b6b8021")
    env = seal.seal_raw(2, unhex("a10102"), _sender(b"", 0))
    assert env == unhex("1100cd25678c12e4d7e6eba6d5")
    env = seal.seal_raw(4, b"", _sender(b"\x07", PIV_MAX, KEY[:16], seal.ALG_AES_CCM_16_64_128))
    assert env == unhex("25fffffffffff393d6b70177f602")


def test_typical_reading_is_40_bytes_framed():
    env = seal.seal_raw(0, READING_CBOR, _sender(b"\x07", 70000))
    assert len(frame.encode(0, 7, env)) == 40


def test_round_trip_and_sequence_advances():
    snd = _sender()
    rcv = _recipient()
    for i in range(3):
        env = seal.seal_raw(5, b"hello %d" % i, snd)
        assert seal.open_raw(env, b"\x07", rcv) == (5, i, b"hello %d" % i)
    assert rcv.window.top == 2


def test_header_bits_and_shortest_piv():
    for seq, n in ((0, 1), (255, 1), (256, 2), (65535, 2), (65536, 3), (2**32, 5), (PIV_MAX, 5)):
        env = seal.seal_raw(3, b"x", _sender(start=seq))
        assert env[0] >> 6 == 0
        assert (env[0] >> 3) & 7 == 3
        assert env[0] & 7 == n, (seq, env[0])
        assert len(env) == 1 + n + 1 + seal.TAG_LEN
        assert seal.header(env) == (3, seq)


def test_malformed_envelopes():
    good = seal.seal_raw(0, b"abc", _sender(start=300))
    rcv = _recipient()
    cases = [
        b"",
        good[:9],  # shorter than HDR + PIV + tag
        bytes((0x40 | (good[0] & 0x3F),)) + good[1:],  # version 1
        bytes((good[0] & 0xF8,)) + good[1:],  # PIV length 0
        bytes((good[0] & 0xF8 | 6,)) + good[1:],  # PIV length 6
        bytes((good[0] & 0xF8 | 7,)) + good[1:],  # PIV length 7
        bytes((0x05,)) + bytes(12),  # PIV of 5 needs 14 bytes
        unhex("02 0001") + bytes(8),  # PIV not in shortest form
    ]
    for data in cases:
        raises(MalformedError, seal.open_raw, data, b"\x07", rcv)
    raises(MalformedError, seal.open_raw, "text", b"\x07", rcv)
    assert rcv.window.top == -1
    e = raises(MalformedError, seal.header, bytes((0x40,)) + bytes(10))
    assert "version" in str(e)


def test_errors_come_in_documented_order():
    snd = _sender()
    rcv = _recipient()
    env = seal.seal_raw(0, b"reading", snd)
    forged = env[:-1] + bytes((env[-1] ^ 1,))
    # Malformed beats unknown kid.
    raises(MalformedError, seal.open_raw, env[:5], b"\x09", rcv)
    # Unknown kid beats a bad tag.
    raises(UnknownKeyError, seal.open_raw, forged, b"\x09", rcv)
    raises(UnknownKeyError, seal.open_raw, env, 9, rcv)
    # A bad tag beats replay: a forged copy of an accepted message is a forgery.
    assert seal.open_raw(env, b"\x07", rcv)[1] == 0
    raises(AuthenticationError, seal.open_raw, forged, b"\x07", rcv)
    e = raises(ReplayError, seal.open_raw, env, b"\x07", rcv)
    assert "already" in str(e)
    for cls in (MalformedError, UnknownKeyError, AuthenticationError, ReplayError):
        assert issubclass(cls, SealError) and issubclass(cls, PhasecoreError)


def test_window_moves_only_after_tag_verifies():
    snd = _sender(start=10)
    rcv = _recipient()
    env = seal.seal_raw(0, b"r", snd)
    # A forgery claiming a far-ahead sequence number must not move the window,
    # or it would make every genuine message after it look old.
    fake = bytearray(seal.seal_raw(0, b"r", _sender(start=10**6, key=bytes(32))))
    raises(AuthenticationError, seal.open_raw, bytes(fake), b"\x07", rcv)
    assert rcv.window.top == -1
    assert seal.open_raw(env, b"\x07", rcv)[1] == 10
    assert rcv.window.top == 10


def test_clear_fields_are_authenticated():
    snd = _sender(start=1000)
    rcv = _recipient()
    env = bytearray(seal.seal_raw(0, b"payload", snd))
    # Change the kind (0 -> 2), the PIV, and each ciphertext/tag byte in turn.
    tampered = [bytes((env[0] | 0x10,)) + env[1:]]
    tampered.append(env[:2] + bytes((env[2] ^ 1,)) + env[3:])
    for i in range(3, len(env)):
        t = bytearray(env)
        t[i] ^= 0x80
        tampered.append(bytes(t))
    for t in tampered:
        raises(AuthenticationError, seal.open_raw, bytes(t), b"\x07", rcv)
    # The same envelope under another sender's kid does not verify either.
    other = seal.Recipients()
    other.add(seal.RecipientContext(b"\x08", KEY, IV))
    raises(AuthenticationError, seal.open_raw, bytes(env), b"\x08", other)
    assert seal.open_raw(bytes(env), b"\x07", rcv) == (0, 1000, b"payload")


def test_recipients_table_keeps_a_window_per_sender():
    table = seal.Recipients(max_senders=2)
    table.add(_recipient(b"\x01"))
    table.add(_recipient(b"\x02"))
    raises(SealError, table.add, _recipient(b"\x03"))
    e1 = seal.seal_raw(0, b"a", _sender(b"\x01", 5))
    e2 = seal.seal_raw(0, b"b", _sender(b"\x02", 5))
    assert seal.open_raw(e1, b"\x01", table) == (0, 5, b"a")
    assert seal.open_raw(e2, bytearray(b"\x02"), table) == (0, 5, b"b")
    raises(ReplayError, seal.open_raw, e1, b"\x01", table)
    raises(UnknownKeyError, seal.open_raw, e1, b"\x03", table)
    assert table.kids() == [b"\x01", b"\x02"] and len(table) == 2 and b"\x01" in table
    table.remove(b"\x02")
    raises(UnknownKeyError, seal.open_raw, e2, b"\x02", table)


def test_restored_window_refuses_messages_from_before_restart():
    snd = _sender()
    old = [seal.seal_raw(0, b"m", snd) for _ in range(5)]
    rcv = seal.RecipientContext(b"\x07", KEY, IV, ReplayWindow.restore(4))
    for env in old:
        raises(ReplayError, seal.open_raw, env, b"\x07", rcv)
    assert seal.open_raw(seal.seal_raw(0, b"m", snd), b"\x07", rcv)[1] == 5


def test_aad_and_nonce_match_their_definitions():
    # The hand-built AAD is the deterministic CBOR Enc_structure for every kid
    # and PIV length; the nonce matches the RFC 8613 5.2 construction.
    for kid in (b"", b"\x01", b"\xf7", b"1234567"):
        for alg in (seal.ALG_AES_CCM_16_64_128, seal.ALG_AES_CCM_16_64_256):
            key = KEY[:16] if alg == seal.ALG_AES_CCM_16_64_128 else KEY
            ctx = seal.RecipientContext(kid, key, IV, alg=alg)
            for piv in (b"\x00", b"\x01\x00", b"\xab\xcd\xef", b"\x01\x02\x03\x04\x05"):
                for kind in (0, 5):
                    aad = ctx._prepare(kind, piv)
                    ext = seal.external_aad(kind, kid, piv, alg)
                    assert bytes(aad) == cbor.dumps(["Encrypt0", b"", ext])
                    assert bytes(ctx._nonce) == keys.nonce(IV, kid, piv)


def test_to_cose_rebuilds_encrypt0_structure():
    env = seal.seal_raw(0, READING_CBOR, _sender(b"\x07", 70000))
    obj, ext = seal.to_cose(env, b"\x07")
    item = cbor.loads(obj)
    assert item.tag == 16
    protected, unprotected, ct = item.value
    assert protected == b""
    assert unprotected == {4: b"\x07", 6: unhex("011170")}
    assert ct == env[4:]
    assert ext == cbor.dumps([1, 11, b"\x07", unhex("011170"), 0])


def test_context_misuse_is_refused():
    raises(SealError, seal.RecipientContext, b"\x07", KEY[:16], IV)  # alg 11 needs 32 bytes
    raises(SealError, seal.RecipientContext, b"\x07", KEY, IV[:12])
    raises(SealError, seal.RecipientContext, b"12345678", KEY, IV)
    raises(SealError, seal.RecipientContext, b"\x07", KEY, IV, None, 3)
    raises(SchemaError, seal.seal_raw, 8, b"", _sender())
    raises(SchemaError, seal.seal_raw, -1, b"", _sender())


def test_kid_of_link_addresses():
    assert seal.kid_of(0) == b""
    assert seal.kid_of(7) == b"\x07"
    assert seal.kid_of(247) == b"\xf7"
    raises(UnknownKeyError, seal.kid_of, 255)
    raises(UnknownKeyError, seal.kid_of, 248)


def test_exhausted_sender_refuses_to_seal():
    st = Store(PIV_MAX)
    snd = seal.SenderContext(b"\x07", KEY, IV, SequenceCounter(st.load, st.save))
    seal.seal_raw(0, b"", snd)
    e = raises(PhasecoreError, seal.seal_raw, 0, b"", snd)
    assert "exhausted" in str(e)


SITE_KEY = bytes(range(200, 232))


def _counter(start=None):
    st = Store(start)
    return SequenceCounter(st.load, st.save)


def test_node_and_pi_contexts_from_key_hierarchy_talk_both_ways():
    nk = keys.NodeKeys.from_site_key(SITE_KEY, 7)
    # The node holds only its own secret; the Pi derives the same keys from the site key.
    node_snd, node_rcv = seal.contexts(keys.NodeKeys(keys.node_secret(SITE_KEY, 7), 7).node_context(), _counter())
    gw = seal.GatewayContexts(_counter())
    gw.add(nk)
    gw.add(keys.NodeKeys.from_site_key(SITE_KEY, 8))
    assert node_snd.kid == b"\x07" and node_rcv.kid == b""
    up = seal.seal_raw(0, READING_CBOR, node_snd)
    assert seal.open_raw(up, seal.kid_of(7), gw.recipients) == (0, 0, READING_CBOR)
    down = seal.seal_raw(2, b"cmd", gw.sender(7))
    assert seal.open_raw(down, seal.kid_of(0), node_rcv) == (2, 0, b"cmd")
    # A node's envelope does not open under another node's kid and keys.
    raises(AuthenticationError, seal.open_raw, up, b"\x08", gw.recipients)
    # The Pi's message to node 8 does not open at node 7.
    to8 = seal.seal_raw(2, b"cmd", gw.sender(8))
    raises(AuthenticationError, seal.open_raw, to8, b"", node_rcv)
    raises(UnknownKeyError, gw.sender, 9)
    assert gw.addrs() == [7, 8]
    gw.remove(8)
    raises(UnknownKeyError, seal.open_raw, to8, b"\x08", gw.recipients)


def test_gateway_uses_one_counter_for_all_nodes():
    gw = seal.GatewayContexts(_counter(41))
    for a in (1, 2, 3):
        gw.add(keys.NodeKeys.from_site_key(SITE_KEY, a))
    seqs = [seal.header(seal.seal_raw(4, b"", gw.sender(a)))[1] for a in (1, 2, 3, 1)]
    assert seqs == [41, 42, 43, 44]


def test_node_generation_changes_every_key():
    old = keys.NodeKeys.from_site_key(SITE_KEY, 7, 0)
    new = keys.NodeKeys.from_site_key(SITE_KEY, 7, 1)
    snd, _ = seal.contexts(new.node_context(), _counter())
    _, rcv = seal.contexts(old.pi_context(), _counter())
    raises(AuthenticationError, seal.open_raw, seal.seal_raw(0, b"x", snd), b"\x07", rcv)


READING_FIELDS = {
    "voltage_dV": 2314,
    "current_mA": 7482,
    "power_dW": 16502,
    "energy_Wh": 1234567,
    "frequency_dHz": 500,
    "pf_centi": 95,
    "phase": 1,
    "status": 0,
}


def test_ota_kinds_6_and_7_seal_and_open_through_the_message_layer():
    snd = _sender(start=5)
    rcv = _recipient()
    data = {"ota_id": 0xDEADBEEF, "index": 3, "data": bytes(range(222))}
    env = seal.seal(msg.OTA_DATA, data, snd)
    assert (env[0] >> 3) & 7 == msg.OTA_DATA and len(frame.encode(7, 0, env)) <= 256
    m = seal.open(env, b"\x07", rcv)
    assert (m.kind, m.fields) == (msg.OTA_DATA, data)
    status = {"ota_id": 1, "state": 1, "next": 4}
    m = seal.open(seal.seal(msg.OTA_STATUS, status, snd), b"\x07", rcv)
    assert (m.kind, m.fields) == (msg.OTA_STATUS, status)


def test_message_layer_round_trip():
    snd = _sender(start=70000)
    rcv = _recipient()
    env = seal.seal(msg.READING, READING_FIELDS, snd)
    # The same bytes as sealing the reading's CBOR directly (the budget's 34 + 6 bytes).
    assert env == unhex("03011170a1409f679b4d8755f27a9e2025e38727321fbfc3f2f274dc3d554b6b8021")
    m = seal.open(env, b"\x07", rcv)
    assert (m.kind, m.kid, m.seq) == (msg.READING, b"\x07", 70000)
    assert m.fields == READING_FIELDS
    assert "seq=70000" in repr(m)
    cmd = {"id": 9, "op": msg.OP_MOVE, "deadline_s": 1700000000, "phase": 2}
    m = seal.open(seal.seal(msg.COMMAND, cmd, snd), bytearray(b"\x07"), rcv)
    assert m.kind == msg.COMMAND and m.fields == cmd and m.seq == 70001


def test_schema_violation_is_refused_before_a_number_is_taken():
    snd = _sender(start=5)
    bad = dict(READING_FIELDS)
    bad["voltage_dV"] = 99999
    raises(SchemaError, seal.seal, msg.READING, bad, snd)
    raises(SchemaError, seal.seal, msg.COMMAND, {"id": 1}, snd)
    assert snd.counter.value == 5


def test_authentic_body_that_breaks_schema_raises_schema_error_and_counts_as_seen():
    snd = _sender()
    rcv = _recipient()
    env = seal.seal_raw(msg.READING, cbor.dumps([1, 2, 3]), snd)
    raises(SchemaError, seal.open, env, b"\x07", rcv)
    raises(ReplayError, seal.open, env, b"\x07", rcv)
    # Random bytes never reach the schema: they fail as SealErrors first.
    raises(MalformedError, seal.open, b"\xff" * 20, b"\x07", rcv)


def test_seal_into_is_the_node_path():
    # The node: reading into one buffer, sealed into another, framed into a third.
    body = bytearray(msg.READING_MAX_LEN)
    env = bytearray(msg.READING_MAX_LEN + seal.MAX_OVERHEAD)
    tx = bytearray(frame.MAX_PAYLOAD + frame.OVERHEAD)
    snd = _sender(start=70000)
    nb = msg.encode_reading_into(body, 2314, 7482, 16502, 1234567, 500, 95, 1, 0)
    ne = seal.seal_into(env, msg.READING, memoryview(body)[:nb], snd)
    nt = frame.encode_into(tx, 0, 7, memoryview(env)[:ne])
    assert nt == 40
    f = frame.Decoder().feed(tx[:nt])[0]
    assert f.payload == unhex("03011170a1409f679b4d8755f27a9e2025e38727321fbfc3f2f274dc3d554b6b8021")
    e = raises(SealError, seal.seal_into, bytearray(20), msg.READING, memoryview(body)[:nb], snd)
    assert "need" in str(e)


def test_rebuilt_cose_verifies_with_phasecore_cose():
    for kid, start in ((b"\x07", 70000), (b"", 0), (b"\xf7", PIV_MAX)):
        env = seal.seal_raw(msg.READING, READING_CBOR, _sender(kid, start))
        obj, ext = seal.to_cose(env, kid)
        assert ext == seal.external_aad(0, kid, env[1 : 1 + (env[0] & 7)])
        assert cose.decrypt(KEY, obj, ext, seal.ALG_AES_CCM_16_64_256, cose.base_iv(IV, kid)) == READING_CBOR
        forged = obj[:-1] + bytes((obj[-1] ^ 1,))
        raises(AuthenticationError, cose.decrypt, KEY, forged, ext, seal.ALG_AES_CCM_16_64_256, cose.base_iv(IV, kid))
