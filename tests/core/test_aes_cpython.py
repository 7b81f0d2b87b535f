"""AES differential tests on CPython: every backend against pyca/cryptography and pycryptodome."""

from Crypto.Cipher import AES as PyCryptodomeAES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore import aes


def test_cpython_has_both_accelerated_backends():
    # Otherwise the differential tests below compare pure Python with itself only.
    assert aes.backends() == ["cryptography", "pycryptodome", "pure"]


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from((16, 24, 32)).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    block=st.binary(min_size=16, max_size=16),
)
def test_every_backend_matches_independent_libraries(key, block):
    want = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
    assert PyCryptodomeAES.new(key, PyCryptodomeAES.MODE_ECB).encrypt(block) == want
    for name in aes.backends():
        c = aes.new(key, name)
        assert c.encrypt_block(block) == want, name
        buf = bytearray(block)
        c.encrypt_into(buf, buf)
        assert bytes(buf) == want, name
