"""The solid-state phase selector's controller on the simulated thyristor board (both interpreters).

phasenode.relay.SolidStateController: a transfer removes the origin's gate,
waits for the board to report the origin's current zero crossing, and gates
the target at the next zero crossing -- never two phases conducting, a supply
gap of one half-cycle; with no crossing, a shorted switch or a clock step it
aborts and gates the origin again. The same refusal reasons as relays.
"""

from node_fixtures import rmtree, tmpdir
from phasecore import codes
from phasenode import relay as R
from phasenode.hal.pin_host import SolidStateBoard
from phasenode.persist import Store
from portable import raises


class Sim:
    """True time ``t`` (ms), mains at ``hz``, a thyristor board, a file store, a controller."""

    def __init__(self, hz=50, **rules):
        r = {"mains_hz": hz, "min_dwell_s": 60, "max_per_hour": 4, "max_per_day": 10, "zc_timeout_ms": 100}
        r.update(rules)
        self.rules = R.SolidStateRules(**r)
        self.hz = hz
        self.t = 0
        self.board = SolidStateBoard(True, clock=lambda: self.t)
        self.root = tmpdir("ssr")
        self.load, self.save = Store(self.root).relay_storage()
        self.ctl = R.SolidStateController(
            self.board.pins, True, self.load, self.save, 0, self.rules, R.PHASE_A, conducting=self.board.conducting_mask
        )

    def close(self):
        rmtree(self.root)

    def next_zc(self):
        k = -(-(self.t + 1) * 2 * self.hz // 1000)
        return -(-k * 1000 // (2 * self.hz))

    def half_cycles(self, n, report=True):
        """Let ``n`` half-cycles pass; the board's crossings reach the controller when ``report``."""
        for _ in range(n):
            self.t = self.next_zc()
            self.board.zero_cross()
            self.board.at_zc = True
            if report:
                self.ctl.zero_cross(self.t)
            self.board.at_zc = False
            self.ctl.tick(self.t)

    def wait(self, ms):
        end = self.t + ms
        while self.t < end:
            self.half_cycles(1)


def test_rules_defaults_and_dead_time_of_one_half_cycle():
    r = R.SolidStateRules()
    assert (r.mains_hz, r.min_dwell_s, r.max_per_hour, r.max_per_day) == (50, 120, 30, 96)
    assert r.dead_time_ms == 10 and r.max_gap_ms == 10
    r60 = R.SolidStateRules(mains_hz=60)
    assert r60.dead_time_ms == 8 and r60.max_gap_ms == 9
    raises(R.RuleError, R.SolidStateRules, mains_hz=55)
    raises(R.RuleError, R.SolidStateRules, dead_time_ms=10)  # not a setting: a half-cycle
    raises(ValueError, R.SolidStateController, [], True, None, None, 0)


def test_a_transfer_waits_for_the_zero_crossing_and_gaps_one_half_cycle():
    for hz in (50, 60):
        s = Sim(hz)
        try:
            s.wait(200)  # the restore after boot
            assert s.board.closed() == [R.PHASE_A] and s.ctl.state == R.ST_IDLE
            s.wait(61000)
            s.t += 3  # between two crossings
            s.ctl.request(R.PHASE_B, s.t)
            # The gate is off, but the thyristor conducts on until the current crosses zero.
            assert s.board.closed() == [R.PHASE_A] and s.ctl.busy
            s.half_cycles(1)
            assert s.board.closed() == [] and s.ctl.busy  # the origin stopped: the dead half-cycle
            s.half_cycles(1)
            assert s.board.closed() == [R.PHASE_B] and s.ctl.phase == R.PHASE_B and not s.ctl.busy
            assert s.board.overlaps == 0 and s.board.makes_off_zc == 0  # the restore too came at a crossing
            t, phase, at_zc, gap = s.board.makes[-1]
            assert phase == R.PHASE_B and at_zc and s.rules.dead_time_ms <= gap <= s.rules.max_gap_ms
            assert [e[0] for e in s.ctl.pop_events()][-1] == codes.EV_MOVED
            assert s.ctl.stats()["kind"] == 1 and s.ctl.kind == 1
        finally:
            s.close()


def test_the_same_refusal_reasons_as_relays():
    s = Sim()
    try:
        s.wait(200)
        e = raises(R.RelayRefused, s.ctl.request, R.PHASE_B, s.t)
        assert e.reason == R.R_DWELL
        s.wait(61000)
        assert raises(R.RelayRefused, s.ctl.request, R.PHASE_A, s.t).reason == R.R_SAME_PHASE
        assert raises(R.RelayRefused, s.ctl.request, 7, s.t).reason == R.R_INVALID_PHASE
        s.ctl.request(R.PHASE_C, s.t)
        assert raises(R.RelayRefused, s.ctl.request, R.PHASE_B, s.t).reason == R.R_BUSY
        s.half_cycles(2)
        s.ctl.report(R.LOCK_OVERVOLTAGE, True, s.t)
        s.wait(61000)
        assert raises(R.RelayRefused, s.ctl.request, R.PHASE_A, s.t).reason == R.R_LOCKED_OUT
    finally:
        s.close()


def test_no_zero_crossing_aborts_and_gates_the_origin_again():
    s = Sim()
    try:
        s.wait(200)
        s.wait(61000)
        s.ctl.request(R.PHASE_B, s.t)
        s.half_cycles(15, report=False)  # the detector is silent: 150 ms, timeout 100
        assert s.board.closed() == [R.PHASE_A] and s.ctl.phase == R.PHASE_A and not s.ctl.busy
        assert s.ctl.locks & R.LOCK_RELAY_FAULT
        assert R.PHASE_B not in [m[1] for m in s.board.makes]  # the target was never gated
    finally:
        s.close()


def test_a_missed_crossing_never_makes_a_longer_gap():
    s = Sim()
    try:
        s.wait(61200)
        s.ctl.request(R.PHASE_B, s.t)
        s.half_cycles(1)  # the origin stops, reported
        s.half_cycles(1, report=False)  # the next crossing goes unreported
        s.half_cycles(1)  # a crossing 20 ms after the stop: too late to gate the target
        assert s.board.closed() == [R.PHASE_A] and s.ctl.locks & R.LOCK_RELAY_FAULT
        assert R.PHASE_B not in [m[1] for m in s.board.makes]
    finally:
        s.close()


def test_a_shorted_switch_is_never_bridged():
    s = Sim()
    try:
        s.wait(61200)
        s.board.weld(R.PHASE_A)  # the origin's thyristor failed short: it conducts ungated
        s.ctl.request(R.PHASE_C, s.t)
        s.half_cycles(20)
        assert s.board.overlaps == 0 and R.PHASE_C not in s.board.closed()
        assert s.ctl.locks & R.LOCK_RELAY_FAULT and not s.ctl.busy
    finally:
        s.close()


def test_a_spurious_edge_between_crossings_is_ignored():
    s = Sim()
    try:
        s.wait(61200)
        s.ctl.request(R.PHASE_B, s.t)
        s.half_cycles(1)
        s.t += 2
        s.board.at_zc = True
        s.ctl.zero_cross(s.t)  # noise 2 ms after the crossing
        s.board.at_zc = False
        assert s.board.closed() == [] and s.ctl.busy
        s.half_cycles(1)
        assert s.board.closed() == [R.PHASE_B]
    finally:
        s.close()
