"""The transformer's 3-phase meter over Modbus RTU or TCP (pymodbus).

Register maps are data (``phasegate/meters/<profile>.json``, or a path): which
function code, which contiguous blocks to read, each field's address, type,
word order and scale. Decoding is sans-IO (``decode(profile, blocks)``) so it is
tested without a meter; ``ModbusMeter`` is the thin pymodbus layer around it.

Every reading is sanity-checked before the balancer sees it: a meter that
returns NaN, a negative current or 80 Hz is reported as a MeterError, never
passed on as a measurement.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from phasecore.errors import quote
from phasegate.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    from pymodbus.client import ModbusBaseClient

PROFILE_DIR = Path(__file__).with_name("meters")
PHASES = ("a", "b", "c")
REQUIRED_FIELDS = ("voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c")
_TYPES = {"float32": (2, ">f"), "int32": (2, ">i"), "uint32": (2, ">I"), "int16": (1, ">h"), "uint16": (1, ">H")}


class MeterError(DeviceError):
    """The meter did not answer, answered badly, or gave an implausible reading."""


class MeterProfileError(ConfigError):
    """A register map file is missing or malformed (a configuration error, so a ValueError too)."""


class ThreePhaseReading:
    """Per-phase voltages (V), currents (A), active powers (W, signed), power factors; frequency (Hz)."""

    __slots__ = ("voltages", "currents", "powers", "pfs", "frequency", "current_n")

    def __init__(
        self,
        voltages: Sequence[float],
        currents: Sequence[float],
        powers: Sequence[float] | None = None,
        pfs: Sequence[float] | None = None,
        frequency: float | None = None,
        current_n: float | None = None,
    ):
        self.voltages = voltages
        self.currents = currents
        self.powers = powers
        self.pfs = pfs
        self.frequency = frequency
        self.current_n = current_n

    def __repr__(self) -> str:
        return "ThreePhaseReading(V=%s, I=%s, P=%s, pf=%s, f=%s)" % (
            self.voltages,
            self.currents,
            self.powers,
            self.pfs,
            self.frequency,
        )


class MeterProfile:
    """A validated register map."""

    def __init__(self, data: Mapping[str, Any], origin: str = "<profile>"):
        # data: the profile as decoded JSON, checked here.
        try:
            self.name = str(data["name"])
            self.function = int(data["function"])
            self.default_type = data.get("type", "uint16")
            self.word_order = data.get("word_order", "big")
            self.blocks = [(int(a), int(n)) for a, n in data["blocks"]]
            fields = data["fields"]
        except (KeyError, TypeError, ValueError) as e:
            raise MeterProfileError("%s: missing or bad key: %s" % (origin, e)) from e
        if self.function not in (3, 4):
            raise MeterProfileError(
                "%s: function must be 3 (holding) or 4 (input), got %s" % (origin, quote(self.function))
            )
        if self.word_order not in ("big", "little"):
            raise MeterProfileError("%s: word_order must be 'big' or 'little'" % origin)
        for a, n in self.blocks:
            if not (0 <= a <= 0xFFFF and 1 <= n <= 125):
                raise MeterProfileError(
                    "%s: block (%d, %d) outside Modbus limits (125 registers a read)" % (origin, a, n)
                )
        missing = [f for f in REQUIRED_FIELDS if f not in fields]
        if missing:
            raise MeterProfileError("%s: fields missing: %s" % (origin, ", ".join(missing)))
        self.fields: dict[str, tuple[int, str, float]] = {}  # name -> (address, type, scale)
        for name, spec in fields.items():
            typ = spec.get("type", self.default_type)
            if typ not in _TYPES:
                raise MeterProfileError("%s: field %s has unknown type %s" % (origin, name, quote(typ)))
            addr = int(spec["addr"])
            words = _TYPES[typ][0]
            if not any(a <= addr and addr + words <= a + n for a, n in self.blocks):
                raise MeterProfileError("%s: field %s at %d is not inside a read block" % (origin, name, addr))
            self.fields[name] = (addr, typ, float(spec.get("scale", 1.0)))

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> Self:
        """A shipped profile by name (``sdm630``) or a JSON file path."""
        p = Path(name_or_path)
        if not p.suffix:
            p = PROFILE_DIR / (str(name_or_path) + ".json")
        try:
            data = json.loads(p.read_text())
        except OSError as e:
            known = ", ".join(sorted(q.stem for q in PROFILE_DIR.glob("*.json")))
            raise MeterProfileError("meter profile %s not found (shipped: %s)" % (name_or_path, known)) from e
        except json.JSONDecodeError as e:
            raise MeterProfileError("%s: not valid JSON: %s" % (p, e)) from e
        return cls(data, origin=str(p))


def decode(
    profile: MeterProfile, blocks: Mapping[int, Sequence[int]], max_current_a: float = 2000.0
) -> ThreePhaseReading:
    """Decode ``{start_addr: [registers...]}`` into a checked ThreePhaseReading."""
    values: dict[str, float] = {}
    for name, (addr, typ, scale) in profile.fields.items():
        words, fmt = _TYPES[typ]
        regs = _slice(blocks, addr, words)
        if words == 2 and profile.word_order == "little":
            regs = [regs[1], regs[0]]
        raw = struct.unpack(fmt, struct.pack(">" + "H" * words, *regs))[0]
        values[name] = raw * scale
    reading = ThreePhaseReading(
        voltages=tuple(values["voltage_" + p] for p in PHASES),
        currents=tuple(values["current_" + p] for p in PHASES),
        powers=_triple(values, "power_"),
        pfs=_triple(values, "pf_"),
        frequency=values.get("frequency"),
        current_n=values.get("current_n"),
    )
    check(reading, max_current_a)
    return reading


def check(r: ThreePhaseReading, max_current_a: float = 2000.0) -> None:
    """Raise MeterError unless every value is finite and physically plausible."""
    for v in r.voltages:
        _range("voltage", v, 0.0, 300.0)
    for i in r.currents:
        _range("current", i, 0.0, max_current_a)
    if r.pfs is not None:
        for pf in r.pfs:
            _range("power factor", pf, -1.0, 1.0)
    if r.powers is not None:
        for p in r.powers:
            _range("power", p, -1e6, 1e6)
    if r.frequency is not None:
        _range("frequency", r.frequency, 40.0, 70.0)


def _range(what: str, v: float, lo: float, hi: float) -> None:
    if not math.isfinite(v) or not lo <= v <= hi:
        raise MeterError("implausible %s %s (expected %g..%g)" % (what, quote(v), lo, hi))


def _triple(values: Mapping[str, float], prefix: str) -> tuple[float, ...] | None:
    keys = [prefix + p for p in PHASES]
    if all(k in values for k in keys):
        return tuple(values[k] for k in keys)
    return None


def _slice(blocks: Mapping[int, Sequence[int]], addr: int, words: int) -> list[int]:
    for start, regs in blocks.items():
        if start <= addr and addr + words <= start + len(regs):
            return list(regs[addr - start : addr - start + words])
    raise MeterError("register %d not in the blocks read" % addr)


class ModbusMeter:
    """Read a profile's blocks with a connected pymodbus async client (RTU or TCP)."""

    def __init__(self, profile: MeterProfile, client: ModbusBaseClient, unit: int = 1, max_current_a: float = 2000.0):
        self.profile = profile
        self.client = client
        self.unit = unit
        self.max_current_a = max_current_a
        self.reads = 0
        self.failures = 0

    async def read(self) -> ThreePhaseReading:
        from pymodbus.exceptions import ModbusException

        blocks: dict[int, list[int]] = {}
        try:
            for start, count in self.profile.blocks:
                if self.profile.function == 4:
                    rr = await self.client.read_input_registers(start, count=count, device_id=self.unit)
                else:
                    rr = await self.client.read_holding_registers(start, count=count, device_id=self.unit)
                if rr.isError():
                    raise MeterError("meter unit %d refused block %d+%d: %s" % (self.unit, start, count, rr))
                if len(rr.registers) != count:
                    raise MeterError(
                        "meter unit %d returned %d registers for block %d+%d"
                        % (self.unit, len(rr.registers), start, count)
                    )
                blocks[start] = rr.registers
            reading = decode(self.profile, blocks, self.max_current_a)
        except (ModbusException, MeterError) as e:
            self.failures += 1
            if isinstance(e, MeterError):
                raise
            raise MeterError("meter unit %d: %s" % (self.unit, e)) from e
        self.reads += 1
        return reading
