"""One table of wire codes, checked across the repository (CPython: it reads the sources).

No module but ``phasecore.codes`` defines a name of it with a value of its
own, nor spells one of its names (reasons, events, status bits, operations,
outcomes) as a string: a second table would drift from the first.
"""

import ast
from pathlib import Path

from phasecore import codes

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("shared", "firmware", "gateway", "server-min", "tools")
CODES = ROOT / "shared" / "phasecore" / "codes.py"


def _public_names():
    return {n for n in dir(codes) if n.isupper() and not n.startswith("_")}


def _table_strings():
    return (
        set(codes.REASON_NAMES[1:])
        | set(codes.EVENT_NAMES.values())
        | set(codes.STATUS_BITS)
        | set(codes.OP_NAMES.values())
        | set(codes.OUTCOME_NAMES)
    )


def _docstrings(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _literal(node):
    # A value of its own: a number, text, or a tuple/list/dict/set of them (not a name of codes).
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "const":
        return all(_literal(a) for a in node.args)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.keys) and all(
            k is not None and _literal(k) and _literal(v) for k, v in zip(node.keys, node.values)
        )
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    return False


def test_no_module_keeps_a_second_table_of_the_codes():
    names = _public_names()
    strings = _table_strings()
    found = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == CODES:
                continue
            tree = ast.parse(path.read_text(), str(path))
            docs = _docstrings(tree)
            where = path.relative_to(ROOT)
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name) and t.id in names and _literal(node.value):
                            found.append("%s:%d: %s defined again" % (where, node.lineno, t.id))
                        if isinstance(t, ast.Name) and t.id == "__all__":
                            docs.update(id(e) for e in ast.walk(node.value))
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and node.value in strings
                    and id(node) not in docs
                ):
                    found.append("%s:%d: %r spelled out" % (where, node.lineno, node.value))
    assert not found, "\n".join(found)


def test_the_scan_would_see_a_second_table():
    tree = ast.parse('REASON_NAMES = ("OK", "INVALID_PHASE")\nPHASE_A = const(1)\nPHASE_B = codes.PHASE_B\n')
    defined = [n.targets[0].id for n in tree.body if _literal(n.value)]
    assert defined == ["REASON_NAMES", "PHASE_A"]
