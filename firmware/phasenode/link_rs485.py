"""The node's side of the RS-485 bus: answer the transformer Pi, which is the bus master.

Every byte on the half-duplex bus reaches every node, so the responder feeds
all of it to a ``phasecore.frame.Decoder`` and keeps only whole, CRC-valid
frames from the master (``SRC`` 0) addressed to this node (docs/protocol.md
section 1). Anything else (other nodes' replies, broadcasts, noise, frames
from a node pretending to be the master's peer) is counted and ignored.

- A poll (empty payload) is answered with the reading the session sealed in
  advance (``Session.prepare``), so the answer is one frame encode and one
  UART write: the bus budget is 20 ms from the end of the poll to our reply.
  When an event or a heartbeat waits, every other poll carries it instead
  (a reading is never held back two polls in a row). A node with nothing
  sealed yet (just booted, no meter reply yet) answers an empty frame:
  "alive, nothing to report", as ``phasegate.bus`` expects.
- A sealed payload goes to ``Session.handle``: a command is answered with its
  sealed ack, a Pi heartbeat with the node's heartbeat; what does not open
  gets no answer at all.
- After answering, the next reading is sealed at once, ready for the next poll.

Driver enable: the HAL's bus UART drives the transceiver's DE pin around each
``write`` (``phasenode.hal.uart_esp32``: write, flush, one character time,
release), so a reply is written in one call and the line is ours only while
it lasts.

Resynchronisation: when bytes stop arriving for ``idle_ms`` with a partial
candidate buffered (a false SYNC in noise), the decoder is flushed. Frames
recovered by a flush are not answered: the master's timeout has run by then,
and a late answer would collide with the next transaction; the master retries.

The receive loop polls ``uart.any()`` every ``poll_ms`` (an ``asyncio``
sleep between, so the meter, relay and checks keep running): the reply delay
is at most ``poll_ms`` plus the work above.

Public: ``Rs485Link``.
"""

from phasecore import frame
from phasecore.errors import quote
from phasenode.compat import const, sleep_ms, ticks_diff, ticks_ms, ticks_us

__all__ = ("Rs485Link",)

_RX_CHUNK = const(64)


class Rs485Link:
    """``Rs485Link(uart, session, addr, baud=115200)``; ``await link.run()`` serves the bus for ever.

    ``uart``: the HAL's bus UART (``any``, ``readinto``, ``write``);
    ``session``: the node's ``phasenode.session.Session``; ``addr``: this
    node's link address (1..247); ``clock``: ticks_ms; ``speed``: clock ms per
    wall ms (1 but on a simulated site's faster clock). ``service(now_ms)``
    does one receive step without asyncio (tests, benchmarks, and the simulated
    site's bus, which calls it as bytes arrive).
    """

    def __init__(self, uart, session, addr, baud=115200, poll_ms=2, idle_ms=None, clock=ticks_ms, speed=1):
        if not isinstance(addr, int) or isinstance(addr, bool) or not 1 <= addr <= 247:
            raise ValueError("node link address must be 1..247, got %s" % (quote(addr),))
        self._uart = uart
        self.session = session
        self.addr = addr
        self.poll_ms = poll_ms
        # Idle: 20 character times (8N1, 10 bits each) and at least 5 ms: a
        # paced line (and a USB adapter) delivers a frame in pieces.
        if idle_ms is None:
            idle_ms = (20 * 10 * 1000 + baud - 1) // baud
            if idle_ms < 5:
                idle_ms = 5
        self.idle_ms = idle_ms
        # The idle gap is line time (wall ms); on a clock ``speed`` times faster (a simulated site,
        # phasenode.app.Node) it spans that many more of the clock's milliseconds.
        self._idle_clock_ms = int(idle_ms * speed)
        self._clock = clock
        self._dec = frame.Decoder()
        self._rx = bytearray(_RX_CHUNK)
        self._rxmv = memoryview(self._rx)
        self._tx = bytearray(frame.MAX_PAYLOAD + frame.OVERHEAD)  # the largest frame
        self._txmv = memoryview(self._tx)
        self._last_rx = clock()
        self.beat = self._last_rx  # last loop iteration (the watchdog supervisor looks at it)
        self.running = False
        # Counters.
        self.frames = 0  # whole frames seen on the bus (any address)
        self.polls = 0  # polls to us, answered
        self.requests = 0  # sealed payloads to us
        self.replies = 0  # frames we sent
        self.unanswered = 0  # sealed payloads to us that got no answer (did not open, or seal failed)
        self.foreign = 0  # frames for another node (or from a node to the master)
        self.ignored = 0  # to us but not from the master, or broadcast
        self.flushed = 0  # frames recovered by an idle flush, not answered
        self.reply_us_max = 0  # longest time from a frame's arrival to the end of our write

    # --- the loop --------------------------------------------------------------------

    async def run(self):
        """Serve the bus until cancelled."""
        self.running = True
        clock = self._clock
        try:
            while True:
                now = clock()
                self.beat = now
                if self.service(now):
                    await sleep_ms(0)
                else:
                    await sleep_ms(self.poll_ms)
        finally:
            self.running = False

    def service(self, now_ms):
        """Read what waits on the UART and answer what needs it; returns the bytes read."""
        uart = self._uart
        got = 0
        n = uart.any()
        while n:
            t_us = ticks_us()
            k = uart.readinto(self._rx, n if n < _RX_CHUNK else _RX_CHUNK)
            if not k:
                break
            got += k
            self._last_rx = now_ms
            for f in self._dec.feed(self._rxmv[:k]):
                self._on_frame(f, now_ms, t_us)
            n = uart.any()
        if not got and self._dec.buffered and ticks_diff(now_ms, self._last_rx) > self._idle_clock_ms:
            for f in self._dec.flush():
                self.frames += 1
                if f.dst == self.addr:
                    self.flushed += 1
                else:
                    self.foreign += 1
        return got

    def feed(self, data, now_ms=None):
        """Process ``data`` as if it came off the bus (tests); returns the frames it completed."""
        if now_ms is None:
            now_ms = self._clock()
        self._last_rx = now_ms
        out = self._dec.feed(data)
        t_us = ticks_us()
        for f in out:
            self._on_frame(f, now_ms, t_us)
        return out

    @property
    def decoder(self):
        return self._dec

    # --- frames ----------------------------------------------------------------------------

    def _on_frame(self, f, now_ms, t_us):
        self.frames += 1
        if f.dst != self.addr:
            if f.dst == frame.BROADCAST and f.src == frame.MASTER:
                self.ignored += 1  # no broadcast is defined: per-node keys, and replies would collide
            else:
                self.foreign += 1
            return
        if f.src != frame.MASTER:
            self.ignored += 1  # only the master addresses a node
            return
        s = self.session
        if not f.payload:
            payload = s.answer_poll(now_ms)
            self.polls += 1
        else:
            self.requests += 1
            payload = s.handle(f.payload, now_ms)
            if payload is None:
                self.unanswered += 1
                return
        n = frame.encode_into(self._tx, frame.MASTER, self.addr, payload)
        self._uart.write(self._txmv[:n])
        self.replies += 1
        d = ticks_diff(ticks_us(), t_us)
        if d > self.reply_us_max:
            self.reply_us_max = d
        # Seal the next reading now, while the master deals with this one.
        s.prepare(now_ms)
