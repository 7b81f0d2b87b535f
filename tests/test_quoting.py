"""No error or log message of the deployables formats a value with ``%r``: quoted input goes through ``quote``.

``%r`` of an attacker's value is how an error message becomes the attack: the
repr of a 10,000-digit integer raises ValueError on CPython (so a decoder's
typed error turns into an untyped crash), and the repr of a long string or a
deep structure makes a message as large as the input. ``phasecore.errors.quote``
(and ``phaseconf``'s own, which may import nothing of ours) bounds both and
never raises. This test holds the rule for every module of the packages that
take input from outside, so a new message cannot bring ``%r`` back; ``__repr__``
methods of the packages' own objects are left alone (they quote what they hold).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "shared/phasecore",
    "shared/phaseradio",
    "shared/phaseuplink",
    "shared/phaseconf",
    "firmware/phasenode",
    "gateway/phasegate",
    "server-min/phaseserver",
)


def _rel(path):
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name


def _offences(path):
    tree = ast.parse(path.read_text())
    reprs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__repr__":
            reprs.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if id(node) in reprs:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "%r" in node.value.replace("%%", ""):
            out.append("%s:%d: %%r in %r" % (_rel(path), node.lineno, node.value[:60]))
        if isinstance(node, ast.FormattedValue) and node.conversion == ord("r"):
            out.append("%s:%d: !r in an f-string" % (_rel(path), node.lineno))
    return out


def test_no_message_formats_a_value_with_percent_r():
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found.extend(_offences(path))
    assert not found, "use phasecore.errors.quote (%s instead of %r):\n" + "\n".join(found)


def test_the_rule_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text('def f(x):\n    raise ValueError("bad %r" % (x,))\n\n\ndef g(x):\n    return f"{x!r}"\n')
    assert len(_offences(bad)) == 2
