"""A simulated 3-phase transformer meter: a pymodbus server speaking a register map.

It serves the same register map (``phasegate/meters/*.json``) the gateway reads,
so the gateway's meter path is tested against real Modbus bytes: TCP on
loopback, or RTU over a serial line (a pseudo-terminal pair in tests). Values
are set with ``set(...)`` at any time; the server encodes them on each read.
Faults can be injected: ``fail_with`` answers every read with a Modbus
exception code, ``garbage`` makes it return NaN.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

if TYPE_CHECKING:
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer

    from phasegate.meter import MeterProfile

_TYPES = {"float32": (2, ">f"), "int32": (2, ">i"), "uint32": (2, ">I"), "int16": (1, ">h"), "uint16": (1, ">H")}


class MeterSim:
    """State of one simulated meter (one Modbus unit) for a profile."""

    def __init__(self, profile: MeterProfile, unit: int = 1):
        self.profile = profile
        self.unit = unit
        self.values: dict[str, float] = {}
        self.fail_with: int | None = None  # a Modbus exception code (pymodbus ExcCodes)
        self.garbage = False
        self.reads = 0
        self.set(voltages=(230.0, 230.0, 230.0), currents=(0.0, 0.0, 0.0), frequency=50.0)
        top = max(a + n for a, n in profile.blocks)
        self._size = top

    def set(
        self,
        voltages: Sequence[float] | None = None,
        currents: Sequence[float] | None = None,
        powers: Sequence[float] | None = None,
        pfs: Sequence[float] | None = None,
        frequency: float | None = None,
        current_n: float | None = None,
    ) -> None:
        """Set the values the next reads return (phases a, b, c in each triple); None leaves a value as it is."""
        for prefix, triple in (("voltage_", voltages), ("current_", currents), ("power_", powers), ("pf_", pfs)):
            if triple is not None:
                for p, v in zip("abc", triple):
                    self.values[prefix + p] = float(v)
        if frequency is not None:
            self.values["frequency"] = float(frequency)
        if current_n is not None:
            self.values["current_n"] = float(current_n)

    def registers(self) -> list[int]:
        """The whole register space as a list of 16-bit values."""
        regs = [0] * self._size
        for name, (addr, typ, scale) in self.profile.fields.items():
            value = math.nan if self.garbage else self.values.get(name, 0.0)
            words, fmt = _TYPES[typ]
            raw = value / scale if fmt == ">f" else int(round(value / scale))
            packed = struct.pack(fmt, raw)
            ws = list(struct.unpack(">" + "H" * words, packed))
            if words == 2 and self.profile.word_order == "little":
                ws.reverse()
            regs[addr : addr + words] = ws
        return regs

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: object,
    ) -> int | None:
        if self.fail_with is not None:
            return self.fail_with
        if function_code != self.profile.function:
            return ExcCodes.ILLEGAL_FUNCTION
        self.reads += 1
        regs = self.registers()
        for i in range(len(current_registers)):
            a = start_address + i
            current_registers[i] = regs[a] if a < len(regs) else 0
        return None

    def device(self) -> SimDevice:
        """This unit as a pymodbus ``SimDevice``."""

        def regs(n: int) -> list[SimData]:
            return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)]

        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        # Non-shared blocks, in pymodbus order (coils, discrete inputs, holding, input).
        if self.profile.function == 4:
            data = (bits, bits, regs(1), regs(self._size))
        else:
            data = (bits, bits, regs(self._size), regs(1))
        return SimDevice(self.unit, simdata=data, action=self._action)


def tcp_server(sims: Iterable[MeterSim], host: str = "127.0.0.1", port: int = 5020) -> ModbusTcpServer:
    """A pymodbus TCP server for one or more MeterSim units; ``await server.serve_forever()``."""
    from pymodbus.server import ModbusTcpServer

    return ModbusTcpServer([s.device() for s in sims], address=(host, port))


def rtu_server(sims: Iterable[MeterSim], port: str, baudrate: int = 9600) -> ModbusSerialServer:
    """A pymodbus RTU server on serial device ``port`` (e.g. one end of a pty pair)."""
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer

    return ModbusSerialServer([s.device() for s in sims], framer=FramerType.RTU, port=port, baudrate=baudrate)
