"""Installer tools for the PZEM-004T v3 on a serial port: find meters, set an address, reset energy, set the alarm.

``phasekit meter scan|set-address|reset-energy|set-alarm --port PORT`` run
the node's own driver (``phasenode.drivers.pzem`` over the Modbus RTU codec
``phasenode.drivers.modbus_rtu``) on a PC, through pyserial
(``phasenode.hal.uart_host``): a USB-TTL adapter wired to the meter's TTL
side, 9600 8N1, as the node would be (docs/hardware/pzem004t.md). The same
bytes the node sends; nothing here needs the node.

The one thing to know: every PZEM answers the general address 0xF8, so an
address is set with exactly **one** meter on the line. ``set_address``
checks that first: it reads the address through 0xF8 and refuses when
nothing sensible answers (no meter, or several answering at once, which
garbles the reply); then it writes, and reads back at the new address.

Public: ``scan``, ``set_address``, ``reset_energy``, ``set_alarm``, ``read``,
``Found``, ``MeterToolError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from phasekit.errors import PhasekitError

__all__ = ("scan", "set_address", "reset_energy", "set_alarm", "read", "Found", "MeterToolError", "GENERAL")

GENERAL = 0xF8


class MeterToolError(PhasekitError):
    """A meter did not answer, answered wrongly, or the line is not as the step needs (says which)."""


class Found:
    """A meter that answered: its ``address``, a ``reading`` (``phasenode.drivers.pzem.Measurement``, None when
    the values were implausible) and its power ``alarm_w`` threshold."""

    def __init__(self, address: int, reading: Any, alarm_w: int | None):
        self.address = address
        self.reading = reading
        self.alarm_w = alarm_w

    def describe(self) -> str:
        m = self.reading
        alarm = "" if self.alarm_w is None else ", alarm at %d W" % self.alarm_w
        if m is None:
            return "address %3d: answers, but gave no plausible reading%s" % (self.address, alarm)
        return "address %3d: %.1f V, %.3f A, %.1f W, %d Wh, %.1f Hz, pf %.2f%s%s" % (
            self.address,
            m.voltage,
            m.current,
            m.power,
            m.energy_wh,
            m.frequency,
            m.power_factor,
            " ALARM" if m.alarm else "",
            alarm,
        )


def _uart(port: str, baud: int) -> Any:
    from phasenode.hal.uart_host import HostUART

    try:
        return HostUART(port, baudrate=baud)
    except Exception as e:  # noqa: BLE001 - pyserial raises its own and OSError: one clear message
        raise MeterToolError("cannot open %s: %s" % (port, e)) from None


def _run(port: str, baud: int, job: Callable[[Any], Any]) -> Any:
    uart = _uart(port, baud)
    try:
        return asyncio.run(job(uart))
    finally:
        uart.close()


async def _probe(uart: Any, address: int, timeout_ms: int, retries: int) -> Found | None:
    from phasenode.drivers.pzem import METER_ERRORS, Pzem

    meter = Pzem(uart, address=address, timeout_ms=timeout_ms, retries=retries)
    try:
        await meter.read_address()  # presence: a register that cannot be implausible
    except METER_ERRORS:
        return None
    try:
        reading = await meter.read()
    except METER_ERRORS:
        reading = None
    try:
        alarm: int | None = await meter.read_alarm_threshold()
    except METER_ERRORS:
        alarm = None
    return Found(address, reading, alarm)


def scan(
    port: str,
    first: int = 1,
    last: int = 247,
    timeout_ms: int = 100,
    baud: int = 9600,
    progress: Callable[[int], object] | None = None,
) -> tuple[int | None, list[Found]]:
    """``(address through 0xF8 or None, meters found at first..last)``.

    The general address answers with the meter's own address when exactly one
    meter is on the line (None: no meter, or several).
    """
    if not 1 <= first <= last <= 247:
        raise MeterToolError("scan range %d..%d: addresses are 1..247" % (first, last))

    async def job(uart: Any) -> tuple[int | None, list[Found]]:
        from phasenode.drivers.pzem import METER_ERRORS, Pzem

        try:
            alone: int | None = await Pzem(uart, address=GENERAL, timeout_ms=timeout_ms * 2, retries=1).read_address()
        except METER_ERRORS:
            alone = None
        found = []
        for a in range(first, last + 1):
            if progress is not None:
                progress(a)
            f = await _probe(uart, a, timeout_ms, 0)
            if f is not None:
                found.append(f)
        return alone, found

    result: tuple[int | None, list[Found]] = _run(port, baud, job)
    return result


def set_address(port: str, new: int, baud: int = 9600, timeout_ms: int = 200) -> Found:
    """Give the one meter on the line address ``new`` (through 0xF8) and read it back there."""
    if not 1 <= new <= 247:
        raise MeterToolError("address %d: a PZEM address is 1..247" % new)

    async def job(uart: Any) -> Found:
        from phasenode.drivers.pzem import METER_ERRORS, Pzem

        general = Pzem(uart, address=GENERAL, timeout_ms=timeout_ms, retries=2)
        try:
            old = await general.read_address()
        except METER_ERRORS as e:
            raise MeterToolError(
                "no usable answer at the general address 0xF8 (%s): connect exactly one meter, powered from mains, "
                "and try again (with several meters connected they all answer at once)" % e
            ) from None
        try:
            await general.set_address(new)
        except METER_ERRORS as e:
            raise MeterToolError("the meter (address %d) refused the new address %d: %s" % (old, new, e)) from None
        f = await _probe(uart, new, timeout_ms, 2)
        if f is None:
            raise MeterToolError("the meter took address %d but does not answer there" % new)
        return f

    result: Found = _run(port, baud, job)
    return result


def reset_energy(port: str, address: int, baud: int = 9600, timeout_ms: int = 200) -> Found:
    """Zero the energy counter of the meter at ``address`` (0xF8: the one meter on the line)."""

    async def job(uart: Any) -> Found:
        from phasenode.drivers.pzem import METER_ERRORS, Pzem

        try:
            await Pzem(uart, address=address, timeout_ms=timeout_ms, retries=2).reset_energy()
        except METER_ERRORS as e:
            raise MeterToolError("meter %d: energy not reset: %s" % (address, e)) from None
        f = await _probe(uart, address, timeout_ms, 2)
        if f is None:
            raise MeterToolError("meter %d reset its energy but does not answer a reading" % address)
        return f

    result: Found = _run(port, baud, job)
    return result


def set_alarm(port: str, address: int, watts: int, baud: int = 9600, timeout_ms: int = 200) -> Found:
    """Set the power alarm threshold (0..25000 W) of the meter at ``address`` and read it back."""
    if not 0 <= watts <= 25000:
        raise MeterToolError("alarm threshold %d W: the PZEM takes 0..25000 W" % watts)

    async def job(uart: Any) -> Found:
        from phasenode.drivers.pzem import METER_ERRORS, Pzem

        try:
            await Pzem(uart, address=address, timeout_ms=timeout_ms, retries=2).set_alarm_threshold(watts)
        except METER_ERRORS as e:
            raise MeterToolError("meter %d: alarm threshold not set: %s" % (address, e)) from None
        f = await _probe(uart, address, timeout_ms, 2)
        if f is None or f.alarm_w != watts:
            raise MeterToolError("meter %d: the threshold reads back as %r" % (address, f and f.alarm_w))
        return f

    result: Found = _run(port, baud, job)
    return result


def read(port: str, address: int, baud: int = 9600, timeout_ms: int = 200) -> Found:
    """One reading (and the alarm threshold) of the meter at ``address``."""

    async def job(uart: Any) -> Found:
        f = await _probe(uart, address, timeout_ms, 2)
        if f is None:
            raise MeterToolError("no meter answers at address %d" % address)
        return f

    result: Found = _run(port, baud, job)
    return result
