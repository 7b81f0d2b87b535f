"""A serial line between two programs: two pseudo-terminals joined back to back, paced at a baud rate.

What ``socat pty pty`` does, with the line's timing: each end is a /dev/pts
path a program opens as its serial port (pyserial, or a file descriptor on
the virtual board), and a byte written at one end reaches the other one
character time (10 bits, 8N1) after the previous one, so round trips are
those of a real 9600- or 115200-baud line, not of a pty (which has no baud
rate). The PZEM simulator and the virtual board's RS-485 bus use it.

    modem = NullModem(baudrate=9600, pace=True)
    modem.start()                # in a running asyncio loop
    a, b = modem.paths           # open one end each
    ...
    await modem.stop()
"""

from __future__ import annotations

import asyncio
import os
import pty
import tty

__all__ = ("NullModem",)


class NullModem:
    """Two pty pairs joined back to back (``paths``: the two ends), delivering bytes at the line's pace."""

    def __init__(self, baudrate: int, pace: bool):
        self._byte_s = 10.0 / baudrate if pace else 0.0
        self._fds: list[int] = []
        self.paths: list[str] = []
        self._masters: list[int] = []
        for _ in range(2):
            master, slave = pty.openpty()
            tty.setraw(slave)  # no echo, no line editing before pyserial opens it
            os.set_blocking(master, False)
            self._fds += [master, slave]  # keep the slave open: no EIO when the far end closes
            self._masters.append(master)
            self.paths.append(os.ttyname(slave))
        self._tasks: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start moving bytes both ways (call inside the running loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        a, b = self._masters
        for src, dst in ((a, b), (b, a)):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            loop.add_reader(src, self._on_readable, src, queue)
            self._tasks.append(asyncio.ensure_future(self._pump(queue, dst)))

    def _on_readable(self, fd: int, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        assert self._loop is not None  # a reader of the loop start() found
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            queue.put_nowait((self._loop.time(), data))

    async def _pump(self, queue: asyncio.Queue[tuple[float, bytes]], dst: int) -> None:
        assert self._loop is not None  # a task start() made
        free_at = 0.0
        while True:
            t_in, data = await queue.get()
            # A byte reaches the far end one character time after the previous one.
            free_at = max(free_at, t_in) + len(data) * self._byte_s
            delay = free_at - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            os.write(dst, data)

    async def stop(self) -> None:
        """Stop the pumps and close both pty pairs (after ``start``)."""
        assert self._loop is not None, "NullModem.stop() before start()"
        for m in self._masters:
            self._loop.remove_reader(m)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fd in self._fds:
            os.close(fd)
