"""AES-CCM differential tests on CPython against pycryptodome and pyca/cryptography, and hostile input."""

from Crypto.Cipher import AES as PyCryptodomeAES
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore import aes
from phasecore.ccm import CCM
from phasecore.errors import AuthenticationError, CryptoError

keys = st.sampled_from((16, 24, 32)).flatmap(lambda n: st.binary(min_size=n, max_size=n))
shapes = st.tuples(st.sampled_from((4, 6, 8, 10, 12, 14, 16)), st.integers(7, 13))


def _reference(key, tag_len, nonce, pt, aad):
    c = PyCryptodomeAES.new(key, PyCryptodomeAES.MODE_CCM, nonce=nonce, mac_len=tag_len)
    c.update(aad)
    ct, tag = c.encrypt_and_digest(pt)
    want = ct + tag
    assert AESCCM(key, tag_length=tag_len).encrypt(nonce, pt, aad) == want
    return want


@settings(max_examples=120, deadline=None)
@given(key=keys, shape=shapes, data=st.data(), pt=st.binary(max_size=80), aad=st.binary(max_size=80))
def test_matches_pycryptodome_and_cryptography(key, shape, data, pt, aad):
    tag_len, nonce_len = shape
    nonce = data.draw(st.binary(min_size=nonce_len, max_size=nonce_len))
    want = _reference(key, tag_len, nonce, pt, aad)
    for name in aes.backends():
        ccm = CCM(key, tag_len, nonce_len, backend=name)
        assert ccm.encrypt(nonce, pt, aad) == want, name
        assert ccm.decrypt(nonce, want, aad) == pt, name


@settings(max_examples=60, deadline=None)
@given(
    key=keys,
    shape=shapes,
    data=st.data(),
    pt=st.binary(min_size=1, max_size=40),
    aad=st.binary(max_size=20),
    flip=st.integers(0, 10**6),
)
def test_forgeries_rejected_like_the_references(key, shape, data, pt, aad, flip):
    tag_len, nonce_len = shape
    nonce = data.draw(st.binary(min_size=nonce_len, max_size=nonce_len))
    sealed = bytearray(_reference(key, tag_len, nonce, pt, aad))
    sealed[flip % len(sealed)] ^= 1 << (flip % 8)
    try:
        AESCCM(key, tag_length=tag_len).decrypt(nonce, bytes(sealed), aad)
        raise AssertionError("reference accepted a forgery")
    except InvalidTag:
        pass
    for name in aes.backends():
        ccm = CCM(key, tag_len, nonce_len, backend=name)
        try:
            ccm.decrypt(nonce, bytes(sealed), aad)
            raise AssertionError("accepted a forgery")
        except AuthenticationError:
            pass


def test_long_aad_across_the_length_encoding_boundary():
    key = bytes(range(32))
    for alen in (0xFEFF, 0xFF00, 0xFF01, 70000):
        aad = bytes(i & 0xFF for i in range(alen))
        want = _reference(key, 8, bytes(13), b"payload", aad)
        assert CCM(key, 8, 13).encrypt(bytes(13), b"payload", aad) == want


@settings(max_examples=200, deadline=None)
@given(
    nonce=st.binary(max_size=20),
    blob=st.binary(max_size=64),
    aad=st.binary(max_size=16),
    nonce_len=st.integers(7, 13),
    tag_len=st.sampled_from((4, 8, 16)),
)
def test_hostile_input_gets_only_typed_errors(nonce, blob, aad, nonce_len, tag_len):
    ccm = CCM(bytes(32), tag_len, nonce_len)
    try:
        ccm.decrypt(nonce, blob, aad)
    except (AuthenticationError, CryptoError):
        return
    # Accepting random bytes would need a 2^-32 tag collision at least.
    raise AssertionError("random bytes verified")
