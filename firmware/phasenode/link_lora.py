"""The node's LoRa link: report by exception, within a duty cycle, and listen briefly after each uplink.

LoRa airtime is the scarce resource (DESIGN.md: 100 nodes on one channel must
stay well below ALOHA's 18 % saturation, and EU868 sub-bands allow a 1 %
duty cycle), so a node does not send every sample:

- ``ReportPolicy``: a reading goes up when the current moved by at least
  ``delta_ma`` or ``delta_pm`` per mille of the last reported value, when the
  phase or the status bits changed, or at the latest every ``max_s`` (the
  heartbeat that proves the node alive); never more often than every
  ``min_s``, except for a phase or status change (a lock-out is news).
- ``DutyCycle``: after an uplink of airtime T the radio stays silent for
  T * (1000 / duty_pm - 1) (the per-transmission off-time rule of ETSI EN 300
  220-1, 1 % = ``duty_pm`` 10), so the duty cycle holds over any window.
  Airtime comes from ``phasecore.airtime`` with the radio's settings.
- Acks, events and heartbeats (``Session.take_pending``) go before readings;
  each uplink is one link frame (docs/protocol.md section 1, at most
  ``frame.LORA_MAX_PAYLOAD`` payload bytes) in one LoRa packet.

Downlink, class-A-like: after each uplink the node listens for
``rx_window_ms`` (from TxDone). The Pi that heard the uplink answers at once
with one frame addressed to the node (DST = node, SRC = 0): a sealed command,
or a Pi heartbeat that sets the node's clock. A command's ack is the node's
next uplink (as soon as the duty cycle allows), which opens another window,
so the Pi can send several commands in a row. The Pi can therefore reach a
node at most ``max_s`` after it last wanted to: that is the price of not
keeping the receiver on, and of the channel not carrying polls. A Pi
heartbeat is not answered on LoRa (airtime): the node's own heartbeat goes up
every ``heartbeat_s`` of the session.

Polled mode (``polled=True``), for a Pi that runs ``phasegate.lora.link.
polled_link``: the node never starts a transmission. Its receiver stays on;
it answers a poll addressed to it with the reading sealed in advance (events
and heartbeats every other poll, as on RS-485) and a sealed command or Pi
heartbeat with the ack or its heartbeat, within a few milliseconds. The Pi
measured (``phasekit bench lora``) that at one reading a minute per node this uses
the channel better than class A (no collisions between a site's nodes, and
commands at once), at the cost of a receiver that is always on (nodes are
mains powered) and of the Pi's own airtime for the polls. The duty cycle
still bounds the node: a poll that comes too soon after the last answer is
left unanswered (the Pi retries), a command is still executed and its ack
sent when the Pi repeats it.

Public: ``LoraLink``, ``ReportPolicy``, ``DutyCycle``.
"""

from phasecore import frame
from phasecore.airtime import airtime_us
from phasecore.errors import quote
from phasenode.compat import const, sleep_ms, ticks_diff, ticks_ms

__all__ = ("LoraLink", "ReportPolicy", "DutyCycle")

# Why a reading is due (ReportPolicy.due).
DUE_NO = const(0)
DUE_FIRST = const(1)
DUE_CHANGE = const(2)  # current moved enough
DUE_STATE = const(3)  # phase or status changed
DUE_HEARTBEAT = const(4)  # max_s without a report
_SWITCHING = const(0x100)  # phasecore.msg.ST_SWITCHING: transient, not news by itself
_REBOOTED = const(0x400)  # phasecore.msg.ST_REBOOTED: goes with the first report anyway
_TX_POLL_MS = const(5)
_RX_POLL_MS = const(10)
_POLLED_RX_MS = const(3)  # polled mode: how often the radio is asked for a packet (the Pi's turnaround is 20 ms)
_IDLE_MS = const(100)


class DutyCycle:
    """Per-transmission off time: after T ms on air, wait T * (1000 / duty_pm - 1) ms.

    ``duty_pm`` is the allowed share of time on air in per mille (10 = 1 %,
    1000 = no limit). Integer milliseconds; no allocation.
    """

    def __init__(self, duty_pm=10):
        if not isinstance(duty_pm, int) or isinstance(duty_pm, bool) or not 1 <= duty_pm <= 1000:
            raise ValueError("duty cycle %s per mille outside 1..1000" % (quote(duty_pm),))
        self.duty_pm = duty_pm
        self._free_at = 0
        self._armed = False
        self.airtime_ms = 0  # total, for the bench and the heartbeat
        self.uplinks = 0

    def wait_ms(self, now_ms):
        """Milliseconds until the next uplink is allowed (0: now)."""
        if not self._armed:
            return 0
        d = ticks_diff(self._free_at, now_ms)
        return d if d > 0 else 0

    def sent(self, on_air_us, end_ms):
        """An uplink of ``on_air_us`` microseconds ended at ``end_ms``."""
        t = (on_air_us + 999) // 1000
        self.airtime_ms += t
        self.uplinks += 1
        off = t * (1000 - self.duty_pm) // self.duty_pm
        self._free_at = end_ms + off
        self._armed = True


