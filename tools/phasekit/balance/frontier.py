"""The switching-versus-unbalance frontier: ``phasekit bench balance DIR --budgets 1,2,4,8,24,96``.

Per daily switching budget B (moves per house in any 24 h) the feeder is
replayed with phasekit held to B (``budget_config``), with the greedy
baseline held to B, and a hindsight reference held to B: the budget-
constrained dynamic oracle (``oracle.budget_oracle``: the best phase per
house per 15-minute block, each house changing phase at most B times a
calendar day). Each reports the reduction of the mean neutral current
against as built, the minutes above 10 % and 20 % CUF, switchings per house
per day (median, p95, max, mean) and the supply interruption per house per
day for the switch kind (``replay.GAP_S``). The plot is the frontier:
reduction against switchings per house per day (the mean), one curve each.

The one thing to know: ``budget_config`` is the only place the sweep changes
the balancer's settings, and it was fixed on tuning feeders (generated seeds
1-3, resampled streets seeds 1-2) before any held-out run: up to 4 moves a
day the switch kind's defaults with the budget set; from 8 a day the
balancer acts on fresher estimates with lower gates (docs/balancer.md,
"The frontier").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from phasecore import balancer as bal
from phasekit.balance import oracle
from phasekit.balance import replay as sim

__all__ = ("budget_config", "run", "dominates", "format_table", "plot", "BUDGETS")

BUDGETS = (1, 2, 4, 8, 24, 96)
# Settings from 8 moves a day on: estimates of the next minutes, not the next hour, and low gates.
PLENTIFUL = {
    "tau_s": 300,
    "trend_weight": 1.0,
    "slow_weight": 0.3,
    "persist_rounds": 1,
    "min_gain_a": 1.0,
    "min_move_gain_a": 1.0,
    "budget_gain_a": 0.2,
    "multi_share": 1.0,
}
MECH_DWELL_FLOOR_S = 900  # the node relay's default dwell (compressors' anti-short-cycle, docs/relay-safety.md)
SS_DWELL_FLOOR_S = 120  # the solid-state default dwell


def budget_config(per_day: int, kind: int = bal.MECHANICAL, base: bal.Config | None = None) -> bal.Config:
    """The balancer's settings at a budget of ``per_day`` moves per house in any 24 h, for a switch kind.

    Up to 4 a day: ``base`` (default: the defaults) with the budget set. From
    8 a day: ``PLENTIFUL`` on top, and the dwell at most half the mean time
    between moves the budget allows (never below the kind's floor); a
    solid-state node from 24 a day follows its latest reading
    (``ss_follow_reading``), below that it is planned like a mechanical one.
    """
    if not isinstance(per_day, int) or not 1 <= per_day <= bal.config.MAX_MOVES_PER_DAY:
        raise ValueError("budget must be 1..%d moves a day, got %r" % (bal.config.MAX_MOVES_PER_DAY, per_day))
    d = (base or bal.Config()).as_dict()
    d["moves_per_day"] = per_day
    d["ss_moves_per_day"] = per_day
    if per_day >= 8:
        d.update(PLENTIFUL)
        d["min_dwell_s"] = max(MECH_DWELL_FLOOR_S, min(d["min_dwell_s"], 86400 // (2 * per_day)))
        d["ss_min_dwell_s"] = max(SS_DWELL_FLOOR_S, min(3600, 86400 // (2 * per_day)))
    else:
        d["ss_min_dwell_s"] = d["min_dwell_s"]
    if per_day < 24 or kind == bal.MECHANICAL:
        # A solid-state node with a scarce budget is planned, and gated, as a mechanical one.
        d["ss_follow_reading"] = 0
        d["ss_min_move_gain_a"] = d["min_move_gain_a"]
        d["ss_budget_gain_a"] = d["budget_gain_a"]
        d["ss_min_gain_a"] = d["min_gain_a"]
        d["ss_persist_rounds"] = d["persist_rounds"]
    return bal.Config(**d)


def _row(res: sim.Result, as_built: float, kinds: np.ndarray, minutes: slice = slice(None)) -> dict[str, Any]:
    s = res.summary(minutes, kinds=kinds)
    s["reduction_a"] = as_built - s["neutral_mean_a"]
    return s


def run(
    day: sim.Day,
    budgets: Sequence[int] = BUDGETS,
    kind: int = bal.MECHANICAL,
    base: bal.Config | None = None,
    effort: float = 1.0,
    starts: Sequence[np.ndarray] = (),
    deadline_s: float | None = None,
    progress: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """The sweep: {"kind", "budgets": [{"budget", "phasekit", "greedy", "reference", "limit_violations", ...}]}.

    Every house that can move gets switch kind ``kind``. ``starts`` are extra
    starts for the reference's search (e.g. the static and dynamic oracles'
    assignments); each budget's reference also starts from the previous one's.
    """
    say = progress or (lambda msg: None)
    kinds = np.full(day.H, kind, dtype=np.int8)
    as_built = float(sim.run_as_built(day).neutral.mean())
    rows: list[dict[str, Any]] = []
    prev: np.ndarray | None = None
    for b in budgets:
        cfg = budget_config(b, kind, base)
        t0 = time.perf_counter()
        say("frontier: budget %d a day: phasekit" % b)
        pk = sim.run_phasekit(day, cfg, kinds=kinds)
        say("frontier: budget %d a day: greedy" % b)
        gr = sim.run_greedy(day, per_day=b)
        say("frontier: budget %d a day: hindsight reference (budget-constrained dynamic oracle)" % b)
        info: dict[str, Any] = {}
        st = list(starts) + ([prev] if prev is not None else [])
        a_ref, _ = oracle.budget_oracle(day, b, effort=effort, starts=st, deadline_s=deadline_s, info=info)
        prev = a_ref
        ref = sim.Result("reference", day, a_ref, _moves_of(day, a_ref))
        rows.append(
            {
                "budget": b,
                "config": cfg.as_dict(),
                "phasekit": _row(pk, as_built, kinds),
                "greedy": _row(gr, as_built, kinds),
                "reference": _row(ref, as_built, kinds),
                "reference_search": info,
                "limit_violations": sim.check_limits(pk, cfg, kinds=kinds),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    out = {"kind": bal.SWITCH_KINDS[kind], "as_built_neutral_mean_a": as_built, "budgets": rows}
    out["dominates_greedy"] = dominates(rows)
    return out


def _moves_of(day: sim.Day, assign: np.ndarray) -> list[sim.Move]:
    """A per-minute assignment's switchings as moves (minute, house, from, to)."""
    moves: list[sim.Move] = []
    prev = day.assign0()
    for t in np.nonzero((np.diff(np.concatenate([prev[:, None], assign], axis=1), axis=1) != 0).any(axis=0))[0]:
        col = assign[:, t]
        for k in np.nonzero(col != prev)[0]:
            moves.append((int(t), int(day.mov_idx[k]), int(prev[k]), int(col[k])))
        prev = col
    return moves


