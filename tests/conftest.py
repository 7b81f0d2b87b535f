"""Shared pytest set-up: the MicroPython parity summary at the end of the run.

The tiers are imported as installed (``pip install -e .``, which ``make test``
does); the helpers in tests/support are on the path by ``pythonpath`` in
pyproject.toml, and on MICROPYPATH for the MicroPython runs.
"""


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
