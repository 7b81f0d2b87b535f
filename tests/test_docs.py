"""The README and docs/ stay true: links resolve, commands parse with the real CLI, benchmark options exist.

- Every relative link in README.md, docs/**/*.md and boards/README.md names
  a file that exists, and a ``#fragment`` names a heading of its target.
- Every ``phasekit`` command line in README.md (shell blocks and the command
  cells of its tables) and in the shell blocks of docs/ parses with
  ``phasekit.cli.build_parser``; ``--help``/``--version`` exit 0.
  That covers ``phasekit bench NAME`` options too: each benchmark adds its own.
- The README keeps its two set-up commands, links every document in docs/ and
  lists every benchmark of ``phasekit bench``.
"""

from pathlib import Path

import pytest

from doccheck import anchors, phasekit_commands, relative_links
from phasekit.cli import build_parser
from phasekit.commands.bench import BENCHES

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


def test_readme_keeps_its_set_up_commands_and_links_every_doc():
    text = README.read_text()
    assert "make demo    #" in text and "make test    #" in text
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        assert doc.resolve() in linked, "README does not link %s" % _rel(doc)
    for name, _module, _summary in BENCHES:
        assert "phasekit bench %s" % name in text, "README does not list `phasekit bench %s`" % name
