"""Modbus TCP view of the transformer for an existing SCADA (pymodbus server).

Read-only input registers (function 04), unit id 1, 16-bit unsigned integers
with fixed scales so any SCADA can poll them without float word-order
configuration. The map is ``REGISTERS`` below and docs/scada.md; a test keeps
the two in step. Values saturate at 0..65534; 65535 means not known (no meter
yet, no update yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from phasecore.errors import quote

if TYPE_CHECKING:
    from pymodbus.server import ModbusTcpServer

MAP_VERSION = 1
UNKNOWN = 0xFFFF

# (address, state attribute, scale, unit, description)
REGISTERS = (
    (0, "map_version", 1, "", "register map version (1)"),
    (1, "current_a", 10, "0.1 A", "phase A current at the transformer"),
    (2, "current_b", 10, "0.1 A", "phase B current"),
    (3, "current_c", 10, "0.1 A", "phase C current"),
    (4, "current_n", 10, "0.1 A", "neutral current (phasor sum, computed)"),
    (5, "cuf", 1000, "0.1 %", "current unbalance factor"),
    (6, "voltage_a", 10, "0.1 V", "phase A voltage"),
    (7, "voltage_b", 10, "0.1 V", "phase B voltage"),
    (8, "voltage_c", 10, "0.1 V", "phase C voltage"),
    (9, "nodes_online", 1, "", "nodes online"),
    (10, "nodes_stale", 1, "", "nodes stale (missed recent polls)"),
    (11, "nodes_offline", 1, "", "nodes offline"),
    (12, "nodes_locked", 1, "", "nodes locked out (safety)"),
    (13, "moves_today", 1, "", "phase moves executed since local midnight"),
    (14, "meter_ok", 1, "", "1 when the transformer meter answered the last read"),
    (15, "uplink_connected", 1, "", "1 when the MQTT uplink is connected"),
    (16, "backlog", 1, "rows", "store-and-forward backlog (saturates at 65534)"),
    (17, "updated_s_hi", 1, "s", "time of the last update, unix seconds, high word"),
    (18, "updated_s_lo", 1, "s", "time of the last update, unix seconds, low word"),
)
SIZE = REGISTERS[-1][0] + 1


class ScadaState:
    """What the controller publishes to SCADA; attributes named as in REGISTERS (None = unknown)."""

    def __init__(self) -> None:
        for _, name, _, _, _ in REGISTERS:
            setattr(self, name, None)
        self.updated_s: float | None = None
        self.map_version = MAP_VERSION

    def update(self, **values: float | None) -> None:
        for k, v in values.items():
            if not hasattr(self, k):
                raise AttributeError("SCADA state has no field %s" % quote(k))
            setattr(self, k, v)


def encode(state: ScadaState) -> list[int]:
    """The register block for ``state``: a list of SIZE 16-bit values."""
    regs = [UNKNOWN] * SIZE
    for addr, name, scale, _, _ in REGISTERS:
        if name.startswith("updated_s_"):
            continue
        v = getattr(state, name)
        if v is not None:
            regs[addr] = max(0, min(UNKNOWN - 1, int(round(float(v) * scale))))
    if state.updated_s is not None:
        t = int(state.updated_s) & 0xFFFFFFFF
        regs[17], regs[18] = t >> 16, t & 0xFFFF
    return regs


def server(state: ScadaState, host: str = "127.0.0.1", port: int = 5020, unit: int = 1) -> ModbusTcpServer:
    """A pymodbus ModbusTcpServer serving ``state``; run with ``await server.serve_forever()``."""
    from pymodbus.server import ModbusTcpServer

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # read-only view
        regs = encode(state)
        for i in range(len(current_registers)):
            a = start_address + i
            current_registers[i] = regs[a] if a < SIZE else 0
        return None

    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    block = [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS, readonly=True)]
    device = SimDevice(
        unit, simdata=(bits, bits, [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)], block), action=action
    )
    return ModbusTcpServer([device], address=(host, port))
