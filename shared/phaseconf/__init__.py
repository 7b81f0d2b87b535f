"""Settings files: TOML tables checked once against a schema, every error naming file, line, table and key.

The transformer Pi (``phasegate.config``) and the operations server
(``phaseserver.config``) each describe their file as a schema and load it
here, so both refuse the same way: ``gateway.toml:14: [bus] baud = 12345:
expected one of 9600, 19200, 38400, 57600, 115200``. Unknown tables and keys
are errors (a typo must not fall back to a default); a value of the wrong
type is an error (``true`` is not a number); a number is finite and inside
its stated range, and is handed over in the type it will be used in.

A schema maps ``table -> key -> (type, default or REQUIRED, check or None)``;
``check(value)`` returns None when the value is good, else what was expected.
The checks below cover what both files need::

    SCHEMA = {"bus": {"port": (str, REQUIRED, None), "baud": (int, 115200, one_of(9600, 115200))}}
    settings = load("gateway.toml", SCHEMA, required=("bus",), error=ConfigError)
    settings.table("bus")["baud"]

Public: ``load``, ``Settings``, ``REQUIRED``, ``SettingsError``, ``line_of``,
and the checks ``ident``, ``number``, ``integer``, ``positive``,
``non_negative``, ``port``, ``one_of``.
"""

import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = (
    "load",
    "Settings",
    "REQUIRED",
    "SettingsError",
    "line_of",
    "ident",
    "number",
    "integer",
    "positive",
    "non_negative",
    "port",
    "one_of",
    "IDENT",
)

REQUIRED = object()
IDENT = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# Quoted values are cut here in messages: a hostile or mistaken file cannot flood a log.
_QUOTE_MAX = 80
# No setting of either file is meaningfully larger; it keeps every number far from float overflow.
_HUGE = 1e12
# A settings file is a few kB; a larger one is not one (and would cost time to parse).
_MAX_FILE = 1 << 20

# A value as ``tomllib`` decoded it (str, int, float, bool, date and time, list, table): its type is
# what the checks find out at run time, so statically it is any type.
Check = Callable[[Any], str | None]
# One key of a schema: ``(type or tuple of types, default or REQUIRED, check or None)``.
Spec = tuple[type | tuple[type, ...], object, Check | None]
Schema = Mapping[str, Mapping[str, Spec]]


class SettingsError(ValueError):
    """A settings file that cannot be read or breaks its schema (used when the caller names no error class)."""


def _quote(value: object) -> str:
    # Never raises: CPython refuses to print an int of more than 4300 digits, and a deep array
    # would take repr to the recursion limit; neither may turn a config error into a crash.
    if isinstance(value, int) and not isinstance(value, bool) and not -(10**30) < value < 10**30:
        return "<an integer of %d bits>" % value.bit_length()
    if isinstance(value, list) and len(value) > 8:
        value = value[:8] + ["..."]
    elif isinstance(value, dict) and len(value) > 8:
        value = dict(list(value.items())[:8])
    try:
        text = repr(value)
    except (ValueError, RecursionError, MemoryError):
        return "<%s>" % type(value).__name__
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "...(%d characters)" % len(text)


# ---------------------------------------------------------------- checks


def ident(v: object) -> str | None:
    """1-32 letters, digits, '_', '.' or '-': names that also appear in MQTT topics and file names."""
    if not isinstance(v, str) or not IDENT.match(v):
        return "expected 1-32 letters, digits, '_', '.' or '-'"
    return None


def _finite(v: object) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "expected a number"
    if isinstance(v, float) and not math.isfinite(v):
        return "expected a finite number"
    return None


def number(lo: float, hi: float, unit: str = "") -> Check:
    """A finite number lo..hi (int or float)."""

    def check(v: Any) -> str | None:
        problem = _finite(v)
        if problem is None and not lo <= v <= hi:
            problem = "expected %s..%s%s" % (_num(lo), _num(hi), unit)
        return problem

    return check


def integer(lo: int, hi: int, unit: str = "") -> Check:
    """An integer lo..hi."""

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return "expected an integer"
        if not lo <= v <= hi:
            return "expected %d..%d%s" % (lo, hi, unit)
        return None

    return check


def positive(v: Any) -> str | None:
    """A finite number above 0 (and at most 10**12)."""
    problem = _finite(v)
    if problem is None and not 0 < v <= _HUGE:
        problem = "expected a positive number"
    return problem


def non_negative(v: Any) -> str | None:
    """A finite number 0 or more (and at most 10**12)."""
    problem = _finite(v)
    if problem is None and not 0 <= v <= _HUGE:
        problem = "expected a number >= 0"
    return problem


