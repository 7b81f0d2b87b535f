"""What MicroPython and CPython spell differently, in one place, so every phasenode module reads the same.

The node firmware runs on MicroPython (the ESP32, the unix port of the
virtual board) and on CPython (tests, the Pi, the tools). Each name below is
MicroPython's own where it exists and a small CPython stand-in where it does
not; a module imports what it needs from here instead of repeating the
try/except::

    from phasenode.compat import asyncio, const, sleep_ms, ticks_diff, ticks_ms

- ``const``: ``micropython.const``; CPython gets the identity function.
  MicroPython's compiler folds ``NAME = const(value)`` by the bare name
  ``const``, wherever that name was imported from (MicroPython docs,
  "micropython.const"; checked on the 1.29 unix port and with mpy-cross: a
  ``_PRIVATE = const(1)`` in a module that imports ``const`` from here leaves
  no ``_PRIVATE`` global and the same bytecode). Only names defined with
  ``const`` in the module that uses them are folded: a constant imported from
  another module is an ordinary global lookup.
- ``asyncio``: the module (``uasyncio`` on MicroPython before 1.21).
- ``sleep_ms(ms)``: an awaitable that suspends the calling task for ``ms``
  milliseconds: ``asyncio.sleep_ms`` on MicroPython (no float, no allocation
  for the duration), ``asyncio.sleep(ms / 1000)`` on CPython. It never blocks
  the loop; await it.
- ``ticks_ms()``, ``ticks_us()``, ``ticks_diff(a, b)``: MicroPython's
  wrapping tick counters (``time`` module). CPython has no such counters: the
  stand-ins count from ``time.monotonic()`` and never wrap, so ``ticks_diff``
  is a plain subtraction there.

- ``urandom(n)``: ``n`` bytes from the platform's random source (``os.urandom``:
  the ESP32's hardware RNG, the host's CSPRNG), or None where there is none:
  what needs randomness then fails safe (a node without one never takes a
  clock, so it refuses every command).

Nothing here has state; importing it costs a few globals.

Public: ``const``, ``asyncio``, ``sleep_ms``, ``ticks_ms``, ``ticks_us``, ``ticks_diff``, ``urandom``.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # MicroPython before 1.21
    import uasyncio as asyncio

try:
    from time import ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython
    from time import monotonic as _monotonic

    def ticks_ms():
        return int(_monotonic() * 1000)

    def ticks_us():
        return int(_monotonic() * 1000000)

    def ticks_diff(a, b):
        return a - b


if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms
else:  # CPython

    def sleep_ms(ms):
        return asyncio.sleep(ms / 1000)


try:
    from os import urandom
except ImportError:  # a port without a random source
    urandom = None


__all__ = ("const", "asyncio", "sleep_ms", "ticks_ms", "ticks_us", "ticks_diff", "urandom")
