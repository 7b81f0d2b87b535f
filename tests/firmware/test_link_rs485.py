"""The node's RS-485 responder and command handling (both interpreters).

Real frames in, real frames out: the Pi's side is built from phasecore exactly
as the gateway builds it, the node's side is the real session, relay
controller (on the simulated relay board), anomaly checks and file store.
Hostile input of every kind (bad CRC, other addresses, truncation, noise,
forged, tampered, replayed, expired, stale commands) must leave the relays
where they were and the bus silent; every refusal that does reach the relay
layer comes back as a sealed ack with its reason code.
"""

from node_fixtures import ADDR, T0, Clock, Pi, Wire, fixed_random, provision, rmtree, tmpdir
from phasecore import frame, keys, msg, seal
from phasecore.errors import ReplayError
from phasecore.replay import SequenceCounter
from phasenode import relay as R
from phasenode.checks import Checks
from phasenode.events import EventQueue
from phasenode.hal.pin_host import RelayBoard
from phasenode.link_rs485 import Rs485Link
from phasenode.relay import RelayController
from phasenode.session import DROP_AUTH, DROP_MALFORMED, DROP_REPLAY, Session
from portable import raises

DEAD = 100
RULES = {"dead_time_ms": DEAD, "min_dwell_s": 5, "max_per_hour": 2, "max_per_day": 6, "lock_hold_s": 5, "settle_ms": 0}
MOVE, LOCK, UNLOCK, SET_LIMITS, REPORT = msg.OP_MOVE, msg.OP_LOCK, msg.OP_UNLOCK, msg.OP_SET_LIMITS, msg.OP_REPORT


class Node:
    """A node's stack without asyncio: store, relay, checks, session, responder on a ``Wire``."""

    def __init__(self, root=None, relays=True, rx_storage=None):
        self.own_root = root is None
        self.root = root or tmpdir("rs485")
        self.store, self.config = provision(self.root, relay=RULES)
        self.clock = Clock(1000)
        self.board = RelayBoard(clock=self.clock)
        self.relay = None
        if relays:
            self.relay = RelayController(
                self.board.pins,
                True,
                *self.store.relay_storage(),
                now_ms=self.clock.t,
                rules=self.config.rules,
                home_phase=self.config.home_phase,
            )
        self.events = EventQueue()
        self.checks = Checks(self.config.limits, self.relay, self.events, self.clock.t)
        nk = keys.NodeKeys(self.store.read_secret(self.config), ADDR)
        self.counter = SequenceCounter(*self.store.sequence_storage("g0"), block=16)
        self.session = Session(
            nk.node_context(),
            counter=self.counter,
            rx_storage=rx_storage or self.store.pi_seq_storage(0),
            oplock_storage=self.store.oplock_storage(),
            relay=self.relay,
            checks=self.checks,
            events=self.events,
            now_ms=self.clock.t,
            random=fixed_random,
        )
        self.wire = Wire()
        self.link = Rs485Link(self.wire, self.session, ADDR, clock=self.clock)
        self.run(DEAD + 50)  # the relay's restore after boot

    def run(self, ms, step=50):
        end = self.clock.t + ms
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + step)
            if self.relay is not None:
                self.relay.tick(self.clock.t)
            self.session.prepare(self.clock.t)  # as the app does on each sample and relay change
            self.link.service(self.clock.t)

    def measure(self, v=2300, i=5000, p=10925, e=1000, f=500, pf=95, alarm=False):
        self.session.set_measurement(v, i, p, e, f, pf, alarm)
        self.session.prepare(self.clock.t)

    def send(self, data):
        """Put ``data`` on the bus and let the node answer; returns what it wrote."""
        self.wire.inject(data)
        self.link.service(self.clock.t)
        return self.wire.take()

    def drain(self):
        """Empty the session's queue of boot heartbeat and events (answered to polls)."""
        pi = Pi()
        while self.session.has_pending():
            self.session.take_pending(self.clock.t)
        return pi

    def close(self):
        if self.own_root:
            rmtree(self.root)


