# MicroPython manifest: the modules of phasecore that a home node runs.
#
# Exactly what the node firmware imports (tests/firmware/test_manifest_cpython.py
# holds this list to the imports of firmware/main.py and boot.py). Left out:
# balancer/ and metrics (the transformer Pi decides, the node only obeys).
# ota, ed25519 and sha512 are imported only while a firmware update runs
# (phasenode.ota), so they cost flash, and heap only then. A manifest resolves paths
# against its own folder: base_path ".." is shared/.

# ruff: noqa: F821  (package is defined by the manifest tool that runs this file)

package("phasecore", files=("__init__.py", "aes.py", "airtime.py", "cbor.py", "ccm.py", "codes.py", "cose.py",
                            "crc.py", "ed25519.py", "errors.py", "frame.py", "kdf.py", "keys.py", "msg.py", "ota.py",
                            "replay.py", "seal.py", "sha512.py"), base_path="..")
