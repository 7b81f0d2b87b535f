"""SHA-512: FIPS 180-4 examples through the pure-Python path, streaming, bad input.

Runs on CPython and on the MicroPython unix port (where ``hashlib`` has no
sha512 and ``phasecore.sha512.new`` is the pure path). The one-million-'a'
vector runs only in tests/core/test_sha512_cpython.py: a few seconds of pure
Python is too long for every run of the portable suite.
"""

import hashlib

from phasecore import sha512
from phasecore.errors import CryptoError
from portable import load_vectors, raises, unhex


def _vectors():
    return load_vectors("sha512/fips180_sha512_examples.json")["vectors"]


def test_fips180_examples_pure_path():
    v = _vectors()
    assert len(v) == 5
    ran = 0
    for c in v:
        if c["repeat"] != 1:
            continue
        msg = c["message"].encode()
        want = unhex(c["digest"])
        assert sha512.SHA512(msg).digest() == want, c["name"]
        assert sha512.digest(msg) == want, c["name"]
        assert sha512.new(msg).digest() == want, c["name"]
        ran += 1
    assert ran == 4


def test_streaming_in_uneven_chunks_matches_one_shot():
    msg = _vectors()[3]["message"].encode()  # the 896-bit, two-block message
    assert len(msg) == 112
    want = unhex(_vectors()[3]["digest"])
    for step in (1, 3, 7, 64, 111, 112, 113):
        h = sha512.SHA512()
        for i in range(0, len(msg), step):
            h.update(msg[i : i + step])
        assert h.digest() == want, step
    # memoryview and bytearray input, and a block read in place from a longer buffer
    h = sha512.SHA512(bytearray(msg[:50]))
    h.update(memoryview(msg)[50:])
    assert h.digest() == want


def test_padding_boundaries_agree_between_chunked_and_one_shot():
    # 111 and 112 bytes straddle the one-block/two-block padding edge (the
    # 16-byte length field); 127/128/129 the block edge.
    for n in (0, 1, 55, 56, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257):
        msg = bytes((i * 31 + n) & 0xFF for i in range(n))
        one = sha512.SHA512(msg).digest()
        h = sha512.SHA512()
        for i in range(n):
            h.update(msg[i : i + 1])
        assert h.digest() == one, n
        assert len(one) == sha512.DIGEST_SIZE == 64


def test_digest_does_not_finalise():
    h = sha512.SHA512(b"ab")
    first = h.digest()
    assert h.digest() == first
    h.update(b"c")
    assert h.digest() == unhex(_vectors()[0]["digest"])  # "abc"


def test_bad_input_raises_crypto_error():
    for bad in ("abc", None, 5, [1, 2]):
        e = raises(CryptoError, sha512.SHA512, bad)
        assert "bytes" in str(e)
        raises(CryptoError, sha512.new, bad)
        raises(CryptoError, sha512.digest, bad)
    h = sha512.SHA512()
    raises(CryptoError, h.update, "text")


def test_native_only_where_hashlib_has_sha512():
    assert sha512.native() == hasattr(hashlib, "sha512")
    assert sha512.BLOCK_SIZE == 128
