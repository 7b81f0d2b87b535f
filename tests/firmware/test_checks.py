"""Local anomaly checks (both interpreters): thresholds, hysteresis, meter silence, plausibility.

The checks report to the real relay controller on the simulated relay board
with the real file store, so each test pins what the node would actually
refuse: a set condition is a lock-out bit on the controller, a cleared one
lifts (voltage, meter) after the relay's hold time or stays latched
(overcurrent) until unlocked.
"""

import gc

from node_fixtures import Clock, rmtree, tmpdir
from phasenode import relay as R
from phasenode import settings
from phasenode.checks import (
    EV_IMPLAUSIBLE,
    EV_METER_BACK,
    EV_METER_SILENT,
    FIELD_ALARM,
    FIELD_FREQUENCY,
    FIELD_POWER,
    FIELD_VOLTAGE,
    LIMIT_RANGES,
    Checks,
    LimitError,
    validate_limits,
)
from phasenode.drivers.pzem import Measurement
from phasenode.events import EventQueue
from phasenode.hal.pin_host import RelayBoard
from phasenode.persist import Store
from phasenode.relay import RelayController, RelayRules
from phasenode.settings import DEFAULT_LIMITS, ConfigError, NodeConfig
from portable import raises

LIMITS = {"overcurrent_ma": 40000, "overvoltage_dv": 2530, "undervoltage_dv": 2070, "meter_silent_ms": 10000}


class Rig:
    """A relay controller (restored to A), an event queue and the checks, on a hand-moved clock."""

    def __init__(self, **kw):
        self.root = tmpdir("checks")
        self.clock = Clock(0)
        self.board = RelayBoard(clock=self.clock)
        store = Store(self.root, fsync=False)
        self.relay = RelayController(
            self.board.pins,
            True,
            *store.relay_storage(),
            now_ms=0,
            rules=RelayRules(dead_time_ms=100, lock_hold_s=5, settle_ms=0),
            home_phase=R.PHASE_A,
        )
        self.step(200)  # restore done: A closed, not in blackout
        self.relay.pop_events()
        self.events = EventQueue()
        self.checks = Checks(dict(LIMITS), self.relay, self.events, self.clock.t, **kw)
        self.m = Measurement()
        self.good()

    def step(self, ms):
        self.clock.t += ms
        self.relay.tick(self.clock.t)

    def good(self, v=2300, i=5000, p=None, e=1000, f=500, pf=95):
        m = self.m
        m.voltage_dv = v
        m.current_ma = i
        m.power_dw = v * i * pf // 100000 if p is None else p
        m.energy_wh = e
        m.frequency_dhz = f
        m.pf_centi = pf
        return m

    def sample(self, ms=1000, **values):
        self.step(ms)
        self.good(**values)
        return self.checks.sample(self.m, self.clock.t)

    def events_list(self):
        out = []
        while len(self.events):
            out.append(self.events.pop())
        return out

    def close(self):
        rmtree(self.root)


def test_nominal_samples_are_valid_and_report_every_condition_clear():
    r = Rig()
    try:
        for _ in range(5):
            assert r.sample() is True
        assert r.checks.conditions == 0 and r.relay.locks == 0
        assert r.checks.valid == 5 and r.checks.samples == 5
        assert r.events_list() == []
    finally:
        r.close()


def test_overcurrent_sets_after_two_samples_and_latches_until_unlock():
    r = Rig()
    try:
        assert r.sample(i=40001)
        assert r.relay.locks == 0, "one sample over the limit is not enough"
        assert r.sample(i=45000)
        assert r.checks.conditions == R.LOCK_OVERCURRENT and r.relay.locks == R.LOCK_OVERCURRENT
        assert (R.EV_LOCKED, R.LOCK_OVERCURRENT, R.LOCK_OVERCURRENT) in r.relay.pop_events()
        # Hysteresis: between 36 A (10 % below) and the limit the condition holds.
        for _ in range(5):
            r.sample(i=38000)
        assert r.checks.conditions == R.LOCK_OVERCURRENT
        e = raises(R.RelayRefused, r.relay.unlock, R.LOCK_OVERCURRENT, r.clock.t)
        assert e.reason == R.R_CONDITION_ACTIVE
        # Three samples below 36 A clear it; the relay lock stays latched until unlocked.
        r.sample(i=30000)
        r.sample(i=30000)
        assert r.checks.conditions == R.LOCK_OVERCURRENT
        r.sample(i=30000)
        assert r.checks.conditions == 0
        r.step(60000)
        assert r.relay.locks == R.LOCK_OVERCURRENT
        assert r.relay.unlock(R.LOCK_OVERCURRENT, r.clock.t) == 0
    finally:
        r.close()


