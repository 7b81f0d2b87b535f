"""HMAC and HKDF differential tests on CPython against the stdlib hmac module and pyca/cryptography."""

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore.kdf import hkdf, hkdf_expand, hmac_sha256


@settings(max_examples=150, deadline=None)
@given(key=st.binary(max_size=200), data=st.binary(max_size=300))
def test_hmac_matches_stdlib(key, data):
    assert hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()


@settings(max_examples=100, deadline=None)
@given(
    ikm=st.binary(max_size=100), salt=st.binary(max_size=80), info=st.binary(max_size=80), length=st.integers(0, 600)
)
def test_hkdf_matches_cryptography(ikm, salt, info, length):
    if length == 0:
        assert hkdf(ikm, 0, salt, info) == b""
        return
    want = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)
    assert hkdf(ikm, length, salt, info) == want


@settings(max_examples=50, deadline=None)
@given(prk=st.binary(min_size=32, max_size=64), info=st.binary(max_size=40), length=st.integers(1, 300))
def test_hkdf_expand_matches_cryptography(prk, info, length):
    want = HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)
    assert hkdf_expand(prk, info, length) == want
