"""A pyserial UART with the machine.UART subset the node's drivers use, for CPython hosts.

Lets the same driver code run on a PC against a USB-serial adapter wired to a
real PZEM-004T, or against the simulator over a pseudo-terminal
(``phasekit.sim.pzem``). The port is opened non-blocking (pyserial
``timeout=0``), as the node opens ``machine.UART(..., timeout=0)``: drivers
poll ``any()`` and never block in ``read``.

Subset: ``any()``, ``read([n])``, ``readinto(buf[, nbytes])``, ``write(buf)``,
``flush()``, ``close()``; usable as a context manager.
"""

import serial

from phasecore.errors import quote

_PARITY = {None: serial.PARITY_NONE, 0: serial.PARITY_EVEN, 1: serial.PARITY_ODD}


class HostUART:
    """``HostUART("/dev/ttyUSB0", baudrate=9600)``: 8 data bits, no parity, 1 stop bit by default."""

    def __init__(self, port, baudrate=9600, bits=8, parity=None, stop=1):
        if parity not in _PARITY:
            raise ValueError("parity must be None, 0 (even) or 1 (odd) as in machine.UART, got %s" % (quote(parity),))
        self._serial = serial.serial_for_url(
            port, baudrate=baudrate, bytesize=bits, parity=_PARITY[parity], stopbits=stop, timeout=0, write_timeout=None
        )

    def any(self):
        """Number of bytes waiting to be read."""
        return self._serial.in_waiting

    def read(self, n=None):
        """Up to ``n`` waiting bytes (all when n is None); None when nothing waits, as machine.UART."""
        data = self._serial.read(self._serial.in_waiting if n is None else n)
        return data or None

    def readinto(self, buf, nbytes=None):
        """Read waiting bytes into ``buf`` (at most ``nbytes``); the count, or None when nothing waits."""
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        data = self._serial.read(n)
        if not data:
            return None
        buf[: len(data)] = data
        return len(data)

    def write(self, buf):
        """Queue ``buf`` for sending; returns the number of bytes written."""
        return self._serial.write(buf)

    def flush(self):
        """Wait until everything written has left the port."""
        self._serial.flush()

    def close(self):
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
