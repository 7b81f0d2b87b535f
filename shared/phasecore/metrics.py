"""Unbalance metrics of a three-phase, four-wire LV supply (portable).

Used by the balancer to judge a plan, by the gateway to report what it sees,
and by the replay benchmark to score strategies, so all three measure the same
thing. Currents are amperes, voltages volts, all as floats.

Conventions (docs/balancer.md):

* Phase voltages are a positive-sequence set: A at 0 deg, B at -120 deg, C at
  +120 deg.
* A load on a phase is described *relative to its own phase voltage* by its
  active and reactive current ``(ip, iq)``: ``ip = I*pf`` (negative when it
  exports), ``iq = I*sin(acos(pf))`` (positive when it lags, i.e. draws
  inductive reactive power). Its phasor relative to its voltage is
  ``ip - j*iq``; the absolute phasor is that turned by the phase's angle.
  ``ip``/``iq`` are also what a meter's ``P/V`` and ``Q/V`` give, so a meter
  reading and a node reading add up without knowing the angles.
* Neutral current: the magnitude of the phasor sum of the three phase currents
  (Kirchhoff at the star point).
* Current unbalance factor (CUF): ``max_p |I_p - I_mean| / I_mean`` over the
  phase current *magnitudes* -- the ANSI/NEMA MG-1 "percent imbalance", the
  formula IEEE 1159 gives for voltage, applied to current. With almost no load
  the ratio is meaningless (0.3 A against 0.1 A is "200 %"), so the
  denominator is never taken below ``floor_a`` (default 1 A, a phasekit
  convention): CUF is 0 for an unloaded transformer. A caller that judges
  unbalance against a rating passes ``floor_a`` = a share of the rated current
  (as motor-protection relays do below full-load current); a caller that wants
  the 10-minute values of power-quality standards (EN 50160, IEC 61000-4-30)
  passes 10-minute r.m.s. phase currents (docs/balancer.md, target 2).

Voltage unbalance: ``vuf_phasors`` is the true VUF of IEC 61000-4-30 (negative
over positive sequence) from phasors; ``vuf_line_magnitudes`` gives the same
number from the three line-to-line magnitudes alone (exact, CIGRE formula);
``pvur`` is the NEMA/IEEE 936 style max-deviation-over-mean of magnitudes.

ESP32 note: the ESP32 port computes in single precision (about 7 digits).
Currents of a few hundred amperes keep about 1 mA of resolution, which is far
finer than a PZEM-004T's; sums are formed in an order that does not cancel
large terms.
"""

import math

from phasecore import codes as _codes
from phasecore.errors import quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = (
    "PHASE_NAMES",
    "SIN120",
    "load_components",
    "abs_phasor",
    "neutral_rel",
    "phase_magnitudes",
    "cuf",
    "cuf_rel",
    "vuf_phasors",
    "vuf_line_magnitudes",
    "pvur",
    "share_above",
    "time_above",
)

PHASE_NAMES = "".join(_codes.PHASE_NAMES[:3])  # "ABC": phasecore.codes' letters, by phase index
SIN120 = 0.8660254037844386  # sin(120 deg) = sqrt(3)/2
DEFAULT_FLOOR_A = 1.0
_A = const(0)  # phasecore.codes.PHASE_A, folded into this module's bytecode
_B = const(1)  # PHASE_B
_C = const(2)  # PHASE_C


def load_components(current_a, pf):
    """Active and reactive current ``(ip, iq)`` of a load drawing ``current_a``
    (signed: negative exports) at power factor ``pf`` (0 < pf <= 1, lagging).

    This is the brief's physical model: a house current P/(V*pf), signed for
    export, lagging its phase voltage by acos(pf).
    """
    if not 0.0 < pf <= 1.0:
        raise ValueError("power factor %s outside (0, 1]" % (quote(pf),))
    return current_a * pf, current_a * math.sqrt(1.0 - pf * pf)


def abs_phasor(phase, ip, iq):
    """Absolute phasor ``(re, im)`` of relative components on phase 0/1/2 (A/B/C)."""
    re = ip
    im = -iq
    if phase == _A:
        return re, im
    if phase == _B:  # times (-1/2 - j*sqrt3/2)
        return -0.5 * re + SIN120 * im, -SIN120 * re - 0.5 * im
    if phase == _C:  # times (-1/2 + j*sqrt3/2)
        return -0.5 * re - SIN120 * im, SIN120 * re - 0.5 * im
    raise ValueError("phase index %s is not 0, 1 or 2" % (quote(phase),))


def neutral_rel(pa, qa, pb, qb, pc, qc):
    """Neutral current magnitude from each phase's relative ``(ip, iq)`` totals."""
    # Sum of ip_p*rot_p - j*iq_p*rot_p over the three phases, expanded by hand.
    re = pa - 0.5 * (pb + pc) - SIN120 * (qb - qc)
    im = -qa + 0.5 * (qb + qc) + SIN120 * (pc - pb)
    return math.sqrt(re * re + im * im)


