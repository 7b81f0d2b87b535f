"""phasecore.msg: wire sizes, exact bytes, round trips and every validation rule.

Portable: runs under CPython and the MicroPython unix port.
"""

from phasecore import cbor, msg
from phasecore.errors import CBORDecodeError, SchemaError
from portable import raises, tohex, unhex

TYPICAL = [2314, 7482, 16502, 1234567, 500, 95, 1, 0]


def _reading(**changes):
    d = dict(zip(msg.READING_FIELDS, TYPICAL))
    d.update(changes)
    return d


def _move(**changes):
    d = {"id": 17, "op": msg.OP_MOVE, "deadline_s": 1700000000, "phase": 2}
    d.update(changes)
    return d


def _expect_schema_error(fn, *args):
    e = raises(SchemaError, fn, *args)
    return str(e)


def test_typical_reading_is_22_bytes_and_plain_cbor():
    body = msg.encode_reading(*TYPICAL)
    assert len(body) == 22  # docs/protocol.md: the 40-byte budget rests on this
    assert body == cbor.dumps(TYPICAL)
    assert tohex(body) == "8819090a191d3a1940761a0012d6871901f4185f0100"
    assert msg.encode(msg.READING, _reading()) == body
    assert msg.decode_reading(body) == TYPICAL
    assert msg.decode(msg.READING, body) == _reading()


def test_reading_extremes_fit_reading_max_len_and_match_cbor():
    cases = [
        [3000, 100000, -300000, 2**32 - 1, 700, 100, 3, 0xFFF],
        [3000, 100000, 300000, 2**32 - 1, 700, 100, 2, 0xFFF],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [23, 24, -24, 25, 400, 23, 0, 23],
        [255, 256, -256, 257, 0, 24, 0, 24],
        [2399, 65535, -65536, 65536, 650, 99, 1, 0x800],
    ]
    for values in cases:
        body = msg.encode_reading(*values)
        assert body == cbor.dumps(values), values
        assert len(body) <= msg.READING_MAX_LEN
        assert msg.decode_reading(body) == values
    assert len(msg.encode_reading(*cases[0])) == msg.READING_MAX_LEN


def test_encode_reading_into_reuses_a_buffer():
    buf = bytearray(msg.READING_MAX_LEN + 4)
    n = msg.encode_reading_into(buf, *TYPICAL)
    assert bytes(buf[:n]) == msg.encode_reading(*TYPICAL)
    mv = memoryview(buf)
    n2 = msg.encode_reading_into(mv, 2300, 0, 0, 0, 0, 0, 3, msg.ST_METER)
    assert bytes(buf[:n2]) == cbor.dumps([2300, 0, 0, 0, 0, 0, 3, 2])
    raises(SchemaError, msg.encode_reading_into, bytearray(10), *TYPICAL)
    try:
        import gc

        alloc = gc.mem_alloc  # MicroPython: the loop's promise is no allocation at all
    except (ImportError, AttributeError):
        return
    msg.encode_reading_into(buf, *TYPICAL)
    gc.collect()
    before = alloc()
    for _ in range(50):
        msg.encode_reading_into(buf, 2314, 7482, 16502, 1234567, 500, 95, 1, 0)
    assert alloc() - before == 0, alloc() - before


def test_reading_fields_checked_with_their_names():
    bad = [
        ("voltage_dV", 3001),
        ("voltage_dV", -1),
        ("current_mA", 100001),
        ("power_dW", 300001),
        ("power_dW", -300001),
        ("energy_Wh", 2**32),
        ("energy_Wh", -1),
        ("frequency_dHz", 399),
        ("frequency_dHz", 701),
        ("frequency_dHz", 1),
        ("pf_centi", 101),
        ("phase", 4),
        ("phase", -1),
        ("status", 0x1000),
        ("status", -1),
        ("voltage_dV", float("nan")),
        ("current_mA", float("inf")),
        ("power_dW", 1.0),
        ("phase", True),
        ("status", None),
        ("energy_Wh", "1"),
        ("pf_centi", [95]),
    ]
    for name, value in bad:
        fields = _reading(**{name: value})
        e = _expect_schema_error(msg.encode, msg.READING, fields)
        assert name in e, (name, value, e)
        values = [fields[n] for n in msg.READING_FIELDS]
        e = _expect_schema_error(msg.encode_reading, *values)
        assert name in e
        # and the same on the decode side, from a body some other encoder made
        e = _expect_schema_error(msg.decode, msg.READING, cbor.dumps(values))
        assert name in e, (name, value, e)


