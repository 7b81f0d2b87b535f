# MicroPython manifest: the portable LoRa radio drivers a LoRa node runs (the whole package).
# A manifest resolves paths against its own folder: base_path ".." is shared/.

# ruff: noqa: F821  (package is defined by the manifest tool that runs this file)

package("phaseradio", files=("__init__.py", "sx127x.py"), base_path="..")
