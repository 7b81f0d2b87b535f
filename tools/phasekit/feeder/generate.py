"""Seeded synthetic LV feeder days, so the balancer is tested beyond one data set.

``generate(n_houses, seed)`` returns a ``Feeder`` with one day of 1-minute
loads; ``days=7`` a week of the same street in one run. The same (n_houses, seed, options) always gives the same numbers
(numpy's PCG64 generator), so a benchmark on a generated feeder is repeatable.

What it models, and why:

* Household demand is spiky and peaky, as in the 1-minute CREST-type profiles
  of the IEEE European LV test feeder: a small base (fridge cycling, standby),
  appliance events whose rate follows a daily activity curve (night low,
  morning and evening peaks) shifted and scaled per house -- kettles, electric
  showers, cooking, washing, dishwashers -- and evening lighting/TV.
* Some houses have electric space heating (thermostat cycling), some charge an
  electric vehicle in the evening (3.7 or 7.4 kW for hours: the kind of
  persistent load balancing exists for).
* Rooftop solar (a share of houses): a clear-sky bell from 06:00 to 20:00 times
  a cloud factor shared by the whole street (an AR(1) process), so midday net
  load goes negative -- export.
* A few three-phase houses (heat pump, 11 kW EV charger) that cannot move, a
  share of houses with no phasekit node (seen only through the transformer
  meter), and a few nodes whose relay may not switch.
* As built, phases are unevenly populated (a skewed random draw), as surveys of
  real LV feeders find.
* Power factor: resistive loads (heating, kettle, shower, EV) near 1, the rest
  at a per-house 0.85-0.97; the minute's pf is the power-weighted mix.
"""

from __future__ import annotations

import math
from typing import TypedDict, Unpack

import numpy as np
from numpy.typing import NDArray

from phasekit.feeder.format import MAX_DAYS, Feeder

_Day = NDArray[np.float64]  # one value per minute of the day, (1440,)

__all__ = ("generate", "DEFAULTS", "GeneratorOptions")

MINUTES = 1440


class GeneratorOptions(TypedDict, total=False):
    """The options of ``generate`` (``DEFAULTS`` sets every one)."""

    three_phase_share: float
    unmetered_share: float
    not_switchable_share: float
    pv_share: float
    ev_share: float
    heating_share: float
    shower_share: float
    voltage_v: float
    meter: bool  # the transformer has a 3-phase meter


DEFAULTS: GeneratorOptions = {
    "three_phase_share": 0.04,
    "unmetered_share": 0.08,
    "not_switchable_share": 0.05,
    "pv_share": 0.3,
    "ev_share": 0.12,
    "heating_share": 0.15,
    "shower_share": 0.3,
    "voltage_v": 230.0,
    "meter": True,
}


class _HouseKind:
    """What stays the same from day to day: appliances, habits, roof, wiring."""

    def __init__(self, rng: np.random.Generator, opts: GeneratorOptions, three_phase: bool):
        self.three_phase = three_phase
        self.wake = rng.normal(6.8, 0.7)
        self.away = rng.uniform(1.0, 2.5)
        self.home = rng.normal(17.5, 1.2)
        self.sleep = rng.normal(23.0, 0.8)
        self.works = rng.random() < 0.65
        self.scale = rng.uniform(0.6, 1.4)
        self.base = rng.uniform(0.04, 0.2)
        self.fridge_period = int(rng.integers(45, 75))
        self.fridge_on = rng.uniform(0.25, 0.45)
        self.fridge_kw = rng.uniform(0.08, 0.15)
        self.light_kw = rng.uniform(0.1, 0.35)
        self.rates = (rng.uniform(3, 8), rng.uniform(0.5, 2.0), rng.uniform(0.2, 1.0), rng.uniform(3, 8))
        self.shower = rng.uniform(0.6, 2.0) if rng.random() < opts["shower_share"] else 0.0
        self.heating_kw = rng.uniform(1.5, 3.0) if rng.random() < opts["heating_share"] else 0.0
        self.heating_cycle = int(rng.integers(20, 40))
        ev = rng.random() < opts["ev_share"] or (three_phase and rng.random() < 0.5)
        self.ev_kw = (11.0 if three_phase else (7.4 if rng.random() < 0.4 else 3.7)) if ev else 0.0
        self.hp_kw = rng.uniform(2.5, 5.0) if three_phase else 0.0
        self.hp_cycle = int(rng.integers(30, 60))
        self.hp_duty = rng.uniform(0.3, 0.7)
        self.pf_other = rng.uniform(0.85, 0.97)
        solar = not three_phase and rng.random() < opts["pv_share"]
        self.kwp = rng.choice([2.5, 3.0, 4.0, 5.0, 6.0]) if solar else 0.0
        self.pv_lag = int(rng.integers(0, 4))  # the cloud edge passes houses a few minutes apart


