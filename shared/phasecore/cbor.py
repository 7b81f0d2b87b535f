"""CBOR (RFC 8949): a small deterministic encoder and a hardened decoder.

Every phasekit message, COSE structure and key-derivation label goes through
this module, on ESP32 nodes (MicroPython) and on Pis and servers (CPython),
byte-identical on both. The one thing to know: ``dumps`` always produces the
deterministic encoding of RFC 8949 section 4.2.1, and ``loads`` treats its
input as hostile.

Public names (cbor2-like):

- ``dumps(obj, max_depth=16) -> bytes``
- ``loads(data, max_depth=16) -> obj``: exactly one item; trailing bytes are an error.
- ``loads_prefix(data, offset=0, max_depth=16) -> (obj, end)``: one item starting
  at ``offset``; ``end`` is the offset just past it (for streams of items).
- ``Tag(tag, value)``: a tagged item other than a bignum.
- ``Simple(value)`` and ``UNDEFINED`` (``Simple(23)``): simple values other
  than false, true and null.
- ``CBORDecodeError``, ``CBOREncodeError`` (from ``phasecore.errors``, both
  ``ValueError`` subclasses).

Types, both ways:

| CBOR | Python |
|---|---|
| major 0/1 integers, full range -2**64 .. 2**64-1 | int |
| bignums, tag 2/3 (RFC 8949 3.4.3) | int (encoded only outside 64 bits, no leading zero bytes) |
| byte string | bytes (encodes bytes, bytearray, memoryview) |
| text string | str (strict UTF-8) |
| array | list (encodes list and tuple) |
| map | dict (array keys decode as tuples) |
| false, true, null | False, True, None |
| undefined, other simple values | ``Simple`` |
| float16/32/64 | float |
| other tags | ``Tag`` |

Deterministic encoding (RFC 8949 4.2.1): shortest heads, definite lengths
only, map keys sorted by the bytewise order of their own encodings (a map whose
keys encode alike, e.g. two NaN keys, is refused). That order is not the
length-first order of RFC 7049 "canonical" CBOR (cbor2's ``canonical=True``);
the two differ only for keys of different encoded lengths. Floats use the shortest of
half, single and double that gives back the same value exactly (preferred
serialization, 4.2.2 / 3.3); every NaN is sent as the canonical half
``f9 7e00`` (payloads are not kept), infinities as half.

Decoding accepts every well-formed item, including indefinite-length strings,
arrays and maps (RFC 8949 3.2), and refuses every item of Appendix F.1 with a
``CBORDecodeError`` that says what and at which byte offset. Limits against
hostile input: nesting (arrays, maps and tags) at most ``max_depth`` deep; a
declared length is checked against the bytes that remain before anything is
allocated (a string of n bytes needs n, an array of n items at least n, a map
at least 2n); so memory stays proportional to the input. It does not insist
that its input be deterministic: the seal authenticates bytes, not forms.
Duplicate map keys are refused (as are keys Python cannot tell apart, such
as 1 and 1.0), and so is lone-surrogate or overlong UTF-8 even where the
interpreter's own decoder is lenient (MicroPython's is). Tags other than 2
and 3 are returned as ``Tag`` without checking their content. Input that is
not bytes-like is a programming error: ``TypeError``.

On an ESP32 build floats are single precision: a double decodes to the
nearest single and encoding a float never needs more than 5 bytes there.
"""

import struct

from phasecore.errors import CBORDecodeError, CBOREncodeError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = [
    "dumps",
    "loads",
    "loads_prefix",
    "Tag",
    "Simple",
    "UNDEFINED",
    "CBORDecodeError",
    "CBOREncodeError",
    "MAX_DEPTH",
]

MAX_DEPTH = const(16)

_MT_BYTES = const(2)
_MT_TEXT = const(3)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_MT_TAG = const(6)
_BREAK = const(0xFF)
_TAG_POS_BIGNUM = const(2)
_TAG_NEG_BIGNUM = const(3)

_INF = float("inf")
_FLT_MAX = 3.4028234663852886e38
_U64 = 1 << 64


class Tag:
    """A tagged data item (RFC 8949 3.4): ``Tag(tag, value)``.

    ``tag`` is an int 0..2**64-1. Bignums (tags 2 and 3) never appear as a
    ``Tag``: they decode to int.
    """

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %s)" % (self.tag, quote(self.value))