def test_reading_edges_that_are_valid():
    for changes in (
        {"frequency_dHz": 0},
        {"frequency_dHz": 400},
        {"frequency_dHz": 700},
        {"voltage_dV": 0},
        {"power_dW": -5000},
        {"phase": msg.PHASE_NONE},
        {"status": msg.ST_OVERCURRENT | msg.ST_REBOOTED},
    ):
        fields = _reading(**changes)
        assert msg.decode(msg.READING, msg.encode(msg.READING, fields)) == fields


def test_reading_bodies_of_the_wrong_shape():
    for obj in ([], TYPICAL[:7], TYPICAL + [0], {0: 1}, 5, "x", None, b"\x00" * 8):
        e = _expect_schema_error(msg.decode, msg.READING, cbor.dumps(obj))
        assert "array of 8 integers" in e, e
    raises(CBORDecodeError, msg.decode, msg.READING, b"")
    raises(CBORDecodeError, msg.decode, msg.READING, msg.encode_reading(*TYPICAL)[:-1])
    raises(CBORDecodeError, msg.decode, msg.READING, msg.encode_reading(*TYPICAL) + b"\x00")
    assert "voltage_dV" in _expect_schema_error(msg.decode, msg.READING, cbor.dumps([[1]] * 8))
    raises(CBORDecodeError, msg.decode, msg.READING, cbor.dumps([[[1]]] * 8))  # deeper than any body
    # NaN, infinities and floats in any width are not integers.
    for f in ("f97e00", "f97c00", "fa7f800000", "fb7ff8000000000000", "f93c00"):
        body = unhex("88" + f + "1901f4" * 7)
        e = _expect_schema_error(msg.decode, msg.READING, body)
        assert "voltage_dV" in e
    # A non-deterministic but well-formed body is read by value (the seal authenticates bytes).
    long_form = unhex("88" + "1a0000090a" + "191d3a1940761a0012d6871901f4185f0100")
    assert msg.decode_reading(long_form) == TYPICAL


def test_reading_encode_needs_exactly_the_eight_fields():
    fields = _reading()
    del fields["status"]
    assert "status" in _expect_schema_error(msg.encode, msg.READING, fields)
    fields = _reading(extra=1)
    assert "extra" in _expect_schema_error(msg.encode, msg.READING, fields)
    raises(SchemaError, msg.encode, msg.READING, TYPICAL)


def test_command_move_wire_form_is_pinned():
    body = msg.encode(msg.COMMAND, _move(expect_phase=0, ref_seq=1234))
    # {0: 1, 1: 17, 2: 1, 3: 1700000000, 4: 1234, 5: 2, 6: 0}
    assert tohex(body) == "a7000101110201031a6553f100041904d205020600"
    assert len(body) == 21
    assert msg.decode(msg.COMMAND, body) == _move(expect_phase=0, ref_seq=1234)


def test_every_kind_round_trips_with_all_and_with_required_fields():
    full = {
        msg.SUMMARY: {
            "time_s": 1700000000,
            "period_s": 900,
            "i_dA": [1203, 987, 1410],
            "i_n_dA": 380,
            "cuf_pm": 176,
            "cuf_max_pm": 402,
            "v_dV": [2301, 2312, 2288],
            "p_W": [26500, 21700, -3100],
            "vuf_pm": 8,
            "nodes": [52, 1, 2, 0],
            "moves": 3,
            "moves_failed": 1,
            "frequency_dHz": 499,
            "flags": 0,
            "backlog": 0,
        },
        msg.COMMAND: _move(expect_phase=1, ref_seq=2**40 - 1),
        msg.ACK: {"id": 17, "outcome": msg.ACK_REFUSED, "reason": 6, "phase": 1, "status": msg.ST_BUDGET},
        msg.HEARTBEAT: {
            "uptime_s": 86400,
            "fw": "phasenode 0.1.0",
            "boots": 3,
            "time_s": 1700000000,
            "tx": 1440,
            "rx": 1438,
            "rx_bad": 2,
            "moves": 5,
            "refusals": 1,
            "heap_free": 61234,
            "rssi_dBm": -97,
            "phase": 2,
            "status": 0,
        },
        msg.EVENT: {
            "code": 4,
            "value": 0,
            "value2": 2,
            "time_s": 1700000000,
            "node": 7,
            "severity": 0,
            "text": "moved A -> C",
        },
    }
    required = {
        msg.SUMMARY: {"time_s": 0, "period_s": 60, "i_dA": [0, 0, 0], "cuf_pm": 0, "nodes": [0, 0, 0, 0], "moves": 0},
        msg.COMMAND: {"id": 0, "op": msg.OP_REPORT, "deadline_s": 0},
        msg.ACK: {"id": 2**32 - 1, "outcome": msg.ACK_DONE, "phase": 0},
        msg.HEARTBEAT: {"uptime_s": 0, "fw": "1"},
        msg.EVENT: {"code": 16},
    }
    for kind in (msg.SUMMARY, msg.COMMAND, msg.ACK, msg.HEARTBEAT, msg.EVENT):
        for fields in (full[kind], required[kind]):
            body = msg.encode(kind, fields)
            assert msg.decode(kind, body) == fields, (msg.KIND_NAMES[kind], fields)
            m = cbor.loads(body)
            assert m[0] == msg.SCHEMA_VERSION
            assert len(m) == len(fields) + 1
            for name in fields:
                copy = dict(fields)
                del copy[name]
                if name in required[kind]:
                    e = _expect_schema_error(msg.encode, kind, copy)
                    assert name in e and "missing" in e, e
                    m2 = dict(m)
                    del m2[_key_of(kind, name)]
                    e = _expect_schema_error(msg.decode, kind, cbor.dumps(m2))
                    assert name in e and "missing" in e, e


