"""``phasekit flash``: write a MicroPython firmware image to an ESP32 with esptool.

The image check and the esptool commands: ``phasekit.node.flash``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from phasekit.commands import Subparsers
from phasekit.node import deploy, flash

EXAMPLES = """examples:
  phasekit flash ESP32_GENERIC-20250415-v1.25.0.bin --board esp32-devkitc-max485 --port /dev/ttyUSB0
  phasekit flash ESP32_GENERIC_S3-20250415-v1.25.0.bin --chip esp32s3 --port /dev/ttyACM0 --dry-run
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "flash",
        help="write a MicroPython image to an ESP32 with esptool",
        description=flash.__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="the MicroPython firmware .bin for the board")
    p.add_argument("--chip", choices=sorted(flash.OFFSETS), help="target chip (default: the board file's mcu)")
    p.add_argument("--board", help="board name or path: its mcu gives the chip")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 (or an esptool URL)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="write without erasing the whole flash first")
    p.add_argument("--dry-run", action="store_true", help="check the image and print the esptool commands only")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from phasekit.cli import UsageError

    chip = args.chip
    if args.board:
        _path, board = deploy.resolve_board(args.board)
        if board.is_host:
            raise UsageError("board %r is the virtual board: nothing to flash; use `phasekit board run`" % board.name)
        if chip is not None and chip != board.mcu:
            raise UsageError("--chip %s contradicts board %s (mcu %s)" % (chip, board.name, board.mcu))
        chip = board.mcu
    if chip is None:
        raise UsageError("give --chip or --board")
    if not 9600 <= args.baud <= 2000000:
        raise UsageError("--baud %d outside 9600..2000000" % args.baud)
    try:
        size = flash.check_image(args.image, chip)
        cmds = flash.esptool_commands(args.image, chip, args.port, args.baud, erase=not args.no_erase)
    except flash.FlashError as e:
        raise UsageError(str(e)) from None
    print(
        "flash: %s (%.2f MB) -> %s on %s at 0x%x" % (args.image, size / 1e6, chip, args.port, flash.OFFSETS[chip]),
        flush=True,
    )
    for cmd in cmds:
        print("flash: $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(cmd)
        if rc != 0:
            verb = cmd[cmd.index("--baud") + 2]
            print(
                "phasekit flash: esptool %s failed (exit %d): check the port and the cable; if it cannot "
                "connect, hold BOOT while tapping EN to enter download mode" % (verb, rc),
                file=sys.stderr,
            )
            return 1
    if not args.dry_run:
        print("flash: done; next: phasekit deploy --board BOARD --config DIR --port %s" % args.port)
    return 0