def _one(pi, writes):
    assert len(writes) == 1, writes
    fs = pi.frames(writes)
    assert len(fs) == 1, fs
    assert fs[0].dst == frame.MASTER and fs[0].src == ADDR
    return pi.open(fs[0]) if fs[0].payload else (None, None, None)


def _ready(n, pi):
    """Give the node the time and a reading, and empty its queue: ready for commands."""
    n.measure()
    n.drain()
    kind, _, body = _one(pi, n.send(pi.heartbeat(T0)))
    assert kind == msg.HEARTBEAT and body["time_s"] == T0
    n.session.prepare(n.clock.t)


# --- boot ----------------------------------------------------------------------------


def test_the_boot_heartbeat_goes_first_even_before_the_clock_has_moved():
    # A link may ask for its first uplink in the very millisecond the session
    # was built (LoRa does): the boot heartbeat must not depend on that.
    root = tmpdir("rs485")
    try:
        store, config = provision(root, relay=RULES)
        nk = keys.NodeKeys(store.read_secret(config), ADDR)
        events = EventQueue()
        s = Session(
            nk.node_context(),
            SequenceCounter(*store.sequence_storage("g0"), block=16),
            store.pi_seq_storage(0),
            store.oplock_storage(),
            events=events,
            now_ms=1000,
            random=fixed_random,
        )
        assert s.has_pending()
        pi = Pi()
        kinds = []
        while s.has_pending():
            f = pi.frames(frame.encode(frame.MASTER, ADDR, s.take_pending(1000)))[0]
            kinds.append(pi.open(f)[0])
        assert kinds == [msg.HEARTBEAT, msg.EVENT], kinds  # then the BOOT event
        s.advance(1000 + 899 * 1000)
        assert not s.has_pending()
        s.advance(1000 + 900 * 1000)
        assert s.has_pending(), "the next heartbeat heartbeat_s after boot"
    finally:
        rmtree(root)


# --- polls ---------------------------------------------------------------------------


def test_poll_is_answered_with_the_prepared_sealed_reading():
    n = Node()
    try:
        pi = n.drain()
        n.measure(v=2314, i=7482, p=16502, e=1234567, f=500, pf=95)
        kind, seq1, body = _one(pi, n.send(pi.poll()))
        assert kind == msg.READING
        assert body == {
            "voltage_dV": 2314,
            "current_mA": 7482,
            "power_dW": 16502,
            "energy_Wh": 1234567,
            "frequency_dHz": 500,
            "pf_centi": 95,
            "phase": msg.PHASE_A,
            "status": msg.ST_REBOOTED,
        }, body
        # Every poll gets a fresh sequence number (the Pi's replay window takes each), REBOOTED once.
        kind, seq2, body = _one(pi, n.send(pi.poll()))
        assert kind == msg.READING and seq2 > seq1 and body["status"] == 0
        # The reply is written from inside the receive step, well within the 20 ms budget.
        assert 0 < n.link.reply_us_max < 20000, n.link.reply_us_max
        assert n.link.polls == 2 and n.link.replies == 2
    finally:
        n.close()


def test_before_any_reading_polls_carry_the_boot_heartbeat_then_empty_frames():
    n = Node()
    try:
        pi = Pi()
        kinds = []
        for _ in range(4):
            kinds.append(_one(pi, n.send(pi.poll()))[0])
        # Boot heartbeat, the BOOT event, then "alive, nothing sealed yet".
        assert kinds == [msg.HEARTBEAT, msg.EVENT, None, None], kinds
    finally:
        n.close()


def test_queued_events_alternate_with_readings():
    n = Node()
    try:
        pi = n.drain()
        n.measure()
        for code in (19, 20, 21):
            n.events.add(code, 1, 2)
        # The reading was sealed before the events came; each event is sealed after the answer
        # that precedes it (never while a poll waits), then they alternate.
        kinds = [_one(pi, n.send(pi.poll()))[0] for _ in range(7)]
        assert kinds == [msg.READING, msg.EVENT, msg.READING, msg.EVENT, msg.READING, msg.EVENT, msg.READING], kinds
    finally:
        n.close()


