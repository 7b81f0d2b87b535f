"""Where to put the nodes: ``phasekit plan equip FEEDER_DIR --shares 0.1,0.2,0.3,0.5,1.0``.

A utility equips houses one by one, each at a cost. This ranks the houses a
node with a relay would help most, and measures what equipping the best share
buys: the feeder is replayed with only the equipped houses having a node
(the others seen only through the transformer meter, as houses without a
node are), phasekit at its default limits, against equipping a random
share of the same size (several seeded draws).

Ranking (``rank``), from the houses' own load, with the reasons printed: a
house's leverage on the neutral is its current at the times it is moved
and after, so the score is its r.m.s. current over the run (a big steady
load and a big swinging one both count; a small one cannot move much),
times how much heavier its as-built phase is than the mean phase (moving a
house off the heaviest phase helps first). Three-phase houses cannot be
moved and are never ranked.

The one thing to know: the ranking uses the feeder's loads (what a utility
has from its smart meters or a survey week); the reductions are measured on
the same run, so apply it to a week of measurements before equipping and
judge it on the weeks after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from phasecore import balancer as bal
from phasekit.balance import replay as sim
from phasekit.feeder.format import Feeder

__all__ = ("rank", "equip", "run", "format_table", "plot", "SHARES")

SHARES = (0.1, 0.2, 0.3, 0.5, 1.0)


def rank(feeder: Feeder) -> list[dict[str, Any]]:
    """The single-phase houses, best first: dicts of house, index, score, rms_a, p95_a, mean_a, phase, why."""
    ip, iq = feeder.components()
    mag = np.hypot(ip, iq)
    phase_mean = np.array([mag[feeder.phase == p].sum(axis=0).mean() for p in range(3)])
    overall = max(phase_mean.mean(), 1e-9)
    out: list[dict[str, Any]] = []
    for h in range(feeder.n_houses):
        if feeder.phase[h] == 3:
            continue
        rms = float(np.sqrt((mag[h] ** 2).mean()))
        heavy = float(phase_mean[feeder.phase[h]] / overall)
        score = rms * heavy
        p95 = float(np.percentile(mag[h], 95))
        mean = float(mag[h].mean())
        why = "r.m.s. %.1f A (mean %.1f, p95 %.1f A) on phase %s, %.2fx the mean phase current" % (
            rms,
            mean,
            p95,
            "ABC"[feeder.phase[h]],
            heavy,
        )
        out.append(
            {
                "house": feeder.houses[h],
                "index": h,
                "score": score,
                "rms_a": rms,
                "mean_a": mean,
                "p95_a": p95,
                "phase": "ABC"[feeder.phase[h]],
                "why": why,
            }
        )
    out.sort(key=lambda r: (-float(r["score"]), int(r["index"])))
    return out


def equip(feeder: Feeder, houses: Sequence[int]) -> Feeder:
    """A copy of ``feeder`` where only ``houses`` (indices) have a node with a relay; the rest have none."""
    f = copy.copy(feeder)
    chosen = np.zeros(feeder.n_houses, dtype=bool)
    chosen[list(houses)] = True
    f.metered = chosen & (feeder.phase != 3)
    f.switchable = f.metered.copy()
    f.switch = feeder.switch.copy()
    return f


def _reduction(feeder: Feeder, config: bal.Config) -> tuple[float, float, dict[str, float]]:
    day = sim.Day(feeder)
    base = float(sim.run_as_built(day).neutral.mean())
    res = sim.run_phasekit(day, config)
    s = res.summary()
    return base, base - s["neutral_mean_a"], s


def run(
    feeder: Feeder,
    shares: Sequence[float] = SHARES,
    draws: int = 5,
    seed: int = 1,
    config: bal.Config | None = None,
    progress: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """The ranking and, per share, the reduction of the best-ranked share against random ones."""
    say = progress or (lambda msg: None)
    cfg = config or bal.Config()
    ranked = rank(feeder)
    cand = [r["index"] for r in ranked]
    rng = np.random.default_rng([seed, 5])
    rows = []
    for share in shares:
        n = max(1, int(round(share * len(cand))))
        say("equip %.0f %%: the %d best-ranked houses" % (100 * share, n))
        base, best, s = _reduction(equip(feeder, cand[:n]), cfg)
        rand = []
        for d in range(draws if n < len(cand) else 1):
            pick = [int(x) for x in rng.permutation(cand)[:n]]
            say("equip %.0f %%: random draw %d" % (100 * share, d + 1))
            rand.append(_reduction(equip(feeder, pick), cfg)[1])
        mean_rand = float(np.mean(rand))
        rows.append(
            {
                "share": share,
                "houses": n,
                "as_built_a": base,
                "ranked_reduction_a": best,
                "random_reduction_a": rand,
                "random_reduction_mean_a": mean_rand,
                "ranked_vs_random": best / mean_rand if mean_rand > 1e-9 else float("inf"),
                "switches_per_equipped_house_day_median": s["switches_per_house_day_median"],
            }
        )
    return {"feeder": feeder.name, "candidates": len(cand), "ranking": ranked, "shares": rows, "draws": draws}


def format_table(plan: dict[str, Any], top: int = 15) -> str:
    """The ranking's head with reasons, then one row per share."""
    lines = ["%s: %d houses can be equipped; best first:" % (plan["feeder"], plan["candidates"])]
    for k, r in enumerate(plan["ranking"][:top]):
        lines.append("  %3d. %-16s %s" % (k + 1, r["house"], r["why"]))
    if len(plan["ranking"]) > top:
        lines.append("  ... (%d more; --json lists all)" % (len(plan["ranking"]) - top))
    lines.append("")
    lines.append("%6s %7s %14s %26s %8s" % ("share", "houses", "ranked: red. A", "random: mean (min-max) A", "ratio"))
    for r in plan["shares"]:
        rr = r["random_reduction_a"]
        lines.append(
            "%5.0f%% %7d %14.2f %12.2f (%.2f-%.2f) %8.2f"
            % (
                100 * r["share"],
                r["houses"],
                r["ranked_reduction_a"],
                r["random_reduction_mean_a"],
                min(rr),
                max(rr),
                r["ranked_vs_random"],
            )
        )
    lines.append("(reduction of the mean neutral current against as built, phasekit at its default limits)")
    return "\n".join(lines)


def plot(plan: dict[str, Any], path: str) -> None:
    """The equipping curve: reduction against the share of houses equipped, ranked and random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [100 * r["share"] for r in plan["shares"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [r["ranked_reduction_a"] for r in plan["shares"]], "o-", label="planner-ranked houses")
    ax.errorbar(
        xs,
        [r["random_reduction_mean_a"] for r in plan["shares"]],
        yerr=[
            [r["random_reduction_mean_a"] - min(r["random_reduction_a"]) for r in plan["shares"]],
            [max(r["random_reduction_a"]) - r["random_reduction_mean_a"] for r in plan["shares"]],
        ],
        fmt="s--",
        capsize=3,
        label="random houses (mean, min-max of %d draws)" % plan["draws"],
    )
    ax.set_xlabel("houses equipped, %")
    ax.set_ylabel("reduction of the mean neutral current, A")
    ax.set_title("equipping curve: %s" % plan["feeder"])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
