"""RS-485 node bus master of the transformer Pi (pyserial, asyncio).

The Pi is the only master on a half-duplex RS-485 bus (docs/protocol.md
section 1). It polls each configured node address with an empty-payload frame
and reads the node's sealed reading back; it sends sealed commands the same
way and reads the node's sealed ack. This module moves frames, times them and
counts what goes wrong; it never opens a payload (``phasegate.registry`` does).

Public API (all coroutines run on one asyncio loop; one ``Bus`` per port)::

    bus = Bus.from_config(cfg.table("bus"))       # or Bus(SerialLine(port, baud), addrs, ...)
    async with bus:                                # opens / closes the serial port
        reply = await bus.poll(7)                  # Reply or None after timeouts and retries
        results = await bus.poll_round()           # [(addr, Reply or None), ...] in schedule order
        reply = await bus.request(7, sealed)       # a sealed command out, the node's reply (its ack) back
        await bus.run(stop, on_reply)              # the polling schedule until ``stop`` (asyncio.Event) is set
    bus.stats[7].as_dict()                         # per-node counters, bus.counters for the bus

``Reply`` has ``addr``, ``frame`` (a ``phasecore.frame.Frame``; an empty
payload means the node is alive but has nothing sealed yet), ``rtt_s`` (end
of our frame on the line to the complete reply), ``attempts`` and ``t`` (loop
time of arrival). ``on_reply(addr, reply_or_None)`` may be a plain function or
a coroutine function; it runs between two transactions, so the bus is idle
while it works. ``request`` waits for the bus (polls and requests are served
in arrival order, one at a time: the bus is half duplex) and on a retry sends
the *same* bytes again, so a command whose ack was lost can never be executed
twice under two sequence numbers: the node sees a replay of a command it
already executed.

Timing of one transaction (the one thing to know). The Pi writes the frame,
then waits until the UART has shifted its last bit out (``tcdrain`` in a
worker thread, so the event loop never blocks) before it starts the reply
timer: on RS-485 the transceiver must release the line before the node can
answer, and a timer started at ``write()`` would eat the frame's own line
time (6.25 ms for a poll at 9600 baud). ``reply_timeout_s`` is the wait for
the first reply byte; once bytes flow, the deadline moves out to the line time
of a maximum frame. If a candidate failed its CRC and the line then stays
quiet for ``gap_s``, the attempt ends early and is retried. Bytes that arrive
between transactions (a reply that came after its timeout) are decoded and
counted as ``late`` frames, never taken for the next node's reply; frames not
addressed to the master (our own echo on adapters that echo) are counted as
``foreign`` and ignored.

Serial I/O: the port is opened with ``serial.serial_for_url(port,
timeout=0, write_timeout=0)`` (non-blocking) and its descriptor is watched
with ``loop.add_reader``; no reader thread. Why: a poll round is 100 short
request/response exchanges, and a reader thread would add two thread hand-offs
per exchange plus a lock around the decoder, where ``add_reader`` delivers
bytes on the loop that already owns the decoder. The one blocking call,
``tcdrain``, goes to a single worker thread. Ports without a file descriptor
(``socket://``, ``rfc2217://``) are refused with a clear error: the bus needs
a local UART. ``de = "kernel"`` asks the Linux serial driver to drive the
transceiver's DE pin from RTS (TIOCSRS485, e.g. the Pi's PL011 with a MAX485
on RTS); ``de = "auto"`` is for USB adapters and HATs that switch direction
themselves.

The same master runs a polled LoRa channel: give it a line with ``packets =
True`` (``phasegate.lora.link.RadioLine``), whose ``receive`` returns whole
packets, each of which ends a candidate frame.

Offline nodes: a node that failed ``backoff_after`` polls in a row is polled
without retries and only every ``backoff_rounds``-th round until it answers,
so 100 dead addresses cost 100 timeouts per ``backoff_rounds`` rounds rather
than (retries + 1) x 100 every round.

The gap between rounds: while ``run`` waits for the next round the bus is
idle, and bulk traffic (a firmware roll-out, ``phasegate.ota``) may use it
without delaying a poll: ``await bus.wait_idle()`` returns when a gap has
begun, ``bus.idle_left()`` says how many seconds remain before the next
round starts (infinite while ``run`` is not polling at all).
"""

