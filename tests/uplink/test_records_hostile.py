"""phaseuplink.records at the server's trust boundary: only RecordError, short messages, bounded time.

A batch is what anyone who can publish to a Pi's topics sends; every record
position and every body field gets huge integers, long strings, deep
structures and every CBOR type (``tests/support/hostile.py``). Refused records
are reported one by one with a short message each.
"""

import zlib

from hostile import VALUES, assert_typed, dumps, variants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import cbor
from phaseuplink import records
from phaseuplink.errors import RecordError, UplinkError

SAMPLES = [1 << 20000, -(1 << 20000), 1 << 64, -1, 0.5, float("nan"), "x" * 100000, b"\x00" * 100000, None, True]
SAMPLES += [cbor.UNDEFINED, cbor.Tag(7, 1 << 20000), [], [[[[[[1]]]]]], {}, {1 << 20000: 1}]
BODIES = {
    "reading": [2300, 1000, 2300, 5, 500, 95, 0, 0],
    "summary": {0: 1, 1: 1, 2: 900, 3: [1, 2, 3], 5: 0, 10: [1, 0, 0, 0], 11: 0},
    "event": {0: 1, 1: 5},
    "alarm": {0: 1, 1: 5, 6: 2},
    "ack": [{0: 1, 1: 1, 2: 1, 3: 10, 5: 1}, {0: 1, 1: 1, 2: 0, 4: 1}],
    "heartbeat": {0: 1, 1: 1, 2: "fw", 3: 0, 4: 0},
    "node_heartbeat": {0: 1, 1: 1, 2: "fw"},
    "interval": {0: 1, 1: 900, 2: 1, 3: 0, 4: 0, 6: 0, 7: 1},
}


def _src(kind):
    return 0 if kind in ("summary", "heartbeat") else 7


def _decode(kind, payload):
    batch = assert_typed(records.decode_batch, UplinkError, kind, payload)
    if isinstance(batch, records.Batch):
        for _, text in batch.errors:
            assert len(text) < 1000, text[:200]
    return batch


def test_valid_bodies_pass():
    for kind, body in BODIES.items():
        b = _decode(kind, dumps([1, 100, [[_src(kind), 1, 0, body]]]))
        assert isinstance(b, records.Batch) and b.records and not b.errors, (kind, b)


def test_every_type_in_every_position_of_batch_record_and_body():
    for kind, body in BODIES.items():
        good_rec = [_src(kind), 1, 0, body]
        for bad in variants([1, 100, [good_rec]], SAMPLES):
            _decode(kind, dumps(bad))
        for bad in variants(good_rec, SAMPLES):
            _decode(kind, dumps([1, 100, [bad]]))
        if isinstance(body, (dict, list)):
            for bad_body in variants(body, SAMPLES):
                _decode(kind, dumps([1, 100, [[_src(kind), 1, 0, bad_body]]]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(records.KINDS), VALUES)
def test_any_value_as_a_body_or_a_batch(kind, value):
    _decode(kind, dumps([1, 100, [[7, 1, 0, value]]]))
    _decode(kind, dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(records.KINDS), st.binary(max_size=400))
def test_arbitrary_bytes_and_zlib_of_them(kind, data):
    _decode(kind, data)
    _decode(kind, zlib.compress(data))


def test_unknown_kind_is_typed_and_short():
    e = assert_typed(records.decode_batch, RecordError, "k" * 100000, b"\x83\x01\x00\x80")
    assert isinstance(e, RecordError)


def test_a_zip_bomb_is_refused_typed():
    e = assert_typed(records.decode_batch, RecordError, "reading", zlib.compress(b"\x00" * (8 << 20)))
    assert isinstance(e, RecordError)
