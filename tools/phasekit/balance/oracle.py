"""Offline oracles: the best balancing possible with hindsight, as yardsticks.

* ``static_oracle``  -- the best single assignment of the movable houses for
  the whole day (each house switches at most once, before the day starts).
* ``dynamic_oracle`` -- the best assignment for every 15-minute block, with
  unlimited switching between blocks.
* ``crossfit_static`` -- the static oracle judged out of sample: the best
  assignment for alternate 30-minute blocks of the day, applied to the blocks
  in between (and the other way round). It tells how much of the static
  oracle's gain is the day's structure and how much is fitting that day's
  random coincidences, which no causal controller can know.

Both minimise the mean neutral current over the minutes they cover (the
quantity the benchmark's first target is about), with the full knowledge of
every house's load that no online controller has.

Method: exact MILP is the wrong tool here -- the LP relaxation of phase
assignment is trivially balanced (a house split a third on each phase cancels),
so branch and bound on 200+ houses x 3 phases proves little in two minutes.
The searches work on the *exact* objective (complex phasors, numpy-vectorised
over minutes):

* static assignments (``static_oracle``, ``crossfit_static``): two searches
  from the as-built wiring and a greedy construction, and the better result
  wins. One is iterated local search (best-improvement single moves until none
  helps, then random perturbations of a few houses kept when they improve);
  the other is simulated annealing in ``CHAINS`` chains, each restarted from
  the best so far at half the previous temperature, finished by iterated local
  search. The landscape is rugged (a day of minute loads is a partitioning
  problem with many local optima) and neither search wins everywhere:
  annealing found assignments 2-7 % better on real-shape streets of 100-250
  houses, iterated local search up to 4 % better on generated 55-100-house
  feeders;
* per-block assignments (``dynamic_oracle``, 15 minutes each): iterated local
  search, a fixed number of perturbation rounds per block.

The work is fixed (``effort`` scales it), not a time budget, so a feeder gives
the same yardstick on a fast machine and a slow one. ``deadline_s`` caps the
wall time for very large feeders; a search cut by it says so in ``info``.
``info`` (a dict, when given) also receives each chain's result, so a report
can show how far the search still moved: an annealing search is near-exact,
not exact. ``brute_force`` enumerates every assignment for small instances;
the tests check the searches find that optimum.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phasekit.balance.replay import Assignment, Day

Phasors = NDArray[np.complex128]  # base (T,), or W (3, M, T): W[p, k] = house k's absolute phasor on phase p
Minutes = slice | NDArray[np.intp]  # which minutes of the day

__all__ = (
    "static_oracle",
    "dynamic_oracle",
    "crossfit_static",
    "day_ahead_static",
    "budget_oracle",
    "brute_force",
    "local_search",
    "anneal",
)


def _prepare(day: Day, sl: Minutes = slice(None)) -> tuple[Phasors, Phasors]:
    """(base neutral phasor (T,), W (3, M, T)) over the minutes ``sl`` (a slice or an index array).

    W[p, k] = house k's absolute phasor on phase p.
    """
    base = day.fixed_neutral()[sl]
    z = day.z[:, sl]
    w = np.stack([z * day.rot[p] for p in range(3)])
    return base, w


def _cost(base: Phasors, w: Phasors, assign: Assignment) -> tuple[float, Phasors]:
    m = w.shape[1]
    n = base + w[assign, np.arange(m)].sum(axis=0)
    return float(np.abs(n).mean()), n


def local_search(base: Phasors, w: Phasors, assign: Assignment, max_iter: int = 100000) -> tuple[Assignment, float]:
    """Best-improvement single moves from ``assign`` until none lowers mean |N|.

    Returns (assign, cost). Exact objective; O(3 M T) per step.
    """
    assign = np.array(assign, dtype=np.int8)
    m = w.shape[1]
    idx = np.arange(m)
    cost, n = _cost(base, w, assign)
    t = base.shape[0]
    for _ in range(max_iter if m > 0 else 0):
        cur = w[assign, idx]  # (M, T)
        rest = n[None, :] - cur  # neutral without house k
        best_c = cost
        best_k = -1
        best_q = 0
        for q in range(3):
            c = np.abs(rest + w[q]).sum(axis=1) / t  # (M,)
            c[assign == q] = np.inf
            k = int(np.argmin(c))
            if c[k] < best_c - 1e-12:
                best_c, best_k, best_q = float(c[k]), k, q
        if best_k < 0:
            break
        n = n - w[assign[best_k], best_k] + w[best_q, best_k]
        assign[best_k] = best_q
        cost = best_c
    # Recompute from scratch so accumulated rounding never flatters the result.
    cost, _ = _cost(base, w, assign)
    return assign, cost


def _construct(base: Phasors, w: Phasors) -> Assignment:
    """Greedy construction: biggest houses first, each onto the phase that helps most."""
    m = w.shape[1]
    order = np.argsort(-np.abs(w[0]).mean(axis=1))
    n = base.copy()
    assign = np.zeros(m, dtype=np.int8)
    for k in order:
        c = [np.abs(n + w[q, k]).mean() for q in range(3)]
        q = int(np.argmin(c))
        assign[k] = q
        n = n + w[q, k]
    return assign


STEPS_PER_HOUSE = 3000  # annealing proposals per movable house and chain (effort 1)
CHAINS = 3
ROUNDS_STATIC = 300  # perturbation rounds of each iterated local search of a static oracle (effort 1)
ROUNDS_PER_BLOCK = 300  # perturbation rounds per dynamic-oracle block (effort 1)
_T0_SHARE = 0.04  # first chain's starting temperature, as a share of the cost
_CHECK_EVERY = 1024  # annealing steps between two looks at the clock
_CHUNK = 8192  # annealing proposals drawn at a time


def _deadline(deadline_s: float | None) -> float | None:
    return None if deadline_s is None else time.perf_counter() + deadline_s


def _best_start(base: Phasors, w: Phasors, starts: Iterable[Assignment]) -> tuple[Assignment, float]:
    best_a: Assignment | None = None
    best_c = np.inf
    for a in starts:
        a, c = local_search(base, w, a)
        if c < best_c:
            best_a, best_c = a, c
    assert best_a is not None, "no start, or no finite cost"
    return best_a, best_c


class _ChunkedDraws:
    """An annealing chain's random proposals, ``_CHUNK`` at a time, in bounded memory.

    A chain uses the numbers of three whole draws from ``rng`` -- ``steps``
    houses, then ``steps`` turns, then ``steps`` uniforms -- so a seed gives the
    same oracle whatever the chunk size. Drawing them whole took about 32 bytes
    per proposal (24 MB a chain on 250 houses at effort 1, growing with effort).
    Here a first pass through ``rng`` finds where each of the three draws
    starts, keeping a copy of the generator at each, and leaves ``rng`` where
    the whole draws would have. numpy draws a chunk exactly as the same
    stretch of one big draw (the tests check it, so a numpy that did not would
    be caught rather than silently change the oracles).
    """

    def __init__(self, rng: np.random.Generator, m: int, steps: int, deadline: float | None = None):
        self.m = m
        self.steps = steps
        self.cut = False  # the deadline passed while finding the starts
        self.houses = copy.deepcopy(rng)
        self._skip(lambda k: rng.integers(0, m, size=k), deadline)
        self.turns = copy.deepcopy(rng)
        self._skip(lambda k: rng.integers(1, 3, size=k), deadline)
        self.uniforms = copy.deepcopy(rng)
        self._skip(rng.random, deadline)

    def _skip(self, draw: Callable[[int], object], deadline: float | None) -> None:
        for s in range(0, self.steps, _CHUNK):
            if self.cut or (deadline is not None and s % (_CHUNK * 64) == 0 and time.perf_counter() > deadline):
                self.cut = True
                return
            draw(min(_CHUNK, self.steps - s))

    def next(self, s: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """(houses, turns, log of uniforms) for proposals ``s`` up to the next chunk."""
        k = min(_CHUNK, self.steps - s)
        houses = self.houses.integers(0, self.m, size=k)
        turns = self.turns.integers(1, 3, size=k)
        # A worse cost is accepted when (c - c2) > T log(u): one log per proposal.
        return houses, turns, np.log(self.uniforms.random(k))


def anneal(
    base: Phasors,
    w: Phasors,
    start: Assignment,
    steps: int,
    t0: float,
    rng: np.random.Generator,
    deadline: float | None = None,
) -> tuple[Assignment, float, bool]:
    """One simulated-annealing chain from ``start``: (best assign, its cost, cut by deadline).

    Proposals move one random house to one of its two other phases; a worse
    cost is accepted with probability exp(-increase / T), T falling from ``t0``
    to 0 quadratically over ``steps``. The running neutral is kept in
    complex64 (this loop is the oracle's hot path); the chain's best is
    polished by ``local_search`` and costed exactly in float64.
    """
    m = w.shape[1]
    t = base.shape[0]
    if m == 0 or steps <= 0:
        a, c = local_search(base, w, start)
        return a, c, False
    w32 = w.astype(np.complex64)
    a = np.array(start, dtype=np.int8)
    n = (base + w[a, np.arange(m)].sum(axis=0)).astype(np.complex64)
    c = float(np.abs(n).sum()) / t
    best_a, best_c = a.copy(), c
    draws = _ChunkedDraws(rng, m, steps, deadline)
    trial = np.empty(t, dtype=np.complex64)
    mag = np.empty(t, dtype=np.float32)
    cut = draws.cut
    for s in range(0 if cut else steps):
        if deadline is not None and s % _CHECK_EVERY == 0 and time.perf_counter() > deadline:
            cut = True
            break
        j = s % _CHUNK
        if j == 0:
            houses, turns, log_u = draws.next(s)
            temps = t0 * (1.0 - np.arange(s, s + len(houses)) / steps) ** 2
        k = houses[j]
        p = a[k]
        q = (p + turns[j]) % 3
        np.subtract(w32[q, k], w32[p, k], out=trial)
        trial += n
        np.abs(trial, out=mag)
        c2 = float(mag.sum()) / t
        if c2 <= c or c - c2 > log_u[j] * temps[j]:
            a[k] = q
            n, trial = trial, n
            c = c2
            if c < best_c:
                best_a, best_c = a.copy(), c
    a, c = local_search(base, w, best_a)
    return a, c, cut


def _anneal_search(
    base: Phasors,
    w: Phasors,
    start: Assignment,
    cost: float,
    rng: np.random.Generator,
    effort: float = 1.0,
    chains: int = CHAINS,
    deadline: float | None = None,
) -> tuple[Assignment, float, list[float], int, bool]:
    """``chains`` annealing chains from ``start`` (of ``cost``), each from the best so far.

    Returns (assign, cost, each chain's result, steps per chain, cut by deadline).
    """
    best_a, best_c = start, cost
    steps = int(STEPS_PER_HOUSE * effort * w.shape[1])
    results: list[float] = []
    cut = False
    t0 = _T0_SHARE * best_c
    for _ in range(chains if steps > 0 else 0):
        a, c, cut = anneal(base, w, best_a, steps, t0, rng, deadline)
        results.append(c)
        if c < best_c:
            best_a, best_c = a, c
        t0 /= 2.0
        if cut:
            break
    return best_a, best_c, results, steps, cut


def _static_search(
    base: Phasors,
    w: Phasors,
    starts: list[Assignment],
    rng: np.random.Generator,
    effort: float = 1.0,
    deadline: float | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[Assignment, float]:
    """The best single assignment over ``base``/``w``: the better of two searches (module docstring)."""
    rounds = int(ROUNDS_STATIC * effort)
    start_a, start_c = _best_start(base, w, starts)
    ils_a, ils_c, cut1 = _ils(base, w, [start_a], rounds, rng, deadline)
    sa_a, sa_c, chains, steps, cut2 = _anneal_search(base, w, start_a, start_c, rng, effort, deadline=deadline)
    sa_a, sa_c, cut3 = _ils(base, w, [sa_a], rounds, rng, deadline)
    if info is not None:
        info.setdefault("iterated_local_search", []).append(ils_c)
        info.setdefault("chains", []).append(chains)
        info.setdefault("annealing_then_local_search", []).append(sa_c)
        info["steps_per_chain"] = steps
        info["rounds"] = rounds
        info["cut_by_deadline"] = bool(info.get("cut_by_deadline")) or cut1 or cut2 or cut3
    if ils_c <= sa_c:
        return ils_a, ils_c
    return sa_a, sa_c


def _ils(
    base: Phasors,
    w: Phasors,
    starts: list[Assignment],
    rounds: int,
    rng: np.random.Generator,
    deadline: float | None = None,
) -> tuple[Assignment, float, bool]:
    """Iterated local search: (assign, cost, cut by deadline) after ``rounds`` perturbations."""
    best_a, best_c = _best_start(base, w, starts)
    m = w.shape[1]
    if m == 0:
        return best_a, best_c, False
    k_pert = max(2, min(8, m // 10))
    for _ in range(rounds):
        if deadline is not None and time.perf_counter() > deadline:
            return best_a, best_c, True
        a = best_a.copy()
        pick = rng.choice(m, size=min(k_pert, m), replace=False)
        a[pick] = rng.integers(0, 3, size=len(pick))
        a, c = local_search(base, w, a)
        if c < best_c - 1e-9:
            best_a, best_c = a, c
    return best_a, best_c, False


def static_oracle(
    day: Day, effort: float = 1.0, seed: int = 0, deadline_s: float | None = None, info: dict[str, Any] | None = None
) -> tuple[Assignment, float]:
    """Best single assignment for the whole day: (assign (M,), mean neutral A)."""
    base, w = _prepare(day)
    rng = np.random.default_rng(seed)
    starts = [day.assign0(), _construct(base, w)]
    return _static_search(base, w, starts, rng, effort, deadline=_deadline(deadline_s), info=info)


def dynamic_oracle(
    day: Day,
    block_min: int = 15,
    effort: float = 1.0,
    seed: int = 0,
    warm: NDArray[np.integer[Any]] | None = None,
    deadline_s: float | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[Assignment, float]:
    """Best assignment per ``block_min`` block: (assign (M, T), mean neutral A).

    ``warm`` (an (M,) assignment, e.g. the static oracle's) is tried as a start
    in every block besides the previous block's optimum and a greedy construction.
    """
    rng = np.random.default_rng(seed)
    m, t = len(day.mov_idx), day.T
    blocks = [(s, min(t, s + block_min)) for s in range(0, t, block_min)]
    out = np.empty((m, t), dtype=np.int8)
    prev = day.assign0()
    total = 0.0
    rounds = int(ROUNDS_PER_BLOCK * effort)
    deadline = _deadline(deadline_s)
    cut = False
    for s, e in blocks:
        base, w = _prepare(day, slice(s, e))
        starts = [prev, _construct(base, w)]
        if warm is not None:
            starts.append(np.asarray(warm, dtype=np.int8))
        a, c, cut_here = _ils(base, w, starts, 0 if cut else rounds, rng, deadline)
        cut = cut or cut_here
        # Among equally good assignments keep the previous one (fewer switchings).
        cp, _ = _cost(base, w, prev)
        if cp <= c + 1e-9:
            a, c = prev.copy(), cp
        out[:, s:e] = a[:, None]
        total += c * (e - s)
        prev = a
    if info is not None:
        info["rounds_per_block"] = rounds
        info["cut_by_deadline"] = cut
    return out, total / t


def crossfit_static(
    day: Day,
    block_min: int = 30,
    effort: float = 1.0,
    seed: int = 0,
    deadline_s: float | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[Assignment, float]:
    """The static oracle out of sample: (assign (M, T), mean neutral A).

    Minutes are split into alternate ``block_min`` blocks, odd and even; the
    best single assignment is searched on one set and used on the other, so
    no minute is judged by an assignment that saw it.
    """
    rng = np.random.default_rng(seed)
    m, t = len(day.mov_idx), day.T
    even = (np.arange(t) // block_min) % 2 == 0
    out = np.empty((m, t), dtype=np.int8)
    total = 0.0
    deadline = _deadline(deadline_s)
    for fit, use in ((~even, even), (even, ~even)):
        use_idx = np.nonzero(use)[0]
        if len(use_idx) == 0:
            continue
        fit_idx = np.nonzero(fit)[0]
        a = day.assign0()
        if len(fit_idx):
            base, w = _prepare(day, fit_idx)
            a, _ = _static_search(base, w, [a, _construct(base, w)], rng, effort, deadline=deadline, info=info)
        out[:, use_idx] = a[:, None]
        base, w = _prepare(day, use_idx)
        total += _cost(base, w, a)[0] * len(use_idx)
    return out, total / t


def brute_force(day: Day, sl: Minutes = slice(None)) -> tuple[Assignment, float]:
    """Exact optimum by enumeration (3**M assignments): for small instances only."""
    base, w = _prepare(day, sl)
    m = w.shape[1]
    if m > 10:
        raise ValueError("brute force over %d movable houses is 3**%d assignments; use <= 10" % (m, m))
    best_a: Assignment | None = None
    best_c = np.inf
    for combo in itertools.product(range(3), repeat=m):
        a = np.array(combo, dtype=np.int8)
        c, _ = _cost(base, w, a)
        if c < best_c:
            best_a, best_c = a, c
    assert best_a is not None, "3**M >= 1 assignments, each of finite cost"
    return best_a, best_c


# --------------------------------------------------------------------------------------
# The budget-constrained dynamic oracle (the frontier's hindsight reference).

PASSES_MAX = 12  # coordinate-descent passes over every house, at most
PASS_GAIN = 1e-4  # ... it stops after a pass that gains less than this share of the cost
KICKS_PER_EFFORT = 4  # perturbation rounds at effort 1


def _house_block_costs(
    n: Phasors, w: Phasors, k: int, cur: NDArray[np.int8], bounds: NDArray[np.intp]
) -> NDArray[np.float64]:
    """(blocks, 3): house k's cost per block on each phase, given the neutral ``n`` of the current assignment.

    ``cur`` (T,) is house k's phase per minute in ``n``; ``bounds`` the blocks' first minutes.
    """
    t = n.shape[0]
    rest = n - w[cur, k, np.arange(t)]
    c = np.abs(rest[None, :] + w[:, k, :])  # (3, T)
    return np.add.reduceat(c, bounds, axis=1).T


def _best_path(
    costs: NDArray[np.float64], start: int, budget: int, day_start: NDArray[np.bool_]
) -> tuple[NDArray[np.int8], float]:
    """The cheapest phase per block with at most ``budget`` changes per day: exact dynamic programming.

    ``costs`` (blocks, 3); the house is on ``start`` before block 0 (a change
    into block 0 counts); ``day_start[b]`` marks a block that begins a new
    day, where the count starts again (a change into that block counts in the
    new day). State: (phase, changes so far this day). Returns (phase per
    block, total cost). Plain Python lists: on 3 x (budget + 1) states a
    block, faster than numpy's per-call overhead.
    """
    nb = costs.shape[0]
    if budget >= 1440:
        # No limit that binds (as many changes as blocks): the cheapest phase of every block.
        path = costs.argmin(axis=1).astype(np.int8)
        return path, float(costs[np.arange(nb), path].sum())
    cost = costs.tolist()
    starts = day_start.tolist()
    c = budget + 1
    inf = float("inf")
    v = [[inf] * c for _ in range(3)]
    v[start][0] = 0.0
    # came[b][q][k] = (phase, count) of the state before block b.
    came: list[list[list[tuple[int, int]]]] = []
    for b in range(nb):
        if b and starts[b]:
            # A new day: every count starts again from 0 (the best of each phase).
            u = [[inf] * c for _ in range(3)]
            ucount = [[0] * c for _ in range(3)]
            for p in range(3):
                row = v[p]
                k = min(range(c), key=row.__getitem__)
                u[p][0] = row[k]
                ucount[p][0] = k
        else:
            u = v
            ucount = None
        cb = cost[b]
        new = [[inf] * c for _ in range(3)]
        back = [[(0, 0)] * c for _ in range(3)]
        for q in range(3):
            uq = u[q]
            o1 = u[(q + 1) % 3]
            o2 = u[(q + 2) % 3]
            p1 = (q + 1) % 3
            p2 = (q + 2) % 3
            nq = new[q]
            bq = back[q]
            cq = cb[q]
            for k in range(c):
                best = uq[k]
                frm = (q, k)
                if k:
                    a = o1[k - 1]
                    if a < best:
                        best = a
                        frm = (p1, k - 1)
                    a = o2[k - 1]
                    if a < best:
                        best = a
                        frm = (p2, k - 1)
                if best < inf:
                    nq[k] = best + cq
                    bq[k] = frm if ucount is None else (frm[0], ucount[frm[0]][frm[1]])
        came.append(back)
        v = new
    q = 0
    k = 0
    total = inf
    for p in range(3):
        for kk in range(c):
            if v[p][kk] < total:
                total = v[p][kk]
                q, k = p, kk
    path = np.empty(nb, dtype=np.int8)
    for b in range(nb - 1, -1, -1):
        path[b] = q
        q, k = came[b][q][k]
    return path, float(total)


def _blocks(t: int, block_min: int) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.intp]]:
    """(first minute of each block, whether it starts a day, block of each minute) for ``t`` minutes."""
    bounds = np.arange(0, t, block_min)
    day_start = bounds % 1440 == 0
    return bounds, day_start, np.repeat(np.arange(len(bounds)), block_min)[:t]


def _descend(
    base: Phasors,
    w: Phasors,
    a0: Assignment,
    traj: NDArray[np.int8],
    budget: int,
    block_min: int,
    rng: np.random.Generator,
    deadline: float | None,
    houses: NDArray[np.intp] | None = None,
) -> tuple[NDArray[np.int8], float, int, bool]:
    """Coordinate descent from ``traj`` (M, blocks): each house in turn gets its best path given the others.

    Returns (trajectories, mean |N|, passes, cut by deadline). Every step is
    exact for its house (``_best_path``), so the cost never rises; it stops
    after a pass that gains less than ``PASS_GAIN`` of the cost, or after ``PASSES_MAX``.
    ``houses`` limits the first pass to those houses (after a perturbation).
    """
    m, t = w.shape[1], base.shape[0]
    bounds, day_start, of_block = _blocks(t, block_min)
    traj = np.array(traj, dtype=np.int8)
    minutes = np.arange(t)
    n = base + w[traj[:, of_block], np.arange(m)[:, None], minutes[None, :]].sum(axis=0)
    cost = float(np.abs(n).sum())
    passes = 0
    cut = False
    first = houses
    while passes < PASSES_MAX:
        passes += 1
        before = cost
        order = rng.permutation(m) if first is None else first
        first = None
        for k in order:
            if deadline is not None and time.perf_counter() > deadline:
                cut = True
                break
            cur = traj[k, of_block]
            costs = _house_block_costs(n, w, int(k), cur, bounds)
            path, _ = _best_path(costs, int(a0[k]), budget, day_start)
            if (path != traj[k]).any():
                new = path[of_block]
                n = n + w[new, k, minutes] - w[cur, k, minutes]
                traj[k] = path
        cost = float(np.abs(n).sum())
        if cut or before - cost <= PASS_GAIN * max(before, 1e-12):
            break
    # Recompute from scratch so accumulated rounding never flatters the result.
    n = base + w[traj[:, of_block], np.arange(m)[:, None], minutes[None, :]].sum(axis=0)
    return traj, float(np.abs(n).mean()), passes, cut


def budget_oracle(
    day: Day,
    per_day: int,
    block_min: int = 15,
    effort: float = 1.0,
    seed: int = 0,
    starts: Iterable[NDArray[np.integer[Any]]] = (),
    deadline_s: float | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[Assignment, float]:
    """The budget-constrained dynamic oracle: (assign (M, T), mean neutral A).

    The best phase per house per ``block_min`` block with hindsight, each house
    changing phase at most ``per_day`` times per calendar day (a change at
    minute 0, from the as-built wiring, counts in the first day). Search:
    coordinate descent -- every house in turn gets the best path of phases
    over the whole run given all the others, exactly, by dynamic programming
    over (phase, changes used today) -- from several starts: the as-built
    wiring, each of ``starts`` (whole-run (M,) or per-minute (M, T)
    assignments, e.g. the static and the dynamic oracle's; an unconstrained
    start is made feasible by the first pass), then ``KICKS_PER_EFFORT x
    effort`` rounds that reset a few houses to a random phase and descend
    again, each kept when better. The result is a local optimum in which no
    single house can do better (a house's own optimum is exact); ``info``
    receives the cost each start reached (their spread is the search's
    precision), the passes and whether the deadline cut it.
    """
    rng = np.random.default_rng(seed)
    m, t = len(day.mov_idx), day.T
    bounds, _, of_block = _blocks(t, block_min)
    nb = len(bounds)
    a0 = day.assign0()
    per_day_blocks = (1440 + block_min - 1) // block_min
    # As many changes a day as blocks is no limit at all (_best_path's fast path).
    budget = 1440 if int(per_day) >= per_day_blocks else max(0, int(per_day))
    base, w = _prepare(day)
    deadline = _deadline(deadline_s)
    cand: list[NDArray[np.int8]] = [np.repeat(a0[:, None], nb, axis=1)]
    for given in starts:
        a = np.asarray(given, dtype=np.int8)
        cand.append(np.repeat(a[:, None], nb, axis=1) if a.ndim == 1 else np.asarray(a[:, bounds], dtype=np.int8))
    found: list[float] = []
    best_traj: NDArray[np.int8] | None = None
    best_c = np.inf
    passes = 0
    cut = False
    if m == 0:
        out = np.empty((0, t), dtype=np.int8)
        c = float(np.abs(base).mean())
        if info is not None:
            info.update({"starts": [c], "kicks": 0, "passes": 0, "cut_by_deadline": False, "per_day": per_day})
        return out, c
    for traj in cand:
        traj, c, p, cut_here = _descend(base, w, a0, traj, budget, block_min, rng, deadline)
        passes += p
        cut = cut or cut_here
        found.append(c)
        if c < best_c:
            best_traj, best_c = traj, c
    assert best_traj is not None
    kicks = int(round(KICKS_PER_EFFORT * effort))
    k_pert = max(2, min(8, m // 10))
    done = 0
    for _ in range(0 if cut else kicks):
        traj = best_traj.copy()
        pick = rng.choice(m, size=min(k_pert, m), replace=False)
        traj[pick] = rng.integers(0, 3, size=(len(pick), 1))
        traj, c, p, cut_here = _descend(base, w, a0, traj, budget, block_min, rng, deadline, houses=pick)
        passes += p
        done += 1
        if c < best_c - 1e-9:
            best_traj, best_c = traj, c
        if cut_here:
            cut = True
            break
    if info is not None:
        info.update(
            {
                "per_day": per_day,
                "block_min": block_min,
                "starts": found,
                "kicks": done,
                "passes": passes,
                "best": best_c,
                "cut_by_deadline": cut,
            }
        )
    return best_traj[:, of_block], best_c


def day_ahead_static(
    day: Day, effort: float = 1.0, seed: int = 0, deadline_s: float | None = None, info: dict[str, Any] | None = None
) -> tuple[Assignment | None, float | None]:
    """Re-phasing by hand from measurements: (assign (M, T) from the second day on, its mean neutral A).

    For each day d >= 1 of a several-day run, the best single assignment
    fitted (as ``static_oracle`` fits one) on every earlier day -- up to the
    week the feeder holds -- applied to day d; the first day keeps the
    as-built wiring (nothing measured yet). The mean neutral is over days
    1.. only. A feeder of one day has no day-ahead assignment: (None, None).
    """
    m, t = len(day.mov_idx), day.T
    if t <= 1440:
        return None, None
    rng = np.random.default_rng(seed)
    out = np.empty((m, t), dtype=np.int8)
    out[:, :1440] = day.assign0()[:, None]
    deadline = _deadline(deadline_s)
    total = 0.0
    for s in range(1440, t, 1440):
        e = min(t, s + 1440)
        base, w = _prepare(day, slice(0, s))
        a, _ = _static_search(base, w, [day.assign0(), _construct(base, w)], rng, effort, deadline=deadline, info=info)
        out[:, s:e] = a[:, None]
        base, w = _prepare(day, slice(s, e))
        total += _cost(base, w, a)[0] * (e - s)
    return out, total / (t - 1440)
