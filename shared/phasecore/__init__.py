"""phasecore: the portable core of phasekit.

Runs unchanged on MicroPython 1.22+ (ESP32 home nodes) and CPython 3.11+ (Pis,
server, tools). Sans-IO throughout: no sockets, serial ports, files, threads,
sleeps or clocks inside; callers pass bytes, times and storage callbacks in.

Modules: cbor, crc, frame, aes, ccm, cose, kdf, replay, codes (every code
on the wire, with its name), msg, seal, balancer (a package: config,
estimates, objective, search), metrics, errors. Import the module you need
(``from phasecore import cbor``);
this package imports nothing eagerly so a node only pays for what it uses.
"""

VERSION = "0.1.0"
