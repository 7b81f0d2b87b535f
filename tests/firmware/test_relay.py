"""Relay safety layer on the simulated relay board (both interpreters).

Each rule of phasenode.relay is pinned by what the relay board physically did
(phasenode.hal.pin_host records every contact transition), with the real file
store (phasenode.persist) in a temporary folder: break-before-make and dead
time, dwell to the millisecond, rolling budgets, lock-outs and their clear
rules, write-ahead persistence and the restore after a reboot at each step,
typed refusals with their reason codes.
"""

import gc

from node_fixtures import rmtree, tmpdir
from phasecore import codes
from phasecore.crc import crc16
from phasecore.errors import PhasecoreError
from phasenode import relay as R
from phasenode.compat import asyncio, ticks_diff, ticks_ms
from phasenode.events import EventQueue
from phasenode.hal.pin_host import PowerCut, RelayBoard
from phasenode.persist import CorruptStateError, Store
from phasenode.relay import RelayController, RelayRefused, RelayRules
from portable import raises

DEAD = 500
RULES = dict(dead_time_ms=DEAD, min_dwell_s=60, max_per_hour=2, max_per_day=3, lock_hold_s=30, settle_ms=2000)


class Sim:
    """Simulated time ``t`` (ms), a relay board stamped with it, a file store, a controller."""

    def __init__(self, active_high=True, home=R.PHASE_A, **rules):
        r = dict(RULES)
        r.update(rules)
        self.rules = RelayRules(**r)
        self.home = home
        self.t = 0
        self.board = RelayBoard(active_high, clock=lambda: self.t)
        self.root = tmpdir("relay")
        self.store = Store(self.root)
        self.load, self.save = self.store.relay_storage()
        self.ctl = None

    def close(self):
        rmtree(self.root)

    def boot(self, load=None, save=None, **kw):
        self.ctl = RelayController(
            self.board.pins,
            self.board.active_high,
            load or self.load,
            save or self.save,
            self.t,
            self.rules,
            self.home,
            **kw,
        )
        return self.ctl

    def run(self, ms, step=100):
        """Let ``ms`` pass, ticking every ``step``."""
        end = self.t + ms
        while self.t < end:
            self.t = min(end, self.t + step)
            self.ctl.tick(self.t)

    def settle(self):
        """Boot restore done and dwell over: ready for a move."""
        self.run(DEAD + self.rules.min_dwell_s * 1000 + 1000, step=1000)

    def move(self, target):
        self.ctl.request(target, self.t)
        self.run(DEAD + 100)
        assert self.ctl.phase == target and self.board.closed() == [target], self.board

    def safe(self):
        assert not self.board.ever_two_closed(), self.board.first_violation
        assert self.board.dead_time_ok(DEAD), self.board


def _refused(reason, fn, *args):
    e = raises(RelayRefused, fn, *args)
    assert e.reason == reason, "expected %s, got %s" % (codes.REASON_NAMES[reason], e)
    assert e.name == codes.REASON_NAMES[reason]
    assert isinstance(e, PhasecoreError)
    return e


# --- boot and restore -----------------------------------------------------------


def test_boot_opens_every_relay_then_restores_home_phase_after_dead_time():
    s = Sim()
    try:
        # A soft reset leaves GPIO levels as they were: here B is still driven.
        s.board.pins[1].value(1)
        assert s.board.closed() == [R.PHASE_B]
        s.t = 1000
        s.boot()
        assert s.board.closed() == [], "construction must open every relay at once"
        assert s.ctl.state == R.ST_RESTORING and s.ctl.busy
        s.run(DEAD - 100)
        assert s.board.closed() == []
        s.run(200)
        assert s.board.closed() == [R.PHASE_A] and s.ctl.state == R.ST_IDLE
        assert s.board.min_gap_ms >= DEAD
        s.safe()
        assert (R.EV_RESTORED, R.PHASE_A, 0) in s.ctl.pop_events()
    finally:
        s.close()


def test_active_low_board_drives_inverted_levels():
    s = Sim(active_high=False)
    try:
        s.boot()
        assert [p.value() for p in s.board.pins] == [1, 1, 1]
        s.settle()
        assert [p.value() for p in s.board.pins] == [0, 1, 1]
        s.move(R.PHASE_C)
        assert [p.value() for p in s.board.pins] == [1, 1, 0]
        s.safe()
    finally:
        s.close()


