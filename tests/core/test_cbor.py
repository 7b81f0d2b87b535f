"""phasecore.cbor against RFC 8949 Appendix A and F.1, its limits and its errors.

Portable: runs under CPython and the MicroPython unix port.
"""

import struct

from phasecore.cbor import UNDEFINED, CBORDecodeError, CBOREncodeError, Simple, Tag, dumps, loads, loads_prefix
from portable import load_vectors, raises, tohex, unhex

_INF = float("inf")
_NAN = float("nan")
# The unix port and CPython have double floats; an ESP32 build has single
# ones, where values that need a double cannot be checked bit for bit.
_DOUBLE = struct.unpack(">d", struct.pack(">d", 1.1))[0] != struct.unpack(">f", struct.pack(">f", 1.1))[0]


def _needs_double(hexstr):
    return hexstr.startswith("fb") or hexstr.startswith("c1fb")


# Appendix A entries given in diagnostic notation only: their Python values.
_DIAGNOSTIC = {
    "Infinity": _INF,
    "-Infinity": -_INF,
    "NaN": _NAN,
    "undefined": UNDEFINED,
    "simple(16)": Simple(16),
    "simple(255)": Simple(255),
    '0("2013-03-21T20:04:00Z")': Tag(0, "2013-03-21T20:04:00Z"),
    "1(1363896240)": Tag(1, 1363896240),
    "1(1363896240.5)": Tag(1, 1363896240.5),
    "23(h'01020304')": Tag(23, b"\x01\x02\x03\x04"),
    "24(h'6449455446')": Tag(24, b"dIETF"),
    '32("http://www.example.com")': Tag(32, "http://www.example.com"),
    "h''": b"",
    "h'01020304'": b"\x01\x02\x03\x04",
    "{1: 2, 3: 4}": {1: 2, 3: 4},
    "(_ h'0102', h'030405')": b"\x01\x02\x03\x04\x05",
}
# RFC 7049 allowed the two-byte form of simple(24); RFC 8949 3.3 makes it not well-formed.
_NOT_WELL_FORMED_IN_8949 = ("f818",)