def phase_magnitudes(pa, qa, pb, qb, pc, qc):
    """Phase current magnitudes (A) from relative components."""
    return math.sqrt(pa * pa + qa * qa), math.sqrt(pb * pb + qb * qb), math.sqrt(pc * pc + qc * qc)


def cuf(ia, ib, ic, floor_a=DEFAULT_FLOOR_A):
    """Current unbalance factor from three phase current magnitudes (a fraction, 0.25 = 25 %).

    ``max |I_p - I_mean| / max(I_mean, floor_a)``; see the module docstring
    for why the floor exists.
    """
    if ia < 0 or ib < 0 or ic < 0:
        raise ValueError("phase current magnitudes must be >= 0, got %s %s %s" % (quote(ia), quote(ib), quote(ic)))
    mean = (ia + ib + ic) / 3.0
    dev = max(abs(ia - mean), abs(ib - mean), abs(ic - mean))
    return dev / (mean if mean > floor_a else floor_a)


def cuf_rel(pa, qa, pb, qb, pc, qc, floor_a=DEFAULT_FLOOR_A):
    """CUF from relative components (what the balancer estimates)."""
    ia, ib, ic = phase_magnitudes(pa, qa, pb, qb, pc, qc)
    return cuf(ia, ib, ic, floor_a)


def vuf_phasors(va_re, va_im, vb_re, vb_im, vc_re, vc_im):
    """Voltage unbalance factor |V2| / |V1| from phase voltage phasors (IEC 61000-4-30)."""
    # a = 1 at 120 deg. V1 = (Va + a Vb + a^2 Vc)/3, V2 = (Va + a^2 Vb + a Vc)/3; the 1/3 cancels.
    # a*V turns V by +120 deg, a^2*V by -120 deg.
    p_re = va_re + (-0.5 * vb_re - SIN120 * vb_im) + (-0.5 * vc_re + SIN120 * vc_im)
    p_im = va_im + (SIN120 * vb_re - 0.5 * vb_im) + (-SIN120 * vc_re - 0.5 * vc_im)
    n_re = va_re + (-0.5 * vb_re + SIN120 * vb_im) + (-0.5 * vc_re - SIN120 * vc_im)
    n_im = va_im + (-SIN120 * vb_re - 0.5 * vb_im) + (SIN120 * vc_re - 0.5 * vc_im)
    pos = math.sqrt(p_re * p_re + p_im * p_im)
    scale = abs(va_re) + abs(va_im) + abs(vb_re) + abs(vb_im) + abs(vc_re) + abs(vc_im)
    if pos <= 1e-6 * scale or pos == 0.0:
        raise ValueError("no positive-sequence voltage: VUF undefined")
    return math.sqrt(n_re * n_re + n_im * n_im) / pos


def vuf_line_magnitudes(vab, vbc, vca):
    """VUF |V2|/|V1| from the three line-to-line voltage magnitudes (exact, CIGRE).

    ``beta = (a^4 + b^4 + c^4) / (a^2 + b^2 + c^2)^2``,
    ``VUF = sqrt((1 - sqrt(3 - 6 beta)) / (1 + sqrt(3 - 6 beta)))``.
    Line voltages carry no zero sequence, so magnitudes suffice.
    """
    if vab <= 0 or vbc <= 0 or vca <= 0:
        raise ValueError("line voltages must be > 0, got %s %s %s" % (quote(vab), quote(vbc), quote(vca)))
    a2, b2, c2 = vab * vab, vbc * vbc, vca * vca
    s = a2 + b2 + c2
    beta = (a2 * a2 + b2 * b2 + c2 * c2) / (s * s)
    r = 3.0 - 6.0 * beta
    if r < 0.0:
        # No triangle with these sides: not a set of line voltages. Rounding can give -1e-16.
        if r > -1e-9:
            r = 0.0
        else:
            raise ValueError("line voltages %s %s %s do not close a triangle" % (quote(vab), quote(vbc), quote(vca)))
    root = math.sqrt(r)
    return math.sqrt((1.0 - root) / (1.0 + root))


def pvur(va, vb, vc):
    """Voltage unbalance rate (NEMA MG1 / IEEE 936 style): max deviation from the mean over the mean."""
    mean = (va + vb + vc) / 3.0
    if mean <= 0:
        raise ValueError("mean voltage must be > 0, got %s" % (quote(mean),))
    return max(abs(va - mean), abs(vb - mean), abs(vc - mean)) / mean


def share_above(values, threshold):
    """Share (0..1) of the samples strictly above ``threshold``; 0 for no samples."""
    n = above = 0
    for v in values:
        n += 1
        if v > threshold:
            above += 1
    return above / n if n else 0.0


def time_above(values, threshold, step_s):
    """Time (s) spent strictly above ``threshold`` when one sample stands for ``step_s``."""
    above = 0
    for v in values:
        if v > threshold:
            above += 1
    return above * step_s
