"""What ``boot.py`` and ``main.py`` do, kept here so those two files stay a few lines.

The node's flash, as ``phasekit deploy`` writes it::

    /boot.py  /main.py          source: MicroPython runs these two from .py
    /lib/phasenode/  /lib/phasecore/     compiled .mpy
    /board.json                 the board file (``phasenode.board``)
    /config.json  /node.key     written by ``phasekit provision`` (``phasenode.persist``)

``boot()`` runs first at every reset: it reads the board file and drives every
relay to its open level before anything else can fail (the relay controller
later restores the committed phase, after the dead time). It never raises: a
broken board file must leave the REPL reachable so the node can be fixed
with mpremote, so it reports and returns.

``main()`` loads the board file and the node config, builds the HAL and hands
over to the node application, ``phasenode.app.run(board, hal, config, store)``
(``config`` a ``phasenode.settings.NodeConfig``, ``store`` the
``phasenode.persist.Store`` of the node's files).
Without a config it says so and returns to the REPL *without* starting the
watchdog (a chip's watchdog cannot be stopped: a node stuck in a reset loop
could not be provisioned).

A file ``/maintenance`` (written and removed by ``phasekit deploy``) keeps
``main()`` from starting the application.

Public: ``boot``, ``main``, ``BOARD_FILE``, ``MAINTENANCE_FILE``.
"""

import os

from phasecore.errors import quote
from phasenode import board as _board
from phasenode import hal as _hal

__all__ = ("boot", "main", "BOARD_FILE", "MAINTENANCE_FILE")

BOARD_FILE = "board.json"
# Present while ``phasekit deploy`` works on the node: boot opens the relays and
# main starts neither the application nor the watchdog, so a copy that takes
# longer than the watchdog period is not cut by a reset.
MAINTENANCE_FILE = "maintenance"


def boot(board_path=BOARD_FILE, wiring=None, log=print):
    """Open every relay from the board file; returns (board, hal), or (None, None) after reporting why not."""
    try:
        b = _board.load(board_path)
    except _board.BoardError as e:
        log("phasenode boot: %s; relays left undriven (open)" % e)
        return None, None
    try:
        h = _hal.for_board(b, wiring)
        if b.relays is not None:
            h.open_relays()
    except Exception as e:  # noqa: BLE001 - boot must never stop the REPL from coming up; reported, not hidden
        log("phasenode boot: cannot drive the relays open: %s: %s" % (type(e).__name__, e))
        return b, None
    return b, h


def main(board_path=BOARD_FILE, root=None, wiring=None, log=print):
    """Start the node; returns only when the application stops or cannot start (the reason is logged).

    ``root`` is the folder of the node's files (default: the current folder,
    ``/`` on the chip, the flash folder on the virtual board).
    """
    b, h = boot(board_path, wiring, log)
    if h is None:
        return 1
    root = root or os.getcwd()
    try:
        os.stat(root.rstrip("/") + "/" + MAINTENANCE_FILE)
    except OSError:
        pass
    else:
        log("phasenode: maintenance mode (%s present): relays open, application not started" % MAINTENANCE_FILE)
        return 0
    from phasenode import persist

    try:
        store = persist.Store(root)
        config = store.load_config()
    except persist.PersistError as e:
        log("phasenode: %s (run `phasekit provision`, then `phasekit deploy --config DIR`)" % e)
        return 1
    if config.board != b.name:
        log(
            "phasenode: %s is for board %s but %s describes %s: provision and deploy for one board"
            % (persist.CONFIG_FILE, quote(config.board), board_path, quote(b.name))
        )
        return 1
    log("phasenode: node %s (address %d) on %s" % (config.node_id, config.address, b.name))
    try:
        from phasenode import app
    except ImportError as e:
        log("phasenode: node application not installed (%s)" % e)
        return 1
    return app.run(b, h, config, store)
