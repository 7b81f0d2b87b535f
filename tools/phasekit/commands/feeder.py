"""``phasekit feeder``: make, check and import feeder folders (docs/feeder-format.md).

phasekit feeder generate OUT --houses 100 --seed 1     a seeded synthetic feeder day (--days 7: a week)
phasekit feeder check DIR                               validate a folder, print a summary
phasekit feeder fetch-ieee-eulv OUT                     the IEEE European LV feeder, from PyPI
phasekit feeder import-ieee-eulv SRC OUT                convert the IEEE European LV CSV folder
phasekit feeder resample SRC OUT --houses 100 --seed 1  a new street of SRC's households (--days 7: a week)

``--solid-state SHARE`` (generate, resample) gives that share of the
switchable houses solid-state switches, drawn with the seed (the houses.csv
``switch`` column); the rest keep mechanical relays.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from phasekit.commands import Handler, Subparsers

if TYPE_CHECKING:
    from phasekit.feeder.format import Feeder
from phasekit.errors import UsageError

EPILOG = """examples:
  phasekit feeder generate feeders/f100 --houses 100 --seed 1
  phasekit feeder generate feeders/w100 --houses 100 --seed 21 --days 7
  phasekit feeder check feeders/f100
  phasekit feeder fetch-ieee-eulv feeders/ieee-eulv
  phasekit feeder import-ieee-eulv ~/Downloads/European_LV_CSV feeders/eulv
  phasekit feeder resample feeders/ieee-eulv feeders/ieee-r250 --houses 250 --seed 1
  phasekit feeder resample feeders/ieee-eulv feeders/ieee-w100 --houses 100 --seed 5 --days 7
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "feeder",
        help="generate, check or import a feeder folder",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="feeder_verb", metavar="ACTION")
    verbs.required = True
    g = verbs.add_parser("generate", help="write a seeded synthetic feeder day")
    g.add_argument("out", help="folder to write (created)")
    g.add_argument("--houses", type=int, default=100, help="number of houses (default 100)")
    g.add_argument("--seed", type=int, default=1, help="street seed (default 1)")
    g.add_argument("--day", type=int, default=0, help="another day of the same street (default 0)")
    g.add_argument("--days", type=int, default=1, help="days in one run, 1..7 (default 1)")
    g.add_argument("--no-meter", action="store_true", help="the transformer has no meter")
    _switch_argument(g)
    g.set_defaults(func=_generate)
    c = verbs.add_parser("check", help="validate a feeder folder and print a summary")
    c.add_argument("folder")
    c.set_defaults(func=_check)
    f = verbs.add_parser("fetch-ieee-eulv", help="download the IEEE European LV test feeder (via PyPI) and convert it")
    f.add_argument("out", help="folder to write (created)")
    f.add_argument("--archive", metavar="FILE", help="a local copy of pandapower-2.14.11.zip instead of downloading it")
    f.set_defaults(func=_fetch)
    i = verbs.add_parser("import-ieee-eulv", help="convert the IEEE European LV test feeder CSV folder")
    i.add_argument("src", help="the European_LV_CSV folder from the IEEE PES archive")
    i.add_argument("out", help="folder to write (created)")
    i.set_defaults(func=_import)
    r = verbs.add_parser("resample", help="a new street of a feeder's households, on new wiring")
    r.add_argument("src", help="a feeder folder (e.g. the IEEE feeder)")
    r.add_argument("out", help="folder to write (created)")
    r.add_argument("--houses", type=int, default=100, help="number of houses (default 100)")
    r.add_argument("--seed", type=int, default=1, help="seed of the draw and the wiring (default 1)")
    r.add_argument("--days", type=int, default=1, help="days in one run, 1..7, from a one-day SRC (default 1)")
    r.add_argument(
        "--jitter-min",
        type=int,
        default=60,
        metavar="M",
        help="a week: each day a household's usual day is shifted by up to +-M minutes (default 60)",
    )
    r.add_argument(
        "--other-day-share",
        type=float,
        default=0.3,
        metavar="S",
        help="a week: share of the days a house has another household's day (default 0.3)",
    )
    _switch_argument(r)
    r.set_defaults(func=_resample)


def _switch_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--solid-state",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the switchable houses with solid-state switches (default 0: all mechanical)",
    )


def _usage(e: Exception) -> UsageError:
    return UsageError(str(e))


def _verb(func: Handler) -> Handler:
    """A verb's handler: a broken feeder folder or archive is one line on stderr and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from phasekit.feeder.format import FeederFormatError

        try:
            return func(args)
        except FeederFormatError as e:
            print("phasekit feeder %s: %s" % (args.feeder_verb, e), file=sys.stderr)
            return 1

    return run


def _wrote(out: str, feeder: Feeder) -> int:
    print("wrote %s: %s" % (out, feeder.summary()))
    return 0


@_verb
def _generate(args: argparse.Namespace) -> int:
    from phasekit.feeder import format as ff
    from phasekit.feeder.generate import generate

    try:
        f = generate(args.houses, seed=args.seed, day=args.day, days=args.days, meter=not args.no_meter)
        ff.assign_switch(f, args.solid_state, args.seed)
    except ValueError as e:
        raise _usage(e) from None
    ff.write(f, args.out, meta={"seed": args.seed, "generator": f.source})
    return _wrote(args.out, f)


@_verb
def _check(args: argparse.Namespace) -> int:
    from phasekit.feeder import format as ff

    print(ff.load(args.folder).summary())
    return 0


@_verb
def _import(args: argparse.Namespace) -> int:
    from phasekit.feeder import format as ff
    from phasekit.feeder import ieee_eulv

    f = ieee_eulv.convert(args.src)
    ff.write(f, args.out)
    return _wrote(args.out, f)


@_verb
def _fetch(args: argparse.Namespace) -> int:
    from phasekit.feeder import ieee_eulv

    def say(msg: str) -> None:
        print("[feeder fetch-ieee-eulv] %s" % msg, file=sys.stderr, flush=True)

    return _wrote(args.out, ieee_eulv.fetch(args.out, archive=args.archive, progress=say))


@_verb
def _resample(args: argparse.Namespace) -> int:
    from phasekit.feeder import format as ff
    from phasekit.feeder.resample import resample

    src = ff.load(args.src)
    try:
        f = resample(
            src,
            args.houses,
            seed=args.seed,
            days=args.days,
            jitter_min=args.jitter_min,
            other_day_share=args.other_day_share,
        )
        ff.assign_switch(f, args.solid_state, args.seed)
    except ValueError as e:
        raise _usage(e) from None
    ff.write(f, args.out, meta={"seed": args.seed})
    return _wrote(args.out, f)
