"""The node's end of its secure link to the transformer Pi: what it seals, what it opens, what it obeys.

Both links (``phasenode.link_rs485``, ``phasenode.link_lora``) carry the same
sealed envelopes (docs/protocol.md sections 2-3); this module is everything
above the frame, shared by the two:

- readings, acks, heartbeats and events sealed under the node key with the
  node's persisted ``SequenceCounter`` (never a nonce twice, across reboots);
- what the Pi sends (kid ``b""``) opened with ``phasecore.seal.open_raw``
  under the Pi key, through a replay window restored at boot from the highest
  Pi sequence number persisted (docs/security.md section 5);
- commands checked and carried out through the relay controller, each
  answered with a sealed ack carrying the outcome and reason code.

Order of checks on a frame from the Pi (anything that fails is dropped
silently, counted and, at most once a minute per cause, queued as an
AUTH_FAILED or REPLAY_DROPPED event; nothing that fails to open is ever
acted on, nor answered):

1. the exact bytes of the last command executed: the Pi retried because our
   ack was lost (``phasegate.bus`` retries with the same bytes), so the same
   ack goes back and nothing is done again;
2. open (malformed, unknown key, tag, replay window) and the schema;
3. the highest accepted Pi sequence number is persisted BEFORE anything is
   acted on (a command), so a recorded command cannot be replayed after a
   reboot; if that write fails the command is refused (reason PERSIST);
4. freshness: the node's clock comes from the Pi's authenticated heartbeat
   (``time_s``) and runs on from there; without one since boot a command is
   refused (NO_TIME), past its ``deadline_s`` it is EXPIRED; a ``ref_seq``
   older than the node's last phase change (or newer than anything it sent)
   is STALE_REF;
5. the operation: MOVE (``expect_phase`` must match: WRONG_PHASE; an operator
   lock refuses it: LOCKED_OUT; then ``RelayController.request``, whose
   ``RelayRefused.reason`` goes into the ack as it is), LOCK / UNLOCK (the
   operator lock, persisted; UNLOCK also clears the relay's latched locks, or
   is refused CONDITION_ACTIVE), SET_LIMITS (validated whole against the
   installer's ranges, BAD_LIMITS otherwise; in force until the next reboot:
   config.json stays the installer's), REPORT (a heartbeat goes out next).

A MOVE that the relay accepted is acknowledged DONE at once, with phase 3
(none: the break has begun) and the SWITCHING status bit; the make follows
after the dead time and the Pi verifies it from the next readings. A move
the relay aborts later shows as an ABORTED event and in the status bits.

A Pi heartbeat sets the clock only with proof of freshness, and on RS-485 it
is answered with the node's heartbeat. At boot the node draws a random
48-bit nonce and sends it in its heartbeats (``boot_nonce``) until a Pi
heartbeat echoes it (``echo``) within ``echo_s`` of the draw: only that one
sets the clock after a reboot (OSCORE's Echo, RFC 8613 Appendix B.1.2). No
heartbeat sealed before the reboot can carry the new nonce, so a withheld
old heartbeat can never set the clock of a rebooted node, whatever was
persisted and whenever. Afterwards a Pi heartbeat with a higher sequence
number than the one that last set the clock moves it forward; one that would
move it back by more than ``_BACK_SLACK_S`` is not believed: the node draws a
new nonce and asks for an echo again. To bound what a replayed heartbeat
could do besides, the Pi sequence number is also persisted on heartbeats, at
most once per ``rx_persist_s`` (a flash write every few minutes).

If the persisted Pi sequence number cannot be read at boot (both copies
bad), the node cannot tell a fresh command from a recorded one: it still
measures and reports but refuses every command (reason PERSIST) until it is
re-provisioned with a new key generation (docs/security.md section 7).

Firmware updates (docs/ota.md): an OTA command (op 6) and OTA data chunks
(kind 6, answered with an OTA status, kind 7) go to ``phasenode.ota.Updater``,
made by the ``ota`` factory the application passes, on the first one; a
retried chunk (the same bytes) gets the same status back, as a retried
command gets its ack.

Phases, ack reasons and event codes are ``phasecore.codes``', as the relay
controller uses them: a MOVE's phase goes to the relay as it came, and the
relay's phase goes into a reading, and its events' phase arguments into an
event message, as they are.

Public: ``Session``, ``FW_VERSION``, the ``DROP_*`` causes.
"""