def port(v: object) -> str | None:
    """A TCP port."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        return "expected a TCP port 1..65535"
    return None


def one_of(*choices: object) -> Check:
    def check(v: object) -> str | None:
        if v not in choices or isinstance(v, bool) != any(isinstance(c, bool) for c in choices):
            return "expected one of " + ", ".join(repr(c) for c in choices)
        return None

    return check


def _num(x: float) -> str:
    return "%d" % x if float(x).is_integer() else "%g" % x


# ---------------------------------------------------------------- loading


class Settings:
    """Validated settings: ``table("bus")`` -> dict with defaults filled in; ``has("lora")``; ``resolve(path)``."""

    def __init__(self, path: str | os.PathLike[str], tables: dict[str, dict[str, Any]], lines: list[str]):
        self.path = Path(path)
        self._tables = tables
        self._lines = lines

    def has(self, name: str) -> bool:
        return name in self._tables

    def table(self, name: str) -> dict[str, Any]:
        # Any: each key's value has the type its schema entry names, which differs from key to key.
        return dict(self._tables[name])

    def tables(self) -> list[str]:
        return sorted(self._tables)

    def resolve(self, relpath: str | os.PathLike[str]) -> Path:
        """A path from the file, relative to the file's folder when not absolute."""
        p = Path(relpath)
        return p if p.is_absolute() else self.path.parent / p

    def line(self, table: str, key: str | None = None) -> int:
        """The file's line of ``key`` in ``[table]`` (of the header when key is None), for errors of cross-checks."""
        return line_of(self._lines, table, key)


def defaults(schema: Schema, name: str, error: type[Exception] = SettingsError) -> dict[str, Any]:
    """The defaults of a table that has no required key."""
    out: dict[str, Any] = {}
    for key, (_, default, _) in schema[name].items():
        if default is REQUIRED:
            raise error("[%s] has required key '%s': it has no defaults" % (name, key))
        out[key] = default
    return out


def load(
    path: str | os.PathLike[str], schema: Schema, required: Iterable[str] = (), error: type[Exception] = SettingsError
) -> Settings:
    """Read and check ``path`` against ``schema``; returns ``Settings``, raises ``error`` naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise error("%s: cannot read: %s" % (path, getattr(e, "strerror", None) or e)) from e
    if len(text) > _MAX_FILE:
        raise error("%s: %d characters; a settings file is at most %d" % (path, len(text), _MAX_FILE))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error("%s: not valid TOML: %s" % (path, str(e)[:200])) from e
    except (RecursionError, ValueError, MemoryError) as e:
        # tomllib recurses per nesting level, and int() refuses very long numbers (ValueError).
        raise error("%s: not a usable TOML file: %s" % (path, type(e).__name__)) from e
    lines = text.splitlines()
    tables: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if name not in schema:
            raise error(
                "%s:%d: unknown table [%s]; known: %s"
                % (path, line_of(lines, name, None), _cut(name), ", ".join(sorted(schema)))
            )
        if not isinstance(values, dict):
            raise error("%s:%d: %s must be a table" % (path, line_of(lines, None, name), name))
        tables[name] = _check_table(path, lines, schema, name, values, error)
    for name in required:
        if name not in tables:
            raise error("%s: missing table [%s]" % (path, name))
    return Settings(path, tables, lines)


def _cut(text: object) -> str:
    s = str(text)
    return s if len(s) <= _QUOTE_MAX else s[:_QUOTE_MAX] + "..."


def _check_table(
    path: Path, lines: Sequence[str], schema: Schema, name: str, values: dict[str, Any], error: type[Exception]
) -> dict[str, Any]:
    table = schema[name]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in table:
            raise error(
                "%s:%d: [%s] unknown key '%s'; known: %s"
                % (path, line_of(lines, name, key), name, _cut(key), ", ".join(sorted(table)))
            )
        typ, _, check = table[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        problem: str | None = None
        if isinstance(value, bool) and bool not in types:
            problem = "expected %s, got a boolean" % _type_name(typ)
        elif not isinstance(value, types):
            problem = "expected %s, got %s" % (_type_name(typ), type(value).__name__)
        elif isinstance(value, float) and not math.isfinite(value):
            problem = "expected a finite number"
        elif check is not None:
            problem = check(value)
        if problem:
            raise error(
                "%s:%d: [%s] %s = %s: %s" % (path, line_of(lines, name, key), name, key, _quote(value), problem)
            )
        out[key] = value
    for key, (_, default, _) in table.items():
        if key not in out:
            if default is REQUIRED:
                raise error("%s:%d: [%s] missing required key '%s'" % (path, line_of(lines, name, None), name, key))
            out[key] = default
    return out


def _type_name(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")


def line_of(lines: Iterable[str], table: str | None, key: str | None) -> int:
    """1-based line of ``key`` inside ``[table]`` (or of the table header when key is None); 0 if not found."""
    current: str | None = None
    for i, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1)
            if key is None and current == table:
                return i
            continue
        if key is not None and (table is None or current == table):
            if re.match(r"^\s*%s\s*=" % re.escape(key), line):
                return i
    return 0
