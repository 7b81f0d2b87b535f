"""Local anomaly checks on every meter sample: the node's own eyes, with or without a Pi.

Each sample (or failed read) of the PZEM-004T goes through ``Checks``. It
decides four conditions and reports each to the relay controller
(``RelayController.report``), which turns them into lock-outs and clears them
by its own rules (docs/relay-safety.md):

- ``LOCK_OVERCURRENT``: current above ``overcurrent_ma``;
- ``LOCK_OVERVOLTAGE`` / ``LOCK_UNDERVOLTAGE``: voltage above
  ``overvoltage_dv`` or below ``undervoltage_dv`` (defaults 230 V +-10 %, the
  EN 50160 supply voltage variation);
- ``LOCK_METER``: no valid reading for ``meter_silent_ms`` (the meter is
  silent, answers garbage, or answers with values that cannot be real).

Hysteresis, so a value hovering at a limit does not chatter: a condition is
set after ``set_samples`` consecutive samples beyond its limit and cleared
after ``clear_samples`` consecutive samples back inside the limit by a margin
(``i_hyst_pm`` per mille of the current limit, ``v_hyst_dv`` for voltage);
in between it holds. The relay adds its own hold time before a voltage or
meter lock lifts, and overcurrent stays latched until an explicit unlock.

Plausibility, on top of what the driver already refuses
(``phasenode.drivers.pzem.decode_measurement``): every value inside the
reading's wire ranges (``phasecore.msg``) so a reading can always be
encoded; frequency within 45..65 Hz whenever mains is present (0 when not);
active power at most V*I*1.05 + 2 W (a meter cannot measure more real power
than apparent power). An implausible sample counts as no valid reading.

Events (``phasecore.codes``) go to an ``EventQueue``:
METER_SILENT (value: ms since the last valid reading), METER_BACK (value:
ms the meter was out) and IMPLAUSIBLE_READING (value: the field, as an index
of ``phasecore.msg.READING_FIELDS``, or 8 for the meter's alarm register;
value2: the offending value), once per episode.

The one thing to know: ``sample`` and ``failed`` allocate nothing in the
steady state (integer arithmetic only, on small ints: every product stays
below 2**30, the ESP32's small-int limit), so they can run every second for
ever.

Public: ``Checks``, ``validate_limits``, ``LimitError``, ``LIMIT_RANGES``, ``FIELD_*`` codes, ``EV_*`` codes.
"""

from phasecore.codes import EV_IMPLAUSIBLE_READING as EV_IMPLAUSIBLE
from phasecore.codes import (
    EV_METER_BACK,
    EV_METER_SILENT,
    LOCK_METER,
    LOCK_OVERCURRENT,
    LOCK_OVERVOLTAGE,
    LOCK_UNDERVOLTAGE,
)
from phasecore.errors import quote
from phasenode.compat import const, ticks_diff
from phasenode.errors import NodeError
from phasenode.settings import DEFAULT_LIMITS, LIMIT_RANGES

__all__ = (
    "Checks",
    "LimitError",
    "validate_limits",
    "LIMIT_RANGES",
    "EV_METER_SILENT",
    "EV_METER_BACK",
    "EV_IMPLAUSIBLE",
    "FIELD_VOLTAGE",
    "FIELD_CURRENT",
    "FIELD_POWER",
    "FIELD_ENERGY",
    "FIELD_FREQUENCY",
    "FIELD_PF",
    "FIELD_ALARM",
)

# IMPLAUSIBLE_READING value: the field, as an index of phasecore.msg.READING_FIELDS.
FIELD_VOLTAGE = const(0)
FIELD_CURRENT = const(1)
FIELD_POWER = const(2)
FIELD_ENERGY = const(3)
FIELD_FREQUENCY = const(4)
FIELD_PF = const(5)
FIELD_ALARM = const(8)  # the meter's alarm register (not in the reading)
FIELD_UNKNOWN = const(9)
# Field names as phasenode.drivers.pzem.ImplausibleReading.field gives them.
_DRIVER_FIELDS = ("voltage", "current", "power", "energy", "frequency", "power_factor")