import gc

from phasecore import codes, msg, seal
from phasecore.codes import (
    EV_AUTH_FAILED,
    EV_BOOT,
    EV_LIMITS_CHANGED,
    EV_PERSIST_FAILED,
    EV_REPLAY_DROPPED,
    PHASE_NONE,
    R_BAD_LIMITS,
    R_DEADLINE_PASSED,
    R_LOCKED_OUT,
    R_NO_TIME,
    R_PERSIST,
    R_STALE_REF,
    R_WRONG_PHASE,
)
from phasecore.errors import AuthenticationError, MalformedError, PhasecoreError, ReplayError, UnknownKeyError
from phasecore.replay import ReplayWindow
from phasenode.checks import LimitError, validate_limits
from phasenode.compat import const, ticks_diff, urandom
from phasenode.relay import LATCHING, RelayRefused, RelayRules, RuleError
from phasenode.version import VERSION

__all__ = (
    "Session",
    "FW_VERSION",
    "DROP_MALFORMED",
    "DROP_KEY",
    "DROP_AUTH",
    "DROP_REPLAY",
    "DROP_SCHEMA",
    "DROP_KIND",
    "DROP_NAMES",
)

FW_VERSION = "phasenode %d.%d.%d" % VERSION
PI_KID = b""

# Why a frame from the Pi was dropped (counters in ``Session.drops``).
DROP_MALFORMED = const(0)
DROP_KEY = const(1)
DROP_AUTH = const(2)
DROP_REPLAY = const(3)
DROP_SCHEMA = const(4)
DROP_KIND = const(5)
DROP_NAMES = ("MALFORMED", "UNKNOWN_KEY", "AUTH", "REPLAY", "SCHEMA", "KIND")

# Severity per event code (phasecore.codes): 0 info, 1 warning, 2 alarm, 3 critical.
_SEVERITY = {
    codes.EV_ROLLED_BACK: 1,
    codes.EV_STATE_LOST: 2,
    codes.EV_ABORTED: 2,
    codes.EV_LOCKED: 2,
    codes.EV_PIN_MISMATCH: 3,
    codes.EV_PERSIST_FAILED: 2,
    codes.EV_LIVE_OPEN: 3,
    codes.EV_WATCHDOG_RESET: 1,
    codes.EV_BROWNOUT: 1,
    codes.EV_METER_SILENT: 1,
    codes.EV_IMPLAUSIBLE_READING: 1,
    codes.EV_AUTH_FAILED: 1,
    codes.EV_REPLAY_DROPPED: 1,
    codes.EV_LIMITS_CHANGED: 1,
}
_BAD_EVENT_S = const(60)  # at most one AUTH_FAILED / REPLAY_DROPPED event a minute
_STALE_SEQ = const(16)  # a prepared message this far behind the counter is sealed again (the Pi's window: 32)

# SET_LIMITS command fields -> the node config's limit names and the relay rules.
_CMD_LIMITS = (("i_max_mA", "overcurrent_ma"), ("v_min_dV", "undervoltage_dv"), ("v_max_dV", "overvoltage_dv"))
_CMD_RULES = ("max_per_hour", "max_per_day", "min_dwell_s", "dead_time_ms")
_U32 = 0xFFFFFFFF
# A Pi heartbeat may move the clock back by this much without a fresh echo (the Pi's
# and the node's clocks drift apart by milliseconds between heartbeats).
_BACK_SLACK_S = const(5)
_NONCE_BYTES = const(6)  # 48 bits: msg.NONCE_MAX