def test_relay_pins_are_created_at_their_open_level():
    board = RelayBoard(active_high=False, ids=(32, 33, 25))
    pins = R.relay_pins({"pins": [32, 33, 25], "active_high": False}, board.Pin)
    assert [p.value() for p in pins] == [1, 1, 1]
    assert board.transitions == [] and board.closed() == []
    for bad in (
        {"pins": [32, 33], "active_high": False},
        {"pins": [32, 32, 25], "active_high": False},
        {"pins": [32, 33, 25], "active_high": 0},
        {"pins": [32, 33, 25]},
        [32, 33, 25],
    ):
        raises(ValueError, R.relay_pins, bad, board.Pin)
    raises(ValueError, R.relay_pins, {"pins": [1, 2, 3], "active_high": True}, board.Pin)


# --- moves --------------------------------------------------------------------------


def test_move_opens_first_waits_dead_time_then_closes_target():
    s = Sim()
    try:
        s.boot()
        s.settle()
        s.ctl.request(R.PHASE_B, s.t)
        assert s.board.closed() == [] and s.ctl.state == R.ST_BREAK and s.ctl.target == R.PHASE_B
        t_break = s.t
        s.run(DEAD - 1, step=1)
        assert s.board.closed() == [], "made before the dead time was over"
        s.run(1, step=1)
        assert s.board.closed() == [R.PHASE_B] and s.ctl.phase == R.PHASE_B
        assert s.board.transitions[-1][0] - t_break == DEAD
        assert s.board.min_gap_ms == DEAD
        ev = s.ctl.pop_events()
        assert (R.EV_MOVED, R.PHASE_A, R.PHASE_B) in ev
        s.safe()
    finally:
        s.close()


def test_dwell_is_kept_to_the_millisecond():
    s = Sim(min_dwell_s=60)
    try:
        s.boot()
        s.run(DEAD + 1, step=1)  # restore made at t = DEAD + 1... ms
        made = s.board.last_close_ms(R.PHASE_A)
        s.t = made + 60000 - 1
        e = _refused(R.R_DWELL, s.ctl.request, R.PHASE_B, s.t)
        assert 0 < e.retry_s <= 2
        assert s.ctl.check(R.PHASE_B, s.t) == R.R_DWELL
        s.t = made + 60000
        assert s.ctl.check(R.PHASE_B, s.t) == R.R_OK
        s.ctl.request(R.PHASE_B, s.t)
        s.run(DEAD)
        # Dwell now counts from the make onto B.
        s.run(59000, step=1000)
        _refused(R.R_DWELL, s.ctl.request, R.PHASE_A, s.t)
        s.safe()
    finally:
        s.close()


def test_rolling_budgets_per_hour_and_per_day():
    s = Sim(min_dwell_s=60, max_per_hour=2, max_per_day=3)
    try:
        s.boot()
        s.settle()
        first = s.t
        s.move(R.PHASE_B)
        s.run(61000, step=1000)
        s.move(R.PHASE_C)
        s.run(61000, step=1000)
        e = _refused(R.R_BUDGET_HOUR, s.ctl.request, R.PHASE_A, s.t)
        assert e.retry_s > 0
        s.run((e.retry_s - 2) * 1000, step=1000)
        _refused(R.R_BUDGET_HOUR, s.ctl.request, R.PHASE_A, s.t)  # just before: still refused
        s.run(3000, step=1000)
        assert s.t - first > 3600000
        s.move(R.PHASE_A)
        s.run(3600000, step=60000)
        e = _refused(R.R_BUDGET_DAY, s.ctl.request, R.PHASE_B, s.t)
        assert s.ctl.moves_in(86400) == 3
        s.run(e.retry_s * 1000, step=60000)
        s.move(R.PHASE_B)
        st = s.ctl.stats()
        assert st["moves_total"] == 4 and st["refusals"][R.R_BUDGET_DAY] == 1
        assert st["refusals"][R.R_BUDGET_HOUR] == 2
        s.safe()
    finally:
        s.close()