# Wire ranges of a reading (phasecore.msg, reading table).
_MAX_V_DV = const(3000)
_MAX_I_MA = const(100000)
_MAX_P_DW = const(300000)
_MAX_E_WH = 0xFFFFFFFF
_MAX_PF = const(100)
# 45..65 Hz when mains is present (PZEM-004T v3 specification); "present"
# means 40 V or more, the driver's threshold.
_MIN_F_DHZ = const(450)
_MAX_F_DHZ = const(650)
_MAINS_DV = const(400)
# P <= S * 1.05 + 2 W: 5 % for the meter's register rounding and sample
# drift between registers, 2 W (20 dW) for the resolution at low load.
_P_SLACK_DW = const(20)

# The node config's limits and their ranges are phasenode.settings' (re-exported
# here): a SET_LIMITS command can never put a node where its installer could not.

_COND_BITS = (LOCK_OVERCURRENT, LOCK_METER, LOCK_OVERVOLTAGE, LOCK_UNDERVOLTAGE)


class LimitError(NodeError):
    """A limit is missing, unknown or outside its range; ``.key`` names it."""

    def __init__(self, key, msg):
        self.key = key
        super().__init__("limits.%s: %s" % (key, msg))


def validate_limits(limits):
    """Check a limits dict (the four keys, in range, under below over); returns a copy or raises ``LimitError``."""
    if not isinstance(limits, dict):
        raise LimitError("", "must be a dict, got %s" % (quote(limits),))
    out = {}
    for k in limits:
        if k not in DEFAULT_LIMITS:
            raise LimitError(k, "unknown limit")
    for k, lo, hi in LIMIT_RANGES:
        if k not in limits:
            raise LimitError(k, "missing")
        v = limits[k]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise LimitError(k, "must be an integer %d..%d, got %s" % (lo, hi, quote(v)))
        out[k] = v
    if out["undervoltage_dv"] >= out["overvoltage_dv"]:
        raise LimitError(
            "undervoltage_dv", "%d must be below overvoltage_dv %d" % (out["undervoltage_dv"], out["overvoltage_dv"])
        )
    return out