class Simple:
    """A simple value (RFC 8949 3.3) other than false (20), true (21), null (22).

    Valid values are 0..19, 23 (undefined) and 32..255.
    """

    def __init__(self, value):
        if type(value) is not int or not (0 <= value <= 19 or value == 23 or 32 <= value <= 255):
            raise CBOREncodeError("simple value %s outside 0..19, 23, 32..255" % (quote(value),))
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(("simple", self.value))

    def __repr__(self):
        return "Simple(%d)" % self.value


UNDEFINED = Simple(23)


# ---------------------------------------------------------------- encoding


def dumps(obj, max_depth=MAX_DEPTH):
    """Encode ``obj`` deterministically (RFC 8949 4.2.1); raise CBOREncodeError if it cannot be."""
    out = bytearray()
    try:
        _encode(out, obj, max_depth)
    except RuntimeError:
        raise CBOREncodeError("nesting exceeds the interpreter's recursion limit (max_depth %d)" % max_depth)
    return bytes(out)


def _head(out, mt, n):
    # Shortest head (RFC 8949 4.2.1, first bullet): the argument in the
    # initial byte when < 24, else in 1, 2, 4 or 8 following bytes.
    mt <<= 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.append(n >> 8)
        out.append(n & 0xFF)
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    else:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))


def _encode(out, obj, depth):
    t = type(obj)
    if t is int:
        _encode_int(out, obj)
    elif t is str:
        _encode_text(out, obj)
    elif t is bytes or t is bytearray:
        _head(out, _MT_BYTES, len(obj))
        out.extend(obj)
    elif t is memoryview:
        _encode(out, bytes(obj), depth)  # len() of a memoryview counts items, not bytes
    elif t is list or t is tuple:
        if depth <= 0:
            raise CBOREncodeError("nesting deeper than the limit at an array")
        _head(out, _MT_ARRAY, len(obj))
        depth -= 1
        for item in obj:
            _encode(out, item, depth)
    elif t is dict:
        _encode_map(out, obj, depth)
    elif obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif t is float:
        _encode_float(out, obj)
    elif t is Tag:
        tag = obj.tag
        if type(tag) is not int or not 0 <= tag < _U64:
            raise CBOREncodeError("tag number %s outside 0..2**64-1" % (quote(tag),))
        if depth <= 0:
            raise CBOREncodeError("nesting deeper than the limit at tag %d" % tag)
        _head(out, _MT_TAG, tag)
        _encode(out, obj.value, depth - 1)
    elif t is Simple:
        v = obj.value
        if v < 24:
            out.append(0xE0 | v)
        else:
            out.append(0xF8)
            out.append(v)
    # Subclasses (IntEnum-like, OrderedDict, ...) after the exact types, which are the hot path.
    elif isinstance(obj, bool):
        out.append(0xF5 if obj else 0xF4)
    elif isinstance(obj, int):
        _encode_int(out, int(obj))
    elif isinstance(obj, str):
        _encode_text(out, str(obj))
    elif isinstance(obj, (bytes, bytearray)):
        _encode(out, bytes(obj), depth)
    elif isinstance(obj, (list, tuple)):
        _encode(out, list(obj), depth)
    elif isinstance(obj, dict):
        _encode_map(out, obj, depth)
    elif isinstance(obj, float):
        _encode_float(out, float(obj))
    else:
        raise CBOREncodeError("cannot encode an object of type %s" % t.__name__)


def _encode_int(out, n):
    if n >= 0:
        mt = 0
    else:
        mt = 1
        n = -1 - n  # RFC 8949 3.1: major type 1 carries -1 - value
    if n < _U64:
        _head(out, mt, n)
        return
    # Bignum (RFC 8949 3.4.3): only outside 64 bits (preferred serialization),
    # magnitude big-endian with no leading zero bytes.
    nbytes = (len("%x" % n) + 1) >> 1
    _head(out, _MT_TAG, _TAG_POS_BIGNUM + mt)
    _head(out, _MT_BYTES, nbytes)
    out.extend(n.to_bytes(nbytes, "big"))


def _encode_text(out, s):
    try:
        b = s.encode("utf-8")
    except UnicodeError:
        # CPython strings can hold lone surrogates, which UTF-8 cannot carry.
        raise CBOREncodeError("text string is not encodable as UTF-8 (lone surrogate?)")
    _head(out, _MT_TEXT, len(b))
    out.extend(b)


