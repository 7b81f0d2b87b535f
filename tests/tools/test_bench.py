"""``phasekit bench NAME``: one table of benchmarks, each a module with ``add_arguments`` and ``main``."""

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phasekit import cli
from phasekit.commands.bench import BENCHES

PHASEKIT = [sys.executable, "-m", "phasekit.cli"]
BENCH_DIR = Path(cli.__file__).resolve().parent / "bench"


def phasekit(*args, timeout=120):
    return subprocess.run(PHASEKIT + list(args), capture_output=True, text=True, timeout=timeout)


def test_every_benchmark_module_is_in_the_table():
    listed = {module for _, module, _ in BENCHES}
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        assert "phasekit.bench." + path.stem in listed, "%s is not in phasekit.commands.bench.BENCHES" % path.name


@pytest.mark.parametrize("name,module_name", [(n, m) for n, m, _ in BENCHES])
def test_each_benchmark_module_has_the_interface(name, module_name):
    module = importlib.import_module(module_name)
    assert module.__doc__ and callable(module.main)
    p = argparse.ArgumentParser()
    module.add_arguments(p)  # its own options, nothing else needed to build them


def test_bench_help_lists_every_benchmark():
    r = phasekit("bench", "--help")
    assert r.returncode == 0, r.stderr
    for name, _, _ in BENCHES:
        # A long name puts its help on the next line.
        assert re.search(r"\n    %s\s" % re.escape(name), r.stdout), name


def test_a_short_run_passes_arguments_and_status_through():
    r = phasekit("bench", "relay", "-n", "60", "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "60 (seed 3, 40 actions each)" in r.stdout
    assert "unsafe states found                    0" in r.stdout


def test_an_option_the_benchmark_does_not_know_is_a_usage_error():
    r = phasekit("bench", "lora", "--no-such-option")
    assert r.returncode == 2
    assert "unrecognized arguments: --no-such-option" in r.stderr


def test_in_process_run_returns_the_status():
    assert cli.main(["bench", "relay", "-n", "20", "--quiet"]) == 0


def test_cli_start_stays_quick():
    # Every verb's parser is built at start: benchmarks keep heavy imports out of module level.
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "phasekit.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    heavy = [m for m in ("numpy", "scipy", "matplotlib", "pymodbus") if re.search(r"\| %s$" % m, r.stderr, re.M)]
    assert not heavy, "phasekit --help imports %s" % heavy
