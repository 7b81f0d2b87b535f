"""SHA-512 pure-Python path against CPython's hashlib (OpenSSL), and the one-million-'a' vector."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore import sha512


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=700), cuts=st.lists(st.integers(0, 700), max_size=6))
def test_pure_path_matches_hashlib_whatever_the_chunking(data, cuts):
    h = sha512.SHA512()
    last = 0
    for c in sorted(cuts) + [len(data)]:
        c = min(c, len(data))
        h.update(data[last:c])
        last = max(last, c)
    assert h.digest() == hashlib.sha512(data).digest()


def test_every_length_up_to_three_blocks_matches_hashlib():
    data = bytes((i * 131 + 7) & 0xFF for i in range(3 * 128 + 1))
    for n in range(len(data) + 1):
        assert sha512.SHA512(data[:n]).digest() == hashlib.sha512(data[:n]).digest(), n


def test_one_million_a_through_the_pure_path():
    from portable import load_vectors, unhex

    v = [c for c in load_vectors("sha512/fips180_sha512_examples.json")["vectors"] if c["repeat"] > 1]
    assert len(v) == 1 and v[0]["repeat"] == 1000000
    h = sha512.SHA512()
    chunk = v[0]["message"].encode() * 1000
    for _ in range(1000):
        h.update(chunk)
    assert h.digest() == unhex(v[0]["digest"])


def test_new_is_hashlib_on_cpython():
    assert sha512.native()
    assert type(sha512.new(b"x")) is type(hashlib.sha512(b"x"))