def test_relay_events_carry_their_phases_in_the_one_numbering_of_the_wire():
    # The relay controller counts phases as the wire does (phasecore.codes: 0 A, 1 B, 2 C, 3 none),
    # and its events' values go out as they are: no second numbering anywhere.
    n = Node()
    try:
        pi = n.drain()
        sent = [
            (R.EV_MOVED, R.PHASE_A, R.PHASE_B),
            (R.EV_MOVED, R.PHASE_NONE, R.PHASE_C),
            (R.EV_ROLLED_BACK, R.PHASE_C, R.PHASE_A),
            (R.EV_RESTORED, R.PHASE_B, 0),
            (R.EV_STATE_LOST, R.PHASE_NONE, 0),
            (R.EV_ABORTED, R.PHASE_B, R.PHASE_C),
            (R.EV_PIN_MISMATCH, 0b101, R.PHASE_A),
            (R.EV_LIVE_OPEN, R.PHASE_C, 0),
            (R.EV_LOCKED, 0x10, 0x11),
            (R.EV_PERSIST_FAILED, 2, 3),
            (19, 2, 3),
        ]
        wire = [
            (4, 0, 1),
            (4, 3, 2),
            (2, 2, 0),
            (1, 1, 0),
            (3, 3, 0),
            (5, 1, 2),
            (8, 0b101, 0),
            (10, 2, 0),
            (6, 0x10, 0x11),
            (9, 2, 3),
            (19, 2, 3),
        ]
        got = []
        for ev in sent:
            n.events.add(ev[0], ev[1], ev[2])
            n.session.prepare(n.clock.t)
            kind, _, body = _one(pi, n.send(pi.poll()))
            assert kind == msg.EVENT, kind
            got.append((body["code"], body["value"], body["value2"]))
        assert got == wire, got
    finally:
        n.close()


def test_hostile_frames_get_no_answer_and_a_valid_poll_still_does():
    n = Node()
    try:
        pi = n.drain()
        n.measure()
        poll = bytearray(pi.poll())
        bad_crc = bytes(poll[:-1]) + bytes((poll[-1] ^ 1,))
        assert n.send(bad_crc) == []
        assert n.send(frame.encode(ADDR + 1, 0, b"")) == []  # another node's poll
        assert n.send(frame.encode(0, ADDR + 1, b"\x01" * 30)) == []  # another node's reply
        assert n.send(frame.encode(ADDR, 9, b"")) == []  # "poll" from a node, not the master
        assert n.send(frame.encode(255, 0, b"")) == []  # broadcast poll: none is defined
        assert n.send(bytes(poll[:4])) == []  # truncated: waits for the rest
        n.clock.t += 100  # ...which never comes: idle flush
        n.link.service(n.clock.t)
        assert n.link.decoder.buffered == 0
        # Noise with false SYNCs, then a real poll: answered.
        w = n.send(b"\xa5\xff\x00\xa5\x03\x07" + b"\x13\x37" * 20 + bytes(poll))
        assert _one(pi, w)[0] == msg.READING
        assert n.link.polls == 1 and n.link.foreign == 2 and n.link.ignored == 2
        assert n.link.decoder.crc_errors >= 1
    finally:
        n.close()


def test_a_poll_hidden_behind_a_false_sync_is_not_answered_late():
    n = Node()
    try:
        pi = n.drain()
        n.measure()
        # 0xA5 0xF0: a candidate frame of 240 bytes that swallows the poll behind it.
        assert n.send(b"\xa5\xf0\x07\x00" + pi.poll()) == []
        n.clock.t += 100
        n.link.service(n.clock.t)
        assert n.link.flushed == 1 and n.wire.take() == []
        assert _one(pi, n.send(pi.poll()))[0] == msg.READING  # the master's retry
    finally:
        n.close()


# --- commands: what happens -------------------------------------------------------


