"""COSE_Encrypt0: cose-wg Examples, RFC 8613 Appendix C protection, the compact-form bridge, hostile input."""

from phasecore import aes, cbor, cose, keys
from phasecore.ccm import CCM
from phasecore.errors import AuthenticationError, COSEError, CryptoError, MalformedError
from portable import load_vectors, raises, unhex

# cose-wg/Examples name -> COSE algorithm id (RFC 9053 section 4.2).
_EXAMPLE_ALGS = {
    "AES-CCM-16-128/64": 10,
    "AES-CCM-16-256/64": 11,
    "AES-CCM-64-128/64": 12,
    "AES-CCM-64-256/64": 13,
    "AES-CCM-16-128/128": 30,
    "AES-CCM-16-256/128": 31,
    "AES-CCM-64-128/128": 32,
    "AES-CCM-64-256/128": 33,
}
KEY = bytes(range(32))
COMMON_IV = unhex("4622d4dd6d944168eefb54987c")


def _examples():
    out = []
    for i in range(1, 9):
        out.append(load_vectors("cose/aes-ccm-examples/aes-ccm-enc-%02d.json" % i))
    return out


def test_cose_wg_examples_encrypt_exactly_and_decrypt():
    seen = set()
    for ex in _examples():
        enc = ex["input"]["encrypted"]
        alg = _EXAMPLE_ALGS[enc["protected"]["alg"]]
        seen.add(alg)
        key = unhex(ex["intermediates"]["CEK_hex"])
        iv = unhex(ex["input"]["rng_stream"][0])
        pt = ex["input"]["plaintext"].encode()
        want = unhex(ex["output"]["cbor"])
        assert cose.enc_structure(cbor.dumps({1: alg})) == unhex(ex["intermediates"]["AAD_hex"]), ex["title"]
        for name in aes.backends():
            if name == "cryptolib" and len(key) == 24:
                continue
            assert cose.encrypt(key, pt, alg, iv=iv, backend=name) == want, (ex["title"], name)
            assert cose.decrypt(key, want, backend=name) == pt
        msg = cose.decode(want, tagged=True)
        assert msg.alg == alg and msg.iv == iv and msg.tagged and msg.kid is None
    assert seen == set(cose.ALGORITHMS)


def test_rfc8613_appendix_c_protection():
    v = load_vectors("oscore/rfc8613_appendix_c.json")["protection"]
    assert len(v) == 5
    for p in v:
        key, nonce = unhex(p["key"]), unhex(p["nonce"])
        ext = unhex(p["external_aad"])
        assert cose.enc_structure(b"", ext) == unhex(p["aad_enc_structure"]), p["name"]
        want = unhex(p["ciphertext_with_tag"])
        # OSCORE sends no alg and no IV: both are implied by the security context.
        obj = cose.encrypt(key, unhex(p["plaintext"]), 10, ext, nonce=nonce, protected={}, tagged=False)
        msg = cose.decode(obj, tagged=False)
        assert msg.protected == b"" and msg.uhdr == {} and msg.ciphertext == want, p["name"]
        assert cose.decrypt(key, obj, ext, alg=10, nonce=nonce) == unhex(p["plaintext"])
        raises(AuthenticationError, cose.decrypt, key, obj, ext + b"\x00", alg=10, nonce=nonce)


def test_kid_partial_iv_base_iv_round_trip():
    base = bytes(range(1, 14))
    for alg in (10, 11, 30, 31):
        key = KEY[: cose.ALGORITHMS[alg][0]]
        obj = cose.encrypt(key, b"payload", alg, b"ext", kid=b"\x07", partial_iv=b"\x01\x02", base_iv=base)
        msg = cose.decode(obj)
        assert msg.kid == b"\x07" and msg.partial_iv == b"\x01\x02" and msg.iv is None
        assert cose.decrypt(key, obj, b"ext", base_iv=base) == b"payload"
        nonce = bytearray(base)
        nonce[11] ^= 1
        nonce[12] ^= 2
        assert cose.decrypt(key, obj, b"ext", nonce=bytes(nonce)) == b"payload"
        raises(AuthenticationError, cose.decrypt, key, obj, b"", base_iv=base)
        raises(AuthenticationError, cose.decrypt, key, obj, b"ext", base_iv=bytes(13))
        raises(COSEError, cose.decrypt, key, obj, b"ext")  # Partial IV but no base IV
        raises(COSEError, cose.decrypt, key, obj, b"ext", alg=alg + 1, base_iv=base)


def test_untagged_and_tag_requirements():
    obj = cose.encrypt(KEY, b"x", 11, iv=bytes(13), tagged=False)
    assert obj[0] == 0x83
    assert cose.decrypt(KEY, obj) == b"x"
    assert cose.decrypt(KEY, obj, tagged=False) == b"x"
    raises(COSEError, cose.decrypt, KEY, obj, tagged=True)
    tagged = cose.encrypt(KEY, b"x", 11, iv=bytes(13))
    assert tagged[0] == 0xD0 and tagged[1:] == obj
    raises(COSEError, cose.decrypt, KEY, tagged, tagged=False)


