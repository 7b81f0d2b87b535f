"""``phasekit demo``: the whole simulated site, the main job on one machine (``phasekit site run``).

Nodes running the real firmware (most in process, two on the MicroPython
unix port) on simulated RS-485 lines, the real transformer Pi with a pymodbus
transformer meter, Mosquitto with TLS, and the server, on one clock 720
times faster than the wall: the IEEE European LV feeder's day (55 houses,
fetched once from PyPI into the cache; a generated street when offline) in
about two minutes, through the default fault plan. It takes every option of
``phasekit site run``; docs/first-hour.md is the tour. The balancing
benchmark (strategies against oracles, with targets) is ``phasekit bench balance``.
"""

from __future__ import annotations

import argparse

from phasekit.commands import Subparsers

EPILOG = """examples:
  phasekit demo                              the IEEE European LV feeder's day, the default fault plan
  phasekit demo --faults none --houses 20    20 nodes, no faults
  phasekit demo /path/to/feeder --json day.json
"""


def register(sub: Subparsers) -> None:
    from phasekit.commands.site import add_run_arguments, run_demo

    p = sub.add_parser(
        "demo",
        help="the whole simulated site, in about two minutes (phasekit site run)",
        description=__doc__.split("\n\n")[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.set_defaults(func=run_demo)
