"""Replay a feeder day minute by minute with a balancing strategy in the loop.

The physics is the brief's (``Feeder.components``): each house's active and
reactive current per phase it sits on; a phase's current is the phasor sum of
its houses; the neutral is the phasor sum of the three phases. Metrics come
from ``phasecore.metrics`` conventions, vectorised with numpy.

Online strategies see only the past: at the end of minute t they get that
minute's readings (metered houses) and the transformer meter's per-phase
active/reactive current, and a move they order takes effect from minute t+1.

Strategies:

* ``as_built``  -- nobody moves.
* ``greedy``    -- a simple textbook controller: whenever the *measured*
  current unbalance factor is above 10 %, move the one house (from this
  minute's readings) that best closes the gap between the heaviest and the
  lightest phase; one move a minute, a house not again within 15 minutes.
  No load estimate, no hysteresis; no daily budget unless given one
  (``per_day``: the frontier holds it to the same budget as phasekit).
* ``phasekit``  -- ``phasecore.balancer.Balancer`` with the given Config,
  each node of the switch kind the feeder gives it (``Feeder.switch``) or
  the caller asks for.

Every result carries its moves as (minute, house index, from, to) and an
independent check of the limits (``check_limits``). A feeder of several days
is replayed as one continuous run: nothing is reset at midnight.

Supply interruption per move (``GAP_S``): a mechanical node is off for its
relay rules' break-before-make dead time (``phasenode.relay`` default,
2 s); a solid-state node for at most one half-cycle (10 ms at 50 Hz,
``phasenode.relay.SolidStateRules``), docs/relay-safety.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phasecore import balancer as bal
from phasekit.feeder.format import Feeder

__all__ = (
    "Day",
    "Result",
    "run_as_built",
    "run_greedy",
    "run_phasekit",
    "static_result",
    "check_limits",
    "cuf_of_10min_values",
    "future_means",
    "day_slices",
    "Move",
    "Assignment",
    "Liar",
    "LIAR_STRATEGIES",
    "GuardedRun",
    "run_guarded",
    "GAP_S",
)

_SIN120 = np.sqrt(3.0) / 2.0
# A move: (minute it takes effect, house index, from phase, to phase).
Move = tuple[int, int, int, int]
# Phases of the movable houses (in ``Day.mov_idx`` order): (M,) for the whole day, or (M, T) minute by minute.
Assignment = NDArray[np.int8]
Floats = NDArray[np.float64]
GREEDY_CUF = 0.10
GREEDY_DWELL_MIN = 15
DAY_MIN = 1440
# Seconds a house is without supply per move, by switch kind (0 mechanical, 1 solid-state):
# the node's default dead time (phasenode.relay.RelayRules), one half-cycle at 50 Hz.
GAP_S = (2.0, 0.010)


class Day:
    """A feeder's day prepared for fast evaluation of assignments."""

    def __init__(self, feeder: Feeder):
        self.feeder = feeder
        self.ip, self.iq = feeder.components()
        self.phase0 = feeder.phase.astype(np.int8)
        self.movable = feeder.movable()
        self.H, self.T = self.ip.shape
        # Three-phase houses and houses nobody can move: a fixed part per phase.
        fixed = ~self.movable
        self.fixed_p = np.zeros((3, self.T))
        self.fixed_q = np.zeros((3, self.T))
        for p in range(3):
            m = fixed & ((self.phase0 == p) | (self.phase0 == 3))
            self.fixed_p[p] = self.ip[m].sum(axis=0)
            self.fixed_q[p] = self.iq[m].sum(axis=0)
        self.mov_idx = np.nonzero(self.movable)[0]
        self.days = feeder.n_days
        # Complex relative phasor (ip - j iq) of each movable house, and its
        # absolute phasor on each phase: z * rot_p.
        self.rot = np.array([1.0, complex(-0.5, -_SIN120), complex(-0.5, _SIN120)])
        self.z = self.ip[self.mov_idx] - 1j * self.iq[self.mov_idx]

    def fixed_neutral(self) -> NDArray[np.complex128]:
        """Neutral phasor (T,) of the fixed part."""
        return sum(self.rot[p] * (self.fixed_p[p] - 1j * self.fixed_q[p]) for p in range(3))

    def phase_totals(self, assign: Assignment) -> tuple[Floats, Floats]:
        """Relative (ip, iq) per phase (3, T) for a movable-house assignment.

        ``assign`` holds the phase of each movable house (in ``mov_idx``
        order): shape (M,) for the whole day or (M, T) minute by minute.
        """
        tp = self.fixed_p.copy()
        tq = self.fixed_q.copy()
        zi = self.ip[self.mov_idx]
        zq = self.iq[self.mov_idx]
        a = assign if assign.ndim == 2 else assign[:, None]
        for p in range(3):
            m = a == p
            tp[p] += (zi * m).sum(axis=0)
            tq[p] += (zq * m).sum(axis=0)
        return tp, tq

    def metrics(self, assign: Assignment, floor_a: float = 1.0) -> tuple[Floats, Floats, Floats]:
        """Per-minute phase magnitudes (3, T), neutral (T,), CUF (T,)."""
        tp, tq = self.phase_totals(assign)
        mag = np.sqrt(tp * tp + tq * tq)
        n = sum(self.rot[p] * (tp[p] - 1j * tq[p]) for p in range(3))
        mean = mag.mean(axis=0)
        cuf = np.abs(mag - mean).max(axis=0) / np.maximum(mean, floor_a)
        return mag, np.abs(n), cuf

    def assign0(self) -> Assignment:
        """The as-built assignment (M,)."""
        return self.phase0[self.mov_idx].astype(np.int8)


