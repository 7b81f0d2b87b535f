"""firmware/manifest.py freezes exactly what `phasekit deploy` copies to a chip, from packages that exist.

No MicroPython build here: the manifest is run as MicroPython's manifest tool
runs it (tools/manifestfile.py: exec with its folder as the working
directory), with include/package/module/freeze/require replaced by
recorders, and what the tool would freeze is worked out from the records the
way the tool's ``package()`` does (every .py under base_path/package, or the
``files`` given, relative to the package).
"""

import os
from pathlib import Path

import pytest

from phasekit.node import deploy

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "firmware" / "manifest.py"


class Recorder:
    def __init__(self):
        self.calls = []

    def namespace(self):
        ns = {}
        for name in ("include", "package", "module", "freeze", "require", "metadata", "add_library", "c_module",
                     "freeze_as_mpy", "freeze_mpy", "freeze_as_str"):
            ns[name] = self._recorder(name)
        return ns

    def _recorder(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
        return record

    def of(self, name):
        return [(a, k) for n, a, k in self.calls if n == name]


def evaluate(text):
    rec = Recorder()
    before = os.getcwd()
    os.chdir(MANIFEST.parent)  # as manifestfile.py's include() does
    try:
        exec(compile(text, str(MANIFEST), "exec"), rec.namespace())
    finally:
        os.chdir(before)
    return rec


@pytest.fixture(scope="module")
def recorded():
    return evaluate(MANIFEST.read_text())


def frozen_files(args, kwargs):
    """What the manifest tool's package(package_path, files=None, base_path=".") freezes: {target path: source}."""
    names = ("package_path", "files", "base_path", "opt")
    call = dict(zip(names, args))
    call.update(kwargs)
    pkg = call["package_path"]
    base = (MANIFEST.parent / call.get("base_path", ".")).resolve()
    files = call.get("files")
    if files is None:
        found = sorted((base / pkg).rglob("*.py"))
        return {p.relative_to(base).as_posix(): p for p in found}
    return {"%s/%s" % (pkg, f): base / pkg / f for f in files}


def package_problems(rec):
    """Packages named that deploy does not copy, or not from deploy's folders; [] when they agree."""
    packages = {args[0]: kwargs for args, kwargs in rec.of("package")}
    problems = []
    if set(packages) != {name for name, _ in deploy.PACKAGES}:
        problems.append("packages %s, deploy copies %s" % (sorted(packages), [n for n, _ in deploy.PACKAGES]))
    for name, folder in deploy.PACKAGES:
        if name in packages:
            base = (MANIFEST.parent / packages[name].get("base_path", ".")).resolve()
            if (base / name).resolve() != folder.resolve() or not (base / name / "__init__.py").is_file():
                problems.append("%s from %s, deploy takes %s" % (name, base / name, folder))
    return problems


def chip_files():
    """deploy.stage for a chip: every .py of both packages but NEVER and HOST_ONLY (device-style names)."""
    skip = deploy.NEVER + deploy.HOST_ONLY
    out = set()
    for name, folder in deploy.PACKAGES:
        for src in folder.rglob("*.py"):
            rel = "%s/%s" % (name, src.relative_to(folder).as_posix())
            if rel not in skip:
                out.add(rel)
    return out


def frozen_set(rec):
    frozen = {}
    for args, kwargs in rec.of("package"):
        frozen.update(frozen_files(args, kwargs))
    return frozen


def test_includes_the_ports_own_manifest_and_nothing_else_from_outside(recorded):
    assert recorded.of("include") == [(("$(PORT_DIR)/boards/manifest.py",), {})]
    for other in ("module", "freeze", "require", "c_module", "freeze_as_mpy", "freeze_mpy", "freeze_as_str"):
        assert recorded.of(other) == [], other


def test_names_exactly_the_packages_deploy_copies_from_their_real_folders(recorded):
    assert package_problems(recorded) == []


def test_freezes_what_deploy_puts_on_a_chip(recorded):
    frozen = frozen_set(recorded)
    for target, source in frozen.items():
        assert source.is_file(), (target, source)
    assert set(frozen) == chip_files()
    # The chip's HAL is in, the host's is out.
    assert "phasenode/hal/esp32.py" in frozen and "phasenode/hal/uart_esp32.py" in frozen
    assert not any(t in frozen for t in deploy.HOST_ONLY + deploy.NEVER)


def test_the_checks_catch_a_wrong_manifest():
    text = MANIFEST.read_text()
    misspelt = evaluate(text.replace('package("phasecore"', 'package("phasecor"'))
    assert package_problems(misspelt)
    moved = evaluate(text.replace('base_path="../shared"', 'base_path="../firmware"'))
    assert package_problems(moved)
    leaky = evaluate(text.replace('"hal/pin_host.py", ', ""))
    assert "phasenode/hal/pin_host.py" in set(frozen_set(leaky)) - chip_files()
