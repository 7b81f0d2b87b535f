"""PZEM-004T v3 energy meter driver: Modbus RTU over a UART, asyncio API.

The node polls its meter about once a second, so the sampling path is kept
allocation-light: the measurement request is built once per address, the
reply lands in a preallocated buffer, and ``decode_measurement`` reads the
ten registers straight from it into a reusable ``Measurement`` holding small
integers (floats are made only when a property is read: on the ESP32 every
float is a heap object).

One design, both interpreters: every method is a coroutine, usable from the
node's MicroPython asyncio loop and from CPython asyncio alike (a one-off
script calls ``asyncio.run(meter.read())``). A reply is awaited by polling
``uart.any()`` with ``await sleep_ms(poll_ms)``, so the loop keeps running
while the meter answers (about 35 ms of line time at 9600 baud). The UART is
anything with the machine.UART subset ``any() / readinto(buf, n) / write(b)``:
``machine.UART`` (or ``phasenode.hal.uart_esp32``) on the node,
``phasenode.hal.uart_host`` (pyserial) on a PC.

Register map (PZEM-004T v3.0 manual; DESIGN.md "field facts"): input registers
0x0000-0x0009 read with function 0x04: voltage 0.1 V; current 0.001 A and
power 0.1 W and energy 1 Wh as 32-bit values sent LOW word first; frequency
0.1 Hz; power factor 0.01; alarm 0xFFFF/0x0000. Holding registers: 0x0001
power alarm threshold (1 W), 0x0002 Modbus address (1..247). Function 0x42
resets the energy counter (the meter echoes it).

Several meters share one UART when each has its own address (set once with
``set_address`` while it is alone on the bus); give them the same
``BusLock`` so their transactions never interleave. The general address 0xF8 is answered
by every PZEM: use it only with a single meter connected.

Public: ``Pzem``, ``BusLock``, ``Measurement``, ``decode_measurement``, ``ImplausibleReading``,
``METER_ERRORS``, the register constants.
"""

from phasecore.errors import quote
from phasenode.compat import const, sleep_ms, ticks_diff, ticks_ms
from phasenode.drivers import modbus_rtu
from phasenode.drivers.modbus_rtu import (
    GENERAL_ADDRESS,
    READ_HOLDING,
    READ_INPUT,
    ModbusError,
    ModbusExceptionResponse,
    ResponseParser,
    command_request,
    read_request,
    write_single_request,
)
from phasenode.errors import NodeError

REG_MEASUREMENTS = const(0x0000)
N_MEASUREMENT_REGS = const(10)
HREG_ALARM_THRESHOLD = const(0x0001)
HREG_ADDRESS = const(0x0002)
FC_RESET_ENERGY = const(0x42)
MAX_ALARM_THRESHOLD_W = const(25000)  # mandulaj/PZEM-004T-v30 setPowerAlarm() sanity limit

# Plausibility limits: the PZEM-004T v3 (100 A version) measures 80-260 V,
# 0-100 A, 0-23 kW, 45-65 Hz, 0-9999.99 kWh (manufacturer specification, as
# quoted in mandulaj/PZEM-004T-v30 README). Limits sit a little outside so a
# true reading at the edge passes; a value beyond is a bad reply, not a reading.
_MAX_VOLTAGE_DV = const(3000)  # 300.0 V
_MAINS_PRESENT_DV = const(400)  # 40.0 V: below this the meter sees no mains
_MAX_CURRENT_MA = const(100000)  # 100.000 A
_MAX_POWER_DW = const(260000)  # 26 kW
_MAX_ENERGY_WH = const(10000000)  # 10 000 kWh
_MIN_FREQ_DHZ = const(450)
_MAX_FREQ_DHZ = const(650)
_MAX_PF_CENTI = const(100)
# 3.5 character times of silence between frames (Modbus over Serial Line
# V1.02, 2.5.1.1): 3.5 * 11 bits / 9600 baud = 4.0 ms, rounded up.
_FRAME_GAP_MS = const(5)
_SCRATCH = const(32)