def cuf_of_10min_values(mag: Floats, floor_a: float = 1.0, block: int = 10) -> Floats:
    """CUF of each 10-minute block's RMS phase currents (3, T) -> (T // block,).

    The per-minute CUF (``Day.metrics``) counts every kettle and shower. Power
    quality standards judge unbalance on 10-minute values (EN 50160: 95 % of
    the 10-min mean r.m.s. values of the supply voltage unbalance within 2 %;
    IEC 61000-4-30's 10-min aggregation interval): the same CUF definition,
    taken on the phase currents aggregated over each whole 10-minute block
    (a last partial block is left out).
    """
    t = mag.shape[1] // block * block
    if t == 0:
        return np.zeros(0)
    agg = np.sqrt((mag[:, :t] ** 2).reshape(3, -1, block).mean(axis=2))
    mean = agg.mean(axis=0)
    return np.abs(agg - mean).max(axis=0) / np.maximum(mean, floor_a)


class Result:
    """What a strategy did over the day and what it achieved."""

    def __init__(self, name: str, day: Day, assign: Assignment, moves: list[Move], extra: dict[str, Any] | None = None):
        self.name = name
        self.day = day
        self.assign = assign
        self.moves = moves
        self.mag, self.neutral, self.cuf = day.metrics(assign)
        self.extra: dict[str, Any] = extra or {}  # JSON-ready details (the config, plan times)

    def switches_per_house(self, minutes: slice = slice(None)) -> NDArray[np.int_]:
        """Switchings of every house (all houses, unmovable ones at 0), in ``minutes`` (default: all)."""
        lo, hi, _ = minutes.indices(self.day.T)
        counts = np.zeros(self.day.H, dtype=int)
        for t, h, _, _ in self.moves:
            if lo <= t < hi:
                counts[h] += 1
        return counts

    def summary(self, minutes: slice = slice(None), kinds: NDArray[np.integer[Any]] | None = None) -> dict[str, float]:
        """Unbalance, neutral current and switchings over ``minutes`` (default: the whole run), by name.

        Switchings per house per day are over every house of the feeder (a
        house without a node or a three-phase house counts with 0), as the
        issue's targets count them. ``kinds`` (per house, 0 mechanical, 1 solid-state; default the
        feeder's) gives the supply interruption per house and day (``GAP_S``).
        """
        lo, hi, _ = minutes.indices(self.day.T)
        sw_all = self.switches_per_house(minutes)
        sw = sw_all
        days = max(hi - lo, 1) / float(DAY_MIN)
        cuf = self.cuf[lo:hi]
        kinds = self.day.feeder.switch if kinds is None else kinds
        gap = np.asarray(GAP_S)[np.asarray(kinds, dtype=int)]
        interruption = sw_all * gap / days
        return {
            "cuf_mean": float(cuf.mean()),
            "cuf_p95": float(np.percentile(cuf, 95)),
            "neutral_mean_a": float(self.neutral[lo:hi].mean()),
            "share_above_10": float((cuf > 0.10).mean()),
            "share_above_20": float((cuf > 0.20).mean()),
            "switches_per_house_day_median": float(np.median(sw) / days),
            "switches_per_house_day_p95": float(np.percentile(sw, 95) / days),
            "switches_per_house_day_max": float(sw.max() / days),
            "switches_per_house_day_mean": float(sw.mean() / days),
            "switches_total": int(sw_all.sum()),
            "interruption_s_per_house_day_mean": float(interruption[self.day.mov_idx].mean())
            if len(self.day.mov_idx)
            else 0.0,
            "interruption_s_per_house_day_max": float(interruption.max()),
        }

    def summary_10min(self) -> dict[str, float]:
        """Unbalance on 10-minute values (``cuf_of_10min_values``), reported beside the per-minute one."""
        c = cuf_of_10min_values(self.mag)
        if len(c) == 0:
            return {"cuf_mean": 0.0, "share_above_20": 0.0}
        return {"cuf_mean": float(c.mean()), "share_above_20": float((c > 0.20).mean())}