class Checks:
    """The anomaly checks of one node; see the module docstring.

    ``limits``: the node config's limits dict (``NodeConfig.limits``: all
    four keys); ``relay``: the ``RelayController`` to report to (None on a
    measure-only node: the conditions then only show in ``conditions``);
    ``events``: an ``EventQueue`` (or anything with ``add(code, a, b)``);
    ``now_ms``: the clock now (ticks_ms), which starts the meter-silent timer.
    """

    def __init__(
        self, limits, relay=None, events=None, now_ms=0, set_samples=2, clear_samples=3, i_hyst_pm=100, v_hyst_dv=20
    ):
        for name, v, lo, hi in (
            ("set_samples", set_samples, 1, 100),
            ("clear_samples", clear_samples, 1, 100),
            ("i_hyst_pm", i_hyst_pm, 0, 500),
            ("v_hyst_dv", v_hyst_dv, 0, 500),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise LimitError(name, "must be an integer %d..%d, got %s" % (lo, hi, quote(v)))
        self.relay = relay
        self.events = events
        self.set_samples = set_samples
        self.clear_samples = clear_samples
        self.i_hyst_pm = i_hyst_pm
        self.v_hyst_dv = v_hyst_dv
        self.set_limits(limits)
        # Conditions held now (LOCK_* bits) and per-condition streak counters:
        # samples beyond the limit in a row (set) and inside the band in a row (clear).
        self.conditions = 0
        self._oc_set = self._oc_clear = 0
        self._ov_set = self._ov_clear = 0
        self._uv_set = self._uv_clear = 0
        self._last_good = now_ms
        self._silent_since = now_ms  # start of the current run without a valid reading
        self._in_bad_run = False
        self._energy = -1
        self.samples = 0
        self.valid = 0
        self.failures = 0
        self.implausible = 0
        self.last_field = -1  # field of the last implausible sample, -1 when none yet
        self.last_value = 0

    # --- configuration --------------------------------------------------------------

    def set_limits(self, limits):
        """Replace the limits (a dict with the four keys, validated); raises ``LimitError``."""
        lim = validate_limits(limits)
        self.overcurrent_ma = lim["overcurrent_ma"]
        self.overvoltage_dv = lim["overvoltage_dv"]
        self.undervoltage_dv = lim["undervoltage_dv"]
        self.meter_silent_ms = lim["meter_silent_ms"]
        # Clear thresholds: inside the limit by the hysteresis margin.
        self._oc_clear_ma = self.overcurrent_ma - self.overcurrent_ma * self.i_hyst_pm // 1000
        self._ov_clear_dv = self.overvoltage_dv - self.v_hyst_dv
        self._uv_clear_dv = self.undervoltage_dv + self.v_hyst_dv

    def limits(self):
        """The limits in force, as the dict ``set_limits`` takes."""
        return {
            "overcurrent_ma": self.overcurrent_ma,
            "overvoltage_dv": self.overvoltage_dv,
            "undervoltage_dv": self.undervoltage_dv,
            "meter_silent_ms": self.meter_silent_ms,
        }

    # --- per sample ---------------------------------------------------------------------

    def sample(self, m, now_ms):
        """A reply from the meter (a ``pzem.Measurement``); returns True if it is a valid reading."""
        self.samples += 1
        field = self._implausible_field(m)
        if field >= 0:
            self.implausible += 1
            self._bad(now_ms, field, self.last_value)
            return False
        self.valid += 1
        if self.conditions & LOCK_METER:
            self.conditions &= ~LOCK_METER
            self._event(EV_METER_BACK, ticks_diff(now_ms, self._silent_since), 0)
        self._last_good = now_ms
        self._in_bad_run = False
        self._energy = m.energy_wh
        v = m.voltage_dv
        i = m.current_ma
        # Overcurrent.
        if i > self.overcurrent_ma:
            self._oc_clear = 0
            self._oc_set += 1
            if self._oc_set >= self.set_samples:
                self.conditions |= LOCK_OVERCURRENT
        elif i < self._oc_clear_ma:
            self._oc_set = 0
            self._oc_clear += 1
            if self._oc_clear >= self.clear_samples:
                self.conditions &= ~LOCK_OVERCURRENT
        else:
            self._oc_set = 0
            self._oc_clear = 0
        # Over-voltage.
        if v > self.overvoltage_dv:
            self._ov_clear = 0
            self._ov_set += 1
            if self._ov_set >= self.set_samples:
                self.conditions |= LOCK_OVERVOLTAGE
        elif v <= self._ov_clear_dv:
            self._ov_set = 0
            self._ov_clear += 1
            if self._ov_clear >= self.clear_samples:
                self.conditions &= ~LOCK_OVERVOLTAGE
        else:
            self._ov_set = 0
            self._ov_clear = 0
        # Under-voltage (0 V included: mains lost, or the house is disconnected,
        # which the relay controller ignores while it switches).
        if v < self.undervoltage_dv:
            self._uv_clear = 0
            self._uv_set += 1
            if self._uv_set >= self.set_samples:
                self.conditions |= LOCK_UNDERVOLTAGE
        elif v >= self._uv_clear_dv:
            self._uv_set = 0
            self._uv_clear += 1
            if self._uv_clear >= self.clear_samples:
                self.conditions &= ~LOCK_UNDERVOLTAGE
        else:
            self._uv_set = 0
            self._uv_clear = 0
        self._report(now_ms)
        return True

    def failed(self, now_ms, field=-1, value=0):
        """The meter gave no usable reply (timeout, CRC, garbage, exception).

        ``field`` >= 0 says the driver found the reply implausible (its
        ``ImplausibleReading.field`` through ``field_code``); -1 for no reply.
        """
        self.samples += 1
        if field >= 0:
            self.implausible += 1
        else:
            self.failures += 1
        self._bad(now_ms, field, value)

    def tick(self, now_ms):
        """Re-evaluate the meter-silent timer without a sample (the meter task is stuck)."""
        self._silent(now_ms)
        self._report(now_ms)

    @staticmethod
    def field_code(name):
        """The IMPLAUSIBLE_READING field code of a driver field name (``ImplausibleReading.field``)."""
        for i in range(len(_DRIVER_FIELDS)):
            if _DRIVER_FIELDS[i] == name:
                return i
        return FIELD_ALARM if name == "alarm" else FIELD_UNKNOWN

    @property
    def meter_ok(self):
        """True while the meter condition is not set (a valid reading within ``meter_silent_ms``)."""
        return not self.conditions & LOCK_METER

    # --- internals -------------------------------------------------------------------------

    def _implausible_field(self, m):
        # The field that makes this sample impossible, or -1. Type checks first:
        # garbage that is not an int never reaches the arithmetic below.
        v = m.voltage_dv
        i = m.current_ma
        p = m.power_dw
        e = m.energy_wh
        f = m.frequency_dhz
        pf = m.pf_centi
        if type(v) is not int or not 0 <= v <= _MAX_V_DV:
            return self._culprit(FIELD_VOLTAGE, v)
        if type(i) is not int or not 0 <= i <= _MAX_I_MA:
            return self._culprit(FIELD_CURRENT, i)
        if type(p) is not int or not -_MAX_P_DW <= p <= _MAX_P_DW:
            return self._culprit(FIELD_POWER, p)
        if type(e) is not int or not 0 <= e <= _MAX_E_WH:
            return self._culprit(FIELD_ENERGY, e)
        if type(f) is not int:
            return self._culprit(FIELD_FREQUENCY, f)
        if v >= _MAINS_DV:
            if not _MIN_F_DHZ <= f <= _MAX_F_DHZ:
                return self._culprit(FIELD_FREQUENCY, f)
        elif f != 0 and not _MIN_F_DHZ <= f <= _MAX_F_DHZ:
            return self._culprit(FIELD_FREQUENCY, f)
        if type(pf) is not int or not 0 <= pf <= _MAX_PF:
            return self._culprit(FIELD_PF, pf)
        # V*I: at most 3000 * 100000 = 3e8 < 2**30, a small int even on the ESP32.
        s_dw = v * i // 1000  # apparent power in 0.1 W
        if p > s_dw + s_dw // 20 + _P_SLACK_DW:
            return self._culprit(FIELD_POWER, p)
        return -1

    def _culprit(self, field, value):
        self.last_field = field
        self.last_value = value if type(value) is int else -1
        return field

    def _bad(self, now_ms, field, value):
        if field >= 0:
            self.last_field = field
            self.last_value = value if type(value) is int else -1
            if not self._in_bad_run:
                self._event(EV_IMPLAUSIBLE, field, self.last_value)
        if not self._in_bad_run:
            self._in_bad_run = True
            self._silent_since = self._last_good
        self._silent(now_ms)
        self._report(now_ms)

    def _silent(self, now_ms):
        if self.conditions & LOCK_METER:
            return
        age = ticks_diff(now_ms, self._last_good)
        if age > self.meter_silent_ms:
            self.conditions |= LOCK_METER
            self._event(EV_METER_SILENT, age, 0)

    def _report(self, now_ms):
        relay = self.relay
        if relay is None:
            return
        c = self.conditions
        for bit in _COND_BITS:
            # Reported every sample, not only on change: the relay ignores meter
            # and under-voltage reports while the house is switched off, and
            # after a reboot it assumes a condition holds until told it is clear.
            relay.report(bit, (c & bit) != 0, now_ms)

    def _event(self, code, a, b):
        if self.events is not None:
            self.events.add(code, a, b)
