"""AES-CCM known answers (RFC 3610, SP 800-38C, Wycheproof) on every backend, tamper and bad parameters.

The whole Wycheproof file (552 cases, valid and invalid) runs on every AES
backend on both interpreters: it takes about a second on the MicroPython unix
port, so no slice is needed.
"""

from phasecore import aes
from phasecore.ccm import CCM, _xor_aad_length
from phasecore.errors import AuthenticationError, CryptoError
from portable import load_vectors, raises, unhex

KEY32 = bytes(range(32))


def _backends(key_len):
    return [n for n in aes.backends() if not (n == "cryptolib" and key_len == 24)]


def test_rfc3610_packet_vectors_every_backend():
    v = load_vectors("aes-ccm/rfc3610_packet_vectors.json")["vectors"]
    assert len(v) == 24
    for name in aes.backends():
        for c in v:
            nonce, aad, pt = unhex(c["nonce"]), unhex(c["aad"]), unhex(c["plaintext"])
            ccm = CCM(unhex(c["key"]), c["M_tag_len"], 15 - c["L_len_field"], backend=name)
            out = ccm.encrypt(nonce, pt, aad)
            assert aad + out == unhex(c["packet_out"]), (name, c["packet_vector"])
            assert out == unhex(c["ciphertext"]) + unhex(c["tag"])
            assert ccm.decrypt(nonce, out, aad) == pt


def test_sp800_38c_examples_including_6_byte_aad_length():
    v = load_vectors("aes-ccm/sp800_38c_examples.json")["vectors"]
    assert [c["example"] for c in v] == [1, 2, 3, 4]
    for name in aes.backends():
        for c in v:
            if "aad" in c:
                aad = unhex(c["aad"])
            else:
                aad = unhex(c["aad_repeat_hex"]) * c["aad_repeat_count"]
                assert len(aad) == 65536  # 0xFFFE + 32-bit length encoding
            nonce = unhex(c["nonce"])
            ccm = CCM(unhex(c["key"]), c["tag_len"], len(nonce), backend=name)
            want = unhex(c["ciphertext"]) + unhex(c["tag"])
            assert ccm.encrypt(nonce, unhex(c["plaintext"]), aad) == want, (name, c["example"])
            assert ccm.decrypt(nonce, want, aad) == unhex(c["plaintext"])