def test_every_refusal_has_its_reason_and_changes_nothing():
    s = Sim()
    try:
        s.boot()
        _refused(R.R_BUSY, s.ctl.request, R.PHASE_B, s.t)  # restore still pending
        s.settle()
        for bad in (R.PHASE_NONE, 4, -1, "B", None, True, 1.0):
            _refused(R.R_INVALID_PHASE, s.ctl.request, bad, s.t)
        _refused(R.R_SAME_PHASE, s.ctl.request, R.PHASE_A, s.t)
        s.ctl.request(R.PHASE_B, s.t)
        _refused(R.R_BUSY, s.ctl.request, R.PHASE_C, s.t)  # move in progress
        s.run(DEAD)
        before = list(s.board.transitions)
        saved = s.load()
        _refused(R.R_DWELL, s.ctl.request, R.PHASE_C, s.t)
        s.ctl.report(R.LOCK_OVERVOLTAGE, True, s.t + 3000)
        s.t += 3000
        e = _refused(R.R_LOCKED_OUT, s.ctl.request, R.PHASE_C, s.t)
        assert e.locks == R.LOCK_OVERVOLTAGE and "OVERVOLTAGE" in str(e)
        assert s.board.transitions == before
        assert s.load()["moves"] == saved["moves"] and s.load()["intent"] == R.PHASE_NONE
        counts = s.ctl.stats()["refusals"]
        assert counts[R.R_INVALID_PHASE] == 7 and counts[R.R_BUSY] == 2 and counts[R.R_SAME_PHASE] == 1
        assert len(counts) == codes.RELAY_REASONS == 12 and R.R_CONDITION_ACTIVE == codes.RELAY_REASONS - 1
        assert not hasattr(R, "REASON_NAMES"), "the names are phasecore.codes', not a copy"
    finally:
        s.close()


# --- lock-outs ------------------------------------------------------------------------


def test_overcurrent_latches_until_explicit_unlock_after_it_clears():
    s = Sim()
    try:
        s.boot()
        s.settle()
        assert s.ctl.report(R.LOCK_OVERCURRENT, True, s.t)
        assert s.ctl.locks == R.LOCK_OVERCURRENT
        _refused(R.R_LOCKED_OUT, s.ctl.request, R.PHASE_B, s.t)
        s.ctl.report(R.LOCK_OVERCURRENT, False, s.t)
        s.run(3600000, step=60000)
        _refused(R.R_LOCKED_OUT, s.ctl.request, R.PHASE_B, s.t)  # no automatic clear
        s.ctl.report(R.LOCK_OVERCURRENT, True, s.t)
        _refused(R.R_CONDITION_ACTIVE, s.ctl.unlock, R.LOCK_OVERCURRENT, s.t)
        s.ctl.report(R.LOCK_OVERCURRENT, False, s.t)
        assert s.ctl.unlock(R.LOCK_OVERCURRENT, s.t) == 0
        s.move(R.PHASE_B)
        raises(ValueError, s.ctl.unlock, 0, s.t)
        raises(ValueError, s.ctl.unlock, 0x40, s.t)
        raises(ValueError, s.ctl.report, R.LOCK_RELAY_FAULT, True, s.t)
        raises(ValueError, s.ctl.report, 3, True, s.t)
    finally:
        s.close()


def test_voltage_lock_clears_after_hold_time_clear():
    s = Sim(lock_hold_s=30)
    try:
        s.boot()
        s.settle()
        s.ctl.report(R.LOCK_UNDERVOLTAGE, True, s.t)
        s.run(10000, step=1000)
        s.ctl.report(R.LOCK_UNDERVOLTAGE, False, s.t)
        cleared_at = s.t
        s.run(30000, step=1000)
        assert s.ctl.locks == R.LOCK_UNDERVOLTAGE  # 30 s clear is not yet "more than 30 s"
        s.ctl.report(R.LOCK_UNDERVOLTAGE, True, s.t)  # comes back: hold starts again
        s.ctl.report(R.LOCK_UNDERVOLTAGE, False, s.t)
        cleared_at = s.t
        s.run(29000, step=1000)
        _refused(R.R_LOCKED_OUT, s.ctl.request, R.PHASE_B, s.t)
        assert s.ctl.unlock(0x3F, s.t) == R.LOCK_UNDERVOLTAGE  # no command shortens the hold
        s.run(3000, step=1000)
        assert s.ctl.locks == 0 and s.t - cleared_at > 30000
        ev = s.ctl.pop_events()
        assert (R.EV_UNLOCKED, R.LOCK_UNDERVOLTAGE, 0) in ev
        s.move(R.PHASE_B)
    finally:
        s.close()


