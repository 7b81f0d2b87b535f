"""Runs first at every reset of the node: drive the relays open before anything else.

Kept minimal on purpose: everything here runs before the REPL, and a crash
must not lock the board out of mpremote (phasenode.startup.boot never raises).
"""

try:
    from phasenode import startup
except ImportError as e:
    print("boot: phasenode is not installed (%s): run `phasekit deploy`" % e)
else:
    startup.boot()
