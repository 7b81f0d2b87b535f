"""The HAL on a host: the virtual board (MicroPython unix port) and in-process tests (CPython).

A ``host`` board file names its lines (``"meter"``, ``"bus"``, ``"relay_a"``
...) instead of GPIOs; the *wiring* says what each line is connected to:

- a UART line (the board's ``uarts.X.id``): a non-blocking file descriptor
  (int, ``FdUART``: what the virtual-board runner passes), a device path
  (str, pyserial ``HostUART``, CPython only), or any object with the
  machine.UART subset (in-process tests);
- ``"watchdog"``: a non-blocking descriptor to which the watchdog reports
  (the runner resets the firmware when it starves), optional;
- ``"lora"``: an object with ``transfer(buf) -> bytes``, e.g.
  ``phasekit.sim.sx127x.SimSX1276`` (CPython), optional;
- ``"reset"``: a callable that reboots the node (in-process tests); without
  it ``reset()`` writes ``!`` on the watchdog line and waits: the
  virtual-board runner kills the firmware and boots it again, as
  ``machine.reset()`` reboots a chip;
- ``"relays"``: the simulated relay board (``phasenode.hal.pin_host``). The
  HAL builds a ``RelayBoard`` with the board file's polarity and line names
  (``hal.relay_board``); wire ``"relays"`` to a ``RelayBoard`` to use your
  own, or to a non-blocking descriptor to which every contact change is
  reported as ``R<mask>\n`` (bit i = phase i+1 closed): how the virtual-board
  runner, outside the interpreter, sees the relays.

- ``"sense"``: true when the simulated relay board has a sense of the house
  side (``RelayBoard.live``): ``relay_sense()`` then gives the relay
  controller its ``sense_open`` hook, which catches a welded contact
  (docs/relay-safety.md). Optional, default none.

On the virtual board the runner passes the wiring as JSON in the environment
variable ``PHASENODE_WIRING`` (``wiring_from_env()``): the firmware's own code
and files stay those of a real board.

The clock. A simulated site (``phasekit site run``, docs/site.md) runs every
tier on one site clock, faster than the wall. The runner passes it in
``PHASENODE_CLOCK`` as JSON ``{"speed": S, "epoch_s": E, "start_s": W}``
(the same numbers as the Pi's and the server's ``[clock]`` table); this module
is the only firmware code that reads it. ``clock()`` returns the node's tick
counter and its speed: ``ticks_ms`` and 1 without the variable, else
milliseconds of site time (wall milliseconds since the HAL was built, times
S). A node has no calendar of its own: its Unix time comes from the Pi's
heartbeat, in site time on a simulated site, so only S matters here.

Public: ``HostHal``, ``HostWDT``, ``HostSPI``, ``WatchdogStarved``,
``wiring_from_env``, ``clock_from_env``, ``WIRING_ENV``, ``CLOCK_ENV``.
"""

import json
import os

from phasecore.errors import quote
from phasenode.compat import ticks_diff, ticks_ms
from phasenode.hal import HalError, MissingCapability
from phasenode.hal.uart_fd import fd_file

__all__ = (
    "HostHal",
    "HostWDT",
    "HostSPI",
    "WatchdogStarved",
    "wiring_from_env",
    "clock_from_env",
    "WIRING_ENV",
    "CLOCK_ENV",
)

WIRING_ENV = "PHASENODE_WIRING"
CLOCK_ENV = "PHASENODE_CLOCK"
_SPEED_MAX = 10000


def clock_from_env():
    """The site clock's speed from ``PHASENODE_CLOCK`` (1 when unset); HalError if it is malformed."""
    text = os.getenv(CLOCK_ENV)
    if not text:
        return 1
    try:
        obj = json.loads(text)
    except ValueError:
        raise HalError("host board: %s is not valid JSON" % CLOCK_ENV)
    speed = obj.get("speed") if isinstance(obj, dict) else None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 1 <= speed <= _SPEED_MAX:
        raise HalError("host board: %s speed must be a number 1..%d, got %s" % (CLOCK_ENV, _SPEED_MAX, quote(speed)))
    return speed


class _SiteTicks:
    """Milliseconds of site time: wall ms since construction times ``speed`` (host boards only).

    No wrap to care about: the unix port's ticks period is 2**62 ms, CPython's stand-in has none.
    """

    def __init__(self, speed):
        self.speed = speed
        self._t0 = ticks_ms()

    def __call__(self):
        return int(ticks_diff(ticks_ms(), self._t0) * self.speed)