def _activity(kind: _HouseKind, rng: np.random.Generator) -> _Day:
    """Daily activity curve (1440,) for one household and day, 0..~1."""
    t = np.arange(MINUTES) / 60.0
    wake = kind.wake + rng.normal(0, 0.3)
    leave = wake + kind.away
    home = kind.home + rng.normal(0, 0.5)
    sleep = kind.sleep + rng.normal(0, 0.4)
    a = np.full(MINUTES, 0.04)
    a += 0.9 * _bump(t, wake + 0.6, 0.7)
    day = 0.12 if kind.works else 0.45
    a += np.where((t > leave) & (t < home), day, 0.0)
    if not kind.works:
        a += 0.5 * _bump(t, 12.5, 1.0)
    a += np.where((t >= home) & (t < sleep), 0.75, 0.0)
    a += 0.5 * _bump(t, home + 1.2, 0.8)
    return np.clip(a, 0.02, None) * kind.scale


def _bump(t: _Day, centre: float, width: float) -> _Day:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _events(
    rng: np.random.Generator,
    load: _Day,
    resistive: _Day,
    activity: _Day,
    rate_per_day: float,
    kw: tuple[float, float],
    minutes: tuple[int, int],
    resist: bool = True,
) -> None:
    """Add appliance events drawn with a rate that follows ``activity``."""
    lam = activity / activity.sum() * rate_per_day
    starts = np.nonzero(rng.random(MINUTES) < lam)[0]
    for s in starts:
        p = rng.uniform(*kw)
        d = int(rng.integers(minutes[0], minutes[1] + 1))
        e = min(MINUTES, s + d)
        load[s:e] += p
        if resist:
            resistive[s:e] += p


def _cycle(rng: np.random.Generator, period: int, duty: float) -> NDArray[np.bool_]:
    return ((np.arange(MINUTES) + int(rng.integers(0, period))) % period) < period * duty


def _house(kind: _HouseKind, rng: np.random.Generator, wrap: bool = True) -> tuple[_Day, _Day, int]:
    """One day of a house: (load kW, pf), both (1440,), and the minutes its EV charges past midnight.

    With ``wrap`` those minutes fall on the same day's early hours (a feeder
    of one day); without, the caller carries them into the next day.
    """
    spill = 0
    act = _activity(kind, rng)
    load = np.zeros(MINUTES)
    res = np.zeros(MINUTES)
    load += kind.base
    load += _cycle(rng, kind.fridge_period, kind.fridge_on) * kind.fridge_kw
    # Lighting, TV, computers: follows activity, evening-heavy.
    load += act * kind.light_kw
    r = kind.rates
    _events(rng, load, res, act, r[0], (1.8, 3.0), (2, 4))  # kettle
    _events(rng, load, res, act, r[1], (1.0, 2.5), (15, 60))  # cooking
    _events(rng, load, res, act, r[2], (1.8, 2.2), (20, 40))  # washer/dishwasher heating
    _events(rng, load, res, act, r[3], (0.8, 1.5), (1, 5))  # microwave, toaster, iron
    if kind.shower:
        _events(rng, load, res, act, kind.shower, (7.0, 9.5), (5, 10))  # electric shower
    if kind.heating_kw:
        # Thermostat cycling, more in the morning and evening.
        demand = 0.25 + 0.6 * _bump(np.arange(MINUTES) / 60.0, 7.5, 1.5) + 0.5 * (act > 0.5)
        period = kind.heating_cycle
        frac = ((np.arange(MINUTES) + int(rng.integers(0, period))) % period) / period
        heat = (frac < np.clip(demand, 0, 0.95)) * kind.heating_kw
        load += heat
        res += heat
    if kind.ev_kw and rng.random() < 0.8:  # most evenings
        start = int(rng.normal(18.5, 1.3) * 60)
        dur = int(rng.uniform(1.5, 4.5) * 60)
        s = max(0, min(MINUTES - 1, start))
        e = min(MINUTES, s + dur)
        load[s:e] += kind.ev_kw
        res[s:e] += kind.ev_kw
        if s + dur > MINUTES and wrap:  # charging past midnight: the same day's early hours
            load[: s + dur - MINUTES] += kind.ev_kw
            res[: s + dur - MINUTES] += kind.ev_kw
        elif s + dur > MINUTES:
            spill = s + dur - MINUTES
    if kind.hp_kw:
        load += _cycle(rng, kind.hp_cycle, kind.hp_duty) * kind.hp_kw  # heat pump compressor
    pf = (res * 0.995 + (load - res) * kind.pf_other) / np.maximum(load, 1e-6)
    return load, np.clip(pf, 0.5, 1.0), spill


