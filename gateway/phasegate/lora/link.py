"""The transformer Pi's side of LoRa node links: a polled schedule, or class-A receive windows.

Two ways to share one LoRa channel between a Pi and its nodes, both with the
same frames as RS-485 (docs/protocol.md section 1, at most
``frame.LORA_MAX_PAYLOAD`` payload bytes per packet):

``polled_link(radio, addrs)`` -> a ``phasegate.bus.Bus`` over ``RadioLine``:
    the Pi is the only one to start a transmission. It polls each node with
    an empty frame and the node answers with its sealed reading; commands go
    out with ``request`` at any time. Nodes keep their receiver on (they are
    mains powered). No two transmissions of one site ever overlap, so nothing
    is lost to collisions and a missed reply is retried at once; the price is
    the poll's own airtime (36 ms at SF7/125 kHz, against 82 ms for a reading).
    Same API as the RS-485 bus: ``poll``, ``poll_round``, ``request``, ``run``,
    ``stats``.

``ClassALink(radio, addrs)``: nodes report on their own schedule (pure
    ALOHA); after each uplink a node listens for ``rx_delay_s`` plus the
    airtime of a command, and the Pi, if it holds a command for that node,
    sends it ``rx_delay_s`` after the uplink ended. ``await link.request(addr,
    payload)`` resolves with the node's ack (the first frame of kind ACK from
    it after the command went out, read from the clear envelope header), or
    None after ``timeout_s``; a command whose ack does not come before the
    node's next uplink is sent again, the same bytes, in that window.
    ``await link.run(stop, on_frame)`` receives until ``stop`` is set and calls
    ``on_frame(addr, Reply)`` for every other frame from a node.

Which one. Measured by ``phasekit bench lora`` on ``phasegate.lora.channel`` (pure
ALOHA, no capture), 100 nodes with one reading a minute each, SF7/125 kHz,
readings 38 bytes on the wire (82 ms on air), polls 6 bytes (36 ms):

| scheme | utilisation | readings lost | command latency |
|---|---|---|---|
| class A | 14 % | 23-25 % (collisions, and the node cannot tell) | median ~40 s, up to the report interval and more |
| polled | 20 % | 0.3 % (sim timing at 0.2x; 0 collisions by design) | 0.2-0.3 s |

So at one reading a minute polling uses the channel better: it spends 40 %
more airtime and delivers a third more readings, with no collisions and
commands at once. It needs nodes that keep their receiver on (mains powered:
fine) and a band without a duty-cycle limit on the Pi (India's 865-867 MHz,
the config default; in EU868's 1 % sub-bands 100 polls a minute are 6 % duty)
and one Pi per channel. The node firmware (``phasenode.link_lora``) chose class
A with report by exception (a reading on a change of 500 mA or 10 %, one at
least every 300 s, never two within 30 s) and a 1 % duty cycle, which lowers the
offered load well below one reading a minute and suits EU868: that is what
``ClassALink`` serves, and its timing matches the node's (a 1000 ms window
from TxDone; the Pi answers 50 ms after the uplink ends; an ack comes in the
node's next uplink). ``polled_link`` is ready for a node that answers polls
on LoRa as it does on RS-485.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from phasecore import frame as _frame
from phasecore import msg as _msg
from phasecore import seal as _seal
from phasecore.errors import PhasecoreError, quote
from phasegate.bus import Bus, NodeStats, Reply
from phasegate.lora.radio import recv_or_stop

if TYPE_CHECKING:
    from phasegate.lora.radio import Radio, RxPacket

log = logging.getLogger(__name__)

__all__ = ("RadioLine", "polled_link", "ClassALink", "RX_DELAY_S", "REPLY_BUDGET_BYTES")

# How long after the end of an uplink the Pi sends a class-A downlink. The
# node's radio needs a few ms to turn from TX to RX (SX127x mode switch), the
# Pi to pick the packet up (DIO0 -> SPI read); 50 ms covers both with margin.
RX_DELAY_S = 0.05
# Reply timeout budget on a polled link: airtime of a packet this long
# (larger than any sealed reading or ack, docs/protocol.md byte budget).
REPLY_BUDGET_BYTES = 64


class RadioLine:
    """A radio as a packet line for ``phasegate.bus.Bus``: ``send`` a frame, ``receive`` whole packets."""

    packets = True
    max_payload = _frame.LORA_MAX_PAYLOAD

    def __init__(self, radio: Radio, name: str = "lora"):
        self.radio = radio
        self.port = name
        self.last_rx: RxPacket | None = None  # the last RxPacket (RSSI, SNR)
        self._queue: list[RxPacket] = []
        # Made by open(), on the running loop.
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._task = self._loop.create_task(self._pump())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _opened(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        loop, ready = self._loop, self._ready
        assert loop is not None and ready is not None, "open() the line first"
        return loop, ready

    async def _pump(self) -> None:
        while True:
            pkt = await self.radio.recv()
            self.last_rx = pkt
            self._queue.append(pkt)
            self._opened()[1].set()

    async def send(self, data: bytes) -> float:
        await self.radio.send(data)
        return self._opened()[0].time()

    def take(self) -> bytes:
        data = b"".join(p.payload for p in self._queue)
        self._queue.clear()
        self._opened()[1].clear()
        return data

    async def receive(self, deadline: float) -> tuple[bytes, float]:
        while True:
            loop, ready = self._opened()
            if self._queue:
                pkt = self._queue.pop(0)
                if not self._queue:
                    ready.clear()
                return pkt.payload, pkt.t
            timeout = deadline - loop.time()
            if timeout <= 0:
                return b"", loop.time()
            try:
                await asyncio.wait_for(ready.wait(), timeout)
            except asyncio.TimeoutError:
                pass


def polled_link(
    radio: Radio,
    addrs: Iterable[int],
    turnaround_s: float = 0.02,
    retries: int = 1,
    poll_period_s: float = 60.0,
    guard_s: float = 0.05,
) -> Bus:
    """A ``Bus`` polling ``addrs`` over ``radio``; the reply timeout is the node's turnaround plus airtime."""
    timeout = turnaround_s + radio.airtime_s(REPLY_BUDGET_BYTES) + guard_s
    return Bus(RadioLine(radio), addrs, reply_timeout_s=timeout, retries=retries, poll_period_s=poll_period_s)