def test_meter_and_undervoltage_reports_latch_nothing_while_disconnected():
    s = Sim(settle_ms=2000)
    try:
        s.boot()
        assert s.ctl.blackout
        assert not s.ctl.report(R.LOCK_METER, True, s.t)  # restore pending: house dark
        s.run(DEAD + 100)
        assert s.ctl.blackout  # settling after the make
        assert not s.ctl.report(R.LOCK_UNDERVOLTAGE, True, s.t)
        assert s.ctl.report(R.LOCK_OVERVOLTAGE, False, s.t)
        assert s.ctl.locks == 0 and s.load() is None  # no lock, nothing written
        assert s.ctl.conditions == R.LOCK_METER | R.LOCK_UNDERVOLTAGE
        s.settle()
        # Not latched, but a move still waits until they are reported clear.
        e = _refused(R.R_LOCKED_OUT, s.ctl.request, R.PHASE_B, s.t)
        assert e.locks == R.LOCK_METER | R.LOCK_UNDERVOLTAGE
        s.ctl.report(R.LOCK_METER, False, s.t)
        s.ctl.report(R.LOCK_UNDERVOLTAGE, False, s.t)
        assert s.ctl.check(R.PHASE_B, s.t) == R.R_OK  # no hold: nothing was latched
        assert not s.ctl.blackout
        assert s.ctl.report(R.LOCK_METER, True, s.t)  # now it is a real condition
        assert s.ctl.locks == R.LOCK_METER and s.load()["locks"] == R.LOCK_METER
        s.ctl.report(R.LOCK_METER, False, s.t)
        s.run(s.rules.lock_hold_s * 1000 + 2000, step=1000)
        assert s.ctl.locks == 0
        s.ctl.request(R.PHASE_C, s.t)
        assert not s.ctl.report(R.LOCK_METER, True, s.t + 10)
        assert s.ctl.report(R.LOCK_OVERCURRENT, True, s.t + 10)  # never masked
        s.run(DEAD + 100)
        assert s.ctl.phase == R.PHASE_C  # a started move completes
        s.safe()
    finally:
        s.close()


# --- persistence and reboots -------------------------------------------------------------


def test_intent_is_saved_before_any_relay_moves_and_commit_after_the_make():
    s = Sim()
    try:
        seen = []

        def save(st):
            seen.append((st["phase"], st["intent"], s.board.closed()))
            s.save(st)

        s.boot(save=save)
        s.settle()
        s.ctl.request(R.PHASE_C, s.t)
        assert seen[-1] == (R.PHASE_A, R.PHASE_C, [R.PHASE_A]), seen  # saved while A still closed
        s.run(DEAD)
        assert seen[-1] == (R.PHASE_C, R.PHASE_NONE, [R.PHASE_C]), seen
        assert s.load()["n_moves"] == 1 and len(s.load()["moves"]) == 1
    finally:
        s.close()


def test_failed_save_refuses_the_move_without_switching_or_spending_budget():
    s = Sim()
    try:
        fail = [False]

        def save(st):
            if fail[0]:
                raise OSError(28, "no space left on flash")
            s.save(st)

        s.boot(save=save)
        s.settle()
        before = len(s.board.transitions)
        fail[0] = True
        _refused(R.R_PERSIST, s.ctl.request, R.PHASE_B, s.t)
        assert len(s.board.transitions) == before and s.ctl.phase == R.PHASE_A
        assert s.ctl.stats()["moves_hour"] == 0
        assert (R.EV_PERSIST_FAILED, 0, 0) in s.ctl.pop_events()
        fail[0] = False
        s.move(R.PHASE_B)
    finally:
        s.close()


def _cut_at(s, k, target):
    # Run a move with power lost before side effect number k (pin write or save).
    n = [0]

    def trip(*_):
        n[0] += 1
        if n[0] == k:
            raise PowerCut()

    def save(st):
        trip()
        s.save(st)
        trip()

    s.boot(save=save)
    s.settle()
    s.board.trip = trip
    n[0] = 0
    try:
        s.ctl.request(target, s.t)
        s.run(DEAD + 100)
    except PowerCut:
        s.board.trip = None
        return True
    s.board.trip = None
    return False


