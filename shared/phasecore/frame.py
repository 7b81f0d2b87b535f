"""The phasekit link frame (docs/protocol.md section 1), sans-IO.

    SYNC 0xA5 | LEN | DST | SRC | PAYLOAD (LEN bytes) | CRC lo | CRC hi

The same frame runs on RS-485 and inside a LoRa packet. The CRC is
CRC-16/MODBUS over ``LEN DST SRC PAYLOAD`` (not SYNC), low byte first, so the
CRC run over everything after SYNC, CRC included, gives 0 (the residue).

Public names:

- ``encode(dst, src, payload) -> bytes`` and ``encode_into(buf, dst, src,
  payload) -> n`` (no allocation: the node keeps one transmit buffer);
- ``Frame``: a decoded frame (``dst``, ``src``, ``payload``);
- ``Decoder(max_payload=250)``: streaming decoder. ``feed(chunk)`` takes bytes
  as they come off a UART or radio, in chunks of any size, and returns the
  whole, CRC-valid frames completed by them. ``flush()`` says the line went
  idle (a LoRa packet ended, an RS-485 reply timed out): no more bytes will
  come for what is buffered, so the frames hidden behind a false start are
  returned and the rest is dropped.

The one thing to know: the decoder never raises on line noise, it counts it
(``frames``, ``crc_errors``, ``oversize``, ``truncated``, ``bytes_skipped``).
After a bad CRC or an oversize LEN it resumes hunting at the byte after the
false SYNC, so a real frame hidden in garbage is still found, and it never
buffers more than one maximum frame (``max_payload + 6`` bytes, allocated
once). ``FrameError`` is only for misuse on the encode side.
"""

from phasecore.crc import crc16
from phasecore.errors import FrameError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = (
    "SYNC",
    "OVERHEAD",
    "MAX_PAYLOAD",
    "LORA_MAX_PAYLOAD",
    "MASTER",
    "BROADCAST",
    "Frame",
    "Decoder",
    "encode",
    "encode_into",
)

SYNC = const(0xA5)
_SYNC_BYTES = b"\xa5"
# SYNC, LEN, DST, SRC before the payload; CRC (2 bytes) after it.
_HEADER = const(4)
OVERHEAD = const(6)
# 250 + 6 = 256 bytes, the size of the largest Modbus RTU ADU, so one RS-485
# receive buffer fits any frame.
MAX_PAYLOAD = const(250)
# A LoRa packet carries at most 255 bytes (SX127x RegPayloadLength is 8 bits),
# so a frame on LoRa has at most 249 payload bytes.
LORA_MAX_PAYLOAD = const(249)
# Link addresses: 0 the transformer Pi (bus master), 1..247 nodes, 255 broadcast.
MASTER = const(0)
BROADCAST = const(255)
_FIRST_RESERVED = const(248)


def _check_address(name, addr):
    if not isinstance(addr, int) or not (0 <= addr < _FIRST_RESERVED or addr == BROADCAST):
        raise FrameError("%s address %s is not 0..247 or 255 (248..254 are reserved)" % (name, quote(addr)))


def encode_into(buf, dst, src, payload, max_payload=MAX_PAYLOAD):
    """Write the frame for ``payload`` into ``buf`` (bytearray or memoryview) at 0.

    Returns the frame length (``len(payload) + 6``). Allocates nothing, so the
    node can frame every reading into one transmit buffer.
    """
    n = len(payload)
    if n > max_payload or n > 255:
        raise FrameError("payload of %d bytes exceeds max_payload %d" % (n, max_payload))
    _check_address("destination", dst)
    _check_address("source", src)
    end = n + OVERHEAD
    if len(buf) < end:
        raise FrameError("buffer of %d bytes cannot hold a %d-byte frame" % (len(buf), end))
    buf[0] = SYNC
    buf[1] = n
    buf[2] = dst
    buf[3] = src
    buf[_HEADER : _HEADER + n] = payload
    crc = crc16(memoryview(buf)[1 : _HEADER + n])
    buf[end - 2] = crc & 0xFF
    buf[end - 1] = crc >> 8
    return end


def encode(dst, src, payload, max_payload=MAX_PAYLOAD):
    """The frame carrying ``payload`` from link address ``src`` to ``dst``, as bytes."""
    buf = bytearray(len(payload) + OVERHEAD)
    encode_into(buf, dst, src, payload, max_payload)
    return bytes(buf)