class ReportPolicy:
    """Report by exception: ``due(i_mA, phase, status, now_ms)`` says whether (and why) a reading should go up.

    ``reported(...)`` records what went up. Thresholds: ``delta_ma`` absolute,
    ``delta_pm`` relative (per mille of the last reported current; the larger
    applies), ``min_s`` between reports of a changed current, ``max_s`` at
    the latest.
    """

    def __init__(self, delta_ma=500, delta_pm=100, min_s=30, max_s=300):
        for name, v, lo, hi in (
            ("delta_ma", delta_ma, 1, 100000),
            ("delta_pm", delta_pm, 0, 1000),
            ("min_s", min_s, 0, 86400),
            ("max_s", max_s, 1, 86400),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError("report policy %s must be an integer %d..%d, got %s" % (name, lo, hi, quote(v)))
        if min_s > max_s:
            raise ValueError("report policy min_s %d exceeds max_s %d" % (min_s, max_s))
        self.delta_ma = delta_ma
        self.delta_pm = delta_pm
        self.min_ms = min_s * 1000
        self.max_ms = max_s * 1000
        self._first = True
        self._i = 0
        self._phase = 0
        self._status = 0
        self._at = 0
        self.reports = 0

    def due(self, i_ma, phase, status, now_ms):
        if self._first:
            return DUE_FIRST
        age = ticks_diff(now_ms, self._at)
        if phase != self._phase or (status ^ self._status) & ~(_SWITCHING | _REBOOTED):
            return DUE_STATE
        if age >= self.max_ms:
            return DUE_HEARTBEAT
        if age < self.min_ms:
            return DUE_NO
        d = i_ma - self._i
        if d < 0:
            d = -d
        # Relative threshold in per mille: i * delta_pm stays below 2**30 (100000 * 1000).
        thr = self._i * self.delta_pm // 1000
        if thr < self.delta_ma:
            thr = self.delta_ma
        return DUE_CHANGE if d >= thr else DUE_NO

    def reported(self, i_ma, phase, status, now_ms):
        self._first = False
        self._i = i_ma
        self._phase = phase
        self._status = status
        self._at = now_ms
        self.reports += 1


class LoraLink:
    """``LoraLink(radio, session, addr, ...)``; ``await link.run()`` reports and listens for ever.

    ``radio``: an initialised ``phaseradio.sx127x.SX127x`` (or the same
    interface: ``send``, ``tx_done``, ``receive``, ``read_packet``, ``standby``); its
    ``sf``, ``bw_hz``, ``cr`` and ``preamble`` give the airtime. ``session``:
    the node's ``Session``; ``policy``: a ``ReportPolicy``; ``duty``: a
    ``DutyCycle``; ``speed``: clock ms per wall ms (1 but on a simulated
    site's faster clock).
    """

    def __init__(
        self, radio, session, addr, policy=None, duty=None, rx_window_ms=1000, clock=ticks_ms, polled=False, speed=1
    ):
        if not isinstance(addr, int) or isinstance(addr, bool) or not 1 <= addr <= 247:
            raise ValueError("node link address must be 1..247, got %s" % (quote(addr),))
        self.radio = radio
        self.session = session
        self.addr = addr
        self.policy = policy if policy is not None else ReportPolicy()
        self.duty = duty if duty is not None else DutyCycle()
        self.rx_window_ms = rx_window_ms
        # Radio timing is wall time; on a clock ``speed`` times faster (a simulated site,
        # phasenode.app.Node) the window and the TxDone bound span that many more clock ms.
        self.speed = speed
        self._rx_clock_ms = int(rx_window_ms * speed)
        self.polled = polled
        self._clock = clock
        self._dec = frame.Decoder(frame.LORA_MAX_PAYLOAD)
        self._tx = bytearray(frame.LORA_MAX_PAYLOAD + frame.OVERHEAD)
        self._txmv = memoryview(self._tx)
        self._reply = None
        self.beat = clock()
        self.running = False
        # Counters.
        self.uplinks = 0
        self.readings = 0
        self.downlinks = 0  # frames to us from the master
        self.foreign = 0  # frames for someone else (other nodes' uplinks, other Pis' downlinks)
        self.unanswered = 0  # downlinks that did not open
        self.tx_timeouts = 0
        self.polls = 0  # polled mode: polls answered
        self.withheld = 0  # polled mode: answers the duty cycle held back
        self.last_due = DUE_NO

    def _modem(self):
        # The radio's modem settings; the driver's defaults for a stand-in that lacks one.
        r = self.radio
        return getattr(r, "sf", 7), getattr(r, "bw_hz", 125000), getattr(r, "cr", 1), getattr(r, "preamble", 8)

    def airtime_us(self, frame_len):
        """Time on air of a ``frame_len``-byte packet with the radio's settings (``phasecore.airtime``)."""
        sf, bw, cr, pre = self._modem()
        return airtime_us(frame_len, sf, bw, cr, pre)

    # --- the loop ------------------------------------------------------------------

    async def run(self):
        if self.polled:
            return await self.run_polled()
        self.running = True
        try:
            while True:
                now = self._clock()
                self.beat = now
                payload = self.next_uplink(now)
                if payload is None:
                    await sleep_ms(_IDLE_MS)
                    continue
                await self.uplink(payload)
                await self.listen()
        finally:
            self.running = False

    def next_uplink(self, now_ms):
        """The sealed payload to send now, or None (nothing due, or the duty cycle says wait)."""
        if self.duty.wait_ms(now_ms):
            return None
        s = self.session
        r = self._reply
        if r is not None:
            self._reply = None
            return r
        if s.has_pending():
            p = s.take_pending(now_ms)
            if p is not None:
                return p
        if not s.has_measurement:
            return None
        i = s.current_mA
        phase = s.phase()
        status = s.status()
        due = self.policy.due(i, phase, status, now_ms)
        if due == DUE_NO:
            return None
        p = s.seal_reading(now_ms)
        if p is not None:
            self.last_due = due
            self.readings += 1
            self.policy.reported(i, phase, status, now_ms)
        return p

    async def uplink(self, payload):
        """Send one frame and wait for TxDone (bounded by twice its airtime)."""
        n = frame.encode_into(self._tx, frame.MASTER, self.addr, payload, frame.LORA_MAX_PAYLOAD)
        on_air = self.airtime_us(n)
        radio = self.radio
        radio.send(self._txmv[:n])
        t0 = self._clock()
        limit = int((2 * on_air // 1000 + 100) * self.speed)
        while not radio.tx_done():
            if ticks_diff(self._clock(), t0) > limit:
                self.tx_timeouts += 1
                break
            await sleep_ms(_TX_POLL_MS)
        self.beat = self._clock()
        self.duty.sent(on_air, self.beat)
        self.uplinks += 1

    async def listen(self):
        """The receive window after an uplink: take one frame for us, then stop."""
        radio = self.radio
        radio.receive()
        t0 = self._clock()
        s = self.session
        try:
            while ticks_diff(self._clock(), t0) < self._rx_clock_ms:
                pkt = radio.read_packet()
                if pkt is None:
                    await sleep_ms(_RX_POLL_MS)
                    continue
                now = self._clock()
                self.beat = now
                frames = self._dec.feed(pkt[0])
                frames += self._dec.flush()
                for f in frames:
                    if f.dst != self.addr or f.src != frame.MASTER or not f.payload:
                        self.foreign += 1
                        continue
                    self.downlinks += 1
                    s.rssi = pkt[1]
                    reply = s.handle(f.payload, now)
                    if reply is None:
                        self.unanswered += 1
                    else:
                        self._reply = reply
                if self._reply is not None:
                    return True
            return False
        finally:
            # Class A: the receiver is off outside the window.
            radio.standby()

    # --- polled mode ------------------------------------------------------------------

    async def run_polled(self):
        """Keep the receiver on and answer what the Pi addresses to this node (polled mode)."""
        self.running = True
        radio = self.radio
        radio.receive()
        try:
            while True:
                now = self._clock()
                self.beat = now
                pkt = radio.read_packet()
                if pkt is None:
                    await sleep_ms(_POLLED_RX_MS)
                    continue
                if await self.serve_packet(pkt, now):
                    radio.receive()
        finally:
            self.running = False

    async def serve_packet(self, pkt, now_ms):
        """Answer the frames of one received packet; True if the node transmitted (the radio left RX)."""
        s = self.session
        sent = False
        frames = self._dec.feed(pkt[0])
        frames += self._dec.flush()
        for f in frames:
            if f.dst != self.addr or f.src != frame.MASTER:
                self.foreign += 1
                continue
            s.rssi = pkt[1]
            if not f.payload:
                if self.duty.wait_ms(now_ms):
                    self.withheld += 1  # the reading stays ready for the Pi's next try
                    continue
                reply = s.answer_poll(now_ms)
                self.polls += 1
            else:
                self.downlinks += 1
                reply = s.handle(f.payload, now_ms)
                if reply is None:
                    self.unanswered += 1
                    continue
                if self.duty.wait_ms(now_ms):
                    self.withheld += 1  # done; the Pi's retry of the same bytes gets this ack
                    continue
            await self.uplink(reply)
            sent = True
            # Seal the next reading at once, ready for the next poll.
            s.prepare(self._clock())
        return sent
