"""Street variants of a real feeder: its households' load shapes on new wiring.

One real feeder-day is a noisy yardstick (a balancer's share of the oracle's
reduction moves by ±0.1 between neighbouring settings on the 55-house IEEE day).
``resample`` builds other streets from the same measured households: it draws
``n_houses`` of them in a seeded order, and wires the single-phase ones to
phases with a skewed split (as ``generate`` does), so a controller can be
judged on real load shapes at 55, 100 or 250 houses.

A household is used once before any is used again; a repeat is shifted in time
by 30 minutes to 3 hours (circularly, across midnight) so the copies do not
switch their appliances in the same minute. Three-phase houses stay
three-phase; metered and switchable flags travel with the household.

A week (``days`` up to 7): real one-day load shapes, with a model of how a
household's days resemble each other, because the source has one day per
household. Each house keeps its household's day as its usual day, and each
day (the first included) replays it shifted by a random ``-jitter_min ..
+jitter_min`` minutes (default 60: people keep their routine give or take an
hour, and a kettle or a shower does not come at the same minute twice); on a
share ``other_day_share`` of the days (default 0.3) the house has another
household's day instead (a day off, guests, away): so the daily pattern a
balancer may learn is there, as strong as the model makes it and no stronger
(docs/feeder-format.md says so). The draws of the first day's wiring and
households are those of ``days=1``.

The one thing to know: the day-to-day recurrence of a week-long real-shape
street is this model's, not measured; the load shapes are measured.
"""

import numpy as np
from numpy.typing import NDArray

from phasekit.feeder.format import MAX_DAYS, MINUTES_PER_DAY, Feeder

__all__ = ("resample",)

MAX_HOUSES = 5000


def resample(
    feeder: Feeder,
    n_houses: int,
    seed: int = 1,
    days: int = 1,
    jitter_min: int = 60,
    other_day_share: float = 0.3,
) -> Feeder:
    """A new Feeder of ``n_houses`` drawn from ``feeder``'s households (see the module docstring).

    ``days`` > 1 builds a street of that many days from one-day households
    (``feeder`` must hold one day), as the module docstring says.
    """
    if not isinstance(n_houses, int) or not 1 <= n_houses <= MAX_HOUSES:
        raise ValueError("n_houses must be 1..%d, got %r" % (MAX_HOUSES, n_houses))
    if not isinstance(seed, int):
        raise ValueError("seed must be an integer, got %r" % (seed,))
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise ValueError("days must be 1..%d, got %r" % (MAX_DAYS, days))
    if days > 1 and feeder.n_minutes != MINUTES_PER_DAY:
        raise ValueError("a week is built from a one-day feeder; %s has %d minutes" % (feeder.name, feeder.n_minutes))
    if not isinstance(jitter_min, int) or not 0 <= jitter_min <= 720:
        raise ValueError("jitter_min must be 0..720, got %r" % (jitter_min,))
    if not 0.0 <= other_day_share <= 1.0:
        raise ValueError("other_day_share must be 0..1, got %r" % (other_day_share,))
    rng = np.random.default_rng([seed, 2])
    src = feeder.n_houses
    weights = rng.dirichlet([7.0, 5.0, 4.0])[rng.permutation(3)]
    order = np.concatenate([rng.permutation(src) for _ in range((n_houses + src - 1) // src)])[:n_houses]
    houses: list[str] = []
    phase: list[int] = []
    switchable: list[bool] = []
    metered: list[bool] = []
    load: list[NDArray[np.float64]] = []
    pf: list[NDArray[np.float64]] = []
    width = len(str(n_houses))
    for k, j in enumerate(order):
        j = int(j)
        copy = k // src
        shift = int(rng.integers(30, 181)) * (1 if rng.random() < 0.5 else -1) if copy else 0
        houses.append("r%0*d-%s" % (width, k + 1, feeder.houses[j]))
        three = feeder.phase[j] == 3
        phase.append(3 if three else int(rng.choice(3, p=weights)))
        switchable.append(bool(feeder.switchable[j]))
        metered.append(bool(feeder.metered[j]))
        load.append(np.roll(feeder.load_kw[j], shift))
        pf.append(np.roll(feeder.pf[j], shift))
    minutes = feeder.minutes.copy()
    name = "%s-r%d-s%d" % (feeder.name, n_houses, seed)
    load_all = np.array(load)
    pf_all = np.array(pf)
    if days > 1:
        load_all, pf_all = _week(
            feeder, order, load, pf, days, np.random.default_rng([seed, 3]), jitter_min, other_day_share
        )
        minutes = np.arange(days * MINUTES_PER_DAY)
        name += "-x%d" % days
    return Feeder(
        houses,
        phase,
        switchable,
        metered,
        load_all,
        pf_all,
        minutes,
        voltage_v=feeder.voltage_v,
        has_meter=feeder.has_meter,
        name=name,
        source="%s households of %s, resampled by phasekit (seed %d%s)"
        % (
            n_houses,
            feeder.name,
            seed,
            ", %d days: jitter %d min, other days %.2f" % (days, jitter_min, other_day_share) if days > 1 else "",
        ),
    )


def _week(
    feeder: Feeder,
    order: NDArray[np.int_],
    usual: list[NDArray[np.float64]],
    usual_pf: list[NDArray[np.float64]],
    days: int,
    rng: np.random.Generator,
    jitter_min: int,
    other_day_share: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(load, pf) of ``days`` days: each house's usual day jittered, or another household's day."""
    n = len(usual)
    t = MINUTES_PER_DAY
    load = np.empty((n, days * t))
    pf = np.empty((n, days * t))
    three = feeder.phase == 3
    for k in range(n):
        # Another household's day comes from a household of the same kind (three-phase or not).
        pool = np.nonzero(three == three[int(order[k])])[0]
        for d in range(days):
            shift = int(rng.integers(-jitter_min, jitter_min + 1))
            if rng.random() < other_day_share:
                j = int(pool[rng.integers(len(pool))])
                day_load, day_pf = feeder.load_kw[j], feeder.pf[j]
            else:
                day_load, day_pf = usual[k], usual_pf[k]
            load[k, d * t : (d + 1) * t] = np.roll(day_load, shift)
            pf[k, d * t : (d + 1) * t] = np.roll(day_pf, shift)
    return load, pf
