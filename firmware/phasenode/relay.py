"""Relay controller: the home node's safety layer for moving the house between phases A, B, C.

The transformer Pi decides, the node obeys only within these rules, whatever a
command says (docs/relay-safety.md gives the defaults and the reasons):

1. never two phases closed at once: every make is preceded by opening all
   other relays, on every path (moves, restore after reboot, faults);
2. break-before-make: after the current phase opens, ``dead_time_ms`` pass
   before the target closes (optionally verified by a ``sense_open`` hook);
3. minimum dwell: ``min_dwell_s`` on a phase before it may be left again;
4. switching budget: at most ``max_per_hour`` moves in any rolling hour and
   ``max_per_day`` in any rolling 24 hours, counted when a move starts and
   persisted, so a reboot loop cannot reset it (state lost to flash corruption
   counts as a day's budget spent);
5. lock-outs: no move while a condition reported by the node's anomaly checks
   holds (over-current, meter failure, over/under-voltage), nor after a relay
   fault or lost state; voltage and meter locks clear by themselves once the
   condition has been clear ``lock_hold_s`` (no command shortens that), the
   others are latched until ``unlock()`` once their condition has cleared;
6. write-ahead persistence: the committed phase and the move intent are saved
   BEFORE any relay moves, and the new phase after. A controller built after a
   reboot or power cut at any point opens every relay first, waits the dead
   time, then closes the last committed phase (a move cut half-way is rolled
   back, never completed blind); with a ``sense_open`` hook it first checks
   that the house side is dead, and makes nothing if it is not.

Sans-IO as far as a relay driver can be: time comes in as ``now_ms`` (any
millisecond counter; a step backwards, such as a ``ticks_ms`` wrap or a reboot,
counts as no time passing, which only makes the rules stricter); storage comes
in as ``load()`` / ``save(state)`` callables (``phasenode.persist`` provides
them); relays are three objects with the ``machine.Pin`` ``value([v])``
interface. No sleeps: a move is a state machine advanced by ``tick(now_ms)``;
``await move(target, clock)`` drives it with asyncio sleeps.

Phases are numbered as on the wire (``phasecore.codes``: ``PHASE_A`` 0,
``PHASE_B`` 1, ``PHASE_C`` 2, ``PHASE_NONE`` 3 when every relay is open), in
the controller, its events and its saved state alike; so are the refusal
reasons, lock-out bits and event codes, whose names are ``phasecore.codes``'
tables (``REASON_NAMES``, ``STATUS_BITS``, ``EVENT_NAMES``).

Solid-state phase selectors (thyristors or triacs, zero-cross transfer):
``SolidStateController`` and ``SolidStateRules``, the same rules and reasons
with a transfer sequenced on the board's zero crossings (one half-cycle of
dead time) and looser dwell and budgets (docs/relay-safety.md).

Public: ``RelayController``, ``RelayRules``, ``SolidStateController``,
``SolidStateRules``, ``controller_for``, ``RelayRefused``, ``RuleError``,
``relay_pins``, ``lock_names``, the lock groups ``REPORTABLE``, ``AUTO_CLEAR``,
``LATCHING``, the controller states ``ST_*``; and, as ``phasecore.codes`` has
them, the ``PHASE_*``, ``R_*`` (refusal reasons), ``LOCK_*`` and ``EV_*``
(events) constants it uses.
"""

from phasecore import codes
from phasecore.codes import (
    EV_ABORTED,
    EV_LIVE_OPEN,
    EV_LOCKED,
    EV_MOVED,
    EV_PERSIST_FAILED,
    EV_PIN_MISMATCH,
    EV_RESTORED,
    EV_ROLLED_BACK,
    EV_STATE_LOST,
    EV_UNLOCKED,
    LOCK_ALL,
    LOCK_METER,
    LOCK_OVERCURRENT,
    LOCK_OVERVOLTAGE,
    LOCK_RELAY_FAULT,
    LOCK_STATE_LOST,
    LOCK_UNDERVOLTAGE,
    PHASE_A,
    PHASE_B,
    PHASE_C,
    PHASE_NONE,
    R_BUDGET_DAY,
    R_BUDGET_HOUR,
    R_BUSY,
    R_CONDITION_ACTIVE,
    R_DWELL,
    R_INVALID_PHASE,
    R_LOCKED_OUT,
    R_OK,
    R_PERSIST,
    R_RELAY_FAULT,
    R_SAME_PHASE,
    R_TWO_PHASES,
)
from phasecore.errors import PhasecoreError, quote
from phasenode.compat import const, sleep_ms
from phasenode.errors import NodeError

