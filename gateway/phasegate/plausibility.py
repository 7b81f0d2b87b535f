"""Plausibility of node readings and quarantine: how far one node's claims can steer the Pi.

A node whose key was stolen (a board taken from a meter box, firmware replaced)
seals whatever readings it likes: the tag proves who sent a reading, not that
it is true. This guard bounds what such readings can make the Pi do, with the
three sources of truth the Pi has (docs/security.md, "A lying node"):

1. **Physics and the datasheet**, every reading (``Guard.reading``): voltage
   and frequency within the site's range; current within what the house's
   supply carries (1.6 x ``supply_a``, the conventional fusing current of a gG
   fuse, IEC 60269-1); ``|P|`` and ``V x I x pf`` agreeing within the
   PZEM-004T's accuracy (datasheet: +-0.5 % voltage and current, +-1 % power,
   pf in steps of 0.01; ``power_tol_frac`` = 3 % of ``V x I`` plus
   ``power_tol_w`` is that and a 1 % margin); the energy counter never going
   back without a reset event (the node's METER_SILENT or METER_BACK; a wrap
   past 2**32 is not a step back) and never rising faster than the supply
   allows; the frequency within ``freq_tol_hz`` of what the other nodes
   measure (one grid, one frequency; the PZEM-004T reads it to +-0.5 %). A
   reading that fails is not used for balancing and is reported
   (READING_IMPLAUSIBLE, ENERGY_BACKWARDS); ``strikes`` failed readings within
   ``strike_window_s`` quarantine the node.
2. **The transformer meter**, every round it answers (``Guard.meter_round``).
   *Dynamics*: a node's claimed steps must show in its phase's meter current.
   Over rounds two apart (so a step that falls between a node's poll and the
   meter's read is seen by both), for each claimed step of at least
   ``dyn_step_a`` the change of the phase's residual (meter minus the sum of
   the claims) is regressed on the step: an honest node's steps are in the
   meter, so the slope is near 0 whatever the unmetered load does; a node
   whose steps are invented has a slope near -1 (its claim changed, the meter
   did not); one that multiplies its current by k, -(1 - 1/k). This is the
   leave-one-out test in differences: taking the node's claims out of the sum
   makes the residual smoother exactly when the slope is below -1/2.
   After ``dyn_min_steps`` steps a slope below ``dyn_slope`` quarantines.
   *Level*: a phase whose nodes claim more than its meter carries (beyond
   ``level_tol_a`` plus ``level_tol_frac`` of the currents, the meter's and
   the PZEMs' accuracy) has a node claiming too much. Under the hypothesis of
   one liar, a node can explain the deficit only if its claim is at least the
   deficit (its true current is not negative); every node whose claim is
   smaller is exonerated for that round. A node is quarantined when, over a
   window of ``level_window_s`` (time-weighted), its phase was in deficit at
   least ``level_min_share`` of the time and it was the *only* node that could
   explain the deficit in at least ``level_explain_share`` of those rounds: an
   honest house is exonerated as soon as its own load drops below the deficit,
   and a deficit two nodes can explain blames neither.
3. **Influence**, where no meter answered (``Guard.vet``). Without a meter
   nothing measures a house's current but its own node, so the Pi limits what
   a node's claims *beyond its history* can do. Each node has a trusted
   envelope: the largest 20-minute, 4-hour and 24-hour mean current it drew on
   each of its last ``history_days`` days (``envelope_margin`` and
   ``envelope_slack_a`` above; ``prior_*_a`` until it has ``learn_days`` of
   history; a day's maximum enters the history clipped to the envelope of
   that day, so a node raises its own envelope by at most the margin a day).
   Its trusted current is the 20-minute envelope, or the smaller long-window
   envelope once its 4-hour or 24-hour mean is above that window's envelope.
   Every move the balancer plans is checked, in plan order, against every
   other counted node: with that node's planning and slow estimates clipped to
   its trusted current, would the move still lower the balancer's objective
   by ``min_move_gain_a``? If not, the move is attributed to that node.

   **The bound**: at most ``influence_moves`` moves of other houses in any
   24 h are attributed to one node. The move that brings a node to the limit
   quarantines it; a move that would take a node past it is not carried out
   (the balancer is told the house stayed). So the part of a node's claims
   above its own history moves at most ``influence_moves`` other houses a
   day. What a node claims *within* its envelope is what an honest house with
   its history may draw, and no check without a meter can tell the two apart;
   its effect on the estimate is bounded by the envelope (and its sustained
   part by the 24-hour envelope).

Quarantine (``quarantine_s``, or until an operator's UNLOCK) takes a node out
of balancing: the controller removes it from the balancer, so it is never moved
and its claims are not counted (with a meter its true load is then in the
meter's residual, as a house without a node). The node keeps being polled and
its readings are journaled; NODE_QUARANTINED (an alarm, value the reason,
``phasecore.codes.QUARANTINE_REASONS``) and NODE_RELEASED say when.

The one thing to know: sans-IO and wall-clock. Times are Unix seconds passed
in (quarantines and envelopes outlive a restart: ``state``/``restore``, saved
by the controller beside the registry state); nothing here reads a clock,
a file or a socket but ``save`` and ``load``.

API::

    guard = Guard(GuardConfig(supply_a=63), path="plausibility.json")
    ok = guard.reading(addr, body, t)            # body: phasecore.msg reading fields; False: not for balancing
    guard.node_event(addr, code)                 # a node's own event (a meter reset allows a counter step back)
    guard.meter_round(t, (ip_a, ip_b, ip_c))     # the meter's active current per phase (P/V), each round
    moves = guard.vet(balancer, now_s, moves, t) # without a meter: the plan, with over-budget moves taken out
    guard.tick(t)                                # quarantines that ended
    guard.quarantined                            # {addr: (until, reason)}
    for addr, code, value, alarm in guard.take_findings(): ...
    entered, left = guard.take_transitions()
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from phasecore import codes
from phasegate.errors import ConfigError

if TYPE_CHECKING:
    from phasecore.balancer import Balancer

log = logging.getLogger(__name__)

__all__ = ("Guard", "GuardConfig", "Finding", "FIELDS")

DAY_S = 86400
# Windows of the trusted envelope: the balancer's fast estimate (20 min), an evening, a day.
WINDOWS_S = (1200.0, 14400.0, 86400.0)
_ROT = (complex(1.0, 0.0), complex(-0.5, -math.sqrt(3.0) / 2.0), complex(-0.5, math.sqrt(3.0) / 2.0))
_U32 = 1 << 32
_FRESH_S = 120.0  # a claim older than this is not compared with the meter
_FREQ_PEERS = 3  # other nodes needed before a frequency can disagree with them
_DYN_DECAY = 0.95  # memory of the dynamics regression: about 20 steps
_STATE_FORMAT = 1
# Finding: (node address, event code, value, alarm)
Finding = tuple[int, int, int, bool]

# (name, default, lowest, highest): every tunable, checked at construction (docs/install-gateway.md [plausibility]).
FIELDS: tuple[tuple[str, float, float, float], ...] = (
    ("v_min_v", 195.0, 0.0, 300.0),
    ("v_max_v", 265.0, 0.0, 300.0),
    ("f_min_hz", 47.0, 40.0, 70.0),
    ("f_max_hz", 52.0, 40.0, 70.0),
    ("supply_a", 63.0, 1.0, 400.0),
    ("power_tol_frac", 0.03, 0.0, 1.0),
    ("power_tol_w", 3.0, 0.0, 1000.0),
    ("freq_tol_hz", 0.6, 0.0, 10.0),
    ("strikes", 3, 1, 1000),
    ("strike_window_s", 900, 1, DAY_S),
    ("quarantine_s", DAY_S, 1, 30 * DAY_S),
    ("influence_moves", 2, 1, 100),
    ("history_days", 14, 1, 365),
    ("learn_days", 1, 0, 365),
    ("prior_fast_a", 40.0, 0.0, 400.0),
    ("prior_4h_a", 32.0, 0.0, 400.0),
    ("prior_day_a", 16.0, 0.0, 400.0),
    ("envelope_margin", 0.25, 0.0, 10.0),
    ("envelope_slack_a", 2.0, 0.0, 100.0),
    ("site_quantile", 0.9, 0.0, 1.0),
    ("dyn_step_a", 3.0, 0.1, 400.0),
    ("dyn_slope", -0.5, -10.0, 0.0),
    ("dyn_min_steps", 8, 2, 10000),
    ("level_tol_a", 3.0, 0.0, 400.0),
    ("level_tol_frac", 0.03, 0.0, 1.0),
    ("level_window_s", 21600, 60, 30 * DAY_S),
    ("level_min_share", 0.5, 0.0, 1.0),
    ("level_explain_share", 0.9, 0.0, 1.0),
)
_INT_FIELDS = frozenset(
    (
        "strikes",
        "strike_window_s",
        "quarantine_s",
        "influence_moves",
        "history_days",
        "learn_days",
        "dyn_min_steps",
        "level_window_s",
    )
)


class GuardConfig:
    """The guard's limits (``FIELDS``: name, default, range); ``ConfigError`` names a bad one."""

    v_min_v: float
    v_max_v: float
    f_min_hz: float
    f_max_hz: float
    supply_a: float
    power_tol_frac: float
    power_tol_w: float
    freq_tol_hz: float
    strikes: int
    strike_window_s: int
    quarantine_s: int
    influence_moves: int
    history_days: int
    learn_days: int
    prior_fast_a: float
    prior_4h_a: float
    prior_day_a: float
    envelope_margin: float
    envelope_slack_a: float
    site_quantile: float
    dyn_step_a: float
    dyn_slope: float
    dyn_min_steps: int
    level_tol_a: float
    level_tol_frac: float
    level_window_s: int
    level_min_share: float
    level_explain_share: float

    def __init__(self, **values: float):
        for name, default, lo, hi in FIELDS:
            v = values.pop(name, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError("plausibility %s: %r is not a number in %r..%r" % (name, _short(v), lo, hi))
            if name in _INT_FIELDS and v != int(v):
                raise ConfigError("plausibility %s: %r is not a whole number" % (name, v))
            setattr(self, name, int(v) if name in _INT_FIELDS else float(v))
        if values:
            raise ConfigError("plausibility: unknown key(s) %s" % ", ".join(sorted(_short(k) for k in values)))
        if self.v_min_v >= self.v_max_v or self.f_min_hz >= self.f_max_hz:
            raise ConfigError("plausibility: v_min_v/f_min_hz must be below v_max_v/f_max_hz")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> GuardConfig:
        """From a validated ``[plausibility]`` table (its ``enabled`` key is the caller's)."""
        return cls(**{name: table[name] for name, _, _, _ in FIELDS if name in table})

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name, _, _, _ in FIELDS}