def _encode_map(out, d, depth):
    if depth <= 0:
        raise CBOREncodeError("nesting deeper than the limit at a map")
    depth -= 1
    pairs = []
    for k in d:
        kb = bytearray()
        _encode(kb, k, depth)
        pairs.append((bytes(kb), d[k]))
    # RFC 8949 4.2.1: keys sorted by the bytewise lexicographic order of
    # their deterministic encodings.
    pairs.sort(key=_first)
    _head(out, _MT_MAP, len(pairs))
    prev = None
    for kb, v in pairs:
        if kb == prev:
            raise CBOREncodeError("two map keys have the same encoding %s" % _hex(kb))
        prev = kb
        out.extend(kb)
        _encode(out, v, depth)


def _first(pair):
    return pair[0]


def _hex(b):
    return "".join("%02x" % x for x in b)


def _encode_float(out, x):
    if x != x:
        out.extend(b"\xf9\x7e\x00")  # RFC 8949 4.2.2: the canonical NaN
        return
    if x == _INF:
        out.extend(b"\xf9\x7c\x00")
        return
    if x == -_INF:
        out.extend(b"\xf9\xfc\x00")
        return
    # Preferred serialization (RFC 8949 3.3, 4.2.1): the shortest of half,
    # single and double that represents the value exactly.
    if -_FLT_MAX <= x <= _FLT_MAX:
        fb = struct.pack(">f", x)
        if struct.unpack(">f", fb)[0] == x:
            h = _half_from_single(int.from_bytes(fb, "big"))
            if h >= 0:
                out.append(0xF9)
                out.append(h >> 8)
                out.append(h & 0xFF)
            else:
                out.append(0xFA)
                out.extend(fb)
            return
    out.append(0xFB)
    out.extend(struct.pack(">d", x))


def _half_from_single(bits):
    """The IEEE 754 binary16 bits equal to the binary32 ``bits``, or -1 if none.

    Done by hand: struct's 'e' format is missing from some MicroPython builds.
    """
    sign = (bits >> 16) & 0x8000
    e = ((bits >> 23) & 0xFF) - 127
    m = bits & 0x7FFFFF
    if e == -127:
        # Zero, or a single subnormal (far below the half range).
        return sign if m == 0 else -1
    if -14 <= e <= 15:
        if m & 0x1FFF:
            return -1  # more than 10 significand bits
        return sign | ((e + 15) << 10) | (m >> 13)
    if -24 <= e < -14:
        # Half subnormal: value = h * 2**-24 with h = significand * 2**(e + 1).
        full = m | 0x800000
        shift = -1 - e
        if full & ((1 << shift) - 1):
            return -1
        return sign | (full >> shift)
    return -1


def _half_to_float(h):
    # IEEE 754 binary16 (RFC 8949 Appendix D shows the same computation).
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = _ldexp(m, -24)
    elif e == 31:
        v = _INF if m == 0 else _NAN
    else:
        v = _ldexp(m | 0x400, e - 25)
    return -v if h & 0x8000 else v


try:
    from math import ldexp as _ldexp
except ImportError:  # pragma: no cover - every supported build has math.ldexp

    def _ldexp(m, e):
        return m * 2.0**e


_NAN = float("nan")


# ---------------------------------------------------------------- decoding


def loads(data, max_depth=MAX_DEPTH):
    """Decode exactly one CBOR item from ``data`` (bytes-like); raise CBORDecodeError otherwise."""
    obj, end = loads_prefix(data, 0, max_depth)
    if end != len(data):
        raise CBORDecodeError("%d trailing bytes after the item at offset %d" % (len(data) - end, end))
    return obj


