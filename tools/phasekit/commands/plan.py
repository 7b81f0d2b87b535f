"""``phasekit plan``: planning a deployment from a feeder's loads.

phasekit plan equip FEEDER_DIR --shares 0.1,0.2,0.3,0.5,1.0   which houses to equip first, and what it buys
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from phasekit.commands import Subparsers
from phasekit.errors import UsageError

EPILOG = """examples:
  phasekit plan equip feeders/ieee-eulv
  phasekit plan equip feeders/f100 --shares 0.1,0.3,1.0 --draws 8 --json > equip.json
  phasekit plan equip feeders/f100 --plot equip.png
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "plan",
        help="plan a deployment: which houses to equip",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="plan_verb", metavar="ACTION")
    verbs.required = True
    e = verbs.add_parser(
        "equip",
        help="rank the houses to equip first and measure what each share buys against random ones",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("feeder", metavar="FEEDER_DIR", help="a feeder folder (docs/feeder-format.md)")
    e.add_argument("--shares", default="0.1,0.2,0.3,0.5,1.0", metavar="S,S", help="shares of the houses to equip")
    e.add_argument("--draws", type=int, default=5, help="random draws per share (default 5)")
    e.add_argument("--seed", type=int, default=1, help="seed of the random draws (default 1)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--plot", metavar="FILE.png", help="draw the equipping curve")
    e.set_defaults(func=_equip)


def _shares(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        out = ()
    if not out or not all(0.0 < s <= 1.0 for s in out):
        raise UsageError("--shares: expected shares in (0, 1] separated by commas, got %r" % text)
    return out


def _equip(args: argparse.Namespace) -> int:
    from phasekit.balance import equip
    from phasekit.feeder import format as ff

    shares = _shares(args.shares)
    if not 1 <= args.draws <= 100:
        raise UsageError("--draws must be 1..100")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise UsageError("--plot %s: no such folder" % args.plot)
    try:
        feeder = ff.load(args.feeder)
    except ff.FeederFormatError as e:
        raise UsageError(str(e)) from None
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print("[plan equip %5.1fs] %s" % (time.perf_counter() - t0, msg), file=sys.stderr, flush=True)

    plan = equip.run(feeder, shares, draws=args.draws, seed=args.seed, progress=say)
    if args.plot:
        equip.plot(plan, args.plot)
    print(json.dumps(plan, indent=2, sort_keys=True) if args.json else equip.format_table(plan))
    return 0
