"""The ``phasekit`` command: one entry point, a verb per job.

Each verb lives in its own module under ``phasekit.commands`` and exposes
``register(subparsers)``; heavy imports happen inside the verb's handler so
``phasekit --help`` stays instant.

Exit codes scripts can trust: 0 success, 1 the job ran and failed (a target
missed, a device refused), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from phasekit.errors import UsageError

# (module, summary) — a verb's module registers its own sub-parser.
VERBS = (
    "phasekit.commands.bench",
    "phasekit.commands.board",
    "phasekit.commands.demo",
    "phasekit.commands.deploy",
    "phasekit.commands.feeder",
    "phasekit.commands.flash",
    "phasekit.commands.gateway",
    "phasekit.commands.meter",
    "phasekit.commands.operator",
    "phasekit.commands.ota",
    "phasekit.commands.pki",
    "phasekit.commands.plan",
    "phasekit.commands.provision",
    "phasekit.commands.release",
    "phasekit.commands.server",
    "phasekit.commands.site",
)

EXAMPLES = """examples:
  phasekit demo                              a whole simulated site: nodes, Pi, broker, server
  phasekit bench balance FEEDER_DIR --json   compare strategies on a feeder
  phasekit bench core                        core speed, sizes and heap
  phasekit gateway run /etc/phasekit/gateway.toml
  phasekit server run --config /etc/phasekit/server.toml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phasekit",
        description="phasekit: automatic phase balancing at the edge.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="phasekit " + _version())
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERBS:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from phasekit import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print("phasekit: error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy (one module object for the verbs' imports).
    from phasekit.cli import main as _main

    sys.exit(_main())
