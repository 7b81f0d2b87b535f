"""Key hierarchy: RFC 8613 Appendix C derivations and nonces, node secrets, NodeKeys."""

from phasecore import keys
from phasecore.errors import CryptoError
from phasecore.kdf import hkdf
from portable import load_vectors, raises, unhex

SITE_KEY = bytes(range(0x40, 0x60))


def _derivations():
    v = load_vectors("oscore/rfc8613_appendix_c.json")["key_derivation"]
    assert len(v) == 5
    return v


def test_rfc8613_hkdf_info_encoding():
    for c in _derivations():
        idc = unhex(c["id_context"]) if "id_context" in c else None
        assert c["aead_alg"] == 10
        assert keys.hkdf_info(unhex(c["sender_id"]), idc, 10, "Key", 16) == unhex(c["info_sender_key"]), c["name"]
        assert keys.hkdf_info(unhex(c["recipient_id"]), idc, 10, "Key", 16) == unhex(c["info_recipient_key"])
        assert keys.hkdf_info(b"", idc, 10, "IV", 13) == unhex(c["info_common_iv"])


def test_rfc8613_context_derivation_and_nonces():
    for c in _derivations():
        idc = unhex(c["id_context"]) if "id_context" in c else None
        ctx = keys.Context.from_secret(
            unhex(c["master_secret"]),
            unhex(c["sender_id"]),
            unhex(c["recipient_id"]),
            alg=10,
            master_salt=unhex(c["master_salt"]),
            id_context=idc,
        )
        assert ctx.sender_key == unhex(c["sender_key"]), c["name"]
        assert ctx.recipient_key == unhex(c["recipient_key"]), c["name"]
        assert ctx.common_iv == unhex(c["common_iv"]), c["name"]
        assert ctx.sender_nonce(b"\x00") == unhex(c["sender_nonce_piv0"]), c["name"]
        assert ctx.recipient_nonce(b"\x00") == unhex(c["recipient_nonce_piv0"]), c["name"]


def test_rfc8613_request_nonces_sequence_20():
    # C.4-C.6: the client's request with Sender Sequence Number 20 (PIV 0x14).
    by_name = dict((c["name"], c) for c in _derivations())
    prot = dict((p["name"], p) for p in load_vectors("oscore/rfc8613_appendix_c.json")["protection"])
    for ctx_name, prot_name in (
        ("RFC 8613 Appendix C.1.1", "RFC 8613 Appendix C.4"),
        ("RFC 8613 Appendix C.2.1", "RFC 8613 Appendix C.5"),
        ("RFC 8613 Appendix C.3.1", "RFC 8613 Appendix C.6"),
    ):
        c = by_name[ctx_name]
        got = keys.nonce(unhex(c["common_iv"]), unhex(c["sender_id"]), b"\x14")
        assert got == unhex(prot[prot_name]["nonce"]), prot_name


def test_nonce_layout_and_piv_padding():
    iv = bytes(13)
    assert keys.nonce(iv, b"", b"\x01") == unhex("00000000000000000000000001")
    assert keys.nonce(iv, b"\x07", b"\x01\x02\x03") == unhex("01000000000000070000010203")
    assert keys.nonce(iv, b"\x01\x02\x03\x04\x05\x06\x07", b"\xff" * 5) == unhex("0701020304050607ffffffffff")
    out = bytearray(13)
    assert keys.nonce_into(out, bytes(range(13)), b"\x05", b"\x01") == 13
    assert bytes(out) == keys.nonce(bytes(range(13)), b"\x05", b"\x01")
    # 7-byte nonces (AES-CCM-64-*): at most a 1-byte id.
    assert keys.nonce(bytes(7), b"\x09", b"\x02") == unhex("01090000000002")
    raises(CryptoError, keys.nonce, bytes(7), b"\x09\x09", b"\x02")
    raises(CryptoError, keys.nonce, iv, bytes(8), b"\x01")
    raises(CryptoError, keys.nonce, iv, b"", b"")
    raises(CryptoError, keys.nonce, iv, b"", bytes(6))
    raises(CryptoError, keys.nonce_into, bytearray(12), iv, b"", b"\x01")
    raises(CryptoError, keys.nonce, iv, "id", b"\x01")