def test_move_is_done_and_acknowledged_then_the_readings_show_it():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)  # minimum dwell since the restore
        kind, _, ack = _one(pi, n.send(pi.command(MOVE, id=41, phase=msg.PHASE_C, expect_phase=msg.PHASE_A)))
        assert kind == msg.ACK
        assert ack["id"] == 41 and ack["outcome"] == msg.ACK_DONE and "reason" not in ack
        assert ack["phase"] == msg.PHASE_NONE and ack["status"] & msg.ST_SWITCHING
        assert n.board.closed() == []  # the break has begun
        n.run(DEAD + 50)
        assert n.board.closed() == [R.PHASE_C] and not n.board.ever_two_closed()
        assert n.board.min_gap_ms >= DEAD
        kind, _, body = _one(pi, n.send(pi.poll()))
        assert kind == msg.READING and body["phase"] == msg.PHASE_C
    finally:
        n.close()


def test_refused_moves_are_acknowledged_with_the_relay_reason():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_DWELL), ack
        n.run(5000)
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_A)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_SAME_PHASE), ack
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B, expect_phase=msg.PHASE_C)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, 14), ack  # WRONG_PHASE
        assert msg.REASON_NAMES[ack["reason"]] == "WRONG_PHASE"
        # Two moves, then the hourly budget (2) refuses the third.
        for target in (msg.PHASE_B, msg.PHASE_C):
            _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=target)))
            assert ack["outcome"] == msg.ACK_DONE, ack
            n.run(5200)
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_A)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_BUDGET_HOUR), ack
        assert ack["status"] & msg.ST_BUDGET and ack["phase"] == msg.PHASE_C
        assert n.board.closed() == [R.PHASE_C] and not n.board.ever_two_closed()
        assert n.session.refusals == 4
    finally:
        n.close()


def test_a_move_is_refused_while_a_check_holds_a_lock_out():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        n.relay.report(R.LOCK_OVERCURRENT, True, n.clock.t)
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_LOCKED_OUT), ack
        assert ack["status"] & msg.ST_OVERCURRENT
        # UNLOCK while the condition holds: refused CONDITION_ACTIVE; once clear, it unlocks.
        _, _, ack = _one(pi, n.send(pi.command(UNLOCK)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_CONDITION_ACTIVE), ack
        n.relay.report(R.LOCK_OVERCURRENT, False, n.clock.t)
        _, _, ack = _one(pi, n.send(pi.command(UNLOCK)))
        assert ack["outcome"] == msg.ACK_DONE and ack["status"] & msg.ST_LOCKED_MASK == 0, ack
        assert n.board.closed() == [R.PHASE_A]
    finally:
        n.close()


def test_operator_lock_is_persisted_and_refuses_moves_until_unlock():
    root = tmpdir("rs485")
    try:
        n = Node(root)
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        _, _, ack = _one(pi, n.send(pi.command(LOCK, reason=7)))
        assert ack["outcome"] == msg.ACK_DONE and ack["status"] & msg.ST_OPERATOR_LOCK
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_LOCKED_OUT), ack
        # A reboot keeps the lock.
        n2 = Node(root)
        pi2 = Pi()
        pi2.gw = pi.gw  # the same Pi: its counter goes on
        _ready(n2, pi2)
        assert n2.session.oplock == 8 and n2.session.status() & msg.ST_OPERATOR_LOCK
        n2.run(5000)
        _, _, ack = _one(pi2, n2.send(pi2.command(MOVE, phase=msg.PHASE_B)))
        assert ack["reason"] == R.R_LOCKED_OUT
        _, _, ack = _one(pi2, n2.send(pi2.command(UNLOCK)))
        assert ack["outcome"] == msg.ACK_DONE and not ack["status"] & msg.ST_OPERATOR_LOCK
        _, _, ack = _one(pi2, n2.send(pi2.command(MOVE, phase=msg.PHASE_B)))
        assert ack["outcome"] == msg.ACK_DONE, ack
    finally:
        rmtree(root)


