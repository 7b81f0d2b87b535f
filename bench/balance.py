"""Balancing benchmark: ``python bench/balance.py FEEDER_DIR [--json] [--plot FILE.png]``.

The same as ``phasekit bench balance`` (tools/phasekit/commands/bench_balance.py),
runnable from a checkout without installing: replays a feeder day with phasekit's
balancer in the loop against as built, a greedy baseline and two offline
oracles, and times the balancer on CPython and MicroPython.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("shared", "tools"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

from phasekit.cli import UsageError  # noqa: E402
from phasekit.commands import bench_balance  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/balance.py", description=bench_balance.__doc__.split("\n\n")[1])
    bench_balance.add_arguments(p)
    args = p.parse_args(argv)
    try:
        return bench_balance.main(args)
    except UsageError as e:
        print("bench/balance.py: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