class ImplausibleReading(NodeError):
    """A well-formed reply whose values cannot be a real reading; ``.field`` names the culprit."""

    def __init__(self, field, msg):
        self.field = field
        super().__init__("implausible %s: %s" % (field, msg))


class BusLock:
    """Serialises the transactions of meters that share one UART.

    A flag polled with ``sleep_ms`` rather than an ``asyncio.Lock``: taking a
    free asyncio.Lock costs about 300-600 bytes of heap per transaction on
    MicroPython (its coroutines), this costs nothing. asyncio is cooperative,
    so testing and setting the flag without an ``await`` between is atomic.
    """

    def __init__(self):
        self.busy = False


# Everything a poll of the meter can raise on a bad or missing reply.
METER_ERRORS = (ModbusError, ImplausibleReading)


class Measurement:
    """One PZEM-004T reading, kept as the meter's integers.

    Raw fields: ``voltage_dv`` (0.1 V), ``current_ma`` (mA), ``power_dw`` (0.1 W),
    ``energy_wh`` (Wh), ``frequency_dhz`` (0.1 Hz), ``pf_centi`` (0.01), ``alarm``
    (bool). Properties give SI floats: ``voltage`` V, ``current`` A, ``power`` W,
    ``energy`` Wh, ``frequency`` Hz, ``power_factor``.
    """

    def __init__(self):
        self.voltage_dv = 0
        self.current_ma = 0
        self.power_dw = 0
        self.energy_wh = 0
        self.frequency_dhz = 0
        self.pf_centi = 0
        self.alarm = False

    @property
    def voltage(self):
        return self.voltage_dv / 10

    @property
    def current(self):
        return self.current_ma / 1000

    @property
    def power(self):
        return self.power_dw / 10

    @property
    def energy(self):
        return self.energy_wh

    @property
    def frequency(self):
        return self.frequency_dhz / 10

    @property
    def power_factor(self):
        return self.pf_centi / 100

    def __repr__(self):
        return "Measurement(%d.%d V, %d mA, %d.%d W, %d Wh, %d.%d Hz, pf %d%%, alarm=%s)" % (
            self.voltage_dv // 10,
            self.voltage_dv % 10,
            self.current_ma,
            self.power_dw // 10,
            self.power_dw % 10,
            self.energy_wh,
            self.frequency_dhz // 10,
            self.frequency_dhz % 10,
            self.pf_centi,
            self.alarm,
        )


def _u32(field, lo, hi, limit):
    # 32-bit values come low word first (PZEM-004T v3.0 manual, input registers
    # 0x0001-0x0006). Check the high word before combining: a hostile 0xFFFF
    # would build a big int, which allocates on the ESP32 (31-bit small ints).
    if hi > (limit >> 16):
        raise ImplausibleReading(field, "high word 0x%04x exceeds %d" % (hi, limit))
    v = (hi << 16) | lo
    if v > limit:
        raise ImplausibleReading(field, "%d exceeds %d" % (v, limit))
    return v