def _same(a, b):
    """Equal in value AND type (1 != 1.0 != True here), -0.0 != 0.0, NaN == NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a:
            return b != b
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and _same(a[k], b[k]) for k in a)
    if type(a) is Tag:
        return a.tag == b.tag and _same(a.value, b.value)
    return a == b


def _close(a, b):
    # MicroPython's float parser (used by json) may be one ulp off a decimal literal.
    return type(a) is float and type(b) is float and abs(a - b) <= 1e-15 * abs(b)


def _appendix_a():
    vectors = load_vectors("cbor/appendix_a.json")
    assert len(vectors) == 82, len(vectors)
    out = []
    for v in vectors:
        if v["hex"] in _NOT_WELL_FORMED_IN_8949:
            continue
        if "decoded" in v:
            expected = v["decoded"]
        else:
            assert v["diagnostic"] in _DIAGNOSTIC, "no expected value for %s" % v["diagnostic"]
            expected = _DIAGNOSTIC[v["diagnostic"]]
        out.append((v["hex"], v["roundtrip"], expected))
    return out


def test_appendix_a_decodes_every_vector_to_its_value():
    cases = _appendix_a()
    assert len(cases) == 81
    for hexstr, _, expected in cases:
        if not _DOUBLE and _needs_double(hexstr):
            continue
        got = loads(unhex(hexstr))
        assert _same(got, expected) or _close(got, expected), (hexstr, got, expected)


def test_appendix_a_preferred_vectors_reencode_byte_exact():
    n = 0
    for hexstr, roundtrip, expected in _appendix_a():
        if not roundtrip:
            continue
        n += 1
        if not _DOUBLE and _needs_double(hexstr):
            continue
        assert tohex(dumps(loads(unhex(hexstr)))) == hexstr, hexstr
        if _same(loads(unhex(hexstr)), expected):  # the JSON value itself, where parsed exactly
            assert tohex(dumps(expected)) == hexstr, hexstr
    assert n == 64, n


def test_appendix_a_other_forms_reencode_to_the_deterministic_form():
    # Indefinite lengths become definite, long float forms of inf/NaN become half.
    expected = {
        "fa7f800000": "f97c00",
        "fa7fc00000": "f97e00",
        "faff800000": "f9fc00",
        "fb7ff0000000000000": "f97c00",
        "fb7ff8000000000000": "f97e00",
        "fbfff0000000000000": "f9fc00",
        "5f42010243030405ff": "450102030405",
        "7f657374726561646d696e67ff": "6973747265616d696e67",
        "9fff": "80",
        "9f018202039f0405ffff": "8301820203820405",
        "83019f0203ff820405": "8301820203820405",
        "bf61610161629f0203ffff": "a26161016162820203",
        "bf6346756ef563416d7421ff": "a263416d74216346756ef5",  # "Amt" sorts before "Fun"
    }
    others = [h for h, rt, _ in _appendix_a() if not rt]
    assert len(others) == 17
    for h in others:
        out = tohex(dumps(loads(unhex(h))))
        if h in expected:
            assert out == expected[h], (h, out)
        assert len(out) <= len(h), h


def test_appendix_f1_not_well_formed_items_all_raise():
    f1 = load_vectors("cbor/rfc8949_appendix_f1_not_well_formed.json")
    items = f1["items"]
    assert len(items) == 94
    for item in items:
        raises(CBORDecodeError, loads, unhex(item["hex"]))
    for h in _NOT_WELL_FORMED_IN_8949:
        raises(CBORDecodeError, loads, unhex(h))


def test_integer_heads_are_shortest_at_every_boundary():
    cases = [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-256, "38ff"),
        (-257, "390100"),
        (-(2**32), "3affffffff"),
        (-(2**32) - 1, "3b0000000100000000"),
        (-(2**64), "3bffffffffffffffff"),
    ]
    for value, hexstr in cases:
        assert tohex(dumps(value)) == hexstr, (value, tohex(dumps(value)))
        assert loads(unhex(hexstr)) == value


def test_bignums_only_beyond_64_bits_and_without_leading_zeros():
    assert tohex(dumps(2**64)) == "c249010000000000000000"
    assert tohex(dumps(-(2**64) - 1)) == "c349010000000000000000"
    assert tohex(dumps(2**72)) == "c24a01000000000000000000"
    big = 2**200 + 12345
    assert loads(dumps(big)) == big and loads(dumps(-big)) == -big
    # Decoding is lenient about non-preferred bignums; the value is what counts.
    assert loads(unhex("c2420001")) == 1
    assert loads(unhex("c240")) == 0
    assert loads(unhex("c340")) == -1
    e = raises(CBORDecodeError, loads, unhex("c201"))
    assert "byte string" in str(e) and "offset 0" in str(e)


def test_floats_take_the_shortest_exact_form():
    cases = [
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.0, "f93c00"),
        (1.5, "f93e00"),
        (65504.0, "f97bff"),
        (-4.0, "f9c400"),
        (2.0**-24, "f90001"),
        (2.0**-14, "f90400"),
        (2.0**-15, "f90200"),
        (3 * 2.0**-24, "f90003"),
        (65505.0, "fa477fe100"),
        (100000.0, "fa47c35000"),
        (2.0**-25, "fa33000000"),
        (2.0**-149, "fa00000001"),
        (3.4028234663852886e38, "fa7f7fffff"),
        (1.1, "fb3ff199999999999a"),
        (1e300, "fb7e37e43c8800759c"),
        (2.0**-150, "fb3690000000000000"),
        (_INF, "f97c00"),
        (-_INF, "f9fc00"),
        (_NAN, "f97e00"),
    ]
    for value, hexstr in cases:
        if not _DOUBLE and _needs_double(hexstr):
            continue
        assert tohex(dumps(value)) == hexstr, (value, tohex(dumps(value)), hexstr)
        assert _same(loads(unhex(hexstr)), value), hexstr


def test_floats_decode_from_every_width():
    for hexstr in ("f93e00", "fa3fc00000", "fb3ff8000000000000"):
        assert _same(loads(unhex(hexstr)), 1.5)
    assert _same(loads(unhex("f98001")), -(2.0**-24))  # negative half subnormal
    assert _same(loads(unhex("f97bff")), 65504.0)
    nan_payload = loads(unhex("f97e01"))
    assert nan_payload != nan_payload
    assert _same(loads(unhex("fa7f800000")), _INF)


def test_map_keys_sorted_by_their_encoded_bytes():
    # RFC 8949 4.2.1: 10 (0a) < 100 (1864) < -1 (20) < h'' (40) < "a" (6161) < "aa" (626161).
    obj = {"aa": 6, b"": 4, 100: 5, "a": 1, -1: 3, 10: 2}
    assert tohex(dumps(obj)) == "a60a021864052003400461610162616106"
    assert loads(dumps(obj)) == obj


def test_duplicate_map_keys_rejected_with_offset():
    e = raises(CBORDecodeError, loads, unhex("a3010203040105"))
    assert "duplicate map key 1 at offset 5" in str(e), str(e)
    # 1 and 1.0 are different CBOR keys but one Python key: refused, not silently merged.
    raises(CBORDecodeError, loads, unhex("a20100f93c0000"))
    raises(CBORDecodeError, loads, unhex("bf0102010303ff"))


def test_dumps_refuses_keys_that_encode_alike():
    a = float("nan")
    b = float("nan")
    d = {a: 1, b: 2}
    if len(d) == 2:  # both interpreters keep two distinct NaN objects apart
        e = raises(CBOREncodeError, dumps, d)
        assert "f97e00" in str(e)


def test_array_keys_decode_as_tuples_and_map_keys_are_refused():
    d = loads(unhex("a1820102f5"))
    assert d == {(1, 2): True}
    assert dumps(d) == unhex("a1820102f5")
    e = raises(CBORDecodeError, loads, unhex("a1a00000"))
    assert "offset 1" in str(e)


def test_nesting_depth_is_bounded():
    ok = b"\x81" * 16 + b"\x00"
    assert loads(ok) is not None
    e = raises(CBORDecodeError, loads, b"\x81" * 17 + b"\x00")
    assert "nesting" in str(e) and "offset 16" in str(e), str(e)
    assert loads(b"\x81" * 17 + b"\x00", max_depth=17) is not None
    raises(CBORDecodeError, loads, b"\xc1" * 17 + b"\x00")  # tags count too
    raises(CBORDecodeError, loads, b"\xa1\x00" * 17 + b"\x00")
    raises(CBORDecodeError, loads, b"\x9f" * 100000)  # deep indefinite nesting, no recursion error
    raises(CBORDecodeError, loads, b"\x81" * 100000)
    nested = [0]
    for _ in range(16):
        nested = [nested]
    raises(CBOREncodeError, dumps, nested)
    cyclic = []
    cyclic.append(cyclic)
    raises(CBOREncodeError, dumps, cyclic)
    raises(CBOREncodeError, dumps, cyclic, 10**6)  # the interpreter's stack gives out first
    # A limit set beyond the interpreter's stack still ends in the typed error.
    e = raises(CBORDecodeError, loads, b"\x81" * 20000 + b"\x00", 10**6)
    assert "recursion limit" in str(e), str(e)


def test_declared_lengths_checked_against_remaining_bytes():
    e = raises(CBORDecodeError, loads, unhex("8301025affffffff") + bytes(12))
    assert str(e) == "declared length 4294967295 exceeds remaining 12 bytes at offset 3", str(e)
    e = raises(CBORDecodeError, loads, unhex("7bffffffffffffffff") + b"abc")
    assert "declared length 18446744073709551615 exceeds remaining 3 bytes at offset 0" in str(e)
    # An array of n items needs n bytes, a map of n pairs 2n: refused before allocating.
    e = raises(CBORDecodeError, loads, unhex("9bffffffffffffffff0102"))
    assert "array of 18446744073709551615 items exceeds remaining 2 bytes at offset 0" in str(e), str(e)
    e = raises(CBORDecodeError, loads, unhex("a3010203"))
    assert "map of 3 pairs exceeds remaining 3 bytes at offset 0" in str(e), str(e)
    raises(CBORDecodeError, loads, unhex("a2010203"))
    # Exact fits pass the check.
    assert loads(unhex("a201020304")) == {1: 2, 3: 4}
    assert loads(unhex("83010203")) == [1, 2, 3]
    assert loads(unhex("4401020304")) == b"\x01\x02\x03\x04"


def test_truncated_items_raise_with_offset():
    e = raises(CBORDecodeError, loads, unhex("81c1"))
    assert "unexpected end of input at offset 2" in str(e), str(e)
    e = raises(CBORDecodeError, loads, unhex("82011a0102"))
    assert "end of input inside the head at offset 2" in str(e), str(e)
    raises(CBORDecodeError, loads, b"")


def test_trailing_bytes_rejected():
    e = raises(CBORDecodeError, loads, unhex("0102"))
    assert str(e) == "1 trailing bytes after the item at offset 1", str(e)
    raises(CBORDecodeError, loads, unhex("80ff"))


def test_reserved_additional_information_rejected():
    for mt in range(8):
        for ai in (28, 29, 30):
            e = raises(CBORDecodeError, loads, bytes([(mt << 5) | ai, 0, 0, 0, 0, 0, 0, 0, 0]))
            assert "reserved additional information %d at offset 0" % ai in str(e), str(e)
    e = raises(CBORDecodeError, loads, unhex("82001c"))
    assert "offset 2" in str(e)


def test_invalid_utf8_rejected_on_every_interpreter():
    bad = [
        "61ff",  # never valid
        "6180",  # lone continuation byte
        "62c080",  # overlong NUL (MicroPython's decoder accepts it)
        "63e08080",  # overlong three-byte form
        "63eda080",  # UTF-16 surrogate U+D800 (MicroPython accepts it)
        "64f4908080",  # U+110000, beyond Unicode (MicroPython accepts it)
        "64f8888080",  # five-byte lead
        "62e6b0",  # truncated sequence
        "6261c3",  # truncated at the end of the string
        "7f61c361bcff",  # a character split across indefinite-length chunks (RFC 8949 3.2.3)
    ]
    for h in bad:
        e = raises(CBORDecodeError, loads, unhex(h))
        assert "UTF-8" in str(e), (h, str(e))
    e = raises(CBORDecodeError, loads, unhex("826161") + unhex("63eda080"))
    assert "offset 4" in str(e), str(e)
    good = {
        "64f48fbfbf": "\U0010ffff",
        "63ed9fbf": "\ud7ff",
        "63ee8080": "\ue000",
        "62c280": "\x80",
        "63e0a080": "\u0800",
        "64f0908080": "\U00010000",
    }
    for h, s in good.items():
        assert loads(unhex(h)) == s, h
        assert tohex(dumps(s)) == h


def test_indefinite_length_items_decode_and_misuse_is_refused():
    assert loads(unhex("5fff")) == b""
    assert loads(unhex("7f60ff")) == ""
    assert loads(unhex("bfff")) == {}
    assert loads(unhex("9f9f9fffffff")) == [[[]]]
    bad = {
        "5f5fffff": "not a definite-length byte string",  # nested indefinite chunk
        "5f6161ff": "not a definite-length byte string",  # text chunk in a byte string
        "7f4161ff": "not a definite-length text string",
        "5f00ff": "not a definite-length byte string",
        "ff": "unexpected break code at offset 0",
        "81ff": "unexpected break code at offset 1",
        "bf00ff": "unexpected break code at offset 2",  # key without value
        "9f01": "unterminated indefinite-length array from offset 0",
        "bf": "unterminated indefinite-length map from offset 0",
        "5f41": "declared length 1 exceeds remaining 0 bytes at offset 1",
        "1f": "indefinite length is not allowed for major type 0 at offset 0",
        "3f": "major type 1",
        "df00": "major type 6",
    }
    for h, msg in bad.items():
        e = raises(CBORDecodeError, loads, unhex(h))
        assert msg in str(e), (h, str(e))


def test_simple_values():
    assert loads(unhex("f4")) is False and loads(unhex("f5")) is True and loads(unhex("f6")) is None
    assert loads(unhex("f7")) == UNDEFINED and dumps(UNDEFINED) == unhex("f7")
    assert loads(unhex("e0")) == Simple(0) and dumps(Simple(19)) == unhex("f3")
    assert loads(unhex("f820")) == Simple(32) and dumps(Simple(32)) == unhex("f820")
    for bad in (20, 21, 22, 24, 31, 256, -1):
        raises(CBOREncodeError, Simple, bad)
    for v in range(32):
        e = raises(CBORDecodeError, loads, bytes([0xF8, v]))
        assert "two bytes" in str(e)
    assert repr(Simple(16)) == "Simple(16)" and Simple(16) != Simple(17)
    assert dumps(True) == b"\xf5" and dumps(False) == b"\xf4" and dumps(1) == b"\x01"


def test_tags_wrap_values_and_compare():
    t = Tag(1000, [1, "a"])
    assert dumps(t) == unhex("d903e8820161") + b"a"
    assert loads(dumps(t)) == t
    assert t == Tag(1000, [1, "a"]) and t != Tag(1001, [1, "a"]) and t != [1, "a"]
    assert repr(Tag(5, 1)) == "Tag(5, 1)"
    assert hash(Tag(5, 1)) == hash(Tag(5, 1))
    assert loads(unhex("dbffffffffffffffff00")) == Tag(2**64 - 1, 0)
    raises(CBOREncodeError, dumps, Tag(-1, 0))
    raises(CBOREncodeError, dumps, Tag(2**64, 0))
    raises(CBOREncodeError, dumps, Tag("x", 0))
    # COSE_Encrypt0 shape (RFC 9052): tag 16 around [protected, unprotected, ciphertext].
    cose = Tag(16, [b"\xa1\x01\x0a", {5: b"\x89\xf5"}, b"\x00" * 4])
    assert loads(dumps(cose)) == cose


def test_strings_bytes_and_containers():
    assert dumps(b"\x01\x02") == unhex("420102")
    assert dumps(bytearray(b"\x01\x02")) == unhex("420102")
    assert dumps(memoryview(b"\x01\x02")) == unhex("420102")
    assert dumps("") == unhex("60") and dumps("IETF") == unhex("6449455446")
    assert dumps((1, 2)) == dumps([1, 2]) == unhex("820102")
    long_bytes = bytes(range(256)) * 300
    assert loads(dumps(long_bytes)) == long_bytes
    assert dumps(long_bytes)[:5] == unhex("5a00012c00")
    assert loads(dumps(list(range(1000)))) == list(range(1000))


def test_unsupported_objects_raise_encode_error():
    for obj in (set([1]), object(), len):
        e = raises(CBOREncodeError, dumps, obj)
        assert "cannot encode" in str(e)
    raises(CBOREncodeError, dumps, {1: object()})


def test_loads_accepts_any_bytes_like_and_refuses_str():
    data = unhex("83010203")
    assert loads(bytearray(data)) == [1, 2, 3]
    assert loads(memoryview(data)) == [1, 2, 3]
    assert loads(memoryview(b"\x00" + data)[1:]) == [1, 2, 3]
    raises(TypeError, loads, "83010203")


def test_loads_prefix_walks_a_stream_of_items():
    stream = dumps([1, 2]) + dumps("x") + dumps({1: b"\x00"})
    items = []
    pos = 0
    while pos < len(stream):
        obj, pos = loads_prefix(stream, pos)
        items.append(obj)
    assert items == [[1, 2], "x", {1: b"\x00"}]
    assert pos == len(stream)
    obj, end = loads_prefix(unhex("0102"), 0)
    assert (obj, end) == (1, 1)
    e = raises(CBORDecodeError, loads_prefix, unhex("0102"), 2)
    assert "offset 2" in str(e)
    raises(CBORDecodeError, loads_prefix, unhex("01"), 5)


def test_typical_reading_is_22_bytes():
    body = dumps([2314, 7482, 16502, 1234567, 500, 95, 1, 0])
    assert len(body) == 22, len(body)
    assert tohex(body) == "8819090a191d3a1940761a0012d6871901f4185f0100"
    assert loads(body) == [2314, 7482, 16502, 1234567, 500, 95, 1, 0]


def test_output_is_identical_whatever_the_dict_insertion_order():
    keys = [5, -3, "z", "a", b"k", 1000, 24, 23]
    d1 = {}
    d2 = {}
    for k in keys:
        d1[k] = k
    for k in reversed(keys):
        d2[k] = k
    assert dumps(d1) == dumps(d2)
    assert tohex(dumps(d1)).startswith("a805051717181818181903e81903e82222")
