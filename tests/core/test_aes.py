"""AES block encryption: FIPS-197 known answers on every backend, backends agree.

Runs on both interpreters: on MicroPython the backends are cryptolib and pure,
on CPython cryptography, pycryptodome and pure.
"""

import hashlib

from phasecore import aes
from phasecore.errors import CryptoError
from portable import load_vectors, raises, unhex


def _ciphers(key):
    """One cipher per backend that supports this key size (cryptolib has no AES-192)."""
    out = []
    for name in aes.backends():
        if name == "cryptolib" and len(key) == 24:
            raises(CryptoError, aes.new, key, name)
            continue
        out.append(aes.new(key, name))
    return out


def _stream(seed, n):
    """Deterministic pseudo-random bytes (SHA-256 in counter mode), same on both interpreters."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + bytes((i,))).digest()
        i += 1
    return out[:n]


def test_fips197_cipher_examples_on_every_backend():
    v = load_vectors("aes/fips197_aes_known_answers.json")
    assert len(v["cipher"]) == 4
    for case in v["cipher"]:
        key = unhex(case["key"])
        assert len(key) * 8 == case["key_bits"]
        ciphers = _ciphers(key)
        assert ciphers
        for c in ciphers:
            got = c.encrypt_block(unhex(case["plaintext"]))
            assert got == unhex(case["ciphertext"]), (c.backend, case["name"])
            assert c.key_size == len(key)


def test_fips197_key_expansion():
    v = load_vectors("aes/fips197_aes_known_answers.json")
    assert len(v["key_expansion"]) == 3
    sbox = aes._tables()[0]
    for case in v["key_expansion"]:
        words, nr = aes._expand_key(unhex(case["key"]), sbox)
        assert ["%08x" % w for w in words] == case["expanded_key_words"], case["name"]
        assert nr == len(unhex(case["key"])) // 4 + 6


def test_sbox_matches_fips197_figure7_spot_values():
    # FIPS-197 Figure 7: S(00)=63, S(01)=7c, S(53)=ed, S(ff)=16.
    sbox = aes._tables()[0]
    assert (sbox[0x00], sbox[0x01], sbox[0x53], sbox[0xFF]) == (0x63, 0x7C, 0xED, 0x16)
    assert sorted(sbox) == list(range(256))


def test_backends_agree_on_chained_blocks_all_key_sizes():
    # 300 chained encryptions per key: any difference in any round shows up.
    for size in (16, 24, 32):
        key = _stream(b"key", size)
        results = []
        for c in _ciphers(key):
            block = bytearray(_stream(b"block", 16))
            for _ in range(300):
                c.encrypt_into(block, block)
            results.append((c.backend, bytes(block)))
        expected = [n for n in aes.backends() if not (n == "cryptolib" and size == 24)]
        assert [r[0] for r in results] == expected
        for name, r in results:
            assert r == results[0][1], (size, name, results[0][0])


def test_encrypt_into_accepts_memoryview_and_separate_buffers():
    key = _stream(b"k", 32)
    for c in _ciphers(key):
        buf = bytearray(48)
        buf[0:16] = _stream(b"p", 16)
        mv = memoryview(buf)
        c.encrypt_into(mv[0:16], mv[32:48])
        assert bytes(buf[32:48]) == c.encrypt_block(bytes(buf[0:16])), c.backend
        assert bytes(buf[16:32]) == bytes(16)


def test_bad_key_lengths_raise_crypto_error():
    for n in (0, 1, 15, 17, 20, 23, 25, 31, 33, 64):
        e = raises(CryptoError, aes.new, bytes(n))
        assert "%d bytes" % n in str(e)
        for name in aes.backends():
            raises(CryptoError, aes.new, bytes(n), name)
    raises(CryptoError, aes.new, "0123456789abcdef")
    raises(CryptoError, aes.new, None)


def test_bad_block_lengths_raise_crypto_error():
    for c in _ciphers(bytes(16)):
        raises(CryptoError, c.encrypt_block, bytes(15))
        raises(CryptoError, c.encrypt_block, bytes(17))
        raises(CryptoError, c.encrypt_block, b"")
        raises(CryptoError, c.encrypt_into, bytes(16), bytearray(15))
        raises(CryptoError, c.encrypt_into, bytes(32), bytearray(32))


def test_backend_selection():
    names = aes.backends()
    assert names[-1] == "pure"
    for n in names:
        assert n in aes.BACKENDS
    raises(CryptoError, aes.new, bytes(16), "nope")
    for n in aes.BACKENDS:
        if n not in names:
            raises(CryptoError, aes.new, bytes(16), n)
    assert aes.new(bytes(16), "pure").backend == "pure"
    # The default is the first usable backend, except that AES-192 skips cryptolib.
    assert aes.new(bytes(32)).backend == names[0]
    assert aes.new(bytes(24)).backend == [n for n in names if n != "cryptolib"][0]
