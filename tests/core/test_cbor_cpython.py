"""phasecore.cbor against cbor2 on generated values, and fuzzed with hostile bytes.

CPython only (hypothesis, cbor2, tracemalloc).

cbor2's ``canonical=True`` orders map keys length-first (RFC 7049 3.9), while
RFC 8949 4.2.1, which phasekit follows, orders them by their encoded bytes. The
reference encoder below therefore takes every head, scalar and tag from cbor2
and applies only the RFC 8949 key order itself.
"""

import math
import struct
import tracemalloc
from collections.abc import Mapping

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore.cbor import CBORDecodeError, Simple, Tag, dumps, loads

_SETTINGS = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# Tag numbers cbor2 leaves uninterpreted (it gives semantics to 0-5, 21-38, 256+ ranges, 55799...).
_tag_numbers = st.one_of(
    st.sampled_from([16, 17, 18, 61, 96, 97, 98, 1000, 65535]),
    st.integers(70000, 2**64 - 1).filter(lambda n: n != 55799),
)

_scalars = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=16),
    st.floats(width=32),
    st.binary(max_size=40),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.booleans(),
    st.none(),
)
_keys = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.text(max_size=8, alphabet=st.characters(blacklist_categories=("Cs",))),
    st.binary(max_size=8),
)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(_keys, children, max_size=6),
        st.builds(Tag, _tag_numbers, children),
    )


values = st.recursive(_scalars, _containers, max_leaves=25)


def _to_cbor2(v):
    if type(v) is Tag:
        return cbor2.CBORTag(v.tag, _to_cbor2(v.value))
    if type(v) is list:
        return [_to_cbor2(x) for x in v]
    if type(v) is dict:
        return {k: _to_cbor2(x) for k, x in v.items()}
    return v


def _from_cbor2(v):
    if isinstance(v, cbor2.CBORTag):
        return Tag(v.tag, _from_cbor2(v.value))
    if isinstance(v, cbor2.CBORSimpleValue):
        return Simple(v.value)
    if isinstance(v, (list, tuple)):  # cbor2 gives tuples inside tags
        return [_from_cbor2(x) for x in v]
    if isinstance(v, Mapping):  # and frozendicts
        return {k: _from_cbor2(x) for k, x in v.items()}
    return v


def _reference(v):
    """cbor2's deterministic encoding, with map keys in RFC 8949 bytewise order."""
    if type(v) is list:
        return _retype_head(cbor2.dumps([None] * len(v))[: -len(v) or None], 0x80) + b"".join(_reference(x) for x in v)
    if type(v) is dict:
        pairs = sorted((_reference(k), _reference(x)) for k, x in v.items())
        head = cbor2.dumps([None] * len(v))[: -len(v) or None]
        return _retype_head(head, 0xA0) + b"".join(k + x for k, x in pairs)
    if type(v) is Tag:
        return cbor2.dumps(cbor2.CBORTag(v.tag, None), canonical=True)[:-1] + _reference(v.value)
    return cbor2.dumps(v, canonical=True)


def _retype_head(head, major_bits):
    return bytes([(head[0] & 0x1F) | major_bits]) + head[1:]


def _same(a, b):
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is Tag:
        return a.tag == b.tag and _same(a.value, b.value)
    return a == b


@_SETTINGS
@given(values)
def test_dumps_matches_cbor2_deterministic_encoding(v):
    ours = dumps(v, max_depth=64)
    assert ours == _reference(v)


@_SETTINGS
@given(values)
def test_roundtrip_and_cbor2_reads_what_we_write(v):
    ours = dumps(v, max_depth=64)
    assert _same(loads(ours, max_depth=64), v)
    assert _same(_from_cbor2(cbor2.loads(ours)), v)


@_SETTINGS
@given(values)
def test_we_read_cbor2_non_canonical_output(v):
    # Non-canonical cbor2 output: doubles everywhere, maps in insertion order.
    theirs = cbor2.dumps(_to_cbor2(v))
    assert _same(loads(theirs, max_depth=64), v)


def _decode_or_typed_error(data):
    try:
        return True, loads(data)
    except CBORDecodeError:
        return False, None


def _has_tag_or_simple(v):
    if isinstance(v, (Tag, Simple)):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_tag_or_simple(x) for x in v)
    if isinstance(v, dict):
        return any(_has_tag_or_simple(k) or _has_tag_or_simple(x) for k, x in v.items())
    return False


@_SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes_give_a_value_or_cbor_decode_error(data):
    ok, v = _decode_or_typed_error(data)
    if ok and not _has_tag_or_simple(v):
        # What we accept is well-formed: cbor2 reads the same value.
        assert _same(_from_cbor2(cbor2.loads(data)), v)


@st.composite
def mutated_encodings(draw):
    data = bytearray(dumps(draw(values), max_depth=64))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x1B, 0x1F, 0x5B, 0x7F, 0x9B, 0x9F, 0xBB, 0xBF, 0xFF, 0xF8, 0x1C]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@_SETTINGS
@given(mutated_encodings())
def test_mutated_encodings_give_a_value_or_cbor_decode_error(data):
    _decode_or_typed_error(data)


_HUGE = [
    "5bffffffffffffffff010203",  # byte string of 2**64-1 bytes
    "7bffffffffffffffff010203",
    "5affffffff010203",
    "9bffffffffffffffff010203",  # array of 2**64-1 items
    "9affffffff010203",
    "bbffffffffffffffff010203",  # map of 2**64-1 pairs
    "5f5bffffffffffffffff00ff",  # inside an indefinite string
    "9f9f9f9bffffffffffffffff",
    "c25bffffffffffffffff",  # bignum
]


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_huge_declared_lengths_allocate_nothing_sized_by_them():
    for h in _HUGE:
        data = bytes.fromhex(h)

        def attempt(data=data, h=h):
            try:
                loads(data)
            except CBORDecodeError:
                return
            raise AssertionError("accepted " + h)

        peak = _peak_bytes(attempt)
        assert peak < 8192, (h, peak)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated_encodings()))
def test_decoder_memory_is_bounded_by_input_size(data):
    peak = _peak_bytes(lambda: _decode_or_typed_error(data))
    # Worst cases are about 100 bytes of Python objects per input byte
    # (a list of empty maps: one byte each); anything sized by a declared length would be far more.
    assert peak < 16384 + 160 * len(data), (data.hex(), peak)


def test_worst_case_expansion_measured():
    # The bound above is not generous by accident: check it against the costliest shape.
    data = bytes.fromhex("99ffff") + b"\xa0" * 0xFFFF
    peak = _peak_bytes(lambda: loads(data))
    assert peak < 160 * len(data), peak


def test_memoryview_of_wide_items_encodes_its_bytes():
    import array

    a = array.array("H", [1, 2, 3])
    assert dumps(memoryview(a)) == cbor2.dumps(a.tobytes())