class Session:
    """The node's secure session with its Pi; see the module docstring.

    ``keys``: the node's ``phasecore.keys.Context`` (``NodeKeys.node_context()``);
    ``counter``: its ``phasecore.replay.SequenceCounter``; ``rx_storage``: the
    ``(load, save)`` pair that keeps the highest accepted Pi sequence number
    (``Store.pi_seq_storage(generation)``: ``load()`` None before the first,
    raises when unreadable); ``oplock_storage``: the pair for the operator
    lock, 0 unlocked or reason + 1 (``Store.oplock_storage()``: ``load()``
    raises when unreadable, and the session then stays locked); ``relay``: the
    ``RelayController`` (None on a measure-only node); ``checks``: the node's
    ``phasenode.checks.Checks``; ``events``: the ``EventQueue`` of events to
    send; ``now_ms``: the clock at construction (ticks_ms).
    """

    def __init__(
        self,
        keys,
        counter,
        rx_storage,
        oplock_storage=None,
        relay=None,
        checks=None,
        events=None,
        now_ms=0,
        heartbeat_s=900,
        rx_persist_s=300,
        answer_heartbeats=True,
        fw=FW_VERSION,
        backend=None,
        random=None,
        echo_s=600,
        ota=None,
    ):
        self.relay = relay
        self.checks = checks
        self.events = events
        self.fw = fw
        self.heartbeat_s = heartbeat_s
        self.rx_persist_s = rx_persist_s
        self.answer_heartbeats = answer_heartbeats
        self._ota_factory = ota
        self.ota = None  # the Updater, made on the first OTA message
        self._rx_load, self._rx_save = rx_storage
        self.rx_lost = False
        try:
            top = self._rx_load()
        except (PhasecoreError, OSError):
            top = None
            self.rx_lost = True
        window = ReplayWindow.restore(top) if top is not None else ReplayWindow()
        self._rx_saved = -1 if top is None else top
        self._snd, self._rcv = seal.contexts(keys, counter, window, backend)
        self.counter = counter
        self._oplock_load = self._oplock_save = None
        self.oplock = 0
        if oplock_storage is not None:
            self._oplock_load, self._oplock_save = oplock_storage
            try:
                v = self._oplock_load()
            except (PhasecoreError, OSError):
                v = 1  # unreadable: stay locked (the safe side) until the operator unlocks
            self.oplock = v or 0
        # Uptime clock (ms counter -> whole seconds; ticks_ms wraps on the chip).
        self._last_ms = now_ms
        self._up_s = 0
        self._up_f = 0
        self._time_s = -1  # Pi time at _time_up, -1 until a fresh Pi heartbeat
        self._time_up = 0
        # Freshness after boot (module docstring): the nonce we ask the Pi to echo, when it was
        # drawn, whether we still wait for its echo, and the Pi sequence number that last set the clock.
        self._random = random if random is not None else urandom
        self.echo_s = echo_s
        self._nonce = None
        self._nonce_up = 0
        self._want_echo = True
        self._time_seq = -1
        self._draw_nonce()
        self._rx_saved_up = 0
        # The boot heartbeat is due at once, not at the first tick of the clock:
        # a link may ask for its first uplink within the millisecond of boot.
        self._hb_next = heartbeat_s  # uptime second when the next heartbeat is due
        self._hb_due = True
        # The reading: the latest values and the prepared sealed envelope.
        self._body = bytearray(msg.READING_MAX_LEN)
        self._bodymv = memoryview(self._body)  # made once: a view per seal costs heap on MicroPython
        # The sealed reading, ready for the next poll: sealed in place (seal.seal_into), no new buffer per seal.
        self._rbuf = bytearray(msg.READING_MAX_LEN + seal.MAX_OVERHEAD)
        self._rmv = memoryview(self._rbuf)
        self._v = self._i = self._p = self._e = self._f = self._pf = 0
        self._alarm = False
        self._have = False
        self._dirty = False
        self._sealed_status = -1
        self._sealed_phase = -1
        self._ready = None
        self._extra = None
        self._extra_src = None  # (kind, body) of _extra, to seal it again when it falls behind
        self._ready_top = self._extra_top = 0  # the counter just after _ready, _extra were sealed
        self._extra_last = False
        self.rebooted = True
        # The oldest reading sequence number a command's ref_seq may name: the
        # first reading sealed on the present phase (nothing before this boot).
        self._phase_seq = counter.value
        # The last command executed and its ack (for retries of the same bytes).
        self._last_cmd = None
        self._last_ack = None
        self.rssi = None
        # Counters (heartbeat and bench).
        self.tx = 0
        self.rx = 0
        self.rx_bad = 0
        self.drops = [0] * len(DROP_NAMES)
        self.retransmits = 0
        self.commands = 0
        self.refusals = 0
        self.seal_errors = 0
        self._bad_event_up = [-_BAD_EVENT_S - 1, -_BAD_EVENT_S - 1]
        if events is not None:
            events.add(EV_BOOT, 1 if self.rx_lost else 0, 0)

    # --- clock --------------------------------------------------------------------

    def advance(self, now_ms):
        """Move the uptime clock to ``now_ms``; a step back (or a wrap) counts as no time."""
        d = ticks_diff(now_ms, self._last_ms)
        self._last_ms = now_ms
        if d <= 0:
            return
        f = self._up_f + d
        if f >= 1000:
            self._up_s += f // 1000
            f %= 1000
        self._up_f = f
        if self._up_s >= self._hb_next:
            self._hb_next = self._up_s + self.heartbeat_s
            self._hb_due = True

    @property
    def uptime_s(self):
        return self._up_s

    def now_s(self):
        """Unix time from the last Pi heartbeat plus the uptime since, or None when unknown."""
        if self._time_s < 0:
            return None
        return self._time_s + self._up_s - self._time_up

    def set_time(self, time_s):
        self._time_s = time_s
        self._time_up = self._up_s

    @property
    def fresh(self):
        """True once a Pi heartbeat echoed this boot's nonce (the clock can be trusted)."""
        return self._time_s >= 0

    @property
    def boot_nonce(self):
        """The nonce the next heartbeat asks the Pi to echo, or None when none is wanted (or no RNG)."""
        return self._nonce if self._want_echo else None

    def _draw_nonce(self):
        # A fresh nonce at boot and whenever the clock needs proof again. Without a random
        # source there is none, and no clock is ever taken: every command is refused (NO_TIME).
        self._nonce = None
        if self._random is not None:
            try:
                b = self._random(_NONCE_BYTES)
                n = 0
                for x in b:
                    n = (n << 8) | x
                self._nonce = n or 1
            except Exception:  # a random source that fails: no nonce, no clock (the safe side)
                self._nonce = None
        self._nonce_up = self._up_s
        self._want_echo = True
        self._hb_due = True

    # --- what the node reports ---------------------------------------------------------

    def phase(self):
        """The node's phase as the wire gives it (3 while the house is disconnected or there are no relays)."""
        r = self.relay
        if r is None or r.busy:
            return PHASE_NONE
        return r.phase

    def status(self):
        """The status bits of the reading, ack and heartbeat (docs/protocol.md section 3)."""
        r = self.relay
        if r is not None:
            # Locks, and conditions still reported active (they block moves too).
            st = r.locks | r.conditions
            if r.busy:
                st |= msg.ST_SWITCHING
            rules = r.rules
            if r.moves_in(3600) >= rules.max_per_hour or r.moves_in(86400) >= rules.max_per_day:
                st |= msg.ST_BUDGET
        else:
            st = msg.ST_NOT_SWITCHABLE
            if self.checks is not None:
                st |= self.checks.conditions
        if self.oplock:
            st |= msg.ST_OPERATOR_LOCK
        if self._alarm:
            st |= msg.ST_METER_ALARM
        if self.rebooted:
            st |= msg.ST_REBOOTED
        return st

    def set_measurement(self, v_dV, i_mA, p_dW, e_Wh, f_dHz, pf_centi, alarm):
        """The latest measurement (the meter's integers); marks the reading for resealing if it changed."""
        if (
            v_dV != self._v
            or i_mA != self._i
            or p_dW != self._p
            or e_Wh != self._e
            or f_dHz != self._f
            or pf_centi != self._pf
            or alarm != self._alarm
            or not self._have
        ):
            self._v = v_dV
            self._i = i_mA
            self._p = p_dW
            self._e = e_Wh
            self._f = f_dHz
            self._pf = pf_centi
            self._alarm = alarm
            self._have = True
            self._dirty = True

    def clear_measurement(self):
        """No valid reading (meter condition): report zeros, keep the energy counter as last read."""
        self.set_measurement(0, 0, 0, self._e, 0, 0, False)

    @property
    def current_mA(self):
        return self._i

    @property
    def has_measurement(self):
        return self._have

    def prepare(self, now_ms):
        """Seal the next reading and the next queued message now, so a poll is answered at once.

        A reading is resealed only when something in it changed, the last
        one was sent, or more than ``_STALE_SEQ`` messages were sealed since
        (a firmware download answers every chunk): the Pi's replay window is
        32 numbers wide, and a reading sealed before would be refused as a
        replay. Returns False if sealing failed (counter storage).
        """
        self.advance(now_ms)
        ok = True
        top = self.counter.value
        if self._have and (self._ready is None or self._dirty or self._changed() or top - self._ready_top > _STALE_SEQ):
            ok = self._seal_reading() is not None
        if self._extra is not None and top - self._extra_top > _STALE_SEQ:
            e = self._seal(self._extra_src[0], self._extra_src[1])
            if e is not None:
                self._extra = e
                self._extra_top = self.counter.value
        if self._extra is None and self.has_pending():
            self._extra = self._seal_pending()
            self._extra_top = self.counter.value
            ok = ok and self._extra is not None
        return ok

    def take_reading(self):
        """The prepared sealed reading (None if there is none); it is consumed: the next one is new.

        A view of the session's buffer, valid until the next ``prepare``: frame it at once.
        """
        r = self._ready
        if r is not None:
            self._ready = None
            self._sent()
        return r

    def seal_reading(self, now_ms):
        """Seal and return a reading now (LoRa: only when one is to be sent); None on failure or no data."""
        self.advance(now_ms)
        if not self._have:
            return None
        r = self._seal_reading()
        self._ready = None
        if r is not None:
            self._sent()
        return r

    def has_pending(self):
        """True when a heartbeat or an event waits to be sent (or one is sealed and ready)."""
        return self._extra is not None or self._hb_due or (self.events is not None and len(self.events) > 0)

    def take_pending(self, now_ms):
        """The next heartbeat or event, sealed (prepared earlier, or now); None when nothing waits."""
        self.advance(now_ms)
        e = self._extra
        if e is not None:
            self._extra = None
            return e
        if self._hb_due or (self.events is not None and len(self.events) > 0):
            return self._seal_pending()
        return None

    def queue_heartbeat(self):
        self._hb_due = True

    def answer_poll(self, now_ms):
        """What a poll gets: the prepared reading, or every other time a prepared event or heartbeat.

        Only what ``prepare`` sealed in advance is handed out: nothing is
        sealed here, so no sequence block is written to flash on the way to
        the answer. A reading is never held back two polls in a row; with
        nothing sealed the answer is ``b""`` (an empty frame: alive, nothing
        to report).
        """
        e = self._extra
        if e is not None and not self._extra_last:
            self._extra = None
            self._extra_last = True
            return e
        self._extra_last = False
        p = self.take_reading()
        if p is None and e is not None:
            self._extra = None
            p = e
        return p if p is not None else b""

    # --- what the Pi sends ---------------------------------------------------------------

    def handle(self, payload, now_ms):
        """A non-empty payload the Pi sent to this node; returns the sealed reply or None (silence)."""
        self.advance(now_ms)
        if self._last_cmd is not None and payload == self._last_cmd:
            self.retransmits += 1
            return self._last_ack
        try:
            kind, seq, plain = seal.open_raw(payload, PI_KID, self._rcv)
        except ReplayError:
            return self._drop(DROP_REPLAY, 1)
        except AuthenticationError:
            return self._drop(DROP_AUTH, 0)
        except UnknownKeyError:
            return self._drop(DROP_KEY, 0)
        except MalformedError:
            return self._drop(DROP_MALFORMED, 0)
        if kind == msg.COMMAND:
            return self._command(seq, plain, payload, now_ms)
        if kind == msg.HEARTBEAT:
            return self._pi_heartbeat(seq, plain)
        if kind == msg.OTA_DATA:
            return self._ota_data(payload, plain, now_ms)
        return self._drop(DROP_KIND, -1)

    # --- internals: commands -------------------------------------------------------------

    def _drop(self, cause, ev):
        self.rx_bad += 1
        self.drops[cause] += 1
        if ev >= 0 and self.events is not None:
            # Rate-limited: a flood of forged frames must not flood the uplink.
            if self._up_s - self._bad_event_up[ev] > _BAD_EVENT_S:
                self._bad_event_up[ev] = self._up_s
                code = EV_REPLAY_DROPPED if ev else EV_AUTH_FAILED
                n = self.drops[DROP_REPLAY] if ev else self.drops[DROP_AUTH] + self.drops[DROP_MALFORMED]
                self.events.add(code, n, 0)
        return None

    def _persist_rx(self, seq):
        if seq <= self._rx_saved:
            return True
        try:
            self._rx_save(seq)
        except (PhasecoreError, OSError, ValueError):
            if self.events is not None:
                self.events.add(EV_PERSIST_FAILED, 1, 0)
            return False
        self._rx_saved = seq
        self._rx_saved_up = self._up_s
        return True

    def _pi_heartbeat(self, seq, plain):
        try:
            hb = msg.decode(msg.HEARTBEAT, plain)
        except PhasecoreError:
            return self._drop(DROP_SCHEMA, -1)
        self.rx += 1
        t = hb.get("time_s")
        if self.rx_persist_s and self._up_s - self._rx_saved_up >= self.rx_persist_s:
            self._persist_rx(seq)
        if t is not None and not self.rx_lost:
            self._take_time(t, seq, hb.get("echo"))
        if not self.answer_heartbeats:
            return None
        return self._seal(msg.HEARTBEAT, self._heartbeat_body())

    def _take_time(self, t, seq, echo):
        if self._want_echo:
            if self._nonce is not None and echo == self._nonce and self._up_s - self._nonce_up <= self.echo_s:
                # Sealed after the Pi saw this boot's nonce: fresh (its delay is bounded by echo_s).
                self.set_time(t)
                self._time_seq = seq
                self._want_echo = False
            elif self._up_s - self._nonce_up > self.echo_s:
                self._draw_nonce()  # too old to prove anything now: ask again
            return
        if seq <= self._time_seq:
            return  # sealed before the heartbeat that set the clock: it says nothing newer
        now = self.now_s()
        if t + _BACK_SLACK_S >= now:
            self.set_time(t)
            self._time_seq = seq
        else:
            # Back in time without proof: a withheld heartbeat, or the Pi's clock stepped back.
            # Keep the clock (deadlines only get stricter) and ask for a fresh echo.
            self._draw_nonce()

    def _command(self, seq, plain, payload, now_ms):
        try:
            cmd = msg.decode(msg.COMMAND, plain)
        except PhasecoreError:
            return self._drop(DROP_SCHEMA, -1)
        self.rx += 1
        self.commands += 1
        # Persist before acting: after a reboot this command is a replay.
        if self.rx_lost or not self._persist_rx(seq):
            outcome, reason = msg.ACK_REFUSED, R_PERSIST
        else:
            outcome, reason = self._execute(cmd, now_ms)
        if outcome != msg.ACK_DONE:
            self.refusals += 1
        fields = {"id": cmd["id"], "outcome": outcome, "phase": self.phase(), "status": self.status()}
        if reason:
            fields["reason"] = reason
        ack = self._seal(msg.ACK, msg.encode(msg.ACK, fields))
        if ack is not None:
            self._last_cmd = bytes(payload)
            self._last_ack = ack
        return ack

    def _execute(self, cmd, now_ms):
        now = self.now_s()
        if now is None:
            return msg.ACK_REFUSED, R_NO_TIME
        if now > cmd["deadline_s"]:
            return msg.ACK_EXPIRED, R_DEADLINE_PASSED
        ref = cmd.get("ref_seq")
        if ref is not None and (ref < self._phase_seq or ref >= self.counter.value):
            return msg.ACK_REFUSED, R_STALE_REF
        op = cmd["op"]
        if op == msg.OP_MOVE:
            return self._move(cmd, now_ms)
        if op == msg.OP_LOCK:
            return self._set_oplock(cmd.get("reason", 0) + 1)
        if op == msg.OP_UNLOCK:
            if self.relay is not None and self.relay.locks & LATCHING:
                try:
                    self.relay.unlock(self.relay.locks & LATCHING, now_ms)
                except RelayRefused as e:
                    return msg.ACK_REFUSED, e.reason
            return self._set_oplock(0)
        if op == msg.OP_SET_LIMITS:
            return self._set_limits(cmd)
        if op == msg.OP_OTA:
            upd = self.updater()
            return (msg.ACK_UNSUPPORTED, 0) if upd is None else upd.command(cmd, now_ms)
        if op == msg.OP_REPORT:  # a heartbeat goes out next
            self._hb_due = True
            return msg.ACK_DONE, 0
        return msg.ACK_UNSUPPORTED, 0  # the Pi's own (PAUSE, RESUME) or one this firmware does not know

    def _move(self, cmd, now_ms):
        r = self.relay
        if r is None:
            return msg.ACK_UNSUPPORTED, 0
        exp = cmd.get("expect_phase")
        if exp is not None and exp != self.phase():
            return msg.ACK_REFUSED, R_WRONG_PHASE
        if self.oplock:
            return msg.ACK_REFUSED, R_LOCKED_OUT
        try:
            r.request(cmd["phase"], now_ms)
        except RelayRefused as e:
            return msg.ACK_REFUSED, e.reason
        self._dirty = True
        return msg.ACK_DONE, 0

    def _set_oplock(self, value):
        # Applied at once whatever the flash says (locking is the safe side; an
        # unlock that cannot be saved comes back locked after a reboot).
        self.oplock = value
        self._dirty = True
        if self._oplock_save is not None:
            try:
                self._oplock_save(value)
            except (PhasecoreError, OSError, ValueError):
                if self.events is not None:
                    self.events.add(EV_PERSIST_FAILED, 2, value)
                return msg.ACK_FAILED, R_PERSIST
        return msg.ACK_DONE, 0

    def _set_limits(self, cmd):
        checks = self.checks
        r = self.relay
        lim = checks.limits() if checks is not None else None
        for key, name in _CMD_LIMITS:
            if key in cmd:
                if lim is None:
                    return msg.ACK_UNSUPPORTED, 0
                lim[name] = cmd[key]
        rules = r.rules.as_dict() if r is not None else None
        for name in _CMD_RULES:
            if name in cmd:
                if rules is None:
                    return msg.ACK_UNSUPPORTED, 0
                rules[name] = cmd[name]
        # Validate everything before changing anything: a command is taken whole or not at all.
        try:
            if lim is not None:
                validate_limits(lim)
            new_rules = RelayRules(**rules) if rules is not None else None
        except (LimitError, RuleError):
            return msg.ACK_REFUSED, R_BAD_LIMITS
        if lim is not None:
            checks.set_limits(lim)
        if new_rules is not None:
            r.rules = new_rules
        if self.events is not None:
            self.events.add(EV_LIMITS_CHANGED, cmd["id"], 0)
        return msg.ACK_DONE, 0

    # --- firmware updates (phasenode.ota) ----------------------------------------------------

    def updater(self):
        """The node's ``phasenode.ota.Updater``, made now if it is not yet (None: updates unsupported)."""
        if self.ota is None and self._ota_factory is not None:
            self.ota = self._ota_factory()
        return self.ota

    def _ota_data(self, payload, plain, now_ms):
        upd = self.updater()
        if upd is None:
            return self._drop(DROP_KIND, -1)
        try:
            f = msg.decode(msg.OTA_DATA, plain)
        except PhasecoreError:
            return self._drop(DROP_SCHEMA, -1)
        self.rx += 1
        r = self._seal(msg.OTA_STATUS, msg.encode(msg.OTA_STATUS, upd.data(f["ota_id"], f["index"], f["data"], now_ms)))
        if r is not None:
            # A retry of the same bytes (the status was lost) gets this status again, as a command its ack.
            self._last_cmd = bytes(payload)
            self._last_ack = r
        return r

    # --- internals: sealing ----------------------------------------------------------------

    def _changed(self):
        return self.status() != self._sealed_status or self.phase() != self._sealed_phase

    def _seal_reading(self):
        status = self.status()
        phase = self.phase()
        if phase != self._sealed_phase:
            # Readings from here on show the new phase: a decision based on an
            # older one is stale (ref_seq check).
            self._phase_seq = self.counter.value
        n = msg.encode_reading_into(self._body, self._v, self._i, self._p, self._e, self._f, self._pf, phase, status)
        try:
            k = seal.seal_into(self._rbuf, msg.READING, self._bodymv[:n], self._snd)
        except (PhasecoreError, OSError):
            self.seal_errors += 1
            self._ready = None
            return None
        self.tx += 1
        r = self._rmv[:k]
        self._ready = r
        self._ready_top = self.counter.value
        self._dirty = False
        self._sealed_status = status
        self._sealed_phase = phase
        return r

    def _sent(self):
        # REBOOTED is reported until a first reading has gone out.
        if self.rebooted:
            self.rebooted = False
            self._dirty = True

    def _seal_pending(self):
        if self._hb_due:
            body = self._heartbeat_body()
            r = self._seal(msg.HEARTBEAT, body)
            if r is not None:
                self._hb_due = False
                self._extra_src = (msg.HEARTBEAT, body)
            return r
        ev = self.events.peek()
        if ev is None:
            return None
        code, a, b = ev
        fields = {"code": code, "value": a, "value2": b}
        sev = _SEVERITY.get(code)
        if sev:
            fields["severity"] = sev
        now = self.now_s()
        if now is not None:
            fields["time_s"] = now & _U32
        try:
            body = msg.encode(msg.EVENT, fields)
        except PhasecoreError:
            self.events.pop()  # cannot be encoded: drop it rather than block the queue
            return None
        r = self._seal(msg.EVENT, body)
        if r is not None:
            self.events.pop()
            self._extra_src = (msg.EVENT, body)
        return r

    def _heartbeat_body(self):
        fields = {
            "uptime_s": self._up_s & _U32,
            "fw": self.fw,
            "tx": self.tx & _U32,
            "rx": self.rx & _U32,
            "rx_bad": self.rx_bad & _U32,
            "refusals": self.refusals & _U32,
            "phase": self.phase(),
            "status": self.status(),
        }
        r = self.relay
        if r is not None:
            st = r.stats()
            fields["moves"] = st["moves_total"] & _U32
            fields["refusals"] = (self.refusals + sum(st["refusals"])) & _U32
            fields["switch"] = st["kind"]  # the Pi's balancer takes this node's limits from it
        mem_free = getattr(gc, "mem_free", None)
        if mem_free is not None:
            fields["heap_free"] = mem_free()
        now = self.now_s()
        if now is not None:
            fields["time_s"] = now & _U32
        if self.rssi is not None and -200 <= self.rssi <= 0:
            fields["rssi_dBm"] = self.rssi
        if self._want_echo and self._nonce is not None:
            fields["boot_nonce"] = self._nonce
        return msg.encode(msg.HEARTBEAT, fields)

    def _seal(self, kind, body):
        try:
            r = seal.seal_raw(kind, body, self._snd)
        except (PhasecoreError, OSError):
            # The sequence block could not be persisted (or the key is spent):
            # sending nothing is the only safe answer; counted for the heartbeat.
            self.seal_errors += 1
            return None
        self.tx += 1
        return r
