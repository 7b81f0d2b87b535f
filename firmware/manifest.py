# MicroPython frozen-module manifest: the node firmware, the core and the radio drivers built into the image.
#
# Why: loaded from .mpy files, phasenode, phasecore and phaseradio put their bytecode and
# constants in the heap (about 200 KB on the 64-bit unix port, phasekit bench node;
# roughly half that on the 32-bit ESP32), more than the ~100 KB an ESP32
# without PSRAM leaves to MicroPython. Frozen, bytecode and constant objects
# stay in flash and run from there; only the modules' live objects use RAM.
#
# Build, from micropython/ports/esp32 with ESP-IDF set up (the steps are in
# docs/hardware/esp32-node.md, "A frozen image for boards without PSRAM"):
#
#     make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/phasekit/firmware/manifest.py
#
# Each package says in its own manifest which of its modules a node runs;
# `phasekit deploy` reads these same files (phasekit.node.manifest), so the
# image and a .mpy deploy carry the same modules. MicroPython's manifest tool
# (tools/manifestfile.py) resolves relative paths against the including
# manifest's folder; $(PORT_DIR) is the port's. boot.py and main.py are not
# frozen: `phasekit deploy` copies them as source, with the board file and
# the node's config.

# ruff: noqa: F821  (include and options are defined by the manifest tool that runs this file)

options.defaults(host=False)

# Everything the stock image of the port has (asyncio, networking, _boot.py, ...).
include("$(PORT_DIR)/boards/manifest.py")
include("phasenode/manifest.py", host=options.host)
include("../shared/phasecore/manifest.py")
include("../shared/phaseradio/manifest.py")
