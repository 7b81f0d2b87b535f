"""Balancing benchmark over a suite of feeders: ``python bench/balance_suite.py [--quick] [--jobs N] [--json]``.

The IEEE European LV feeder, streets resampled from its households and
held-out generated feeders, each through ``phasekit bench balance``; the code
is tools/phasekit/commands/bench_balance_suite.py (its docstring says what
runs and what is printed), this script runs it from a checkout without
installing.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("shared", "tools"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

from phasekit.commands import bench_balance_suite  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_balance_suite.main())