def _minute_totals(day: Day, zi: Floats, zq: Floats, cur: Assignment, t: int) -> tuple[Floats, Floats]:
    """Relative (ip, iq) per phase (3,) at minute ``t`` with the movable houses on ``cur`` (M,).

    ``zi``, ``zq``: the movable houses' rows of ``day.ip``, ``day.iq``.
    """
    tp = day.fixed_p[:, t].copy()
    tq = day.fixed_q[:, t].copy()
    for p in range(3):
        m = cur == p
        tp[p] += zi[m, t].sum()
        tq[p] += zq[m, t].sum()
    return tp, tq


def run_as_built(day: Day) -> Result:
    """Nobody moves."""
    return Result("as_built", day, day.assign0(), [])


def static_result(day: Day, name: str, assign: NDArray[np.integer[Any]]) -> Result:
    """A whole-day assignment (an oracle's): each house that differs switches once, at minute 0."""
    a0 = day.assign0()
    moves: list[Move] = [(0, int(day.mov_idx[k]), int(a0[k]), int(assign[k])) for k in np.nonzero(assign != a0)[0]]
    return Result(name, day, np.asarray(assign, dtype=np.int8), moves)


def run_greedy(day: Day, per_day: int | None = None) -> Result:
    """The simple greedy baseline (see the module docstring); ``per_day`` moves per house in any 24 h."""
    M, T = len(day.mov_idx), day.T
    cur = day.assign0().copy()
    out = np.empty((M, T), dtype=np.int8)
    last = np.full(M, -(10**9))
    moves: list[Move] = []
    # Each house's move minutes within the last 24 h (only kept with a budget).
    recent: list[list[int]] = [[] for _ in range(M)]
    zi = day.ip[day.mov_idx]
    zq = day.iq[day.mov_idx]
    for t in range(T):
        out[:, t] = cur
        if t == T - 1:
            break
        tp, tq = _minute_totals(day, zi, zq, cur, t)
        mag = np.sqrt(tp * tp + tq * tq)
        mean = mag.mean()
        if np.abs(mag - mean).max() / max(mean, 1.0) <= GREEDY_CUF:
            continue
        hi, lo = int(mag.argmax()), int(mag.argmin())
        gap = (mag[hi] - mag[lo]) / 2.0
        ok = (cur == hi) & (t - last >= GREEDY_DWELL_MIN) & (zi[:, t] > 0)
        if per_day is not None:
            for j in np.nonzero(ok)[0]:
                r = recent[j]
                while r and t - r[0] >= DAY_MIN:
                    r.pop(0)
                if len(r) >= per_day:
                    ok[j] = False
        cand = np.nonzero(ok)[0]
        if len(cand) == 0:
            continue
        k = int(cand[np.argmin(np.abs(np.hypot(zi[cand, t], zq[cand, t]) - gap))])
        moves.append((t + 1, int(day.mov_idx[k]), hi, lo))
        cur[k] = lo
        last[k] = t
        if per_day is not None:
            recent[k].append(t)
    return Result("greedy", day, out, moves, {"per_day": per_day})


def future_means(x: Floats, minutes: int) -> Floats:
    """Mean of each row of ``x`` (houses, T) over the next ``minutes`` minutes after each minute.

    Column t holds the mean over t+1 .. t+minutes, cut at the day's end; the
    last minute, which has no future, keeps its own value.
    """
    h, t = x.shape
    c = np.concatenate([np.zeros((h, 1)), np.cumsum(x, axis=1)], axis=1)
    start = np.minimum(np.arange(t) + 1, t - 1)
    stop = np.minimum(np.arange(t) + 1 + minutes, t)
    return (c[:, stop] - c[:, start]) / np.maximum(stop - start, 1)


