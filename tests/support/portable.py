"""Helpers for tests that run under both CPython (pytest) and MicroPython.

Test files that run on both interpreters import only this module, phasecore and
what MicroPython has (json, struct, random). They use plain ``assert`` and the
helpers below, never pytest fixtures. Files named ``*_cpython.py`` are the
CPython-only tests (hypothesis, differential tests against other libraries).
"""

import json
import os


def _repo_root(here):
    # tests/support/portable.py -> the repository root; both interpreters (no os.path on MicroPython).
    if "/" not in here:
        return "../.."
    folder = here.rsplit("/", 1)[0]
    if folder == "tests/support":
        return "."
    if folder.endswith("/tests/support"):
        return folder[: -len("/tests/support")]
    return folder + "/../.."


REPO = _repo_root(__file__)


def vectors_dir():
    """Folder of the standard test vectors: tests/vectors in this repository (``PHASEKIT_VECTORS`` overrides it)."""
    env = os.getenv("PHASEKIT_VECTORS")
    if env:
        return env
    return REPO + "/tests/vectors"


def load_vectors(relpath):
    """Parse a JSON vector file, e.g. ``load_vectors("cbor/appendix_a.json")``."""
    with open(vectors_dir() + "/" + relpath) as f:
        return json.load(f)


def unhex(s):
    """Hex string to bytes (bytes.fromhex is missing on some MicroPython builds)."""
    s = s.replace(" ", "")
    out = bytearray(len(s) // 2)
    for i in range(len(out)):
        out[i] = int(s[2 * i : 2 * i + 2], 16)
    return bytes(out)


def tohex(b):
    return "".join("%02x" % x for x in b)


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail unless it is exc_type.

    A portable stand-in for ``pytest.raises``.
    """
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001 - reported as a test failure with its type
        raise AssertionError("expected %s, got %s: %s" % (exc_type.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)