def _wycheproof_case(group, t, backend):
    key, iv, aad, msg = unhex(t["key"]), unhex(t["iv"]), unhex(t["aad"]), unhex(t["msg"])
    data = unhex(t["ct"]) + unhex(t["tag"])
    try:
        ccm = CCM(key, group["tagSize"] // 8, len(iv), backend=backend)
    except CryptoError:
        # Only parameters outside CCM's definition may be refused (InvalidNonceSize,
        # InvalidTagSize, InsecureTagSize, the CVE-2017-18330 long nonce).
        assert t["result"] == "invalid", t["tcId"]
        assert group["tagSize"] // 8 not in (4, 6, 8, 10, 12, 14, 16) or not 7 <= len(iv) <= 13, t["tcId"]
        return "refused"
    if t["result"] == "valid":
        assert ccm.encrypt(iv, msg, aad) == data, t["tcId"]
        assert ccm.decrypt(iv, data, aad) == msg, t["tcId"]
        return "valid"
    raises(AuthenticationError, ccm.decrypt, iv, data, aad)
    return "forged"


def test_wycheproof_all_cases_every_backend():
    w = load_vectors("aes-ccm/wycheproof_aes_ccm_test.json")
    for name in aes.backends():
        counts = {"valid": 0, "forged": 0, "refused": 0}
        for g in w["testGroups"]:
            if g["keySize"] == 192 and name == "cryptolib":
                continue
            for t in g["tests"]:
                counts[_wycheproof_case(g, t, name)] += 1
        total = counts["valid"] + counts["forged"] + counts["refused"]
        # Per key size: 135 valid, 27 with a modified tag, 22 with a nonce or
        # tag length outside CCM's definition. cryptolib has no AES-192.
        sizes = 2 if name == "cryptolib" else 3
        assert counts == {"valid": 135 * sizes, "forged": 27 * sizes, "refused": 22 * sizes}, counts
        if sizes == 3:
            assert total == w["numberOfTests"] == 552


def test_tamper_anywhere_is_refused_and_output_zeroed():
    nonce = bytes(range(13))
    aad = b"\x85\x01\x0b\x41\x07\x43\x00\x00\x05\x00"
    pt = b"reading: 2314 7482 16502"
    for name in aes.backends():
        ccm = CCM(KEY32, 8, 13, backend=name)
        sealed = ccm.encrypt(nonce, pt, aad)
        assert len(sealed) == len(pt) + 8
        for i in range(len(sealed)):
            bad = bytearray(sealed)
            bad[i] ^= 0x01
            out = bytearray(b"\xee" * len(pt))
            raises(AuthenticationError, ccm.decrypt_into, out, nonce, bad, aad)
            assert out == bytearray(len(pt)), "unauthenticated plaintext released"
        for i in range(len(aad)):
            bad = bytearray(aad)
            bad[i] ^= 0x80
            raises(AuthenticationError, ccm.decrypt, nonce, sealed, bytes(bad))
        raises(AuthenticationError, ccm.decrypt, nonce, sealed, aad + b"\x00")
        raises(AuthenticationError, ccm.decrypt, nonce, sealed, b"")
        raises(AuthenticationError, ccm.decrypt, bytes(13), sealed, aad)
        raises(AuthenticationError, ccm.decrypt, nonce, sealed[:-1], aad)
        raises(AuthenticationError, ccm.decrypt, nonce, sealed[1:], aad)
        raises(AuthenticationError, ccm.decrypt, nonce, sealed[:7], aad)
        raises(AuthenticationError, ccm.decrypt, nonce, b"", aad)
        # The object is fine after failures.
        assert ccm.decrypt(nonce, sealed, aad) == pt


def test_every_tag_and_nonce_length_round_trips():
    for name in _backends(16):
        for tag_len in (4, 6, 8, 10, 12, 14, 16):
            for nonce_len in range(7, 14):
                ccm = CCM(KEY32[:16], tag_len, nonce_len, backend=name)
                nonce = bytes(range(nonce_len))
                for n in (0, 1, 15, 16, 17, 33):
                    pt = bytes(range(n))
                    for aad in (b"", b"a", bytes(16), bytes(17)):
                        sealed = ccm.encrypt(nonce, pt, aad)
                        assert len(sealed) == n + tag_len
                        assert ccm.decrypt(nonce, sealed, aad) == pt


def test_backends_agree_on_many_shapes():
    names = aes.backends()
    for key in (KEY32[:16], KEY32[:24], KEY32):
        for tag_len, nonce_len in ((4, 7), (8, 13), (16, 12), (10, 9)):
            outs = []
            for name in _backends(len(key)):
                ccm = CCM(key, tag_len, nonce_len, backend=name)
                outs.append(ccm.encrypt(bytes(nonce_len), bytes(range(50)), bytes(range(40))))
            assert len(outs) == len(_backends(len(key))) >= 1
            for o in outs:
                assert o == outs[0]
    assert len(names) >= 2


def test_in_place_and_memoryview_buffers():
    ccm = CCM(KEY32, 8, 13)
    nonce = bytes(13)
    pt = bytes(range(40))
    want = ccm.encrypt(nonce, pt, b"hdr")
    buf = bytearray(48)
    buf[0:40] = pt
    assert ccm.encrypt_into(buf, nonce, memoryview(buf)[0:40], b"hdr") == 48
    assert bytes(buf) == want
    assert ccm.decrypt_into(buf, nonce, memoryview(buf), memoryview(b"hdr")) == 40
    assert bytes(buf[0:40]) == pt
    raises(CryptoError, ccm.encrypt_into, bytearray(47), nonce, pt, b"hdr")
    raises(CryptoError, ccm.decrypt_into, bytearray(39), nonce, want, b"hdr")


def test_bad_parameters_raise_crypto_error():
    for tag_len in (0, 1, 2, 3, 5, 7, 9, 17, 18, 32, None):
        raises(CryptoError, CCM, KEY32, tag_len, 13)
    for nonce_len in (0, 6, 14, 16, 268, None):
        raises(CryptoError, CCM, KEY32, 8, nonce_len)
    for key in (b"", bytes(15), bytes(33), "k" * 16):
        raises(CryptoError, CCM, key)
    ccm = CCM(KEY32, 8, 13)
    for nonce in (bytes(12), bytes(14), b"", "n" * 13, None):
        raises(CryptoError, ccm.encrypt, nonce, b"x")
        raises(CryptoError, ccm.decrypt, nonce, bytes(9))
    raises(CryptoError, ccm.encrypt, bytes(13), "text")
    raises(CryptoError, ccm.encrypt, bytes(13), b"x", "aad")
    raises(CryptoError, ccm.decrypt, bytes(13), None)
    raises(CryptoError, ccm.decrypt, bytes(13), bytes(9), 5)


def test_message_longer_than_length_field_is_refused():
    # nonce 13 bytes -> L = 2 -> at most 65535 bytes (RFC 3610 section 2).
    ccm = CCM(KEY32, 4, 13)
    assert ccm.max_message == 65535
    e = raises(CryptoError, ccm.encrypt, bytes(13), bytes(65536))
    assert "65536" in str(e)
    raises(CryptoError, ccm.decrypt, bytes(13), bytes(65536 + 4))
    sealed = ccm.encrypt(bytes(13), bytes(65535))
    assert ccm.decrypt(bytes(13), sealed) == bytes(65535)
    assert CCM(KEY32, 4, 12).max_message == (1 << 24) - 1
    assert CCM(KEY32, 4, 7).max_message == (1 << 64) - 1


def test_aad_length_encodings():
    # RFC 3610 section 2.2: the three forms of l(a), at their boundaries.
    cases = (
        (1, "0001"),
        (0xFEFF, "feff"),
        (0xFF00, "fffe0000ff00"),
        (0xFFFFFFFF, "fffeffffffff"),
        (0x100000000, "ffff0000000100000000"),
        (0x0123456789ABCDEF, "ffff0123456789abcdef"),
    )
    for alen, want in cases:
        x = bytearray(16)
        n = _xor_aad_length(x, alen)
        assert bytes(x[:n]) == unhex(want), (alen, want)
        assert bytes(x[n:]) == bytes(16 - n)
    # The 2-byte and 6-byte forms end to end, across the boundary, on every backend.
    for name in aes.backends():
        ccm = CCM(KEY32, 8, 13, backend=name)
        for alen in (0xFEFF, 0xFF00):
            aad = bytes(alen)
            sealed = ccm.encrypt(bytes(13), b"p", aad)
            assert ccm.decrypt(bytes(13), sealed, aad) == b"p"
            raises(AuthenticationError, ccm.decrypt, bytes(13), sealed, aad + b"\x00")


def test_into_forms_allocate_nothing_on_micropython():
    # The node seals every frame: after the first call, encrypt_into and
    # decrypt_into must not touch the heap. gc.mem_alloc is MicroPython's;
    # CPython has no equivalent, so there the calls just have to work.
    import gc

    pt, aad, nonce = bytes(range(22)), bytes(12), bytes(13)
    for name in aes.backends():
        ccm = CCM(KEY32, 8, 13, backend=name)
        out, back = bytearray(30), bytearray(22)
        ccm.encrypt_into(out, nonce, pt, aad)
        ccm.decrypt_into(back, nonce, out, aad)
        if not hasattr(gc, "mem_alloc"):
            continue
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            ccm.encrypt_into(out, nonce, pt, aad)
            ccm.decrypt_into(back, nonce, out, aad)
            used = gc.mem_alloc() - before
        finally:
            gc.enable()
        assert used == 0, (name, used)
        assert bytes(back) == pt
