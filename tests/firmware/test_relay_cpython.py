"""Relay safety properties under hypothesis: random commands, lock-outs, clock steps and power cuts.

The rig and its oracle are ``phasekit.testing.relay_oracle.Rig`` (``phasekit bench relay``
runs the same checks over 100,000 seeded sequences): the real controller on the
simulated relay board, state in real files, power cut before or after any
pin write or save. Checked at every step, in true time: never two phases
closed, dead time, dwell, rolling budgets, no move while locked out or while
a condition holds, restore to the last committed phase, every phase change
explained by a move. Also here: the oracle catches a controller that breaks
a rule (so these tests can fail), the board's own bookkeeping against a brute
force recount, and an exhaustive cut at every side effect of a scripted day.
"""

import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasekit import cli
from phasekit.testing import relay_oracle as RS
from phasenode import relay as R
from phasenode.hal.pin_host import RelayBoard

HOUR = 3600 * 1000
_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


@pytest.fixture
def root():
    d = tempfile.mkdtemp(prefix="phasekit-relay-", dir=_TMP)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _clean(d):
    for p in Path(d).iterdir():
        p.unlink()
    return d


@st.composite
def rules(draw):
    per_hour = draw(st.integers(1, 4))
    dwell = draw(st.sampled_from([1, 2, 30, 600]))
    return R.RelayRules(
        dead_time_ms=draw(st.sampled_from([20, 250, 2000])),
        min_dwell_s=dwell,
        max_per_hour=per_hour,
        max_per_day=draw(st.integers(per_hour, 8)),
        lock_hold_s=draw(st.sampled_from([0, 3, 120])),
        settle_ms=min(dwell * 1000, draw(st.sampled_from([0, 500, 5000]))),
        checkpoint_s=draw(st.sampled_from([0, 60, 3600])),
    )


@st.composite
def wait(draw):
    ms = draw(st.integers(1, 4 * HOUR) | st.integers(1, 3000) | st.integers(1, 700000))
    step = max(draw(st.sampled_from([10, 100, 1000, 60000])), -(-ms // RS._MAX_TICKS))
    return ("wait", ms, min(ms, step))


ACTION = st.one_of(
    wait(),
    wait(),
    st.tuples(st.just("move"), st.integers(-1, 4)),
    st.tuples(st.just("move"), st.integers(R.PHASE_A, R.PHASE_C)),
    st.tuples(st.just("report"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("unlock"), st.integers(1, 63)),
    st.tuples(st.just("jump"), st.integers(1, 10**7)),
    st.tuples(st.just("cut"), st.integers(0, 12), st.integers(0, 3 * HOUR)),
    st.just(("soft",)),
    st.tuples(st.just("corrupt"), st.binary(max_size=30)),
    st.tuples(st.just("weld"), st.booleans()),
    st.tuples(st.just("flash"), st.booleans()),
)

_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(rig, actions):
    for a in actions:
        rig.step(a)
    rig.finish()
    return rig


@_SETTINGS
@given(r=rules(), active_high=st.booleans(), home=st.integers(0, 3), actions=st.lists(ACTION, max_size=60))
def test_random_sequences_keep_every_safety_property(root, r, active_high, home, actions):
    rig = RS.Rig(r, _clean(root), active_high=active_high, home=home, rng=random.Random(1))
    _run(rig, actions)


@_SETTINGS
@given(r=rules(), seed=st.integers(0, 2**32 - 1))
def test_bench_style_sequences_keep_every_safety_property(root, r, seed):
    rng = random.Random(seed)
    rig = RS.Rig(r, _clean(root), active_high=rng.random() < 0.5, home=rng.randint(0, 3), rng=rng)
    _run(rig, RS.random_actions(rng, 60, r))


SCRIPT = [
    ("wait", 3000, 100),
    ("move", R.PHASE_B),
    ("wait", 61000, 1000),
    ("move", R.PHASE_B),
    ("wait", 2500, 100),
    ("report", 0, True),
    ("move", R.PHASE_C),
    ("report", 0, False),
    ("unlock", R.LOCK_OVERCURRENT),
    ("report", 3, True),
    ("wait", 2000, 100),
    ("report", 3, False),
    ("wait", 130000, 1000),
    ("move", R.PHASE_C),
    ("wait", 2500, 100),
    ("wait", 61000, 1000),
    ("weld", True),
    ("move", R.PHASE_A),
    ("wait", 2500, 100),
    ("weld", False),
    ("unlock", 63),
    ("wait", 64000, 1000),
    ("move", R.PHASE_A),
    ("wait", 2500, 100),
]


def test_power_cut_at_every_side_effect_of_a_scripted_day(root):
    r = R.RelayRules(dead_time_ms=2000, min_dwell_s=60, max_per_hour=4, max_per_day=6, lock_hold_s=120, settle_ms=1000)
    clean = _run(RS.Rig(r, _clean(root), home=R.PHASE_A), SCRIPT)
    assert clean.moves_done >= 3 and clean.aborts == 1 and clean.power_cuts == 1
    total = clean.ops
    outcomes = set()
    for k in range(total + 1):
        rig = RS.Rig(r, _clean(root), home=R.PHASE_A)
        _run(rig, [("cut", k, 5000)] + SCRIPT)
        outcomes.add((rig.board.connected(), rig.moves_done))
    assert len(outcomes) > 3, outcomes


class _NoDeadTime(R.RelayController):
    def request(self, target, now_ms):
        super().request(target, now_ms)
        self._countdown = 0


class _NoDwell(R.RelayController):
    def _check(self, target):
        r = super()._check(target)
        return R.R_OK if r == R.R_DWELL else r


class _IgnoresLocks(R.RelayController):
    def _check(self, target):
        r = super()._check(target)
        return R.R_OK if r == R.R_LOCKED_OUT else r


class _RollsForward(R.RelayController):
    def __init__(self, pins, active_high, load, save, *a, **kw):
        def forward():
            st = load()
            if st and st["intent"] != R.PHASE_NONE:
                st = dict(st, phase=st["intent"], intent=R.PHASE_NONE)
            return st

        super().__init__(pins, active_high, forward, save, *a, **kw)


@pytest.mark.parametrize("broken", [_NoDeadTime, _NoDwell, _IgnoresLocks, _RollsForward])
def test_the_oracle_catches_a_controller_that_breaks_a_rule(root, monkeypatch, broken):
    monkeypatch.setattr(R, "RelayController", broken)
    found = 0
    for seed in range(300):
        rng = random.Random(seed)
        r = RS.random_rules(rng)
        try:
            rig = RS.Rig(r, _clean(root), home=R.PHASE_A, rng=rng)
            _run(rig, RS.random_actions(rng, 40, r))
        except RS.Violation:
            found += 1
    assert found > 0, "%s broke a rule in 300 sequences and nothing noticed" % broken.__name__


@settings(max_examples=200, deadline=None)
@given(
    writes=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 5000)), max_size=40),
    active_high=st.booleans(),
)
def test_board_bookkeeping_matches_a_brute_force_recount(writes, active_high):
    t = [0]
    b = RelayBoard(active_high, clock=lambda: t[0], keep=None)
    on = 1 if active_high else 0
    for i, close, dt in writes:
        t[0] += dt
        b.pins[i].value(on if close else 1 - on)
    # Recount from the transition log alone.
    closed = [False] * 3
    last_open = [None] * 3
    overlaps = 0
    gap = None
    for tt, phase, c, _cause in b.transitions:
        i = phase
        if c:
            for j in range(3):
                if j != i and closed[j]:
                    overlaps += 1
                elif j != i and last_open[j] is not None:
                    gap = tt - last_open[j] if gap is None else min(gap, tt - last_open[j])
        else:
            last_open[i] = tt
        closed[i] = c
    assert b.overlaps == overlaps and b.ever_two_closed() == (overlaps > 0)
    assert b.min_gap_ms == gap
    assert b.closed() == [i for i in range(3) if closed[i]]


