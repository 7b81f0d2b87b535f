"""What the virtual-board tests share: a flash folder with the firmware as source, and a board on its own loop.

Used by tests/tools/test_virtual_board.py and tests/tools/test_meter_node.py
(the meter tools through a node): the board runs in a background event loop so
a test can block on mpremote.
"""

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path

from phasekit.sim.virtual_board import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]


def make_flash(folder, main_py=None, maintenance=True, board_file=None):
    """A flash folder with the firmware as source (lib/ links to the tree), the board file and a config."""
    folder.mkdir()
    if maintenance:
        (folder / "maintenance").write_bytes(b"")
    (folder / "lib").mkdir()
    os.symlink(ROOT / "firmware" / "phasenode", folder / "lib" / "phasenode")
    os.symlink(ROOT / "shared" / "phasecore", folder / "lib" / "phasecore")
    os.symlink(ROOT / "shared" / "phaseradio", folder / "lib" / "phaseradio")
    shutil.copy(ROOT / "firmware" / "boot.py", folder / "boot.py")
    if main_py is None:
        shutil.copy(ROOT / "firmware" / "main.py", folder / "main.py")
    else:
        (folder / "main.py").write_text(main_py)
    shutil.copy(board_file or ROOT / "boards" / "host-virtual.json", folder / "board.json")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "format": 1,
                "node": {"id": "vb-test", "address": 7},
                "key": {"file": "node.key", "generation": 0},
                "board": json.loads((folder / "board.json").read_text())["name"],
                "home_phase": "A",
            }
        )
    )
    (folder / "node.key").write_bytes(bytes(range(32)))  # synthetic test key


class BoardThread:
    """A VirtualBoard on its own event loop in a thread, so tests can block on mpremote."""

    def __init__(self, flash, **kw):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.vb = self.call(self._make(flash, kw))

    async def _make(self, flash, kw):
        return await VirtualBoard(flash, **kw).start()

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for(self, pattern, since=0, timeout=10):
        return self.call(self.vb.wait_for(pattern, timeout=timeout, since=since), timeout + 5)

    def close(self):
        try:
            self.call(self.vb.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
