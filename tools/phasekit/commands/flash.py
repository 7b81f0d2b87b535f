"""``phasekit flash``: write a MicroPython firmware image to an ESP32 with esptool.

The user names the image (a ``.bin`` from micropython.org/download for the
board). Before esptool runs, the image is checked: an ESP image starts with
magic byte 0xE9 and names its chip in the extended header (esptool
``bin_image.py``: chip id 0 = ESP32, 9 = ESP32-S3), so an S3 image is never
written to an ESP32 or the other way round. Then, unless ``--no-erase``::

    python -m esptool --chip CHIP --port PORT --baud BAUD erase-flash
    python -m esptool --chip CHIP --port PORT --baud BAUD write-flash -z OFFSET IMAGE

OFFSET is where the chip's ROM looks for the second-stage bootloader, the
first part of MicroPython's combined image: 0x1000 on the ESP32 and ESP32-S2,
0x0 on the ESP32-S3 and the RISC-V chips (MicroPython download pages; ESP-IDF
"Bootloader" docs). The chip comes from ``--chip`` or from the board file's
``mcu`` (``--board``). esptool 5 names its commands ``erase-flash``,
``write-flash``; esptool 4 ``erase_flash``, ``write_flash``: the installed one
decides. ``--dry-run`` prints the commands without running them.

Public: ``OFFSETS``, ``CHIP_IDS``, ``check_image``, ``esptool_commands``, ``FlashError``.
"""

import shlex
import subprocess
import sys
from pathlib import Path

OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32s3": 9, "esp32c3": 5, "esp32c6": 13}
_ESP_IMAGE_MAGIC = 0xE9
_MIN_IMAGE = 64 * 1024          # a MicroPython image is 1.5-2 MB; a few KB is a wrong file
_MAX_IMAGE = 16 * 1024 * 1024   # the largest ESP32 flash

EXAMPLES = """examples:
  phasekit flash ESP32_GENERIC-20250415-v1.25.0.bin --board esp32-devkitc-max485 --port /dev/ttyUSB0
  phasekit flash ESP32_GENERIC_S3-20250415-v1.25.0.bin --chip esp32s3 --port /dev/ttyACM0 --dry-run
"""


class FlashError(Exception):
    """The image is wrong for the chip, or esptool failed."""


def check_image(path, chip):
    """Refuse a file that is not an ESP image for ``chip``; returns its size."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise FlashError("%s: cannot read the image (%s)" % (path, e.strerror or e)) from None
    if not _MIN_IMAGE <= size <= _MAX_IMAGE:
        raise FlashError("%s: %d bytes is not a MicroPython firmware image (expected %d KB..%d MB)"
                         % (path, size, _MIN_IMAGE // 1024, _MAX_IMAGE // (1024 * 1024)))
    if len(head) < 24 or head[0] != _ESP_IMAGE_MAGIC:
        raise FlashError("%s: not an ESP firmware image (first byte 0x%02x, expected 0xE9); a .uf2, .elf or "
                         ".hex file is not flashed with esptool" % (path, head[0] if head else 0))
    # Common header (8 bytes) + extended header: wp_pin, 3 drive bytes, chip_id (u16 LE) at offset 12.
    chip_id = head[12] | (head[13] << 8)
    if chip_id != CHIP_IDS[chip]:
        names = [c for c, i in sorted(CHIP_IDS.items()) if i == chip_id]
        raise FlashError("%s: the image is built for %s (chip id %d), not %s"
                         % (path, names[0] if names else "another chip", chip_id, chip))
    return size


def _command_names():
    """esptool's command spelling: ``erase-flash`` from version 5, ``erase_flash`` before."""
    try:
        import esptool
    except ImportError:
        raise FlashError("esptool is not installed: pip install esptool") from None
    major = int(str(getattr(esptool, "__version__", "5")).split(".")[0])
    return ("erase-flash", "write-flash") if major >= 5 else ("erase_flash", "write_flash")


def esptool_commands(image, chip, port, baud=460800, erase=True):
    """The esptool command lines (lists) that flash ``image``."""
    if chip not in OFFSETS:
        raise FlashError("unknown chip %r (one of %s)" % (chip, ", ".join(sorted(OFFSETS))))
    erase_cmd, write_cmd = _command_names()
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    cmds = []
    if erase:
        cmds.append(base + [erase_cmd])
    cmds.append(base + [write_cmd, "-z", "0x%x" % OFFSETS[chip], str(image)])
    return cmds


def register(sub):
    import argparse

    p = sub.add_parser("flash", help="write a MicroPython image to an ESP32 with esptool",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the MicroPython firmware .bin for the board")
    p.add_argument("--chip", choices=sorted(OFFSETS), help="target chip (default: the board file's mcu)")
    p.add_argument("--board", help="board name or path: its mcu gives the chip")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 (or an esptool URL)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="write without erasing the whole flash first")
    p.add_argument("--dry-run", action="store_true", help="check the image and print the esptool commands only")
    p.set_defaults(func=_main)


def _main(args):
    from phasekit.cli import UsageError

    chip = args.chip
    if args.board:
        from phasekit.commands.deploy import _resolve_board

        _path, board = _resolve_board(args.board)
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
        size = check_image(args.image, chip)
        cmds = esptool_commands(args.image, chip, args.port, args.baud, erase=not args.no_erase)
    except FlashError as e:
        raise UsageError(str(e)) from None
    print("flash: %s (%.2f MB) -> %s on %s at 0x%x" % (args.image, size / 1e6, chip, args.port, OFFSETS[chip]),
          flush=True)
    for cmd in cmds:
        print("flash: $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(cmd)
        if rc != 0:
            verb = cmd[cmd.index("--baud") + 2]
            print("phasekit flash: esptool %s failed (exit %d): check the port and the cable; if it cannot "
                  "connect, hold BOOT while tapping EN to enter download mode" % (verb, rc), file=sys.stderr)
            return 1
    if not args.dry_run:
        print("flash: done; next: phasekit deploy --board BOARD --config DIR --port %s" % args.port)
    return 0