def _key_of(kind, name):
    for spec in msg._SPECS[kind]:
        if spec[1] == name:
            return spec[0]
    raise AssertionError(name)


def test_map_sizes_stay_small():
    assert len(msg.encode(msg.ACK, {"id": 17, "outcome": msg.ACK_DONE, "phase": 2})) == 9
    hb = msg.encode(msg.HEARTBEAT, {"uptime_s": 86400, "fw": "0.1.0", "boots": 3, "rx_bad": 0})
    assert len(hb) <= 20, len(hb)


def test_schema_version_checked():
    body = msg.encode(msg.ACK, {"id": 1, "outcome": 0, "phase": 0})
    m = cbor.loads(body)
    for version, words in ((2, "version 2"), (True, "version True"), (1.0, "version 1.0"), ("1", "version '1'")):
        m[0] = version
        e = _expect_schema_error(msg.decode, msg.ACK, cbor.dumps(m))
        assert words in e, e
    del m[0]
    assert "no schema version" in _expect_schema_error(msg.decode, msg.ACK, cbor.dumps(m))


def test_unknown_keys_and_names_refused():
    m = cbor.loads(msg.encode(msg.ACK, {"id": 1, "outcome": 0, "phase": 0}))
    for key in (6, 99, -1, "id", b"\x01", 2**64):
        m2 = dict(m)
        m2[key] = 0
        e = _expect_schema_error(msg.decode, msg.ACK, cbor.dumps(m2))
        assert "unknown key" in e, e
    # A true or 1.0 key is not key 1, although Python's dict would look it up as 1.
    for fake in ("f5", "f93c00"):
        body = unhex("a40001" + fake + "0102000400")
        assert "unknown key" in _expect_schema_error(msg.decode, msg.ACK, body)
    e = _expect_schema_error(msg.encode, msg.ACK, {"id": 1, "outcome": 0, "phase": 0, "colour": 1})
    assert "colour" in e
    raises(SchemaError, msg.encode, msg.ACK, [1, 0, 0])


