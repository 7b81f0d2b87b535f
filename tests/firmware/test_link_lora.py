"""The node's LoRa link (both interpreters): report by exception, duty cycle, the receive window.

``ReportPolicy`` and ``DutyCycle`` are pure arithmetic and are pinned
directly. ``LoraLink`` runs with the real session, relay and store; the radio
is a register-free stand-in with the SX127x driver's methods (``send``,
``tx_done``, ``receive``, ``read_packet``, ``standby``) that records what went
on air and hands over the packets the test queues for the receive window. The
CPython tests put the real SX127x driver on the simulated channel instead.
"""

from node_fixtures import ADDR, T0, Clock, Pi, fixed_random, provision, rmtree, tmpdir
from phasecore import frame, keys, msg
from phasecore.airtime import airtime_us
from phasecore.replay import SequenceCounter
from phasenode import relay as R
from phasenode.checks import Checks
from phasenode.compat import asyncio
from phasenode.events import EventQueue
from phasenode.hal.pin_host import RelayBoard
from phasenode.link_lora import (
    DUE_CHANGE,
    DUE_FIRST,
    DUE_HEARTBEAT,
    DUE_NO,
    DUE_STATE,
    DutyCycle,
    LoraLink,
    ReportPolicy,
)
from phasenode.relay import RelayController
from phasenode.session import Session
from portable import raises

# --- policy and duty cycle ------------------------------------------------------------


def test_report_policy_reports_by_exception():
    p = ReportPolicy(delta_ma=500, delta_pm=100, min_s=30, max_s=300)
    assert p.due(5000, 0, 0, 0) == DUE_FIRST
    p.reported(5000, 0, 0, 0)
    assert p.due(5000, 0, 0, 1000) == DUE_NO
    # A big change inside min_s waits; after it, it is due.
    assert p.due(9000, 0, 0, 29999) == DUE_NO
    assert p.due(9000, 0, 0, 30000) == DUE_CHANGE
    # The threshold is the larger of 500 mA and 10 % of the last report.
    assert p.due(5499, 0, 0, 60000) == DUE_NO
    assert p.due(4500, 0, 0, 60000) == DUE_CHANGE
    p.reported(20000, 0, 0, 60000)
    assert p.due(21999, 0, 0, 100000) == DUE_NO
    assert p.due(22000, 0, 0, 100000) == DUE_CHANGE
    # Phase and status changes are news at once (not SWITCHING or REBOOTED alone).
    assert p.due(20000, 1, 0, 60001) == DUE_STATE
    assert p.due(20000, 0, msg.ST_OVERCURRENT, 60001) == DUE_STATE
    assert p.due(20000, 0, msg.ST_SWITCHING | msg.ST_REBOOTED, 60001) == DUE_NO
    # Nothing changes: a report at the latest every max_s.
    assert p.due(20000, 0, 0, 359999) == DUE_NO
    assert p.due(20000, 0, 0, 360000) == DUE_HEARTBEAT
    raises(ValueError, ReportPolicy, 0)
    raises(ValueError, ReportPolicy, 500, 100, 400, 300)


def test_duty_cycle_off_time_keeps_the_share_over_any_window():
    d = DutyCycle(10)  # 1 %
    assert d.wait_ms(0) == 0
    on_air = airtime_us(40)  # a sealed, framed reading at SF7/125 kHz
    assert 60000 < on_air < 90000, on_air
    d.sent(on_air, 1000)
    t = (on_air + 999) // 1000
    assert d.wait_ms(1000) == 99 * t
    assert d.wait_ms(1000 + 99 * t - 1) == 1
    assert d.wait_ms(1000 + 99 * t) == 0
    # Sending whenever allowed for an hour stays within 1 %.
    d = DutyCycle(10)
    now = 0
    on = 0
    while now < 3600000:
        w = d.wait_ms(now)
        if w:
            now += w
            continue
        now += t
        on += t
        d.sent(on_air, now)
    assert on * 100 <= 3600000 + t * 100, on
    assert DutyCycle(1000).duty_pm == 1000
    raises(ValueError, DutyCycle, 0)


# --- the link with the real session ------------------------------------------------------


class Radio:
    """The SX127x driver's interface, no registers: records sends, hands over queued downlinks."""

    sf = 7
    bw_hz = 125000
    cr = 1
    preamble = 8

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.downlinks = []
        self.rx = False
        self._tx = False
        self.standbys = 0

    def send(self, payload):
        self.sent.append(bytes(payload))
        self._tx = True

    def tx_done(self):
        self.clock.t += 5
        done = self._tx
        self._tx = False
        return done

    def receive(self):
        self.rx = True

    def read_packet(self):
        self.clock.t += 10  # each look at the radio is a moment later
        if self.rx and self.downlinks:
            return self.downlinks.pop(0), -97, 7.5
        return None

    def standby(self):
        self.rx = False
        self.standbys += 1


