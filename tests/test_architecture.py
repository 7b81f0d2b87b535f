"""The import arrows between phasekit's packages: which deployable may import which.

Every .py file under shared/, firmware/, gateway/, server-min/ and tools/ is
parsed (``ast``, so an import inside a function, a try block or an
``importlib.import_module("...")`` with a literal name counts as much as one
at the top) and mapped to its package; an import of another phasekit package
that the table below does not allow fails the test with ``file:line`` and
the arrow. Why the arrows are these:

- ``phasecore`` runs on an ESP32 and everywhere else: it imports no other package.
- ``phaseradio`` (portable radio drivers) and ``phaseuplink`` (the uplink
  contract) are shared by two deployables each: only the core below them.
  ``phaseconf`` (settings files checked against a schema) stands alone.
- ``phasenode`` (the node) gets the core and the radio drivers; it must never
  pull the Pi's or the server's code onto a chip.
- ``phasegate`` (the Pi) and ``phaseserver`` (the server) meet only in
  ``phaseuplink``: the server installs and runs without the gateway.
- ``phasekit`` (the CLI, simulators, harnesses) may import anything.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("shared", "firmware", "gateway", "server-min", "tools")
# Folder (under the repository) -> package, for the tiers that hold one package each.
TIER_PACKAGE = {"firmware": "phasenode", "gateway": "phasegate", "server-min": "phaseserver", "tools": "phasekit"}
ALLOWED = {
    "phasecore": set(),
    "phaseradio": {"phasecore"},
    "phaseuplink": {"phasecore"},
    "phaseconf": set(),
    "phasenode": {"phasecore", "phaseradio"},
    "phasegate": {"phasecore", "phaseradio", "phaseuplink", "phaseconf"},
    "phaseserver": {"phasecore", "phaseuplink", "phaseconf"},
    "phasekit": {"phasecore", "phaseradio", "phaseuplink", "phaseconf", "phasenode", "phasegate", "phaseserver"},
}
PACKAGES = set(ALLOWED)


def package_of(rel):
    """The package a file belongs to, from its path relative to the repository (``shared/<package>/...``)."""
    parts = rel.parts
    if parts[0] == "shared":
        return parts[1] if len(parts) > 2 else None
    return TIER_PACKAGE.get(parts[0])


def imported_packages(tree):
    """``[(line, top-level module)]`` of every absolute import in ``tree``, wherever it stands."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                out.append((node.lineno, node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_dynamic_import(node.func)
        ):
            out.append((node.lineno, node.args[0].value.split(".")[0]))
    return out


def _is_dynamic_import(func):
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def forbidden(source, rel, package):
    """``["file:line: a -> b ..."]`` for each import of a phasekit package ``package`` may not import."""
    tree = ast.parse(source, str(rel))
    out = []
    for line, name in imported_packages(tree):
        if name in PACKAGES and name != package and name not in ALLOWED[package]:
            allowed = ", ".join(sorted(ALLOWED[package])) or "no other package"
            out.append("%s:%d: %s -> %s (%s may import: %s)" % (rel, line, package, name, package, allowed))
    return out


def check_tree(root):
    """``(problems, files per package)`` for every .py file of the tiers under ``root``."""
    problems = []
    counts = {}
    for tier in TIERS:
        for path in sorted((Path(root) / tier).rglob("*.py")):
            rel = path.relative_to(root)
            package = package_of(rel)
            if package not in ALLOWED:
                problems.append("%s: in no package with declared arrows (%r); add it to ALLOWED" % (rel, package))
                continue
            counts[package] = counts.get(package, 0) + 1
            problems.extend(forbidden(path.read_text(encoding="utf-8"), rel, package))
    return problems, counts


def test_every_import_follows_the_allowed_arrows():
    problems, counts = check_tree(ROOT)
    assert not problems, "forbidden imports:\n" + "\n".join(problems)
    # Every package was found and read: an empty walk must not pass for a clean one.
    assert set(counts) == PACKAGES, counts
    assert sum(counts.values()) > 100, counts


def test_the_checker_catches_planted_forbidden_imports():
    planted = (
        "import json\n"
        "from phasecore import cbor\n"  # allowed
        "from . import records\n"  # relative: the same package
        "def handle():\n"
        "    from phasegate import store\n"  # inside a function: still an arrow
        "    return store\n"
        "try:\n"
        "    import phasenode.compat as c\n"  # inside try, dotted
        "except ImportError:\n"
        "    c = None\n"
        "mod = importlib.import_module('phasekit.broker')\n"
    )
    found = forbidden(planted, Path("server-min/phaseserver/x.py"), "phaseserver")
    allowed = "(phaseserver may import: phaseconf, phasecore, phaseuplink)"
    assert found == [
        "server-min/phaseserver/x.py:5: phaseserver -> phasegate " + allowed,
        "server-min/phaseserver/x.py:8: phaseserver -> phasenode " + allowed,
        "server-min/phaseserver/x.py:11: phaseserver -> phasekit " + allowed,
    ], found
    assert forbidden("import phasenode\n", Path("shared/phaseradio/x.py"), "phaseradio") == [
        "shared/phaseradio/x.py:1: phaseradio -> phasenode (phaseradio may import: phasecore)"
    ]
    assert forbidden("from phaseradio import sx127x\n", Path("shared/phasecore/x.py"), "phasecore") == [
        "shared/phasecore/x.py:1: phasecore -> phaseradio (phasecore may import: no other package)"
    ]
    assert forbidden("from phasegate import store\n", Path("tools/phasekit/x.py"), "phasekit") == []


def test_the_tree_walk_reports_a_planted_file_and_a_package_without_arrows(tmp_path):
    (tmp_path / "gateway" / "phasegate").mkdir(parents=True)
    (tmp_path / "gateway" / "phasegate" / "ok.py").write_text("from phaseuplink import records\n")
    (tmp_path / "firmware" / "phasenode").mkdir(parents=True)
    (tmp_path / "firmware" / "phasenode" / "bad.py").write_text('"""doc"""\n\n\ndef f():\n    import phasegate.bus\n')
    (tmp_path / "shared" / "phasenew").mkdir(parents=True)
    (tmp_path / "shared" / "phasenew" / "__init__.py").write_text("")
    problems, counts = check_tree(tmp_path)
    assert problems == [
        "shared/phasenew/__init__.py: in no package with declared arrows ('phasenew'); add it to ALLOWED",
        "firmware/phasenode/bad.py:5: phasenode -> phasegate (phasenode may import: phasecore, phaseradio)",
    ], problems
    assert counts == {"phasegate": 1, "phasenode": 1}