def test_map_fields_type_and_range_checked_with_names():
    cases = [
        (msg.SUMMARY, "i_dA", [1, 2]),
        (msg.SUMMARY, "i_dA", [1, 2, 100001]),
        (msg.SUMMARY, "i_dA", (1, 2, 3)),
        (msg.SUMMARY, "nodes", [1, 2, 3]),
        (msg.SUMMARY, "cuf_pm", 2001),
        (msg.SUMMARY, "period_s", 0),
        (msg.SUMMARY, "frequency_dHz", 39),
        (msg.SUMMARY, "p_W", [0, 0, float("nan")]),
        (msg.SUMMARY, "v_dV", [2300, 2300, float("inf")]),
        (msg.COMMAND, "id", 2**32),
        (msg.COMMAND, "op", 9),
        (msg.COMMAND, "op", 0),
        (msg.COMMAND, "phase", 3),
        (msg.COMMAND, "deadline_s", -1),
        (msg.COMMAND, "ref_seq", 2**40),
        (msg.COMMAND, "id", 1.5),
        (msg.ACK, "outcome", 5),
        (msg.ACK, "reason", 256),
        (msg.ACK, "phase", 4),
        (msg.ACK, "status", 0x1000),
        (msg.HEARTBEAT, "fw", ""),
        (msg.HEARTBEAT, "fw", "x" * 25),
        (msg.HEARTBEAT, "fw", "caf\u00e9"),
        (msg.HEARTBEAT, "fw", "a\nb"),
        (msg.HEARTBEAT, "fw", b"0.1"),
        (msg.HEARTBEAT, "rssi_dBm", 1),
        (msg.HEARTBEAT, "uptime_s", False),
        (msg.EVENT, "code", 0),
        (msg.EVENT, "code", 65536),
        (msg.EVENT, "node", 248),
        (msg.EVENT, "severity", 4),
        (msg.EVENT, "text", "x" * 65),
        (msg.EVENT, "value", 2**63),
        (msg.EVENT, "value", float("nan")),
    ]
    base = {
        msg.SUMMARY: {"time_s": 1, "period_s": 60, "i_dA": [0, 0, 0], "cuf_pm": 0, "nodes": [0, 0, 0, 0], "moves": 0},
        msg.COMMAND: _move(),
        msg.ACK: {"id": 1, "outcome": 0, "phase": 0},
        msg.HEARTBEAT: {"uptime_s": 1, "fw": "1"},
        msg.EVENT: {"code": 1},
    }
    for kind, name, value in cases:
        fields = dict(base[kind])
        fields[name] = value
        e = _expect_schema_error(msg.encode, kind, fields)
        assert name in e and msg.KIND_NAMES[kind] in e, (kind, name, value, e)
        # decode sees the same body from a careless encoder
        m = cbor.loads(msg.encode(kind, base[kind]))
        if type(value) is tuple:
            continue  # a tuple is an array on the wire, read back as a list: an encode-side check only
        m[_key_of(kind, name)] = value
        body = cbor.dumps(m)
        e = _expect_schema_error(msg.decode, kind, body)
        assert name in e, (kind, name, value, e)


def test_command_cross_field_rules():
    ok = [
        _move(),
        _move(expect_phase=0),
        {"id": 1, "op": msg.OP_LOCK, "deadline_s": 5, "reason": 9},
        {"id": 1, "op": msg.OP_UNLOCK, "deadline_s": 5},
        {"id": 1, "op": msg.OP_SET_LIMITS, "deadline_s": 5, "max_per_day": 4},
        {
            "id": 1,
            "op": msg.OP_SET_LIMITS,
            "deadline_s": 5,
            "v_min_dV": 2000,
            "v_max_dV": 2530,
            "i_max_mA": 63000,
            "max_per_hour": 2,
            "min_dwell_s": 3600,
            "dead_time_ms": 200,
        },
    ]
    for fields in ok:
        assert msg.decode(msg.COMMAND, msg.encode(msg.COMMAND, fields)) == fields
    bad = [
        ({"id": 1, "op": msg.OP_MOVE, "deadline_s": 5}, "phase is required"),
        (_move(expect_phase=2), "expect_phase"),
        ({"id": 1, "op": msg.OP_LOCK, "deadline_s": 5, "phase": 1}, "only for MOVE"),
        ({"id": 1, "op": msg.OP_UNLOCK, "deadline_s": 5, "expect_phase": 1}, "only for MOVE"),
        (_move(max_per_day=3), "max_per_day is only for SET_LIMITS"),
        ({"id": 1, "op": msg.OP_SET_LIMITS, "deadline_s": 5}, "no limit"),
        ({"id": 1, "op": msg.OP_SET_LIMITS, "deadline_s": 5, "v_min_dV": 2500, "v_max_dV": 2500}, "v_min_dV"),
        (_move(reason=3), "reason is only for LOCK"),
    ]
    for fields, words in bad:
        e = _expect_schema_error(msg.encode, msg.COMMAND, fields)
        assert words in e, (fields, e)
        m = {0: 1}
        for name in fields:
            m[_key_of(msg.COMMAND, name)] = fields[name]
        e = _expect_schema_error(msg.decode, msg.COMMAND, cbor.dumps(m))
        assert words in e, (fields, e)


def test_event_codes_are_open_but_outcomes_and_ops_are_closed():
    # A newer node's event must still reach an older Pi; a command or an outcome must be understood.
    body = msg.encode(msg.EVENT, {"code": 60000, "value": -(2**63)})
    assert msg.decode(msg.EVENT, body) == {"code": 60000, "value": -(2**63)}
    assert 60000 not in msg.EVENT_NAMES
    assert "op" in _expect_schema_error(msg.decode, msg.COMMAND, cbor.dumps({0: 1, 1: 1, 2: 9, 3: 0}))  # 9: no op
    assert "outcome" in _expect_schema_error(msg.decode, msg.ACK, cbor.dumps({0: 1, 1: 1, 2: 5, 4: 0}))
    assert msg.decode(msg.ACK, cbor.dumps({0: 1, 1: 1, 2: 1, 3: 200, 4: 0}))["reason"] == 200