class LoraNode:
    def __init__(self, duty_pm=1000, **policy):
        self.root = tmpdir("lora")
        self.store, self.config = provision(self.root, relay={"dead_time_ms": 100, "min_dwell_s": 1, "settle_ms": 0})
        self.clock = Clock(1000)
        self.board = RelayBoard(clock=self.clock)
        self.relay = RelayController(
            self.board.pins,
            True,
            *self.store.relay_storage(),
            now_ms=self.clock.t,
            rules=self.config.rules,
            home_phase=R.PHASE_A,
        )
        self.events = EventQueue()
        self.checks = Checks(self.config.limits, self.relay, self.events, self.clock.t)
        nk = keys.NodeKeys(self.store.read_secret(self.config), ADDR)
        self.session = Session(
            nk.node_context(),
            SequenceCounter(*self.store.sequence_storage("g0"), block=16),
            self.store.pi_seq_storage(0),
            self.store.oplock_storage(),
            self.relay,
            self.checks,
            self.events,
            self.clock.t,
            answer_heartbeats=False,
            random=fixed_random,
        )
        self.radio = Radio(self.clock)
        p = {"delta_ma": 500, "delta_pm": 100, "min_s": 10, "max_s": 60}
        p.update(policy)
        self.link = LoraLink(
            self.radio, self.session, ADDR, ReportPolicy(**p), DutyCycle(duty_pm), rx_window_ms=60, clock=self.clock
        )
        self.pi = Pi()
        self.step(200)

    def step(self, ms):
        self.clock.t += ms
        self.relay.tick(self.clock.t)
        for ev in self.relay.pop_events():
            self.events.add(ev[0], ev[1], ev[2])

    def cycle(self):
        """One pass of the link's loop: the uplink due now (if any) and its receive window."""
        p = self.link.next_uplink(self.clock.t)
        if p is None:
            return None

        async def go():
            await self.link.uplink(p)
            await self.link.listen()

        asyncio.run(go())
        f = self.pi.frames(self.radio.sent[-1])[0]
        assert f.dst == frame.MASTER and f.src == ADDR
        return self.pi.open(f)

    def flush(self):
        """Send until nothing but readings are due (the boot heartbeat and events)."""
        out = []
        while self.session.has_pending():
            out.append(self.cycle()[0])
        return out

    def close(self):
        rmtree(self.root)


def test_boot_heartbeat_events_then_a_first_reading_then_only_changes():
    n = LoraNode()
    try:
        # Before the meter answered: the boot heartbeat and the events go up, no reading.
        kinds = n.flush()
        assert kinds[0] == msg.HEARTBEAT and msg.EVENT in kinds, kinds
        assert n.cycle() is None
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        kind, _, r = n.cycle()
        assert kind == msg.READING and r["current_mA"] == 5000 and r["status"] & msg.ST_REBOOTED
        assert n.link.last_due == DUE_FIRST
        # Steady current: nothing for max_s.
        for _ in range(5):
            n.step(10000)
            n.session.set_measurement(2300, 5100, 10925, 1000, 500, 95, False)
            assert n.cycle() is None
        n.step(10000)
        kind, _, r = n.cycle()
        assert kind == msg.READING and n.link.last_due == DUE_HEARTBEAT
        # A jump of 2 A: reported after min_s.
        n.session.set_measurement(2300, 7200, 15000, 1000, 500, 95, False)
        assert n.cycle() is None
        n.step(10000)
        kind, _, r = n.cycle()
        assert r["current_mA"] == 7200 and n.link.last_due == DUE_CHANGE
        assert n.radio.standbys == n.link.uplinks, "the receiver is off after every window"
    finally:
        n.close()


def test_duty_cycle_holds_back_the_next_uplink():
    n = LoraNode(duty_pm=10)
    try:
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        assert n.cycle()[0] == msg.HEARTBEAT
        t = (n.link.airtime_us(len(n.radio.sent[-1])) + 999) // 1000
        assert n.link.next_uplink(n.clock.t) is None  # the BOOT event waits for the off time
        n.clock.t += 99 * t
        assert n.cycle()[0] == msg.EVENT
        assert n.link.duty.uplinks == 2
    finally:
        n.close()