class _Pending:
    __slots__ = ("payload", "future", "sent", "sends", "t_sent", "want_ack")

    # future: request's resolves with the ack Reply (or None), push's with True (or None); Any for both.
    def __init__(self, payload: bytes, future: asyncio.Future[Any], want_ack: bool = True):
        self.payload = payload
        self.future = future
        self.want_ack = want_ack
        self.sent = False
        self.sends = 0
        self.t_sent: float | None = None


class ClassALink:
    """Receive uplinks; send each node's queued command in the window after its next uplink."""

    def __init__(
        self,
        radio: Radio,
        addrs: Iterable[int],
        rx_delay_s: float = RX_DELAY_S,
        retries: int = 2,
        report_max_s: float = 300.0,
    ):
        self.radio = radio
        self.addrs = set(addrs)
        self.rx_delay_s = rx_delay_s
        self.retries = retries
        # A node reports at least every report_max_s (phasenode.link_lora.ReportPolicy.max_s), so a
        # downlink waits up to one interval for its window and its answer up to one more: what the
        # controller allows for a command and for seeing a move in the readings on this link.
        self.report_max_s = float(report_max_s)
        self.command_timeout_s = 2 * self.report_max_s + 30.0
        self.verify_s = 2 * self.report_max_s + 30.0
        self.stats = {a: NodeStats() for a in self.addrs}
        self.counters = {
            "packets": 0,
            "foreign": 0,
            "unknown_src": 0,
            "noise_bytes": 0,
            "crc_errors": 0,
            "downlinks": 0,
            "window_missed": 0,
        }
        self._decoder = _frame.Decoder(_frame.LORA_MAX_PAYLOAD)
        self._pending: dict[int, _Pending] = {}
        self._busy_until = 0.0

    async def request(self, addr: int, payload: bytes, timeout_s: float = 180.0) -> Reply | None:
        """Queue a sealed command for ``addr``; the node's ack as a ``Reply``, or None after ``timeout_s``."""
        if addr not in self.addrs:
            raise ValueError("node %s is not on this LoRa link" % (quote(addr),))
        if addr in self._pending:
            raise ValueError("node %d already has a command waiting for its window" % addr)
        loop = asyncio.get_running_loop()
        p = _Pending(payload, loop.create_future())
        self._pending[addr] = p
        self.stats[addr].requests += 1
        try:
            return await asyncio.wait_for(asyncio.shield(p.future), timeout_s)
        except asyncio.TimeoutError:
            self.stats[addr].timeouts += 1
            return None
        finally:
            self._pending.pop(addr, None)

    async def push(self, addr: int, payload: bytes, timeout_s: float = 180.0) -> bool | None:
        """Send ``payload`` (e.g. a sealed Pi heartbeat that sets the node's clock) in ``addr``'s next window.

        Nothing is acknowledged: True once it went out, False if no window
        came within ``timeout_s``.
        """
        if addr not in self.addrs:
            raise ValueError("node %s is not on this LoRa link" % (quote(addr),))
        if addr in self._pending:
            raise ValueError("node %d already has a downlink waiting for its window" % addr)
        p = _Pending(payload, asyncio.get_running_loop().create_future(), want_ack=False)
        self._pending[addr] = p
        try:
            return await asyncio.wait_for(asyncio.shield(p.future), timeout_s)
        except asyncio.TimeoutError:
            return False
        finally:
            self._pending.pop(addr, None)

    async def run(self, stop: asyncio.Event, on_frame: Callable[[int, Reply], object]) -> None:
        """Receive until ``stop`` is set; ``on_frame(addr, Reply)`` for every uplink that is not an awaited ack."""
        loop = asyncio.get_running_loop()
        stopper = loop.create_task(stop.wait())
        try:
            while not stop.is_set():
                recv = await recv_or_stop(self.radio, stopper)
                if recv is None:
                    break
                pkt = recv.result()
                for f in self._frames(pkt.payload):
                    res = self._uplink(f, pkt, loop)
                    if res is not None:
                        r = on_frame(f.src, res)
                        if inspect.isawaitable(r):
                            await r
        finally:
            stopper.cancel()

    def _frames(self, payload: bytes) -> list[_frame.Frame]:
        dec = self._decoder
        skipped, crc = dec.bytes_skipped, dec.crc_errors
        frames = dec.feed(payload) + dec.flush()
        self.counters["packets"] += 1
        self.counters["noise_bytes"] += dec.bytes_skipped - skipped
        self.counters["crc_errors"] += dec.crc_errors - crc
        return frames

    def _uplink(self, f: _frame.Frame, pkt: RxPacket, loop: asyncio.AbstractEventLoop) -> Reply | None:
        if f.dst != _frame.MASTER:
            self.counters["foreign"] += 1
            return None
        reply = Reply(f.src, f, 0.0, 1, pkt.t)
        st = self.stats.get(f.src)
        if st is None:
            self.counters["unknown_src"] += 1
            return reply  # the registry counts and logs it
        st.replies += 1
        st.bytes_rx += len(f.payload) + _frame.OVERHEAD
        st.last_reply_t = pkt.t
        p = self._pending.get(f.src)
        if p is not None and p.want_ack and p.sent and _kind(f.payload) == _msg.ACK and not p.future.done():
            assert p.t_sent is not None  # set with p.sent
            reply.rtt_s = pkt.t - p.t_sent
            reply.attempts = p.sends
            st.request_replies += 1
            st.last_rtt_ms = reply.rtt_s * 1e3
            p.future.set_result(reply)
            return None
        if p is not None and not p.future.done():
            if p.sends > self.retries:
                p.future.set_result(None)
            else:
                # First window, or the ack did not come before this uplink: (re)send the same bytes.
                loop.create_task(self._downlink(f.src, p, pkt.t))
        return reply

    async def _downlink(self, addr: int, p: _Pending, t_uplink: float) -> None:
        loop = asyncio.get_running_loop()
        delay = t_uplink + self.rx_delay_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() > t_uplink + 2 * self.rx_delay_s or loop.time() < self._busy_until:
            # Too late for the window (a busy loop), or still sending another node's downlink.
            self.counters["window_missed"] += 1
            return
        data = _frame.encode(addr, _frame.MASTER, p.payload, _frame.LORA_MAX_PAYLOAD)
        p.sends += 1
        if p.sends > 1:
            self.stats[addr].retries += 1
        self._busy_until = loop.time() + self.radio.airtime_s(len(data))
        await self.radio.send(data)
        p.sent = True
        p.t_sent = loop.time()
        self.stats[addr].bytes_tx += len(data)
        self.counters["downlinks"] += 1
        if not p.want_ack and not p.future.done():
            p.future.set_result(True)


def _kind(payload: bytes) -> int | None:
    try:
        return _seal.header(payload)[0]
    except PhasecoreError:
        return None
