"""``phasekit bench``: benchmarks that print tables (balance, core, and the scripts of bench/)."""

import importlib

# Each benchmark module registers its own sub-parser.
BENCHES = (
    "phasekit.commands.bench_balance",
    "phasekit.commands.bench_core",
    "phasekit.commands.bench_scripts",
)


def register(sub):
    p = sub.add_parser("bench", help="run a benchmark and print its table")
    verbs = p.add_subparsers(dest="bench", metavar="BENCH")
    verbs.required = True
    for name in BENCHES:
        importlib.import_module(name).register(verbs)