def test_power_cut_at_every_step_of_a_move_ends_on_one_known_phase():
    k = 1
    outcomes = []
    while True:
        s = Sim()
        try:
            cut = _cut_at(s, k, R.PHASE_B)
            if not cut:
                break
            s.board.power_cut()
            s.t += 7000
            s.board.power_on()
            ctl = s.boot()
            assert s.board.closed() == []
            s.run(DEAD + 100)
            assert ctl.phase in (R.PHASE_A, R.PHASE_B) and s.board.closed() == [ctl.phase]
            assert ctl.snapshot()["intent"] == R.PHASE_NONE
            outcomes.append(ctl.phase)
            s.safe()
            st = s.load()
            if ctl.phase == R.PHASE_A and st is not None and st["n_moves"] == 1:
                assert (R.EV_ROLLED_BACK, R.PHASE_A, R.PHASE_B) in ctl.pop_events()
        finally:
            s.close()
        k += 1
    # Cuts before the commit roll back to A; only after the commit is B restored.
    assert outcomes[0] == R.PHASE_A and outcomes[-1] == R.PHASE_B and k > 4, outcomes


def test_soft_reset_mid_move_rolls_back_without_bridging_phases():
    s = Sim()
    try:
        s.boot()
        s.settle()
        s.ctl.request(R.PHASE_B, s.t)
        s.run(DEAD)
        # Pretend the commit save was lost: rewrite the intent state, then soft reset.
        st = s.ctl.snapshot()
        st["phase"], st["intent"] = R.PHASE_A, R.PHASE_B
        s.save(st)
        assert s.board.closed() == [R.PHASE_B]
        s.board.soft_reset()
        s.t += 1500
        ctl = s.boot()
        assert s.board.closed() == []
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_A] and ctl.phase == R.PHASE_A
        s.safe()
    finally:
        s.close()


def test_budget_and_locks_survive_reboot_and_the_uptime_clock_resumes():
    s = Sim(max_per_hour=1, min_dwell_s=60)
    try:
        s.boot()
        s.settle()
        s.move(R.PHASE_B)
        s.ctl.report(R.LOCK_OVERCURRENT, True, s.t)
        up = s.ctl.uptime_s
        for _ in range(5):  # a reboot loop
            s.board.power_cut()
            s.t += 1000000
            s.board.power_on()
            ctl = s.boot()
            assert ctl.uptime_s == up and ctl.locks == R.LOCK_OVERCURRENT
            s.run(DEAD + 100)
            assert ctl.phase == R.PHASE_B
        ctl.report(R.LOCK_OVERCURRENT, False, s.t)
        ctl.unlock(R.LOCK_OVERCURRENT, s.t)
        s.run(61000, step=1000)
        _refused(R.R_BUDGET_HOUR, ctl.request, R.PHASE_C, s.t)  # power-off time is not counted
        s.run(3600000, step=60000)
        s.move(R.PHASE_C)
        s.safe()
    finally:
        s.close()


def test_clock_stepping_back_counts_as_no_time():
    s = Sim(min_dwell_s=60)
    try:
        s.boot()
        now = [0]

        def tick(ms):
            s.t += ms
            now[0] += ms
            s.ctl.tick(now[0])

        for _ in range(10):
            tick(100)
        assert s.ctl.phase == R.PHASE_A
        for _ in range(40):
            tick(1000)
        now[0] -= 1000000  # a ticks_ms wrap or a reset of the caller's clock
        for _ in range(20):
            tick(1000)
        # 60.5 s since the make in true time, 59.5 s counted: the step back cost a tick.
        _refused(R.R_DWELL, s.ctl.request, R.PHASE_B, now[0])
        for _ in range(2):
            tick(1000)
        s.ctl.request(R.PHASE_B, now[0])
    finally:
        s.close()