class _Foresight(bal.Balancer):
    """The balancer planning on the true future of each node's load: a diagnostic.

    For every round each node's planning estimate is the true mean of its
    active and reactive current over the next ``fast_min`` minutes and, unless
    ``slow_min`` is None, its slow estimate the mean over the next
    ``slow_min`` minutes (None keeps the balancer's own). Everything
    else -- limits, hysteresis, the search, the meter's residual -- is the
    balancer's own. No causal controller has this: it measures how
    much of the balancer's gap to the oracles is information, not method. It
    reaches into the balancer's estimate lists, which only this diagnostic may.
    """

    def __init__(
        self,
        config: bal.Config,
        capacity: int,
        ip: Floats,
        iq: Floats,
        ids: Sequence[int],
        fast_min: int,
        slow_min: int | None,
    ):
        super().__init__(config, capacity)
        self._future = (
            future_means(ip, fast_min),
            future_means(iq, fast_min),
            None if slow_min is None else future_means(ip, slow_min),
            None if slow_min is None else future_means(iq, slow_min),
        )
        self._rows = {node: k for k, node in enumerate(ids)}

    def plan(self, now_s: int, meter: tuple[float, ...] | None = None) -> list[tuple[int, int, int]]:
        # The latest readings stay the real ones: the meter's residual (load on
        # no node) is the meter minus them. The short estimate is set to the
        # latest reading so the trend term is nil and the planning estimate is
        # the future mean; after the round every estimate is put back, so the
        # balancer's own averages and fluctuation terms go on as they were.
        t = now_s // 60
        fp, fq, sp, sq = self._future
        kept = []
        for node, i in self._slot.items():
            k = self._rows[node]
            kept.append((i, self._fp[i], self._fq[i], self._ep[i], self._eq[i], self._sp[i], self._sq[i]))
            self._fp[i] = fp[k, t]
            self._fq[i] = fq[k, t]
            self._ep[i] = self._lp[i]
            self._eq[i] = self._lq[i]
            if sp is not None and sq is not None:  # both or neither
                self._sp[i] = sp[k, t]
                self._sq[i] = sq[k, t]
        try:
            return super().plan(now_s, meter)
        finally:
            for i, a, b, c, d, e, f in kept:
                self._fp[i], self._fq[i], self._ep[i], self._eq[i], self._sp[i], self._sq[i] = a, b, c, d, e, f


def run_phasekit(
    day: Day,
    config: bal.Config | None = None,
    progress: Callable[[int, int], object] | None = None,
    time_rounds: bool = False,
    foresight: tuple[int, int | None] | None = None,
    kinds: NDArray[np.integer[Any]] | None = None,
    balancer: bal.Balancer | None = None,
) -> Result:
    """Replay the feeder with the phasekit balancer in the loop (several days: one continuous run).

    ``progress(t, T)`` is called every 4 hours of simulated time. With
    ``time_rounds`` the wall time of each ``plan`` call is recorded (s).
    ``foresight`` = (fast, slow minutes or None) replays it planning on the
    true future instead (``_Foresight``, a diagnostic; the result is named
    "phasekit_foresight"). ``kinds`` (per house: 0 mechanical, 1 solid-state)
    overrides the feeder's switch kinds. ``balancer`` is a Balancer (or a
    subclass) to use instead of a new one, built with ``config``.
    """
    f = day.feeder
    kinds = f.switch if kinds is None else np.asarray(kinds)
    cfg = config or bal.Config()
    metered = np.nonzero(f.metered)[0]
    # Reading of a node = its current and pf, signed for export (per phase for three-phase houses).
    share = np.where(f.phase == 3, 1.0 / 3.0, 1.0)
    current = f.load_kw * 1000.0 / (f.voltage_v * f.pf) * share[:, None]
    ids = [int(h) for h in metered]
    capacity = max(1, len(ids))
    if balancer is not None:
        b = balancer
    elif foresight:
        # What the node's readings give the balancer: active and reactive current (Day.ip / Day.iq).
        b = _Foresight(cfg, capacity, day.ip[metered], day.iq[metered], ids, foresight[0], foresight[1])
    else:
        b = bal.Balancer(cfg, capacity=capacity)
    for h in ids:
        b.add_node(h, int(f.phase[h]), switchable=bool(day.movable[h]), kind=int(kinds[h]))
    pos = {int(h): k for k, h in enumerate(day.mov_idx)}
    cur_list = current[metered].T.tolist()
    pf_list = f.pf[metered].T.tolist()
    cur = day.assign0().copy()
    zi = day.ip[day.mov_idx]
    zq = day.iq[day.mov_idx]
    out = np.empty((len(day.mov_idx), day.T), dtype=np.int8)
    moves: list[Move] = []
    times: list[float] = []
    perf = time.perf_counter
    for t in range(day.T):
        out[:, t] = cur
        now = t * 60
        row_c = cur_list[t]
        row_pf = pf_list[t]
        try:
            for k in range(len(ids)):
                b.reading(ids[k], now, row_c[k], row_pf[k])
        except bal.BalancerError as e:
            # The feeder format allows loads a node's reading does not (a meter
            # fault, a factory on a house row): say where.
            raise bal.BalancerError("minute %d: %s" % (t, e)) from None
        meter = None
        if f.has_meter:
            tp, tq = _minute_totals(day, zi, zq, cur, t)
            meter = (tp[0], tq[0], tp[1], tq[1], tp[2], tq[2])
        t0 = perf()
        plan = b.plan(now, meter)
        if time_rounds:
            times.append(perf() - t0)
        for node, frm, to in plan:
            k = pos[node]
            if cur[k] != frm:
                raise AssertionError("balancer moved house %d from %d but it is on %d" % (node, frm, cur[k]))
            cur[k] = to
            moves.append((t + 1, node, int(frm), int(to)))
        if progress and t % 240 == 239:
            progress(t + 1, day.T)
    res = Result(
        "phasekit_foresight" if foresight else "phasekit",
        day,
        out,
        moves,
        {"config": cfg.as_dict(), "kinds": [int(k) for k in kinds]},
    )
    if time_rounds:
        res.extra["plan_times_s"] = times
    return res


