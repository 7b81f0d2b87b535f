"""``phasekit bench SCRIPT_VERB`` runs a script of bench/ with its own options and exit status."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from phasekit import cli
from phasekit.commands import bench_scripts

ROOT = Path(__file__).resolve().parents[2]
PHASEKIT = [sys.executable, "-m", "phasekit.cli"]


def phasekit(*args, timeout=120):
    return subprocess.run(PHASEKIT + list(args), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))


def _bench_verbs():
    """The verbs `phasekit bench --help` lists."""
    r = phasekit("bench", "--help")
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"^    (\S+)", r.stdout, re.M))


def test_every_script_in_bench_has_a_phasekit_bench_verb():
    verbs = _bench_verbs()
    by_script = {script: name for name, script, _ in bench_scripts.SCRIPTS}
    for path in sorted((ROOT / "bench").glob("*.py")):
        verb = by_script.get(path.name, path.stem)
        assert verb in verbs, "bench/%s has no `phasekit bench` verb (%s)" % (path.name, sorted(verbs))


@pytest.mark.parametrize("name,script", [(n, s) for n, s, _ in bench_scripts.SCRIPTS])
def test_help_is_the_scripts_own(name, script):
    via = phasekit("bench", name, "--help")
    direct = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=str(ROOT))
    assert via.returncode == 0 == direct.returncode, via.stderr
    # The same options, described by the script itself (the program name may differ).
    assert via.stdout.split("\n", 1)[1] == direct.stdout.split("\n", 1)[1]


def test_a_short_run_passes_arguments_and_status_through():
    r = phasekit("bench", "relay", "-n", "60", "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "60 (seed 3, 40 actions each)" in r.stdout
    assert "unsafe states found                    0" in r.stdout


def test_an_option_the_script_does_not_know_is_its_usage_error():
    r = phasekit("bench", "lora", "--no-such-option")
    assert r.returncode == 2
    assert "unrecognized arguments: --no-such-option" in r.stderr


def test_in_process_run_restores_argv():
    before = list(sys.argv)
    assert cli.main(["bench", "relay", "-n", "20", "--quiet"]) == 0
    assert sys.argv == before


def test_bench_lists_the_script_verbs():
    r = phasekit("bench", "--help")
    assert r.returncode == 0
    for name, _, _ in bench_scripts.SCRIPTS:
        # A long name puts its help on the next line.
        assert re.search(r"\n    %s\s" % re.escape(name), r.stdout), name
