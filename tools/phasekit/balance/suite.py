"""Balancing benchmark over a suite of feeders (``phasekit bench balance-suite``).

One feeder-day says little (the IEEE day alone swings by 0.2 of the share
between neighbouring settings), so this runs ``phasekit bench balance`` on
the suite docs/balancer.md reports, each feeder-day in its own process:

* ``ieee``      the IEEE European LV test feeder (real; ``--ieee DIR``, or fetched
                once into the cache like ``phasekit demo``);
* ``streets``   streets resampled from its households (real load shapes,
                ``phasekit feeder resample``) at 55, 100 and 250 houses, seeds 1-4;
* ``generated`` held-out generated feeders (``phasekit feeder generate``) at
                55, 100 and 250 houses, seeds 7-9 and 11-13, never used to
                choose the balancer's defaults.

Each feeder is written to a temporary folder and read back, exactly as the
``feeder`` verbs and ``bench balance`` would; the decision-time part is left
out (``bench balance`` measures it). Prints a row per feeder-day and a summary
per group: the share of the static oracle's reduction (target 0.90), the
out-of-sample static oracle's share, the fall of the minutes above 20 % CUF
(target 80 %) beside the static oracle's own, switchings, limits kept.
``--quick`` takes one seed per size (7 feeder-days instead of 31);
``--foresight`` adds the share the balancer reaches planning on the true
future (``bench balance --foresight``, a diagnostic) per group. Without
network and without a cached IEEE feeder only the generated group runs, and
the output says so. Exit status 0, or 1 when a limit was broken.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from phasekit.feeder.format import Feeder

from phasekit.balance import benchmark as bench_balance
from phasekit.errors import UsageError

SIZES = (55, 100, 250)
STREET_SEEDS = (1, 2, 3, 4)
HELD_OUT_SEEDS = (7, 8, 9, 11, 12, 13)

# How to build a feeder-day: read a folder; resample a folder's households (houses, seed); generate (houses, seed).
Recipe = tuple[Literal["load"], str] | tuple[Literal["resample"], str, int, int] | tuple[Literal["generate"], int, int]
Item = tuple[str, str, Recipe]  # (group, name, recipe)
Row = dict[str, Any]  # a feeder-day's figures, JSON-ready (``--json``)


def suite(ieee_dir: str | os.PathLike[str] | None, quick: bool = False, sizes: Sequence[int] = SIZES) -> list[Item]:
    """[(group, name, how to build it)]: the feeder-days to run, ``ieee_dir`` None leaves out the real ones."""
    street_seeds = STREET_SEEDS[:1] if quick else STREET_SEEDS
    held_out = HELD_OUT_SEEDS[:1] if quick else HELD_OUT_SEEDS
    out: list[Item] = []
    if ieee_dir is not None:
        out.append(("ieee", Path(ieee_dir).name, ("load", str(ieee_dir))))
        out += [("streets", "r%d-%d" % (n, s), ("resample", str(ieee_dir), n, s)) for n in sizes for s in street_seeds]
    out += [("generated", "g%d-%d" % (n, s), ("generate", n, s)) for n in sizes for s in held_out]
    return out


def _feeder(recipe: Recipe, tmp: str) -> Feeder:
    from phasekit.feeder import format as ff
    from phasekit.feeder.generate import generate
    from phasekit.feeder.resample import resample

    if recipe[0] == "load":
        return ff.load(recipe[1])
    if recipe[0] == "resample":
        f = resample(ff.load(recipe[1]), recipe[2], seed=recipe[3])
        ff.write(f, tmp, meta={"seed": recipe[3]})
    else:
        f = generate(recipe[1], seed=recipe[2])
        ff.write(f, tmp, meta={"seed": recipe[2], "generator": f.source})
    return ff.load(tmp)


def run_one(item: Item, settings: Sequence[str], effort: float, foresight: tuple[int, int | None] | None = None) -> Row:
    """Run the benchmark on one feeder-day of the suite: a summary row (a dict)."""
    group, name, recipe = item
    config = bench_balance.parse_settings(settings)
    with tempfile.TemporaryDirectory(prefix="phasekit-suite-") as tmp:
        feeder = _feeder(recipe, tmp)
        report, _ = bench_balance.benchmark(feeder, config, oracle_effort=effort, timing=False, foresight=foresight)
    t = report["meta"]["targets"]
    pk = report["phasekit"]
    row: Row = {
        "group": group,
        "name": name,
        "houses": feeder.n_houses,
        "neutral_a": {
            k: report[k]["neutral_mean_a"] for k in ("as_built", "phasekit", "static_oracle", "dynamic_oracle")
        },
        "share_static": t["share_of_static_oracle_reduction"]["value"],
        "share_dynamic": t["share_of_dynamic_oracle_reduction"]["value"],
        "share_crossfit": t["crossfit_static_share_of_static_reduction"]["value"],
        "fall_20": t["share_above_20_fall"]["value"],
        "fall_20_static": t["share_above_20_fall_static_oracle"]["value"],
        "switches": [pk["switches_per_house_day_median"], pk["switches_per_house_day_max"], pk["switches_total"]],
        "limit_violations": len(report["meta"]["limit_violations"]),
        "oracle_cut": any(
            report["meta"]["oracle_search"][k].get("cut_by_deadline") for k in ("static", "dynamic", "static_crossfit")
        ),
        "seconds": report["meta"]["elapsed_s"],
    }
    if foresight:
        ahead = report["meta"]["foresight"]
        row["share_foresight"] = t["foresight_share_of_static_oracle_reduction"]["value"]
        row["foresight_min"] = [ahead["fast_min"], ahead["slow_min"]]
        row["switches_foresight"] = [
            ahead["switches_per_house_day_median"],
            ahead["switches_per_house_day_max"],
            ahead["switches_total"],
        ]
        row["fall_20_foresight"] = t["share_above_20_fall_foresight"]["value"]
        row["limit_violations"] += len(ahead["limit_violations"])
    return row


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per group and size: mean, min and max share of the static oracle's reduction, and the rest."""
    out: list[dict[str, Any]] = []
    for group in ("ieee", "streets", "generated"):
        for n in sorted(set(r["houses"] for r in rows if r["group"] == group)):
            g = [r for r in rows if r["group"] == group and r["houses"] == n]
            sh = [r["share_static"] for r in g]
            out.append(
                {
                    "group": group,
                    "houses": n,
                    "feeder_days": len(g),
                    "share_static_mean": sum(sh) / len(sh),
                    "share_static_min": min(sh),
                    "share_static_max": max(sh),
                    "at_or_above_090": sum(s >= 0.90 for s in sh),
                    "phasekit_at_least_crossfit": sum(r["share_static"] >= r["share_crossfit"] for r in g),
                    "fall_20": [min(r["fall_20"] for r in g), max(r["fall_20"] for r in g)],
                    "fall_20_static": [min(r["fall_20_static"] for r in g), max(r["fall_20_static"] for r in g)],
                    "switches_median_max": max(r["switches"][0] for r in g),
                    "switches_max": max(r["switches"][1] for r in g),
                    "limit_violations": sum(r["limit_violations"] for r in g),
                }
            )
            if all("share_foresight" in r for r in g):
                ahead = [r["share_foresight"] for r in g]
                out[-1]["share_foresight_mean"] = sum(ahead) / len(ahead)
                out[-1]["share_foresight_min"] = min(ahead)
                out[-1]["share_foresight_max"] = max(ahead)
                out[-1]["fall_20_foresight"] = [
                    min(r["fall_20_foresight"] for r in g),
                    max(r["fall_20_foresight"] for r in g),
                ]
    return out


