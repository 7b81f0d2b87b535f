"""The virtual board: the real node firmware under the MicroPython unix port, wired to simulated parts.

``VirtualBoard`` runs ``micropython`` with its working directory set to a
"flash" folder, so the firmware sees that folder as its filesystem, exactly
as it sees the ESP32's: ``boot.py``, ``main.py``, ``lib/phasenode``,
``lib/phasecore``, ``board.json`` and the node config, put there by
``phasekit deploy``. Like the chip it runs ``boot.py`` then ``main.py``, then
leaves the REPL open. Around it:

- the meter UART is the driver end of ``phasekit.sim.pzem.PzemSim`` (pymodbus
  playing the PZEM-004T meters over a paced pty pair);
- the RS-485 bus UART is one end of a paced pty pair (a null-modem cable); the
  other end, ``bus_port``, is for a bus master (pyserial);
- the watchdog reports each feed on a pipe; when the firmware stops feeding
  for the period it armed, the runner kills and restarts it, as the chip's
  watchdog resets the chip; a ``!`` on that pipe is ``machine.reset()``: the
  runner kills and restarts the firmware at once (the unix port's
  ``machine.soft_reset()`` in a script only drops to its REPL);
- the REPL (the interpreter's stdin/stdout on a pseudo-terminal) is bridged
  to a TCP port, so ``mpremote connect socket://127.0.0.1:PORT resume ...``
  works as over USB serial.

What the unix port's REPL does (MicroPython 1.29, checked by the tests):
ctrl-A enters the raw REPL and raw-paste mode works, so mpremote's ``exec``,
``fs cp``, ``fs ls``, ``fs cat``, ``fs mkdir``, ``fs rm`` all work; ctrl-C
interrupts running code (the pty's line discipline turns it into SIGINT, so
the pty must be the interpreter's controlling terminal with ISIG on and output
post-processing off, or mpremote sees ``\\r\\r\\n``). Differences from a
chip: use ``resume`` (mpremote's automatic soft reset expects "soft reboot"
which the unix port does not print); ``os.ilistdir`` gives no sizes, so
``fs ls`` shows 0; a soft reset (``machine.soft_reset()``, ctrl-D at the
friendly REPL) ends the process, and the runner starts it again, running
``boot.py`` and ``main.py``: what ``phasekit deploy`` uses to reboot it.
The bridge sets TCP_NODELAY and TCP_QUICKACK: mpremote writes small pieces
and Nagle plus delayed ACKs would add 40 ms to each of its round trips.

Public: ``VirtualBoard``, ``VirtualBoardError``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import shutil
import signal
import socket
import tempfile
import termios
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, cast

from phasecore.codes import PHASE_NAMES
from phasekit import repo
from phasekit.errors import PhasekitError
from phasekit.sim.pzem import PzemMeter, PzemSim
from phasekit.sim.serial_line import NullModem
from phasekit.testing import micropython

if TYPE_CHECKING:
    import ctypes

    from phasenode.board import Board

DEFAULT_HEAPSIZE = "512K"
_CONSOLE_KEEP = 256 * 1024
_RESTART_DELAY_S = 0.2

# Run like the ESP32 port's main loop: boot.py, then main.py, each as a script
# in __main__ with its traceback printed and execution going on (pyexec_file),
# then the REPL (the interpreter's -i). Kept tiny: it is the "ROM", not firmware.
_LAUNCHER = """
import sys
def _phasekit_run(f):
    try:
        src = open(f).read()
    except OSError:
        return
    try:
        exec(compile(src, f, "exec"), globals())
    except SystemExit:
        raise
    except BaseException as e:
        sys.print_exception(e)