class _Node:
    """What the guard keeps of one node."""

    def __init__(self) -> None:
        self.e: int | None = None  # last energy count (Wh) and its time
        self.e_t = 0.0
        self.reset_ok = False  # a meter event allows the next counter step back
        self.f: float | None = None  # last frequency (Hz) and its time
        self.f_t = 0.0
        self.strikes: list[float] = []
        self.claim: tuple[float, int, float] | None = None  # last plausible (t, phase, active current A)
        self.ew = [0.0, 0.0, 0.0]  # |I| means over WINDOWS_S
        self.ew_t: float | None = None
        self.t0 = 0.0  # first reading seen: a window's mean counts once it has run half the window
        self.day = -1
        self.day_max = [0.0, 0.0, 0.0]
        self.hist: list[list[float]] = []  # per past day: the maxima of the three means
        self.influence: list[float] = []  # times of moves attributed to it (24 h)
        self.q_until: float | None = None
        self.q_reason = 0
        self.sxy = self.sxx = self.syy = self.nw = 0.0  # dynamics regression (decaying sums)
        self.nsteps = 0
        self.lv_t: float | None = None  # level test: decaying time in deficit, and as the one explainer
        self.lv_deficit = self.lv_explain = 0.0


class Guard:
    """Plausibility checks, meter and influence tests, and quarantine of the nodes of one Pi (module docstring)."""

    def __init__(self, config: GuardConfig | None = None, path: str | os.PathLike[str] | None = None):
        self.config = config or GuardConfig()
        self.path = None if path is None else str(path)
        self.nodes: dict[int, _Node] = {}
        self.quarantined: dict[int, tuple[float, int]] = {}  # addr -> (until, reason)
        self.stats = {
            "implausible": 0,
            "quarantines": 0,
            "attributed": 0,
            "vetoed": 0,
            "energy_backwards": 0,
        }
        self._findings: list[Finding] = []
        self._entered: list[int] = []
        self._left: list[int] = []
        self._site = [self.config.prior_fast_a, self.config.prior_4h_a, self.config.prior_day_a]
        self._site_day = -1
        self._rounds: list[tuple[float, tuple[float, float, float], dict[int, tuple[int, float]]]] = []
        if self.path is not None:
            self.load()

    # ------------------------------------------------------------ readings

    def _node(self, addr: int) -> _Node:
        n = self.nodes.get(addr)
        if n is None:
            n = self.nodes[addr] = _Node()
        return n

    def is_quarantined(self, addr: int) -> bool:
        return addr in self.quarantined

    def node_event(self, addr: int, code: int) -> None:
        """A node's own event: a meter that went silent or came back may start its counter again."""
        if code in (codes.EV_METER_SILENT, codes.EV_METER_BACK):
            self._node(addr).reset_ok = True

    def reading(self, addr: int, body: Mapping[str, int], t: float) -> bool:
        """Check one authentic reading (``phasecore.msg`` fields); True if the balancer may use it."""
        cfg = self.config
        n = self._node(addr)
        if body["status"] & codes.ST_METER:
            return False  # the node says its meter is silent or implausible: nothing to check or use
        v = body["voltage_dV"] / 10.0
        i = body["current_mA"] / 1000.0
        p = body["power_dW"] / 10.0
        pf = body["pf_centi"] / 100.0
        f = body["frequency_dHz"] / 10.0
        failed = []
        if not cfg.v_min_v <= v <= cfg.v_max_v:
            failed.append(0)
        if f and not cfg.f_min_hz <= f <= cfg.f_max_hz:
            failed.append(1)
        if i > 1.6 * cfg.supply_a:
            failed.append(2)
        # PZEM-004T: V and I +-0.5 %, P +-1 %, pf in 0.01 steps (datasheet), plus a 1 % margin.
        if abs(abs(p) - v * i * pf) > cfg.power_tol_frac * v * i + cfg.power_tol_w:
            failed.append(3)
        failed.extend(self._energy(addr, n, body["energy_Wh"], t))
        if f:
            if not failed and self._disagrees(addr, f, t):
                failed.append(6)
            n.f, n.f_t = f, t
        if failed:
            if addr not in self.quarantined:
                self._strike(addr, n, failed[0], t)
            return False
        # Learnt in quarantine too: the envelope grows by the margin a day at most either way.
        self._learn(n, abs(i), t)
        if addr in self.quarantined:
            n.claim = None
            return False
        phase = body["phase"]
        if phase in (codes.PHASE_A, codes.PHASE_B, codes.PHASE_C):
            ip = i * (pf if pf > 0 else 1.0)
            n.claim = (t, phase, -ip if p < 0 else ip)
        else:
            n.claim = None
        return True

    def _energy(self, addr: int, n: _Node, e: int, t: float) -> list[int]:
        prev, prev_t = n.e, n.e_t
        n.e, n.e_t = e, t
        if prev is None:
            return []
        de = e - prev
        if de < 0:
            if prev > _U32 - (1 << 24) and e < 1 << 24:
                de += _U32  # the 32-bit counter wrapped
            elif n.reset_ok:
                n.reset_ok = False
                return []
            else:
                self.stats["energy_backwards"] += 1
                self._findings.append((addr, codes.EV_ENERGY_BACKWARDS, -de, True))
                return [4]
        n.reset_ok = False
        # The most the supply can deliver in the time between the readings, plus the 1 Wh step.
        if de > 1.6 * self.config.supply_a * self.config.v_max_v * max(t - prev_t, 1.0) / 3600.0 + 2:
            return [5]
        return []

    def _disagrees(self, addr: int, f: float, t: float) -> bool:
        others = sorted(o.f for a, o in self.nodes.items() if a != addr and o.f is not None and t - o.f_t <= _FRESH_S)
        if len(others) < _FREQ_PEERS:
            return False
        median = others[len(others) // 2]
        return abs(f - median) > self.config.freq_tol_hz

    def _strike(self, addr: int, n: _Node, check: int, t: float) -> None:
        cfg = self.config
        self.stats["implausible"] += 1
        n.strikes = [s for s in n.strikes if t - s < cfg.strike_window_s]
        n.strikes.append(t)
        if len(n.strikes) <= cfg.strikes:  # at most that many events per window: a flood stays a few lines
            self._findings.append((addr, codes.EV_READING_IMPLAUSIBLE, check, False))
        log.warning("node %d: reading implausible (%s)", addr, codes.PLAUSIBILITY_CHECKS[check])
        if len(n.strikes) >= cfg.strikes:
            self._quarantine(addr, codes.Q_IMPLAUSIBLE, t)

    # ------------------------------------------------------------ envelope

    def _learn(self, n: _Node, amps: float, t: float) -> None:
        day = int(t // DAY_S)
        if n.ew_t is None:
            n.ew = [amps, amps, amps]
            n.ew_t = n.t0 = t
            n.day = day
            return
        if day != n.day:
            self._close_day(n)
            n.day = day
        dt = max(0.0, t - n.ew_t)
        n.ew_t = t
        for w in range(3):
            tau = WINDOWS_S[w]
            n.ew[w] += dt / (tau + dt) * (amps - n.ew[w])
            # A window's mean counts once it has seen half a window of readings.
            if t - n.t0 >= tau / 2 and n.ew[w] > n.day_max[w]:
                n.day_max[w] = n.ew[w]

    def _close_day(self, n: _Node) -> None:
        if any(n.day_max):
            # Clipped to the envelope of the day: a node raises its own envelope by the margin a day at most.
            n.hist.append([min(n.day_max[w], self._trust(n, w)) for w in range(3)])
            del n.hist[: -self.config.history_days]
        n.day_max = [0.0, 0.0, 0.0]

    def _own(self, n: _Node, w: int) -> float | None:
        """The node's own envelope of window ``w`` (A), None until it has ``learn_days`` of history."""
        cfg = self.config
        if len(n.hist) < max(cfg.learn_days, 1):
            return None
        return max(h[w] for h in n.hist) * (1.0 + cfg.envelope_margin) + cfg.envelope_slack_a

    def _trust(self, n: _Node, w: int) -> float:
        """Window ``w``'s envelope of the node: its own (the prior until learnt). What moves may rest on."""
        own = self._own(n, w)
        return (self.config.prior_fast_a, self.config.prior_4h_a, self.config.prior_day_a)[w] if own is None else own

    def _beyond_site(self, n: _Node) -> bool:
        """Whether the node's 24-hour mean is above its own day envelope and the site's (``site_quantile``)."""
        return n.ew[2] > max(self._trust(n, 2), self._site[2])

    def _site_envelope(self) -> None:
        """The site's envelopes: the ``site_quantile`` of the learnt nodes' own (prior with fewer than 3)."""
        cfg = self.config
        prior = (cfg.prior_fast_a, cfg.prior_4h_a, cfg.prior_day_a)
        site = []
        for w in range(3):
            own = sorted(x for n in self.nodes.values() for x in (self._own(n, w),) if x is not None)
            site.append(own[min(len(own) - 1, int(cfg.site_quantile * len(own)))] if len(own) >= 3 else prior[w])
        self._site = site

    def trusted_a(self, addr: int) -> float:
        """The current (A) the node's claims are trusted up to, without a meter (module docstring)."""
        n = self._node(addr)
        fast = self._trust(n, 0)
        long_ = [self._trust(n, w) for w in (1, 2) if n.ew[w] > self._trust(n, w)]
        return min([fast] + long_)

    # ------------------------------------------------------------ the meter

    def meter_round(self, t: float, meter_ip: Sequence[float]) -> None:
        """The meter's active current per phase (P/V, A, signed) this round: the dynamics and level tests."""
        claims = {
            a: (c[1], c[2])
            for a, n in self.nodes.items()
            for c in (n.claim,)
            if c is not None and a not in self.quarantined and t - c[0] <= _FRESH_S
        }
        meter = (float(meter_ip[0]), float(meter_ip[1]), float(meter_ip[2]))
        self._rounds.append((t, meter, claims))
        del self._rounds[:-3]
        if len(self._rounds) == 3:
            self._dynamics(self._rounds[0], self._rounds[2], t)
        self._level(t, meter, claims)

    @staticmethod
    def _residuals(meter: tuple[float, float, float], claims: Mapping[int, tuple[int, float]]) -> list[float]:
        r = list(meter)
        for p, ip in claims.values():
            r[p] -= ip
        return r

    def _dynamics(
        self,
        old: tuple[float, tuple[float, float, float], dict[int, tuple[int, float]]],
        new: tuple[float, tuple[float, float, float], dict[int, tuple[int, float]]],
        t: float,
    ) -> None:
        cfg = self.config
        r0 = self._residuals(old[1], old[2])
        r1 = self._residuals(new[1], new[2])
        # A phase where a node came or went (fell silent, quarantined) between the two rounds
        # has a residual step that is nobody's: it tells nothing about the others.
        spoilt = set()
        for a in set(old[2]) ^ set(new[2]):
            spoilt.add((old[2].get(a) or new[2][a])[0])
        for addr, (p, c1) in new[2].items():
            before = old[2].get(addr)
            if before is None or before[0] != p or p in spoilt or addr in self.quarantined:
                continue
            dc = c1 - before[1]
            if abs(dc) < cfg.dyn_step_a:
                continue
            n = self.nodes[addr]
            dr = r1[p] - r0[p]
            n.sxy = _DYN_DECAY * n.sxy + dc * dr
            n.sxx = _DYN_DECAY * n.sxx + dc * dc
            n.syy = _DYN_DECAY * n.syy + dr * dr
            n.nw = _DYN_DECAY * n.nw + 1.0
            n.nsteps += 1
            if n.nsteps < cfg.dyn_min_steps:
                continue
            # The slope and its standard error (least squares through 0, decaying weights): quarantine
            # only when even slope + 3 standard errors is below dyn_slope, so the unmetered load's own
            # steps, which fall on an honest node's steps by chance, cannot make the case.
            slope = n.sxy / n.sxx
            sse = max(n.syy - n.sxy * slope, 0.0)
            se = math.sqrt(sse / max(n.nw - 1.0, 1.0) / n.sxx)
            if slope + 3.0 * se < cfg.dyn_slope:
                log.warning(
                    "node %d: its claimed steps do not show in the meter (slope %.2f +- %.2f over %d steps)",
                    addr,
                    slope,
                    se,
                    n.nsteps,
                )
                self._quarantine(addr, codes.Q_METER_DYNAMICS, t)

    def _level(self, t: float, meter: tuple[float, float, float], claims: Mapping[int, tuple[int, float]]) -> None:
        cfg = self.config
        on: list[list[tuple[int, float]]] = [[], [], []]
        for addr, (p, ip) in claims.items():
            on[p].append((addr, ip))
        for p in range(3):
            claimed = sum(ip for _, ip in on[p])
            tol = cfg.level_tol_a + cfg.level_tol_frac * (sum(abs(ip) for _, ip in on[p]) + abs(meter[p]))
            deficit = claimed - meter[p]
            explain = [a for a, ip in on[p] if ip >= deficit - tol] if deficit > tol else []
            suspects = []
            for addr, _ in on[p]:
                n = self.nodes[addr]
                # Time-weighted and forgetting over level_window_s: shares of time, not of rounds.
                dt = 0.0 if n.lv_t is None else min(max(t - n.lv_t, 0.0), 3600.0)
                n.lv_t = t
                k = math.exp(-dt / cfg.level_window_s)
                n.lv_deficit = k * n.lv_deficit + (dt if deficit > tol else 0.0)
                n.lv_explain = k * n.lv_explain + (dt if addr in explain else 0.0)
                if (
                    n.lv_deficit >= cfg.level_min_share * cfg.level_window_s
                    and n.lv_explain >= cfg.level_explain_share * n.lv_deficit
                ):
                    suspects.append(addr)
            # One node that can explain the deficit nearly always is the liar under the one-liar hypothesis;
            # two such nodes are no evidence against either (a second liar, or an unmetered load).
            if len(suspects) == 1 and suspects[0] in explain:
                log.warning(
                    "node %d: the only node that can explain phase %s claiming %.1f A more than its meter",
                    suspects[0],
                    codes.PHASE_NAMES[p],
                    deficit,
                )
                self._quarantine(suspects[0], codes.Q_METER_LEVEL, t)

    # ------------------------------------------------------------ influence

    def vet(
        self, balancer: Balancer, now_s: int, moves: Sequence[tuple[int, int, int]], t: float
    ) -> list[tuple[int, int, int]]:
        """The balancer's plan without a meter: attribute each move, take out the over-budget ones (module docstring).

        Call right after ``balancer.plan(now_s, None)`` with its result; a
        move taken out is undone in the balancer (``set_phase`` back), so it
        plans on the house where it is.
        """
        if not moves:
            return []
        cfg = self.config
        self._site_envelope()
        bcfg = balancer.config
        w, wc = bcfg.slow_weight, bcfg.fluct_weight
        nodes, res, rfl = balancer.estimate_inputs(now_s)
        before = {node: frm for node, frm, _ in moves}  # the balancer already recorded the plan's phases
        big_f = big_s = big_c = 0j
        for p in range(3):
            big_f += complex(res[4 * p], -res[4 * p + 1]) * _ROT[p]
            big_s += complex(res[4 * p + 2], -res[4 * p + 3]) * _ROT[p]
            big_c += rfl[p] * _ROT[p]
        est: dict[Any, tuple[complex, complex, float, int]] = {}
        for node, phase, fp, fq, sp, sq, fluct, counted in nodes:
            phase = before.get(node, phase)
            if not counted or phase not in (0, 1, 2):
                continue  # a three-phase node's load adds nothing to the neutral
            zf, zs = complex(fp, -fq), complex(sp, -sq)
            est[node] = (zf, zs, fluct, phase)
            big_f += zf * _ROT[phase]
            big_s += zs * _ROT[phase]
            big_c += fluct * _ROT[phase]

        def cost(a: complex, b: complex, c: complex) -> float:
            return math.sqrt((abs(a) ** 2 + w * abs(b) ** 2) / (1.0 + w) + wc * abs(c) ** 2)

        trusted = {node: self.trusted_a(node) for node in est if isinstance(node, int)}
        kept = []
        for node, frm, to in moves:
            if node not in est:
                kept.append((node, frm, to))
                continue
            zf, zs, fluct, _ = est[node]
            turn = _ROT[to] - _ROT[frm]
            df, ds, dc = zf * turn, zs * turn, fluct * turn
            blamed = []
            for other, (of, os_, _, op) in est.items():
                if other == node or other not in trusted:
                    continue
                cap = trusted[other]
                kf = min(1.0, cap / abs(of)) if abs(of) > cap else 1.0
                ks = min(1.0, cap / abs(os_)) if abs(os_) > cap else 1.0
                if kf == 1.0 and ks == 1.0:
                    continue
                f2 = big_f - (1.0 - kf) * of * _ROT[op]
                s2 = big_s - (1.0 - ks) * os_ * _ROT[op]
                if cost(f2, s2, big_c) - cost(f2 + df, s2 + ds, big_c + dc) < bcfg.min_move_gain_a:
                    blamed.append(other)
            over = [b for b in blamed if b in self.quarantined or len(self._recent(b, t)) >= cfg.influence_moves]
            if over:
                self.stats["vetoed"] += 1
                balancer.set_phase(node, frm)
                log.warning(
                    "node %d: move %s -> %s not carried out: it rests on node %s's claims above its envelope",
                    node,
                    codes.PHASE_NAMES[frm],
                    codes.PHASE_NAMES[to],
                    ", ".join(str(b) for b in over),
                )
                continue
            kept.append((node, frm, to))
            big_f, big_s, big_c = big_f + df, big_s + ds, big_c + dc
            for b in blamed:
                self.stats["attributed"] += 1
                n = self._node(b)
                n.influence = self._recent(b, t) + [t]
                if len(n.influence) >= cfg.influence_moves:
                    log.warning(
                        "node %d: %d moves of other houses rest on its claims above its envelope (%.1f A) in 24 h;"
                        " no more will",
                        b,
                        len(n.influence),
                        trusted[b],
                    )
            self._influence_quarantines(t)
        return kept

    def _influence_quarantines(self, t: float) -> None:
        """Quarantine the nodes at their influence limit whose 24-hour mean is beyond the site's envelope too."""
        for addr, n in self.nodes.items():
            if (
                addr not in self.quarantined
                and n.influence
                and len(self._recent(addr, t)) >= self.config.influence_moves
                and self._beyond_site(n)
            ):
                self._quarantine(addr, codes.Q_INFLUENCE, t)

    def capped(self, addr: int, t: float) -> bool:
        """Whether ``addr`` is at its influence limit: its claims count only up to its envelope (``balance_a``)."""
        n = self.nodes.get(addr)
        return n is not None and bool(n.influence) and len(self._recent(addr, t)) >= self.config.influence_moves

    def balance_a(self, addr: int, current_a: float, t: float) -> float:
        """The current to give the balancer for a reading of ``current_a``: clipped to the envelope when capped."""
        if not self.capped(addr, t):
            return current_a
        cap = self.trusted_a(addr)
        return max(-cap, min(cap, current_a))

    def _recent(self, addr: int, t: float) -> list[float]:
        return [x for x in self._node(addr).influence if t - x < DAY_S]

    def attributed(self, addr: int, t: float) -> int:
        """Moves of other houses attributed to ``addr``'s claims in the last 24 h."""
        return len(self._recent(addr, t))

    # ------------------------------------------------------------ quarantine

    def _quarantine(self, addr: int, reason: int, t: float) -> None:
        if addr in self.quarantined:
            return
        until = t + self.config.quarantine_s
        self.quarantined[addr] = (until, reason)
        self.stats["quarantines"] += 1
        n = self._node(addr)
        n.strikes = []
        n.sxy = n.sxx = n.syy = n.nw = 0.0
        n.nsteps = 0
        n.lv_deficit = n.lv_explain = 0.0
        n.claim = None
        self._entered.append(addr)
        self._findings.append((addr, codes.EV_NODE_QUARANTINED, reason, True))
        log.warning(
            "node %d: quarantined (%s) for %d s: out of balancing, its claims not counted",
            addr,
            codes.QUARANTINE_REASONS[reason],
            self.config.quarantine_s,
        )

    def release(self, addr: int, t: float, reason: int = codes.Q_OPERATOR) -> bool:
        """End ``addr``'s quarantine now (an operator's UNLOCK); True if it was quarantined."""
        if self.quarantined.pop(addr, None) is None:
            return False
        n = self._node(addr)
        n.influence = []
        self._left.append(addr)
        self._findings.append((addr, codes.EV_NODE_RELEASED, reason, False))
        log.info("node %d: quarantine ended (%s)", addr, codes.QUARANTINE_REASONS[reason])
        return True

    def tick(self, t: float) -> None:
        """End the quarantines whose time is over; the site's envelopes once a day."""
        if int(t // DAY_S) != self._site_day:
            self._site_day = int(t // DAY_S)
            self._site_envelope()
        self._influence_quarantines(t)
        for addr, (until, reason) in sorted(self.quarantined.items()):
            if t >= until:
                self.release(addr, t, reason)

    def take_findings(self) -> list[Finding]:
        """Events to journal since the last call: (addr, code, value, alarm)."""
        out, self._findings = self._findings, []
        return out

    def take_transitions(self) -> tuple[list[int], list[int]]:
        """(nodes that entered quarantine, nodes that left it) since the last call."""
        entered, left = self._entered, self._left
        self._entered, self._left = [], []
        return entered, left

    def forget(self, addrs: Iterable[int]) -> None:
        """Drop what is kept of nodes no longer on the site."""
        for a in addrs:
            self.nodes.pop(a, None)
            self.quarantined.pop(a, None)

    # ------------------------------------------------------------ persistence

    def state(self) -> dict[str, Any]:
        """What outlives a restart: envelopes and means, energy counts, attributed moves, quarantines (JSON-ready)."""
        nodes = {}
        for addr, n in sorted(self.nodes.items()):
            entry: dict[str, Any] = {"hist": n.hist, "day": n.day, "day_max": n.day_max, "influence": n.influence}
            if n.ew_t is not None:
                entry["ew"] = [n.ew_t, n.t0] + n.ew
            if n.e is not None:
                entry["e"] = n.e
            if addr in self.quarantined:
                entry["q"] = list(self.quarantined[addr])
            nodes[str(addr)] = entry
        return {"format": _STATE_FORMAT, "nodes": nodes}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what ``state`` gave; ``ConfigError`` if it is not one."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise ConfigError("plausibility state: unknown format")
        nodes = state.get("nodes")
        if not isinstance(nodes, Mapping):
            raise ConfigError("plausibility state: no nodes")
        for key, entry in nodes.items():
            try:
                addr = int(key)
                n = self._node(addr)
                n.hist = [[float(x) for x in h][:3] for h in entry["hist"]][-self.config.history_days :]
                if any(len(h) != 3 or not all(math.isfinite(x) and x >= 0 for x in h) for h in n.hist):
                    raise ValueError("envelope")
                n.day = int(entry["day"])
                n.day_max = [float(x) for x in entry["day_max"]][:3]
                n.influence = [float(x) for x in entry["influence"]][-100:]
                if "e" in entry:
                    n.e = int(entry["e"])
                if "ew" in entry:
                    ew = [float(x) for x in entry["ew"]]
                    if len(ew) != 5 or not all(math.isfinite(x) for x in ew):
                        raise ValueError("means")
                    n.ew_t, n.t0, n.ew = ew[0], ew[1], ew[2:]
                if "q" in entry:
                    until, reason = float(entry["q"][0]), int(entry["q"][1])
                    if not 0 <= reason < len(codes.QUARANTINE_REASONS):
                        raise ValueError("reason")
                    self.quarantined[addr] = (until, reason)
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise ConfigError("plausibility state: bad entry for node %s: %s" % (_short(key), e)) from None

    def load(self) -> None:
        """Restore from ``path`` if it exists. A damaged file is refused, never half-read."""
        if self.path is None:
            return
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise ConfigError("plausibility state %s: cannot read: %s" % (self.path, e)) from e
        self.restore(state)

    def save(self) -> None:
        """Write ``state`` to ``path`` atomically (a power cut leaves the old or the new file)."""
        if self.path is None:
            return
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(self.state(), sort_keys=True).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
