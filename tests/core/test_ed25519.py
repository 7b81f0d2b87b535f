"""Ed25519 verification: RFC 8032 section 7.1 and Wycheproof vectors, the strict rules, bad input.

Runs on CPython and, through tests/test_micropython.py, on the MicroPython
unix port: every vector, every case (about 0.6 s there for the 150 Wycheproof
cases).
"""

from phasecore.ed25519 import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, verify
from phasecore.errors import PhasecoreError, SignatureError
from portable import load_vectors, raises, unhex

L = 2**252 + 27742317777372353535851937790883648493

# The eight points of order dividing 8, canonically encoded (order 1, 2, 4, 4, 8, 8, 8, 8).
SMALL_ORDER = (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
)
# The base point B, encoded (y = 4/5, x even).
B_ENC = "5866666666666666666666666666666666666666666666666666666666666666"


def _rfc():
    return load_vectors("ed25519/rfc8032_section_7_1.json")["vectors"]


def _test1():
    c = _rfc()[0]
    return unhex(c["public_key"]), unhex(c["message"]), unhex(c["signature"])


def _reason(fn, *args):
    return raises(SignatureError, fn, *args).reason


def test_rfc8032_section_7_1_vectors_verify():
    v = _rfc()
    assert [c["name"] for c in v] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    assert [len(c["message"]) // 2 for c in v] == [0, 1, 2, 1023, 64]
    for c in v:
        assert verify(unhex(c["public_key"]), unhex(c["message"]), unhex(c["signature"])) is None


def test_rfc8032_vectors_refused_for_another_message_or_key():
    v = _rfc()
    for i, c in enumerate(v):
        pk, msg, sig = unhex(c["public_key"]), unhex(c["message"]), unhex(c["signature"])
        assert _reason(verify, pk, msg + b"\x00", sig) == "mismatch", c["name"]
        other = unhex(v[(i + 1) % len(v)]["public_key"])
        assert _reason(verify, other, msg, sig) == "mismatch", c["name"]


def test_wycheproof_ed25519_all_cases():
    w = load_vectors("ed25519/wycheproof_ed25519_test.json")
    seen = {"valid": 0, "invalid": 0}
    for g in w["testGroups"]:
        pk = unhex(g["publicKey"]["pk"])
        for t in g["tests"]:
            msg, sig = unhex(t["msg"]), unhex(t["sig"])
            if t["result"] == "valid":
                verify(pk, msg, sig)
            else:
                raises(SignatureError, verify, pk, msg, sig)
            seen[t["result"]] += 1
    assert seen == {"valid": 88, "invalid": 62}
    assert w["numberOfTests"] == 150


def test_wycheproof_invalid_cases_fail_for_the_expected_reason():
    # Which check catches a Wycheproof case follows from its flag; a case
    # caught by a later check than its flag implies would mean an earlier
    # check is missing.
    expected = {
        "TruncatedSignature": ("length",),
        "SignatureWithGarbage": ("length",),
        "CompressedSignature": ("length",),
        "SignatureMalleability": ("s-range",),
        "InvalidKtv": ("s-range",),
        "InvalidSignature": ("s-range", "point", "small-order", "mismatch"),
        "InvalidEncoding": ("point", "small-order", "mismatch"),
    }
    w = load_vectors("ed25519/wycheproof_ed25519_test.json")
    by_reason = {}
    for g in w["testGroups"]:
        pk = unhex(g["publicKey"]["pk"])
        for t in g["tests"]:
            if t["result"] != "invalid":
                continue
            reason = _reason(verify, pk, unhex(t["msg"]), unhex(t["sig"]))
            assert reason in expected[t["flags"][0]], (t["tcId"], reason)
            by_reason[t["tcId"]] = reason
    assert by_reason[60] == "small-order"  # R == 0: y = 0 is a point of order 4
    assert by_reason[61] == "point"  # R = ff..ff: y >= p
    assert by_reason[85] == "s-range"  # S just above the bound
    assert sorted(set(by_reason.values())) == ["length", "mismatch", "point", "s-range", "small-order"]


def test_s_must_be_below_the_group_order():
    pk, msg, sig = _test1()
    s = int.from_bytes(sig[32:], "little")
    e = raises(SignatureError, verify, pk, msg, sig[:32] + (s + L).to_bytes(32, "little"))
    assert e.reason == "s-range" and "RFC 8032 5.1.7" in str(e)
    for big in (L, 2**253 - 1, 2**256 - 1):
        assert _reason(verify, pk, msg, sig[:32] + big.to_bytes(32, "little")) == "s-range"
    # L - 1 is in range: refused, but by the equation
    assert _reason(verify, pk, msg, sig[:32] + (L - 1).to_bytes(32, "little")) == "mismatch"


def test_small_order_public_keys_refused():
    _, msg, sig = _test1()
    for enc in SMALL_ORDER:
        e = raises(SignatureError, verify, unhex(enc), msg, sig)
        assert e.reason == "small-order", enc
        assert "public key" in str(e)


def test_identity_key_universal_forgery_refused():
    # With A = identity, [S]B = R + [k]A holds for R = [S]B whatever the
    # message: the cofactorless equation alone would accept this for any text.
    sig = unhex(B_ENC) + (1).to_bytes(32, "little")
    for msg in (b"", b"firmware 9.9.9", b"anything at all"):
        assert _reason(verify, unhex(SMALL_ORDER[0]), msg, sig) == "small-order"


def test_small_order_r_refused():
    pk, msg, _ = _test1()
    for enc in SMALL_ORDER:
        e = raises(SignatureError, verify, pk, msg, unhex(enc) + bytes(32))
        assert e.reason == "small-order", enc
        assert "R" in str(e)


def test_non_canonical_and_off_curve_encodings_refused():
    pk, msg, sig = _test1()
    p = 2**255 - 19
    bad_keys = (
        p.to_bytes(32, "little"),  # y = p: non-canonical 0
        (p + 1).to_bytes(32, "little"),  # y = p + 1: non-canonical encoding of the identity
        (2**255 - 1).to_bytes(32, "little"),  # y = 2^255 - 1
        (1 + 2**255).to_bytes(32, "little"),  # y = 1 (x = 0) with the sign bit set
        (p - 1 + 2**255).to_bytes(32, "little"),  # y = -1 (x = 0) with the sign bit set
        (2).to_bytes(32, "little"),  # y = 2: (y^2 - 1)/(d y^2 + 1) is not a square
    )
    for key in bad_keys:
        e = raises(SignatureError, verify, key, msg, sig)
        assert e.reason == "point", key
        assert "public key" in str(e) and "RFC 8032 5.1.3" in str(e)
    for r in bad_keys:
        e = raises(SignatureError, verify, pk, msg, r + sig[32:])
        assert e.reason == "point" and "signature R" in str(e)


def test_wrong_lengths_and_types_refused():
    pk, msg, sig = _test1()
    assert PUBLIC_KEY_SIZE == 32 and SIGNATURE_SIZE == 64
    for k in (b"", pk[:31], pk + b"\x00"):
        e = raises(SignatureError, verify, k, msg, sig)
        assert e.reason == "length" and ("%d bytes" % len(k)) in str(e)
    for s in (b"", sig[:63], sig + b"\x00", sig + sig):
        e = raises(SignatureError, verify, pk, msg, s)
        assert e.reason == "length" and ("%d bytes" % len(s)) in str(e)
    for args in ((None, msg, sig), (pk, msg, "00" * 64), (pk, "text", sig), (pk, None, sig), (1, msg, sig)):
        e = raises(SignatureError, verify, *args)
        assert e.reason == "type"
    # one class catches every refusal, and it is the package's base error
    e = raises(PhasecoreError, verify, pk, msg + b"!", sig)
    assert isinstance(e, ValueError) and isinstance(e, SignatureError)


def test_bytearray_and_memoryview_accepted():
    c = _rfc()[1]
    pk, msg, sig = unhex(c["public_key"]), unhex(c["message"]), unhex(c["signature"])
    verify(bytearray(pk), bytearray(msg), bytearray(sig))
    verify(memoryview(pk), memoryview(msg), memoryview(sig))


def test_bit_flips_in_signature_message_and_key_refused():
    c = _rfc()[2]  # TEST 3, a two-byte message
    pk, msg, sig = unhex(c["public_key"]), unhex(c["message"]), unhex(c["signature"])
    verify(pk, msg, sig)
    tried = 0
    for bit in range(0, 512, 5):
        s = bytearray(sig)
        s[bit >> 3] ^= 1 << (bit & 7)
        raises(SignatureError, verify, pk, msg, bytes(s))
        tried += 1
    for bit in range(16):
        m = bytearray(msg)
        m[bit >> 3] ^= 1 << (bit & 7)
        assert _reason(verify, pk, bytes(m), sig) == "mismatch"
        tried += 1
    for bit in range(0, 256, 7):
        k = bytearray(pk)
        k[bit >> 3] ^= 1 << (bit & 7)
        raises(SignatureError, verify, bytes(k), msg, sig)
        tried += 1
    assert tried == 103 + 16 + 37


def test_square_root_exponent_chain_matches_pow():
    # The decoder's addition chain for z^((p-5)/8) (no three-argument pow on the node's path).
    from phasecore import ed25519

    p = 2**255 - 19
    z = 0x1234567890ABCDEF
    for _ in range(12):
        assert ed25519._pow_p58(z) == pow(z, (p - 5) // 8, p), z
        z = (z * z + 0x9E3779B97F4A7C15) % p
    assert ed25519._pow_p58(0) == 0 and ed25519._pow_p58(1) == 1
