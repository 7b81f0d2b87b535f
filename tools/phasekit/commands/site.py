"""``phasekit site run``: a whole transformer site on this machine, from the real code of every tier.

Nodes running the real phasenode application (most in this process, two or
more on the MicroPython unix port) on simulated RS-485 lines, the real
transformer Pi (``phasekit gateway run``) with a pymodbus transformer meter,
Mosquitto with TLS and client certificates, and the server; one site clock
for all of them, faster than real time; a fault plan; a live progress line,
then a summary (``--json FILE`` writes it with stable keys) and a plot of the
day. docs/site.md explains every part; docs/first-hour.md is the tour.
"""

from __future__ import annotations

import argparse

from phasekit.commands import Subparsers

EXAMPLES = """examples:
  phasekit site run                                  the IEEE European LV feeder's day in about two minutes
  phasekit site run --faults none --speed 360        no faults, half the speed
  phasekit site run feeders/f100 --houses 40 --json day.json
  phasekit site run --faults plan.toml --hold        a fault plan of your own; keep the server up afterwards
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "site",
        help="run a whole simulated site: nodes, transformer Pi, broker, server (the demo)",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="site_verb", metavar="ACTION")
    verbs.required = True
    r = verbs.add_parser(
        "run",
        help="run the site for one feeder day of site time",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(r)
    r.set_defaults(func=run_from_args)


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    """The options of ``phasekit site run`` (``phasekit demo`` takes the same)."""
    r.add_argument(
        "feeder",
        nargs="?",
        metavar="FEEDER_DIR",
        help="a feeder folder (docs/feeder-format.md); default: the IEEE European LV test feeder (fetched once)",
    )
    r.add_argument(
        "--speed",
        type=float,
        default=720.0,
        metavar="X",
        help="site seconds per wall second (default 720: the day in two minutes)",
    )
    r.add_argument("--houses", type=int, metavar="N", help="nodes on the site (default: every house of the feeder)")
    r.add_argument(
        "--lora",
        type=int,
        default=2,
        metavar="K",
        help="nodes that reach the Pi through a LoRa gateway (class A, relayed: measured, not moved; default 2)",
    )
    r.add_argument(
        "--micropython", type=int, default=2, metavar="M", help="nodes on the MicroPython unix port (default 2)"
    )
    r.add_argument("--faults", metavar="PLAN", help="'none', or a fault plan file (TOML); default: the default plan")
    r.add_argument("--json", metavar="FILE", dest="json_path", help="write the summary as JSON (docs/site.md)")
    r.add_argument("--hold", action="store_true", help="keep the server (and broker) up after the day, until Ctrl-C")
    r.add_argument(
        "--dir",
        default="phasekit-site",
        metavar="DIR",
        help="the site's folder: keys, logs, databases, the plot (default ./phasekit-site; cleared first)",
    )
    r.add_argument("--lines", type=int, metavar="L", help="RS-485 lines (default: one per 20 nodes)")
    r.add_argument(
        "--poll-s",
        type=int,
        metavar="S",
        help="the Pi's polling period in site seconds (default: from the nodes per line and the speed)",
    )
    r.add_argument(
        "--pi-on-disk",
        action="store_true",
        help="keep the Pi's buffer in the site folder, not on a RAM disk (slower rounds: docs/site.md)",
    )
    r.add_argument(
        "--real-node",
        action="append",
        default=[],
        metavar="ADDR:PORT",
        help="a real node (an ESP32 provisioned with the site key) on the serial port PORT takes the place of "
        "simulated node ADDR; needs --speed 1 (docs/first-hour.md)",
    )
    r.add_argument("--minutes", type=int, metavar="M", help="simulate only the first M minutes of the day")
    r.add_argument("--cache", metavar="DIR", help="where the fetched IEEE feeder is kept")
    r.add_argument("--no-plot", action="store_true", help="no PNG of the day")
    r.add_argument("--quiet", action="store_true", help="no live progress line")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the site as the options of ``add_run_arguments`` say; the exit status (1 when a check failed)."""
    return _run(args, strict=True)


def run_demo(args: argparse.Namespace) -> int:
    """``phasekit demo``: the same run; a failed check is in the summary, not in the exit status."""
    return _run(args, strict=False)


def _run(args: argparse.Namespace, strict: bool) -> int:
    from phasekit.errors import UsageError
    from phasekit.site.run import SiteOptions, main

    if not 1 <= args.speed <= 10000:
        raise UsageError("--speed %g: expected 1..10000" % args.speed)
    if args.lora < 0 or args.micropython < 0:
        raise UsageError("--lora and --micropython take 0 or more")
    if args.minutes is not None and not 10 <= args.minutes <= 1440:
        raise UsageError("--minutes %d: expected 10..1440" % args.minutes)
    if args.poll_s is not None and not 10 <= args.poll_s <= 3600:
        raise UsageError("--poll-s %d: expected 10..3600" % args.poll_s)
    real: dict[int, str] = {}
    for spec in args.real_node:
        addr, sep, port = spec.partition(":")
        if not sep or not addr.isdigit() or not port:
            raise UsageError("--real-node %r: expected ADDR:PORT, e.g. 7:/dev/ttyUSB0" % spec[:60])
        real[int(addr)] = port
    opts = SiteOptions(
        feeder=args.feeder,
        speed=args.speed,
        houses=args.houses,
        lora=args.lora,
        faults=args.faults,
        json_path=args.json_path,
        hold=args.hold,
        folder=args.dir,
        micropython=args.micropython,
        poll_s=args.poll_s,
        cache=args.cache,
        minutes=args.minutes,
        plot=not args.no_plot,
        progress=not args.quiet,
        lines=args.lines,
        pi_on_disk=args.pi_on_disk,
        real_nodes=real,
    )
    return main(opts, strict=strict)
