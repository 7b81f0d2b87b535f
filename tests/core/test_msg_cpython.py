"""phasecore.msg on generated messages and hostile bodies; its documentation kept in step.

CPython only (hypothesis, cbor2, re).
"""

import re
from pathlib import Path

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore import msg
from phasecore.errors import CBORDecodeError, SchemaError

_SETTINGS = settings(max_examples=200, deadline=2000)
_MAP_KINDS = (msg.SUMMARY, msg.COMMAND, msg.ACK, msg.HEARTBEAT, msg.EVENT)
ROOT = Path(__file__).resolve().parents[2]

readings = st.tuples(
    st.integers(0, 3000),
    st.integers(0, 100000),
    st.integers(-300000, 300000),
    st.integers(0, 2**32 - 1),
    st.one_of(st.just(0), st.integers(400, 700)),
    st.integers(0, 100),
    st.integers(0, 3),
    st.integers(0, 0xFFF),
)


def _value(field):
    _, _, typ, lo, hi, _ = field
    if typ == msg._INT:
        return st.integers(lo, hi)
    if typ == msg._FREQ:
        return st.one_of(st.just(0), st.integers(lo, hi))
    if typ in (msg._ARR3, msg._ARR4):
        n = 3 if typ == msg._ARR3 else 4
        return st.lists(st.integers(lo, hi), min_size=n, max_size=n)
    if typ == msg._CODE:
        return st.sampled_from(sorted(lo) if isinstance(lo, dict) else list(range(len(lo))))
    if typ == msg._ASCII:
        return st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=lo, max_size=hi)
    return st.text(min_size=lo, max_size=hi, alphabet=st.characters(blacklist_categories=("Cs",)))


@st.composite
def map_messages(draw, kind):
    fields = {}
    for field in msg._SPECS[kind]:
        if field[5] or draw(st.booleans()):
            fields[field[1]] = draw(_value(field))
    if kind == msg.COMMAND:
        # Respect the cross-field rules: per-op fields only with their op.
        op = fields["op"]
        for name in (
            "phase",
            "expect_phase",
            "reason",
            "i_max_mA",
            "v_min_dV",
            "v_max_dV",
            "max_per_hour",
            "max_per_day",
            "min_dwell_s",
            "dead_time_ms",
            "ota",
            "ota_id",
            "ota_size",
            "ota_chunk",
        ):
            fields.pop(name, None)
        if op == msg.OP_MOVE:
            fields["phase"] = draw(st.integers(0, 2))
            if draw(st.booleans()):
                fields["expect_phase"] = draw(st.integers(0, 2).filter(lambda p: p != fields["phase"]))
        elif op == msg.OP_LOCK and draw(st.booleans()):
            fields["reason"] = draw(st.integers(0, 255))
        elif op == msg.OP_SET_LIMITS:
            specs = [f for f in msg._COMMAND if f[0] in msg._LIMIT_KEYS]
            chosen = draw(st.lists(st.sampled_from(specs), min_size=1, max_size=7, unique=True))
            for f in chosen:
                fields[f[1]] = draw(_value(f))
            if "v_min_dV" in fields and "v_max_dV" in fields and fields["v_min_dV"] >= fields["v_max_dV"]:
                fields["v_min_dV"], fields["v_max_dV"] = 0, 3000
        elif op == msg.OP_OTA:
            fields["ota"] = draw(st.sampled_from(sorted(msg.OTA_ACTIONS)))
            fields["ota_id"] = draw(st.integers(0, 2**32 - 1))
            if fields["ota"] == 1:
                fields["ota_size"] = draw(st.integers(1, 16777216))
                fields["ota_chunk"] = draw(st.integers(16, 222))
    return kind, fields


any_map_message = st.one_of([map_messages(k) for k in _MAP_KINDS])


@_SETTINGS
@given(readings)
def test_reading_round_trip_and_cbor2_agrees(values):
    body = msg.encode_reading(*values)
    assert body == cbor2.dumps(list(values), canonical=True)
    assert len(body) <= msg.READING_MAX_LEN
    assert msg.decode_reading(body) == list(values)
    assert msg.decode(msg.READING, cbor2.dumps(list(values))) == dict(zip(msg.READING_FIELDS, values))


@_SETTINGS
@given(any_map_message)
def test_map_messages_round_trip_and_match_cbor2(kind_fields):
    kind, fields = kind_fields
    body = msg.encode(kind, fields)
    assert msg.decode(kind, body) == fields
    # Keys 0..15 all encode in one byte, so cbor2's length-first canonical order is RFC 8949's here.
    by_key = {0: msg.SCHEMA_VERSION}
    for f in msg._SPECS[kind]:
        if f[1] in fields:
            by_key[f[0]] = fields[f[1]]
    assert body == cbor2.dumps(by_key, canonical=True)