def test_unreadable_state_restores_home_phase_and_latches_state_lost():
    s = Sim(home=R.PHASE_C)
    try:
        with open(s.root + "/relay.json", "w") as f:
            f.write('{"format": 1, "phase": 2, "intent": 0, "upti')
        ctl = s.boot()
        s.run(DEAD + 100)
        assert ctl.phase == R.PHASE_C and ctl.locks == R.LOCK_STATE_LOST
        assert (R.EV_STATE_LOST, R.PHASE_C, 0) in ctl.pop_events()
        assert s.load()["locks"] == R.LOCK_STATE_LOST  # rewritten, readable again
        s.settle()
        _refused(R.R_LOCKED_OUT, ctl.request, R.PHASE_A, s.t)
        ctl.unlock(R.LOCK_STATE_LOST, s.t)
        # How often it switched before is unknown: a day's budget counts as spent.
        e = _refused(R.R_BUDGET_HOUR, ctl.request, R.PHASE_A, s.t)
        s.run(e.retry_s * 1000, step=60000)
        e = _refused(R.R_BUDGET_DAY, ctl.request, R.PHASE_A, s.t)
        s.run(e.retry_s * 1000, step=60000)
        assert s.ctl.uptime_s > 86400
        s.move(R.PHASE_A)

        def bad_load():
            raise CorruptStateError("relay.json", "phase", "must be 0..3")

        ctl = s.boot(load=bad_load)
        assert ctl.locks == R.LOCK_STATE_LOST and ctl.phase == R.PHASE_C
        ctl = s.boot(load=lambda: {"phase": 9})
        assert ctl.locks == R.LOCK_STATE_LOST
    finally:
        s.close()


def _old_relay_file(phase, intent, uptime_s, moves, n_moves):
    # relay.json as format-1 firmware wrote it: 0 none, 1 A, 2 B, 3 C, crc over those values.
    text = "%d,%d,%d,0,%d,0;" % (phase, intent, uptime_s, n_moves) + ",".join("%d" % m for m in moves)
    return (
        '{"format": 1, "phase": %d, "intent": %d, "uptime_s": %d, "moves": [%s], "locks": 0, "n_moves": %d, '
        '"n_aborts": 0, "crc": %d}'
        % (phase, intent, uptime_s, ",".join("%d" % m for m in moves), n_moves, crc16(text.encode()))
    )


def test_a_node_upgraded_in_the_field_restores_the_phase_its_old_firmware_saved():
    s = Sim(home=R.PHASE_A)
    try:
        # Old firmware left the house on C (its 3), one move an hour ago.
        with open(s.root + "/relay.json", "w") as f:
            f.write(_old_relay_file(3, 0, 7200, [3600], 1))
        ctl = s.boot()
        s.run(DEAD + 100)
        assert ctl.phase == R.PHASE_C and s.board.closed() == [R.PHASE_C] and ctl.locks == 0
        assert (R.EV_RESTORED, R.PHASE_C, 0) in ctl.pop_events()
        assert ctl.moves_in(86400) == 1 and ctl.uptime_s >= 7200  # the budget history came along
        # Old firmware cut mid-move from B (2) to A (1): rolled back to B, the move counted.
        with open(s.root + "/relay.json", "w") as f:
            f.write(_old_relay_file(2, 1, 9000, [3600, 8990], 2))
        ctl = s.boot()
        assert (R.EV_ROLLED_BACK, R.PHASE_B, R.PHASE_A) in ctl.pop_events()
        s.run(DEAD + 100)
        assert ctl.phase == R.PHASE_B and s.board.closed() == [R.PHASE_B] and ctl.moves_in(86400) == 2
        # What it saves from now on is format 2, in the wire's numbering.
        saved = s.load()
        assert saved["phase"] == R.PHASE_B and saved["intent"] == R.PHASE_NONE
        with open(s.root + "/relay.json") as f:
            assert '"format": 2' in f.read()
        s.safe()
    finally:
        s.close()


def test_lock_groups_are_made_of_the_codes_lock_bits():
    assert R.REPORTABLE == codes.LOCK_OVERCURRENT | codes.LOCK_METER | codes.LOCK_OVERVOLTAGE | codes.LOCK_UNDERVOLTAGE
    assert R.AUTO_CLEAR == codes.LOCK_METER | codes.LOCK_OVERVOLTAGE | codes.LOCK_UNDERVOLTAGE
    assert R.LATCHING == codes.LOCK_OVERCURRENT | codes.LOCK_RELAY_FAULT | codes.LOCK_STATE_LOST
    assert R.REPORTABLE | R.LATCHING == codes.LOCK_ALL
    assert R.lock_names(codes.LOCK_METER | codes.LOCK_STATE_LOST) == "METER|STATE_LOST"


