"""The street's electricity on a simulated site: each house's load on the phase its relay really holds.

Every ``step()`` (a few dozen times a second of wall time) reads the site
clock, takes each house's load for that minute of the feeder day
(``phasekit.feeder``: active power and power factor per house and minute),
and puts it where the house physically is:

- a house with a node is on the phase whose contact is closed on its relay
  board (``SiteNode.closed()``), on none while every contact is open (a
  move's dead time: no load, the PZEM unpowered), and a house with two
  contacts closed is a fault the physics counts (``two_closed_seen``); a house
  without a node stays on its as-built phase;
- its node's PZEM-004T measures what the house draws: voltage, current
  ``|P| / (V pf)``, power ``|P|`` (the PZEM does not see direction), power
  factor, and the energy counter integrated in site time;
- the transformer meter (``phasekit.sim.meter.MeterSim``, pymodbus) gets the
  per-phase sums: current magnitude of the phasor sum, signed active power,
  power factor, and the neutral current.

It also keeps the day's record for the summary and the plot: per feeder
minute the phase and neutral currents as the site really was, and every
physical change of a house's phase (``moves``).

The model is the feeder format's (docs/feeder-format.md, "Physical model"):
phases A, B, C at 0, -120, +120 degrees, a house's current lagging its
voltage by acos(pf), a three-phase house split evenly.

Public: ``Physics``, ``Move``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from phasecore import metrics

if TYPE_CHECKING:
    from phasekit.feeder.format import Feeder
    from phasekit.sim.meter import MeterSim
    from phasekit.site.clock import SiteClock
    from phasekit.site.nodes import SiteNode

__all__ = ("Physics", "Move", "NO_PHASE")

NO_PHASE = 3


class Move(NamedTuple):
    """A house's physical phase changed: at site time ``t_s``, from ``frm`` to ``to`` (3: none)."""

    t_s: float
    house: int
    addr: int
    frm: int
    to: int


class Physics:
    """The street on the site clock: ``step()`` often; ``minutes`` holds the day as it really was."""

    def __init__(
        self,
        feeder: Feeder,
        houses: Sequence[int],
        nodes: Mapping[int, SiteNode],
        clock: SiteClock,
        meter: MeterSim | None = None,
    ):
        self.feeder = feeder
        self.houses = list(houses)
        self.nodes = dict(nodes)  # house index -> node
        self.clock = clock
        self.meter = meter
        self.voltage = feeder.voltage_v
        self.n_minutes = feeder.n_minutes
        self._phase: dict[int, int] = {h: int(feeder.phase[h]) for h in self.houses}
        self._energy_wh: dict[int, float] = {h: 0.0 for h in self.houses}
        self._last_s: float | None = None
        self._last_minute: int | None = None
        self.moves: list[Move] = []
        self.two_closed_seen = 0
        # minute of the day -> (ia, ib, ic, in) as the site really was (A)
        self.minutes: dict[int, tuple[float, float, float, float]] = {}
        self.phase_log: dict[int, list[tuple[float, int]]] = {h: [] for h in self.houses}
        self.last: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def minute_of(self, day_s: float) -> int:
        """The feeder minute that site second ``day_s`` (since midnight) falls in (the day repeats)."""
        return int(day_s // 60) % self.n_minutes

    def physical_phase(self, h: int) -> int:
        node = self.nodes.get(h)
        if node is None:
            return int(self.feeder.phase[h])
        closed = node.closed()
        if len(closed) > 1:
            self.two_closed_seen += 1
            return NO_PHASE
        return closed[0] if closed else NO_PHASE

    def step(self) -> tuple[float, float, float, float]:
        """Bring every meter to now; returns (ia, ib, ic, in) of the transformer now."""
        day_s = self.clock.day_s()
        now_s = self.clock.epoch_s + day_s
        dt = 0.0 if self._last_s is None else max(0.0, day_s - self._last_s)
        self._last_s = day_s
        m = self.minute_of(day_s)
        f = self.feeder
        tot = [0.0] * 6
        p_phase = [0.0, 0.0, 0.0]
        v = self.voltage
        for h in self.houses:
            ph = self.physical_phase(h)
            if ph != self._phase[h]:
                node = self.nodes.get(h)
                self.moves.append(Move(now_s, h, node.spec.addr if node is not None else 0, self._phase[h], ph))
                self._phase[h] = ph
                self.phase_log[h].append((now_s, ph))
            kw = float(f.load_kw[h, m])
            pf = float(f.pf[h, m])
            node = self.nodes.get(h)
            if ph == NO_PHASE:
                if node is not None:
                    node.set_load(0.0, 0.0, 0.0, pf, self._energy_wh[h])
                continue
            i = kw * 1000.0 / (v * pf)
            self._energy_wh[h] += abs(kw) * 1000.0 * dt / 3600.0
            if node is not None:
                node.set_load(v, abs(i), abs(kw) * 1000.0, pf, self._energy_wh[h])
            if ph == 3:  # a three-phase house without a node: a third on each phase
                for p in range(3):
                    ip, iq = metrics.load_components(i / 3.0, pf)
                    tot[2 * p] += ip
                    tot[2 * p + 1] += iq
                    p_phase[p] += kw * 1000.0 / 3.0
                continue
            ip, iq = metrics.load_components(i, pf)
            tot[2 * ph] += ip
            tot[2 * ph + 1] += iq
            p_phase[ph] += kw * 1000.0
        mags = metrics.phase_magnitudes(*tot)
        neutral = metrics.neutral_rel(*tot)
        self.last = (mags[0], mags[1], mags[2], neutral)
        if day_s >= 0:
            whole = int(day_s // 60)
            if self._last_minute is None or whole != self._last_minute:
                self._last_minute = whole
                if whole < self.n_minutes:
                    self.minutes[whole] = self.last
        if self.meter is not None:
            pfs = [_pf(tot[2 * p], tot[2 * p + 1]) for p in range(3)]
            self.meter.set(
                voltages=(v, v, v), currents=mags, powers=p_phase, pfs=pfs, frequency=50.0, current_n=neutral
            )
        return self.last

    def as_built(self) -> list[tuple[float, float, float, float]]:
        """Per feeder minute, (ia, ib, ic, in) had every house stayed on its as-built phase."""
        f = self.feeder
        out = []
        v = self.voltage
        for m in range(self.n_minutes):
            tot = [0.0] * 6
            for h in self.houses:
                kw = float(f.load_kw[h, m])
                pf = float(f.pf[h, m])
                i = kw * 1000.0 / (v * pf)
                ph = int(f.phase[h])
                if ph == 3:
                    for p in range(3):
                        ip, iq = metrics.load_components(i / 3.0, pf)
                        tot[2 * p] += ip
                        tot[2 * p + 1] += iq
                    continue
                ip, iq = metrics.load_components(i, pf)
                tot[2 * ph] += ip
                tot[2 * ph + 1] += iq
            a, b, c = metrics.phase_magnitudes(*tot)
            out.append((a, b, c, metrics.neutral_rel(*tot)))
        return out


def _pf(ip: float, iq: float) -> float:
    s = math.hypot(ip, iq)
    return abs(ip) / s if s > 1e-9 else 1.0
