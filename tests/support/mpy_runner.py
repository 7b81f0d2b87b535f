"""Run portable test modules under the MicroPython interpreter.

Usage: MICROPYPATH=tests/support:tests/core:shared:firmware:.frozen \
       micropython tests/support/mpy_runner.py test_cbor [...]

Imports each module by name (its folder and tests/support on MICROPYPATH,
which the caller builds), calls every module-level ``test_*`` function in
name order, prints one line per failure with its traceback, and ends with
the plain closing line ``N passed, N failed``. Exit status 1 on any failure. The pytest
wrapper (tests/test_micropython.py) checks the count against the file, so a
test that silently vanished is caught.
"""

import sys


def _run_module(path):
    name = path.rpartition("/")[2]
    name = name[:-3] if name.endswith(".py") else name
    mod = __import__(name)
    passed = failed = 0
    for attr in sorted(dir(mod)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(mod, attr)
        if not callable(fn):
            continue
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001 - the runner reports every failure
            failed += 1
            print("FAIL %s::%s" % (path, attr))
            sys.print_exception(e)
    print("%s: %d passed, %d failed" % (path, passed, failed))
    return passed, failed


def main(paths):
    total_p = total_f = 0
    for p in paths:
        try:
            ok, bad = _run_module(p)
        except Exception as e:  # noqa: BLE001 - an import error is a failure of the file
            print("FAIL %s (import)" % p)
            sys.print_exception(e)
            ok, bad = 0, 1
        total_p += ok
        total_f += bad
    print("%d passed, %d failed" % (total_p, total_f))
    return total_f


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
