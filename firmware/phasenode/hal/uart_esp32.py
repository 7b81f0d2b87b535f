"""machine.UART on the ESP32, with an optional RS-485 driver-enable pin.

Stock MicroPython has no RS-485 mode on the ESP32 (DESIGN.md, portability
notes), so a MAX485-style transceiver's DE/RE pin (tied together: high =
transmit, low = receive) is raised around ``write()`` and dropped only once
``flush()`` has waited for the bytes to leave, plus one character time: on
some ports flush() returns while the last character is still shifting out
(micropython commit 8804993, esp8266 machine_uart). Dropping DE early cuts
the frame's CRC; dropping it late makes us miss the start of the reply.

The PZEM-004T's TTL UART needs no DE pin; the RS-485 node bus does. The
UART is opened non-blocking (``timeout=0``): drivers poll ``any()``.
Runs only on the device (imports ``machine``).
"""

import time

from machine import UART, Pin


class Esp32UART:
    """``Esp32UART(1, 9600, tx=26, rx=27)``, or with ``de_pin=4`` for an RS-485 transceiver."""

    def __init__(self, uart_id, baudrate=9600, tx=None, rx=None, de_pin=None, rxbuf=256):
        kw = {"baudrate": baudrate, "bits": 8, "parity": None, "stop": 1, "timeout": 0, "rxbuf": rxbuf}
        if tx is not None:
            kw["tx"] = tx
        if rx is not None:
            kw["rx"] = rx
        self._uart = UART(uart_id, **kw)
        self._de = Pin(de_pin, Pin.OUT, value=0) if de_pin is not None else None
        # One character of 10 bits (8N1), rounded up, in microseconds.
        self._char_us = (10 * 1000000 + baudrate - 1) // baudrate

    @classmethod
    def from_board(cls, spec):
        """From a board UART: a ``phasenode.board.UartSpec`` (``board.meter_uart``), or the
        file's raw entry, e.g. ``{"id": 1, "tx": 26, "rx": 27, "baud": 9600}``."""
        if isinstance(spec, dict):
            return cls(spec["id"], spec["baud"], tx=spec.get("tx"), rx=spec.get("rx"), de_pin=spec.get("de_pin"))
        return cls(spec.id, spec.baud, tx=spec.tx, rx=spec.rx, de_pin=spec.de_pin)

    def any(self):
        return self._uart.any()

    def read(self, n=None):
        return self._uart.read() if n is None else self._uart.read(n)

    def readinto(self, buf, nbytes=None):
        return self._uart.readinto(buf) if nbytes is None else self._uart.readinto(buf, nbytes)

    def write(self, buf):
        de = self._de
        if de is None:
            return self._uart.write(buf)
        de.value(1)
        try:
            n = self._uart.write(buf)
            self._uart.flush()
            time.sleep_us(self._char_us)
        finally:
            de.value(0)
        return n

    def flush(self):
        self._uart.flush()