def check_limits(
    result: Result, config: bal.Config, minute_s: int = 60, kinds: NDArray[np.integer[Any]] | None = None
) -> list[str]:
    """Independent check that a run kept the balancer's limits; returns a list of violations.

    Moves are (minute they take effect, house, from, to), ordered at the end
    of the minute before; every metered house is a node from minute 0. So a
    move at minute t was planned at (t - 1) * minute_s seconds. Each house is
    held to the limits of its switch kind (``kinds``, default the run's own,
    else the feeder's): the plain ones for mechanical, the ``ss_`` ones for
    solid-state; the multi-move share counts mechanical houses only.
    """
    day = result.day
    if kinds is None:
        kinds = np.asarray(result.extra.get("kinds", day.feeder.switch))
    bad: list[str] = []
    by_house: dict[int, list[int]] = {}
    per_minute: dict[int, int] = {}
    phase = {int(h): int(p) for h, p in zip(day.mov_idx, day.assign0())}
    for t, h, frm, to in result.moves:
        if not day.movable[h]:
            bad.append("minute %d: house %d is not movable (unmetered, three-phase or not switchable)" % (t, h))
        if frm == to or not (0 <= to <= 2):
            bad.append("minute %d: house %d bad move %d->%d" % (t, h, frm, to))
        if phase.get(h, frm) != frm:
            bad.append("minute %d: house %d moved from %d but is on %d" % (t, h, frm, phase[h]))
        phase[h] = to
        if (t - 1) * minute_s < config.warmup_s:
            bad.append("minute %d: house %d moved before its %d s warm-up" % (t, h, config.warmup_s))
        by_house.setdefault(h, []).append(t)
        per_minute[t] = per_minute.get(t, 0) + 1
    for t, n in per_minute.items():
        if n > config.moves_per_round:
            bad.append("minute %d: %d moves, limit %d per round" % (t, n, config.moves_per_round))
    day_min = bal.DAY_S // minute_s
    for h, ts in by_house.items():
        ts.sort()
        solid = int(kinds[h]) == bal.SOLID_STATE
        dwell = config.ss_min_dwell_s if solid else config.min_dwell_s
        k = config.ss_moves_per_day if solid else config.moves_per_day
        for a, b in zip(ts, ts[1:]):
            if (b - a) * minute_s < dwell:
                bad.append("house %d: moved at minutes %d and %d, dwell %d s" % (h, a, b, dwell))
        for j in range(len(ts) - k):
            if ts[j + k] - ts[j] < day_min:
                bad.append("house %d: %d moves within 24 h (minutes %d..%d)" % (h, k + 1, ts[j], ts[j + k]))
    # At most int(multi_share x mechanical nodes) mechanical houses may have moved twice or more in 24 h.
    mech = day.feeder.metered & (np.asarray(kinds) != bal.SOLID_STATE)
    cap = int(config.multi_share * int(mech.sum()))
    mech_moves = {h: ts for h, ts in by_house.items() if mech[h]}
    for t in sorted(per_minute):
        multi = sum(1 for ts in mech_moves.values() if sum(1 for x in ts if t - day_min < x <= t) >= 2)
        if multi > cap:
            bad.append("minute %d: %d houses moved twice or more within 24 h, limit %d" % (t, multi, cap))
    return bad


