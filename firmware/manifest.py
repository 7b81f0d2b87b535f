# MicroPython frozen-module manifest: the node firmware, the core and the radio drivers built into the image.
#
# Why: loaded from .mpy files, phasenode, phasecore and phaseradio put their bytecode and
# constants in the heap (about 212 KB on the 64-bit unix port, phasekit bench node;
# roughly half that on the 32-bit ESP32), more than the ~100 KB an ESP32
# without PSRAM leaves to MicroPython. Frozen, bytecode and constant objects
# stay in flash and run from there; only the modules' live objects use RAM.
#
# Build, from micropython/ports/esp32 with ESP-IDF set up (the steps are in
# docs/hardware/esp32-node.md, "A frozen image for boards without PSRAM"):
#
#     make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/phasekit/firmware/manifest.py
#
# MicroPython's manifest tool (tools/manifestfile.py) runs this file with its
# folder as the working directory, so relative paths start here; $(PORT_DIR)
# is the port's folder. boot.py and main.py are not frozen: `phasekit deploy`
# copies them as source, with the board file and the node's config.

# ruff: noqa: F821  (include and package are defined by the manifest tool that runs this file)

# Everything the stock image of the port has (asyncio, networking, _boot.py, ...).
include("$(PORT_DIR)/boards/manifest.py")

# Modules of phasenode that cannot run on a chip (pyserial, the virtual board's
# lines and relay board). Keep in step with `phasekit deploy` (NEVER and
# HOST_ONLY in tools/phasekit/commands/deploy.py); tests/firmware/test_manifest_cpython.py checks it.
_HOST_ONLY = ("hal/host.py", "hal/pin_host.py", "hal/uart_fd.py", "hal/uart_host.py")


def _chip_files(package):
    import os

    out = []
    for folder, _dirs, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), package).replace(os.sep, "/")
                if rel not in _HOST_ONLY:
                    out.append(rel)
    return sorted(out)


package("phasecore", base_path="../shared")
package("phaseradio", base_path="../shared")
package("phasenode", files=_chip_files("phasenode"), base_path=".")