# The phases (PHASE_A 0 .. PHASE_C 2, PHASE_NONE 3: every relay open), the
# refusal reasons (R_*: RelayRefused.reason, codes 0-11 of the ack), the
# lock-out bits (LOCK_*: status bits 0-5) and the events (EV_* 1-10) are
# phasecore.codes', imported above and used here as they are on the wire.
_N_LOCKS = const(6)  # LOCK_* are bits 0..5
REPORTABLE = const(0x0F)  # conditions the anomaly checks report with ``report()``
AUTO_CLEAR = const(0x0E)  # METER | OVERVOLTAGE | UNDERVOLTAGE
LATCHING = const(0x31)  # OVERCURRENT | RELAY_FAULT | STATE_LOST: only unlock() clears
# While the house is disconnected (a move's dead time, the restore, the settle
# time after a make) the meter sees no voltage and, powered from the measured
# side, may not answer: such reports are artefacts of the switching and latch
# no lock (they still hold moves back until reported clear).
_BLACKOUT_MASKED = const(0x0A)  # METER | UNDERVOLTAGE
# Built once: the LOCK_* names are imported, so a tuple of them in report()
# would be built (allocated) on every call, in the sampling loop.
_REPORT_BITS = (LOCK_OVERCURRENT, LOCK_METER, LOCK_OVERVOLTAGE, LOCK_UNDERVOLTAGE)

# Events, drained by the node loop with drain_events() (or pop_events()) and
# reported upstream: each is a tuple (code, a, b) of small ints, phases as above.
_MAX_EVENTS = const(16)

# Controller states.
ST_IDLE = const(0)  # on ``phase`` (or all open when phase is PHASE_NONE)
ST_RESTORING = const(1)  # all open after boot or a fault; closes ``phase`` after the dead time
ST_BREAK = const(2)  # a move: origin open, target closes after the dead time
_STATE_NAMES = ("IDLE", "RESTORING", "BREAK")

_HOUR_S = const(3600)
_DAY_S = const(86400)
_PERSIST_RETRY_S = const(10)


class RelayRefused(NodeError):
    """A move or unlock was refused. ``reason`` is an ``R_*`` code for the ack.

    ``locks`` holds the lock-out bits at the time, ``retry_s`` the seconds until
    the refusal can lift by itself (0 when it will not, or is unknown).
    """

    def __init__(self, reason, target=None, locks=0, retry_s=0):
        self.reason = reason
        self.target = target
        self.locks = locks
        self.retry_s = retry_s
        if target is None:
            what = "unlock"
        elif isinstance(target, int) and not isinstance(target, bool) and PHASE_A <= target <= PHASE_C:
            what = "move to " + codes.PHASE_NAMES[target]
        else:
            what = "move to %s" % (quote(target),)
        msg = "relay %s refused: %s" % (what, codes.REASON_NAMES[reason])
        if locks:
            msg += " (locks %s)" % lock_names(locks)
        if retry_s:
            msg += " (retry in %d s)" % retry_s
        super().__init__(msg)

    @property
    def name(self):
        return codes.REASON_NAMES[self.reason]


class RuleError(NodeError):
    """A relay rule is missing its range or unknown; ``.key`` names it."""

    def __init__(self, key, msg):
        self.key = key
        self.msg = msg
        super().__init__("%s: %s" % (key, msg))


def lock_names(bits):
    """``"OVERCURRENT|METER"`` for a lock bit mask ("" for none): the status bits' names."""
    out = []
    for i in range(_N_LOCKS):
        if bits & (1 << i):
            out.append(codes.STATUS_BITS[i])
    return "|".join(out)


# name, minimum, maximum, default. Why these defaults: docs/relay-safety.md.
_RULES = (
    ("dead_time_ms", 20, 60000, 2000),
    ("min_dwell_s", 1, 86400, 900),
    ("max_per_hour", 1, 60, 2),
    ("max_per_day", 1, 1440, 6),
    ("lock_hold_s", 0, 86400, 300),
    ("settle_ms", 0, 60000, 5000),
    ("checkpoint_s", 0, 86400, 3600),
)


