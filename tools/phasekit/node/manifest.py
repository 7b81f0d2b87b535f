"""Which files go onto a node: firmware/manifest.py and the per-package manifests it includes, evaluated.

Those are MicroPython manifest files (``tools/manifestfile.py`` in the
MicroPython tree builds a frozen image from them). This runs the same files
with the part of the manifest API they use (``include`` with options,
``package`` with ``files`` and ``base_path``, ``module``, ``options.defaults``),
resolving relative paths against the including manifest's folder as the
tool does, so ``phasekit deploy``, the node benchmark and the tests copy
exactly the modules a frozen image holds. Includes of ``$(...)`` paths (the
port's own manifest) are recorded in ``external``, not followed.

    files = node_files()              # a chip: [NodeFile("phasecore", "phasecore/aes.py", Path), ...]
    files = node_files(host=True)     # the virtual board (MicroPython unix port)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, NoReturn

from phasekit import repo
from phasekit.errors import PhasekitError

__all__ = ("node_files", "evaluate", "NodeFile", "Evaluated", "ManifestError", "FIRMWARE_MANIFEST")

FIRMWARE_MANIFEST = repo.FIRMWARE / "manifest.py"

class NodeFile(NamedTuple):
    """One file a node carries."""

    package: str  # "phasecore"
    target: str  # path under lib/ ("phasecore/aes.py")
    source: Path  # the file in the checkout


class ManifestError(PhasekitError):
    """A manifest names a file that does not exist, or uses what this reader does not support."""


class _Options:
    """The ``options`` a manifest sees: keyword arguments of the ``include`` that ran it, plus defaults."""

    def __init__(self, **kw: object):
        self.__dict__.update(kw)

    def defaults(self, **kw: object) -> None:
        for k, v in kw.items():
            self.__dict__.setdefault(k, v)

    def __getattr__(self, name: str) -> None:
        return None  # an option nobody set, as manifestfile.py's IncludeOptions


class Evaluated:
    """What a manifest and its includes freeze: ``files`` (NodeFile list, in order) and ``external`` includes."""

    def __init__(self) -> None:
        self.files: list[NodeFile] = []
        self.external: list[str] = []  # includes of the port's own manifests ("$(PORT_DIR)/...")
        self.manifests: list[Path] = []  # every manifest run, in order


def evaluate(manifest: str | os.PathLike[str] = FIRMWARE_MANIFEST, **options: object) -> Evaluated:
    """Run ``manifest`` (and what it includes) with ``options``; returns ``Evaluated``."""
    out = Evaluated()
    _run(Path(manifest).resolve(), _Options(**options), out)
    return out


def node_files(host: bool = False, manifest: str | os.PathLike[str] = FIRMWARE_MANIFEST) -> list[NodeFile]:
    """The files a node carries: for a chip, or ``host=True`` for the virtual board."""
    return evaluate(manifest, host=host).files


def _run(path: Path, options: _Options, out: Evaluated) -> None:
    if not path.is_file():
        raise ManifestError("manifest %s does not exist" % path)
    out.manifests.append(path)
    folder = path.parent

    def include(manifest_path: str | Iterable[str], **kw: object) -> None:
        for one in ([manifest_path] if isinstance(manifest_path, str) else manifest_path):
            if "$(" in one:
                out.external.append(one)
                continue
            target = (folder / one).resolve()
            if target.is_dir():
                target = target / "manifest.py"
            _run(target, _Options(**kw), out)

    def package(
        package_path: str, files: Iterable[str] | None = None, base_path: str = ".", opt: int | None = None
    ) -> None:
        base = (folder / base_path).resolve()
        root = base / package_path
        if files is None:
            names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
        else:
            names = list(files)
        for name in names:
            source = root / name
            if not source.is_file():
                raise ManifestError("%s: package(%r) names %s, which does not exist" % (path, package_path, source))
            out.files.append(NodeFile(package_path.split("/")[0], "%s/%s" % (package_path, name), source))

    def module(module_path: str, base_path: str = ".", opt: int | None = None) -> None:
        source = (folder / base_path / module_path).resolve()
        if not source.is_file():
            raise ManifestError("%s: module(%r) does not exist" % (path, module_path))
        out.files.append(NodeFile(Path(module_path).stem, module_path, source))

    def unsupported(name: str) -> Callable[..., NoReturn]:
        def call(*a: object, **k: object) -> NoReturn:
            raise ManifestError("%s: %s() is not used by phasekit's manifests and not read here" % (path, name))
        return call

    namespace: dict[str, object] = {"include": include, "package": package, "module": module, "options": options}
    for name in ("require", "freeze", "freeze_as_str", "freeze_as_mpy", "freeze_mpy", "add_library", "metadata"):
        namespace[name] = unsupported(name)
    exec(compile(path.read_text(), str(path), "exec"), namespace)
