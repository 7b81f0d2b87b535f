"""A UART on a non-blocking file descriptor: the virtual board's serial lines.

On the virtual board the firmware runs under the MicroPython unix port, which
has no ``machine.UART`` and no pyserial. The runner
(``phasekit.sim.virtual_board``) opens each line's pseudo-terminal with
``O_NONBLOCK`` and hands the descriptor to the interpreter; this class gives
the node's drivers the machine.UART subset over it: ``any()``,
``read([n])``, ``readinto(buf[, nbytes])``, ``write(buf)``, ``flush()``.

The descriptor must be non-blocking: MicroPython's ``FileIO.read(n)`` on a
blocking descriptor waits for all ``n`` bytes, which would stall the node's
event loop. ``any()`` cannot ask the kernel how many bytes wait (no
``ioctl(FIONREAD)`` on the unix port), so it moves them into a fixed receive
buffer, like the UART driver's ring buffer on the chip, and reports that
count. Works unchanged on CPython (``open(fd, "r+b", buffering=0, closefd=False)``).
"""

from phasenode.compat import const

__all__ = ("FdUART", "fd_file")

_RXBUF = const(256)  # as the ESP32 port's default UART rxbuf; a Modbus or link frame is far smaller
_MAX_STALLS = const(1000)  # about a second of a full line before write() gives up

# A blocking sleep, unlike phasenode.compat.sleep_ms (an awaitable): write() is
# a plain method, as machine.UART.write is, so waiting for the far end to drain
# a full line stalls the loop; tolerable on the host, where it means no reader.
try:
    from time import sleep_ms as _blocking_sleep_ms
except ImportError:  # CPython
    from time import sleep as _sleep

    def _blocking_sleep_ms(ms):
        _sleep(ms / 1000)


# One file object per descriptor for the whole process. MicroPython's FileIO
# closes its descriptor when it is garbage-collected (and has no closefd=False):
# a HAL built by boot.py and dropped would close the line under the HAL that
# main.py builds next. The descriptors are the process's, handed over once by
# the runner, so one shared table of them is the honest model.
_FILES = {}


def fd_file(fd, mode="r+b"):
    """The process-wide unbuffered file object for descriptor ``fd`` (never closed by the GC)."""
    key = (fd, mode)
    f = _FILES.get(key)
    if f is None:
        try:
            f = open(fd, mode, buffering=0, closefd=False)  # CPython: the caller owns the descriptor
        except TypeError:
            f = open(fd, mode)  # MicroPython: FileIO is unbuffered and takes neither argument
        _FILES[key] = f
    return f


class FdUART:
    """``FdUART(fd, baudrate=9600)``: ``fd`` is a non-blocking descriptor of a serial line or pty."""

    def __init__(self, fd, baudrate=9600, rxbuf=_RXBUF):
        self._f = fd_file(fd)
        self.baudrate = baudrate
        self._buf = bytearray(rxbuf)
        self._mv = memoryview(self._buf)
        self._head = 0  # waiting bytes are _buf[_head:_tail]
        self._tail = 0

    def _fill(self):
        buf = self._buf
        if self._head == self._tail:
            self._head = self._tail = 0
        elif self._tail == len(buf):
            # Full at the end: move the waiting bytes to the front (byte by byte: overlapping).
            h = self._head
            n = self._tail - h
            for i in range(n):
                buf[i] = buf[h + i]
            self._head, self._tail = 0, n
        if self._tail == len(buf):
            return  # receive buffer full: the kernel keeps the rest, as a UART FIFO would
        try:
            got = self._f.readinto(self._mv[self._tail :])
        except OSError as e:
            # EAGAIN (11) on a non-blocking descriptor with nothing to read; EIO (5) when the
            # far end of a pty pair is closed: a line with no peer is a silent line.
            if e.args and e.args[0] in (5, 11):
                return
            raise
        if got:
            self._tail += got

    def any(self):
        """Bytes waiting to be read."""
        self._fill()
        return self._tail - self._head

    def readinto(self, buf, nbytes=None):
        """Move waiting bytes into ``buf`` (at most ``nbytes``); the count, or None when nothing waits."""
        self._fill()
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        h = self._head
        n = min(n, self._tail - h)
        if n <= 0:
            return None
        buf[:n] = self._mv[h : h + n]
        self._head = h + n
        return n

    def read(self, n=None):
        """Up to ``n`` waiting bytes (all when None) as bytes, or None when nothing waits."""
        waiting = self.any()
        if n is None or n > waiting:
            n = waiting
        if not n:
            return None
        out = bytearray(n)
        self.readinto(out)
        return bytes(out)

    def write(self, buf):
        """Write all of ``buf``; returns its length. Raises OSError(ETIMEDOUT) if the line stays full."""
        mv = memoryview(buf)
        done = 0
        stalls = 0
        while done < len(mv):
            try:
                n = self._f.write(mv[done:])
            except OSError as e:
                if not (e.args and e.args[0] == 11):  # EAGAIN: the line is full for now
                    raise
                n = 0
            if n:
                done += n
                stalls = 0
            else:
                stalls += 1
                if stalls > _MAX_STALLS:
                    raise OSError(110, "serial line full: nobody reads the far end")  # ETIMEDOUT
                _blocking_sleep_ms(1)
        return done

    def flush(self):
        """Nothing to wait for: a pty has no shift register (the runner paces the line)."""

    def close(self):
        """Nothing to release: the descriptor belongs to whoever opened it (the runner)."""