def test_operator_lock_saved_by_older_firmware_holds_and_unlock_sticks_across_a_reboot():
    root = tmpdir("rs485")
    try:
        n = Node(root)
        n.close()
        n.store.sequence_storage("oplock")[1](8)  # the lock as firmware before oplock.json kept it
        n2 = Node(root)
        assert n2.session.oplock == 8 and n2.session.status() & msg.ST_OPERATOR_LOCK
        pi = Pi()
        _ready(n2, pi)
        n2.run(5000)
        _, _, ack = _one(pi, n2.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert ack["reason"] == R.R_LOCKED_OUT
        _, _, ack = _one(pi, n2.send(pi.command(UNLOCK)))
        assert ack["outcome"] == msg.ACK_DONE and not ack["status"] & msg.ST_OPERATOR_LOCK
        n3 = Node(root)
        assert n3.session.oplock == 0 and not n3.session.status() & msg.ST_OPERATOR_LOCK
    finally:
        rmtree(root)


def test_set_limits_is_taken_whole_or_refused_whole():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        _, _, ack = _one(pi, n.send(pi.command(SET_LIMITS, i_max_mA=20000, v_max_dV=2500, dead_time_ms=3000)))
        assert ack["outcome"] == msg.ACK_DONE, ack
        assert n.checks.overcurrent_ma == 20000 and n.checks.overvoltage_dv == 2500
        assert n.relay.rules.dead_time_ms == 3000 and n.relay.rules.min_dwell_s == 5
        # 5 ms dead time is below the relay's floor (20 ms): nothing of it is applied.
        _, _, ack = _one(pi, n.send(pi.command(SET_LIMITS, i_max_mA=30000, dead_time_ms=5)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, 15), ack  # BAD_LIMITS
        assert n.checks.overcurrent_ma == 20000 and n.relay.rules.dead_time_ms == 3000
        # Under-voltage above the over-voltage in force: refused.
        _, _, ack = _one(pi, n.send(pi.command(SET_LIMITS, v_min_dV=2550)))
        assert ack["reason"] == 15
        _, _, ack = _one(pi, n.send(pi.command(SET_LIMITS, max_per_hour=0)))
        assert ack["reason"] == 15  # the relay needs at least one move an hour
    finally:
        n.close()


def test_report_is_done_and_the_next_poll_carries_a_heartbeat():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        _, _, ack = _one(pi, n.send(pi.command(REPORT)))
        assert ack["outcome"] == msg.ACK_DONE
        kind, _, hb = _one(pi, n.send(pi.poll()))
        assert kind == msg.HEARTBEAT and hb["fw"].startswith("phasenode") and hb["time_s"] >= T0
        assert hb["rx"] == 2 and hb["phase"] == msg.PHASE_A
    finally:
        n.close()


def test_the_pis_own_pause_and_resume_are_unsupported_at_a_node():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        for op in (msg.OP_PAUSE, msg.OP_RESUME):
            _, _, ack = _one(pi, n.send(pi.command(op)))
            assert ack["outcome"] == msg.ACK_UNSUPPORTED and ack["phase"] == msg.PHASE_A
        assert n.relay.phase == msg.PHASE_A
    finally:
        n.close()


def test_measure_only_node_answers_move_unsupported():
    n = Node(relays=False)
    try:
        pi = Pi()
        _ready(n, pi)
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert ack["outcome"] == msg.ACK_UNSUPPORTED and ack["phase"] == msg.PHASE_NONE
        assert ack["status"] & msg.ST_NOT_SWITCHABLE
    finally:
        n.close()


# --- commands: what must be refused --------------------------------------------------


def test_forged_and_tampered_commands_are_dropped_silently_with_no_move():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        # Sealed with another site's key for the same address.
        other = seal.GatewayContexts(SequenceCounter(lambda: None, lambda x: None))
        other.add(keys.NodeKeys.from_site_key(bytes(32), ADDR))
        body = msg.encode(msg.COMMAND, {"id": 1, "op": MOVE, "deadline_s": T0 + 60, "phase": msg.PHASE_B})
        forged = frame.encode(ADDR, 0, seal.seal_raw(msg.COMMAND, body, other.sender(ADDR)))
        assert n.send(forged) == []
        # A real command with one ciphertext bit flipped (frame CRC recomputed).
        real = pi.command(MOVE, phase=msg.PHASE_B)
        payload = bytearray(real[4:-2])
        payload[6] ^= 0x01
        assert n.send(frame.encode(ADDR, 0, bytes(payload))) == []
        # The kind field changed from command to heartbeat: authenticated, so it fails too.
        payload = bytearray(real[4:-2])
        payload[0] = (payload[0] & 0xC7) | (msg.HEARTBEAT << 3)
        assert n.send(frame.encode(ADDR, 0, bytes(payload))) == []
        # Garbage that is not even an envelope.
        assert n.send(frame.encode(ADDR, 0, b"\xff" * 12)) == []
        assert n.session.drops[DROP_AUTH] == 3 and n.session.drops[DROP_MALFORMED] == 1
        assert n.link.unanswered == 4
        assert n.board.closed() == [R.PHASE_A] and n.relay.stats()["moves_total"] == 0
        # One AUTH_FAILED event for the burst (rate-limited), never a key in it.
        evs = []
        while len(n.events):
            evs.append(n.events.pop())
        assert [e[0] for e in evs].count(22) == 1, evs
        # The genuine command, untouched, still works: nothing moved the window.
        _, _, ack = _one(pi, n.send(real))
        assert ack["outcome"] == msg.ACK_DONE
    finally:
        n.close()


def test_replayed_command_is_dropped_and_an_identical_retry_gets_the_same_ack():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        c1 = pi.command(MOVE, phase=msg.PHASE_B)
        w1 = n.send(c1)
        assert _one(pi, w1)[2]["outcome"] == msg.ACK_DONE
        # The Pi's retry (its ack was lost): the same bytes, the same ack, nothing done twice.
        assert n.send(c1) == w1
        assert n.session.retransmits == 1 and n.relay.stats()["moves_total"] == 1
        n.run(5200)
        c2 = pi.command(MOVE, phase=msg.PHASE_C)
        assert _one(pi, n.send(c2))[2]["outcome"] == msg.ACK_DONE
        n.run(5200)
        # Recorded c1 replayed after c2: the window refuses it; nothing answers, nothing moves.
        assert n.send(c1) == []
        assert n.session.drops[DROP_REPLAY] == 1
        assert n.board.closed() == [R.PHASE_C] and n.relay.stats()["moves_total"] == 2
    finally:
        n.close()


def test_a_command_recorded_before_a_reboot_cannot_be_replayed_after_it():
    root = tmpdir("rs485")
    try:
        n = Node(root)
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        cmd = pi.command(MOVE, phase=msg.PHASE_B, deadline_s=T0 + 3600)
        assert _one(pi, n.send(cmd))[2]["outcome"] == msg.ACK_DONE
        n.run(DEAD + 50)
        # Power cut; the node boots again from the same flash.
        n2 = Node(root)
        n2.run(6000)
        pi2 = Pi()
        pi2.gw = pi.gw
        _ready(n2, pi2)  # a fresh Pi heartbeat: the node has the time again
        assert n2.send(cmd) == [], "a recorded command must not open after a reboot"
        assert n2.session.drops[DROP_REPLAY] == 1
        assert n2.board.closed() == [R.PHASE_B]
    finally:
        rmtree(root)


def test_the_pi_sequence_is_on_flash_before_the_relay_moves():
    n = Node()
    try:
        pi = Pi()
        load, save = n.store.pi_seq_storage(0)
        seen = []

        def recording_save(seq):
            seen.append((seq, n.board.closed(), n.relay.busy))
            save(seq)

        n.session._rx_save = recording_save
        _ready(n, pi)
        n.run(5000)
        cmd = pi.command(MOVE, phase=msg.PHASE_C)
        seq = seal.header(cmd[4:-2])[1]
        assert _one(pi, n.send(cmd))[2]["outcome"] == msg.ACK_DONE
        assert seen[-1] == (seq, [R.PHASE_A], False), seen  # saved while still on A, idle
        assert load() == seq
    finally:
        n.close()


def test_a_command_whose_sequence_cannot_be_persisted_is_refused():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)

        def broken(seq):
            raise OSError(28, "no space left on device")

        n.session._rx_save = broken
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_PERSIST), ack
        assert n.board.closed() == [R.PHASE_A] and not n.relay.busy
    finally:
        n.close()


