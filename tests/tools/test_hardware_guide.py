"""docs/hardware/esp32-node.md stays true: its commands parse with the real CLI, its wiring is the board files."""

import re
from pathlib import Path

import pytest

from doccheck import phasekit_commands
from phasekit.cli import build_parser
from phasenode import board as boardmod

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "hardware" / "esp32-node.md"


def sh_commands():
    """``(line, argv)`` of every phasekit command in the guide's sh blocks (tests/support/doccheck.py)."""
    return phasekit_commands(GUIDE)


def sections():
    out = {}
    for part in re.split(r"^### ", GUIDE.read_text(), flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        out[title.strip()] = body
    return out


def board_pins(b):
    pins = set()
    for u in (b.meter_uart, b.bus_uart):
        if u is not None:
            pins |= {p for p in (u.tx, u.rx, u.de_pin) if p is not None}
    if b.relays is not None:
        pins |= set(b.relays.pins)
        if b.relays.zero_cross is not None:
            pins |= {b.relays.zero_cross} | set(b.relays.conducting)
    if b.lora is not None:
        lo = b.lora
        pins |= {p for p in (lo.sck, lo.mosi, lo.miso, lo.cs, lo.reset, lo.irq, lo.busy) if p is not None}
    if b.led is not None:
        pins.add(b.led)
    return pins


def test_guide_has_commands_for_every_verb_it_teaches():
    verbs = {argv[0] for _line, argv in sh_commands()}
    assert {"flash", "provision", "deploy", "board"} <= verbs


@pytest.mark.parametrize("line,argv", sh_commands(), ids=[line for line, _ in sh_commands()])
def test_every_phasekit_command_in_the_guide_parses(line, argv):
    args = build_parser().parse_args(argv)  # argparse exits on anything it does not know
    assert callable(args.func)


@pytest.mark.parametrize("path", sorted((ROOT / "boards").glob("*.json")), ids=lambda p: p.stem)
def test_wiring_tables_are_the_board_files(path):
    b = boardmod.load(str(path))
    if b.is_host:
        return  # the virtual board has no wiring to draw
    body = sections().get(b.name)
    assert body is not None, "no '### %s' section in %s" % (b.name, GUIDE)
    table = "\n".join(line for line in body.splitlines() if line.startswith("|"))
    assert {int(n) for n in re.findall(r"GPIO(\d+)", table)} == board_pins(b)
    for i, pin in enumerate(b.relays.pins):
        assert re.search(r"\| relay %s \| GPIO%d \|" % ("ABC"[i], pin), table), (b.name, "ABC"[i])