def test_first_boot_without_home_phase_stays_open_until_commanded():
    s = Sim(home=R.PHASE_NONE)
    try:
        ctl = s.boot()
        s.run(DEAD + 100)
        assert ctl.phase == R.PHASE_NONE and s.board.closed() == [] and ctl.blackout
        ctl.request(R.PHASE_B, s.t)  # no dwell on "no phase"
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_B]
    finally:
        s.close()


# --- faults ---------------------------------------------------------------------------------


def test_pin_read_back_mismatch_opens_all_and_latches_relay_fault():
    s = Sim()
    try:
        s.boot()
        s.settle()
        s.board.pins[2].value(1)  # something else drove C: A and C closed
        assert s.board.closed() == [R.PHASE_A, R.PHASE_C]
        _refused(R.R_TWO_PHASES, s.ctl.request, R.PHASE_B, s.t)
        assert s.board.closed() == [] and s.ctl.locks == R.LOCK_RELAY_FAULT
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_A]
        codes = [e[0] for e in s.ctl.pop_events()]
        assert R.EV_PIN_MISMATCH in codes and R.EV_LOCKED in codes
        s.board.pins[0].value(0)  # A dropped behind the controller's back
        s.ctl.tick(s.t)
        assert s.ctl.state == R.ST_RESTORING
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_A]
    finally:
        s.close()


def test_unverified_break_aborts_and_recloses_the_origin():
    s = Sim()
    try:
        live = [False]
        s.boot(sense_open=lambda: not live[0])
        s.settle()
        s.move(R.PHASE_B)
        s.run(61000, step=1000)
        live[0] = True  # B's contact welded: voltage stays with all open
        s.ctl.request(R.PHASE_C, s.t)
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_B] and s.ctl.phase == R.PHASE_B
        assert s.ctl.locks == R.LOCK_RELAY_FAULT and s.ctl.stats()["aborts"] == 1
        assert (R.EV_ABORTED, R.PHASE_B, R.PHASE_C) in s.ctl.pop_events()
        assert s.load()["n_aborts"] == 1 and s.load()["intent"] == R.PHASE_NONE
        s.safe()
    finally:
        s.close()


def test_restore_makes_nothing_while_the_house_side_is_live():
    s = Sim()
    try:
        s.boot(sense_open=lambda: not s.board.live())
        s.settle()
        s.board.weld(R.PHASE_A)  # A's contact welds shut
        s.board.power_cut()  # ... and stays closed without power
        assert s.board.closed() == [R.PHASE_A]
        s.t += 5000
        s.board.power_on()
        st = s.ctl.snapshot()
        st["phase"] = R.PHASE_B  # even if the saved phase were another one
        s.save(st)
        ctl = s.boot(sense_open=lambda: not s.board.live())
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_A] and ctl.phase == R.PHASE_NONE
        assert ctl.locks == R.LOCK_RELAY_FAULT
        assert (R.EV_LIVE_OPEN, R.PHASE_B, 0) in ctl.pop_events()
        ctl.unlock(R.LOCK_RELAY_FAULT, s.t)
        ctl.request(R.PHASE_C, s.t)  # from "no phase": the break check still guards
        s.run(DEAD + 100)
        assert s.board.closed() == [R.PHASE_A] and ctl.locks == R.LOCK_RELAY_FAULT
        s.safe()
    finally:
        s.close()


def test_async_move_awaits_the_dead_time():
    s = Sim(dead_time_ms=40, settle_ms=0, home=R.PHASE_NONE)  # no phase yet: no dwell to sit out
    try:
        s.board = RelayBoard(True, clock=ticks_ms)
        s.t = ticks_ms()
        ctl = s.boot()
        t_req = [0]

        async def main():
            while ctl.busy:
                await asyncio.sleep(0.005)
                ctl.tick(ticks_ms())
            t0 = t_req[0] = ticks_ms()
            got = await ctl.move(R.PHASE_B, ticks_ms)
            return got, ticks_diff(ticks_ms(), t0)

        got, took = asyncio.run(main())
        assert got == R.PHASE_B and s.board.closed() == [R.PHASE_B]
        made = s.board.transitions[-1][0]
        assert took >= 40 and ticks_diff(made, t_req[0]) >= 40, (took, made, t_req)
        assert not s.board.ever_two_closed()
    finally:
        s.close()