class RelayRules:
    """The tunable limits, validated: ``RelayRules(dead_time_ms=3000)``.

    ``dead_time_ms`` all relays open between a break and a make (20..60000;
    must exceed the relay's release time plus one mains half-cycle for the arc);
    ``min_dwell_s`` on a phase before the next move; ``max_per_hour`` and
    ``max_per_day`` moves per rolling window; ``lock_hold_s`` a voltage or
    meter condition must stay clear before its lock lifts; ``settle_ms`` after
    a make during which meter-silent and under-voltage reports latch no lock
    (at most the dwell: no move starts before a reading after the make);
    ``checkpoint_s`` between saves of the uptime clock while idle (0: never),
    which bounds how much elapsed time a reboot forgets.
    """

    _TABLE = _RULES
    kind = "mechanical"

    def __init__(self, **kw):
        for name, lo, hi, default in self._TABLE:
            v = kw.pop(name, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise RuleError(name, "must be an integer %d..%d, got %s" % (lo, hi, quote(v)))
            setattr(self, name, v)
        for name in kw:
            raise RuleError(name, "unknown relay rule")
        if self.max_per_hour > self.max_per_day:
            raise RuleError("max_per_hour", "%d exceeds max_per_day %d" % (self.max_per_hour, self.max_per_day))
        if self.settle_ms > self.min_dwell_s * 1000:
            # A move must never start before the meter has had a reading after the last make.
            raise RuleError("settle_ms", "%d exceeds min_dwell_s %d s" % (self.settle_ms, self.min_dwell_s))

    @classmethod
    def from_dict(cls, d):
        """Rules from a config mapping; absent keys take the defaults."""
        if not isinstance(d, dict):
            raise RuleError("relay", "must be an object, got %s" % (quote(d),))
        return cls(**d)

    def as_dict(self):
        d = {}
        for name, _lo, _hi, _default in self._TABLE:
            d[name] = getattr(self, name)
        return d


def relay_pins(relays, pin_factory):
    """Build the three relay pins from a board file's ``relays`` object, glitch-free.

    ``pin_factory`` is ``machine.Pin`` (or ``phasenode.hal.pin_host.RelayBoard.Pin``).
    Each pin is created with ``value=`` its OPEN level: ``Pin(n, Pin.OUT)`` alone
    would drive the output low for an instant, which closes an active-low relay
    (most opto relay boards) during boot.
    """
    if not isinstance(relays, dict):
        raise ValueError("board relays must be an object with pins and active_high, got %s" % (quote(relays),))
    ids = relays.get("pins")
    active_high = relays.get("active_high")
    if not isinstance(ids, list) or len(ids) != 3:
        raise ValueError("board relays.pins must list 3 pins (A, B, C), got %s" % (quote(ids),))
    if ids[0] == ids[1] or ids[0] == ids[2] or ids[1] == ids[2]:
        raise ValueError("board relays.pins must be 3 different pins, got %s" % (quote(ids),))
    if not isinstance(active_high, bool):
        raise ValueError("board relays.active_high must be true or false, got %s" % (quote(active_high),))
    off = 0 if active_high else 1
    return [pin_factory(i, pin_factory.OUT, value=off) for i in ids]


def _valid_state(st):
    # Defensive re-check of whatever load() returned: wrong shapes count as lost.
    if not isinstance(st, dict):
        return False
    for k in ("phase", "intent", "uptime_s", "locks", "n_moves", "n_aborts"):
        v = st.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return False
    if st["phase"] > PHASE_NONE or st["intent"] > PHASE_NONE or st["locks"] & ~LOCK_ALL:
        return False
    moves = st.get("moves")
    if not isinstance(moves, list):
        return False
    prev = 0
    for t in moves:
        if not isinstance(t, int) or isinstance(t, bool) or t < prev or t > st["uptime_s"]:
            return False
        prev = t
    return True


class RelayController:
    """Drives three phase relays under the safety rules; see the module docstring.

    ``kind`` is 0 (mechanical; ``SolidStateController``: 1), as the heartbeat
    reports it and ``phasecore.balancer`` numbers switch kinds.

    ``pins``: three Pin-like objects for A, B, C; ``active_high``: the board's
    polarity; ``load()`` returns the saved state dict, None on first boot, or
    raises (``PhasecoreError``/``OSError``) when it is unreadable; ``save(state)``
    stores one durably or raises; ``now_ms``: the clock now; ``rules``: a
    ``RelayRules``; ``home_phase``: the phase to restore when nothing (or
    nothing readable) is saved, normally the installer's wiring from the node
    config (``PHASE_NONE``: stay open until commanded); ``sense_open``:
    optional callable returning True when the house side is dead, asked at the
    end of each break (a voltage sense or auxiliary contacts): if it says no, the
    move is aborted rather than risking a make onto a welded contact, and the
    restore after boot makes nothing. ``clock``: optional ticks_ms; with it a
    move's break is timed after its write-ahead save (which takes the
    milliseconds of a flash write the caller's ``now_ms`` does not include),
    so the dead time is never shorter than ``dead_time_ms`` of real switching.

    Construction opens every relay at once, then restores (``ST_RESTORING``);
    call ``tick(now_ms)`` from the node loop (every sample is plenty; it only
    needs ``wait_ms()`` precision while busy).
    """

    kind = 0

    def __init__(
        self, pins, active_high, load, save, now_ms, rules=None, home_phase=PHASE_NONE, sense_open=None, clock=None
    ):
        if len(pins) != 3:
            raise ValueError("need 3 relay pins (A, B, C), got %d" % len(pins))
        self._pins = pins
        self._on = 1 if active_high else 0
        self._off = 0 if active_high else 1
        # Safety first: whatever the relays were doing before this boot (a soft
        # reset keeps GPIO levels), open all of them before anything can fail.
        for p in pins:
            p.value(self._off)
        if rules is None:
            rules = RelayRules()
        if home_phase not in (PHASE_A, PHASE_B, PHASE_C, PHASE_NONE) or isinstance(home_phase, bool):
            raise ValueError("home_phase must be 0 (A), 1 (B), 2 (C) or 3 (none), got %s" % (quote(home_phase),))
        self.rules = rules
        self._save_fn = save
        self._sense_open = sense_open
        # The write-ahead save before a break takes time (a flash write: milliseconds); with a
        # clock the break is stamped after it, so the dead time counts from the real break.
        self._clock = clock
        self._now = now_ms
        self._f = 0  # milliseconds past the whole second of the uptime clock
        self._events = []
        self.events_dropped = 0
        self.refusals = [0] * codes.RELAY_REASONS
        self._active = 0  # conditions reported active (last report per bit)
        self._clear_s = [-1] * _N_LOCKS  # uptime second a condition was reported clear; -1 not yet
        self._target = PHASE_NONE
        self._origin = PHASE_NONE
        self._retry_s = 0
        self._settle = 0
        self._dirty = False
        self._dirty_try_s = 0
        self._closed_s = 0
        self._closed_f = 0

        lost = False
        try:
            st = load()
        except (PhasecoreError, OSError, ValueError):
            st = None
            lost = True
        if st is not None and not _valid_state(st):
            st = None
            lost = True
        if st is None:
            self._phase = home_phase
            self._intent = PHASE_NONE
            # Lost state: how often this node switched lately is unknown, so
            # assume the worst, a day's budget spent just now.
            self._moves = [0] * rules.max_per_day if lost else []
            self._locks = LOCK_STATE_LOST if lost else 0
            self._n_moves = 0
            self._n_aborts = 0
            self._s = 0
        else:
            self._phase = st["phase"]
            self._intent = st["intent"]
            moves = list(st["moves"])
            while len(moves) > rules.max_per_day:
                moves.pop(0)
            self._moves = moves
            self._locks = st["locks"]
            self._n_moves = st["n_moves"]
            self._n_aborts = st["n_aborts"]
            # The uptime clock resumes where it was last saved: the time the
            # node was off (or ran since that save) is not counted, so the
            # budget and dwell only get stricter across a reboot.
            self._s = st["uptime_s"]
        # Until a condition is reported clear after boot, assume it still holds.
        self._active = self._locks & REPORTABLE
        self._saved_s = self._s
        if lost:
            self._event(EV_STATE_LOST, self._phase, 0)
            self._persist()
        elif self._intent != PHASE_NONE:
            # A move was cut between its write-ahead and its commit. Roll back to
            # the last committed phase: it is the one known to have worked (a
            # make onto the target may be what browned the node out), and a
            # contact welded on the origin stays harmless.
            self._event(EV_ROLLED_BACK, self._phase, self._intent)
            self._intent = PHASE_NONE
            self._persist()
        self._state = ST_RESTORING
        self._countdown = rules.dead_time_ms

    # --- read-only views --------------------------------------------------------

    @property
    def phase(self):
        """The committed phase (``PHASE_A`` .. ``PHASE_C``), or ``PHASE_NONE`` when the house is disconnected."""
        return self._phase

    @property
    def state(self):
        """``ST_IDLE``, ``ST_RESTORING`` or ``ST_BREAK``."""
        return self._state

    @property
    def state_name(self):
        return _STATE_NAMES[self._state]

    @property
    def busy(self):
        return self._state != ST_IDLE

    @property
    def target(self):
        """The phase a move in progress goes to (``PHASE_NONE`` when none)."""
        return self._target if self._state == ST_BREAK else PHASE_NONE

    @property
    def locks(self):
        """The lock-out bit mask (``LOCK_*``); moves are refused while non-zero."""
        return self._locks

    @property
    def conditions(self):
        """The conditions last reported active (``LOCK_*`` bits); moves wait for them too."""
        return self._active

    @property
    def blackout(self):
        """True while the house is disconnected or settling after a make."""
        return self._state != ST_IDLE or self._phase == PHASE_NONE or self._settle > 0

    @property
    def uptime_s(self):
        """The controller's clock: seconds of node uptime, carried across reboots."""
        return self._s

    def moves_in(self, window_s):
        """Moves started within the last ``window_s`` seconds (conservatively rounded)."""
        n = 0
        s = self._s
        moves = self._moves
        i = len(moves) - 1
        while i >= 0 and s - moves[i] <= window_s:
            n += 1
            i -= 1
        return n

    def stats(self):
        """Counters for the heartbeat."""
        return {
            "phase": self._phase,
            "state": self._state,
            "locks": self._locks,
            "moves_total": self._n_moves,
            "aborts": self._n_aborts,
            "moves_hour": self.moves_in(_HOUR_S),
            "moves_day": self.moves_in(_DAY_S),
            "refusals": list(self.refusals),
            "uptime_s": self._s,
            "kind": self.kind,
        }

    def snapshot(self):
        """The state as saved: ``phase``, ``intent``, ``uptime_s``, ``moves``, ``locks``, counters."""
        return {
            "phase": self._phase,
            "intent": self._intent,
            "uptime_s": self._s,
            "moves": list(self._moves),
            "locks": self._locks,
            "n_moves": self._n_moves,
            "n_aborts": self._n_aborts,
        }

    def pop_events(self):
        """Events since the last call, oldest first, as a new list of ``(code, a, b)`` tuples."""
        ev = self._events
        self._events = []
        return ev

    def drain_events(self, queue):
        """Hand the events since the last call to ``queue.add(code, a, b)``, oldest first; returns how many.

        ``queue`` is the node's ``phasenode.events.EventQueue`` (or anything
        with that ``add``). Unlike ``pop_events`` this allocates nothing when
        there is nothing to hand over, so the sampling loop calls it every cycle.
        """
        ev = self._events
        n = len(ev)
        if n:
            for e in ev:
                queue.add(e[0], e[1], e[2])
            del ev[:]
        return n

    def wait_ms(self):
        """Milliseconds until the next timed step of a move or restore (0 when idle or due)."""
        if self._state == ST_IDLE or self._countdown <= 0:
            return 0
        return self._countdown

    # --- commands ---------------------------------------------------------------

    def check(self, target, now_ms):
        """The ``R_*`` reason a move to ``target`` would be refused for now, ``R_OK`` if none.

        Changes nothing (besides the clock and expired locks).
        """
        self._advance(now_ms)
        self._auto_unlock()
        return self._check(target)

    def request(self, target, now_ms):
        """Start a move to ``target`` (``PHASE_A`` .. ``PHASE_C``); raises ``RelayRefused`` with the reason.

        On success the intent is saved, the current phase is open, and the
        target closes at the first ``tick`` after the dead time.
        """
        self._advance(now_ms)
        reason = R_OK
        if self._state == ST_IDLE:
            reason = self._check_pins()
        self._auto_unlock()
        if reason == R_OK:
            reason = self._check(target)
        if reason != R_OK:
            self._refuse(reason, target)
        # Write-ahead: the move counts against the budget and its intent is on
        # flash before any relay moves. A cut from here on restores the origin.
        origin = self._phase
        moves = self._moves
        moves.append(self._s)
        dropped = moves.pop(0) if len(moves) > self.rules.max_per_day else -1
        self._intent = target
        self._n_moves += 1
        if not self._persist():
            moves.pop()
            if dropped >= 0:
                moves.insert(0, dropped)
            self._n_moves -= 1
            self._intent = PHASE_NONE
            self._refuse(R_PERSIST, target)
        self._origin = origin
        self._target = target
        if self._clock is not None:
            self._advance(self._clock())
        self._open_all(origin)
        self._state = ST_BREAK
        self._countdown = self.rules.dead_time_ms

    def tick(self, now_ms):
        """Advance moves, the restore and lock timers; returns the state after."""
        self._advance(now_ms)
        st = self._state
        if st == ST_IDLE:
            self._check_pins()
        elif self._countdown <= 0:
            if st == ST_RESTORING:
                self._finish_restore()
            else:
                self._finish_move()
        self._auto_unlock()
        if self._dirty:
            if self._s - self._dirty_try_s >= _PERSIST_RETRY_S:
                self._persist()
        elif self._state == ST_IDLE and self.rules.checkpoint_s and self._s - self._saved_s >= self.rules.checkpoint_s:
            self._persist()
        return self._state

    async def move(self, target, clock):
        """Move to ``target`` and wait for the make: ``await ctl.move(PHASE_B, time.ticks_ms)``.

        ``clock()`` gives now in ms. Returns the phase; raises ``RelayRefused``
        when refused, or with ``R_RELAY_FAULT`` when the move was aborted.
        """
        self.request(target, clock())
        while self._state != ST_IDLE:
            w = self.wait_ms()
            await sleep_ms(w if w > 0 else 1)
            self.tick(clock())
        if self._phase != target:
            raise RelayRefused(R_RELAY_FAULT, target, self._locks)
        return self._phase

    def report(self, lock, active, now_ms):
        """The anomaly checks report a condition (one ``LOCK_*`` bit of ``REPORTABLE``).

        ``active`` True sets the lock at once (saved); False starts the clear
        time. During ``blackout`` (the switching itself makes the meter silent
        and the voltage low) an active meter or under-voltage report does not
        latch a lock; it still blocks moves until reported clear. Returns False
        for such a report, True otherwise.
        """
        if lock not in _REPORT_BITS:
            raise ValueError(
                "report() takes one of LOCK_OVERCURRENT, LOCK_METER, LOCK_OVERVOLTAGE, "
                "LOCK_UNDERVOLTAGE, got %s" % (quote(lock),)
            )
        self._advance(now_ms)
        i = _bit_index(lock)
        if active:
            self._active |= lock
            self._clear_s[i] = -1
            if lock & _BLACKOUT_MASKED and self.blackout:
                return False
            if not self._locks & lock:
                self._locks |= lock
                self._event(EV_LOCKED, lock, self._locks)
                self._persist()
        elif self._active & lock:
            self._active &= ~lock
            self._clear_s[i] = self._s
        self._auto_unlock()
        return True

    def unlock(self, bits, now_ms):
        """Clear latched lock-outs (the Pi's unlock command); returns the locks left.

        Only ``LATCHING`` bits are cleared: voltage and meter locks lift by
        themselves ``lock_hold_s`` after their condition clears, and no command
        shortens that. Refused with ``R_CONDITION_ACTIVE`` if over-current has
        not been reported clear since it was set (or since boot).
        """
        if not isinstance(bits, int) or isinstance(bits, bool) or not 0 < bits <= LOCK_ALL:
            raise ValueError(
                "unlock bits must be a non-zero mask of LOCK_* (<= 0x%02x), got %s" % (LOCK_ALL, quote(bits))
            )
        self._advance(now_ms)
        if self._active & bits & LATCHING:
            self._refuse(R_CONDITION_ACTIVE, None)
        cleared = self._locks & bits & LATCHING
        if cleared:
            self._locks &= ~cleared
            self._event(EV_UNLOCKED, cleared, self._locks)
            self._persist()
        return self._locks

    # --- internals --------------------------------------------------------------

    def _advance(self, now_ms):
        d = now_ms - self._now
        self._now = now_ms
        if d <= 0:
            return  # clock stepped back or wrapped: count nothing (stricter, never laxer)
        if self._countdown > 0:
            self._countdown -= d
        if self._settle > 0:
            self._settle -= d
        f = self._f + d
        if f >= 1000:
            self._s += f // 1000
            f %= 1000
        self._f = f

    def _check(self, target):
        self._retry_s = 0
        if not isinstance(target, int) or isinstance(target, bool) or not PHASE_A <= target <= PHASE_C:
            return R_INVALID_PHASE
        if self._state != ST_IDLE:
            return R_BUSY
        if target == self._phase:
            return R_SAME_PHASE
        if self._locks | self._active:
            return R_LOCKED_OUT
        if self._phase != PHASE_NONE:
            # Dwell counted from the make onto this phase, to the millisecond.
            ds = self._s - self._closed_s
            dwell = self.rules.min_dwell_s
            if ds < dwell or (ds == dwell and self._f < self._closed_f):
                self._retry_s = dwell - ds + 1
                return R_DWELL
        r = self._budget(_HOUR_S, self.rules.max_per_hour, R_BUDGET_HOUR)
        if r == R_OK:
            r = self._budget(_DAY_S, self.rules.max_per_day, R_BUDGET_DAY)
        return r

    def _budget(self, window, limit, reason):
        # Move times are whole uptime seconds; a move leaves the window only once
        # ``s - t > window``, i.e. surely more than ``window`` seconds ago.
        moves = self._moves
        if self.moves_in(window) < limit:
            return R_OK
        oldest = moves[len(moves) - limit]
        self._retry_s = oldest + window + 1 - self._s
        return reason

    def _refuse(self, reason, target):
        self.refusals[reason] += 1
        raise RelayRefused(reason, target, (self._locks | self._active) if reason == R_LOCKED_OUT else 0, self._retry_s)

    def _open_all(self, first):
        # Open the closed phase first (the one that matters), then the others again.
        pins = self._pins
        off = self._off
        if first != PHASE_NONE:
            pins[first].value(off)
        for p in pins:
            p.value(off)

    def _make(self, phase):
        # The make: every other relay is commanded open (again) before the one closes.
        pins = self._pins
        off = self._off
        for i in range(3):
            if i != phase:
                pins[i].value(off)
        if phase != PHASE_NONE:
            pins[phase].value(self._on)
            self._settle = self.rules.settle_ms
        self._closed_s = self._s
        self._closed_f = self._f
        self._state = ST_IDLE

    def _finish_restore(self):
        phase = self._phase
        if phase != PHASE_NONE and self._sense_open is not None and not self._sensed_open():
            # Live with every relay commanded open: a contact welded (it stays
            # closed without coil power) or a feed from elsewhere. Which phase
            # is unknown, so making any could bridge two: make none, latch.
            self._phase = PHASE_NONE
            self._make(PHASE_NONE)
            self._event(EV_LIVE_OPEN, phase, 0)
            if not self._locks & LOCK_RELAY_FAULT:
                self._locks |= LOCK_RELAY_FAULT
                self._event(EV_LOCKED, LOCK_RELAY_FAULT, self._locks)
            self._persist()
            return
        self._make(phase)
        self._event(EV_RESTORED, phase, 0)

    def _finish_move(self):
        origin = self._origin
        target = self._target
        if self._sense_open is not None and not self._sensed_open():
            # Something is still live with every relay commanded open: most likely
            # the origin's contact welded. Making the target now would bridge two
            # phases. Re-close the origin (harmless if welded) and latch a fault.
            self._make(origin)
            self._intent = PHASE_NONE
            self._n_aborts += 1
            self._locks |= LOCK_RELAY_FAULT
            self._event(EV_ABORTED, origin, target)
            self._event(EV_LOCKED, LOCK_RELAY_FAULT, self._locks)
            self._persist()
            return
        self._make(target)
        self._phase = target
        self._intent = PHASE_NONE
        self._event(EV_MOVED, origin, target)
        self._persist()

    def _sensed_open(self):
        try:
            return bool(self._sense_open())
        except (OSError, ValueError):
            return False  # a sense that cannot answer does not prove the break

    def _check_pins(self):
        # Read the relay outputs back (machine.Pin.value() of an output gives its
        # level); any difference from what this controller drove is a fault.
        pins = self._pins
        on = self._on
        seen = 0
        n = 0
        for i in range(3):
            v = pins[i].value()
            if v is None:
                return R_OK  # this pin type cannot be read back
            if v == on:
                seen |= 1 << i
                n += 1
        want = (1 << self._phase) if self._phase != PHASE_NONE else 0
        if seen == want:
            return R_OK
        self._open_all(PHASE_NONE)
        self._event(EV_PIN_MISMATCH, seen, self._phase)
        if not self._locks & LOCK_RELAY_FAULT:
            self._locks |= LOCK_RELAY_FAULT
            self._event(EV_LOCKED, LOCK_RELAY_FAULT, self._locks)
        self._persist()
        self._state = ST_RESTORING
        self._countdown = self.rules.dead_time_ms
        return R_TWO_PHASES if n > 1 else R_RELAY_FAULT

    def _auto_unlock(self):
        auto = self._locks & AUTO_CLEAR & ~self._active
        if not auto:
            return
        cleared = 0
        hold = self.rules.lock_hold_s
        for i in range(_N_LOCKS):
            b = 1 << i
            # Strictly more than hold whole seconds: surely hold_s of real time.
            if auto & b and self._clear_s[i] >= 0 and self._s - self._clear_s[i] > hold:
                cleared |= b
        if cleared:
            self._locks &= ~cleared
            self._event(EV_UNLOCKED, cleared, self._locks)
            self._persist()

    def _persist(self):
        self._dirty_try_s = self._s
        try:
            self._save_fn(self.snapshot())
        except (OSError, PhasecoreError, ValueError):
            if not self._dirty:
                self._event(EV_PERSIST_FAILED, 0, 0)
            self._dirty = True
            return False
        self._dirty = False
        self._saved_s = self._s
        return True

    def _event(self, code, a, b):
        ev = self._events
        if len(ev) >= _MAX_EVENTS:
            ev.pop(0)
            self.events_dropped += 1
        ev.append((code, a, b))


# Solid-state rules: name, minimum, maximum, default. Why these defaults:
# docs/relay-safety.md, "Solid-state phase selectors".
_SS_RULES = (
    ("mains_hz", 50, 60, 50),
    ("min_dwell_s", 1, 86400, 120),
    ("max_per_hour", 1, 60, 30),
    ("max_per_day", 1, 1440, 96),
    ("lock_hold_s", 0, 86400, 300),
    ("settle_ms", 0, 60000, 1000),
    ("checkpoint_s", 0, 86400, 3600),
    ("zc_timeout_ms", 30, 1000, 100),
)


class SolidStateRules(RelayRules):
    """The limits of a solid-state phase selector: ``SolidStateRules(max_per_day=48)``.

    ``mains_hz`` 50 or 60; the dead time is one half-cycle of it
    (``dead_time_ms`` 10 at 50 Hz, 8 at 60 Hz rounded down; ``max_gap_ms``
    10 and 9 rounded up), not a setting:
    a transfer waits for the origin's current zero crossing and fires the
    target at the next zero crossing. ``zc_timeout_ms``: with no zero
    crossing reported (or the origin still conducting) this long, the
    transfer is aborted. ``min_dwell_s``, ``max_per_hour``, ``max_per_day``,
    ``lock_hold_s``, ``settle_ms``, ``checkpoint_s`` as for relays, with the
    looser defaults a switch without wear and with a half-cycle gap allows.
    """

    _TABLE = _SS_RULES
    kind = "solid-state"

    def __init__(self, **kw):
        super().__init__(**kw)
        if self.mains_hz not in (50, 60):
            raise RuleError("mains_hz", "must be 50 or 60, got %s" % (quote(self.mains_hz),))
        # One half-cycle in whole ms: at least dead_time_ms (rounded down, 8 at
        # 60 Hz), at most max_gap_ms (rounded up, 9); 10 and 10 at 50 Hz.
        self.dead_time_ms = 1000 // (2 * self.mains_hz)
        self.max_gap_ms = (1000 + 2 * self.mains_hz - 1) // (2 * self.mains_hz)


ST_COMMUTATE = const(3)  # solid-state: origin gate removed, waiting for its current zero crossing


class SolidStateController(RelayController):
    """Drives a solid-state phase selector (three thyristor/triac switches) under the safety rules.

    As ``RelayController`` (the same refusal reasons, lock-outs, budgets,
    write-ahead persistence and restore), with these differences:

    - ``pins`` drive the three gates (``active_high`` their polarity); a
      gated switch conducts, and one whose gate is removed goes on conducting
      until its current next crosses zero;
    - ``conducting()`` (required) is the board's report of which phases
      conduct, a bit mask (bit i phase i), from its per-phase current-zero
      detectors;
    - ``zero_cross(now_ms)`` is called at each zero crossing the board
      reports (its zero-cross interrupt, every half-cycle); a transfer
      advances only there: the origin's gate is removed at the request, the
      origin must be reported not conducting at a zero crossing (its current
      has reached zero), and the target is gated at the next zero crossing,
      one half-cycle later -- never two phases conducting, a supply gap of one
      half-cycle. ``tick`` only watches the time: with no zero crossing, or
      the origin still conducting (a shorted switch, as a welded contact),
      for ``zc_timeout_ms``, the transfer is aborted: the origin is gated
      again (it is the house's phase; the target was never gated) and
      ``RELAY_FAULT`` latches.
    - the restore after a boot is as for relays (every gate off first, the
      dead time, then the committed phase, provided nothing conducts).
    """

    def __init__(self, pins, active_high, load, save, now_ms, rules=None, home_phase=PHASE_NONE, conducting=None):
        if rules is None:
            rules = SolidStateRules()
        if not isinstance(rules, SolidStateRules):
            raise ValueError("a solid-state controller takes SolidStateRules, got %s" % (quote(type(rules).__name__),))
        if conducting is None:
            raise ValueError("a solid-state controller needs the board's conduction report (conducting)")
        self._conducting = conducting
        self._wait = 0  # ms the transfer has waited for its next step
        self._cond_at = 0  # _wait when the origin was last known to conduct (the gate removal, or a crossing)
        self._rz = False  # restore: a crossing has been seen with nothing conducting
        self._stepped = False  # the clock stepped back during this transfer
        self.zero_crossings = 0
        super().__init__(pins, active_high, load, save, now_ms, rules, home_phase, self._none_conducting)
        # The restore is sequenced on crossings too (``zero_cross``); with none
        # reported it falls back to the clock, after zc_timeout_ms.
        self._countdown = rules.zc_timeout_ms

    def _none_conducting(self):
        return self._conducting() & 7 == 0

    @property
    def busy(self):
        return self._state != ST_IDLE

    @property
    def target(self):
        return self._target if self._state in (ST_BREAK, ST_COMMUTATE) else PHASE_NONE

    @property
    def state_name(self):
        return "COMMUTATE" if self._state == ST_COMMUTATE else _STATE_NAMES[self._state]

    def wait_ms(self):
        """Milliseconds until the transfer times out (zero crossings move it on sooner)."""
        if self._state in (ST_BREAK, ST_COMMUTATE):
            left = self.rules.zc_timeout_ms - self._wait
            return left if left > 0 else 0
        return super().wait_ms()

    def request(self, target, now_ms):
        """Start a transfer to ``target``: the origin's gate is removed now; ``zero_cross`` does the rest."""
        super().request(target, now_ms)
        self._state = ST_COMMUTATE
        self._wait = 0
        self._cond_at = 0
        self._stepped = False

    def _advance(self, now_ms):
        d = now_ms - self._now
        super()._advance(now_ms)
        if self._state in (ST_BREAK, ST_COMMUTATE, ST_RESTORING):
            if d > 0:
                self._wait += d
            elif d < 0:
                # The clock stepped back (a ticks_ms wrap, a reset of the caller's
                # clock): the half-cycle can no longer be timed. Mark it; the next
                # step aborts a transfer rather than gate the target late.
                self._stepped = True

    def tick(self, now_ms):
        """Advance the restore, lock timers and the transfer's timeout; returns the state after."""
        if self._state in (ST_BREAK, ST_COMMUTATE):
            self._advance(now_ms)
            if self._wait >= self.rules.zc_timeout_ms:
                self._abort()
            self._auto_unlock()
            if self._dirty and self._s - self._dirty_try_s >= _PERSIST_RETRY_S:
                self._persist()
            return self._state
        return super().tick(now_ms)

    def zero_cross(self, now_ms):
        """The board reports a zero crossing: the transfer's next step, if one is under way."""
        self._advance(now_ms)
        self.zero_crossings += 1
        st = self._state
        if st == ST_RESTORING:
            # Every gate is off since the boot: once a crossing finds nothing
            # conducting, conduction ended there (or before); the committed
            # phase is gated at the next one, a half-cycle later.
            if self._conducting() & 7:
                self._rz = False
            elif not self._rz or self._wait < self.rules.dead_time_ms:
                if not self._rz:
                    self._wait = 0
                self._rz = True
            else:
                self._finish_restore()
            return self._state
        if self._stepped and st in (ST_COMMUTATE, ST_BREAK):
            self._abort(latch=False)
            return self._state
        if st == ST_COMMUTATE:
            if self._conducting() & 7:
                self._cond_at = self._wait  # still conducting (a shorted switch: the timeout aborts)
                return st
            if self._wait - self._cond_at > self.rules.max_gap_ms:
                # Crossings went unreported: when the origin stopped is unknown, and
                # the gap may already exceed a half-cycle. Never gate the target.
                self._abort()
                return self._state
            # The origin's current crossed zero and it stopped: the dead half-cycle starts.
            self._state = ST_BREAK
            self._wait = 0
        elif st == ST_BREAK:
            if self._wait < self.rules.dead_time_ms:
                return st  # an edge too early to be the next zero crossing: noise, ignored
            if self._wait > self.rules.max_gap_ms or self._conducting() & 7:
                # A zero crossing was missed (the gap would exceed a half-cycle), or
                # something still conducts: never gate the target.
                self._abort()
                return self._state
            self._finish_move()
        return self._state

    def _abort(self, latch=True):
        # No zero crossing, or something still conducts: never gate the target.
        # The origin is gated again (the house's phase; harmless if it is the
        # shorted one). ``latch``: a hardware fault (not a clock step) latches
        # RELAY_FAULT until unlocked.
        origin = self._origin
        target = self._target
        # Still conducting (aborted before its current crossed zero): the house
        # never lost supply, so gating it again is no make and starts no settle
        # (a meter or voltage report now is real, not a switching artefact).
        held = origin != PHASE_NONE and self._conducting() & (1 << origin)
        self._make(origin)
        if held:
            self._settle = 0
        self._intent = PHASE_NONE
        self._n_aborts += 1
        self._event(EV_ABORTED, origin, target)
        if latch:
            self._locks |= LOCK_RELAY_FAULT
            self._event(EV_LOCKED, LOCK_RELAY_FAULT, self._locks)
        self._persist()

    kind = 1


def _bit_index(bit):
    i = 0
    while bit > 1:
        bit >>= 1
        i += 1
    return i