class WatchdogStarved(HalError):
    """The host watchdog was not fed within its period (a chip would have reset)."""


def wiring_from_env():
    """The wiring the virtual-board runner put in ``PHASENODE_WIRING``; HalError if absent or bad."""
    text = os.getenv(WIRING_ENV)
    if not text:
        raise HalError("host board: no wiring (%s is not set): start it with `phasekit board run`" % WIRING_ENV)
    try:
        wiring = json.loads(text)
    except ValueError:
        raise HalError("host board: %s is not valid JSON" % WIRING_ENV)
    if not isinstance(wiring, dict):
        raise HalError("host board: %s must be a JSON object" % WIRING_ENV)
    return wiring


class HostWDT:
    """``machine.WDT`` on a host: counts feeds, measures the longest gap, reports starvation.

    ``ticks_ms`` is the clock (default: the interpreter's); ``fd``, when given,
    is a non-blocking descriptor that gets ``W<timeout_ms>\\n`` once (armed)
    and one ``.`` per feed, so the virtual-board runner can reset the firmware
    like the chip's watchdog would.
    """

    def __init__(self, timeout_ms, fd=None, ticks=None):
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise HalError("watchdog timeout must be a positive number of ms, got %s" % (quote(timeout_ms),))
        self.timeout_ms = timeout_ms
        self._ticks = ticks or ticks_ms
        self.feeds = 0
        self.max_gap_ms = 0
        self.last_ms = self._ticks()
        self._out = None
        if fd is not None:
            self._out = fd_file(fd, "wb")
            self._send(("W%d\n" % timeout_ms).encode())

    def _send(self, b):
        try:
            self._out.write(b)
        except OSError:
            pass  # EAGAIN: the runner is behind; the next feed tells it again

    def feed(self):
        now = self._ticks()
        gap = ticks_diff(now, self.last_ms)
        if gap > self.max_gap_ms:
            self.max_gap_ms = gap
        self.last_ms = now
        self.feeds += 1
        if self._out is not None:
            self._send(b".")

    def starved(self):
        """True when the last feed is older than the period."""
        return ticks_diff(self._ticks(), self.last_ms) > self.timeout_ms

    def check(self):
        """Raise ``WatchdogStarved`` when starved (what a test asserts instead of a reset)."""
        age = ticks_diff(self._ticks(), self.last_ms)
        if age > self.timeout_ms:
            raise WatchdogStarved(
                "watchdog not fed for %d ms (period %d ms, %d feeds so far)" % (age, self.timeout_ms, self.feeds)
            )


class HostSPI:
    """A radio's SPI on a host: each ``transfer(buf)`` is one chip-select cycle on ``device``.

    ``device.transfer(bytes) -> bytes`` is a simulated chip (``SimSX1276``).
    Counts ``transfers`` and ``bytes`` and checks that the device answers one
    byte per byte clocked out, as a real SPI exchange does.
    """

    def __init__(self, device):
        if not hasattr(device, "transfer"):
            raise HalError("host SPI device must have transfer(buf), got %s" % (quote(device),))
        self._dev = device
        self.transfers = 0
        self.bytes = 0

    def transfer(self, buf):
        out = self._dev.transfer(bytes(buf))
        if len(out) != len(buf):
            raise HalError("SPI device answered %d bytes to a %d-byte transfer" % (len(out), len(buf)))
        self.transfers += 1
        self.bytes += len(buf)
        return out