def test_rules_are_validated_by_name():
    e = raises(R.RuleError, RelayRules, dead_time_ms=5)
    assert e.key == "dead_time_ms"
    assert raises(R.RuleError, RelayRules, max_per_hour=7, max_per_day=6).key == "max_per_hour"
    assert raises(R.RuleError, RelayRules, min_dwell_s=True).key == "min_dwell_s"
    assert raises(R.RuleError, RelayRules, deadtime_ms=100).key == "deadtime_ms"
    assert raises(R.RuleError, RelayRules.from_dict, [1]).key == "relay"
    assert raises(R.RuleError, RelayRules, min_dwell_s=2, settle_ms=2001).key == "settle_ms"
    d = RelayRules(dead_time_ms=3000).as_dict()
    assert d["dead_time_ms"] == 3000 and d["min_dwell_s"] == 900 and RelayRules.from_dict(d).as_dict() == d
    board = RelayBoard()
    raises(ValueError, RelayController, board.pins[:2], True, lambda: None, lambda st: None, 0)
    raises(ValueError, RelayController, board.pins, True, lambda: None, lambda st: None, 0, None, 4)


def test_idle_checkpoint_saves_the_uptime_clock_and_events_are_bounded():
    s = Sim(checkpoint_s=600)
    try:
        s.boot()
        s.run(DEAD + 100)
        s.run(601000, step=10000)
        assert s.load()["uptime_s"] >= 600
        for _ in range(40):
            s.ctl.report(R.LOCK_OVERCURRENT, True, s.t)
            s.ctl.report(R.LOCK_OVERCURRENT, False, s.t)
            s.ctl.unlock(R.LOCK_OVERCURRENT, s.t)
        ev = s.ctl.pop_events()
        assert len(ev) == 16 and s.ctl.events_dropped > 0 and s.ctl.pop_events() == []
    finally:
        s.close()


def test_drain_events_hands_them_over_in_order_and_allocates_nothing_when_idle():
    s = Sim()
    try:
        s.boot()
        s.settle()
        q = EventQueue()
        assert s.ctl.drain_events(q) == 1 and q.pop() == (R.EV_RESTORED, R.PHASE_A, 0)
        s.move(R.PHASE_B)
        s.ctl.report(R.LOCK_OVERCURRENT, True, s.t)
        assert s.ctl.drain_events(q) == 2
        assert q.pop() == (R.EV_MOVED, R.PHASE_A, R.PHASE_B)
        assert q.pop() == (R.EV_LOCKED, R.LOCK_OVERCURRENT, R.LOCK_OVERCURRENT)
        assert q.pop() is None and s.ctl.drain_events(q) == 0 and s.ctl.pop_events() == []
        if not hasattr(gc, "mem_alloc"):
            return  # CPython boxes every int: only MicroPython can show this
        for _ in range(3):  # warm up
            s.ctl.drain_events(q)
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            for _ in range(500):
                s.ctl.drain_events(q)
            used = gc.mem_alloc() - before
        finally:
            gc.enable()
        assert used == 0, "drain_events allocated %d bytes over 500 empty calls" % used
    finally:
        s.close()


def test_a_slow_write_ahead_save_does_not_shorten_the_dead_time():
    """The save before a break takes time (a flash write); with a clock the dead time counts from the break.

    Without the clock the controller would count from the request's now_ms: a
    500 ms save would leave 500 ms less between the break and the make.
    """
    s = Sim()
    try:

        def slow_save(state):
            s.t += 500  # the flash write takes half a second of this clock
            s.save(state)

        s.boot(save=slow_save, clock=lambda: s.t)
        s.settle()
        t_request = s.t
        s.ctl.request(R.PHASE_B, t_request)
        t_break = s.board.transitions[-1][0]
        assert t_break >= t_request + 500 and s.board.closed() == []
        s.run(DEAD + 600, step=1)
        assert s.board.closed() == [R.PHASE_B]
        assert s.board.min_gap_ms >= DEAD, s.board.min_gap_ms
        s.safe()
    finally:
        s.close()
