"""The HAL on an ESP32 or ESP32-S3 under MicroPython: machine.UART, Pin, SPI, WDT.

Imported only by ``phasenode.hal.for_board`` for a chip board, because it
imports ``machine``. Every pin comes from the board file.

Why the details are as they are:
- Relay outputs are created with ``Pin(n, Pin.OUT, value=open_level)``: the
  ESP32 port sets the output level before it switches the pad to output, so a
  relay never sees a wrong level, even for a microsecond, while boot takes
  the pin (until then it is a floating input and the relay board's own pull
  keeps an active-low channel off).
- The radio's chip select is a plain GPIO held high between transfers; one
  ``transfer()`` is one chip-select cycle, as the SX127x/SX126x expect
  (SX1276 datasheet 4.3, SX1262 datasheet 8.2). SPI mode 0, MSB first.
- The RS-485 driver-enable handling is in ``phasenode.hal.uart_esp32``.

Public: ``Esp32Hal``, ``Esp32SPI``.
"""

import time

import machine
from machine import SPI, WDT, Pin

from phasenode.hal import MissingCapability
from phasenode.hal.uart_esp32 import Esp32UART

__all__ = ("Esp32Hal", "Esp32SPI")

# SX1276 SCK is specified to 10 MHz, SX1262 to 16 MHz; 5 MHz leaves margin for
# jumper wires on a breadboard and still moves a 40-byte frame in under 0.1 ms.
SPI_HZ = 5000000


class Esp32SPI:
    """A radio on ``machine.SPI`` with its chip select: ``transfer(buf)`` returns the bytes clocked in.

    Register accesses (2 bytes) reuse one buffer: the result is valid until the next call.
    """

    def __init__(self, lora, baudrate=SPI_HZ):
        self._spi = SPI(
            lora.bus,
            baudrate=baudrate,
            polarity=0,
            phase=0,
            bits=8,
            firstbit=SPI.MSB,
            sck=Pin(lora.sck),
            mosi=Pin(lora.mosi),
            miso=Pin(lora.miso),
        )
        self._cs = Pin(lora.cs, Pin.OUT, value=1)
        self._out2 = bytearray(2)

    def transfer(self, buf):
        out = self._out2 if len(buf) == 2 else bytearray(len(buf))
        cs = self._cs
        cs.value(0)
        try:
            self._spi.write_readinto(buf, out)
        finally:
            cs.value(1)
        return out


class Esp32Hal:
    """The HAL for ``board`` (a validated Board with mcu esp32 or esp32s3)."""

    def __init__(self, board):
        self.board = board
        self._meter = None
        self._bus = None
        self._relays = None
        self._cond = None
        self._wdt = None
        self._spi = None
        self._reset_pin = None
        self._led = None

    def meter_uart(self):
        if self._meter is None:
            spec = self.board.meter_uart
            if spec is None:
                raise MissingCapability(self.board, "meter UART (uarts.meter)")
            self._meter = Esp32UART.from_board(spec)
        return self._meter

    def bus_uart(self):
        if self._bus is None:
            spec = self.board.bus_uart
            if spec is None:
                raise MissingCapability(self.board, "RS-485 bus UART (uarts.bus)")
            self._bus = Esp32UART.from_board(spec)
        return self._bus

    def relay_pins(self):
        if self._relays is None:
            spec = self.board.relays
            if spec is None:
                raise MissingCapability(self.board, "relays")
            level = spec.open_level
            self._relays = [Pin(n, Pin.OUT, value=level) for n in spec.pins]
        return self._relays

    def conducting(self):
        """A solid-state board's conduction report: bit i set while phase i conducts."""
        if self._cond is None:
            spec = self.board.relays
            if spec is None or spec.conducting is None:
                raise MissingCapability(self.board, "conduction sense (relays.conducting)")
            self._cond = [Pin(n, Pin.IN) for n in spec.conducting]
        c = self._cond
        return (1 if c[0].value() else 0) | (2 if c[1].value() else 0) | (4 if c[2].value() else 0)

    def on_zero_cross(self, handler):
        """Call ``handler()`` at every edge of a solid-state board's zero-cross detector.

        A soft IRQ (scheduled): the handler saves state to flash when a
        transfer completes, which a hard IRQ may not. A late call is safe:
        the controller aborts a transfer whose half-cycle it could not keep.
        """
        spec = self.board.relays
        if spec is None or spec.zero_cross is None:
            raise MissingCapability(self.board, "zero-cross detector (relays.zero_cross)")
        pin = Pin(spec.zero_cross, Pin.IN)
        # Both edges: the detector's output changes at each zero crossing of the mains.
        pin.irq(handler=lambda _p: handler(), trigger=Pin.IRQ_RISING | Pin.IRQ_FALLING)
        return pin

    def open_relays(self):
        """Drive every relay output to its open level (the pins are created at it already)."""
        pins = self.relay_pins()
        level = self.board.relays.open_level
        for p in pins:
            p.value(level)

    def watchdog(self, timeout_ms=None):
        if self._wdt is None:
            self._wdt = WDT(timeout=timeout_ms or self.board.watchdog_ms)
        return self._wdt

    def lora_spi(self):
        if self._spi is None:
            if self.board.lora is None:
                raise MissingCapability(self.board, "LoRa radio (lora)")
            self._spi = Esp32SPI(self.board.lora)
        return self._spi

    def lora_reset(self):
        """Pulse the radio's NRESET: low 100 us, then 5 ms to boot (SX1276 datasheet 7.2.2; SX1262 8.1)."""
        lora = self.board.lora
        if lora is None:
            raise MissingCapability(self.board, "LoRa radio (lora)")
        if self._reset_pin is None:
            self._reset_pin = Pin(lora.reset, Pin.OUT, value=1)
        self._reset_pin.value(0)
        time.sleep_us(100)
        self._reset_pin.value(1)
        time.sleep_ms(5)

    def lora_irq(self):
        """The radio's DIO0 (SX127x) / DIO1 (SX126x) line as an input Pin."""
        if self.board.lora is None:
            raise MissingCapability(self.board, "LoRa radio (lora)")
        return Pin(self.board.lora.irq, Pin.IN)

    def led(self):
        if self._led is None and self.board.led is not None:
            self._led = Pin(self.board.led, Pin.OUT, value=0)
        return self._led

    def reset(self):
        """Hard reset of the chip (boot.py runs again and opens the relays first)."""
        machine.reset()
