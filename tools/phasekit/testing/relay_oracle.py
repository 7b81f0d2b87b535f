"""The relay safety oracle: randomized command / lock-out / clock / power-cut sequences, checked.

Used by ``phasekit bench relay`` (issue 3's target: zero unsafe relay states
in 100,000 randomized sequences) and by tests/firmware/test_relay_cpython.py
at a smaller scale. Each sequence builds a fresh node relay side (``phasenode.relay`` on the
simulated board of ``phasenode.hal.pin_host``, state in real files through
``phasenode.persist``, without fsync, under /dev/shm when it exists) with
random rules and polarity, and throws a random sequence of actions at it:
commands (valid and not), condition reports, unlocks, idle time, clock steps
backwards, welded contacts (a voltage sense on the house side sees them),
flash that refuses writes, soft resets,
power cuts before or after ANY pin write or file save (armed k side effects
ahead), and corrupted state files. A power cut opens every relay (monostable
relays lose coil power); the firmware then boots again from the files and
the pins as the cut left them.

An independent oracle (``Rig``), fed only by what it can see (the board's
contact transitions in true time, the saved files, the return values),
checks after every step:

- never two phases closed at any recorded instant;
- every make came at least the dead time after any other phase opened;
- every move attempt (its write-ahead save) came after the origin phase had
  been closed for the minimum dwell, in true time;
- attempts in any rolling hour / 24 h never exceed the budgets, in true time
  (the controller's clock must never run ahead of true time, power-off included);
- no attempt while any condition holds in the world (conditions are
  re-reported after every boot and tick, as the node loop does), while an
  over-current lock is latched and not explicitly unlocked after it cleared,
  nor less than the hold time after a latched voltage/meter condition cleared;
- a lock is lifted only by a legitimate unlock (over-current once clear) or
  after the hold; a report not latched as a switching artefact really came
  while the house was disconnected or settling;
- every change of the connected phase is the make of the latest move attempt
  or the restore after a boot; after a boot the restored phase is the last committed one.

``run`` gives the totals: sequences, steps, moves executed, refusals by
reason, power cuts, soft resets, unsafe states found (must be 0), and the
first few failures with their seed. Public: ``Rig``, ``Violation``,
``random_rules``, ``random_action``, ``random_actions``, ``run``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any, Literal

from phasecore import codes
from phasenode import relay as R
from phasenode.hal.pin_host import PowerCut, RelayBoard, SolidStateBoard
from phasenode.persist import Store

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
_REPORTABLE = (R.LOCK_OVERCURRENT, R.LOCK_METER, R.LOCK_OVERVOLTAGE, R.LOCK_UNDERVOLTAGE)
_AUTO = (R.LOCK_METER, R.LOCK_OVERVOLTAGE, R.LOCK_UNDERVOLTAGE)
_MASKED = (R.LOCK_METER, R.LOCK_UNDERVOLTAGE)

# An action of a sequence (``random_action`` says how each is drawn): the kind, then its arguments.
Action = (
    tuple[Literal["wait"], int, int]  # true ms to let pass, in ticks of at most this many ms
    | tuple[Literal["move"], int]  # move command to this phase (sometimes not a valid one)
    | tuple[Literal["report"], int, bool]  # condition (index into _REPORTABLE) active or clear
    | tuple[Literal["unlock"], int]  # unlock command with this lock mask
    | tuple[Literal["jump"], int]  # the node's clock steps back this many ms
    | tuple[Literal["cut"], int, int]  # power cut after this many side effects, off this many ms
    | tuple[Literal["soft"]]  # soft reset
    | tuple[Literal["corrupt"], bytes]  # the relay state file overwritten with these bytes
    | tuple[Literal["flash"], bool]  # flash refuses writes (or works again)
    | tuple[Literal["weld"], bool]  # weld the closed contact (or repair a welded one)
    | tuple[Literal["zc"], bool]  # solid-state: the zero-cross detector falls silent (or comes back)
    | tuple[Literal["edge"]]  # solid-state: a spurious edge from the detector
)
# The relay state the firmware saves (phasenode.relay): phase, intent, n_moves, n_aborts, locks ...
RelayState = dict[str, Any]


class Violation(AssertionError):
    """An unsafe state or a broken rule, found by the oracle."""


class Rig:
    """One node's relay side in true time ``T`` (ms), with the oracle watching.

    ``rules``: a ``phasenode.relay.RelayRules``; ``root``: an empty folder for
    the state files. Drive it with ``step(action)`` (see ``random_actions``
    for the action tuples); a failed check raises ``Violation``.
    """

    def __init__(
        self,
        rules: R.RelayRules,
        root: str,
        active_high: bool = True,
        home: int = R.PHASE_A,
        rng: random.Random | None = None,
    ):
        self.rng = rng if rng is not None else random.Random(0)
        self.rules = rules
        self.home = home
        self.T = 0
        self.offset = 0  # the node's ms clock is T + offset
        self.board = self._new_board(active_high)
        self.board.trip = self._trip
        self.store = Store(root, fsync=False)
        self.root = root
        self._load, self._save = self.store.relay_storage()
        self.ops = 0
        self.cut_at: int | None = None
        self.flash_broken = False  # saves raise OSError (flash full or failing)
        self.ctl: R.RelayController | None = None
        # counters
        self.moves_done = 0
        self.attempts: list[int] = []  # true times of recent move attempts (write-ahead saves)
        self.n_attempts = 0
        self.refusals = [0] * codes.RELAY_REASONS
        self.power_cuts = 0
        self.soft_resets = 0
        self.state_losses = 0
        self.aborts = 0
        # oracle state
        self._seen = 0  # board transitions examined
        self._connected = R.PHASE_NONE  # last phase the house was on (PHASE_NONE: never)
        self._restore_pending = True  # the first make after a boot may change phase
        self._pending_target = R.PHASE_NONE  # target of the latest attempt in this boot
        self._committed = R.PHASE_NONE  # last committed phase as saved (PHASE_NONE: unknown)
        self._last_n_moves = 0
        self._last_aborts = 0
        self._lost_ms = 0  # true time the node's clock could not count (steps back)
        self._lost_at_make = 0
        self._jumped = False
        self._t_call = 0
        self._oc_latched = False
        self._world: dict[int, bool] = {}  # lock bit -> last taken report (True: active)
        self._auto_latched: dict[int, bool] = {}  # auto bit -> a lock was latched (report taken), not lifted
        self._first_clear: dict[int, int] = {}  # bit -> T the condition last went clear in the world
        self._expected_restore: int | None = None
        self.boot()

    # --- the node -----------------------------------------------------------------

    def now(self) -> int:
        """The node's ms clock: true time plus the offset its resets and steps back left."""
        return self.T + self.offset

    def _trip(self, *_: object) -> None:
        self.ops += 1
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.cut_at = None
            raise PowerCut()

    def _save_hook(self, st: RelayState) -> None:
        self._trip()
        if self.flash_broken:
            raise OSError(28, "no space left on flash")
        self._before_save(st)
        self._save(st)
        self._after_save(st)
        self._trip()

    def _sense(self) -> bool:
        # A voltage sense on the house side: dead only when no contact is closed.
        return not self.board.live()

    def boot(self) -> None:
        """Start the firmware (after power-on or a soft reset); a cut may hit this too."""
        self.offset = (-self.T + self.rng.randrange(1000)) if self.T else 0
        self._jumped = False
        self._t_call = self.T
        self._restore_pending = True
        self._pending_target = R.PHASE_NONE
        self.ctl = None
        st = self._peek_state()
        self._expected_restore = st["phase"] if st is not None else None
        ctl = self._new_controller()
        self.ctl = ctl
        self._after_gates_off()
        stuck = [p for p in self.board.closed() if p not in self.board.welded()]
        if stuck:
            raise Violation("t=%d: relays %s still closed after the controller was built" % (self.T, stuck))
        self._check_board()
        self._sample()

    def _new_board(self, active_high: bool) -> RelayBoard:
        return RelayBoard(active_high, clock=lambda: self.T, keep=None)

    def _after_gates_off(self) -> None:
        """Between the controller opening every relay at boot and the check: nothing (relays open at once)."""

    def _new_controller(self) -> R.RelayController:
        return R.RelayController(
            self.board.pins,
            self.board.active_high,
            self._load,
            self._save_hook,
            self.now(),
            self.rules,
            self.home,
            sense_open=self._sense,
        )

    def _peek_state(self) -> RelayState | None:
        try:
            return self.store.load_relay()
        except R.PhasecoreError:
            return None
        finally:
            self.store.pop_events()

    # --- actions ---------------------------------------------------------------------

    def step(self, action: Action) -> None:
        """Run one action tuple; a power cut anywhere inside ends in a reboot."""
        try:
            if self.ctl is None:
                self.boot()
            self._do(action)
        except PowerCut:
            self._power_cycle(action)
        self._check_board()

    def _power_cycle(self, action: Action) -> None:
        # Monostable relays: the cut opens every contact; the MCU reboots after.
        while True:
            self.power_cuts += 1
            self.ctl = None
            self.board.power_cut()
            self.T += 1 + (action[-1] if action[0] == "cut" else 1000)
            self.board.power_on()
            self._check_board()
            try:
                self.boot()
                return
            except PowerCut:
                continue

    def _do(self, a: Action) -> None:
        ctl = self.ctl
        assert ctl is not None  # step() boots first
        if a[0] == "wait":
            _, ms, step = a
            end = self.T + ms
            while self.T < end:
                self.T = min(end, self.T + step)
                ctl.tick(self._call())
                self._check_board()
                self._sample()
        elif a[0] == "move":
            try:
                ctl.request(a[1], self._call())
            except R.RelayRefused as e:
                self.refusals[e.reason] += 1
        elif a[0] == "report":
            bit = _REPORTABLE[a[1]]
            self._set_world(bit, a[2])
            self._report(bit, a[2])
        elif a[0] == "unlock":
            try:
                ctl.unlock(a[1], self._call())
            except R.RelayRefused as e:
                self.refusals[e.reason] += 1
        elif a[0] == "jump":
            self.offset -= a[1]  # the node's clock steps back
            self._jumped = True
        elif a[0] == "cut":
            self.cut_at = self.ops + a[1]
            if a[1] == 0:
                raise PowerCut()
        elif a[0] == "soft":
            self.soft_resets += 1
            self.board.soft_reset()
            self.boot()
        elif a[0] == "corrupt":
            with open(os.path.join(self.root, "relay.json"), "wb") as f:
                f.write(bytes(a[1]))
            self.state_losses += 1
            # The latch is lost with the file; STATE_LOST (latched) and a spent
            # budget stand in for it until someone unlocks.
            self._oc_latched = False
            self._auto_latched = {}
            self.board.soft_reset()
            self.boot()
        elif a[0] == "flash":
            self.flash_broken = a[1]
        elif a[0] == "weld":
            closed = self.board.closed()
            if a[1] and len(closed) == 1:
                self.board.weld(closed[0])
            elif not a[1] and self.board.welded():
                # A repair: power off, free the contact, power on.
                self.power_cuts += 1
                self.ctl = None
                self.board.power_cut()
                self.board.unweld()
                self.T += 60000
                self.board.power_on()
                self._check_board()
                self.boot()
        else:
            raise ValueError("unknown action %r" % (a,))

    def _call(self) -> int:
        # The node's clock for a controller call. The interval in which its
        # clock stepped back is not counted by the controller: remember how much
        # true time that was (only the settle mask is an "at most" rule).
        if self._jumped:
            self._lost_ms += self.T - self._t_call
            self._jumped = False
        self._t_call = self.T
        return self.now()

    # --- oracle --------------------------------------------------------------------------

    def _set_world(self, bit: int, active: bool) -> None:
        # The condition in the world (what the anomaly checks see), whether or
        # not the firmware hears of it before a cut: it is re-reported after boot.
        was = self._world.get(bit, False)
        self._world[bit] = active
        if active:
            self._first_clear.pop(bit, None)
        elif was:
            self._first_clear[bit] = self.T

    def _sample(self) -> None:
        # What the node loop does every sample: report every condition it checks.
        for bit in _REPORTABLE:
            if bit in self._world:
                self._report(bit, self._world[bit])

    def _report(self, bit: int, active: bool) -> None:
        ctl = self.ctl
        assert ctl is not None  # reports reach a booted controller only
        taken = ctl.report(bit, active, self._call())
        if taken:
            if active:
                # The oracle holds the firmware to the locks it has SAVED (a lock
                # held in RAM only, with flash failing, is forgotten by a reboot;
                # the next sample after boot sets it again).
                self._sync_locks(self._peek_state())
        else:
            if not active or bit not in _MASKED:
                raise Violation(
                    "t=%d: report %s active=%s refused outside the masking rule" % (self.T, R.lock_names(bit), active)
                )
            welded = self.board.welded()
            closed = [p for p in self.board.closed() if p not in welded]
            if closed:
                since = self.T - self.board.last_close_ms(closed[0]) - (self._lost_ms - self._lost_at_make)
                if since >= self.rules.settle_ms and ctl.state == R.ST_IDLE:
                    raise Violation(
                        "t=%d: %s report not latched %d ms after the make (settle %d)"
                        % (self.T, R.lock_names(bit), since, self.rules.settle_ms)
                    )

    def _before_save(self, st: RelayState) -> None:
        # Runs inside the firmware's save, before the file is written.
        if st["intent"] != R.PHASE_NONE and st["n_moves"] != self._last_n_moves:
            self._on_attempt(st)
        if st["locks"] & R.LOCK_STATE_LOST:
            # Saved state was lost: its locks with it. STATE_LOST (latched) and a
            # spent day's budget stand in for them; the next sample sets them again.
            return
        if self._oc_latched and not st["locks"] & R.LOCK_OVERCURRENT:
            if self._world.get(R.LOCK_OVERCURRENT, False):
                raise Violation("t=%d: over-current unlatched while it was still reported active" % self.T)
        for bit in _AUTO:
            if self._auto_latched.get(bit) and not st["locks"] & bit:
                clear = self._first_clear.get(bit)
                if self._world.get(bit, False) or clear is None or self.T - clear < self.rules.lock_hold_s * 1000:
                    raise Violation(
                        "t=%d: %s lock lifted %s ms after the condition cleared (hold %d s)"
                        % (self.T, R.lock_names(bit), None if clear is None else self.T - clear, self.rules.lock_hold_s)
                    )

    def _after_save(self, st: RelayState) -> None:
        self._last_n_moves = st["n_moves"]
        if st["n_aborts"] > self._last_aborts:
            self.aborts += st["n_aborts"] - self._last_aborts
        self._last_aborts = st["n_aborts"]
        self._committed = st["phase"]
        self._sync_locks(st)

    def _sync_locks(self, st: RelayState | None) -> None:
        locks = st["locks"] if st is not None else 0
        self._oc_latched = bool(locks & R.LOCK_OVERCURRENT)
        for bit in _AUTO:
            self._auto_latched[bit] = bool(locks & bit)

    def _on_attempt(self, st: RelayState) -> None:
        T = self.T
        origin = st["phase"]
        target = st["intent"]
        rules = self.rules
        closed = self.board.closed()
        if origin != R.PHASE_NONE:
            if closed != [origin]:
                raise Violation("t=%d: move %d->%d saved while the board has %s closed" % (T, origin, target, closed))
            dwell = T - self.board.last_close_ms(origin)
            if dwell < rules.min_dwell_s * 1000:
                raise Violation(
                    "t=%d: move %d->%d after %d ms on the phase (dwell %d s)"
                    % (T, origin, target, dwell, rules.min_dwell_s)
                )
        if self._oc_latched or self._world.get(R.LOCK_OVERCURRENT, False):
            raise Violation("t=%d: move %d->%d while over-current latched" % (T, origin, target))
        for bit in _AUTO:
            if self._world.get(bit, False):
                raise Violation("t=%d: move while %s active" % (T, R.lock_names(bit)))
            if self._auto_latched.get(bit):
                clear = self._first_clear.get(bit)
                if clear is None or T - clear < rules.lock_hold_s * 1000:
                    raise Violation(
                        "t=%d: move %s ms after %s cleared (hold %d s)"
                        % (T, None if clear is None else T - clear, R.lock_names(bit), rules.lock_hold_s)
                    )
        for window, limit, name in ((HOUR_MS, rules.max_per_hour, "hour"), (DAY_MS, rules.max_per_day, "day")):
            n = 1
            for t in self.attempts:
                if T - t <= window:
                    n += 1
            if n > limit:
                raise Violation("t=%d: attempt %d in one rolling %s (budget %d)" % (T, n, name, limit))
        self.attempts.append(T)
        self.n_attempts += 1
        if len(self.attempts) > 2 * rules.max_per_day + 2:
            self.attempts.pop(0)
        self._pending_target = target

    def _check_board(self) -> None:
        b = self.board
        if b.overlaps:
            raise Violation(b.first_violation)
        if b.min_gap_ms is not None and b.min_gap_ms < self.rules.dead_time_ms:
            raise Violation(
                "a make %d ms after another phase opened (dead time %d)" % (b.min_gap_ms, self.rules.dead_time_ms)
            )
        tr = b.transitions
        while self._seen < len(tr):
            t, phase, closed, cause = tr[self._seen]
            self._seen += 1
            if not closed:
                continue
            self._lost_at_make = self._lost_ms
            if self._restore_pending and not (self._pending_target != R.PHASE_NONE and phase == self._pending_target):
                # The first make after a boot is the restore (a move cannot start
                # before it), unless nothing was restored and this is a move.
                self._restore_pending = False
                if self._expected_restore is not None and phase != self._expected_restore:
                    raise Violation(
                        "t=%d: restored %s, last committed was %s"
                        % (t, codes.PHASE_NAMES[phase], codes.PHASE_NAMES[self._expected_restore])
                    )
            elif phase != self._connected or phase == self._pending_target:
                self._restore_pending = False
                if phase != self._pending_target:
                    raise Violation(
                        "t=%d: house moved %s->%s without a move attempt to it"
                        % (t, codes.PHASE_NAMES[self._connected], codes.PHASE_NAMES[phase])
                    )
                self.moves_done += 1
                self._pending_target = R.PHASE_NONE
            self._connected = phase
        del tr[:]
        self._seen = 0

    def finish(self) -> None:
        """Let the last move or restore complete, then check the final state."""
        if self.ctl is None:
            self.boot()
        try:
            self._do(("wait", self.rules.dead_time_ms + 1000, 100))
        except PowerCut:
            self._power_cycle(("wait", 0, 0))
        self._check_board()
        if len(self.board.closed()) > 1:
            raise Violation("final state %s" % self.board.closed())