# ---------------------------------------------------------------------- the Pi's guard in the loop


LIAR_STRATEGIES = ("inflate", "constant", "envelope", "deflate")


class Liar:
    """One node that reports false currents: ``Liar(house, "inflate", amps=30)``.

    Its readings stay consistent with themselves, as a liar with the node's key
    would make them: power is V x I x pf of the claimed current, the energy
    counter counts the claimed power, frequency and voltage are the grid's.
    It refuses to be moved (reports NOT_SWITCHABLE), so every move its claims
    cause is another house's. Strategies:

    * ``inflate``: its true current plus ``amps``, ramped in over ``ramp_min``
      minutes (steps a meter cannot tell from a load coming on);
    * ``constant``: ``amps`` whatever the house draws;
    * ``envelope``: just under the current the Pi's guard trusts it with (an
      attacker who knows its own envelope; the most it can claim unnoticed);
    * ``deflate``: nothing at all, whatever the house draws.

    The lie starts at minute ``start_min`` of the day.
    """

    def __init__(
        self, house: int, strategy: str = "inflate", amps: float = 30.0, start_min: int = 0, ramp_min: int = 30
    ):
        if strategy not in LIAR_STRATEGIES:
            raise ValueError("liar strategy %r is not one of %s" % (strategy, ", ".join(LIAR_STRATEGIES)))
        self.house = house
        self.strategy = strategy
        self.amps = float(amps)
        self.start_min = start_min
        self.ramp_min = max(1, ramp_min)

    def claim(self, t: int, current_a: float, guard: Any) -> float:
        """The current (A, signed) it reports at minute ``t`` when the house draws ``current_a``."""
        if t < self.start_min:
            return current_a
        ramp = min(1.0, (t - self.start_min + 1) / self.ramp_min)
        if self.strategy == "inflate":
            return abs(current_a) + ramp * self.amps
        if self.strategy == "constant":
            return abs(current_a) + ramp * (self.amps - abs(current_a))
        if self.strategy == "envelope":
            return 0.98 * guard.trusted_a(self.house)
        return 0.0


class GuardedRun:
    """What ``run_guarded`` adds to its ``Result``: the guard's view of the day."""

    def __init__(self) -> None:
        self.quarantined: dict[int, tuple[int, int]] = {}  # house -> (minute, reason), first quarantine
        self.attributed: dict[int, int] = {}  # house -> moves of other houses attributed to its claims
        self.vetoed = 0
        self.implausible = 0
        self.events: list[tuple[int, int, int, int]] = []  # (minute, house, code, value)
        # Moves of other houses that rest on the liar's lie: with its true current in its place (and,
        # with a meter, the residual that truth implies), the move would not lower the balancer's
        # objective by min_move_gain_a. Ground truth the Pi does not have; the replay does.
        self.resting_on_lie: list[Move] = []


class _Truth:
    """The balancer's estimates of one node, kept from its true readings beside the lied ones."""

    def __init__(self, cfg: bal.Config):
        self.cfg = cfg
        self.t: int | None = None
        self.fast = self.slow = self.short = self.last = 0j  # (ip - j iq)

    def add(self, now: int, ip: float, iq: float) -> None:
        z = complex(ip, -iq)
        if self.t is None:
            self.fast = self.slow = self.short = z
        else:
            dt = now - self.t
            self.fast += dt / (self.cfg.tau_s + dt) * (z - self.fast)
            self.slow += dt / (self.cfg.tau_slow_s + dt) * (z - self.slow)
            self.short += dt / (self.cfg.tau_short_s + dt) * (z - self.short)
        self.last = z
        self.t = now

    def planning(self) -> complex:
        return self.fast + self.cfg.trend_weight * (self.last - self.short)


