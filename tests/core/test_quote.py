"""phasecore.errors.quote: how every error message shows a value it was given, bounded and never raising."""

from phasecore import cbor, msg
from phasecore.errors import QUOTE_LIMIT, PhasecoreError, SchemaError, quote
from portable import raises


def _bounded(text, limit=QUOTE_LIMIT):
    assert type(text) is str
    assert len(text) <= limit + 3, (len(text), text[:100])


def test_small_values_are_their_repr():
    assert quote(12345) == "12345"
    assert quote(-7) == "-7"
    assert quote("ab") == repr("ab")
    assert quote(b"\x00") == repr(b"\x00")
    assert quote(None) == "None"
    assert quote(True) == "True"
    assert quote([1, 2]) == "[1, 2]"
    assert quote((1,)) == "(1,)"
    assert quote({1: 2}) == "{1: 2}"


def test_huge_integers_are_described_not_printed():
    # CPython refuses str() of an int above 4300 digits; 1 << 20000 has 6021.
    for n in (1 << 20000, -(1 << 20000), 1 << 201):
        text = quote(n)
        _bounded(text)
        assert "int of more than 200 bits" in text
    assert quote(1 << 199) == "%d" % (1 << 199)


def test_long_strings_and_bytes_are_cut():
    for v in ("x" * 100000, b"\xff" * 100000, bytearray(5000)):
        _bounded(quote(v))
        assert quote(v).endswith("...")
    _bounded(quote("y" * 1000, 10), 10)


def test_deep_and_long_structures_are_cut():
    deep = []
    for _ in range(5000):
        deep = [deep]
    _bounded(quote(deep))
    _bounded(quote(list(range(100000))))
    _bounded(quote({i: "v" * 100 for i in range(1000)}))
    _bounded(quote([1 << 30000, "x" * 10000, {b"k" * 999: deep}]))


class _Hostile:
    def __repr__(self):
        raise ValueError("no")


def test_an_object_whose_repr_raises_is_named_by_its_type():
    assert quote(_Hostile()) == "<_Hostile>"
    _bounded(quote([_Hostile()] * 3))


def test_tags_quote_their_content():
    _bounded(quote(cbor.Tag(99, [1 << 20000] * 100)))
    _bounded(repr(cbor.Tag(99, "z" * 10000)), 80)


def test_decoder_errors_quote_a_huge_integer_and_stay_short():
    # A bignum of 2500 bytes (about 6000 digits) where the schema wants a small int.
    body = cbor.dumps({0: 1, 1: 1 << 20000, 2: "fw"})
    e = raises(SchemaError, msg.decode, msg.HEARTBEAT, body)
    assert len(str(e)) < 300
    # ... and as a duplicate map key.
    big = cbor.dumps(1 << 20000)
    e = raises(PhasecoreError, cbor.loads, b"\xa2" + big + b"\x01" + big + b"\x02")
    assert len(str(e)) < 300
