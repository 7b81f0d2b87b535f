"""HMAC-SHA256 (RFC 4231, Wycheproof) and HKDF-SHA256 (RFC 5869, Wycheproof) known answers, limits."""

from phasecore.errors import AuthenticationError, CryptoError
from phasecore.kdf import MAX_OKM, hkdf, hkdf_expand, hkdf_extract, hmac_sha256, hmac_sha256_verify
from portable import load_vectors, raises, unhex


def test_rfc4231_hmac_sha256():
    v = load_vectors("hmac/rfc4231_hmac_sha256.json")["vectors"]
    assert [c["test_case"] for c in v] == [1, 2, 3, 4, 5, 6, 7]
    for c in v:
        key, data, want = unhex(c["key"]), unhex(c["data"]), unhex(c["hmac_sha256"])
        mac = hmac_sha256(key, data)
        n = c.get("truncated_to_bytes", 32)
        assert mac[:n] == want, c["test_case"]
        hmac_sha256_verify(key, data, want)


def test_wycheproof_hmac_sha256_all_cases():
    w = load_vectors("hmac/wycheproof_hmac_sha256_test.json")
    seen = {"valid": 0, "invalid": 0}
    for g in w["testGroups"]:
        n = g["tagSize"] // 8
        for t in g["tests"]:
            key, msg, tag = unhex(t["key"]), unhex(t["msg"]), unhex(t["tag"])
            assert len(tag) == n
            if t["result"] == "valid":
                assert hmac_sha256(key, msg)[:n] == tag, t["tcId"]
                hmac_sha256_verify(key, msg, tag)
            else:
                assert hmac_sha256(key, msg)[:n] != tag, t["tcId"]
                raises(AuthenticationError, hmac_sha256_verify, key, msg, tag)
            seen[t["result"]] += 1
    assert seen == {"valid": 66, "invalid": 108}
    assert w["numberOfTests"] == 174


def test_rfc5869_hkdf_sha256():
    v = load_vectors("hkdf/rfc5869_hkdf_sha256.json")["vectors"]
    assert len(v) == 3
    for c in v:
        ikm, salt, info = unhex(c["ikm"]), unhex(c["salt"]), unhex(c["info"])
        prk = hkdf_extract(salt, ikm)
        assert prk == unhex(c["prk"]), c["name"]
        assert hkdf_expand(prk, info, c["L"]) == unhex(c["okm"]), c["name"]
        assert hkdf(ikm, c["L"], salt, info) == unhex(c["okm"])


def test_wycheproof_hkdf_sha256_all_cases():
    w = load_vectors("hkdf/wycheproof_hkdf_sha256_test.json")
    seen = {"valid": 0, "invalid": 0}
    for g in w["testGroups"]:
        for t in g["tests"]:
            ikm, salt, info = unhex(t["ikm"]), unhex(t["salt"]), unhex(t["info"])
            if t["result"] == "valid":
                assert hkdf(ikm, t["size"], salt, info) == unhex(t["okm"]), t["tcId"]
            else:
                assert t["flags"] == ["SizeTooLarge"] and t["size"] > MAX_OKM
                e = raises(CryptoError, hkdf, ikm, t["size"], salt, info)
                assert str(t["size"]) in str(e)
            seen[t["result"]] += 1
    assert seen == {"valid": 83, "invalid": 3}


def test_empty_and_none_salt_mean_hashlen_zeros():
    ikm = b"\x0b" * 22
    assert hkdf_extract(b"", ikm) == hkdf_extract(None, ikm) == hkdf_extract(bytes(32), ikm)


def test_limits_and_types():
    prk = bytes(32)
    assert hkdf_expand(prk, b"", 0) == b""
    assert len(hkdf_expand(prk, b"", MAX_OKM)) == 8160
    raises(CryptoError, hkdf_expand, prk, b"", MAX_OKM + 1)
    raises(CryptoError, hkdf_expand, prk, b"", -1)
    raises(CryptoError, hkdf_expand, prk, b"", 1.5)
    raises(CryptoError, hkdf_expand, prk, b"", "32")
    raises(CryptoError, hkdf_expand, bytes(31), b"", 16)
    raises(CryptoError, hkdf_expand, prk, "info", 16)
    raises(CryptoError, hkdf, "ikm", 16)
    raises(CryptoError, hmac_sha256, "key", b"")
    raises(CryptoError, hmac_sha256, b"", None)
    mac = hmac_sha256(b"k", b"m")
    raises(CryptoError, hmac_sha256_verify, b"k", b"m", mac[:15])
    raises(CryptoError, hmac_sha256_verify, b"k", b"m", mac + b"\x00")
    hmac_sha256_verify(b"k", b"m", mac[:16])
    raises(AuthenticationError, hmac_sha256_verify, b"k", b"m", mac[:31] + bytes((mac[31] ^ 1,)))


def test_accepts_bytearray_and_memoryview():
    key = bytearray(b"key" * 30)  # longer than the block: hashed first
    data = memoryview(b"data")
    assert hmac_sha256(key, data) == hmac_sha256(bytes(key), b"data")
    assert hkdf(memoryview(b"ikm"), 40, bytearray(b"salt"), memoryview(b"info")) == hkdf(b"ikm", 40, b"salt", b"info")
