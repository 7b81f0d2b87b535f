"""Flash MicroPython onto an ESP32 with esptool, after checking the image is for that chip (``phasekit flash``).

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

from __future__ import annotations

import os
import sys
from pathlib import Path

from phasekit.errors import PhasekitError

OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32s3": 9, "esp32c3": 5, "esp32c6": 13}
_ESP_IMAGE_MAGIC = 0xE9
_MIN_IMAGE = 64 * 1024  # a MicroPython image is 1.5-2 MB; a few KB is a wrong file
_MAX_IMAGE = 16 * 1024 * 1024  # the largest ESP32 flash


class FlashError(PhasekitError):
    """The image is wrong for the chip, or esptool failed."""


def check_image(path: str | os.PathLike[str], chip: str) -> int:
    """Refuse a file that is not an ESP image for ``chip``; returns its size."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise FlashError("%s: cannot read the image (%s)" % (path, e.strerror or e)) from None
    if not _MIN_IMAGE <= size <= _MAX_IMAGE:
        raise FlashError(
            "%s: %d bytes is not a MicroPython firmware image (expected %d KB..%d MB)"
            % (path, size, _MIN_IMAGE // 1024, _MAX_IMAGE // (1024 * 1024))
        )
    if len(head) < 24 or head[0] != _ESP_IMAGE_MAGIC:
        raise FlashError(
            "%s: not an ESP firmware image (first byte 0x%02x, expected 0xE9); a .uf2, .elf or "
            ".hex file is not flashed with esptool" % (path, head[0] if head else 0)
        )
    # Common header (8 bytes) + extended header: wp_pin, 3 drive bytes, chip_id (u16 LE) at offset 12.
    chip_id = head[12] | (head[13] << 8)
    if chip_id != CHIP_IDS[chip]:
        names = [c for c, i in sorted(CHIP_IDS.items()) if i == chip_id]
        raise FlashError(
            "%s: the image is built for %s (chip id %d), not %s"
            % (path, names[0] if names else "another chip", chip_id, chip)
        )
    return size


def _command_names() -> tuple[str, str]:
    """esptool's command spelling: ``erase-flash`` from version 5, ``erase_flash`` before."""
    try:
        import esptool
    except ImportError:
        raise FlashError("esptool is not installed: pip install esptool") from None
    major = int(str(getattr(esptool, "__version__", "5")).split(".")[0])
    return ("erase-flash", "write-flash") if major >= 5 else ("erase_flash", "write_flash")


def esptool_commands(
    image: str | os.PathLike[str], chip: str, port: str, baud: int = 460800, erase: bool = True
) -> list[list[str]]:
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