def _only_typed_errors(kind, body):
    try:
        msg.decode(kind, body)
    except (SchemaError, CBORDecodeError):
        pass


@_SETTINGS
@given(st.integers(0, 5), st.binary(max_size=48))
def test_random_bytes_give_only_typed_errors(kind, body):
    _only_typed_errors(kind, body)


_cbor_values = st.recursive(
    st.one_of(
        st.integers(-(2**64), 2**64 - 1),
        st.floats(),
        st.text(max_size=30),
        st.binary(max_size=8),
        st.booleans(),
        st.none(),
    ),
    lambda c: st.one_of(
        st.lists(c, max_size=9), st.dictionaries(st.one_of(st.integers(-2, 20), st.text(max_size=2)), c, max_size=9)
    ),
    max_leaves=20,
)


@_SETTINGS
@given(st.integers(0, 5), _cbor_values)
def test_well_formed_but_wrong_bodies_give_only_typed_errors(kind, value):
    _only_typed_errors(kind, cbor2.dumps(value))


@st.composite
def mutated_bodies(draw):
    if draw(st.booleans()):
        kind, fields = draw(any_map_message)
        body = bytearray(msg.encode(kind, fields))
    else:
        kind = msg.READING
        body = bytearray(msg.encode_reading(*draw(readings)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(body) - 1))
        op = draw(st.sampled_from(["flip", "set", "drop", "insert"]))
        if op == "flip":
            body[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            body[i] = draw(st.integers(0, 255))
        elif op == "drop" and len(body) > 1:
            del body[i]
        else:
            body[i:i] = draw(st.binary(min_size=1, max_size=4))
    return draw(st.sampled_from([kind, draw(st.integers(0, 5))])), bytes(body)


@_SETTINGS
@given(mutated_bodies())
def test_mutated_bodies_give_only_typed_errors(kind_body):
    kind, body = kind_body
    _only_typed_errors(kind, body)


@_SETTINGS
@given(
    st.integers(0, 5),
    st.dictionaries(
        st.sampled_from(sorted({f[1] for s in msg._SPECS[1:] for f in s} | set(msg.READING_FIELDS) | {"x"})),
        _cbor_values,
        max_size=10,
    ),
)
def test_encode_of_arbitrary_fields_gives_only_schema_error(kind, fields):
    try:
        body = msg.encode(kind, fields)
    except SchemaError:
        return
    assert msg.decode(kind, body) == fields


# ---------------------------------------------------------------- documentation in step


def _doc_rows(title):
    # The first table after the title: its consecutive "|" lines.
    lines = msg.__doc__[msg.__doc__.index(title) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        m = re.match(r"\| (\d+) \| (\w+) \| ([^|]+) \|", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3).strip()))
    return rows


def test_docstring_field_tables_match_the_schema():
    titles = {
        msg.SUMMARY: "Kind 1, summary",
        msg.COMMAND: "Kind 2, command",
        msg.ACK: "Kind 3, ack",
        msg.HEARTBEAT: "Kind 4, heartbeat",
        msg.EVENT: "Kind 5, event",
    }
    for kind, title in titles.items():
        rows = _doc_rows(title)
        spec = msg._SPECS[kind]
        assert [(r[0], r[1]) for r in rows] == [(f[0], f[1]) for f in spec], title
        for row, f in zip(rows, spec):
            assert (row[2] == "R") == f[5], (title, row)
    reading = _doc_rows("Kind 0, reading")
    assert [r[1] for r in reading] == list(msg.READING_FIELDS)
    status = _doc_rows("Status bits")
    assert [r[1] for r in status] == list(msg.STATUS_BITS)
    assert [r[0] for r in status] == list(range(12))


def test_protocol_md_section_3_agrees():
    text = (ROOT / "docs" / "protocol.md").read_text()
    sec = text[text.index("## 3. Messages") : text.index("## 4.")]
    for name in msg.KIND_NAMES:
        assert "| %s |" % name in sec, name
    assert "[voltage_dV, current_mA, power_dW,\nenergy_Wh, frequency_dHz, pf_centi, phase, status]" in sec
    for kind in _MAP_KINDS:
        row = re.search(r"^\| %s \| (.+) \|$" % msg.KIND_NAMES[kind], sec, re.M).group(1)
        for key, name, _, _, _, _required in msg._SPECS[kind]:
            if kind == msg.COMMAND and key in msg._LIMIT_KEYS:
                assert name in row, name
            else:
                assert re.search(r"\b%d %s\b" % (key, name), row), (msg.KIND_NAMES[kind], key, name)
    for i, name in enumerate(msg.STATUS_BITS):
        assert "%d %s" % (i, name) in sec.replace("\n", " "), name
    assert len(msg.encode_reading(2314, 7482, 16502, 1234567, 500, 95, 1, 0)) == 22
    assert "| reading body `[2314, 7482, 16502, 1234567, 500, 95, 1, 0]` | 22 |" in text
