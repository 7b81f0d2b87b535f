"""Every decoder of the core at a trust boundary raises only PhasecoreError, with a short message, in bounded time.

Link frames, CBOR, the sealed envelope, COSE_Encrypt0 and the message schema,
fed what an attacker can send: arbitrary bytes, and well-formed CBOR holding
huge integers, long strings, deep structures and every CBOR type in every
position of every message kind (the holder of a stolen node key can seal any
body it likes, so the schema is a trust boundary of its own). Property
tests (hypothesis) over ``tests/support/hostile.py``; the exhaustive loops
put each sample of every type into each field of a valid message.
"""

from hostile import VALUES, assert_typed, dumps, variants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import cbor, cose, frame, msg, seal
from phasecore.errors import PhasecoreError
from phasecore.replay import SequenceCounter

KEY = bytes(range(32))
IV = bytes(range(100, 113))
SAMPLES = [
    1 << 64,
    -(1 << 64) - 1,
    1 << 20000,
    -(1 << 20000),
    10**5000,
    -1,
    2**32,
    0.5,
    float("nan"),
    float("inf"),
    "x" * 100000,
    "\u20ac" * 70,
    "",
    b"\x00" * 100000,
    b"",
    None,
    True,
    False,
    cbor.UNDEFINED,
    cbor.Simple(99),
    cbor.Tag(1, 0),
    cbor.Tag(24, b"\xa0"),
    [],
    [1 << 20000] * 3,
    [[[[[[[1]]]]]]],
    {},
    {1 << 20000: 1},
    {"k": "v" * 1000},
]
VALID = {
    msg.SUMMARY: {
        "time_s": 1,
        "period_s": 900,
        "i_dA": [1, 2, 3],
        "cuf_pm": 10,
        "nodes": [1, 0, 0, 0],
        "moves": 0,
        "v_dV": [2300, 2300, 2300],
    },
    msg.COMMAND: {"id": 1, "op": msg.OP_MOVE, "deadline_s": 100, "phase": 1, "expect_phase": 0, "ref_seq": 5},
    msg.ACK: {"id": 1, "outcome": 0, "phase": 1, "status": 0, "reason": 3},
    msg.HEARTBEAT: {"uptime_s": 1, "fw": "x", "time_s": 5, "rssi_dBm": -50, "status": 0},
    msg.EVENT: {"code": 1, "value": 2, "text": "t", "severity": 2, "node": 3},
}


def _wire_map(kind):
    # The valid message as its wire map (integer keys, version 0).
    return cbor.loads(msg.encode(kind, VALID[kind]))


def test_every_type_in_every_field_of_every_kind():
    for kind in VALID:
        m = _wire_map(kind)
        for bad in variants(m, SAMPLES):
            assert_typed(msg.decode, PhasecoreError, kind, dumps(bad))
        for key in SAMPLES:
            try:
                hash(key)
            except TypeError:
                continue
            bad = dict(m)
            bad[key] = 1
            assert_typed(msg.decode, PhasecoreError, kind, dumps(bad))


def test_every_type_in_every_position_of_a_reading():
    good = [2300, 1000, 2300, 5, 500, 95, 0, 0]
    for bad in variants(good, SAMPLES) + [good[:7], good + [0], SAMPLES]:
        assert_typed(msg.decode_reading, PhasecoreError, dumps(bad))
        assert_typed(msg.decode, PhasecoreError, msg.READING, dumps(bad))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID) + [msg.READING]), VALUES)
def test_any_value_as_a_body(kind, value):
    assert_typed(msg.decode, PhasecoreError, kind, dumps(value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.data())
def test_any_value_in_any_field(kind, data):
    m = _wire_map(kind)
    key = data.draw(st.sampled_from(sorted(m)))
    m[key] = data.draw(VALUES)
    assert_typed(msg.decode, PhasecoreError, kind, dumps(m))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_cbor_of_arbitrary_bytes(data):
    assert_typed(cbor.loads, PhasecoreError, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_cbor_round_trip_of_hostile_values_only_raises_typed(value):
    data = dumps(value)
    assert_typed(cbor.loads, PhasecoreError, data)
    assert_typed(cbor.loads, PhasecoreError, data, 4)  # a low depth limit refuses, typed


def test_cbor_duplicate_and_hostile_map_keys():
    for k in (1 << 20000, "k" * 100000, b"\x00" * 100000, cbor.Tag(5, [1]), (1,) * 10):
        enc = dumps(k)
        assert_typed(cbor.loads, PhasecoreError, b"\xa2" + enc + b"\x01" + enc + b"\x02")
    # An array as a key decodes to a tuple; a map as a key cannot be one.
    assert_typed(cbor.loads, PhasecoreError, b"\xa1\xa0\x01")


def test_cbor_depth_beyond_the_interpreter_is_typed():
    data = b"\x81" * 100000 + b"\x00"
    assert_typed(cbor.loads, PhasecoreError, data, 10**6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_frame_decoder_never_raises(chunks):
    dec = frame.Decoder()
    for c in chunks:
        assert_typed(dec.feed, PhasecoreError, c)
    assert_typed(dec.flush, PhasecoreError)


class _Store:
    value = None

    def load(self):
        return self.value

    def save(self, n):
        self.value = n


def _recipients():
    r = seal.Recipients()
    r.add(seal.RecipientContext(b"\x07", KEY, IV))
    return r


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"\x07", b"", b"\x08", b"\x07" * 9]))
def test_open_of_arbitrary_bytes(data, kid):
    assert_typed(seal.open_raw, PhasecoreError, data, kid, _recipients())
    assert_typed(seal.header, PhasecoreError, data)


def test_open_of_authentic_hostile_bodies():
    # A stolen key seals whatever it likes: open() decodes the body against the schema, typed.
    st_ = _Store()
    sender = seal.SenderContext(b"\x07", KEY, IV, SequenceCounter(st_.load, st_.save))
    for kind in (msg.READING, msg.ACK, msg.HEARTBEAT, msg.EVENT):
        for v in SAMPLES:
            if len(dumps(v)) > 60000:  # beyond what AES-CCM with a 13-byte nonce seals (and any link frame)
                continue
            data = seal.seal_raw(kind, dumps(v), sender)
            assert_typed(seal.open, PhasecoreError, data, b"\x07", _recipients())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_cose_decode_of_hostile_structures(value):
    assert_typed(cose.decode, PhasecoreError, dumps(value))
    assert_typed(cose.decode, PhasecoreError, dumps(cbor.Tag(16, value)))
    assert_typed(cose.decode, PhasecoreError, dumps([dumps({1: value}), {4: value, 6: value}, b"\x00" * 9]))


def test_cose_every_type_in_every_position():
    good = [dumps({1: 11}), {4: b"op", 6: b"\x01"}, b"\x00" * 16]
    for bad in variants(good, SAMPLES) + variants(good[1], SAMPLES):
        data = dumps(bad if isinstance(bad, list) else [good[0], bad, good[2]])
        assert_typed(cose.decode, PhasecoreError, data)
        assert_typed(cose.decrypt, PhasecoreError, KEY, data, 11, b"", base_iv=IV)


def test_the_samples_cover_the_hostile_classes():
    # What the issue names: integers CPython cannot print, long texts and byte strings, deep nesting.
    assert any(type(v) is int and v > 1 << 10000 for v in SAMPLES)
    assert any(type(v) is str and len(v) > 10000 for v in SAMPLES)
    assert any(type(v) is bytes and len(v) > 10000 for v in SAMPLES)
    assert {type(v) for v in SAMPLES} >= {int, float, str, bytes, list, dict, bool, type(None), cbor.Tag, cbor.Simple}