def format_report(rows: Sequence[Row], summary: Sequence[dict[str, Any]], notes: Sequence[str]) -> str:
    """The rows, the per-group summary and the notes as text."""
    lines = [
        "%-10s %-10s %6s %8s %8s %8s | %6s %6s %6s | %13s | %9s %s"
        % (
            "group",
            "feeder",
            "houses",
            "built A",
            "pk A",
            "static A",
            "share",
            "dyn",
            "oos",
            ">20% fall pk/st",
            "sw med/max",
            "",
        )
    ]
    for r in rows:
        a = r["neutral_a"]
        lines.append(
            "%-10s %-10s %6d %8.1f %8.1f %8.1f | %6.2f %6.2f %6.2f | %5.0f%% /%4.0f%% | %4g / %-3g %s"
            % (
                r["group"],
                r["name"],
                r["houses"],
                a["as_built"],
                a["phasekit"],
                a["static_oracle"],
                r["share_static"],
                r["share_dynamic"],
                r["share_crossfit"],
                100 * r["fall_20"],
                100 * r["fall_20_static"],
                r["switches"][0],
                r["switches"][1],
                ("LIMITS BROKEN %d" % r["limit_violations"] if r["limit_violations"] else "")
                + (" oracle cut by time cap" if r["oracle_cut"] else ""),
            )
        )
    lines.append("")
    lines.append("share = phasekit's share of the static oracle's reduction of the mean neutral current (target 0.90);")
    lines.append("dyn = of the dynamic oracle's; oos = the static oracle out of sample (alternate half-hours)")
    lines.append("")
    lines.append(
        "%-10s %6s %5s | %-22s %8s %9s | %-15s %-15s | %s"
        % (
            "group",
            "houses",
            "days",
            "share mean (min-max)",
            ">= 0.90",
            "pk >= oos",
            ">20% fall pk",
            "static",
            "limits",
        )
    )
    for s in summary:
        lines.append(
            "%-10s %6d %5d | %.2f (%.2f-%.2f)       %5d/%-2d %6d/%-2d | %3.0f-%3.0f %%      %3.0f-%3.0f %%      | %s"
            % (
                s["group"],
                s["houses"],
                s["feeder_days"],
                s["share_static_mean"],
                s["share_static_min"],
                s["share_static_max"],
                s["at_or_above_090"],
                s["feeder_days"],
                s["phasekit_at_least_crossfit"],
                s["feeder_days"],
                100 * s["fall_20"][0],
                100 * s["fall_20"][1],
                100 * s["fall_20_static"][0],
                100 * s["fall_20_static"][1],
                "kept (switchings median <= %g, max %g)" % (s["switches_median_max"], s["switches_max"])
                if not s["limit_violations"]
                else "%d BROKEN" % s["limit_violations"],
            )
        )
    all_sh = [r["share_static"] for r in rows]
    lines.append("")
    lines.append(
        "all %d feeder-days: share mean %.2f, min %.2f, %d at or above 0.90"
        % (len(rows), sum(all_sh) / len(all_sh), min(all_sh), sum(s >= 0.90 for s in all_sh))
    )
    ahead = [s for s in summary if "share_foresight_mean" in s]
    if ahead:
        lines.append("")
        fast, slow = rows[0]["foresight_min"]
        lines.append(
            "diagnostic, the balancer planning on the true future (--foresight %s): share of the static "
            "oracle's reduction, fall of the minutes above 20 %% CUF"
            % (fast if slow is None else "%d,%d" % (fast, slow))
        )
        for s in ahead:
            lines.append(
                "%-10s %6d %5d | %.2f (%.2f-%.2f)       | %3.0f-%3.0f %%"
                % (
                    s["group"],
                    s["houses"],
                    s["feeder_days"],
                    s["share_foresight_mean"],
                    s["share_foresight_min"],
                    s["share_foresight_max"],
                    100 * s["fall_20_foresight"][0],
                    100 * s["fall_20_foresight"][1],
                )
            )
    lines += notes
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench balance-suite``."""
    p.add_argument(
        "--ieee",
        metavar="DIR",
        help="a converted IEEE European LV feeder folder (default: the cached one, fetched once like phasekit demo)",
    )
    p.add_argument("--cache", metavar="DIR", help="cache folder for the fetched IEEE feeder")
    p.add_argument("--quick", action="store_true", help="one seed per size: 7 feeder-days instead of 31")
    p.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        metavar="N,N",
        help="street sizes of the resampled and generated groups (default %(default)s)",
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="feeder-days run at once (default: CPUs)")
    p.add_argument("--oracle-effort", type=float, default=1.0, metavar="X", help="as for bench balance")
    p.add_argument(
        "--set", metavar="KEY=VALUE", action="append", default=[], help="a balancer setting, as for bench balance"
    )
    p.add_argument(
        "--foresight",
        metavar="FAST[,SLOW]",
        type=bench_balance.parse_foresight,
        help="also run the foresight diagnostic, as for bench balance",
    )
    p.add_argument("--json", action="store_true", help="print the rows and the summary as one JSON object")


def main(args: argparse.Namespace) -> int:
    """Run the suite; returns the exit status. A bad argument is a ``UsageError`` (the CLI's exit 2)."""

    def say(msg: str) -> None:
        print("[balance suite %6.1fs] %s" % (time.perf_counter() - t0, msg), file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    bench_balance.parse_settings(args.set)
    bench_balance.check_oracle_effort(args.oracle_effort)
    if args.jobs < 1:
        raise UsageError("--jobs must be positive")
    try:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    except ValueError:
        raise UsageError("--sizes: expected numbers separated by commas, got %r" % args.sizes) from None
    if not all(1 <= n <= 5000 for n in sizes):
        raise UsageError("--sizes: every size must be 1..5000 houses")
    notes: list[str] = []
    ieee_dir = args.ieee
    if ieee_dir is not None:
        from phasekit.feeder import format as ff

        try:
            ff.load(ieee_dir)
        except ff.FeederFormatError as e:
            raise UsageError("--ieee: %s" % e) from None
    else:
        from phasekit.feeder import ieee_eulv
        from phasekit.feeder.format import FeederFormatError

        try:
            ieee_dir = ieee_eulv.cached(args.cache, progress=say)
        except FeederFormatError as e:
            notes.append("IEEE feeder and real-shape streets left out: %s" % e)
            say(notes[-1])
    items = suite(ieee_dir, quick=args.quick, sizes=sizes)
    say("%d feeder-days, %d at a time" % (len(items), args.jobs))
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, item, args.set, args.oracle_effort, args.foresight) for item in items]
        for _item, fut in zip(items, futures):
            rows.append(fut.result())
            r = rows[-1]
            say(
                "%s %s: share %.2f of the static oracle's reduction (%.0f s)"
                % (r["group"], r["name"], r["share_static"], r["seconds"])
            )
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary, "notes": notes}, indent=2, sort_keys=True))
    else:
        print(format_report(rows, summary, notes))
    return 1 if any(r["limit_violations"] for r in rows) else 0
