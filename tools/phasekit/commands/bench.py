"""``phasekit bench``: benchmarks that print tables (balance, core)."""

import importlib


def register(sub):
    p = sub.add_parser("bench", help="run a benchmark and print its table")
    verbs = p.add_subparsers(dest="bench", metavar="BENCH")
    verbs.required = True
    importlib.import_module("phasekit.commands.bench_balance").register(verbs)
    importlib.import_module("phasekit.commands.bench_core").register(verbs)