def _resting_on(b: bal.Balancer, now: int, kept: list[tuple[int, int, int]], liar: int, truth: _Truth) -> list[int]:
    """Indices of ``kept`` whose gain falls below ``min_move_gain_a`` with the liar's truth in place of its lie."""
    nodes, res, rfl = b.estimate_inputs(now)
    cfg = b.config
    w, wc = cfg.slow_weight, cfg.fluct_weight
    rot = (1 + 0j, complex(-0.5, -_SIN120), complex(-0.5, _SIN120))
    before = {n: f for n, f, _ in kept}  # the balancer already holds the plan's phases
    use_res = any(res)
    big_f = sum((complex(res[4 * p], -res[4 * p + 1]) * rot[p] for p in range(3)), 0j)
    big_s = sum((complex(res[4 * p + 2], -res[4 * p + 3]) * rot[p] for p in range(3)), 0j)
    big_c = sum((rfl[p] * rot[p] for p in range(3)), 0j)
    est = {}
    for n, ph, fp, fq, sp, sq, fl, counted in nodes:
        ph = before.get(n, ph)
        if ph > 2:
            continue
        zf, zs = complex(fp, -fq), complex(sp, -sq)
        if n == liar and truth.t is not None:
            # Its truth instead of its claim; with a meter the residual (meter - claims) moves the other way.
            if counted:
                big_f += (truth.planning() - zf) * rot[ph]
                big_s += (truth.slow - zs) * rot[ph]
            if use_res:
                big_f -= (truth.planning() - zf) * rot[ph]
                big_s -= (truth.slow - zs) * rot[ph]
        if not counted:
            continue
        est[n] = (zf, zs, fl)
        big_f += zf * rot[ph]
        big_s += zs * rot[ph]
        big_c += fl * rot[ph]

    def cost(a: complex, c: complex, e: complex) -> float:
        return float(np.sqrt((abs(a) ** 2 + w * abs(c) ** 2) / (1 + w) + wc * abs(e) ** 2))

    out = []
    for j, (n, frm, to) in enumerate(kept):
        if n not in est:
            continue
        zf, zs, fl = est[n]
        d = rot[to] - rot[frm]
        if n != liar and cost(big_f, big_s, big_c) - cost(big_f + zf * d, big_s + zs * d, big_c + fl * d) < (
            cfg.min_move_gain_a
        ):
            out.append(j)
        big_f, big_s, big_c = big_f + zf * d, big_s + zs * d, big_c + fl * d
    return out