def dominates(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget: is phasekit's frontier at or above greedy's point?

    ``strict``: at least greedy's reduction with at most greedy's switchings
    (mean per house per day). ``on_curve``: phasekit's frontier -- the
    points of every budget and (0, 0), the best reduction reached at or
    below each switching level, interpolated linearly -- at greedy's
    switchings is at least greedy's reduction. ``met`` is either.
    """
    pts = sorted(
        [(0.0, 0.0)] + [(r["phasekit"]["switches_per_house_day_mean"], r["phasekit"]["reduction_a"]) for r in rows]
    )
    # The frontier: best reduction at or below each switching level.
    xs: list[float] = []
    ys: list[float] = []
    best = -np.inf
    for x, y in pts:
        best = max(best, y)
        xs.append(x)
        ys.append(best)
    out = []
    for r in rows:
        pk, gr = r["phasekit"], r["greedy"]
        strict = pk["reduction_a"] >= gr["reduction_a"] - 1e-9 and (
            pk["switches_per_house_day_mean"] <= gr["switches_per_house_day_mean"] + 1e-9
        )
        at = float(np.interp(gr["switches_per_house_day_mean"], xs, ys))
        out.append(
            {
                "budget": r["budget"],
                "strict": bool(strict),
                "frontier_at_greedy_switchings_a": at,
                "on_curve": bool(at >= gr["reduction_a"] - 1e-9),
                "met": bool(strict or at >= gr["reduction_a"] - 1e-9),
            }
        )
    return out


def format_table(sweep: dict[str, Any]) -> str:
    """The sweep as text: one row per budget and strategy."""
    lines = [
        "frontier (%s switches): as built %.2f A mean neutral" % (sweep["kind"], sweep["as_built_neutral_mean_a"]),
        "%6s %-10s %9s %7s %7s %22s %12s"
        % ("budget", "strategy", "reduct. A", ">10%", ">20%", "sw/house/day med p95 max mean", "interrupt s"),
    ]
    for r, d in zip(sweep["budgets"], sweep["dominates_greedy"]):
        for name in ("phasekit", "greedy", "reference"):
            s = r[name]
            lines.append(
                "%6d %-10s %9.2f %6.1f%% %6.1f%% %6.1f %5.1f %5.1f %5.2f %12.3f"
                % (
                    r["budget"],
                    name,
                    s["reduction_a"],
                    100 * s["share_above_10"],
                    100 * s["share_above_20"],
                    s["switches_per_house_day_median"],
                    s["switches_per_house_day_p95"],
                    s["switches_per_house_day_max"],
                    s["switches_per_house_day_mean"],
                    s["interruption_s_per_house_day_mean"],
                )
            )
        info = r["reference_search"]
        lines.append(
            "       reference search: starts reached %s A, best %.3f A, %d kicks, %d passes%s; "
            "phasekit vs greedy: %s; limits %s"
            % (
                ", ".join("%.3f" % c for c in info["starts"]),
                info["best"],
                info["kicks"],
                info["passes"],
                " (CUT BY DEADLINE)" if info["cut_by_deadline"] else "",
                "dominates" if d["strict"] else ("on or above its frontier" if d["on_curve"] else "BELOW"),
                "kept" if not r["limit_violations"] else "%d BROKEN" % len(r["limit_violations"]),
            )
        )
    return "\n".join(lines)


def plot(sweep: dict[str, Any], path: str, title: str = "") -> None:
    """The frontier: reduction of the mean neutral current against switchings per house per day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, style in (("phasekit", "o-"), ("greedy", "s--"), ("reference", "^:")):
        xs = [r[name]["switches_per_house_day_mean"] for r in sweep["budgets"]]
        ys = [r[name]["reduction_a"] for r in sweep["budgets"]]
        ax.plot(xs, ys, style, label=name if name != "reference" else "hindsight reference (same budget)")
        for r, x, y in zip(sweep["budgets"], xs, ys):
            ax.annotate(str(r["budget"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("switchings per house per day (mean; labels: daily budget)")
    ax.set_ylabel("reduction of the mean neutral current, A")
    ax.set_title(title or "switching-versus-unbalance frontier (%s switches)" % sweep["kind"])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