_phasekit_run("boot.py")
_phasekit_run("main.py")
del _phasekit_run
"""


class VirtualBoardError(PhasekitError, RuntimeError):
    """The virtual board cannot start: bad board file, missing interpreter, or a failed peer."""


def _load_board(path: Path) -> Board:
    from phasenode import board as boardmod

    try:
        return boardmod.load(str(path))
    except boardmod.BoardError as e:
        raise VirtualBoardError(str(e)) from None


def _console_termios(fd: int) -> None:
    # Raw bytes both ways (no echo, no line editing, no \n -> \r\n), but keep
    # ISIG: ctrl-C must still interrupt a running main.py as on the chip.
    a = termios.tcgetattr(fd)
    a[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    a[1] &= ~termios.OPOST
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    a[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN)
    a[3] |= termios.ISIG
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _child_setup() -> None:
    # In the child after setsid(): make the console pty (fd 0) the controlling
    # terminal, so ctrl-C from mpremote becomes SIGINT -> KeyboardInterrupt.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # The firmware runs in its own session, so it would outlive a runner killed
    # with SIGKILL: ask Linux to kill it with its parent (prctl PR_SET_PDEATHSIG).
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


def _libc() -> ctypes.CDLL | None:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (ImportError, OSError):
        return None


_LIBC = _libc() if os.uname().sysname == "Linux" else None


class _ReplProtocol(asyncio.Protocol):
    def __init__(self, board: VirtualBoard):
        self.board = board
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.board._client is not None:
            transport.close()  # one user at a time, as a serial port opened exclusively
            return
        # A stream server's protocol is given a Transport (asyncio.Protocol's contract).
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.board._client = self

    def data_received(self, data: bytes) -> None:
        if self.board._client is not self or self.transport is None:
            return  # a refused second connection: its bytes never reach the REPL
        sock = self.transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.board._to_console(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.board._client is self:
            self.board._client = None


class VirtualBoard:
    """``async with VirtualBoard(flash_dir) as vb:`` runs the firmware in ``flash_dir``.

    ``board``: name or path of a host board file (default ``host-virtual``);
    ``meters``: the simulated PZEMs (default one at address 1); ``heapsize``:
    the interpreter's heap (an ESP32 without PSRAM has about 100 KB, and the
    64-bit unix port needs roughly twice as much for the same objects);
    ``repl_port``: TCP port of the REPL bridge, 0 for a free one; ``pace``:
    deliver serial bytes at the line's baud rate; ``console``: a binary file
    that gets a copy of everything the firmware prints. ``bus_line``: a serial
    device path the bus UART joins instead of a cable of its own (a shared
    line, ``phasekit.sim.rs485_hub``; then ``bus_port`` stays None); ``env``:
    more environment for the interpreter (``PHASENODE_CLOCK`` on a simulated
    site); ``sense``: the relay board has a sense of the house side.
    """

    def __init__(
        self,
        flash_dir: str | os.PathLike[str],
        board: str | Path = "host-virtual",
        meters: Iterable[PzemMeter] | None = None,
        heapsize: str = DEFAULT_HEAPSIZE,
        repl_host: str = "127.0.0.1",
        repl_port: int = 0,
        pace: bool = True,
        restart: bool = True,
        log: Callable[[str], object] | None = None,
        console: IO[bytes] | None = None,
        bus_line: str | None = None,
        env: Mapping[str, str] | None = None,
        sense: bool = False,
    ):
        self.flash_dir = Path(flash_dir).resolve()
        self.board_path = repo.board_path(board)
        self.board = _load_board(self.board_path)
        if not self.board.is_host:
            raise VirtualBoardError(
                "%s: mcu is %r; the virtual board runs host boards only" % (self.board_path, self.board.mcu)
            )
        self.meters = [PzemMeter(address=1)] if meters is None else list(meters)
        self.heapsize = heapsize
        self.repl_host = repl_host
        self._repl_port_wanted = repl_port
        self.pace = pace
        self.restart = restart
        # A line to join instead of a null-modem cable of its own (a shared bus: phasekit.sim.rs485_hub).
        self._bus_line = bus_line
        self._env_extra = dict(env or {})
        self._sense = sense
        self._log = log
        self._tee = console
        self.pzem: PzemSim | None = None
        self.bus_port: str | None = None
        self.repl_port: int | None = None
        self.resets: list[str] = []  # reasons, in order: "soft reset", "watchdog", "exit 3", "signal 9"
        self.boots = 0
        self.watchdog_feeds = 0
        self._console = bytearray()
        self._console_total = 0  # bytes ever received (offsets for wait_for)
        self._console_event = asyncio.Event()
        self._client: _ReplProtocol | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._fds: list[int] = []
        self._master: int | None = None
        self._slave: int | None = None
        self._wdt_r: int | None = None
        self._wdt_w: int | None = None
        self._wdt_buf = b""
        self._wdt_timeout_ms: int | None = None
        self._wdt_last = 0.0
        self._reset_asked = False  # the firmware wrote "!" on the watchdog pipe: reset it now
        self._pending_in = bytearray()
        self._server: asyncio.Server | None = None
        self._bus: NullModem | None = None
        self._tasks: list[asyncio.Future[None]] = []
        self._home: str | None = None
        self._stopping = False
        self._rel_r: int | None = None
        self._rel_buf = b""
        self._wiring: dict[str, int | bool] = {}  # what PHASENODE_WIRING tells the firmware: UART id or part -> fd
        self._mp = ""  # the interpreter
        self.relay_mask = 0  # bit i: phase i (phasecore.codes: 0 A, 1 B, 2 C) closed, as the relay board reports it
        self.relay_log: list[
            tuple[float, int]
        ] = []  # (monotonic s, mask) for every change, pins undriven after a reset
        self.relay_overlaps = 0  # reports with two or more phases closed: must stay 0

    # ---- public API -------------------------------------------------------------
    @property
    def repl_url(self) -> str:
        """``socket://HOST:PORT`` of the REPL bridge, for mpremote (once started)."""
        assert self.repl_port is not None, "VirtualBoard.repl_url before start()"
        return "socket://%s:%d" % (self.repl_host, self.repl_port)

    @property
    def pid(self) -> int | None:
        """The interpreter's process id, None while it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def console(self) -> bytes:
        """The last 256 KB of what the firmware printed (REPL output included)."""
        return bytes(self._console)

    @property
    def console_offset(self) -> int:
        """Total console bytes so far: pass it to ``wait_for(..., since=)``."""
        return self._console_total

    async def wait_for(self, pattern: bytes, timeout: float = 10.0, since: int = 0) -> bool:
        """Wait until ``pattern`` (bytes) appears in the console output after offset ``since``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            start = max(0, since - (self._console_total - len(self._console)))
            if pattern in self._console[start:]:
                return True
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(
                    "%r not seen on the virtual board console in %.1f s; last output:\n%s"
                    % (pattern, timeout, bytes(self._console[-600:]).decode("utf-8", "replace"))
                )
            self._console_event.clear()
            try:
                await asyncio.wait_for(self._console_event.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def start(self) -> VirtualBoard:
        """Start the simulated parts and the firmware; returns the board (stopped again if anything fails)."""
        try:
            mp = micropython.binary()
        except micropython.MicroPythonNotFound as e:
            raise VirtualBoardError(str(e)) from None
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._home = tempfile.mkdtemp(prefix="phasekit-vb-")
        loop = asyncio.get_running_loop()
        wiring: dict[str, int] = {}
        try:
            if self.board.meter_uart is not None:
                self.pzem = PzemSim(self.meters, baudrate=self.board.meter_uart.baud, pace=self.pace)
                wiring[self.board.meter_uart.id] = self._open_line(await self.pzem.start())
            if self.board.bus_uart is not None and self._bus_line is not None:
                wiring[self.board.bus_uart.id] = self._open_line(self._bus_line)
            elif self.board.bus_uart is not None:
                bus = NullModem(self.board.bus_uart.baud, self.pace)
                self._bus = bus
                bus.start()
                wiring[self.board.bus_uart.id] = self._open_line(bus.paths[0])
                self.bus_port = bus.paths[1]
            wdt_r, wdt_w = os.pipe()
            self._wdt_r, self._wdt_w = wdt_r, wdt_w
            os.set_blocking(wdt_r, False)
            os.set_blocking(wdt_w, False)
            self._fds += [wdt_r, wdt_w]
            wiring["watchdog"] = wdt_w
            loop.add_reader(wdt_r, self._on_watchdog)
            if self.board.relays is not None:
                rel_r, rel_w = os.pipe()
                self._rel_r = rel_r
                os.set_blocking(rel_r, False)
                os.set_blocking(rel_w, False)
                self._fds += [rel_r, rel_w]
                wiring["relays"] = rel_w
                loop.add_reader(rel_r, self._on_relays)
            master, slave = pty.openpty()
            self._master, self._slave = master, slave
            self._fds += [master, slave]
            _console_termios(slave)
            os.set_blocking(master, False)
            loop.add_reader(master, self._on_console)
            server = await loop.create_server(lambda: _ReplProtocol(self), self.repl_host, self._repl_port_wanted)
            self._server = server
            self.repl_port = server.sockets[0].getsockname()[1]
            self._wiring = dict(wiring, **({"sense": True} if self._sense else {}))
            self._mp = mp
            await self._spawn()
            self._tasks.append(asyncio.ensure_future(self._supervise()))
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop the firmware and every simulated part, and remove the temporary home folder."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._kill()
        loop = asyncio.get_running_loop()
        if self._server is not None:
            self._server.close()
            if self._client is not None and self._client.transport is not None:
                self._client.transport.close()
            await self._server.wait_closed()
            self._server = None
        for fd in (self._master, self._wdt_r, self._rel_r):
            if fd is not None:
                loop.remove_reader(fd)
        if self._bus is not None:
            await self._bus.stop()
            self._bus = None
        if self.pzem is not None:
            await self.pzem.stop()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    async def reset(self, reason: str = "reset") -> None:
        """Hard-reset the firmware now (kill, then boot again), as the EN button does."""
        await self._kill()
        self._note_reset(reason)
        await self._spawn()

    async def __aenter__(self) -> VirtualBoard:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- internals ----------------------------------------------------------------
    def _open_line(self, path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._fds.append(fd)
        return fd

    def _say(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)

    def _note_reset(self, reason: str) -> None:
        self.resets.append(reason)
        self._say("virtual board: %s, booting again" % reason)

    async def _spawn(self) -> None:
        assert self._wdt_r is not None and self._slave is not None and self._home is not None  # start() made them
        # Whatever the previous run left in the watchdog pipe belongs to it.
        try:
            while os.read(self._wdt_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._wdt_buf = b""
        self._wdt_timeout_ms = None
        self._reset_asked = False
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._home,
            # As the ESP32 port's sys.path: '' (the flash root), .frozen, lib.
            "MICROPYPATH": ":.frozen:lib",
            "PHASENODE_WIRING": json.dumps(self._wiring, sort_keys=True),
        }
        env.update(self._env_extra)
        pass_fds = [v for v in self._wiring.values() if isinstance(v, int) and not isinstance(v, bool)]
        self._proc = await asyncio.create_subprocess_exec(
            self._mp,
            "-X",
            "heapsize=" + self.heapsize,
            "-i",
            "-c",
            _LAUNCHER,
            stdin=self._slave,
            stdout=self._slave,
            stderr=self._slave,
            cwd=str(self.flash_dir),
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        self.boots += 1

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
        self._proc = None
        self._mcu_down()

    def _mcu_down(self) -> None:
        # The MCU stopped driving its pins: the relay board's inputs go inactive, every contact opens.
        if self._rel_r is not None:
            self._on_relays()  # what the last run reported before it ended
            self._rel_buf = b""
            self._set_relays(0)

    async def _supervise(self) -> None:
        while not self._stopping:
            proc = self._proc
            if proc is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.wait_for(proc.wait(), 0.1)
            except asyncio.TimeoutError:
                if self._reset_asked:
                    self._reset_asked = False
                    await self._kill()
                    self._note_reset("reset")
                    await self._spawn()
                    continue
                if self._watchdog_expired():
                    await self._kill()
                    self._note_reset("watchdog")
                    await self._spawn()
                continue
            if self._stopping or proc is not self._proc:
                continue
            rc = proc.returncode
            assert rc is not None  # proc.wait() returned
            self._proc = None
            self._mcu_down()
            self._note_reset("soft reset" if rc == 0 else ("exit %d" % rc if rc > 0 else "signal %d" % -rc))
            if not self.restart:
                return
            await asyncio.sleep(_RESTART_DELAY_S)
            await self._spawn()

    def _watchdog_expired(self) -> bool:
        if self._wdt_timeout_ms is None:
            return False
        return (time.monotonic() - self._wdt_last) * 1000 > self._wdt_timeout_ms

    def _on_watchdog(self) -> None:
        assert self._wdt_r is not None  # a reader start() added
        try:
            data = os.read(self._wdt_r, 4096)
        except BlockingIOError:
            return
        if not data:
            return
        buf = self._wdt_buf + data
        while buf:
            if buf[:1] == b"W":
                end = buf.find(b"\n")
                if end < 0:
                    break  # the rest of the arm line comes with the next read
                try:
                    self._wdt_timeout_ms = int(buf[1:end])
                except ValueError:
                    self._wdt_timeout_ms = None
                self._wdt_last = time.monotonic()
                buf = buf[end + 1 :]
            elif buf[:1] == b"!":
                self._reset_asked = True
                buf = buf[1:]
            elif buf[:1] == b".":
                n = len(buf) - len(buf.lstrip(b"."))
                self.watchdog_feeds += n
                self._wdt_last = time.monotonic()
                buf = buf[n:]
            else:
                buf = buf[1:]  # not the watchdog protocol: skip
        self._wdt_buf = buf

    def _on_relays(self) -> None:
        assert self._rel_r is not None  # a reader start() added
        try:
            data = os.read(self._rel_r, 4096)
        except BlockingIOError:
            return
        buf = self._rel_buf + data
        *lines, self._rel_buf = buf.split(b"\n")
        for line in lines:
            if line[:1] == b"R":
                try:
                    self._set_relays(int(line[1:]))
                except ValueError:
                    pass

    def _set_relays(self, mask: int) -> None:
        if mask & (mask - 1):
            self.relay_overlaps += 1
        if mask != self.relay_mask or not self.relay_log:
            self.relay_log.append((time.monotonic(), mask))
            if mask != self.relay_mask:
                closed = "+".join(PHASE_NAMES[i] for i in range(3) if mask & (1 << i))
                self._say("virtual board: relays %s" % (closed + " closed" if closed else "all open"))
        self.relay_mask = mask

    def relays_closed(self) -> list[int]:
        """The phases (``phasecore.codes``: 0 A, 1 B, 2 C) whose relay the board reports closed now."""
        return [i for i in range(3) if self.relay_mask & (1 << i)]

    def _on_console(self) -> None:
        assert self._master is not None  # a reader start() added
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        self._console += data
        self._console_total += len(data)
        if len(self._console) > _CONSOLE_KEEP:
            del self._console[: len(self._console) - _CONSOLE_KEEP]
        self._console_event.set()
        if self._tee is not None:
            self._tee.write(data)
            self._tee.flush()
        if self._client is not None and self._client.transport is not None:
            self._client.transport.write(data)

    def _to_console(self, data: bytes) -> None:
        self._pending_in += data
        self._drain_in()

    def _drain_in(self) -> None:
        assert self._master is not None  # the REPL bridge runs after start()
        loop = asyncio.get_running_loop()
        while self._pending_in:
            try:
                n = os.write(self._master, self._pending_in)
            except BlockingIOError:
                n = 0
            if n <= 0:
                # The pty's input queue is full until the interpreter reads: resume when writable.
                loop.add_writer(self._master, self._on_console_writable)
                return
            del self._pending_in[:n]

    def _on_console_writable(self) -> None:
        assert self._master is not None  # a writer _drain_in added
        asyncio.get_running_loop().remove_writer(self._master)
        self._drain_in()


async def run_forever(
    flash_dir: str | os.PathLike[str],
    board: str | Path = "host-virtual",
    addresses: Iterable[int] = (1,),
    heapsize: str = DEFAULT_HEAPSIZE,
    repl_port: int = 0,
    pace: bool = True,
    out: IO[str] | None = None,
    console: IO[bytes] | None = None,
) -> int:
    """``phasekit board run``: start, print one JSON line describing the board, run until SIGINT/SIGTERM."""
    import sys

    out = out or sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out, flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    meters = [PzemMeter(address=a) for a in addresses]
    async with VirtualBoard(
        flash_dir,
        board=board,
        meters=meters,
        heapsize=heapsize,
        repl_port=repl_port,
        pace=pace,
        log=log,
        console=console,
    ) as vb:
        info = {
            "repl": vb.repl_url,
            "bus": vb.bus_port,
            "meter_addresses": list(addresses),
            "flash": str(vb.flash_dir),
            "board": vb.board.name,
            "pid": vb.pid,
        }
        print(json.dumps(info, sort_keys=True), file=out, flush=True)
        await stop.wait()
        log("virtual board: stopping")
    return 0
