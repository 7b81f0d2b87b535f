"""Modbus RTU client codec, sans-IO: build requests, parse one reply incrementally.

The node is the Modbus client (master) of its PZEM-004T meter. This module
knows bytes only: it never touches a UART or a clock. The driver
(``phasenode.drivers.pzem``) writes the request, feeds received bytes to a
``ResponseParser`` and owns the timeout.

The one thing to know: an RTU frame has no length field and no delimiter other
than line silence, so a reply is delimited by what the request implies
(Modbus over Serial Line V1.02, 2.5.1.1). ``ResponseParser.start(request)``
derives the expected length from the request; the parser checks slave,
function and byte count as soon as those bytes arrive, the CRC when the frame
is complete, and refuses trailing bytes: CRC-16/MODBUS has residue 0, so
zero bytes appended to a valid frame still pass a CRC-over-everything check.

Errors (all ``ModbusError``, hence ``phasenode.errors.NodeError``, ``PhasecoreError`` and
``ValueError``; one ``except ModbusError`` catches every way a poll can fail):

- ``ModbusCRCError``            CRC of a complete frame does not check
- ``ModbusExceptionResponse``   the slave answered with an exception (.code, .name)
- ``ModbusFrameError``          malformed or unexpected reply, subclasses:
  ``ModbusUnexpectedSlave``, ``ModbusUnexpectedFunction``, ``ModbusLengthError``
  (byte count), ``ModbusTrailingBytes``, ``ModbusTruncated`` (part of a frame then
  silence), ``ModbusEchoError`` (own request heard back: RS-485 receiver left on)
- ``ModbusTimeout``             nothing at all before the timeout

The errors live here rather than in ``phasecore.errors``: only this client uses
them (the Pi reads its meters with pymodbus, which has its own exceptions), and
``phasecore`` stays free of Modbus. ``ModbusTimeout`` is a ``ModbusError``
(a ``ValueError``), not an ``OSError``: for the node a silent meter is one more
way of "no valid reading", handled in the same ``except`` as a bad CRC.

Public: the errors above, ``read_request``, ``write_single_request``,
``command_request``, ``ResponseParser``, ``exception_name``, ``GENERAL_ADDRESS``.
"""

from phasecore.crc import crc16
from phasecore.errors import quote
from phasenode.compat import const
from phasenode.errors import NodeError

READ_HOLDING = const(0x03)
READ_INPUT = const(0x04)
WRITE_SINGLE = const(0x06)
# Largest register count one read may ask for (Modbus Application Protocol
# V1.1b3, 6.3/6.4: 1..125, so the reply fits the 256-byte RTU ADU).
MAX_READ_COUNT = const(125)
# Unicast addresses are 1..247 (Modbus over Serial Line V1.02, 2.2); 0xF8 is
# outside that range but the PZEM-004T v3 answers it as a "general address"
# whatever its own address is (PZEM-004T v3.0 manual; mandulaj/PZEM-004T-v30).
GENERAL_ADDRESS = const(0xF8)
_MAX_ADU = const(256)

# Exception codes: Modbus Application Protocol V1.1b3, section 7.
_EXC_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


class ModbusError(NodeError):
    """Base class of every error of a Modbus RTU transaction."""


class ModbusCRCError(ModbusError):
    """A complete frame whose CRC-16/MODBUS does not check."""


class ModbusExceptionResponse(ModbusError):
    """The slave answered with an exception response (function | 0x80, code)."""

    def __init__(self, slave, function, code):
        self.slave = slave
        self.function = function
        self.code = code
        self.name = exception_name(code)
        super().__init__(
            "slave %d answered function 0x%02x with exception %d (%s)" % (slave, function, code, self.name)
        )


class ModbusFrameError(ModbusError):
    """A reply that is not the frame the request calls for."""


class ModbusUnexpectedSlave(ModbusFrameError):
    """The reply comes from another slave address than the one polled."""


class ModbusUnexpectedFunction(ModbusFrameError):
    """The reply's function code is neither the request's nor its exception form."""


class ModbusLengthError(ModbusFrameError):
    """The byte count does not match the register count requested."""


