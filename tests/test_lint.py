"""ruff over the whole tree: lint (pyflakes, pycodestyle, isort, bugbear) and format, as pyproject.toml configures."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check_passes():
    r = _ruff("check", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]


def test_ruff_format_leaves_every_file_as_it_is():
    r = _ruff("format", "--check", ".")
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
