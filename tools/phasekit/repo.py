"""Where a phasekit checkout keeps what the tools read: board files, firmware sources, shared packages.

The tools run from a checkout (``pip install -e .``, which ``make`` does): the
board files, the firmware and the portable packages a node is deployed from are
read from the tree. Every path the tools need is named here, once.
"""

from pathlib import Path

__all__ = ("ROOT", "BOARDS", "FIRMWARE", "SHARED", "board_path")

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "boards"
FIRMWARE = ROOT / "firmware"
SHARED = ROOT / "shared"


def board_path(board: str | Path) -> Path:
    """A board name (``host-virtual``) or a path to the path of its JSON file."""
    p = Path(board)
    if p.suffix == ".json" or p.exists():
        return p
    return BOARDS / (str(board) + ".json")