def test_expired_and_timeless_commands_are_refused():
    n = Node()
    try:
        pi = Pi()
        n.measure()
        n.drain()
        n.run(5000)
        # No Pi heartbeat since boot: the node cannot judge a deadline.
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, 16), ack  # NO_TIME
        _one(pi, n.send(pi.heartbeat(T0)))
        n.run(30000)  # the node's clock runs on: T0 + 30
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B, deadline_s=T0 + 29)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_EXPIRED, 12), ack  # DEADLINE_PASSED
        assert n.board.closed() == [R.PHASE_A]
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B, deadline_s=T0 + 31)))
        assert ack["outcome"] == msg.ACK_DONE, ack
    finally:
        n.close()


def test_a_command_decided_on_a_reading_older_than_the_last_move_is_stale():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        n.run(5000)
        _, seq_a, body = _one(pi, n.send(pi.poll()))
        assert body["phase"] == msg.PHASE_A
        # A ref_seq the node never sent is refused too.
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B, ref_seq=seq_a + 1000)))
        assert ack["reason"] == 13  # STALE_REF
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_B, ref_seq=seq_a)))
        assert ack["outcome"] == msg.ACK_DONE
        n.run(5200)
        n.session.prepare(n.clock.t)
        _, seq_b, body = _one(pi, n.send(pi.poll()))
        assert body["phase"] == msg.PHASE_B
        # Decided on the reading from phase A: the node has moved since.
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_C, ref_seq=seq_a)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, 13), ack
        _, _, ack = _one(pi, n.send(pi.command(MOVE, phase=msg.PHASE_C, ref_seq=seq_b)))
        assert ack["outcome"] == msg.ACK_DONE, ack
    finally:
        n.close()