class ModbusTrailingBytes(ModbusFrameError):
    """Bytes arrived after a complete reply (another talker, or noise)."""


class ModbusTruncated(ModbusFrameError):
    """Part of a reply arrived, then the line went silent."""


class ModbusEchoError(ModbusFrameError):
    """Our own request came back: an RS-485 receiver was enabled while sending."""


class ModbusTimeout(ModbusError):
    """No byte of a reply arrived before the timeout."""


def exception_name(code):
    """Standard name of a Modbus exception code ("UNKNOWN" when not standard)."""
    return _EXC_NAMES.get(code, "UNKNOWN")


def _check_slave(slave):
    if not isinstance(slave, int) or not 1 <= slave <= GENERAL_ADDRESS:
        raise ValueError("slave address must be 1..247 or 0xF8 (general), got %s" % (quote(slave),))


def _check_u16(name, value):
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError("%s must be 0..65535, got %s" % (name, quote(value)))


def _frame(body):
    crc = crc16(body)
    body.append(crc & 0xFF)  # CRC low byte first (Modbus over Serial Line V1.02, 6.2.2)
    body.append(crc >> 8)
    return bytes(body)


def read_request(slave, function, start, count):
    """Read holding (0x03) or input (0x04) registers: an 8-byte RTU frame."""
    _check_slave(slave)
    if function != READ_HOLDING and function != READ_INPUT:
        raise ValueError("read function must be 0x03 or 0x04, got %s" % (quote(function),))
    _check_u16("start register", start)
    if not isinstance(count, int) or not 1 <= count <= MAX_READ_COUNT:
        raise ValueError("register count must be 1..125, got %s" % (quote(count),))
    return _frame(bytearray((slave, function, start >> 8, start & 0xFF, count >> 8, count & 0xFF)))


def write_single_request(slave, register, value):
    """Write single register (0x06): an 8-byte RTU frame; the reply echoes it."""
    _check_slave(slave)
    _check_u16("register", register)
    _check_u16("value", value)
    return _frame(bytearray((slave, WRITE_SINGLE, register >> 8, register & 0xFF, value >> 8, value & 0xFF)))


def command_request(slave, function):
    """A bare command with no data (e.g. PZEM reset energy 0x42): 4 bytes; the reply echoes it."""
    _check_slave(slave)
    if not isinstance(function, int) or not 1 <= function <= 0x7F:
        raise ValueError("function code must be 1..127, got %s" % (quote(function),))
    return _frame(bytearray((slave, function)))