def test_rebuild_compact_envelope_verifies_as_full_cose():
    nk = keys.NodeKeys(bytes(range(100, 132)), 9)
    for sender, key in ((nk.node_id, nk.node_key), (nk.pi_id, nk.pi_key)):
        for piv, kind in ((b"\x00", 0), (b"\x01\x00", 2), (b"\xff\xff\xff\xff\xff", 5)):
            # What the compact envelope carries: CCM under the OSCORE nonce and the [1, alg, kid, piv, kind] AAD.
            ext = cose.compact_external_aad(kind, sender, piv)
            assert ext == cbor.dumps([1, 11, sender, piv, kind])
            ct = CCM(key, 8, 13).encrypt(nk.nonce(sender, piv), b"body", cose.enc_structure(b"", ext))
            obj, ext2 = cose.rebuild(sender, piv, kind, ct)
            assert ext2 == ext
            assert cbor.loads(obj) == cbor.Tag(16, [b"", {4: sender, 6: piv}, ct])
            assert cose.decrypt(key, obj, ext, alg=11, base_iv=cose.base_iv(nk.common_iv, sender)) == b"body"
            assert cose.decrypt(key, obj, ext, alg=11, nonce=nk.nonce(sender, piv)) == b"body"
            assert cose.to_compact(obj) == (sender, piv, ct)
            # The kind is authenticated although it travels in clear.
            _, wrong = cose.rebuild(sender, piv, (kind + 1) % 6, ct)
            raises(AuthenticationError, cose.decrypt, key, obj, wrong, alg=11, nonce=nk.nonce(sender, piv))


def test_base_iv_equals_oscore_nonce_with_zero_piv():
    assert cose.base_iv(COMMON_IV, b"") == COMMON_IV
    assert cose.base_iv(COMMON_IV, b"\x01") == unhex("4722d4dd6d944169eefb54987c")  # RFC 8613 C.1.1 recipient


class _FixedCounter:
    """A stand-in SequenceCounter that hands out one given number (enough for one seal)."""

    def __init__(self, seq):
        self.seq = seq

    def next(self):
        return self.seq


def test_rebuild_matches_seal_envelope():
    from phasecore import seal

    nk = keys.NodeKeys(bytes(32), 3)
    sender = seal.SenderContext(nk.node_id, nk.node_key, nk.common_iv, _FixedCounter(0x1234))
    env = seal.seal_raw(4, b"\xa1\x01\x02", sender)
    n = env[0] & 7
    piv, ct = env[1 : 1 + n], env[1 + n :]
    obj, ext = cose.rebuild(nk.node_id, piv, 4, ct)
    assert (obj, ext) == seal.to_cose(env, nk.node_id)
    base = cose.base_iv(nk.common_iv, nk.node_id)
    assert cose.decrypt(nk.node_key, obj, ext, alg=11, base_iv=base) == b"\xa1\x01\x02"


def test_rebuild_and_to_compact_refuse_what_has_no_compact_form():
    raises(COSEError, cose.rebuild, bytes(8), b"\x01", 0, bytes(8))
    raises(COSEError, cose.rebuild, b"", b"", 0, bytes(8))
    raises(COSEError, cose.rebuild, b"", bytes(6), 0, bytes(8))
    raises(COSEError, cose.rebuild, b"", b"\x00\x01", 0, bytes(8))
    raises(COSEError, cose.rebuild, b"", b"\x01", 8, bytes(8))
    raises(COSEError, cose.rebuild, b"", b"\x01", 0, bytes(8), alg=3)
    full = cose.encrypt(KEY, b"x", 11, iv=bytes(13))
    raises(COSEError, cose.to_compact, full)
    obj = cose.encode(b"", {4: b"\x01"}, bytes(9))
    raises(COSEError, cose.to_compact, obj)
    obj = cose.encode(b"", {1: 10, 4: b"\x01", 6: b"\x01"}, bytes(9))
    raises(COSEError, cose.to_compact, obj)
    assert cose.to_compact(obj, alg=10) == (b"\x01", b"\x01", bytes(9))
    raises(COSEError, cose.to_compact, cose.encode(b"", {4: b"\x01", 6: b"\x01"}, bytes(7)))