class _ReportingPin:
    """A relay-board pin that reports the board's contacts after every write (virtual board)."""

    OUT = 1
    IN = 0

    def __init__(self, pin, board, out):
        self._pin = pin
        self._board = board
        self._out = out

    def value(self, v=None):
        if v is None:
            return self._pin.value()
        self._pin.value(v)
        try:
            self._out.write(("R%d\n" % self._board.closed_mask()).encode())
        except OSError:
            pass  # EAGAIN: the runner is behind; the next write reports the state again
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class HostHal:
    """The HAL for a ``host`` board; ``wiring`` as in the module docstring (default: from the env)."""

    def __init__(self, board, wiring=None):
        if not board.is_host:
            raise HalError("HostHal needs a host board, %s is %s" % (quote(board.name), board.mcu))
        self.board = board
        self.wiring = wiring_from_env() if wiring is None else wiring
        self._uarts = {}
        self._relays = None
        self.relay_board = None
        self._wdt = None
        self._spi = None
        self._speed = clock_from_env()

    def clock(self):
        """``(ticks, speed)``: the node's tick counter (ms) and how many of its ms pass per wall ms."""
        if self._speed == 1:
            return ticks_ms, 1
        return _SiteTicks(self._speed), self._speed

    def relay_sense(self):
        """The relay controller's ``sense_open`` (True while the house side is dead), or None without a sense."""
        if not self.wiring.get("sense"):
            return None
        hal = self

        def sense_open():
            rb = hal.relay_board
            return rb is not None and not rb.live()

        return sense_open

    def _line(self, name, what):
        if name not in self.wiring or self.wiring[name] is None:
            raise HalError("host board %s: line %s (%s) is not wired" % (quote(self.board.name), quote(name), what))
        return self.wiring[name]

    def _uart(self, spec, what):
        u = self._uarts.get(spec.id)
        if u is None:
            line = self._line(spec.id, what)
            if isinstance(line, int) and not isinstance(line, bool):
                from phasenode.hal.uart_fd import FdUART

                u = FdUART(line, spec.baud)
            elif isinstance(line, str):
                from phasenode.hal.uart_host import HostUART  # pyserial: CPython only

                u = HostUART(line, baudrate=spec.baud)
            elif hasattr(line, "readinto") and hasattr(line, "write"):
                u = line
            else:
                raise HalError(
                    "host board %s: line %s wired to %s, not a descriptor, path or UART"
                    % (quote(self.board.name), quote(spec.id), quote(line))
                )
            self._uarts[spec.id] = u
        return u

    def meter_uart(self):
        if self.board.meter_uart is None:
            raise MissingCapability(self.board, "meter UART (uarts.meter)")
        return self._uart(self.board.meter_uart, "meter UART")

    def bus_uart(self):
        if self.board.bus_uart is None:
            raise MissingCapability(self.board, "RS-485 bus UART (uarts.bus)")
        return self._uart(self.board.bus_uart, "RS-485 bus UART")

    def relay_pins(self):
        if self._relays is None:
            spec = self.board.relays
            if spec is None:
                raise MissingCapability(self.board, "relays")
            line = self.wiring.get("relays")
            if hasattr(line, "Pin") and hasattr(line, "closed_mask"):
                rb = line
            else:
                from phasenode.hal.pin_host import RelayBoard

                rb = RelayBoard(active_high=spec.active_high, ids=spec.pins)
            level = spec.open_level
            pins = [rb.Pin(pid, rb.Pin.OUT, value=level) for pid in spec.pins]
            if isinstance(line, int) and not isinstance(line, bool):
                out = fd_file(line, "wb")
                pins = [_ReportingPin(p, rb, out) for p in pins]
                pins[0].value(level)  # report the initial (all open) state
            self.relay_board = rb
            self._relays = pins
        return self._relays

    def open_relays(self):
        """Drive every relay output to its open level."""
        pins = self.relay_pins()
        level = self.board.relays.open_level
        for p in pins:
            p.value(level)

    def watchdog(self, timeout_ms=None):
        if self._wdt is None:
            fd = self.wiring.get("watchdog")
            self._wdt = HostWDT(timeout_ms or self.board.watchdog_ms, fd=fd)
        return self._wdt

    def lora_spi(self):
        if self.board.lora is None:
            raise MissingCapability(self.board, "LoRa radio (lora)")
        if self._spi is None:
            self._spi = HostSPI(self._line("lora", "LoRa radio SPI"))
        return self._spi

    def lora_reset(self):
        """Reset the simulated radio when it models NRESET (``reset()``); a no-op otherwise."""
        dev = self._line("lora", "LoRa radio SPI")
        if hasattr(dev, "reset"):
            dev.reset()

    def led(self):
        return None  # the virtual board has no status LED to look at

    def reset(self):
        """Reboot: the wiring's ``reset`` callable, else ask the runner on the watchdog line (does not return)."""
        fn = self.wiring.get("reset")
        if fn is not None:
            fn()
            return
        fd = self.wiring.get("watchdog")
        if fd is None:
            raise HalError("host board %s: no reset wired (no reset callable, no watchdog line)" % self.board.name)
        fd_file(fd, "wb").write(b"!")
        import time

        while True:  # the runner kills this process; a reset never returns
            time.sleep(0.05)