def test_a_command_in_the_receive_window_is_acked_on_the_next_uplink():
    n = LoraNode()
    try:
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        n.flush()
        n.step(1200)
        # The Pi heard an uplink and answers in the window: first the time, then a move.
        n.radio.downlinks.append(n.pi.heartbeat(T0))
        assert n.cycle()[0] == msg.READING
        assert n.session.now_s() is not None and n.link.downlinks == 1
        assert n.link.next_uplink(n.clock.t) is None, "a Pi heartbeat is not answered on LoRa"
        n.step(10000)
        n.session.set_measurement(2300, 9000, 19000, 1000, 500, 95, False)
        n.radio.downlinks.append(n.pi.command(msg.OP_MOVE, phase=msg.PHASE_B, deadline_s=T0 + 300))
        assert n.cycle()[0] == msg.READING
        assert n.relay.busy
        kind, _, ack = n.cycle()  # the ack goes up at once
        assert kind == msg.ACK and ack["outcome"] == msg.ACK_DONE, ack
        n.step(200)
        assert n.board.closed() == [R.PHASE_B]
        # The relay's MOVED event first, then the phase change, which is news at once (no min_s wait).
        kind, _, ev = n.cycle()
        assert (
            kind == msg.EVENT and ev["code"] == R.EV_MOVED and (ev["value"], ev["value2"]) == (msg.PHASE_A, msg.PHASE_B)
        ), ev
        kind, _, r = n.cycle()
        assert kind == msg.READING and r["phase"] == msg.PHASE_B and n.link.last_due == DUE_STATE
    finally:
        n.close()


def test_downlinks_for_others_or_forged_get_nothing():
    n = LoraNode()
    try:
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        n.flush()
        other = Pi(addr=ADDR + 1)
        n.radio.downlinks.append(other.command(msg.OP_MOVE, phase=msg.PHASE_B))  # for the neighbour
        cmd = n.pi.command(msg.OP_MOVE, phase=msg.PHASE_B)
        forged = bytearray(cmd)
        forged[8] ^= 0x20
        n.radio.downlinks.append(frame.encode(ADDR, 0, bytes(forged[4:-2])))  # CRC fixed, tag broken
        n.radio.downlinks.append(b"\xa5\x07\x00\x07" + b"\x00" * 5)  # garbage
        n.cycle()
        n.step(100)
        assert n.link.foreign == 1 and n.link.unanswered == 1 and n.link.downlinks == 1
        # No ack: the next uplink is the (rate-limited) AUTH_FAILED event, then nothing.
        kind, _, ev = n.cycle()
        assert kind == msg.EVENT and ev["code"] == 22 and ev["severity"] == 1, ev
        assert n.link.next_uplink(n.clock.t) is None
        assert n.board.closed() == [R.PHASE_A] and not n.relay.busy
    finally:
        n.close()


# --- polled mode ---------------------------------------------------------------------------


def _serve(n, data):
    """One received packet through the polled-mode path; the frames the node sent, opened."""
    before = len(n.radio.sent)
    asyncio.run(n.link.serve_packet((data, -90, 7.0), n.clock.t))
    return [n.pi.open(f) for f in n.pi.frames(n.radio.sent[before:])]


def test_polled_mode_answers_polls_and_commands_like_the_bus():
    n = LoraNode()
    try:
        n.link.polled = True
        n.session.answer_heartbeats = True
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        n.session.prepare(n.clock.t)
        # Queued boot heartbeat first, then the reading (a reading is never held back twice).
        kinds = [_serve(n, n.pi.poll())[0][0] for _ in range(2)]
        assert kinds == [msg.HEARTBEAT, msg.READING], kinds
        while n.session.has_pending():
            _serve(n, n.pi.poll())
            n.session.prepare(n.clock.t)
        kind, _, r = _serve(n, n.pi.poll())[0]
        assert kind == msg.READING and r["current_mA"] == 5000
        # Another node's poll, a frame from a node: nothing.
        assert _serve(n, frame.encode(ADDR + 1, 0, b"")) == []
        assert _serve(n, frame.encode(ADDR, 3, b"")) == []
        # The Pi heartbeat is answered in polled mode (the Pi's bus waits for a reply), then a move.
        assert _serve(n, n.pi.heartbeat(T0))[0][0] == msg.HEARTBEAT
        n.step(1200)
        kind, _, ack = _serve(n, n.pi.command(msg.OP_MOVE, phase=msg.PHASE_C))[0]
        assert kind == msg.ACK and ack["outcome"] == msg.ACK_DONE, ack
        n.step(200)
        assert n.board.closed() == [R.PHASE_C]
        assert n.link.polls >= 4 and n.link.foreign == 2 and n.link.uplinks == len(n.radio.sent)
    finally:
        n.close()


def test_polled_mode_duty_cycle_withholds_answers_but_not_the_command():
    n = LoraNode(duty_pm=10)
    try:
        n.link.polled = True
        n.session.answer_heartbeats = True
        n.session.set_measurement(2300, 5000, 10925, 1000, 500, 95, False)
        n.session.prepare(n.clock.t)
        assert len(_serve(n, n.pi.poll())) == 1
        assert _serve(n, n.pi.poll()) == [] and n.link.withheld == 1  # too soon after the last answer
        n.radio.downlinks.clear()
        n.step(100)
        _serve(n, n.pi.heartbeat(T0))  # taken (the clock is set), its answer withheld
        assert n.session.now_s() == T0 and n.link.withheld == 2
        t = (n.link.airtime_us(len(n.radio.sent[-1])) + 999) // 1000
        n.clock.t += 99 * t
        assert len(_serve(n, n.pi.poll())) == 1
    finally:
        n.close()
