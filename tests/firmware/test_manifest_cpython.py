"""The node carries exactly what it imports: the manifests against the firmware's real import graph.

firmware/manifest.py (the frozen image) and ``phasekit deploy`` (the .mpy
copy) both take the node's modules from the per-package manifests
(``phasekit.node.manifest``). Here those lists are held to the import graph
of firmware/main.py and boot.py, worked out from the sources with ``ast``
(imports inside functions count: the HAL picks its board's module lazily):
every module the node can import is on it, and nothing else is, so the
transformer Pi's balancer and metrics never take a node's flash or heap.
"""

import ast
from pathlib import Path

import pytest

from phasekit import repo
from phasekit.node import deploy
from phasekit.node.manifest import ManifestError, evaluate, node_files

ROOT = repo.ROOT
FOLDERS = {"phasecore": repo.SHARED, "phaseradio": repo.SHARED, "phasenode": repo.FIRMWARE}
ENTRY = (repo.FIRMWARE / "main.py", repo.FIRMWARE / "boot.py")
# The HAL's modules by where they run; phasenode.hal picks one set at boot from the board file.
CHIP_ONLY = {"phasenode/hal/esp32.py", "phasenode/hal/uart_esp32.py"}
HOST_ONLY = {"phasenode/hal/host.py", "phasenode/hal/pin_host.py", "phasenode/hal/uart_fd.py"}
CPYTHON_ONLY = {"phasenode/hal/uart_host.py"}  # pyserial: in-process CPython runs, never MicroPython


def _module_file(name):
    top = name.split(".")[0]
    p = FOLDERS[top].joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imports(path, modname):
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = pkg + ("." + node.module if node.module else "")
            out.add(base)
            out.update(base + "." + a.name for a in node.names)
    return {m for m in out if m.split(".")[0] in FOLDERS}


def import_closure():
    """Every project file the node can import from its entry points, as lib/ targets ("phasecore/aes.py")."""
    seen = {}
    todo = [("__main__", p) for p in ENTRY]
    while todo:
        name, path = todo.pop()
        if path in seen.values() and name in seen:
            continue
        seen[name] = path
        for mod in _imports(path, name):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                f = _module_file(sub)
                if f is not None and sub not in seen:
                    todo.append((sub, f))
    return {
        "%s/%s" % (n.split(".")[0], p.relative_to(FOLDERS[n.split(".")[0]] / n.split(".")[0]).as_posix())
        for n, p in seen.items()
        if not n.startswith("__")
    }


@pytest.fixture(scope="module")
def closure():
    return import_closure()


def test_the_image_includes_the_port_and_the_three_package_manifests():
    e = evaluate()
    assert e.external == ["$(PORT_DIR)/boards/manifest.py"]
    assert [p.relative_to(ROOT).as_posix() for p in e.manifests] == [
        "firmware/manifest.py",
        "firmware/phasenode/manifest.py",
        "shared/phasecore/manifest.py",
        "shared/phaseradio/manifest.py",
    ]


def test_a_chip_gets_every_module_it_imports_and_nothing_else(closure):
    chip = {f.target for f in node_files()}
    assert chip == closure - HOST_ONLY - CPYTHON_ONLY
    assert CHIP_ONLY <= chip


def test_the_virtual_board_gets_the_host_hal_instead(closure):
    host = {f.target for f in node_files(host=True)}
    assert host == closure - CHIP_ONLY - CPYTHON_ONLY
    assert HOST_ONLY <= host


def test_the_pis_modules_stay_off_the_node(closure):
    for target in closure | {f.target for f in node_files()}:
        assert not target.startswith("phasecore/balancer/") and target != "phasecore/metrics.py", target
    # ... and they do exist, so the test above is not vacuous.
    assert (repo.SHARED / "phasecore" / "balancer" / "__init__.py").is_file()


def test_every_file_named_exists_and_sits_in_its_package(closure):
    for f in node_files() + node_files(host=True):
        assert f.source.is_file() and f.source == FOLDERS[f.package] / f.target, f
        assert f.package in deploy.PACKAGES


def test_deploy_stages_what_the_manifests_name():
    staged = deploy.stage(str(repo.board_path("esp32-devkitc-max485")))
    try:
        mpy = {p for p, _local, _size in staged.files if p.startswith("lib/")}
        assert mpy == {"lib/" + f.target[:-3] + ".mpy" for f in node_files()}
    finally:
        import shutil

        shutil.rmtree(staged.root, ignore_errors=True)


def test_the_reader_refuses_what_it_cannot_honour(tmp_path):
    bad = tmp_path / "manifest.py"
    bad.write_text('package("phasecore", files=("nope.py",), base_path="%s")\n' % repo.SHARED)
    with pytest.raises(ManifestError, match="nope.py"):
        evaluate(bad)
    bad.write_text('require("aioble")\n')
    with pytest.raises(ManifestError, match="require"):
        evaluate(bad)


def test_the_closure_sees_lazy_imports(closure):
    # phasenode.hal imports its board's HAL inside a function: the closure must follow it.
    assert "phasenode/hal/esp32.py" in closure and "phasenode/hal/host.py" in closure
    assert Path(repo.FIRMWARE / "phasenode" / "hal" / "__init__.py").is_file()
