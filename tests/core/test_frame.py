"""phasecore.frame: the link frame of docs/protocol.md section 1, on both interpreters."""

from phasecore import frame
from phasecore.crc import crc16
from phasecore.errors import FrameError, PhasecoreError
from phasecore.frame import Decoder, Frame
from portable import raises, unhex


def _feed_bytewise(dec, data):
    out = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i : i + 1]))
    return out


def test_layout_matches_protocol_doc():
    # SYNC LEN DST SRC PAYLOAD CRClo CRChi, CRC-16/MODBUS over LEN..PAYLOAD.
    wire = frame.encode(0, 7, b"\x01\x02\x03")
    assert wire[:4] == b"\xa5\x03\x00\x07"
    assert wire[4:7] == b"\x01\x02\x03"
    crc = crc16(wire[1:7])
    assert wire[7] == crc & 0xFF and wire[8] == crc >> 8
    assert len(wire) == 3 + frame.OVERHEAD


def test_known_answer_frames():
    # CRC bytes computed independently with pymodbus (FramerRTU.compute_CRC,
    # packed big-endian as it puts them on the wire).
    assert frame.encode(1, 0, b"") == unhex("a5 00 01 00 70 50")  # a poll of node 1
    assert frame.encode(0, 7, b"\x01\x02\x03") == unhex("a5 03 00 07 01 02 03 11 fd")


def test_encode_into_matches_encode_and_allocates_into_caller_buffer():
    buf = bytearray(64)
    n = frame.encode_into(buf, 0, 12, b"sealed")
    assert n == 12
    assert bytes(buf[:n]) == frame.encode(0, 12, b"sealed")
    mv = memoryview(bytearray(20))
    assert frame.encode_into(mv, 255, 0, b"") == 6


def test_encode_refuses_misuse_with_frame_error():
    raises(FrameError, frame.encode, 248, 0, b"")
    raises(FrameError, frame.encode, 0, 254, b"")
    raises(FrameError, frame.encode, -1, 0, b"")
    raises(FrameError, frame.encode, 0, 256, b"")
    raises(FrameError, frame.encode, 0, 1, bytes(251))
    raises(FrameError, frame.encode, 0, 1, bytes(250), 249)
    raises(FrameError, frame.encode_into, bytearray(10), 0, 1, b"12345")
    e = raises(FrameError, frame.encode, 0, 1, bytes(300))
    assert "300" in str(e)
    assert issubclass(FrameError, PhasecoreError)
    assert len(frame.encode(0, 1, bytes(250))) == 256
    raises(FrameError, Decoder, 256)


def test_decoder_returns_frames_fed_whole_and_bytewise():
    frames = [Frame(0, 1, b"a"), Frame(1, 0, b""), Frame(255, 0, bytes(range(250)))]
    wire = b"".join(f.encode() for f in frames)
    dec = Decoder()
    assert dec.feed(wire) == frames
    assert dec.frames == 3 and dec.bytes_skipped == 0 and dec.buffered == 0
    dec = Decoder()
    assert _feed_bytewise(dec, wire) == frames
    assert dec.stats() == {"frames": 3, "crc_errors": 0, "oversize": 0, "truncated": 0, "bytes_skipped": 0}


def test_decoder_accepts_bytearray_and_memoryview_chunks():
    wire = frame.encode(0, 3, b"xyz")
    dec = Decoder()
    assert dec.feed(bytearray(wire[:4])) == []
    assert dec.feed(memoryview(wire)[4:]) == [Frame(0, 3, b"xyz")]


def test_decoder_skips_noise_before_between_and_after():
    a = frame.encode(0, 1, b"first")
    b = frame.encode(0, 2, b"second")
    noise = b"\x00\xff\x13\x37"
    dec = Decoder()
    out = dec.feed(noise + a + noise + noise + b + noise)
    assert out == [Frame(0, 1, b"first"), Frame(0, 2, b"second")]
    assert dec.bytes_skipped == 16
    assert dec.crc_errors == 0


def test_bad_crc_is_counted_and_next_frame_is_found():
    good = frame.encode(0, 1, b"payload")
    bad = bytearray(good)
    bad[6] ^= 0x01
    dec = Decoder()
    assert dec.feed(bytes(bad) + good) == [Frame(0, 1, b"payload")]
    assert dec.crc_errors == 1
    assert dec.bytes_skipped == len(bad)