class SolidStateRig(Rig):
    """The rig for a solid-state phase selector (``SolidStateController`` on ``SolidStateBoard``).

    Every check of ``Rig`` holds (never two phases conducting, the dead
    time -- here one half-cycle -- dwell, budgets, locks, restore), plus:
    every transfer gates its target at a zero crossing the board reported,
    and its supply gap (from the origin's conduction end to the target's
    start) is at most one half-cycle. Mains at ``rules.mains_hz``; the board
    sees a zero crossing every half-cycle (``T`` in ms: at 50 Hz every 10
    ms; at 60 Hz at the whole ms after each 8.33 ms). While a transfer is
    under way the rig hands each zero crossing to the firmware, as the
    board's interrupt would (idle, they change nothing in the controller).
    Extra faults: the zero-cross detector falls silent or comes back
    (``("zc", alive)``), and a spurious edge between two crossings
    (``("edge",)``).
    """

    def __init__(self, rules: R.SolidStateRules, root: str, **kw: Any):
        self._last_origin = R.PHASE_NONE
        self.zc_alive = True
        self.transfers = 0
        self.max_gap_ms = 0
        super().__init__(rules, root, **kw)

    def _new_board(self, active_high: bool) -> RelayBoard:
        return SolidStateBoard(active_high, clock=lambda: self.T, keep=None)

    def _on_attempt(self, st: RelayState) -> None:
        super()._on_attempt(st)
        self._last_origin = st["phase"]

    def _new_controller(self) -> R.RelayController:
        return R.SolidStateController(
            self.board.pins,
            self.board.active_high,
            self._load,
            self._save_hook,
            self.now(),
            self.rules,
            self.home,
            conducting=self.board.conducting_mask,
        )

    def _after_gates_off(self) -> None:
        # A switch whose gate the boot removed conducts on until the next zero crossing.
        self.T = self._next_zc(self.T + 1)
        board = self.board
        assert isinstance(board, SolidStateBoard)
        board.zero_cross()

    def _next_zc(self, t: int) -> int:
        """The first zero crossing at or after true time ``t`` (ms)."""
        hz = self.rules.mains_hz
        k = -(-t * 2 * hz // 1000)
        return -(-k * 1000 // (2 * hz))

    def _zc(self) -> None:
        board = self.board
        assert isinstance(board, SolidStateBoard)
        board.zero_cross()
        self._check_board()
        ctl = self.ctl
        if self.zc_alive and ctl is not None and ctl.busy:
            # Marked as a transfer's crossing only mid-transfer (the restore is not a transfer).
            board.at_zc = ctl.state != R.ST_RESTORING
            try:
                assert isinstance(ctl, R.SolidStateController)
                ctl.zero_cross(self._call())
            finally:
                board.at_zc = False
            self._check_board()

    def _do(self, a: Action) -> None:
        ctl = self.ctl
        assert ctl is not None
        if a[0] == "wait":
            _, ms, step = a
            end = self.T + ms
            while self.T < end:
                if ctl.busy or ctl.state != R.ST_IDLE:
                    # Half-cycle by half-cycle while a transfer (or the restore) runs.
                    nxt = self._next_zc(self.T + 1)
                    if nxt > end:
                        self.T = end
                    else:
                        self.T = nxt
                        self._zc()
                else:
                    self.T = min(end, self.T + step)
                    self._zc()  # the board's physics (an ungated switch stops at a crossing)
                ctl.tick(self._call())
                self._check_board()
                self._sample()
        elif a[0] == "zc":
            self.zc_alive = bool(a[1])
        elif a[0] == "edge":
            # A spurious edge from the detector, between two crossings.
            if ctl.busy:
                assert isinstance(ctl, R.SolidStateController)
                board = self.board
                assert isinstance(board, SolidStateBoard)
                board.at_zc = ctl.state != R.ST_RESTORING
                try:
                    ctl.zero_cross(self._call())
                finally:
                    board.at_zc = False
        else:
            super()._do(a)

    def _check_board(self) -> None:
        b = self.board
        assert isinstance(b, SolidStateBoard)
        n0 = self.moves_done
        makes = list(b.makes)
        del b.makes[:]
        super()._check_board()
        half = self.rules.max_gap_ms
        at_zc = 0
        for t, phase, zc, gap in makes:
            if not zc or phase == self._last_origin:
                continue  # the restore after a boot, or an aborted transfer's origin gated again
            at_zc += 1
            # A transfer from no phase (the house was off) has no gap to bound.
            if gap is not None and self._last_origin != R.PHASE_NONE:
                self.max_gap_ms = max(self.max_gap_ms, gap)
                if gap > half:
                    raise Violation(
                        "t=%d: phase %s gated %d ms after the origin stopped, more than a half-cycle (%d ms)"
                        % (t, codes.PHASE_NAMES[phase], gap, half)
                    )
        done = self.moves_done - n0
        if done > at_zc:
            raise Violation("t=%d: %d transfer(s) gated their target outside a zero crossing" % (self.T, done - at_zc))
        self.transfers += done


def random_rules(rng: random.Random) -> R.RelayRules:
    """Rules drawn so that dwell, budgets and holds all bite within a sequence."""
    per_hour = rng.randint(1, 6)
    dwell = rng.choice((1, 5, 60, 900))
    return R.RelayRules(
        dead_time_ms=rng.choice((20, 100, 500, 2000, 5000)),
        min_dwell_s=dwell,
        max_per_hour=per_hour,
        max_per_day=rng.randint(per_hour, 12),
        lock_hold_s=rng.choice((0, 5, 60, 300)),
        settle_ms=min(dwell * 1000, rng.choice((0, 1000, 5000))),
        checkpoint_s=rng.choice((0, 60, 3600)),
    )


def random_ss_rules(rng: random.Random) -> R.SolidStateRules:
    """Solid-state rules drawn so that dwell, budgets, holds and the zero-cross timeout all bite."""
    per_hour = rng.randint(1, 30)
    dwell = rng.choice((1, 5, 60, 120, 900))
    return R.SolidStateRules(
        mains_hz=rng.choice((50, 60)),
        min_dwell_s=dwell,
        max_per_hour=per_hour,
        max_per_day=rng.randint(per_hour, 96),
        lock_hold_s=rng.choice((0, 5, 60, 300)),
        settle_ms=min(dwell * 1000, rng.choice((0, 1000, 5000))),
        checkpoint_s=rng.choice((0, 60, 3600)),
        zc_timeout_ms=rng.choice((30, 100, 500)),
    )


def random_ss_action(rng: random.Random, rules: R.SolidStateRules) -> Action:
    """One action for a solid-state rig: as ``random_action``, and zero-cross detector faults."""
    r = rng.random()
    if r < 0.03:
        return ("zc", rng.random() < 0.6)
    if r < 0.05:
        return ("edge",)
    return random_action(rng, rules)


_MAX_TICKS = 40  # ticks per wait: idle time is ticked coarsely, short waits finely
# Move targets, mostly valid, and home phases, in this order so that a seed draws
# the same sequences as it did when the relay numbered phases 0 none, 1 A, 2 B, 3 C.
_TARGETS = (R.PHASE_A, R.PHASE_B, R.PHASE_C) * 3 + (R.PHASE_NONE, 4)
_HOMES = (R.PHASE_NONE, R.PHASE_A, R.PHASE_B, R.PHASE_C, R.PHASE_A, R.PHASE_B, R.PHASE_C)


def random_action(rng: random.Random, rules: R.RelayRules | None = None) -> Action:
    """One action tuple: mostly waits and commands, sometimes faults.

    With ``rules``, waits are drawn around the dead time and the dwell so
    that moves complete and the limits are approached from both sides.
    """
    r = rng.random()
    if r < 0.36:
        if rules is not None and r < 0.24:
            span = rules.dead_time_ms * 2 if r < 0.12 else rules.min_dwell_s * 1500
            ms = rng.randint(1, span)
        else:
            ms = rng.randint(1, rng.choice((50, 1000, 10000, 120000, 1200000, 4 * HOUR_MS)))
        step = max(rng.choice((10, 100, 1000, 60000)), -(-ms // _MAX_TICKS))
        return ("wait", ms, min(ms, step))
    if r < 0.66:
        return ("move", rng.choice(_TARGETS))
    if r < 0.78:
        return ("report", rng.randrange(4), rng.random() < 0.25)
    if r < 0.83:
        return ("unlock", rng.choice((1, 2, 4, 8, 16, 32, 63, 63)))
    if r < 0.86:
        return ("jump", rng.randint(1, 10**7))
    if r < 0.93:
        return ("cut", rng.randint(0, 12), rng.randint(0, 3 * HOUR_MS))
    if r < 0.96:
        return ("soft",)
    if r < 0.965:
        return ("corrupt", rng.choice((b"", b"{", b"\x00" * 30, b'{"format": 1, "phase": 2}')))
    if r < 0.975:
        return ("flash", rng.random() < 0.4)
    return ("weld", rng.random() < 0.3)


def random_actions(rng: random.Random, n: int, rules: R.RelayRules | None = None) -> list[Action]:
    """``n`` actions of ``random_action``."""
    return [random_action(rng, rules) for _ in range(n)]


def run(
    n: int,
    seed: int,
    steps: int,
    root: str,
    progress: bool = True,
    max_failures: int = 5,
    kind: str = "mechanical",
) -> tuple[dict[str, float], list[int], list[str]]:
    """``n`` sequences of ``steps`` actions (seeded), state files in ``root``: ``(totals, refusals, failures)``.

    ``kind``: ``"mechanical"`` (``Rig``) or ``"solid-state"`` (``SolidStateRig``).
    ``totals``: counts by name, and ``seconds`` the run took (solid-state:
    also ``max_gap_ms``, the longest supply gap of a transfer seen).
    """
    solid = kind == "solid-state"
    totals: dict[str, float] = {
        "sequences": 0,
        "steps": 0,
        "moves": 0,
        "attempts": 0,
        "cuts": 0,
        "soft": 0,
        "lost": 0,
        "aborts": 0,
        "unsafe": 0,
        "max_gap_ms": 0,
    }
    refusals = [0] * codes.RELAY_REASONS
    failures: list[str] = []
    t0 = time.perf_counter()
    last = t0
    for i in range(n):
        rng = random.Random("%d-%d" % (seed, i))
        for name in os.listdir(root):
            os.remove(os.path.join(root, name))
        try:
            if solid:
                ss_rules = random_ss_rules(rng)
                rig: Rig = SolidStateRig(
                    ss_rules, root, active_high=rng.random() < 0.5, home=rng.choice(_HOMES), rng=rng
                )
                for _ in range(steps):
                    rig.step(random_ss_action(rng, ss_rules))
                    totals["steps"] += 1
            else:
                rules = random_rules(rng)
                rig = Rig(rules, root, active_high=rng.random() < 0.5, home=rng.choice(_HOMES), rng=rng)
                for _ in range(steps):
                    rig.step(random_action(rng, rules))
                    totals["steps"] += 1
            rig.finish()
        except Violation as e:
            totals["unsafe"] += 1
            if len(failures) < max_failures:
                failures.append("sequence %d (seed %d): %s" % (i, seed, e))
            continue
        totals["sequences"] += 1
        totals["moves"] += rig.moves_done
        totals["attempts"] += rig.n_attempts
        totals["cuts"] += rig.power_cuts
        totals["soft"] += rig.soft_resets
        totals["lost"] += rig.state_losses
        totals["aborts"] += rig.aborts
        if isinstance(rig, SolidStateRig):
            totals["max_gap_ms"] = max(totals["max_gap_ms"], rig.max_gap_ms)
        for k in range(len(refusals)):
            refusals[k] += rig.refusals[k]
        now = time.perf_counter()
        if progress and now - last >= 2:
            last = now
            sys.stderr.write("\r%d/%d sequences, %d unsafe, %.0f s" % (i + 1, n, totals["unsafe"], now - t0))
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\r" + " " * 60 + "\r")
    totals["seconds"] = time.perf_counter() - t0
    return totals, refusals, failures
