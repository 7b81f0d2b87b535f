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
"""

import numpy as np
from numpy.typing import NDArray

from phasekit.feeder.format import Feeder

__all__ = ("resample",)

MAX_HOUSES = 5000


def resample(feeder: Feeder, n_houses: int, seed: int = 1) -> Feeder:
    """A new Feeder of ``n_houses`` drawn from ``feeder``'s households (see the module docstring)."""
    if not isinstance(n_houses, int) or not 1 <= n_houses <= MAX_HOUSES:
        raise ValueError("n_houses must be 1..%d, got %r" % (MAX_HOUSES, n_houses))
    if not isinstance(seed, int):
        raise ValueError("seed must be an integer, got %r" % (seed,))
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
    return Feeder(
        houses,
        phase,
        switchable,
        metered,
        np.array(load),
        np.array(pf),
        feeder.minutes.copy(),
        voltage_v=feeder.voltage_v,
        has_meter=feeder.has_meter,
        name="%s-r%d-s%d" % (feeder.name, n_houses, seed),
        source="%s households of %s, resampled by phasekit (seed %d)" % (n_houses, feeder.name, seed),
    )
