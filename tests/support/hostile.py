"""Hostile values for property tests of every decoder at a trust boundary (CPython only: hypothesis).

What an attacker can put in a CBOR item, a TOML file or a JSON state file,
in every position a decoder looks at: integers far beyond any range (up to
2**20000, whose decimal form CPython refuses to print), long strings and byte
strings, structures nested to the decoder's limit and beyond, every CBOR
type (floats with NaN and infinities, tags, simple values, undefined), and
maps with hostile keys. ``assert_typed(fn, base)`` runs one call and checks
the one thing a trust boundary promises: it returns, or raises ``base`` (the
package's base error) with a message of bounded length.
"""

import time

from hypothesis import strategies as st

from phasecore import cbor

# An error message at a trust boundary stays under this many characters whatever the input.
MAX_MESSAGE = 1000
# ... and one call takes at most this long (seconds): work bounded by the input's size.
MAX_SECONDS = 2.0

# Built from their exponents: hypothesis prints its strategies, and it cannot print such an int either.
HUGE_INTS = st.one_of(
    st.sampled_from([64, 65, 4000, 20000]).map(lambda k: 1 << k),
    st.sampled_from([64, 20000]).map(lambda k: -(1 << k) - 1),
    st.just(5000).map(lambda k: 10**k),
)
INTS = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 1, -1, 23, 24, 255, 256, 65535, 65536, 2**31, 2**32, 2**32 - 1, 2**40, 2**63, -(2**63)]),
    HUGE_INTS,
)
LONG_TEXT = st.sampled_from(["x" * 65, "\u20ac" * 1000, "a" * 100000, "\x00\x7f", "\ud7ff" * 10])
LONG_BYTES = st.sampled_from([b"\xff" * 70, b"\x00" * 100000, bytes(range(256))])
SCALARS = st.one_of(
    INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    LONG_TEXT,
    st.binary(max_size=40),
    LONG_BYTES,
    st.none(),
    st.booleans(),
    st.sampled_from([cbor.UNDEFINED, cbor.Simple(0), cbor.Simple(255)]),
    st.builds(cbor.Tag, st.sampled_from([0, 1, 16, 24, 55799, (1 << 64) - 1]), st.integers(0, 10)),
)


def _deep(depth, leaf=0):
    v = leaf
    for _ in range(depth):
        v = [v]
    return v


DEEP = st.sampled_from([_deep(3), _deep(15), _deep(16), _deep(40), {1: _deep(15)}, [{}] * 3])
KEYS = st.one_of(INTS, st.text(max_size=10), LONG_TEXT, st.binary(max_size=10), st.booleans(), st.none(), st.floats())

VALUES = st.recursive(
    st.one_of(SCALARS, DEEP),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(KEYS, children, max_size=5),
        st.builds(cbor.Tag, st.integers(0, 100), children),
    ),
    max_leaves=12,
)


def dumps(value):
    """CBOR bytes of a hostile value: ``phasecore.cbor`` can encode each one (bignums, tags, NaN...)."""
    return cbor.dumps(value, max_depth=64)


def assert_typed(fn, base, *args, **kwargs):
    """Call ``fn``; it must return or raise ``base`` with a short message, within MAX_SECONDS."""
    t0 = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except base as e:
        text = str(e)
        assert len(text) <= MAX_MESSAGE, "message of %d characters: %s..." % (len(text), text[:200])
        result = e
    elapsed = time.perf_counter() - t0
    assert elapsed < MAX_SECONDS, "%.2f s for one call" % elapsed
    return result


def variants(template, values):
    """Each way of putting one of ``values`` in one position of ``template`` (a list or a dict), one at a time."""
    out = []
    if isinstance(template, list):
        for i in range(len(template)):
            for v in values:
                t = list(template)
                t[i] = v
                out.append(t)
    elif isinstance(template, dict):
        for k in list(template):
            for v in values:
                t = dict(template)
                t[k] = v
                out.append(t)
    return out