def test_node_secret_matches_protocol_definition():
    want = hkdf(SITE_KEY, 32, b"", b"phasekit node \x07\x00\x00")
    assert keys.node_secret(SITE_KEY, 7) == want
    assert keys.node_secret(SITE_KEY, 7, 0) == want
    assert keys.node_secret(SITE_KEY, 7, 258) == hkdf(SITE_KEY, 32, b"", b"phasekit node \x07\x01\x02")
    secrets = set()
    for addr in (1, 2, 247):
        for gen in (0, 1, 65535):
            secrets.add(keys.node_secret(SITE_KEY, addr, gen))
    assert len(secrets) == 9
    for addr in (0, 248, 255, -1, 1.0, True, None):
        raises(CryptoError, keys.node_secret, SITE_KEY, addr)
    for gen in (-1, 65536, "1", None):
        raises(CryptoError, keys.node_secret, SITE_KEY, 1, gen)
    for key in (bytes(16), bytes(31), bytes(33), "k" * 32, None):
        raises(CryptoError, keys.node_secret, key, 1)


def test_node_keys_both_directions():
    secret = keys.node_secret(SITE_KEY, 42)
    nk = keys.NodeKeys(secret, 42)
    assert nk.node_id == b"\x2a" and nk.pi_id == b"" and nk.alg == 11
    # Exactly the OSCORE derivation with the node as sender and the Pi as recipient.
    ctx = keys.Context.from_secret(secret, b"\x2a", b"", alg=11)
    assert (nk.node_key, nk.pi_key, nk.common_iv) == (ctx.sender_key, ctx.recipient_key, ctx.common_iv)
    assert len(nk.node_key) == 32 and len(nk.common_iv) == 13 and nk.node_key != nk.pi_key
    assert keys.NodeKeys.from_site_key(SITE_KEY, 42).node_key == nk.node_key
    assert keys.NodeKeys.from_site_key(SITE_KEY, 42, generation=1).node_key != nk.node_key
    assert nk.key_for(b"\x2a") == nk.node_key and nk.key_for(b"") == nk.pi_key
    raises(CryptoError, nk.key_for, b"\x2b")
    # The two directions never share a nonce, even with equal sequence numbers.
    for piv in (b"\x00", b"\x01", b"\x2a", b"\xff\xff\xff\xff\xff"):
        assert nk.nonce(b"\x2a", piv) != nk.nonce(b"", piv)
    node, pi = nk.node_context(), nk.pi_context()
    assert node.sender_key == pi.recipient_key == nk.node_key
    assert pi.sender_key == node.recipient_key == nk.pi_key
    assert node.sender_nonce(b"\x05") == pi.recipient_nonce(b"\x05") == nk.nonce(b"\x2a", b"\x05")
    assert "node_key" not in repr(nk) and repr(SITE_KEY) not in repr(node)
    nk128 = keys.NodeKeys(secret, 42, alg=keys.ALG_AES_CCM_16_64_128)
    assert len(nk128.node_key) == 16
    raises(CryptoError, keys.NodeKeys, secret, 42, 1)
    raises(CryptoError, keys.NodeKeys, secret[:16], 42)
    raises(CryptoError, keys.NodeKeys, secret, 0)


def test_context_checks():
    raises(CryptoError, keys.Context.from_secret, b"s", b"\x01", b"\x01")
    raises(CryptoError, keys.Context.from_secret, b"", b"\x01", b"")
    raises(CryptoError, keys.Context.from_secret, b"s", bytes(8), b"")
    raises(CryptoError, keys.Context.from_secret, b"s", b"\x01", b"", alg=3)
    raises(CryptoError, keys.Context.from_secret, b"s", b"\x01\x02", b"", alg=12)  # 7-byte nonce: 1-byte ids
    raises(CryptoError, keys.Context, 10, b"\x01", b"", bytes(16), bytes(32), bytes(13))
    raises(CryptoError, keys.Context, 10, b"\x01", b"", bytes(16), bytes(16), bytes(12))
    raises(CryptoError, keys.hkdf_info, b"", None, 10, "key", 16)
    ctx = keys.Context.from_secret(b"s", b"\x01", b"", alg=13)
    assert len(ctx.sender_key) == 32 and len(ctx.common_iv) == 7