def test_a_spike_between_samples_inside_the_band_resets_the_streak():
    r = Rig()
    try:
        r.sample(i=41000)
        r.sample(i=39000)  # inside the hysteresis band: the set streak starts again
        r.sample(i=41000)
        assert r.checks.conditions == 0
        r.sample(i=41000)
        assert r.checks.conditions == R.LOCK_OVERCURRENT
    finally:
        r.close()


def test_overvoltage_and_undervoltage_with_hysteresis_and_auto_clear():
    r = Rig()
    try:
        r.sample(v=2540)
        r.sample(v=2540)
        assert r.relay.locks == R.LOCK_OVERVOLTAGE
        # 252.0 V is inside the limit but not by the 2 V margin: held.
        for _ in range(4):
            r.sample(v=2520)
        assert r.checks.conditions == R.LOCK_OVERVOLTAGE
        for _ in range(3):
            r.sample(v=2510)
        assert r.checks.conditions == 0
        assert r.relay.locks == R.LOCK_OVERVOLTAGE, "the relay holds the lock lock_hold_s after the clear"
        for _ in range(7):
            r.sample(v=2300)
        assert r.relay.locks == 0
        # Under-voltage: 206.9 V twice.
        r.sample(v=2069)
        r.sample(v=2069)
        assert r.relay.locks == R.LOCK_UNDERVOLTAGE
        for _ in range(3):
            r.sample(v=2080)  # above the limit, not by the margin
        assert r.checks.conditions == R.LOCK_UNDERVOLTAGE
        for _ in range(3):
            r.sample(v=2100)
        assert r.checks.conditions == 0
    finally:
        r.close()


def test_meter_silent_sets_the_meter_lock_once_and_back_clears_it():
    r = Rig()
    try:
        r.sample()
        for _ in range(10):
            r.step(1000)
            r.checks.failed(r.clock.t)
        assert r.checks.conditions == 0, "10 s without a reply is the limit, not beyond it"
        r.step(1000)
        r.checks.failed(r.clock.t)
        assert r.checks.conditions == R.LOCK_METER and r.relay.locks == R.LOCK_METER
        assert not r.checks.meter_ok
        for _ in range(5):
            r.step(1000)
            r.checks.failed(r.clock.t)
        ev = r.events_list()
        assert [e[0] for e in ev] == [EV_METER_SILENT], ev
        assert ev[0][1] == 11000
        assert r.sample() is True
        assert r.checks.meter_ok and r.checks.conditions == 0
        ev = r.events_list()
        assert ev == [(EV_METER_BACK, 17000, 0)], ev
        assert r.checks.failures == 16
    finally:
        r.close()


def test_meter_silent_also_without_any_call_of_failed():
    r = Rig()
    try:
        r.step(10500)
        r.checks.tick(r.clock.t)
        assert r.checks.conditions == R.LOCK_METER
    finally:
        r.close()


def test_power_above_apparent_power_is_implausible():
    r = Rig()
    try:
        # 230 V * 5 A = 1150 W; +5 % + 2 W = 1209.5 W is the most that passes.
        assert r.sample(p=12095) is True
        assert r.sample(p=12096) is False
        assert r.checks.last_field == FIELD_POWER and r.checks.last_value == 12096
        # No load: 2 W of slack for the meter's resolution.
        assert r.sample(i=0, p=20) is True
        assert r.sample(i=0, p=21) is False
        ev = r.events_list()
        assert ev == [(EV_IMPLAUSIBLE, FIELD_POWER, 12096), (EV_IMPLAUSIBLE, FIELD_POWER, 21)], ev
        assert r.checks.implausible == 2
    finally:
        r.close()


def test_frequency_outside_45_to_65_hz_with_mains_present_is_implausible():
    r = Rig()
    try:
        assert r.sample(f=450) and r.sample(f=650)
        assert r.sample(f=449) is False and r.checks.last_field == FIELD_FREQUENCY
        assert r.sample(f=651) is False
        assert r.sample(f=0) is False  # 230 V present but no frequency: garbage
        # No mains (the house is off): 0 Hz is what the meter says.
        assert r.sample(v=0, i=0, p=0, f=0) is True
        assert r.sample(v=100, i=0, p=0, f=300) is False
    finally:
        r.close()


def test_garbage_values_are_refused_not_crashed_on():
    r = Rig()
    try:
        cases = [
            ("voltage_dv", None, FIELD_VOLTAGE),
            ("voltage_dv", 230.0, FIELD_VOLTAGE),
            ("voltage_dv", 3001, FIELD_VOLTAGE),
            ("voltage_dv", -1, FIELD_VOLTAGE),
            ("current_ma", 100001, 1),
            ("current_ma", True, 1),
            ("power_dw", 1 << 40, FIELD_POWER),
            ("energy_wh", -5, 3),
            ("energy_wh", 1 << 32, 3),
            ("frequency_dhz", "50", FIELD_FREQUENCY),
            ("pf_centi", 101, 5),
            ("pf_centi", float("nan"), 5),
        ]
        for name, value, field in cases:
            r.step(100)
            m = r.good()
            setattr(m, name, value)
            assert r.checks.sample(m, r.clock.t) is False, (name, value)
            assert r.checks.last_field == field, (name, value, r.checks.last_field)
        # One event for the whole run of bad samples: the first.
        ev = r.events_list()
        assert len(ev) == 1 and ev[0][0] == EV_IMPLAUSIBLE and ev[0][1] == FIELD_VOLTAGE and ev[0][2] == -1, ev
        assert r.sample() is True
    finally:
        r.close()