class ResponseParser:
    """Incremental parser of the one reply that answers a request.

    ``start(request)`` arms it; ``feed(data, n)`` takes received bytes and
    returns True once the reply is complete and valid, raising a
    ``ModbusError`` as soon as the bytes cannot be that reply. The frame stays
    in ``buf`` (a preallocated bytearray, no allocation per reply); for reads,
    register i is at ``buf[3 + 2*i]`` (big-endian). ``timeout()`` gives the
    error to raise when the line goes silent.
    """

    def __init__(self, max_len=_MAX_ADU):
        if not 5 <= max_len <= _MAX_ADU:
            raise ValueError("max_len must be 5..256, got %s" % (quote(max_len),))
        self.buf = bytearray(max_len)
        self._mv = memoryview(self.buf)
        self.length = 0
        self._req = b""
        self._expected = 0
        self._byte_count = -1
        self._maybe_echo = False
        self._done = False

    def start(self, request):
        """Arm the parser for the reply to ``request`` (a complete RTU frame we sent)."""
        n = len(request)
        if n < 4:
            raise ValueError("request must be a complete RTU frame, got %d bytes" % n)
        fc = request[1]
        if fc == READ_HOLDING or fc == READ_INPUT:
            count = (request[4] << 8) | request[5]
            self._byte_count = 2 * count
            expected = 5 + 2 * count
        else:
            # 0x06 and bare commands (0x42) are answered by an exact echo.
            self._byte_count = -1
            expected = n
        if expected > len(self.buf):
            raise ValueError("reply of %d bytes exceeds the parser buffer (%d)" % (expected, len(self.buf)))
        self._req = request
        self._expected = expected
        self.length = 0
        self._maybe_echo = False
        self._done = False

    def feed(self, data, n=-1):
        """Take the first ``n`` bytes of ``data`` (all when n < 0); True when the reply is complete."""
        if n < 0:
            n = len(data)
        if self._expected == 0:
            raise ValueError("feed() before start()")
        if n and self._done:
            raise ModbusTrailingBytes("%d byte(s) after a complete %d-byte reply" % (n, self.length))
        buf = self.buf
        for i in range(n):
            if self.length == self._expected:
                raise ModbusTrailingBytes("%d byte(s) after a complete %d-byte reply" % (n - i, self.length))
            buf[self.length] = data[i]
            self.length += 1
            self._check_byte()
        return self._done

    def _check_byte(self):
        # Check each header byte as it lands, so a wrong reply fails early.
        pos = self.length - 1
        b = self.buf[pos]
        req = self._req
        if self._maybe_echo:
            if b != req[pos]:
                raise ModbusLengthError(
                    "byte count %d, expected %d for the registers requested" % (self.buf[2], self._byte_count)
                )
            if self.length == len(req):
                raise ModbusEchoError(
                    "own %d-byte request received back (RS-485 receiver enabled while sending?)" % len(req)
                )
            return
        if pos == 0:
            want = req[0]
            # A PZEM polled on the general address may reply from it or from its own address.
            if b != want and not (want == GENERAL_ADDRESS and 1 <= b <= 247):
                raise ModbusUnexpectedSlave("reply from slave %d, polled slave %d" % (b, want))
        elif pos == 1:
            fc = req[1]
            if b == fc | 0x80:
                self._expected = 5  # address, function | 0x80, exception code, CRC
            elif b != fc:
                raise ModbusUnexpectedFunction("reply function 0x%02x to a request with function 0x%02x" % (b, fc))
        elif pos == 2 and self._expected != 5 and self._byte_count >= 0:
            if b != self._byte_count:
                if self.buf[0] == req[0] and self.buf[1] == req[1] and b == req[2]:
                    self._maybe_echo = True  # decide once the whole request length is in
                    return
                raise ModbusLengthError(
                    "byte count %d, expected %d for the registers requested" % (b, self._byte_count)
                )
        if self.length == self._expected:
            self._finish()

    def _finish(self):
        buf = self.buf
        n = self.length
        if crc16(self._mv[:n]) != 0:
            raise ModbusCRCError(
                "CRC mismatch in a %d-byte reply from slave %d: got %02x%02x, computed %04x"
                % (n, buf[0], buf[n - 2], buf[n - 1], crc16(self._mv[: n - 2]))
            )
        if n == 5 and buf[1] & 0x80:
            raise ModbusExceptionResponse(buf[0], buf[1] & 0x7F, buf[2])
        if self._byte_count < 0:
            req = self._req
            for i in range(1, n):
                if buf[i] != req[i]:
                    raise ModbusFrameError(
                        "reply to function 0x%02x is not the echo of the request (byte %d)" % (req[1], i)
                    )
        self._done = True

    def register(self, i):
        """Register ``i`` of a complete read reply."""
        off = 3 + 2 * i
        if not self._done or self._byte_count < 0 or off + 2 > self.length - 2:
            raise IndexError("no register %d in this reply" % i)
        return (self.buf[off] << 8) | self.buf[off + 1]

    def timeout(self):
        """The error for a line gone silent: Timeout if nothing came, Truncated if part of a frame did."""
        if self.length == 0:
            return ModbusTimeout("no reply from slave %d within the timeout" % self._req[0])
        return ModbusTruncated(
            "reply from slave %d stopped after %d of %d bytes" % (self._req[0], self.length, self._expected)
        )


def parse_response(request, reply, parser=None):
    """Parse a whole received ``reply`` to ``request`` at once; return the parser holding it.

    Raises exactly what the incremental path raises, including ``ModbusTimeout``
    for an empty reply and ``ModbusTruncated`` for a short one.
    """
    p = parser or ResponseParser()
    p.start(request)
    if not p.feed(reply):
        raise p.timeout()
    return p
