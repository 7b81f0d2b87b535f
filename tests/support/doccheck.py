"""Helpers for the tests that keep the documentation true (tests/test_docs.py, tests/tools/test_hardware_guide.py, ...).

- ``phasekit_commands(path)``: every ``phasekit`` command line in a Markdown
  file's ```` ```sh ```` blocks, as ``(line, argv)``; ``argv`` is what the CLI
  parser gets (``build_parser().parse_args(argv)``). A command counts when
  ``phasekit`` starts a shell segment or is a venv path ending ``bin/phasekit``
  (``sudo -u phasekit /opt/phasekit/.venv/bin/phasekit gateway check ...``);
  backslash continuations are joined, ``&&``, ``;`` and ``|`` split segments;
  with ``tables=True`` also code spans in table rows.
- ``relative_links(path)``: every Markdown link that is not a URL, outside code.
- ``anchors(path)``: the heading anchors a Markdown file offers, as GitHub makes them.
- ``check_defaults(table, rows, schema)``: a guide's reference table of a config
  table names every key of a phaseconf schema table and no other, each default as
  the schema has it.
"""

import re
import shlex
import tomllib
from pathlib import Path

from phaseconf import REQUIRED

__all__ = ("sh_blocks", "phasekit_commands", "relative_links", "anchors", "slug", "check_defaults")

_FENCE = re.compile(r"^( *)```([^\n`]*)\n(.*?)^\1```", re.S | re.M)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_SEPARATORS = ("&&", "||", ";", "|")


def sh_blocks(path):
    """The bodies of the file's ```sh fences (indentation of a fence inside a list item removed)."""
    out = []
    for indent, lang, body in _FENCE.findall(Path(path).read_text()):
        if lang.strip() == "sh":
            out.append(
                "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in body.splitlines())
            )
    return out


def _logical_lines(block):
    lines, cur = [], ""
    for raw in block.splitlines():
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        lines.append((cur + raw).strip())
        cur = ""
    if cur:
        lines.append(cur.strip())
    return [line for line in lines if line]


def _segments(tokens):
    seg = []
    for t in tokens:
        if t in _SEPARATORS:
            if seg:
                yield seg
            seg = []
        else:
            seg.append(t)
    if seg:
        yield seg


def _commands_in(line, program):
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    out = []
    for seg in _segments(list(lex)):
        for i, tok in enumerate(seg):
            if (i == 0 and tok == program) or tok.endswith("bin/" + program):
                out.append(seg[i + 1 :])
                break
    return out


def _table_spans(text):
    rows = [line for line in _FENCE.sub("", text).splitlines() if line.lstrip().startswith("|")]
    return re.findall(r"`([^`\n]+)`", "\n".join(rows))


def phasekit_commands(path, tables=False):
    """``[(line, argv), ...]`` for every phasekit command in the file's ```sh blocks.

    ``tables``: also the code spans in Markdown table rows (a command column,
    `` | `phasekit bench core --quick` | ``); spans in running text name verbs
    more often than they give whole command lines, so they are left out.
    """
    out = [
        (line, argv)
        for block in sh_blocks(path)
        for line in _logical_lines(block)
        for argv in _commands_in(line, "phasekit")
    ]
    if tables:
        # A bare `phasekit` in a table names the package, not a command.
        out += [
            (span, argv)
            for span in _table_spans(Path(path).read_text())
            for argv in _commands_in(span, "phasekit")
            if argv
        ]
    return out


def _strip_code(text):
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path):
    """Link targets in the file that are not URLs (``http:``, ``mailto:``, ...), code excluded."""
    out = []
    for target in _LINK.findall(_strip_code(Path(path).read_text())):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue
        out.append(target)
    return out


def slug(title):
    """GitHub's heading anchor: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    title = re.sub(r"`", "", title.strip().lower())
    title = re.sub(r"[^\w\- ]", "", title)
    return title.replace(" ", "-")


def anchors(path):
    """The anchors of the file's headings (repeats get -1, -2, ... as on GitHub)."""
    seen = {}
    out = set()
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", _FENCE.sub("", Path(path).read_text()), re.M):
        base = slug(title)
        n = seen.get(base, 0)
        out.add(base if n == 0 else "%s-%d" % (base, n))
        seen[base] = n + 1
    return out


def check_defaults(table, rows, schema):
    """Assert ``rows`` ({key: default cell}, from a guide) match ``schema`` ({key: (type, default, check)}).

    The same keys; a key without a default reads ``required``; any other cell,
    read as a TOML value, equals the default and has its type (an integer may
    stand for a float).
    """
    assert set(rows) == set(schema), "missing %s, unknown %s" % (
        sorted(set(schema) - set(rows)),
        sorted(set(rows) - set(schema)),
    )
    for key, (_typ, default, _check) in schema.items():
        cell = rows[key]
        if default is REQUIRED:
            assert cell == "required", (table, key, cell)
            continue
        value = tomllib.loads("v = %s" % cell)["v"]
        assert value == default and type(value) is type(default) or (isinstance(default, float) and value == default), (
            table,
            key,
            cell,
            default,
        )
