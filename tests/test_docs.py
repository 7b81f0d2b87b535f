"""The README and docs/ stay true: links resolve, commands parse with the real CLI, benchmark options exist.

- Every relative link in README.md, docs/**/*.md and boards/README.md names
  a file that exists, and a ``#fragment`` names a heading of its target.
- Every ``phasekit`` command line in README.md (shell blocks and the command
  cells of its tables) and in the shell blocks of docs/ parses with
  ``phasekit.cli.build_parser``; ``--help``/``--version`` exit 0.
- Every ``bench/X.py`` the README shows exists, and the options given to it
  (directly or through ``phasekit bench VERB``) are in the script's ``--help``.
- The README keeps its two set-up commands and links every document in docs/.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from doccheck import anchors, phasekit_commands, relative_links, script_commands
from phasekit.cli import build_parser
from phasekit.commands import bench_scripts

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "boards" / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def _rel(p):
    return p.relative_to(ROOT).as_posix()


def _links():
    return [(doc, target) for doc in DOCS for target in relative_links(doc)]


def _commands():
    out = [(README, line, argv) for line, argv in phasekit_commands(README, tables=True)]
    for doc in DOCS[1:]:
        out += [(doc, line, argv) for line, argv in phasekit_commands(doc)]
    return out


@pytest.mark.parametrize("doc,target", _links(), ids=["%s -> %s" % (_rel(d), t) for d, t in _links()])
def test_relative_link_resolves(doc, target):
    path, _, fragment = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), "%s links to %s, which does not exist" % (_rel(doc), target)
    if fragment:
        assert dest.suffix == ".md", "%s: #%s into a file that is not Markdown" % (_rel(doc), fragment)
        assert fragment in anchors(dest), "%s: no heading #%s in %s" % (_rel(doc), fragment, _rel(dest))


@pytest.mark.parametrize("doc,line,argv", _commands(), ids=["%s: %s" % (_rel(d), line) for d, line, _ in _commands()])
def test_phasekit_command_parses(doc, line, argv):
    parser = build_parser()
    if any(a in ("-h", "--help", "--version") for a in argv[:2]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0, line
        return
    args = parser.parse_args(argv)  # argparse exits (status 2) on anything it does not know
    assert callable(args.func), line


def test_there_is_something_to_check():
    # The checks above are not vacuous: the README shows commands of every audience.
    verbs = {argv[0] for doc, _line, argv in _commands() if doc == README}
    assert {"demo", "flash", "provision", "deploy", "gateway", "bench", "board"} <= verbs
    assert len(_links()) >= 20


def _script_help(script):
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60,
                       cwd=str(ROOT))
    assert r.returncode == 0, (script, r.stderr)
    return r.stdout


def _bench_invocations():
    """(line, script, args) for `python bench/X.py ARGS` and `phasekit bench VERB ARGS` in the README."""
    out = list(script_commands(README))
    scripts = {name: "bench/" + script for name, script, _ in bench_scripts.SCRIPTS}
    for line, argv in phasekit_commands(README, tables=True):
        if len(argv) >= 2 and argv[0] == "bench" and argv[1] in scripts:
            out.append((line, scripts[argv[1]], argv[2:]))
    return out


@pytest.mark.parametrize("line,script,args", _bench_invocations(), ids=[x[0] for x in _bench_invocations()])
def test_benchmark_options_shown_exist(line, script, args):
    assert (ROOT / script).is_file(), line
    if not any(a.startswith("-") for a in args):
        return
    usage = _script_help(script)
    for a in args:
        if a.startswith("-") and a not in ("-h", "--help"):
            assert re.search(r"(^|[\s\[,])%s\b" % re.escape(a.split("=")[0]), usage), (line, a)


def test_readme_keeps_its_set_up_commands_and_links_every_doc():
    text = README.read_text()
    assert "make demo    #" in text and "make test    #" in text
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        assert doc.resolve() in linked, "README does not link %s" % _rel(doc)
    for script in sorted((ROOT / "bench").glob("*.py")):
        assert "bench/%s" % script.name in text, "README does not list bench/%s" % script.name