def test_implausible_samples_for_long_enough_mean_the_meter_failed():
    r = Rig()
    try:
        for _ in range(11):
            r.sample(f=700)
        assert r.checks.conditions == R.LOCK_METER
        assert r.checks.valid == 0 and r.checks.implausible == 11
    finally:
        r.close()


def test_driver_implausible_fields_map_to_codes():
    assert Checks.field_code("voltage") == FIELD_VOLTAGE
    assert Checks.field_code("power_factor") == 5
    assert Checks.field_code("alarm") == FIELD_ALARM
    assert Checks.field_code("address") == 9
    r = Rig()
    try:
        r.step(100)
        r.checks.failed(r.clock.t, FIELD_ALARM, 0x1234)
        assert r.events_list() == [(EV_IMPLAUSIBLE, FIELD_ALARM, 0x1234)]
        assert r.checks.implausible == 1 and r.checks.failures == 0
    finally:
        r.close()


def test_limits_validation_matches_the_config_file_rules():
    assert LIMIT_RANGES is settings.LIMIT_RANGES, "one table, not a copy"
    assert validate_limits(dict(DEFAULT_LIMITS)) == DEFAULT_LIMITS
    base = {"format": 1, "node": {"id": "n1", "address": 1}, "key": {"file": "k"}, "board": "b", "home_phase": "A"}
    for key, lo, hi in LIMIT_RANGES:
        for value in (lo - 1, lo, hi, hi + 1):
            lim = dict(DEFAULT_LIMITS)
            lim[key] = value
            if key == "undervoltage_dv" and value >= lim["overvoltage_dv"]:
                lim["overvoltage_dv"] = 3000
            if key == "overvoltage_dv" and value <= lim["undervoltage_dv"]:
                lim["undervoltage_dv"] = 1000
            cfg = dict(base)
            cfg["limits"] = lim
            try:
                NodeConfig(cfg)
                config_ok = True
            except ConfigError:
                config_ok = False
            try:
                validate_limits(lim)
                checks_ok = True
            except LimitError:
                checks_ok = False
            assert config_ok == checks_ok == (lo <= value <= hi), (key, value, config_ok, checks_ok)
    e = raises(LimitError, validate_limits, {"overcurrent_ma": 5000})
    assert "missing" in str(e)
    lim = dict(DEFAULT_LIMITS)
    lim["undervoltage_dv"] = 2600
    lim["overvoltage_dv"] = 2600
    raises(LimitError, validate_limits, lim)
    lim["trip_ms"] = 5
    raises(LimitError, validate_limits, lim)


def test_set_limits_moves_the_thresholds():
    r = Rig()
    try:
        lim = dict(LIMITS)
        lim["overcurrent_ma"] = 10000
        r.checks.set_limits(lim)
        r.sample(i=10500)
        r.sample(i=10500)
        assert r.checks.conditions == R.LOCK_OVERCURRENT
        assert r.checks.limits() == lim
        raises(LimitError, Checks, {"overcurrent_ma": 1}, None, None, 0)
        raises(LimitError, Checks, dict(LIMITS), None, None, 0, 0)
    finally:
        r.close()


def test_measure_only_node_keeps_conditions_without_a_relay():
    ev = EventQueue()
    c = Checks(dict(LIMITS), None, ev, 0)
    m = Measurement()
    m.voltage_dv, m.current_ma, m.power_dw, m.energy_wh, m.frequency_dhz, m.pf_centi = 2600, 0, 0, 5, 500, 100
    for t in (1000, 2000):
        assert c.sample(m, t)
    assert c.conditions == R.LOCK_OVERVOLTAGE


def test_the_steady_check_allocates_nothing():
    r = Rig()
    try:
        m = r.good()
        c = r.checks
        t = r.clock.t
        for _ in range(20):  # warm up: first calls may intern or cache
            t += 1000
            c.sample(m, t)
        if not hasattr(gc, "mem_alloc"):
            return  # CPython boxes every int: only MicroPython can show this
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            for k in range(500):
                t += 1000
                m.current_ma = 5000 + (k & 7)  # vary the values, still nominal
                c.sample(m, t)
            used = gc.mem_alloc() - before
        finally:
            gc.enable()
        assert c.conditions == 0
        assert used == 0, "checks allocated %d bytes over 500 samples" % used
    finally:
        r.close()
