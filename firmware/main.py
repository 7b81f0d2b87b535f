"""The node's entry point, run after boot.py: load the board and config, start the node application.

If the firmware of an unconfirmed trial boot (a new version, docs/ota.md) does
not import or stops, phaseboot marks the trial failed and reboots into the
previous version.
"""

import sys

rc = 1
try:
    from phasenode import startup

    rc = startup.main()
except Exception as e:  # noqa: BLE001 - whatever stopped the firmware, a trial must roll back
    sys.print_exception(e)
try:
    import phaseboot
except ImportError:
    pass
else:
    phaseboot.after_main(rc)
