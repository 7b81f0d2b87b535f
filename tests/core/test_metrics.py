"""phasecore.metrics: neutral current, CUF, voltage unbalance, time above threshold.

Known answers are worked by hand from the phasor definitions (docs/balancer.md).
"""

import math

from phasecore import metrics as m
from portable import raises


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def test_balanced_set_has_no_neutral_and_no_unbalance():
    # 100 A on each phase at pf 0.9: a symmetric set, the phasors cancel.
    p, q = m.load_components(100.0, 0.9)
    assert close(m.neutral_rel(p, q, p, q, p, q) + 1.0, 1.0)
    ia, ib, ic = m.phase_magnitudes(p, q, p, q, p, q)
    assert close(ia, 100.0) and close(ib, 100.0) and close(ic, 100.0)
    assert m.cuf(ia, ib, ic) == 0.0


def test_single_phase_load_puts_all_its_current_in_the_neutral():
    for phase in range(3):
        comps = [0.0] * 6
        comps[2 * phase], comps[2 * phase + 1] = m.load_components(40.0, 0.8)
        assert close(m.neutral_rel(*comps), 40.0)


def test_two_equal_phases_give_neutral_equal_to_one_of_them():
    # |I + I*a^2| = |I| for 120 degrees apart (A and B loaded, C idle).
    assert close(m.neutral_rel(30.0, 0.0, 30.0, 0.0, 0.0, 0.0), 30.0)


def test_neutral_matches_sum_of_absolute_phasors():
    loads = [(12.0, 0.95), (-7.5, 0.99), (33.0, 0.7)]
    re = im = 0.0
    comps = []
    for phase, (i, pf) in enumerate(loads):
        p, q = m.load_components(i, pf)
        comps += [p, q]
        x, y = m.abs_phasor(phase, p, q)
        re += x
        im += y
    assert close(m.neutral_rel(*comps), math.sqrt(re * re + im * im))


def test_abs_phasor_turns_by_the_phase_angle():
    # A unity-pf 10 A load on B sits at -120 degrees, on C at +120 degrees.
    x, y = m.abs_phasor(1, 10.0, 0.0)
    assert close(x, 10.0 * math.cos(-2 * math.pi / 3)) and close(y, 10.0 * math.sin(-2 * math.pi / 3))
    x, y = m.abs_phasor(2, 10.0, 0.0)
    assert close(x, 10.0 * math.cos(2 * math.pi / 3)) and close(y, 10.0 * math.sin(2 * math.pi / 3))
    # A lagging load on A: current behind the voltage, negative imaginary part.
    p, q = m.load_components(10.0, 0.8)
    x, y = m.abs_phasor(0, p, q)
    assert close(x, 8.0) and close(y, -6.0)
    raises(ValueError, m.abs_phasor, 3, 1.0, 0.0)


def test_export_reverses_the_current():
    p, q = m.load_components(-10.0, 0.8)
    assert close(p, -8.0) and close(q, -6.0)
    # An exporting house on A against an importing one of the same size on A: they cancel.
    p2, q2 = m.load_components(10.0, 0.8)
    assert close(m.neutral_rel(p + p2, q + q2, 0, 0, 0, 0) + 1.0, 1.0)


def test_power_factor_outside_range_is_refused():
    raises(ValueError, m.load_components, 1.0, 0.0)
    raises(ValueError, m.load_components, 1.0, 1.2)
    raises(ValueError, m.load_components, 1.0, -0.5)


def test_cuf_known_values():
    # 100/80/60 A: mean 80, max deviation 20 -> 25 %.
    assert close(m.cuf(100.0, 80.0, 60.0), 0.25)
    # Two loaded phases and one idle: mean 20, deviation 20 -> 100 %.
    assert close(m.cuf(30.0, 30.0, 0.0), 1.0)
    assert close(m.cuf_rel(100.0, 0.0, 80.0, 0.0, 60.0, 0.0), 0.25)


def test_cuf_floor_keeps_an_idle_transformer_at_zero():
    assert m.cuf(0.0, 0.0, 0.0) == 0.0
    # 0.3 A against 0.1 A is not "200 %": below the 1 A floor the ratio uses 1 A.
    assert close(m.cuf(0.3, 0.1, 0.1), (0.3 - 0.5 / 3) / 1.0)
    assert close(m.cuf(0.3, 0.1, 0.1, floor_a=0.1), (0.3 - 0.5 / 3) / (0.5 / 3))
    raises(ValueError, m.cuf, -1.0, 0.0, 0.0)


def test_vuf_of_a_balanced_set_is_zero():
    s = m.SIN120
    assert m.vuf_phasors(230.0, 0.0, -115.0, -230.0 * s, -115.0, 230.0 * s) < 1e-12
    assert m.vuf_line_magnitudes(400.0, 400.0, 400.0) < 1e-6


def test_vuf_phasors_matches_line_magnitude_formula():
    # An unbalanced set: Va 230, Vb 220 at -118 deg, Vc 240 at 121 deg.
    va = (230.0, 0.0)
    vb = (220.0 * math.cos(math.radians(-118)), 220.0 * math.sin(math.radians(-118)))
    vc = (240.0 * math.cos(math.radians(121)), 240.0 * math.sin(math.radians(121)))
    vuf = m.vuf_phasors(va[0], va[1], vb[0], vb[1], vc[0], vc[1])

    def mag(a, b):
        return math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)

    vuf_l = m.vuf_line_magnitudes(mag(va, vb), mag(vb, vc), mag(vc, va))
    assert 0.01 < vuf < 0.1
    assert abs(vuf - vuf_l) < 1e-9


def test_vuf_without_positive_sequence_or_impossible_sides_is_refused():
    # A pure negative-sequence set has no positive sequence: undefined, a clear error.
    s = m.SIN120
    raises(ValueError, m.vuf_phasors, 1.0, 0.0, -0.5, s, -0.5, -s)
    raises(ValueError, m.vuf_line_magnitudes, 400.0, 100.0, 100.0)
    raises(ValueError, m.vuf_line_magnitudes, 0.0, 400.0, 400.0)


def test_pvur():
    assert close(m.pvur(230.0, 230.0, 230.0) + 1.0, 1.0)
    assert close(m.pvur(240.0, 230.0, 220.0), 10.0 / 230.0)
    raises(ValueError, m.pvur, 0.0, 0.0, 0.0)


def test_share_and_time_above():
    values = [0.05, 0.15, 0.25, 0.1, 0.3]
    assert close(m.share_above(values, 0.1), 0.6)  # strictly above: 0.1 itself does not count
    assert m.share_above([], 0.1) == 0.0
    assert m.time_above(values, 0.2, 60) == 120
    assert m.share_above(iter(values), 0.2) == 0.4