def loads_prefix(data, offset=0, max_depth=MAX_DEPTH):
    """Decode the one item that starts at ``offset``; return ``(obj, end)``.

    ``end`` is the offset just past the item, where the next item of a stream
    would start. Bytes after ``end`` are not looked at.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("CBOR input must be bytes-like, not %s" % type(data).__name__)
        data = bytes(data)
    if not 0 <= offset <= len(data):
        raise CBORDecodeError("offset %d outside the %d-byte input" % (offset, len(data)))
    dec = _Decoder(data, offset)
    try:
        obj = dec.item(max_depth)
    except RuntimeError:
        # RecursionError (CPython) / RuntimeError (MicroPython): max_depth was
        # set beyond what this interpreter's stack holds.
        raise CBORDecodeError("nesting exceeds the interpreter's recursion limit (max_depth %d)" % max_depth)
    return obj, dec.pos


class _Decoder:
    """Recursive-descent decoder over one bytes object; ``pos`` is the cursor."""

    def __init__(self, data, pos):
        self.data = data
        self.pos = pos
        self.end = len(data)

    def _head(self):
        # Returns (major type, additional info, argument, offset of the head);
        # argument is None for indefinite length (ai 31).
        data = self.data
        start = pos = self.pos
        if pos >= self.end:
            raise CBORDecodeError("unexpected end of input at offset %d" % pos)
        ib = data[pos]
        pos += 1
        ai = ib & 0x1F
        if ai < 24:
            arg = ai
        elif ai <= 27:
            n = 1 << (ai - 24)
            if pos + n > self.end:
                raise CBORDecodeError("end of input inside the head at offset %d" % start)
            if n == 1:
                arg = data[pos]
            elif n == 2:
                arg = (data[pos] << 8) | data[pos + 1]
            else:
                arg = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        elif ai == 31:
            arg = None
        else:
            raise CBORDecodeError("reserved additional information %d at offset %d" % (ai, start))
        self.pos = pos
        return ib >> 5, ai, arg, start

    def item(self, depth):
        # The head is parsed inline (not with _head) so that decoding an
        # integer allocates nothing on MicroPython: no tuple per item.
        data = self.data
        start = pos = self.pos
        if pos >= self.end:
            raise CBORDecodeError("unexpected end of input at offset %d" % pos)
        ib = data[pos]
        pos += 1
        mt = ib >> 5
        ai = ib & 0x1F
        if ai < 24:
            arg = ai
        elif ai == 24:
            if pos >= self.end:
                raise CBORDecodeError("end of input inside the head at offset %d" % start)
            arg = data[pos]
            pos += 1
        elif ai == 25:
            if pos + 2 > self.end:
                raise CBORDecodeError("end of input inside the head at offset %d" % start)
            arg = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif ai < 28:
            n = 4 if ai == 26 else 8
            if pos + n > self.end:
                raise CBORDecodeError("end of input inside the head at offset %d" % start)
            arg = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        elif ai == 31:
            arg = None
        else:
            raise CBORDecodeError("reserved additional information %d at offset %d" % (ai, start))
        self.pos = pos
        if mt == 0:
            return arg if arg is not None else self._bad_indef(mt, start)
        if mt == 1:
            return -1 - arg if arg is not None else self._bad_indef(mt, start)
        if mt == _MT_BYTES or mt == _MT_TEXT:
            if arg is None:
                return self._indef_string(mt, start)
            return self._string(mt, arg, start)
        if mt == _MT_ARRAY:
            if depth <= 0:
                raise CBORDecodeError("nesting deeper than the limit at offset %d" % start)
            depth -= 1
            if arg is None:
                return self._indef_array(depth)
            if arg > self.end - self.pos:
                # Every item takes at least one byte.
                raise CBORDecodeError(
                    "array of %d items exceeds remaining %d bytes at offset %d" % (arg, self.end - self.pos, start)
                )
            # A loop, not a comprehension: one Python frame per level, not two
            # (the ESP32's C stack is small).
            out = [None] * arg
            item = self.item
            for i in range(arg):
                out[i] = item(depth)
            return out
        if mt == _MT_MAP:
            if depth <= 0:
                raise CBORDecodeError("nesting deeper than the limit at offset %d" % start)
            depth -= 1
            if arg is None:
                return self._indef_map(depth)
            if 2 * arg > self.end - self.pos:
                raise CBORDecodeError(
                    "map of %d pairs exceeds remaining %d bytes at offset %d" % (arg, self.end - self.pos, start)
                )
            d = {}
            for _ in range(arg):
                self._pair(d, depth)
            return d
        if mt == _MT_TAG:
            if arg is None:
                return self._bad_indef(mt, start)
            if depth <= 0:
                raise CBORDecodeError("nesting deeper than the limit at offset %d" % start)
            value = self.item(depth - 1)
            if arg == _TAG_POS_BIGNUM or arg == _TAG_NEG_BIGNUM:
                if type(value) is not bytes:
                    raise CBORDecodeError("bignum tag %d at offset %d must enclose a byte string" % (arg, start))
                n = int.from_bytes(value, "big")
                return n if arg == _TAG_POS_BIGNUM else -1 - n
            return Tag(arg, value)
        return self._simple(ai, arg, start)

    def _bad_indef(self, mt, start):
        raise CBORDecodeError("indefinite length is not allowed for major type %d at offset %d" % (mt, start))

    def _string(self, mt, n, start):
        pos = self.pos
        if n > self.end - pos:
            raise CBORDecodeError(
                "declared length %d exceeds remaining %d bytes at offset %d" % (n, self.end - pos, start)
            )
        self.pos = pos + n
        b = self.data[pos : pos + n]
        if mt == _MT_BYTES:
            return b
        return _utf8(b, pos)

    def _indef_string(self, mt, start):
        # RFC 8949 3.2.3: a sequence of definite-length chunks of the same
        # major type, then a break. Each text chunk is valid UTF-8 on its own.
        data = self.data
        chunks = []
        while True:
            if self.pos >= self.end:
                raise CBORDecodeError("unterminated indefinite-length string from offset %d" % start)
            if data[self.pos] == _BREAK:
                self.pos += 1
                break
            cmt, _, n, cstart = self._head()
            if cmt != mt or n is None:
                raise CBORDecodeError(
                    "chunk at offset %d of the indefinite-length string at offset %d "
                    "is not a definite-length %s string" % (cstart, start, "byte" if mt == _MT_BYTES else "text")
                )
            chunks.append(self._string(mt, n, cstart))
        return (b"" if mt == _MT_BYTES else "").join(chunks)

    def _indef_array(self, depth):
        data = self.data
        start = self.pos - 1
        out = []
        while True:
            if self.pos >= self.end:
                raise CBORDecodeError("unterminated indefinite-length array from offset %d" % start)
            if data[self.pos] == _BREAK:
                self.pos += 1
                return out
            out.append(self.item(depth))

    def _indef_map(self, depth):
        data = self.data
        start = self.pos - 1
        d = {}
        while True:
            if self.pos >= self.end:
                raise CBORDecodeError("unterminated indefinite-length map from offset %d" % start)
            if data[self.pos] == _BREAK:
                self.pos += 1
                return d
            self._pair(d, depth)

    def _pair(self, d, depth):
        kstart = self.pos
        k = self.item(depth)
        if type(k) is list:
            k = _freeze(k)
        # A break where the value should be is caught by item() as a stray break.
        v = self.item(depth)
        try:
            if k in d:
                raise CBORDecodeError("duplicate map key %s at offset %d" % (quote(k), kstart))
            d[k] = v
        except TypeError:
            raise CBORDecodeError("map key of type %s at offset %d cannot be a dict key" % (type(k).__name__, kstart))

    def _simple(self, ai, arg, start):
        # Major type 7 (RFC 8949 3.3).
        if ai < 20:
            return Simple(ai)
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return UNDEFINED
        if ai == 24:
            if arg < 32:
                raise CBORDecodeError("simple value %d in two bytes is not well-formed at offset %d" % (arg, start))
            return Simple(arg)
        if ai == 25:
            return _half_to_float(arg)
        data = self.data
        if ai == 26:
            return struct.unpack(">f", data[start + 1 : start + 5])[0]
        if ai == 27:
            return struct.unpack(">d", data[start + 1 : start + 9])[0]
        raise CBORDecodeError("unexpected break code at offset %d" % start)


def _freeze(v):
    # Array map keys become tuples (hashable), recursively.
    if type(v) is list:
        return tuple(_freeze(x) for x in v)
    return v


def _utf8(b, pos):
    try:
        s = str(b, "utf-8")
    except UnicodeError:
        _check_utf8(b, pos)
        raise CBORDecodeError("invalid UTF-8 in text string at offset %d" % pos)
    if len(s) != len(b):
        # Non-ASCII: check strictly. MicroPython accepts overlong forms,
        # surrogates and code points above U+10FFFF (RFC 3629 section 3 forbids them).
        _check_utf8(b, pos)
    return s


def _check_utf8(b, base):
    # RFC 3629 section 4 (the table of well-formed byte sequences).
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            k, lo, hi = 2, 0xA0, 0xBF
        elif c == 0xED:
            k, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= c <= 0xEF:
            k, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            k, lo, hi = 3, 0x90, 0xBF
        elif c == 0xF4:
            k, lo, hi = 3, 0x80, 0x8F
        elif 0xF1 <= c <= 0xF3:
            k, lo, hi = 3, 0x80, 0xBF
        else:
            raise CBORDecodeError("invalid UTF-8 byte 0x%02x at offset %d" % (c, base + i))
        if i + k >= n:
            raise CBORDecodeError("truncated UTF-8 sequence at offset %d" % (base + i))
        if not lo <= b[i + 1] <= hi:
            raise CBORDecodeError("invalid UTF-8 sequence at offset %d" % (base + i))
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= b[j] <= 0xBF:
                raise CBORDecodeError("invalid UTF-8 sequence at offset %d" % (base + i))
        i += k + 1