def test_an_unreadable_pi_sequence_record_refuses_every_command():
    root = tmpdir("rs485")
    try:
        n = Node(root)
        pi = Pi()
        _ready(n, pi)
        _one(pi, n.send(pi.command(REPORT)))
        n.close()
        for name in ("seq-pirx-g0.json", "seq-pirx-g0.bak.json"):
            with open(root + "/" + name, "wb") as f:
                f.write(b"\x00garbage")
        n2 = Node(root)
        assert n2.session.rx_lost
        pi2 = Pi()
        pi2.gw = pi.gw
        n2.measure()
        n2.drain()
        _one(pi2, n2.send(pi2.heartbeat(T0 + 10)))
        n2.run(6000)
        _, _, ack = _one(pi2, n2.send(pi2.command(MOVE, phase=msg.PHASE_B, deadline_s=T0 + 600)))
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_PERSIST), ack
        assert n2.board.closed() == [R.PHASE_A]
        # It still measures and reports.
        assert _one(pi2, n2.send(pi2.poll()))[0] == msg.READING
    finally:
        rmtree(root)


def test_schema_breaking_commands_and_node_kinds_from_the_pi_are_dropped():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        sender = pi.gw.sender(ADDR)
        # Authentic but not a command: an unknown op (encoded by hand, msg.encode would refuse it).
        bad = seal.seal_raw(msg.COMMAND, b"\xa4\x00\x01\x01\x01\x02\x09\x03\x1a\x65\x53\xf1\x3c", sender)
        assert n.send(frame.encode(ADDR, 0, bad)) == []
        # Authentic reading "from the Pi": not a kind the Pi sends.
        rd = seal.seal_raw(msg.READING, msg.encode_reading(2300, 1, 1, 1, 500, 95, 0, 0), sender)
        assert n.send(frame.encode(ADDR, 0, rd)) == []
        assert n.session.drops[4] == 1 and n.session.drops[5] == 1  # SCHEMA, KIND
        assert n.board.closed() == [R.PHASE_A]
    finally:
        n.close()


def test_acks_and_readings_open_only_under_this_nodes_key():
    n = Node()
    try:
        pi = Pi()
        _ready(n, pi)
        w = n.send(pi.poll())
        f = pi.frames(w)[0]
        # The Pi's table for another node cannot open it, and the same bytes twice are a replay.
        assert pi.open(f)[0] == msg.READING
        raises(ReplayError, pi.open, f)
        other = Pi(addr=ADDR + 1)
        raises(Exception, other.open, frame.Frame(0, ADDR + 1, f.payload))
    finally:
        n.close()
