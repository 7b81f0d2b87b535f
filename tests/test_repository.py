"""The repository stands alone: nothing in it reaches outside the checkout.

A clone of phasekit has no ``../shared`` beside it (that folder is the
developers' notes, never the code's); test vectors and data live in
tests/vectors and are named in its README.
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# "../shared" in any spelling a path can take: a string, a Path join, os.path.join.
OUTSIDE = re.compile(r"""\.\./shared|parent\s*/\s*["']shared["']|["']\.\.["']\s*,\s*["']shared["']""")


# MicroPython manifest syntax (firmware/manifest.py, and the docs and tests that
# quote it) resolves paths against the manifest's folder, firmware/: there
# "../shared" is this repository's shared/. Checked, not assumed.
MANIFEST_PATH = re.compile(r"""(base_path\s*=\s*|include\()["']([^"'$]+)["']""")
MANIFEST_HOME = ROOT / "firmware"


def _inside_manifest(path, line):
    m = MANIFEST_PATH.search(line)
    return bool(m) and (MANIFEST_HOME / m.group(2)).resolve().is_relative_to(ROOT)


def _tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_no_file_refers_to_the_shared_folder_beside_the_checkout():
    this = Path(__file__).resolve()
    found = []
    for path in _tracked_files():
        if path == this or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and not _inside_manifest(path, line):
                found.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()[:120]))
    assert not found, "files that reach outside the repository:\n" + "\n".join(found)


def test_every_vector_file_is_named_in_a_readme():
    vectors = ROOT / "tests" / "vectors"
    readmes = "\n".join(p.read_text() for p in vectors.rglob("README.md"))
    unnamed = [
        str(p.relative_to(vectors))
        for p in vectors.rglob("*.json")
        if p.name not in readmes and p.parent.name not in readmes
    ]
    assert not unnamed, "vector files no README names (source, licence): %s" % unnamed


def test_the_pattern_finds_what_it_must():
    # The guard above is only as good as its pattern.
    for line in (
        'open("../shared/vectors/x.json")',
        'ROOT.parent / "shared" / "vectors"',
        "os.path.join(root, '..', 'shared')",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search('base_path="shared"')
    manifest = ROOT / "firmware" / "manifest.py"
    assert _inside_manifest(manifest, 'package("phasecore", base_path="../shared")')
    assert not _inside_manifest(manifest, 'package("phasecore", base_path="../../shared")')
    assert not _inside_manifest(manifest, 'open("../shared/vectors/x.json")')