def test_frame_hidden_after_false_sync_with_long_length_is_found():
    # A noise byte 0xA5 followed by LEN 200 makes a false candidate that
    # swallows the real frame; after its CRC fails the decoder must go back to
    # the byte after the false SYNC and find the real frame inside.
    good = frame.encode(0, 9, b"hidden")
    tail = bytes(250)
    dec = Decoder()
    out = dec.feed(b"\xa5\xc8\x01" + good + tail)
    assert out == [Frame(0, 9, b"hidden")]
    assert dec.crc_errors == 1
    assert dec.buffered <= 256


def test_frame_hidden_inside_false_candidate_is_found_bytewise():
    good = frame.encode(0, 9, b"hidden")
    dec = Decoder()
    out = _feed_bytewise(dec, b"\x11\xa5\x30" + good + bytes(60))
    assert out == [Frame(0, 9, b"hidden")]


def test_flush_releases_frame_held_behind_false_start():
    good = frame.encode(0, 4, b"reading")
    dec = Decoder()
    # The false candidate wants 200 bytes: nothing can be delivered yet.
    assert dec.feed(b"\xa5\xc8" + good) == []
    assert dec.buffered == 2 + len(good)
    assert dec.flush() == [Frame(0, 4, b"reading")]
    assert dec.buffered == 0
    assert dec.truncated == 1


def test_truncated_frame_then_good_frame():
    good = frame.encode(0, 5, b"abcdef")
    dec = Decoder()
    # Cut short: its LEN claims 5 bytes of the good frame, its CRC then fails.
    assert dec.feed(good[:7] + good) == [Frame(0, 5, b"abcdef")]
    assert dec.crc_errors == 1
    assert dec.bytes_skipped == 7
    # A longer cut frame claims more than follows: the good frame is held
    # until enough bytes arrive to refute the cut one.
    long_frame = frame.encode(0, 5, bytes(40))
    assert dec.feed(long_frame[:10] + good) == []
    assert dec.feed(bytes(30)) == [Frame(0, 5, b"abcdef")]
    assert dec.crc_errors == 2


def test_oversize_length_is_refused_and_hunting_resumes():
    dec = Decoder(max_payload=10)
    small = frame.encode(0, 1, b"0123456789")
    assert dec.feed(b"\xa5\xfa" + small) == [Frame(0, 1, b"0123456789")]
    assert dec.oversize == 1
    raises(FrameError, frame.encode, 0, 1, b"01234567890", 10)


def test_buffer_never_exceeds_one_maximum_frame():
    dec = Decoder(max_payload=20)
    # A long stream of false SYNCs with a valid length and junk after them.
    junk = b"\xa5\x14" * 300
    out = dec.feed(junk)
    assert out == []
    assert dec.buffered <= 26
    assert len(dec._buf) == 26
    for i in range(0, len(junk), 7):
        dec.feed(junk[i : i + 7])
        assert dec.buffered <= 26
    dec.feed(frame.encode(0, 1, b"ok"))
    assert dec.flush() == [Frame(0, 1, b"ok")]


def test_large_chunk_of_many_frames_is_processed_within_bound():
    frames = [Frame(0, i % 247 + 1, bytes([i % 256]) * (i % 40)) for i in range(100)]
    wire = b"".join(f.encode() for f in frames)
    dec = Decoder(max_payload=40)
    assert dec.feed(wire) == frames
    assert dec.buffered == 0


def test_reset_drops_partial_frame():
    good = frame.encode(0, 1, b"zz")
    dec = Decoder()
    dec.feed(good[:5])
    dec.reset()
    assert dec.bytes_skipped == 5 and dec.buffered == 0
    assert dec.feed(good) == [Frame(0, 1, b"zz")]


def test_decoder_delivers_poll_with_empty_payload():
    dec = Decoder()
    out = dec.feed(unhex("a5 00 07 00") + crc16_le_bytes(unhex("00 07 00")))
    assert out == [Frame(7, 0, b"")]


def test_frame_equality_and_repr():
    assert Frame(0, 1, b"x") == Frame(0, 1, b"x")
    assert Frame(0, 1, b"x") != Frame(0, 2, b"x")
    assert Frame(0, 1, b"x") != (0, 1, b"x")
    assert "src=1" in repr(Frame(0, 1, b"x"))


def crc16_le_bytes(data):
    c = crc16(data)
    return bytes((c & 0xFF, c >> 8))