def _weather(rng: np.random.Generator) -> _Day:
    """Street-wide cloud factor (1440,) in 0.15..1: an AR(1) process around a day's cloudiness."""
    cloudiness = rng.uniform(0.0, 0.7)
    x = np.empty(MINUTES)
    v = 0.0
    noise = rng.normal(0.0, 1.0, MINUTES)
    for i in range(MINUTES):
        v = 0.97 * v + 0.25 * noise[i]
        x[i] = v
    f = 1.0 - cloudiness * (0.5 + 0.5 * np.tanh(x))
    return np.clip(f, 0.15, 1.0)


def _solar(kind: _HouseKind, clouds: _Day) -> _Day:
    """PV output (1440,) kW of one roof on a day with ``clouds``, >= 0."""
    t = np.arange(MINUTES) / 60.0
    x = np.clip((t - 6.0) / 14.0, 0.0, 1.0)  # sun up 06:00-20:00
    bell = np.sin(math.pi * x) ** 1.5
    return kind.kwp * 0.8 * bell * np.roll(clouds, kind.pv_lag)


def generate(n_houses: int, seed: int = 1, day: int = 0, days: int = 1, **options: Unpack[GeneratorOptions]) -> Feeder:
    """A feeder of ``days`` days (1..7) from day ``day`` on, with ``n_houses`` houses.

    ``options`` override ``DEFAULTS``. ``seed`` fixes the street (houses,
    wiring, appliances, habits, roofs); ``day`` draws another day of the same
    street (other events, other weather). A feeder of several days is days
    ``day``, ``day + 1``, ... of the same street in one run of minutes: every
    house keeps its habits (when it wakes, leaves, comes home, sleeps, its
    appliances and its car), its events and the weather are drawn afresh each
    day, and an evening's car charge runs on past midnight into the next day.
    Day ``d`` of a week has the loads of ``generate(..., day=d)`` except for
    that carried charge.
    """
    if not isinstance(n_houses, int) or not 1 <= n_houses <= 5000:
        raise ValueError("n_houses must be 1..5000, got %r" % (n_houses,))
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise ValueError("days must be 1..%d, got %r" % (MAX_DAYS, days))
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError("unknown generator option(s): %s" % ", ".join(sorted(unknown)))
    opts: GeneratorOptions = {**DEFAULTS, **options}
    street = np.random.default_rng([seed, 0])
    # As built: phases populated unevenly, a skewed draw in a random order.
    weights = street.dirichlet([7.0, 5.0, 4.0])[street.permutation(3)]
    houses: list[str] = []
    phase: list[int] = []
    switchable: list[bool] = []
    metered: list[bool] = []
    kinds: list[_HouseKind] = []
    width = len(str(n_houses))
    for h in range(n_houses):
        three = street.random() < opts["three_phase_share"]
        kinds.append(_HouseKind(street, opts, three))
        houses.append("h%0*d" % (width, h + 1))
        phase.append(3 if three else int(street.choice(3, p=weights)))
        me = street.random() >= opts["unmetered_share"]
        metered.append(me)
        switchable.append(bool(me and not three and street.random() >= opts["not_switchable_share"]))
    load = np.zeros((n_houses, MINUTES * days))
    pf = np.zeros((n_houses, MINUTES * days))
    carry = [0] * n_houses  # minutes of last evening's charge running on into this day
    for k in range(days):
        rng = np.random.default_rng([seed, 1, day + k])
        clouds = _weather(rng)
        for h, kind in enumerate(kinds):
            ld, p, spill = _house(kind, rng, wrap=days == 1)
            if carry[h]:
                # The car charging since last evening: resistive, as in _house.
                m = carry[h]
                x = np.zeros(MINUTES)
                x[:m] = kind.ev_kw
                p = np.clip((p * np.maximum(ld, 1e-6) + 0.995 * x) / np.maximum(ld + x, 1e-6), 0.5, 1.0)
                ld = ld + x
            carry[h] = spill if k + 1 < days else 0
            if kind.kwp:
                ld = ld - _solar(kind, clouds)
                # An inverter at unity pf: when the house exports, the net current is nearly in phase.
                p = np.where(ld < 0, 0.99, p)
            load[h, k * MINUTES : (k + 1) * MINUTES] = ld
            pf[h, k * MINUTES : (k + 1) * MINUTES] = p
    name = "generated-%d-s%d" % (n_houses, seed) + ("-d%d" % day if day else "") + ("-x%d" % days if days > 1 else "")
    return Feeder(
        houses,
        phase,
        switchable,
        metered,
        np.round(load, 3),
        np.round(pf, 3),
        voltage_v=opts["voltage_v"],
        has_meter=opts["meter"],
        name=name,
        source="phasekit.feeder.generate(n_houses=%d, seed=%d, day=%d%s)"
        % (n_houses, seed, day, ", days=%d" % days if days > 1 else ""),
    )