def test_bench_script_prints_the_table_and_finds_nothing_unsafe(capsys):
    assert cli.main(["bench", "relay", "-n", "150", "--seed", "7", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "unsafe states found" in out and "refused: DWELL" in out
    line = [ln for ln in out.splitlines() if "unsafe states found" in ln][0]
    assert line.split()[-1] == "0", out


def test_solid_state_sequences_keep_every_safety_property(tmp_path):
    totals, _refusals, failures = RS.run(150, 11, 40, str(tmp_path), progress=False, kind="solid-state")
    assert totals["unsafe"] == 0, failures
    assert totals["moves"] > 10 and totals["cuts"] > 30
    assert 0 < totals["max_gap_ms"] <= 10  # at most one half-cycle at 50 or 60 Hz


class _GatesTargetAtOnce(R.SolidStateController):
    """Broken: gates the target at the request, not after the origin's zero crossing."""

    def request(self, target, now_ms):
        super().request(target, now_ms)
        self._finish_move()


class _SkipsTheDeadHalfCycle(R.SolidStateController):
    """Broken: gates the target at the crossing where the origin stops."""

    def zero_cross(self, now_ms):
        st = super().zero_cross(now_ms)
        if st == R.ST_BREAK:
            self._finish_move()
        return self._state


class _FiresLate(R.SolidStateController):
    """Broken: ignores a missed crossing and gates the target however late."""

    def zero_cross(self, now_ms):
        self._advance(now_ms)
        if self._state == R.ST_BREAK:
            self._wait = self.rules.dead_time_ms
        return super().zero_cross(now_ms)


@pytest.mark.parametrize("broken", [_GatesTargetAtOnce, _SkipsTheDeadHalfCycle, _FiresLate])
def test_the_oracle_catches_a_solid_state_controller_that_breaks_a_rule(root, monkeypatch, broken):
    monkeypatch.setattr(R, "SolidStateController", broken)
    totals, _refusals, failures = RS.run(200, 5, 40, _clean(root), progress=False, kind="solid-state")
    assert totals["unsafe"] > 0, "%s broke a rule in 300 sequences and nothing noticed" % broken.__name__
