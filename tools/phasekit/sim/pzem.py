"""A PZEM-004T v3 bus simulator: a pymodbus RTU server behind a pseudo-terminal.

Tests and demos run the real node driver (``phasenode.drivers.pzem`` over
``phasenode.hal.uart_host``, i.e. pyserial) against real Modbus RTU bytes:

    async with PzemSim([PzemMeter(address=1), PzemMeter(address=2)]) as sim:
        uart = HostUART(sim.port)           # the driver's end of the line
        sim.meters[0].set(voltage=231.2, current=4.2, power_factor=0.95)

The line is two pseudo-terminal pairs joined by a bridge (what
``socat pty pty`` does): pymodbus's ``ModbusSerialServer`` opens one slave
end, the driver opens the other. The bridge delivers each chunk after its
time on the wire at ``baudrate`` (10 bits per byte, 8N1), so round trips are
those of a 9600-baud line, not of a pty (which has no baud rate).

What the simulator does like a PZEM-004T v3 (PZEM-004T v3.0 manual;
mandulaj/PZEM-004T-v30):
- input registers 0x0000-0x0009 (function 0x04), 32-bit values low word first;
  alarm register 0xFFFF while power exceeds the threshold;
- holding registers 0x0001 (alarm threshold, W) and 0x0002 (address, 1..247;
  the reply to the write still comes from the old address, then the meter
  answers on the new one); other registers give exception 0x02;
- function 0x42 resets energy and is echoed. pymodbus has no 0x42, so the
  simulator registers a small custom PDU class (``custom_pdu=``) for it;
- several meters on one bus, each on its own address; a meter that is not
  addressed stays silent (a real bus has no "no such device" reply);
- the general address 0xF8 is answered, from 0xF8, when exactly one meter is
  on the bus. With several meters a real bus would carry colliding replies;
  the simulator then stays silent (the driver sees a timeout).

Fault injection per meter: ``fail_with`` (answer every request with that
exception code), ``mute`` (ignore the next N requests, to exercise retries).

``PzemPort`` is the same meter without pymodbus or a pty, for many nodes in
one process (the simulated site): an object with the UART subset the driver
uses, answering the real RTU bytes after their line time.

Built on pymodbus 3.16's ``SimDevice``/``SimData`` server API: one catch-all
device (id 0, "all devices" in pymodbus) whose ``action`` callback serves the
meter chosen from the request's address in ``trace_pdu``. RTU is strictly one
request at a time, so "the meter being served" is well defined.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from phasecore.crc import crc16, crc16_le
from phasekit.sim.serial_line import NullModem

GENERAL_ADDRESS = 0xF8
FC_RESET_ENERGY = 0x42


class PzemMeter:
    """State of one simulated PZEM-004T. Values in SI units; ``set()`` changes them at any time."""

    def __init__(
        self,
        address: int = 1,
        voltage: float = 230.0,
        current: float = 0.0,
        power: float | None = None,
        energy: float = 0,
        frequency: float = 50.0,
        power_factor: float = 1.0,
        alarm_threshold: int = 2300,
    ):
        if not 1 <= address <= 247:
            raise ValueError("PZEM address must be 1..247, got %r" % (address,))
        self.address = address
        self.voltage = voltage
        self.current = current
        self.power = power
        self.energy = energy
        self.frequency = frequency
        self.power_factor = power_factor
        self.alarm_threshold = alarm_threshold
        self.fail_with: int | None = None  # a Modbus exception code
        self.mute = 0
        self.requests = 0

    def set(self, **values: float | None) -> None:
        """Set measurements (voltage, current, power, energy, frequency, power_factor, alarm_threshold).

        Power defaults to voltage * current * power_factor unless given.
        """
        for name, value in sorted(values.items()):
            if name not in ("voltage", "current", "power", "energy", "frequency", "power_factor", "alarm_threshold"):
                raise ValueError("unknown PZEM value %r" % (name,))
            setattr(self, name, value)

    def input_registers(self) -> list[int]:
        """The 10 input registers as the meter sends them."""
        power = self.voltage * self.current * self.power_factor if self.power is None else self.power
        current = round(self.current * 1000)
        power_dw = round(power * 10)
        energy = int(self.energy)
        alarm = 0xFFFF if power > self.alarm_threshold else 0x0000
        # 32-bit values low word first (PZEM-004T v3.0 manual, registers 0x0001-0x0006).
        return [
            round(self.voltage * 10) & 0xFFFF,
            current & 0xFFFF,
            (current >> 16) & 0xFFFF,
            power_dw & 0xFFFF,
            (power_dw >> 16) & 0xFFFF,
            energy & 0xFFFF,
            (energy >> 16) & 0xFFFF,
            round(self.frequency * 10) & 0xFFFF,
            round(self.power_factor * 100) & 0xFFFF,
            alarm,
        ]


class PzemSim:
    """Meters on one simulated RS-485/TTL line. ``port`` is the driver's end (a /dev/pts path)."""

    def __init__(self, meters: Iterable[PzemMeter], baudrate: int = 9600, pace: bool = True):
        self.meters = list(meters)
        self.baudrate = baudrate
        self._pace = pace
        self._current: PzemMeter | None = None
        self._bridge: NullModem | None = None
        self._server: ModbusSerialServer | None = None
        self.port: str | None = None

    def meter(self, address: int) -> PzemMeter | None:
        """The meter that answers ``address`` now, or None (general address: only with one meter)."""
        for m in self.meters:
            if m.address == address:
                return m
        if address == GENERAL_ADDRESS and len(self.meters) == 1:
            return self.meters[0]
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        m = self.meter(pdu.dev_id)
        if m is None:
            return None  # not addressed to any meter: silence, as on a real bus
        if m.mute:
            m.mute -= 1
            return None
        m.requests += 1
        self._current = m
        return pdu

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: Sequence[int] | None,
    ) -> ExcCodes | None:
        m = self._current
        assert m is not None  # _trace_pdu chose the meter of this request
        if m.fail_with is not None:
            return ExcCodes(m.fail_with)
        if function_code == 4:
            registers[:] = m.input_registers()
        elif function_code in (3, 6):
            if values:
                value = values[0]
                if address == 2:
                    if not 1 <= value <= 247:
                        return ExcCodes.ILLEGAL_VALUE
                    m.address = value  # answered from the old address; the new one from the next request
                elif address == 1:
                    m.alarm_threshold = value
            registers[0] = m.alarm_threshold  # holding block starts at 0x0001
            registers[1] = m.address
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        return None

    def _reset_pdu(self) -> type[ModbusPDU]:
        sim = self

        class ResetEnergy(ModbusPDU):
            """PZEM function 0x42: reset energy; no data, the meter echoes the 4-byte frame."""

            function_code = FC_RESET_ENERGY
            rtu_frame_size = 4

            def encode(self) -> bytes:
                return b""

            def decode(self, data: bytes) -> None:
                pass

            async def datastore_update(self, context: object, device_id: int) -> ModbusPDU:
                m = sim._current
                assert m is not None  # _trace_pdu chose the meter of this request
                if m.fail_with is not None:
                    return ExceptionResponse(FC_RESET_ENERGY, m.fail_with)
                m.energy = 0
                return ResetEnergy(dev_id=device_id)

        return ResetEnergy

    def _device(self) -> SimDevice:
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        holding = [SimData(1, count=2, values=0, datatype=DataType.REGISTERS)]
        inputs = [SimData(0, count=10, values=0, datatype=DataType.REGISTERS)]
        # id 0: pymodbus serves every address with it; _trace_pdu decides who answers.
        return SimDevice(0, simdata=(bits, bits, holding, inputs), action=self._action)

    async def start(self) -> str:
        """Open the line and start serving; returns the driver's port path."""
        bridge = NullModem(self.baudrate, self._pace)
        self._bridge = bridge
        bridge.start()
        self._server = ModbusSerialServer(
            self._device(),
            framer=FramerType.RTU,
            port=bridge.paths[0],
            baudrate=self.baudrate,
            trace_pdu=self._trace_pdu,
            custom_pdu=[self._reset_pdu()],
        )
        await self._server.serve_forever(background=True)
        port = bridge.paths[1]
        self.port = port
        return port

    async def stop(self) -> None:
        """Stop serving and close the line."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._bridge is not None:
            await self._bridge.stop()
            self._bridge = None

    async def __aenter__(self) -> PzemSim:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class PzemPort:
    """One PZEM-004T on the node's meter UART, in process: the UART subset the driver uses, real RTU bytes.

    ``any()``, ``readinto(buf, n)``, ``read(n)``, ``write(data)``, ``flush()``:
    what ``phasenode.drivers.pzem`` calls on ``machine.UART``. A request the
    node writes is decoded as a Modbus RTU ADU (address, function, data,
    CRC-16/MODBUS); the meter answers it like ``PzemSim`` does (input
    registers 0x0000-0x0009, holding registers 0x0001-0x0002, function 0x42,
    exception 0x01/0x02, silence for another address or a bad CRC), and the
    reply's bytes *arrive* one character time (10 bits) after another, from
    the end of the request plus ``turnaround_s``: ``any()`` counts only the
    bytes that have arrived by now (``time.monotonic``). So a read takes the
    line time of a 9600-baud meter without a pty, a thread or a timer: the
    simulated site runs 50 of these in one process.

    ``powered()``: the meter is powered from the measured mains (it answers
    nothing while the house side is dead, docs/relay-safety.md "settle_ms");
    default always.
    """

    def __init__(
        self,
        meter: PzemMeter,
        baudrate: int = 9600,
        turnaround_s: float = 0.002,
        powered: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.meter = meter
        self.byte_s = 10.0 / baudrate
        self.turnaround_s = turnaround_s
        self.powered = powered
        self._clock = clock
        self._req = bytearray()
        self._reply = b""
        self._reply_t0 = 0.0  # when the reply's first byte has arrived
        self._taken = 0
        self.requests = 0
        self.unanswered = 0

    # the UART the driver sees -------------------------------------------------------

    def any(self) -> int:
        """Bytes arrived and not yet read."""
        if not self._reply:
            return 0
        arrived = int((self._clock() - self._reply_t0) / self.byte_s) + 1
        return max(0, min(arrived, len(self._reply)) - self._taken)

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        n = self.any()
        if nbytes is not None:
            n = min(n, nbytes)
        n = min(n, len(buf))
        if n <= 0:
            return None
        buf[:n] = self._reply[self._taken : self._taken + n]
        self._taken += n
        return n

    def read(self, nbytes: int | None = None) -> bytes | None:
        n = self.any() if nbytes is None else min(nbytes, self.any())
        if n <= 0:
            return None
        out = self._reply[self._taken : self._taken + n]
        self._taken += n
        return out

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        t_end = self._clock() + len(data) * self.byte_s  # the request's last bit on the line
        self._req += data
        self._serve(t_end)
        return len(data)

    def flush(self) -> None:
        pass

    # the meter ------------------------------------------------------------------------

    def _serve(self, t_end: float) -> None:
        req = bytes(self._req)
        if len(req) < 4:
            return
        fn = req[1]
        size = 4 if fn == FC_RESET_ENERGY else 8
        if len(req) < size:
            return
        self._req = bytearray(req[size:])
        adu = req[:size]
        if crc16(adu) != 0 or (self.powered is not None and not self.powered()):
            self.unanswered += 1
            return  # a corrupted request, or a meter without mains: silence
        m = self.meter
        if adu[0] != m.address and adu[0] != GENERAL_ADDRESS:
            return  # another meter's address: not for this one
        self.requests += 1
        m.requests += 1
        body = self._answer(m, adu)
        if body is None:
            return
        body = bytes((adu[0],)) + body
        self._reply = body + crc16_le(body)
        self._taken = 0
        self._reply_t0 = t_end + self.turnaround_s + self.byte_s

    @staticmethod
    def _answer(m: PzemMeter, adu: bytes) -> bytes | None:
        fn = adu[1]
        if m.fail_with is not None:
            return bytes((fn | 0x80, m.fail_with))
        if fn == FC_RESET_ENERGY:
            m.energy = 0
            return bytes((fn,))
        start = (adu[2] << 8) | adu[3]
        value = (adu[4] << 8) | adu[5]
        if fn == 4:
            regs = m.input_registers()
            if start + value > len(regs) or value == 0:
                return bytes((fn | 0x80, 0x02))
            return bytes((4, 2 * value)) + b"".join(struct.pack(">H", r) for r in regs[start : start + value])
        if fn == 3:
            hold = {1: m.alarm_threshold, 2: m.address}
            if value == 0 or any(r not in hold for r in range(start, start + value)):
                return bytes((fn | 0x80, 0x02))
            return bytes((3, 2 * value)) + b"".join(struct.pack(">H", hold[r]) for r in range(start, start + value))
        if fn == 6:
            if start == 2:
                if not 1 <= value <= 247:
                    return bytes((fn | 0x80, 0x03))
                m.address = value  # answered from the old address (the ADU's), the new one from now on
            elif start == 1:
                m.alarm_threshold = value
            else:
                return bytes((fn | 0x80, 0x02))
            return adu[1:6]
        return bytes((fn | 0x80, 0x01))


async def _serve_forever(addresses: list[int]) -> None:
    async with PzemSim([PzemMeter(address=a) for a in addresses]) as sim:
        print("PZEM-004T simulator: meters %s on %s (9600 8N1); Ctrl-C to stop" % (addresses, sim.port), flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m phasekit.sim.pzem [ADDRESS ...]``: serve meters (default: one at address 1)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    addresses = [int(a, 0) for a in args] or [1]
    try:
        asyncio.run(_serve_forever(addresses))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
