"""Runs first at every reset of the node: pick the firmware slot, drive the relays open, record the boot.

Kept minimal on purpose: everything here runs before the REPL, and a crash
must not lock the board out of mpremote (phaseboot and phasenode.startup.boot
never raise). ``phaseboot.select`` only reads (which slot: docs/ota.md), the
relays are opened, and only then is the boot recorded.
"""

try:
    import phaseboot
except ImportError:
    phaseboot = None  # deployed before firmware updates existed: lib/ is the firmware
selection = phaseboot.select() if phaseboot is not None else None
try:
    from phasenode import startup
except ImportError as e:
    print("boot: phasenode is not installed (%s): run `phasekit deploy`" % e)
else:
    startup.boot()
if selection is not None:
    selection.booted()
del selection, phaseboot  # the application imports it again only while an update is under way
