"""``phasekit board``: list and check board files, run the virtual board.

- ``phasekit board list``: the board files in boards/ with their MCU and capabilities;
- ``phasekit board check FILE``: validate a board file as the firmware will (exit 2 if bad);
- ``phasekit board run --flash DIR``: the virtual board (``phasekit.sim.virtual_board``):
  the firmware in DIR under the MicroPython unix port, a simulated PZEM on its
  meter UART, its RS-485 bus on a pseudo-terminal, its REPL on a TCP port for
  mpremote. Prints one JSON line (``repl``, ``bus``, ``flash``, ``pid`` ...),
  then a line for every reset; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse

from phasekit.commands import Subparsers

EXAMPLES = """examples:
  phasekit board list
  phasekit board check boards/esp32-devkitc-max485.json
  phasekit board run --flash vb-flash --repl-port 7000
  mpremote connect socket://127.0.0.1:7000 resume fs ls
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "board",
        help="list/check board files, run the virtual board",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="board_verb", metavar="ACTION")
    verbs.required = True

    v = verbs.add_parser("list", help="the board files in boards/")
    v.set_defaults(func=_list)

    v = verbs.add_parser("check", help="validate a board file as the firmware does")
    v.add_argument("file", nargs="+", help="board file path or name")
    v.set_defaults(func=_check)

    v = verbs.add_parser(
        "run",
        help="run the virtual board (firmware under the MicroPython unix port)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("--flash", required=True, metavar="DIR", help="the board's flash folder (created if missing)")
    v.add_argument("--board", default="host-virtual", help="host board file name or path (default host-virtual)")
    v.add_argument(
        "--meter",
        type=lambda s: int(s, 0),
        action="append",
        metavar="ADDR",
        help="simulated PZEM-004T address on the meter UART (repeatable; default 1)",
    )
    v.add_argument("--repl-port", type=int, default=0, help="TCP port of the REPL bridge (default: a free one)")
    v.add_argument("--heapsize", default=None, help="MicroPython heap, e.g. 256K (default 512K)")
    v.add_argument("--no-pace", action="store_true", help="deliver serial bytes at once, not at the baud rate")
    v.add_argument("--console-log", metavar="FILE", help="append everything the firmware prints to FILE")
    v.set_defaults(func=_run)


def _list(args: argparse.Namespace) -> int:
    from phasekit import repo
    from phasenode import board as boardmod

    for path in sorted(repo.BOARDS.glob("*.json")):
        try:
            b = boardmod.load(str(path))
        except boardmod.BoardError as e:
            print("%-32s INVALID: %s" % (path.stem, e))
            continue
        print("%-32s %-8s %s" % (b.name, b.mcu, ", ".join(b.capabilities)))
    return 0


def _check(args: argparse.Namespace) -> int:
    from phasekit import repo
    from phasekit.errors import UsageError
    from phasenode import board as boardmod

    bad = []
    for f in args.file:
        path = repo.board_path(f)
        try:
            b = boardmod.load(str(path))
        except boardmod.BoardError as e:
            bad.append(str(e))
            continue
        print("%s: ok (%s, %s; %s)" % (path, b.name, b.mcu, ", ".join(b.capabilities)))
    if bad:
        raise UsageError("\n  ".join(bad))
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from phasekit.errors import UsageError
    from phasekit.sim import virtual_board as vb

    heapsize = args.heapsize or vb.DEFAULT_HEAPSIZE
    console = open(args.console_log, "ab") if args.console_log else None
    try:
        return (
            asyncio.run(
                vb.run_forever(
                    args.flash,
                    board=args.board,
                    addresses=tuple(args.meter or [1]),
                    heapsize=heapsize,
                    repl_port=args.repl_port,
                    pace=not args.no_pace,
                    console=console,
                )
            )
            or 0
        )
    except vb.VirtualBoardError as e:
        raise UsageError(str(e)) from None
    finally:
        if console is not None:
            console.close()