class Frame:
    """One decoded frame: link addresses ``dst``, ``src`` and the ``payload`` bytes.

    An empty payload from the master is a poll (docs/protocol.md section 1).
    """

    __slots__ = ("dst", "src", "payload")

    def __init__(self, dst, src, payload):
        self.dst = dst
        self.src = src
        self.payload = payload

    def encode(self, max_payload=MAX_PAYLOAD):
        return encode(self.dst, self.src, self.payload, max_payload)

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.dst == other.dst
            and self.src == other.src
            and self.payload == other.payload
        )

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Frame(dst=%d, src=%d, payload=%r)" % (self.dst, self.src, self.payload)


class Decoder:
    """Streaming frame decoder: ``feed(chunk) -> [Frame, ...]``.

    Statistics (ints, for a bus master's per-node counters): ``frames``
    delivered, ``crc_errors`` (a SYNC whose candidate frame failed its CRC),
    ``oversize`` (a SYNC followed by LEN > max_payload), ``truncated`` (a
    candidate cut off by ``flush``), ``bytes_skipped`` (bytes not delivered in
    any frame). ``stats()`` returns them as a dict. Noise carries no trusted
    address, so the counters are per link; a bus master that polls one node
    at a time charges a poll's increase to the node it polled.
    """

    def __init__(self, max_payload=MAX_PAYLOAD):
        if not isinstance(max_payload, int) or not 0 <= max_payload <= 255:
            raise FrameError("max_payload %s outside 0..255 (LEN is one byte)" % (quote(max_payload),))
        self.max_payload = max_payload
        self._buf = bytearray(max_payload + OVERHEAD)
        self._mv = memoryview(self._buf)
        # Buffered bytes are _buf[_start:_end]; _buf[_start] is SYNC unless empty.
        self._start = 0
        self._end = 0
        self.frames = 0
        self.crc_errors = 0
        self.oversize = 0
        self.truncated = 0
        self.bytes_skipped = 0

    @property
    def buffered(self):
        """Bytes held waiting for the rest of a candidate frame (at most one maximum frame)."""
        return self._end - self._start

    def stats(self):
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "oversize": self.oversize,
            "truncated": self.truncated,
            "bytes_skipped": self.bytes_skipped,
        }

    def feed(self, chunk):
        """Take the next bytes off the line; return the frames they complete, in order."""
        out = []
        src = memoryview(chunk)
        n = len(src)
        pos = 0
        buf = self._buf
        cap = len(buf)
        while pos < n:
            if self._start == self._end:
                self._start = self._end = 0
            elif self._end == cap:
                # Move the pending candidate to the front to make room. _scan
                # leaves less than one whole frame buffered, so there is room.
                k = self._end - self._start
                buf[0:k] = buf[self._start : self._end]
                self._start = 0
                self._end = k
            take = cap - self._end
            if take > n - pos:
                take = n - pos
            buf[self._end : self._end + take] = src[pos : pos + take]
            self._end += take
            pos += take
            self._scan(out, False)
        return out

    def flush(self):
        """The line went idle: return the frames still complete in the buffer and empty it.

        Call it when a LoRa packet has been fed whole, or when an RS-485 reply
        has timed out: a false SYNC with a large LEN would otherwise hold a
        real frame behind it until more bytes arrive.
        """
        out = []
        self._scan(out, True)
        self._start = self._end = 0
        return out

    def reset(self):
        """Drop whatever is buffered (counted as skipped); keep the statistics."""
        self.bytes_skipped += self._end - self._start
        self._start = self._end = 0

    def _scan(self, out, final):
        buf = self._buf
        mv = self._mv
        s = self._start
        e = self._end
        maxp = self.max_payload
        while s < e:
            if buf[s] != SYNC:
                i = buf.find(_SYNC_BYTES, s, e)
                if i < 0:
                    self.bytes_skipped += e - s
                    s = e
                    break
                self.bytes_skipped += i - s
                s = i
            if e - s < 2:
                if final:
                    self.truncated += 1
                    self.bytes_skipped += 1
                    s += 1
                    continue
                break
            length = buf[s + 1]
            if length > maxp:
                # Not a frame start after all: resume at the next byte.
                self.oversize += 1
                self.bytes_skipped += 1
                s += 1
                continue
            end = s + length + OVERHEAD
            if end > e:
                if final:
                    self.truncated += 1
                    self.bytes_skipped += 1
                    s += 1
                    continue
                break
            if crc16(mv[s + 1 : end]) == 0:
                p = s + _HEADER
                out.append(Frame(buf[s + 2], buf[s + 3], bytes(mv[p : p + length])))
                self.frames += 1
                s = end
            else:
                # A false SYNC (or a corrupted frame): the real frame may start
                # at any later byte, including inside this candidate.
                self.crc_errors += 1
                self.bytes_skipped += 1
                s += 1
        self._start = s
        self._end = e