def _hostile_objects():
    ct = bytes(16)
    good_p = cbor.dumps({1: 11})
    T = cbor.Tag
    return [
        b"",
        b"\xff",
        b"\x83\x40",
        b"\xd0\x83\x40\xa0",
        b"\x9f\xff",
        cbor.dumps(T(17, [good_p, {}, ct])),
        cbor.dumps(T(96, [good_p, {}, ct])),
        cbor.dumps([good_p, {}]),
        cbor.dumps([good_p, {}, ct, ct]),
        cbor.dumps({1: 2}),
        cbor.dumps([{1: 11}, {}, ct]),
        cbor.dumps(["x", {}, ct]),
        cbor.dumps([b"\xff", {}, ct]),
        cbor.dumps([cbor.dumps([1]), {}, ct]),
        cbor.dumps([good_p, [], ct]),
        cbor.dumps([good_p, {5: bytes(13)}, None]),
        cbor.dumps([good_p, {5: bytes(13)}, "ct"]),
        cbor.dumps([good_p, {1: 11, 5: bytes(13)}, ct]),
        cbor.dumps([cbor.dumps({1: 11, 2: [99]}), {5: bytes(13)}, ct]),
        cbor.dumps([cbor.dumps({1: 11, 2: []}), {5: bytes(13)}, ct]),
        cbor.dumps([cbor.dumps({1: 11, 2: [4]}), {4: b"", 5: bytes(13)}, ct]),
        cbor.dumps([good_p, {2: [1], 5: bytes(13)}, ct]),
        cbor.dumps([good_p, {5: bytes(13), 6: b"\x01"}, ct]),
        cbor.dumps([good_p, {4: "kid", 5: bytes(13)}, ct]),
        cbor.dumps([good_p, {5: 7}, ct]),
        cbor.dumps([good_p, {True: 11, 5: bytes(13)}, ct]),
        cbor.dumps([good_p, {1.5: 11, 5: bytes(13)}, ct]),
        cbor.dumps([cbor.dumps({1: True}), {5: bytes(13)}, ct]),
        cbor.dumps([cbor.dumps({1: 1.0}), {5: bytes(13)}, ct]),
    ]


def test_hostile_structures_raise_cose_error():
    for i, obj in enumerate(_hostile_objects()):
        e = raises(COSEError, cose.decrypt, KEY, obj, b"", base_iv=bytes(13))
        assert isinstance(e, MalformedError), i
    raises(COSEError, cose.decode, "text")
    raises(COSEError, cose.decode, None)


def test_decrypt_parameter_errors():
    obj = cose.encrypt(KEY, b"hello", 11, iv=bytes(13))
    assert cose.decrypt(KEY, obj) == b"hello"
    raises(CryptoError, cose.decrypt, KEY[:16], obj)
    raises(CryptoError, cose.decrypt, "k" * 32, obj)
    raises(COSEError, cose.decrypt, KEY, obj, alg=10)
    raises(COSEError, cose.decrypt, KEY, obj, nonce=bytes(12) + b"\x01")
    no_alg = cose.encrypt(KEY, b"hello", 11, iv=bytes(13), protected={})
    raises(COSEError, cose.decrypt, KEY, no_alg)
    assert cose.decrypt(KEY, no_alg, alg=11) == b"hello"
    short_iv = cose.encode(cbor.dumps({1: 11}), {5: bytes(12)}, bytes(13))
    raises(COSEError, cose.decrypt, KEY, short_iv)
    text_alg = cose.encode(cbor.dumps({1: "A128GCM"}), {5: bytes(13)}, bytes(13))
    raises(COSEError, cose.decrypt, KEY, text_alg)
    unknown_alg = cose.encode(cbor.dumps({1: 1}), {5: bytes(13)}, bytes(13))
    raises(COSEError, cose.decrypt, KEY, unknown_alg)
    bad = bytearray(obj)
    bad[-1] ^= 1
    raises(AuthenticationError, cose.decrypt, KEY, bytes(bad))
    raises(AuthenticationError, cose.decrypt, KEY, cose.encode(cbor.dumps({1: 11}), {5: bytes(13)}, bytes(3)))
    no_iv = cose.encode(cbor.dumps({1: 11}), {}, bytes(13))
    raises(COSEError, cose.decrypt, KEY, no_iv)


def test_encrypt_parameter_errors():
    raises(CryptoError, cose.encrypt, KEY, b"x", 11)
    raises(CryptoError, cose.encrypt, KEY, b"x", 11, iv=bytes(12))
    raises(CryptoError, cose.encrypt, KEY, b"x", 11, iv=bytes(13), partial_iv=b"\x01")
    raises(CryptoError, cose.encrypt, KEY, b"x", 11, partial_iv=b"\x01", base_iv=bytes(12))
    raises(CryptoError, cose.encrypt, KEY, b"x", 11, partial_iv=b"\x01")
    raises(CryptoError, cose.encrypt, KEY[:16], b"x", 11, iv=bytes(13))
    raises(CryptoError, cose.encrypt, KEY, "x", 11, iv=bytes(13))
    raises(COSEError, cose.encrypt, KEY, b"x", 14, iv=bytes(13))
    raises(COSEError, cose.encrypt, KEY, b"x", 11, iv=bytes(13), protected={1: 11, 5: b""})
