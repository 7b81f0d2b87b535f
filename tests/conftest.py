"""Shared pytest set-up: import paths for the tiers and the MicroPython summary."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("shared", "firmware", "gateway", "server-min", "tools", "tests"):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from mpy_results import MPY_RESULTS

    results = config.stash.get(MPY_RESULTS, [])
    if not results:
        return
    passed = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    terminalreporter.section("MicroPython parity")
    for name, p, f in results:
        terminalreporter.write_line("  %-40s %4d passed %3d failed" % (name, p, f))
    terminalreporter.write_line(
        "MicroPython unix port: %d portable tests passed, %d failed, in %d files" % (passed, failed, len(results))
    )
