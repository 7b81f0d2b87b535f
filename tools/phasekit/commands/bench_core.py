"""``phasekit bench core``: speed, bytes on the wire, .mpy size and heap of phasecore.

Runs bench/core.py (the same script ``make bench`` runs): CPython with each
AES backend, the MicroPython unix port with pure and cryptolib AES, and
prints the tables and issue 2's targets. Exit status 1 if a target is missed.
"""

import importlib.util
from pathlib import Path

from phasekit.micropython import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "core.py"

EXAMPLE = """example:
  phasekit bench core --quick            about 15 s, noisier numbers
  phasekit bench core --no-micropython   CPython columns only
"""


def register(verbs):
    import argparse

    p = verbs.add_parser("core", help="core speed, bytes on the wire, .mpy size and heap",
                         description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter timing runs (noisier)")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    p.add_argument("--no-micropython", action="store_true", help="skip the MicroPython columns")
    p.set_defaults(func=run)


def _load(path):
    spec = importlib.util.spec_from_file_location("phasekit_bench_core", str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(args):
    if not Path(SCRIPT).exists():
        from phasekit.cli import UsageError

        raise UsageError("bench/core.py not found beside the phasekit tools (%s): run from a checkout" % SCRIPT)
    argv = [flag for flag, on in (("--quick", args.quick), ("--json", args.json),
                                  ("--no-micropython", args.no_micropython)) if on]
    return _load(SCRIPT).main(argv)