def decode_measurement(src, offset=3, into=None):
    """Decode the 10 measurement registers into a ``Measurement`` and check it.

    ``src`` is either a reply buffer (bytes-like; the registers start at
    ``offset``, 3 for a whole RTU reply) or a list/tuple of the 10 register
    values. ``into`` reuses a Measurement instead of allocating one. Raises
    ``ImplausibleReading`` when the values cannot be a real reading.
    """
    if isinstance(src, list) or isinstance(src, tuple):  # no tuple literal: it would allocate
        if len(src) != N_MEASUREMENT_REGS:
            raise ValueError("expected 10 registers, got %d" % len(src))
        v, il, ih, pl, ph, el, eh, f, pf, al = src
    else:
        b = src
        o = offset
        if len(b) < o + 2 * N_MEASUREMENT_REGS:
            raise ValueError("need 20 register bytes at offset %d, buffer has %d bytes" % (o, len(b)))
        v = (b[o] << 8) | b[o + 1]
        il = (b[o + 2] << 8) | b[o + 3]
        ih = (b[o + 4] << 8) | b[o + 5]
        pl = (b[o + 6] << 8) | b[o + 7]
        ph = (b[o + 8] << 8) | b[o + 9]
        el = (b[o + 10] << 8) | b[o + 11]
        eh = (b[o + 12] << 8) | b[o + 13]
        f = (b[o + 14] << 8) | b[o + 15]
        pf = (b[o + 16] << 8) | b[o + 17]
        al = (b[o + 18] << 8) | b[o + 19]
    if v > _MAX_VOLTAGE_DV:
        raise ImplausibleReading("voltage", "%d dV exceeds %d" % (v, _MAX_VOLTAGE_DV))
    current = _u32("current", il, ih, _MAX_CURRENT_MA)
    power = _u32("power", pl, ph, _MAX_POWER_DW)
    energy = _u32("energy", el, eh, _MAX_ENERGY_WH)
    if (v >= _MAINS_PRESENT_DV or f) and not _MIN_FREQ_DHZ <= f <= _MAX_FREQ_DHZ:
        raise ImplausibleReading("frequency", "%d dHz with %d dV present" % (f, v))
    if pf > _MAX_PF_CENTI:
        raise ImplausibleReading("power_factor", "%d/100 exceeds 1" % pf)
    if al == 0xFFFF:
        alarm = True
    elif al == 0:
        alarm = False
    else:
        raise ImplausibleReading("alarm", "register 0x%04x is neither 0x0000 nor 0xFFFF" % al)
    # P must equal V*I*PF up to rounding of the registers and the few percent
    # the meter's samples drift between registers: 3 % of V*I plus 2 W. In
    # units of 1e-4 W every product stays below 2**30 (small int on the ESP32)
    # thanks to the range checks above.
    s_centi = (v * current) // 100  # V*I in 0.01 VA
    p_est = s_centi * pf  # V*I*PF in 1e-4 W
    p_meas = power * 1000  # P in 1e-4 W
    tol = s_centi * 3 + 20000
    if p_meas - p_est > tol or p_est - p_meas > tol:
        raise ImplausibleReading("power", "P = %d dW but V*I*PF = %d dW" % (power, p_est // 1000))
    m = into if into is not None else Measurement()
    m.voltage_dv = v
    m.current_ma = current
    m.power_dw = power
    m.energy_wh = energy
    m.frequency_dhz = f
    m.pf_centi = pf
    m.alarm = alarm
    return m


class Pzem:
    """One PZEM-004T v3 on a UART, by Modbus address.

    ``timeout_ms`` bounds the wait for each reply; a failed attempt (timeout,
    CRC, malformed or implausible reply) is retried ``retries`` more times and
    the last attempt's error is raised. An exception response is the meter's
    definite answer and is raised at once. ``lock`` (a ``BusLock``) must be
    shared by all meters on one UART.
    """

    def __init__(self, uart, address=GENERAL_ADDRESS, timeout_ms=200, retries=2, lock=None, poll_ms=2):
        modbus_rtu._check_slave(address)
        if not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValueError("timeout_ms must be a positive int, got %s" % (quote(timeout_ms),))
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be an int >= 0, got %s" % (quote(retries),))
        self._uart = uart
        self._timeout_ms = timeout_ms
        self._retries = retries
        self._poll_ms = poll_ms
        self._lock = lock if lock is not None else BusLock()
        # Largest reply: 10 registers = 25 bytes.
        self._parser = ResponseParser(5 + 2 * N_MEASUREMENT_REGS)
        self._scratch = bytearray(_SCRATCH)
        self._last_end = ticks_ms() - _FRAME_GAP_MS
        self._set_address(address)

    def _set_address(self, address):
        self._address = address
        self._measure_req = read_request(address, READ_INPUT, REG_MEASUREMENTS, N_MEASUREMENT_REGS)

    @property
    def address(self):
        """The Modbus address this instance polls."""
        return self._address

    def read(self, into=None):
        """Read all measurements: ``await meter.read()`` gives a checked ``Measurement``.

        ``into`` is filled and returned instead of a new one. A plain function
        returning the transaction coroutine: one coroutine object per sample
        instead of two (each costs heap on MicroPython).
        """
        return self._transact(self._measure_req, Measurement() if into is None else into)

    async def read_registers(self, function, start, count):
        """Read ``count`` (1..10) holding (0x03) or input (0x04) registers as a tuple of ints."""
        if not isinstance(count, int) or not 1 <= count <= N_MEASUREMENT_REGS:
            raise ValueError("count must be 1..10 for a PZEM, got %s" % (quote(count),))
        await self._transact(read_request(self._address, function, start, count), None)
        p = self._parser
        return tuple(p.register(i) for i in range(count))

    async def read_address(self):
        """The address stored in the meter (holding register 0x0002)."""
        regs = await self.read_registers(READ_HOLDING, HREG_ADDRESS, 1)
        if not 1 <= regs[0] <= 247:
            raise ImplausibleReading("address", "register 0x0002 holds %d, not 1..247" % regs[0])
        return regs[0]

    async def set_address(self, new):
        """Store a new address (1..247) in the meter; this instance then polls it."""
        if not isinstance(new, int) or not 1 <= new <= 247:
            raise ValueError("PZEM address must be 1..247, got %s" % (quote(new),))
        # The meter answers from the old address, echoing the write.
        await self._transact(write_single_request(self._address, HREG_ADDRESS, new), None)
        self._set_address(new)

    async def reset_energy(self):
        """Zero the meter's energy counter (function 0x42, echoed on success)."""
        await self._transact(command_request(self._address, FC_RESET_ENERGY), None)

    async def read_alarm_threshold(self):
        """The power alarm threshold in W (holding register 0x0001)."""
        regs = await self.read_registers(READ_HOLDING, HREG_ALARM_THRESHOLD, 1)
        return regs[0]

    async def set_alarm_threshold(self, watts):
        """Set the power alarm threshold, 0..25000 W."""
        if not isinstance(watts, int) or not 0 <= watts <= MAX_ALARM_THRESHOLD_W:
            raise ValueError("alarm threshold must be 0..25000 W, got %s" % (quote(watts),))
        await self._transact(write_single_request(self._address, HREG_ALARM_THRESHOLD, watts), None)

    async def _transact(self, request, measurement):
        # One coroutine per transaction (every coroutine call allocates its
        # frame on MicroPython): gap, drain, write, poll, parse, decode, retry.
        uart = self._uart
        scratch = self._scratch
        p = self._parser
        lock = self._lock
        while lock.busy:
            await sleep_ms(self._poll_ms)
        lock.busy = True
        try:
            err = None
            for attempt in range(self._retries + 1):
                # 3.5 characters of silence before a frame; after a failure, let
                # the rest of a bad or late reply pass before asking again.
                gap = (_FRAME_GAP_MS if attempt == 0 else 2 * _FRAME_GAP_MS) - ticks_diff(ticks_ms(), self._last_end)
                if gap > 0:
                    await sleep_ms(gap)
                # Drop stale bytes (a late reply to an earlier poll would pass for this one's).
                while uart.any():
                    uart.readinto(scratch, _SCRATCH)
                p.start(request)
                uart.write(request)
                t0 = ticks_ms()
                try:
                    while True:
                        n = uart.any()
                        if n:
                            n = uart.readinto(scratch, n if n < _SCRATCH else _SCRATCH)
                            if n and p.feed(scratch, n):
                                break
                        elif ticks_diff(ticks_ms(), t0) >= self._timeout_ms:
                            raise p.timeout()
                        else:
                            await sleep_ms(self._poll_ms)
                    if measurement is not None:
                        decode_measurement(p.buf, 3, measurement)
                    return measurement
                except ModbusExceptionResponse:
                    raise
                except METER_ERRORS as e:
                    err = e
                finally:
                    self._last_end = ticks_ms()
            raise err
        finally:
            lock.busy = False
