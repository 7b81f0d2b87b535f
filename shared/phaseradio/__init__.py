"""phaseradio: portable LoRa radio drivers, shared by the home node and the transformer Pi.

The same radio chips sit on the node boards (ESP32, MicroPython, ``machine.SPI``)
and on the Pi's LoRa HATs (CPython, ``spidev``), so their drivers live here, in
one package both import and MicroPython 1.22+ runs unchanged. The one thing to
know: a driver talks to its chip through an object with one method,
``transfer(buf) -> bytes`` (full duplex, chip select held for the call), and
has no sleeps, clocks or pins inside; the caller's HAL wraps its SPI bus and
polls from its own loop.

- ``phaseradio.sx127x``: Semtech SX1276/77/78/79 (TTGO LoRa32, RFM95W, Dragino HAT).
- An SX1262 driver (``phaseradio.sx126x``) belongs beside it, with the same
  interface (``init``, ``send``/``tx_done``, ``receive``/``read_packet``, ``standby``).

Import the module you need; this package imports nothing and depends on no
other phasekit package.
"""
