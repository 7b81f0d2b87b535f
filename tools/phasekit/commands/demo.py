"""``phasekit demo``: replay a feeder day with the phasekit balancer in the loop (the main job).

With no feeder given it replays a real one: the IEEE European LV test feeder
(55 houses, a day of 1-minute load shapes), fetched once from PyPI with its
hash checked (``phasekit feeder fetch-ieee-eulv``) into the cache folder
(``--cache``: $PHASEKIT_CACHE, else $XDG_CACHE_HOME/phasekit, else
~/.cache/phasekit) and read from there afterwards. Offline, or with
``--houses``/``--seed``, it generates a street instead (100 houses by default,
with rooftop solar, EVs, a few three-phase houses and houses without a node).
It replays the day minute by minute with the balancer deciding every minute
from the past only, and prints the comparison against as built, a greedy
controller and the offline oracles, with the balancer's decision time on
CPython and MicroPython. It takes well under two minutes; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from phasekit.commands import Subparsers

EPILOG = """examples:
  phasekit demo                              the IEEE European LV feeder (real, fetched once)
  phasekit demo --houses 250 --seed 3        a generated 250-house street
  phasekit demo /path/to/feeder --plot day.png
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        help="replay a feeder day with the balancer in the loop (the main job)",
        description=__doc__.split("\n\n")[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "feeder",
        nargs="?",
        metavar="FEEDER_DIR",
        help="a feeder folder (docs/feeder-format.md); default: the IEEE European LV feeder",
    )
    p.add_argument("--houses", type=int, help="generate a feeder of this many houses (default 100)")
    p.add_argument("--seed", type=int, help="generate a feeder with this seed (default 1)")
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="where the fetched IEEE feeder is kept (default: "
        "$PHASEKIT_CACHE, else $XDG_CACHE_HOME/phasekit, else ~/.cache/phasekit)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="also draw the day")
    p.add_argument(
        "--oracle-effort",
        type=float,
        default=1.0,
        metavar="X",
        help="scale of the oracles' fixed search work (default 1; lower is quicker and rougher)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from phasecore import balancer as bal
    from phasekit.balance import benchmark as bench_balance
    from phasekit.errors import UsageError
    from phasekit.feeder import format as ff
    from phasekit.feeder import ieee_eulv
    from phasekit.feeder.generate import generate

    bench_balance.check_oracle_effort(args.oracle_effort)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print("[demo %5.1fs] %s" % (time.perf_counter() - t0, msg), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="phasekit-demo-") as tmp:
        folder = args.feeder
        if folder is None and args.houses is None and args.seed is None:
            try:
                folder = ieee_eulv.cached(args.cache, progress=say)
                say("the IEEE European LV feeder, from %s" % folder)
            except ff.FeederFormatError as e:
                say("could not fetch it: %s" % e)
                say("replaying a generated street instead")
        if folder is None:
            houses = 100 if args.houses is None else args.houses
            seed = 1 if args.seed is None else args.seed
            say("generating a %d-house feeder day (seed %d) into %s" % (houses, seed, tmp))
            try:
                f = generate(houses, seed=seed)
            except ValueError as e:
                raise UsageError(str(e)) from None
            ff.write(f, tmp, meta={"seed": seed, "generator": f.source})
            folder = tmp
        try:
            feeder = ff.load(folder)
        except ff.FeederFormatError as e:
            raise UsageError(str(e)) from None
        say(feeder.summary())
        report, results = bench_balance.benchmark(feeder, bal.Config(), oracle_effort=args.oracle_effort, progress=say)
    if args.plot:
        say("plotting to %s" % args.plot)
        bench_balance.plot(results, args.plot)
    print(bench_balance.format_table(report))
    pk, ab = report["phasekit"], report["as_built"]
    st = report["static_oracle"]
    print("")
    print(
        "phasekit cut the mean neutral current from %.1f A to %.1f A (static oracle with hindsight: %.1f A)"
        % (ab["neutral_mean_a"], pk["neutral_mean_a"], st["neutral_mean_a"])
    )
    print(
        "with %d switchings in the day (median %.0f, max %.0f per house), deciding every minute from the "
        "past only." % (pk["switches_total"], pk["switches_per_house_day_median"], pk["switches_per_house_day_max"])
    )
    tg = report["meta"]["targets"]
    print(
        "That is %.0f %% of the static oracle's reduction and %.0f %% of the dynamic oracle's (every 15 minutes, "
        "unlimited switching)."
        % (
            100 * tg["share_of_static_oracle_reduction"]["value"],
            100 * tg["share_of_dynamic_oracle_reduction"]["value"],
        )
    )
    return 0
