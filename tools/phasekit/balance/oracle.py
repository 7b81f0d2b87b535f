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

__all__ = ("static_oracle", "dynamic_oracle", "crossfit_static", "brute_force", "local_search", "anneal")


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
