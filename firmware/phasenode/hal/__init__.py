"""Hardware abstraction: what the node needs from a board, built from its board file.

``for_board(board, wiring=None)`` returns the HAL for a validated
``phasenode.board.Board``: ``Esp32Hal`` (``phasenode.hal.esp32``) for an
``esp32``/``esp32s3`` board, ``HostHal`` (``phasenode.hal.host``) for the
``host`` board of the virtual board and of tests. The ESP32 module imports
``machine`` and is imported only here, only for a chip board, so everything
else in phasenode imports on any interpreter.

Both HALs give the same methods; each builds its resource once and returns the
same object on later calls:

- ``meter_uart()``: the PZEM-004T UART (machine.UART subset: ``any``,
  ``read``, ``readinto``, ``write``, ``flush``);
- ``bus_uart()``: the RS-485 UART; on the chip the transceiver's DE pin is
  driven around each write;
- ``relay_pins()``: the three relay outputs (A, B, C) as ``machine.Pin``-like
  objects (``value([v])``, readable back), created at the board's OPEN level;
  ``open_relays()`` drives all three open. Polarity and the safety rules are
  ``phasenode.relay.RelayController``'s job, with ``board.relays.active_high``;
- ``watchdog(timeout_ms=None)``: a started watchdog (``feed()``), default
  period from the board file. On the chip it cannot be stopped again: build
  it only when a loop will feed it;
- ``lora_spi()``, ``lora_reset()``: the radio's SPI (``transfer(buf)``, one
  chip-select cycle) and its reset pulse;
- ``led()``: the status LED pin, or None.

A method for something the board does not have raises ``HalError``.

Public: ``for_board``, ``HalError``, ``MissingCapability``.
"""

from phasecore.errors import quote
from phasenode.errors import NodeError

__all__ = ("for_board", "HalError", "MissingCapability")


class HalError(NodeError):
    """The HAL cannot give what was asked: no such capability, or the host line is not wired."""


class MissingCapability(HalError):
    """The board file has no wiring for the asked resource (``.capability`` names it)."""

    def __init__(self, board, capability):
        self.capability = capability
        super().__init__("board %s (%s) has no %s" % (quote(board.name), board.source, capability))


def for_board(board, wiring=None):
    """The HAL for ``board``; ``wiring`` maps host line names to descriptors (host boards only)."""
    if board.mcu in ("esp32", "esp32s3"):
        if wiring is not None:
            raise HalError(
                "board %s is a chip board: its wiring comes from the board file, not from the host" % quote(board.name)
            )
        from phasenode.hal.esp32 import Esp32Hal  # imports machine: only on the board

        return Esp32Hal(board)
    if board.mcu == "host":
        from phasenode.hal.host import HostHal

        return HostHal(board, wiring)
    raise HalError("no HAL for mcu %s of board %s" % (quote(board.mcu), quote(board.name)))