def test_ota_command_fields_go_with_op_ota_and_begin_only():
    begin = {
        "id": 1,
        "op": msg.OP_OTA,
        "deadline_s": 9,
        "ota": 1,
        "ota_id": 0xFFFFFFFF,
        "ota_size": 5,
        "ota_chunk": 222,
    }
    assert msg.decode(msg.COMMAND, msg.encode(msg.COMMAND, begin)) == begin
    act = {"id": 2, "op": msg.OP_OTA, "deadline_s": 9, "ota": 2, "ota_id": 7}
    assert msg.decode(msg.COMMAND, msg.encode(msg.COMMAND, act)) == act
    bad = [
        ({"id": 1, "op": msg.OP_OTA, "deadline_s": 9, "ota_id": 7}, "ota is required"),
        ({"id": 1, "op": msg.OP_OTA, "deadline_s": 9, "ota": 2}, "ota_id is required"),
        ({"id": 1, "op": msg.OP_OTA, "deadline_s": 9, "ota": 4, "ota_id": 7}, "not a known code"),
        ({"id": 1, "op": msg.OP_OTA, "deadline_s": 9, "ota": 1, "ota_id": 7, "ota_size": 5}, "ota_chunk"),
        (dict(act, ota_size=5), "ota_size is for OTA BEGIN"),
        (dict(begin, ota_chunk=223), "ota_chunk"),
        (dict(begin, ota_chunk=15), "ota_chunk"),
        ({"id": 1, "op": msg.OP_REPORT, "deadline_s": 9, "ota_id": 7}, "only for OTA"),
    ]
    for fields, words in bad:
        e = _expect_schema_error(msg.encode, msg.COMMAND, fields)
        assert words in e, (fields, e)


def test_map_bodies_of_the_wrong_shape():
    for kind in (msg.SUMMARY, msg.COMMAND, msg.ACK, msg.HEARTBEAT, msg.EVENT):
        for obj in (TYPICAL, [], 1, "x", None, b""):
            e = _expect_schema_error(msg.decode, kind, cbor.dumps(obj))
            assert "must be a map" in e, e
        raises(CBORDecodeError, msg.decode, kind, b"\xa1")
        raises(CBORDecodeError, msg.decode, kind, b"\xa1\x00\x81\x81\x81\x00")  # deeper than any body
        raises(CBORDecodeError, msg.decode, kind, b"\xa1\x00\x01\xff")


def test_unknown_kinds_refused():
    for kind in (8, -1, None, "reading", 1.0, True):
        e = _expect_schema_error(msg.decode, kind, msg.encode_reading(*TYPICAL))
        assert "unknown message kind" in e, e
        raises(SchemaError, msg.encode, kind, _reading())
    assert msg.KIND_NAMES == (
        "reading",
        "summary",
        "command",
        "ack",
        "heartbeat",
        "event",
        "ota_data",
        "ota_status",
    )
    kinds = (msg.READING, msg.SUMMARY, msg.COMMAND, msg.ACK, msg.HEARTBEAT, msg.EVENT, msg.OTA_DATA, msg.OTA_STATUS)
    assert kinds == (0, 1, 2, 3, 4, 5, 6, 7)


def test_status_names():
    assert msg.status_names(0) == []
    assert msg.status_names(msg.ST_OVERCURRENT | msg.ST_NOT_SWITCHABLE) == ["OVERCURRENT", "NOT_SWITCHABLE"]
    assert len(msg.STATUS_BITS) == 12
    assert msg.ST_LOCKED_MASK == 0x7F


def test_code_tables_are_consistent():
    assert msg.OUTCOME_NAMES[msg.ACK_UNSUPPORTED] == "UNSUPPORTED"
    assert msg.OP_NAMES[msg.OP_SET_LIMITS] == "SET_LIMITS"
    # Ack reasons 0-11 and event codes 1-9 are the relay controller's codes as they are.
    assert msg.REASON_NAMES[:12] == (
        "OK",
        "INVALID_PHASE",
        "SAME_PHASE",
        "BUSY",
        "TWO_PHASES",
        "LOCKED_OUT",
        "DWELL",
        "BUDGET_HOUR",
        "BUDGET_DAY",
        "PERSIST",
        "RELAY_FAULT",
        "CONDITION_ACTIVE",
    )
    assert [msg.EVENT_NAMES[i] for i in range(1, 10)] == [
        "RESTORED",
        "ROLLED_BACK",
        "STATE_LOST",
        "MOVED",
        "ABORTED",
        "LOCKED",
        "UNLOCKED",
        "PIN_MISMATCH",
        "PERSIST_FAILED",
    ]
