# MicroPython manifest: the modules of phasecore that a home node runs.
#
# Exactly what the node firmware imports (tests/firmware/test_manifest_cpython.py
# holds this list to the imports of firmware/main.py and boot.py). Left out:
# balancer/ and metrics (the transformer Pi decides, the node only obeys) and
# ed25519/sha512 (not imported by the node yet). A manifest resolves paths
# against its own folder: base_path ".." is shared/.

# ruff: noqa: F821  (package is defined by the manifest tool that runs this file)

package("phasecore", files=("__init__.py", "aes.py", "airtime.py", "cbor.py", "ccm.py", "codes.py", "cose.py",
                            "crc.py", "errors.py", "frame.py", "kdf.py", "keys.py", "msg.py", "replay.py",
                            "seal.py"), base_path="..")