import asyncio
import concurrent.futures
import inspect
import logging
import math
import termios
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, TypedDict

import serial
import serial.rs485

from phasecore import frame as _frame
from phasecore.errors import quote
from phasegate.errors import ConfigError, LinkError

if TYPE_CHECKING:
    from phasegate.clock import Clock

log = logging.getLogger(__name__)

__all__ = (
    "Bus",
    "BusError",
    "SerialLine",
    "Line",
    "Reply",
    "NodeStats",
    "BusCounters",
    "OnReply",
    "line_time_s",
    "BITS_PER_BYTE",
)

# 8N1: start bit, 8 data bits, stop bit.
BITS_PER_BYTE = 10
_MAX_FRAME = _frame.MAX_PAYLOAD + _frame.OVERHEAD


def line_time_s(nbytes: int, baud: int) -> float:
    """Seconds ``nbytes`` occupy the line at ``baud`` (8N1)."""
    return nbytes * BITS_PER_BYTE / baud


class BusError(LinkError):
    """The serial port cannot be opened, configured or read (unplugged adapter, wrong path); an OSError."""


class SerialLine:
    """A pyserial port driven from asyncio: non-blocking reads via ``add_reader``, drain in a worker.

    ``send(data)`` writes ``data`` and returns the loop time (``time.monotonic``)
    at which the last byte left the UART; ``receive(deadline)`` returns the next chunk of
    received bytes with its arrival time, or ``(b"", now)`` at the deadline;
    ``take()`` returns what arrived since the last ``receive``.
    """

    def __init__(self, port: str, baud: int, de: str = "auto", exclusive: bool = True):
        if de not in ("auto", "kernel"):
            raise BusError("de = %s: expected 'auto' or 'kernel'" % (quote(de),))
        self.port = port
        self.baud = baud
        self.de = de
        self.exclusive = exclusive
        self.errors = 0
        # Set by open(), all together; _ser None means closed.
        self._ser: serial.SerialBase | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rx = bytearray()
        self._rx_t = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._drainer: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            ser = serial.serial_for_url(
                self.port,
                baudrate=self.baud,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=0,
                write_timeout=0,
                exclusive=self.exclusive,
                do_not_open=True,
            )
            if self.de == "kernel":
                # DE high while sending, low (receive) otherwise; the driver switches at the last stop bit.
                ser.rs485_mode = serial.rs485.RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
            ser.open()
        except (serial.SerialException, ValueError, OSError) as e:
            raise BusError("RS-485 bus: cannot open %s at %d baud: %s" % (self.port, self.baud, e)) from e
        try:
            fd = ser.fileno()
        except (AttributeError, NotImplementedError, OSError, ValueError, serial.SerialException):
            ser.close()
            raise BusError(
                "RS-485 bus: %s has no file descriptor; the bus master needs a local serial port" % self.port
            ) from None
        self._ser = ser
        self._fd = fd
        self._waiter = None
        self._error = None
        self._rx.clear()
        self._drainer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rs485-drain")
        self._loop.add_reader(fd, self._on_readable)

    def close(self) -> None:
        if self._ser is None:
            return
        loop, fd, drainer = self._loop, self._fd, self._drainer
        assert loop is not None and fd is not None and drainer is not None  # open() set them with _ser
        try:
            loop.remove_reader(fd)
        finally:
            self._ser.close()
            self._ser = None
            drainer.shutdown(wait=True)
            self._drainer = None

    def _on_readable(self) -> None:
        # Called by the loop only while open (add_reader in open, remove_reader before _ser goes).
        ser, loop, fd = self._ser, self._loop, self._fd
        assert ser is not None and loop is not None and fd is not None
        try:
            data = ser.read(4096)
        except (serial.SerialException, OSError) as e:
            # The adapter went away (or the far end of a pty closed): stop watching, report on next use.
            self.errors += 1
            self._error = e
            loop.remove_reader(fd)
            _wake(self._waiter)
            return
        if data:
            self._rx += data
            self._rx_t = loop.time()
            _wake(self._waiter)

    def _check(self) -> None:
        if self._ser is None:
            raise BusError("RS-485 bus: %s is not open" % self.port)
        if self._error is not None:
            raise BusError("RS-485 bus: %s failed: %s" % (self.port, self._error))

    def take(self) -> bytes:
        """The bytes received and not yet returned (possibly empty)."""
        data = bytes(self._rx)
        self._rx.clear()
        return data

    async def send(self, data: bytes) -> float:
        """Write ``data``; the ``time.monotonic`` at which its last byte left the UART."""
        self._check()
        ser, loop, fd = self._ser, self._loop, self._fd
        assert ser is not None and loop is not None and fd is not None  # _check: open
        view = memoryview(data)
        while view:
            try:
                n = ser.write(view)
            except serial.SerialTimeoutException:
                n = 0
            except (serial.SerialException, OSError) as e:
                self.errors += 1
                raise BusError("RS-485 bus: write to %s failed: %s" % (self.port, e)) from e
            view = view[n or 0 :]
            if view:
                # Output buffer full (a wedged adapter): wait until the kernel takes more.
                await self._writable()
        try:
            return await loop.run_in_executor(self._drainer, _drain, fd)
        except termios.error as e:
            self.errors += 1
            raise BusError("RS-485 bus: drain on %s failed: %s" % (self.port, e)) from e

    async def _writable(self) -> None:
        loop, fd = self._loop, self._fd
        assert loop is not None and fd is not None  # called by send, while open
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, _wake, fut)
        try:
            await asyncio.wait_for(fut, 1.0)
        except asyncio.TimeoutError:
            raise BusError("RS-485 bus: %s accepts no output for 1 s (adapter wedged?)" % self.port) from None
        finally:
            loop.remove_writer(fd)

    async def receive(self, deadline: float) -> tuple[bytes, float]:
        """``(chunk, t_arrival)``; ``(b"", now)`` when ``deadline`` (loop time) passes first."""
        while True:
            self._check()
            loop = self._loop
            assert loop is not None  # _check: open
            if self._rx:
                t = self._rx_t
                return self.take(), t
            if deadline - loop.time() <= 0:
                return b"", loop.time()
            # A bare future and a timer: cheaper than wait_for, which starts a task per call.
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = fut
            timer = loop.call_at(deadline, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._waiter = None


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _drain(fd: int) -> float:
    """Block until the UART has sent everything (worker thread); return the time it finished.

    ``time.monotonic`` is the clock of asyncio's default ``loop.time()``: the
    time is taken here, not when the loop gets round to the result, so a busy
    loop does not eat into the reply timeout or distort the round-trip time.
    """
    termios.tcdrain(fd)
    return time.monotonic()


class NodeStats:
    """Counters of one node address on the bus."""

    __slots__ = (
        "polls",
        "replies",
        "timeouts",
        "retries",
        "crc_errors",
        "noise_bytes",
        "bytes_tx",
        "bytes_rx",
        "last_rtt_ms",
        "requests",
        "request_replies",
        "empty_replies",
        "consecutive_failures",
        "last_reply_t",
        "_skip_until_round",
    )

    def __init__(self) -> None:
        self.polls = 0  # polls sent (each attempt counts)
        self.replies = 0  # transactions (polls or requests) that got the node's frame
        self.timeouts = 0  # attempts that got no valid frame from the node
        self.retries = 0  # attempts after the first
        self.crc_errors = 0  # corrupted candidates seen while waiting for this node
        self.noise_bytes = 0  # bytes not part of any valid frame while waiting for this node
        self.bytes_tx = 0
        self.bytes_rx = 0  # bytes of this node's valid frames
        self.last_rtt_ms: float | None = None
        self.requests = 0  # non-empty frames (commands) sent, each attempt counts
        self.request_replies = 0
        self.empty_replies = 0
        self.consecutive_failures = 0
        self.last_reply_t: float | None = None
        self._skip_until_round = 0

    def as_dict(self) -> dict[str, int | float | None]:
        return {k: getattr(self, k) for k in self.__slots__ if not k.startswith("_")}

    def __repr__(self) -> str:
        return "NodeStats(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self.as_dict().items()))


class Reply:
    """A node's frame in answer to a poll or request."""

    __slots__ = ("addr", "frame", "rtt_s", "attempts", "t")

    def __init__(self, addr: int, frame: _frame.Frame, rtt_s: float, attempts: int, t: float):
        self.addr = addr
        self.frame = frame
        self.rtt_s = rtt_s
        self.attempts = attempts
        self.t = t  # loop time of arrival

    def __repr__(self) -> str:
        return "Reply(addr=%d, %d payload bytes, rtt=%.1f ms, attempts=%d)" % (
            self.addr,
            len(self.frame.payload),
            self.rtt_s * 1e3,
            self.attempts,
        )


# Called with each poll's outcome: the node's Reply, or None after timeouts and retries.
# A plain function or a coroutine function.
OnReply = Callable[[int, Reply | None], Awaitable[object] | None]


class Line(Protocol):
    """What ``Bus`` drives: ``SerialLine`` on RS-485, ``phasegate.lora.link.RadioLine`` on LoRa.

    Optional attributes, read with ``getattr``: ``baud`` (for timing),
    ``packets`` (True: ``receive`` returns whole packets) and ``max_payload``.
    """

    port: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def take(self) -> bytes: ...
    async def send(self, data: bytes, /) -> float: ...
    async def receive(self, deadline: float, /) -> tuple[bytes, float]: ...


class BusCounters(TypedDict):
    """``Bus.counters``: the bus's own, beside the per-node ``NodeStats``."""

    rounds: int
    last_round_s: float | None
    late: int
    foreign: int
    noise_bytes: int
    crc_errors: int


class Bus:
    """The bus master: schedule, transactions, retries and statistics over one ``SerialLine``."""

    def __init__(
        self,
        line: Line,
        addrs: Iterable[int],
        reply_timeout_s: float = 0.03,
        retries: int = 1,
        poll_period_s: float = 10.0,
        gap_s: float | None = None,
        backoff_after: int = 3,
        backoff_rounds: int = 4,
        speed: float = 1.0,
    ):
        addrs = list(addrs)
        for a in addrs:
            if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= 247:
                raise ConfigError("bus node address %s outside 1..247" % (quote(a),))
        if len(set(addrs)) != len(addrs):
            raise ConfigError("bus node addresses repeat: %s" % (quote(addrs),))
        if reply_timeout_s <= 0 or retries < 0 or poll_period_s <= 0 or not speed >= 1:
            raise ConfigError("bus: reply_timeout_s and poll_period_s must be > 0, retries >= 0 and speed >= 1")
        self.line = line
        self.addrs = addrs
        self.reply_timeout_s = float(reply_timeout_s)
        self.retries = int(retries)
        self.poll_period_s = float(poll_period_s)
        # Site time runs ``speed`` times faster than the wall (phasegate.clock): the polling period
        # is a site duration, the line's timing is not.
        self.speed = float(speed)
        baud = getattr(line, "baud", 115200)
        # A corrupted reply is judged once the line was quiet this long: 4 characters, and no
        # less than 20 ms because USB adapters deliver bytes in bursts (FTDI latency timer 16 ms).
        self.gap_s = gap_s if gap_s is not None else max(0.02, line_time_s(4, baud))
        self._max_frame_s = line_time_s(_MAX_FRAME, baud)
        # A packet line (LoRa) hands over whole packets: each one ends a candidate frame.
        self._packets = bool(getattr(line, "packets", False))
        self._max_payload = getattr(line, "max_payload", _frame.MAX_PAYLOAD)
        self.backoff_after = backoff_after
        self.backoff_rounds = backoff_rounds
        self.stats = {a: NodeStats() for a in addrs}
        self.counters: BusCounters = {
            "rounds": 0,
            "last_round_s": None,
            "late": 0,
            "foreign": 0,
            "noise_bytes": 0,
            "crc_errors": 0,
        }
        self._decoder = _frame.Decoder(self._max_payload)
        self._lock: asyncio.Lock | None = None  # made by open(), on the running loop
        self._round = 0
        self._polling = False  # run() is polling round after round
        self._idle_until: float | None = None  # loop time the next round starts, while in a gap
        self._idle: asyncio.Event | None = None  # set while in a gap (made by open())

    @classmethod
    def from_config(cls, table: Mapping[str, Any], clock: "Clock | None" = None) -> Self:
        """A bus from the validated ``[bus]`` table of the gateway config (``phasegate.config``).

        ``clock`` (``phasegate.clock``): ``poll_period_s`` is site time and is waited as
        ``clock.real(poll_period_s)``; the transactions' timeouts stay wall time (line physics).
        """
        line = SerialLine(table["port"], table["baud"], de=table.get("de", "auto"))
        return cls(
            line,
            table["nodes"],
            reply_timeout_s=table["reply_timeout_ms"] / 1000.0,
            retries=table["retries"],
            poll_period_s=table["poll_period_s"],
            backoff_after=table.get("backoff_after", 3),
            backoff_rounds=table.get("backoff_rounds", 4),
            speed=clock.speed if clock is not None else 1.0,
        )

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self.line.open()

    def idle_left(self) -> float:
        """Seconds until the next polling round (``math.inf`` while ``run`` is not polling; 0 during a round)."""
        if not self._polling:
            return math.inf
        if self._idle_until is None:
            return 0.0
        return max(0.0, self._idle_until - asyncio.get_running_loop().time())

    async def wait_idle(self) -> None:
        """Return once the bus is between rounds (at once when ``run`` is not polling)."""
        idle = self._idle
        assert idle is not None, "Bus.open() first"
        while self.idle_left() <= 0:
            if idle.is_set():
                await asyncio.sleep(0)  # the gap just ended: run() clears the event as the round starts
            else:
                await idle.wait()

    def close(self) -> None:
        self.line.close()

    def add(self, addr: int) -> None:
        """Start polling ``addr`` (a node joined); no-op if it is already on the schedule."""
        if addr not in self.stats:
            if isinstance(addr, bool) or not isinstance(addr, int) or not 1 <= addr <= 247:
                raise ValueError("bus node address %s outside 1..247" % (quote(addr),))
            self.addrs.append(addr)
            self.stats[addr] = NodeStats()

    def remove(self, addr: int) -> None:
        if addr in self.stats:
            self.addrs.remove(addr)
            del self.stats[addr]

    # ------------------------------------------------------------ transactions

    async def poll(self, addr: int, retries: int | None = None) -> Reply | None:
        """Poll ``addr``; its ``Reply``, or None when every attempt timed out."""
        return await self._transact(addr, b"", retries)

    async def request(self, addr: int, payload: bytes, retries: int | None = None) -> Reply | None:
        """Send ``payload`` (a sealed envelope) to ``addr`` and return its ``Reply`` (or None)."""
        if not payload:
            raise ValueError("request payload is empty (an empty frame is a poll: use poll())")
        return await self._transact(addr, payload, retries)

    async def poll_round(self) -> list[tuple[int, Reply | None]]:
        """Poll every scheduled node once; ``[(addr, Reply or None), ...]``."""
        start = asyncio.get_running_loop().time()
        out = []
        for addr in self._schedule():
            out.append((addr, await self.poll(addr, self._retries_for(addr))))
        self._end_round(start)
        return out

    async def run(self, stop: asyncio.Event, on_reply: OnReply) -> None:
        """Poll round after round, one every ``poll_period_s``, until ``stop`` is set.

        ``on_reply(addr, reply_or_None)`` is called after each poll. Requests
        from other tasks interleave between polls. A round that overruns the
        period is logged and the next one starts at once.
        """
        loop = asyncio.get_running_loop()
        idle = self._idle
        assert idle is not None, "Bus.open() first"
        self._polling = True
        try:
            while not stop.is_set():
                start = loop.time()
                self._idle_until = None
                idle.clear()
                for addr in self._schedule():
                    if stop.is_set():
                        return
                    r = await self.poll(addr, self._retries_for(addr))
                    res = on_reply(addr, r)
                    if inspect.isawaitable(res):
                        await res
                took = self._end_round(start)
                wait = self.poll_period_s / self.speed - took
                if wait <= 0:
                    log.warning(
                        "bus %s: polling round took %.2f s, longer than poll_period_s %.2f s%s",
                        self.line.port,
                        took,
                        self.poll_period_s / self.speed,
                        " (%g site seconds at %g x)" % (self.poll_period_s, self.speed) if self.speed != 1 else "",
                    )
                    continue
                self._idle_until = loop.time() + wait
                idle.set()
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._polling = False
            self._idle_until = None
            idle.set()

    def _schedule(self) -> list[int]:
        self._round += 1
        return [a for a in list(self.addrs) if self.stats[a]._skip_until_round <= self._round]

    def _retries_for(self, addr: int) -> int | None:
        return 0 if self.stats[addr].consecutive_failures >= self.backoff_after else None

    def _end_round(self, start: float) -> float:
        self.counters["rounds"] += 1
        took = asyncio.get_running_loop().time() - start
        self.counters["last_round_s"] = took
        return took

    async def _transact(self, addr: int, payload: bytes, retries: int | None) -> Reply | None:
        st = self.stats.get(addr)
        if st is None:
            raise ValueError("node %s is not on this bus" % (quote(addr),))
        data = _frame.encode(addr, _frame.MASTER, payload, self._max_payload)
        tries = 1 + (self.retries if retries is None else retries)
        lock = self._lock
        assert lock is not None, "Bus.open() first"  # open() makes the lock
        async with lock:
            for attempt in range(1, tries + 1):
                if attempt > 1:
                    st.retries += 1
                if payload:
                    st.requests += 1
                else:
                    st.polls += 1
                st.bytes_tx += len(data)
                reply = await self._attempt(addr, data, st)
                if reply is not None:
                    reply.attempts = attempt
                    st.replies += 1
                    if payload:
                        st.request_replies += 1
                    if not reply.frame.payload:
                        st.empty_replies += 1
                    st.last_rtt_ms = reply.rtt_s * 1e3
                    st.last_reply_t = reply.t
                    st.consecutive_failures = 0
                    st._skip_until_round = 0
                    return reply
                st.timeouts += 1
            st.consecutive_failures += 1
            if st.consecutive_failures >= self.backoff_after:
                st._skip_until_round = self._round + self.backoff_rounds
            return None

    def _settle_between(self) -> None:
        """Decode what arrived since the last transaction: late replies and noise, counted on the bus."""
        dec = self._decoder
        before = dec.bytes_skipped, dec.crc_errors
        frames = dec.feed(self.line.take()) + dec.flush()
        for f in frames:
            if f.dst == _frame.MASTER:
                self.counters["late"] += 1
            else:
                self.counters["foreign"] += 1
        self.counters["noise_bytes"] += dec.bytes_skipped - before[0]
        self.counters["crc_errors"] += dec.crc_errors - before[1]

    async def _attempt(self, addr: int, data: bytes, st: NodeStats) -> Reply | None:
        self._settle_between()
        dec = self._decoder
        skipped0 = dec.bytes_skipped
        crc0 = dec.crc_errors + dec.oversize
        try:
            t_sent = await self.line.send(data)
            deadline = t_sent + self.reply_timeout_s
            first = None
            last = t_sent  # time of the last byte received (set before any CRC failure can need it)
            found = None
            while found is None:
                gap_deadline = deadline
                if first is not None and dec.crc_errors + dec.oversize > crc0:
                    gap_deadline = min(deadline, last + self.gap_s)
                chunk, t = await self.line.receive(gap_deadline)
                if not chunk:
                    found = self._match(addr, dec.flush())
                    break
                last = t
                if first is None and not self._packets:
                    first = t
                    # The node cannot answer before our frame ended: if the drain thread reported
                    # later than this (it was scheduled late), the first byte bounds the end of send.
                    t_sent = min(t_sent, t)
                    # Bytes flow: allow the rest of a maximum frame, plus the gap.
                    deadline = max(deadline, t + self._max_frame_s + self.gap_s)
                frames = dec.feed(chunk)
                if self._packets:
                    frames += dec.flush()
                found = self._match(addr, frames)
        finally:
            st.noise_bytes += dec.bytes_skipped - skipped0
            st.crc_errors += dec.crc_errors + dec.oversize - crc0
        if found is None:
            return None
        st.bytes_rx += len(found.payload) + _frame.OVERHEAD
        # Bytes after the reply in the same chunk stay in the decoder for _settle_between.
        return Reply(addr, found, t - t_sent, 1, t)

    def _match(self, addr: int, frames: list[_frame.Frame]) -> _frame.Frame | None:
        found = None
        for f in frames:
            if f.dst != _frame.MASTER:
                self.counters["foreign"] += 1
            elif f.src != addr or found is not None:
                self.counters["late"] += 1
            else:
                found = f
        return found