def run_guarded(
    day: Day,
    guard: Any,
    config: bal.Config | None = None,
    liar: Liar | None = None,
    day_index: int = 0,
    t0: int = 1_700_006_400,
    meter: bool | None = None,
    guarded: bool = True,
    counters: dict[int, float] | None = None,
) -> tuple[Result, GuardedRun]:
    """Replay the day as the transformer Pi runs it: every reading through ``guard`` before the balancer.

    ``guard`` is a ``phasegate.plausibility.Guard`` (kept across calls, so a
    run of honest days teaches it each node's envelope). Readings are the
    node's full reading (voltage, current, signed power, energy counter,
    frequency, pf, phase, status), the liar's from ``liar.claim``. With a
    meter (``meter``, default the feeder's) the guard sees the meter's phase
    currents every round; without one it vets every plan (``Guard.vet``). A
    quarantined node is removed from the balancer, as ``phasegate.controller``
    does. ``guarded=False`` runs the same loop with the guard left out (the
    balancer alone, for comparison). Metrics are on the true currents. Wall
    time is ``t0 + day_index x 86400 + minute x 60`` (``t0`` at a midnight);
    ``counters`` carries the nodes' energy counters from one day's run to the
    next.
    """
    from phasecore import codes

    f = day.feeder
    cfg = config or bal.Config()
    has_meter = f.has_meter if meter is None else meter
    metered = [int(h) for h in np.nonzero(f.metered)[0]]
    share = np.where(f.phase == 3, 1.0 / 3.0, 1.0)
    current = (f.load_kw * 1000.0 / (f.voltage_v * f.pf) * share[:, None]).T.tolist()
    pf_rows = f.pf.T.tolist()
    b = bal.Balancer(cfg, capacity=max(1, len(metered)))
    liar_h = liar.house if liar is not None else None
    for h in metered:
        b.add_node(h, int(f.phase[h]), switchable=bool(day.movable[h]) and h != liar_h)
    pos = {int(h): k for k, h in enumerate(day.mov_idx)}
    cur = day.assign0().copy()
    out = np.empty((len(day.mov_idx), day.T), dtype=np.int8)
    zi = day.ip[day.mov_idx]
    zq = day.iq[day.mov_idx]
    moves: list[Move] = []
    run = GuardedRun()
    # Energy counters (Wh): ``counters`` carries them from one day to the next (updated in place).
    energy = counters if counters is not None else {}
    for h in metered:
        energy.setdefault(h, 1_000_000.0)
    v = f.voltage_v
    base_s = day_index * 86400
    removed: set[int] = set()
    vetoed0 = guard.stats["vetoed"]
    truth = _Truth(cfg)

    def report(t: int) -> None:
        # What phasegate.controller does with the guard's findings and transitions.
        for addr, code, value, _ in guard.take_findings():
            run.events.append((t, addr, code, value))
            if code == codes.EV_NODE_QUARANTINED:
                run.quarantined.setdefault(addr, (t, value))
            elif code == codes.EV_READING_IMPLAUSIBLE:
                run.implausible += 1
        entered, left = guard.take_transitions()
        for addr in entered:
            if addr not in removed:
                b.remove_node(addr)
                removed.add(addr)
        for addr in left:
            if addr in removed:
                removed.discard(addr)
                phase = int(cur[pos[addr]]) if addr in pos else int(f.phase[addr])
                b.add_node(addr, phase, switchable=bool(day.movable[addr]) and addr != liar_h)
        run.vetoed = guard.stats["vetoed"] - vetoed0

    if guarded:
        for addr in sorted(guard.quarantined):  # still quarantined from an earlier day
            if addr in metered:
                b.remove_node(addr)
                removed.add(addr)
    for t in range(day.T):
        out[:, t] = cur
        now = base_s + t * 60
        wall = t0 + now
        row_c = current[t]
        row_pf = pf_rows[t]
        for h in metered:
            i = row_c[h]
            pf = row_pf[h]
            if h == liar_h and liar is not None:
                i = liar.claim(t, i, guard)
            phase = int(cur[pos[h]]) if h in pos else (int(f.phase[h]) if f.phase[h] != 3 else codes.PHASE_NONE)
            p_w = v * i * pf
            energy[h] += abs(p_w) / 60.0
            body = {
                "voltage_dV": int(round(v * 10)),
                "current_mA": min(100000, int(round(abs(i) * 1000))),
                "power_dW": int(round(p_w * 10)),
                "energy_Wh": int(energy[h]) % (1 << 32),
                "frequency_dHz": 500,
                "pf_centi": int(round(pf * 100)),
                "phase": phase,
                "status": 0 if (day.movable[h] and h != liar_h) else codes.ST_NOT_SWITCHABLE,
            }
            if guarded:
                ok = guard.reading(h, body, wall) and not guard.is_quarantined(h)
                report(t)
                if not ok:
                    continue
            if guarded:
                i = guard.balance_a(h, i, wall)
            b.reading(h, now, i, pf, None if phase == codes.PHASE_NONE else phase)
            if h == liar_h:
                truth.add(now, float(day.ip[h, t]), float(day.iq[h, t]))
        m = None
        if has_meter:
            tp, tq = _minute_totals(day, zi, zq, cur, t)
            m = (float(tp[0]), float(tq[0]), float(tp[1]), float(tq[1]), float(tp[2]), float(tq[2]))
            if guarded:
                guard.meter_round(wall, (m[0], m[2], m[4]))
                report(t)
        plan = b.plan(now, m)
        if guarded:
            guard.tick(wall)
            if m is None:
                plan = guard.vet(b, now, plan, wall)
            report(t)
        if liar is not None and plan and liar.house in b.nodes():
            for j in _resting_on(b, now, plan, liar.house, truth):
                node, frm, to = plan[j]
                run.resting_on_lie.append((t + 1, node, int(frm), int(to)))
        for node, frm, to in plan:
            k = pos[node]
            if cur[k] != frm:
                raise AssertionError("balancer moved house %d from %d but it is on %d" % (node, frm, cur[k]))
            cur[k] = to
            moves.append((t + 1, node, int(frm), int(to)))
    if guarded:
        run.attributed = {h: guard.attributed(h, t0 + base_s + day.T * 60) for h in metered}
        run.attributed = {h: n for h, n in run.attributed.items() if n}
    name = "guarded" if guarded else "unguarded"
    return Result(name, day, out, moves, {"config": cfg.as_dict()}), run


def day_slices(day: Day) -> list[slice]:
    """The minutes of each day of a (several-day) run: [slice(0, 1440), slice(1440, 2880), ...]."""
    return [slice(s, min(s + DAY_MIN, day.T)) for s in range(0, day.T, DAY_MIN)]
