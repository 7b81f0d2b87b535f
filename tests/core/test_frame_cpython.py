"""phasecore.frame under hypothesis: random chunkings, noise and hostile streams.

The streaming decoder is checked against a whole-stream reference decoder
written here from docs/protocol.md section 1, with the CRC computed by an
independent implementation (pymodbus's Modbus RTU CRC).
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from phasecore import frame
from phasecore.frame import Decoder, Frame

SETTINGS = settings(max_examples=150, deadline=None)

addresses = st.one_of(st.integers(0, 247), st.just(255))
payloads = st.binary(max_size=60)
frames_st = st.builds(Frame, addresses, addresses, payloads)
noise_without_sync = st.binary(max_size=40).map(lambda b: b.replace(b"\xa5", b""))
# Noise rich in false starts: SYNC bytes followed by plausible lengths.
noise = st.lists(st.one_of(st.just(frame.SYNC), st.integers(0, 12), st.integers(0, 255)), max_size=40).map(bytes)


def _chunk(data, cuts):
    """Split ``data`` at the (sorted, deduplicated) cut points."""
    points = sorted(set(c % (len(data) + 1) for c in cuts))
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def _reference_decode(stream, max_payload):
    """Whole-stream decoder: at each SYNC try a frame; on failure move one byte on."""
    out, i = [], 0
    while i < len(stream):
        if stream[i] != frame.SYNC or i + 1 >= len(stream):
            i += 1
            continue
        n = stream[i + 1]
        end = i + n + frame.OVERHEAD
        if n > max_payload or end > len(stream) or FramerRTU.compute_CRC(stream[i + 1 : end]) != 0:
            i += 1
            continue
        out.append(Frame(stream[i + 2], stream[i + 3], stream[i + 4 : i + 4 + n]))
        i = end
    return out


def _run(dec, chunks):
    out = []
    cap = dec.max_payload + frame.OVERHEAD
    for c in chunks:
        out.extend(dec.feed(c))
        assert dec.buffered <= cap
    return out


@SETTINGS
@given(
    st.lists(st.tuples(noise_without_sync, frames_st), max_size=8),
    noise_without_sync,
    st.lists(st.integers(0, 10000), max_size=30),
)
def test_random_chunking_with_sync_free_noise_returns_exactly_the_frames(items, tail, cuts):
    stream = b"".join(n + f.encode() for n, f in items) + tail
    expected = [f for _, f in items]
    dec = Decoder()
    assert _run(dec, _chunk(stream, cuts)) == expected
    # No false start was possible, so nothing is left for flush to find.
    assert dec.flush() == []
    assert dec.frames == len(expected)
    assert dec.crc_errors == dec.oversize == dec.truncated == 0
    assert dec.bytes_skipped == sum(len(n) for n, _ in items) + len(tail)


@SETTINGS
@given(
    st.lists(st.tuples(noise, frames_st), max_size=6),
    st.one_of(noise, st.binary(max_size=300)),
    st.lists(st.integers(0, 10000), max_size=30),
    st.sampled_from([0, 8, 60, 250, 255]),
)
def test_arbitrary_noise_matches_whole_stream_reference(items, tail, cuts, max_payload):
    stream = b"".join(n + f.encode(max_payload=255) for n, f in items) + tail
    dec = Decoder(max_payload)
    out = _run(dec, _chunk(stream, cuts)) + dec.flush()
    assert dec.buffered == 0
    assert out == _reference_decode(stream, max_payload)
    # Every byte is either in a delivered frame or counted as skipped.
    assert dec.bytes_skipped + sum(len(f.payload) + frame.OVERHEAD for f in out) == len(stream)
    assert dec.frames == len(out)
    # Unless noise happened to hold a CRC-valid frame, every real one was found.
    wanted = [f for _, f in items if len(f.payload) <= max_payload]
    if all(f in wanted for f in out):
        assert out == wanted


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=10))
def test_hostile_stream_never_raises_and_stays_bounded(chunks):
    dec = Decoder()
    total = 0
    for c in chunks:
        for f in dec.feed(c):
            assert len(f.payload) <= 250
            total += len(f.payload) + frame.OVERHEAD
        assert dec.buffered <= 256
    for f in dec.flush():
        total += len(f.payload) + frame.OVERHEAD
    assert total + dec.bytes_skipped == sum(len(c) for c in chunks)


@SETTINGS
@given(addresses, addresses, st.binary(max_size=250))
def test_encode_crc_agrees_with_pymodbus(dst, src, payload):
    wire = frame.encode(dst, src, payload)
    assert wire[-2:] == FramerRTU.compute_CRC(wire[1:-2]).to_bytes(2, "big")
    buf = bytearray(300)
    assert bytes(buf[: frame.encode_into(buf, dst, src, payload)]) == wire
