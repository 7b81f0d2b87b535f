"""The CPython-only packages are typed: every public function annotated, and mypy agrees with the annotations.

The portable packages (phasecore, phaseradio, phasenode) are left out: they run
on MicroPython, which would have to parse the annotations and the ``typing``
imports (docs/architecture.md). The packages checked, and mypy's settings,
are in pyproject.toml ``[tool.mypy]``.
"""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def _public_functions(path):
    """``(line, name)`` of every public function and method of ``path`` that lacks an annotation."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
                missing = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
                if node.returns is None and node.name != "__init__":
                    missing.append("return")
                if missing:
                    out.append((node.lineno, prefix + node.name, missing))

    visit(tree.body, "")
    return out


def test_every_public_function_is_annotated():
    found = []
    for folder in CONFIG["files"]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "manifest.py":
                continue
            for line, name, missing in _public_functions(path):
                found.append("%s:%d: %s (%s)" % (path.relative_to(ROOT), line, name, ", ".join(missing)))
    assert not found, "%d public functions without annotations:\n%s" % (len(found), "\n".join(found[:60]))


def test_mypy_finds_no_error():
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_the_annotation_check_sees_what_is_missing(tmp_path):
    p = tmp_path / "m.py"
    p.write_text(
        "def f(a, b: int) -> int:\n    return b\n\nclass C:\n    def g(self) -> None: ...\n"
        "    def h(self, x):\n        pass\n    def _private(self, y):\n        pass\n"
    )
    assert _public_functions(p) == [(1, "f", ["a"]), (6, "C.h", ["x", "return"])]
