"""The portable test files, run again under the real MicroPython interpreter.

Every ``test_*.py`` under tests/core, tests/radio and tests/firmware that is not named
``*_cpython.py`` must pass on MicroPython too. The runner's count is checked
against the number of test functions in the file, so nothing is skipped
silently; the totals are printed at the end of the pytest run.
"""

import re
from pathlib import Path

import pytest

from mpy_results import MPY_RESULTS
from phasekit.testing import micropython

ROOT = Path(__file__).resolve().parent.parent
PORTABLE_DIRS = ("tests/core", "tests/radio", "tests/firmware")


def portable_files():
    files = []
    for d in PORTABLE_DIRS:
        for p in sorted((ROOT / d).glob("test_*.py")):
            if not p.name.endswith("_cpython.py"):
                files.append(p)
    return files


@pytest.mark.parametrize("path", portable_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_portable_file_passes_under_micropython(path, request):
    expected = len(re.findall(r"^def test_\w+\(\s*\)", path.read_text(), re.M))
    proc = micropython.run(
        [ROOT / "tests/support/mpy_runner.py", path.name], extra_path=[ROOT / "tests/support", path.parent]
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert m, "no closing line from the MicroPython runner:\n" + out
    passed, failed = int(m.group(1)), int(m.group(2))
    request.config.stash.setdefault(MPY_RESULTS, []).append((path.name, passed, failed))
    assert proc.returncode == 0 and failed == 0, out
    assert passed == expected, "ran %d of %d test functions under MicroPython:\n%s" % (passed, expected, out)
