"""One multi-drop RS-485 line shared by processes and in-process nodes, carrying the real bytes at its baud rate.

A real bus is one pair of wires: every transceiver hears every byte any other
one drives, a byte takes 10 bit times (8N1), and two that drive at once garble
each other. ``Rs485Hub`` is that line in one asyncio loop, with endpoints of
two kinds:

- ``add_pty(name)``: a pseudo-terminal for another process (the transformer
  Pi's ``[bus] port``, a virtual board's bus UART); returns the path that
  process opens. The hub reads the pty's other end;
- ``add_uart(name, on_rx)``: an object with the ``machine.UART`` subset
  (``any``, ``readinto``, ``read``, ``write``, ``flush``) for a node in this
  process; ``on_rx()`` is called after bytes were delivered to it, so a node
  can answer at once (``Rs485Link.service``) instead of polling its UART.

Timing: what an endpoint writes goes on the line after its earlier bytes
(its UART shifts them out one after another) and reaches every other endpoint
in pieces of ``chunk`` bytes, each when its last bit has arrived. A
transmission that starts while another endpoint's is still on the line is a
collision: both sides' overlapping pieces arrive garbled (every byte inverted),
counted in ``stats["collisions"]``, and the frames fail their CRC at every
receiver, as on a real bus. A sender does not hear itself (transceivers with
the receiver disabled while driving).

Faults: ``endpoint.connected = False`` cuts a drop from the line (a broken
stub or a dead transceiver): it neither hears nor is heard.

``monitor(frame, sender)`` (optional) sees every CRC-valid frame on the line
once (``phasecore.frame``), for accounting.
"""

from __future__ import annotations

import asyncio
import os
import pty
import tty
from collections.abc import Callable

from phasecore import frame as _frame

__all__ = ("Rs485Hub", "Endpoint", "HubUart")

_READ_MAX = 4096


class Endpoint:
    """One drop on the line: ``name``, ``connected``, counters ``bytes_tx``, ``bytes_rx``."""

    def __init__(self, hub: Rs485Hub, name: str):
        self.hub = hub
        self.name = name
        self.connected = True
        self.bytes_tx = 0
        self.bytes_rx = 0
        self.tx_free_at = 0.0  # when this endpoint's UART has shifted out what it was given

    def _deliver(self, data: bytes) -> None:
        raise NotImplementedError


class HubUart(Endpoint):
    """An in-process node's bus UART (``any``, ``readinto``, ``read``, ``write``, ``flush``)."""

    def __init__(self, hub: Rs485Hub, name: str, on_rx: Callable[[], object] | None = None):
        super().__init__(hub, name)
        self._rx = bytearray()
        self.on_rx = on_rx

    def any(self) -> int:
        return len(self._rx)

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        n = len(self._rx) if nbytes is None else min(nbytes, len(self._rx))
        n = min(n, len(buf))
        if n <= 0:
            return None
        buf[:n] = self._rx[:n]
        del self._rx[:n]
        return n

    def read(self, nbytes: int | None = None) -> bytes | None:
        n = len(self._rx) if nbytes is None else min(nbytes, len(self._rx))
        if n <= 0:
            return None
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        self.hub._transmit(self, data)
        return len(data)

    def flush(self) -> None:
        pass

    def _deliver(self, data: bytes) -> None:
        self._rx += data
        if self.on_rx is not None:
            self.on_rx()


class _PtyEnd(Endpoint):
    """The hub's end of a pty whose other end another process opens as its serial port."""

    def __init__(self, hub: Rs485Hub, name: str):
        super().__init__(hub, name)
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)  # raw before the other process opens it: no echo, no line discipline
        os.set_blocking(master, False)
        self.master = master
        self.slave = slave  # kept open: the far end may close and reopen (a restarted Pi) without EIO here
        self.path = os.ttyname(slave)
        self.dropped = 0

    def _deliver(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            self.dropped += len(data)  # nobody reads the far end (a Pi that is down): the bytes are lost

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, _READ_MAX)
        except (BlockingIOError, OSError):
            return
        if data:
            self.hub._transmit(self, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Rs485Hub:
    """The line: ``add_pty``/``add_uart`` endpoints, ``start()`` in a running loop, ``stop()``."""

    def __init__(
        self, baud: int = 115200, chunk: int = 16, monitor: Callable[[_frame.Frame, str], object] | None = None
    ):
        if baud <= 0 or chunk <= 0:
            raise ValueError("baud and chunk must be positive")
        self.baud = baud
        self.byte_s = 10.0 / baud
        self.chunk = chunk
        self.monitor = monitor
        self.endpoints: list[Endpoint] = []
        self.stats = {"bytes": 0, "chunks": 0, "collisions": 0, "frames": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy_until = 0.0
        self._busy_by: Endpoint | None = None
        self._decoder = _frame.Decoder()
        self._last_sender = ""

    def add_pty(self, name: str) -> str:
        """A drop for another process; returns the pty path it opens as its serial port."""
        ep = _PtyEnd(self, name)
        self.endpoints.append(ep)
        if self._loop is not None:
            self._loop.add_reader(ep.master, ep._on_readable)
        return ep.path

    def add_uart(self, name: str, on_rx: Callable[[], object] | None = None) -> HubUart:
        """A drop for a node in this process: its bus UART."""
        ep = HubUart(self, name, on_rx)
        self.endpoints.append(ep)
        return ep

    def endpoint(self, name: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def start(self) -> None:
        """Start reading the pty drops (inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        for ep in self.endpoints:
            if isinstance(ep, _PtyEnd):
                self._loop.add_reader(ep.master, ep._on_readable)

    def stop(self) -> None:
        """Stop reading and close the ptys."""
        for ep in self.endpoints:
            if isinstance(ep, _PtyEnd):
                if self._loop is not None:
                    self._loop.remove_reader(ep.master)
                ep.close()

    # ---------------------------------------------------------------- the line

    def _transmit(self, sender: Endpoint, data: bytes) -> None:
        if not sender.connected or not data:
            return
        loop = self._loop
        assert loop is not None, "Rs485Hub.start() first"
        now = loop.time()
        start = max(now, sender.tx_free_at)
        end = start + len(data) * self.byte_s
        sender.tx_free_at = end
        sender.bytes_tx += len(data)
        garbled = False
        if self._busy_by is not None and self._busy_by is not sender and start < self._busy_until:
            garbled = True
            self.stats["collisions"] += 1
        if end > self._busy_until:
            self._busy_until, self._busy_by = end, sender
        self.stats["bytes"] += len(data)
        for i in range(0, len(data), self.chunk):
            piece = data[i : i + self.chunk]
            if garbled:
                piece = bytes(b ^ 0xFF for b in piece)
            t = start + (i + len(piece)) * self.byte_s
            loop.call_at(t, self._arrive, sender, piece)

    def _arrive(self, sender: Endpoint, piece: bytes) -> None:
        self.stats["chunks"] += 1
        if not sender.connected:
            return
        for ep in self.endpoints:
            if ep is sender or not ep.connected:
                continue
            ep.bytes_rx += len(piece)
            ep._deliver(piece)
        if self.monitor is not None:
            for f in self._decoder.feed(piece):
                self.stats["frames"] += 1
                self.monitor(f, sender.name)
