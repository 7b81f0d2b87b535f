"""The gateway's one configuration file (TOML), validated at start.

Every error names the file, the line, the table and the key, e.g.
``gateway.toml:14: [bus] baud = 12345: expected one of 9600, 19200, 38400, 57600, 115200``.
Unknown tables and keys are errors too (a typo must not silently fall back to a
default). See docs/install-gateway.md for every key with its default.
"""

import re
import tomllib
from pathlib import Path

BAUDS = (9600, 19200, 38400, 57600, 115200)
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class ConfigError(ValueError):
    """The configuration file is missing, not TOML, or breaks the schema."""


def _ident(v):
    if not isinstance(v, str) or not _ID.match(v):
        return "expected 1-32 letters, digits, '_', '.' or '-'"


def _baud(v):
    if v not in BAUDS:
        return "expected one of " + ", ".join(str(b) for b in BAUDS)


def _positive(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        return "expected a positive number"


def _port(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        return "expected a TCP port 1..65535"


def _node_ids(v):
    if not isinstance(v, list) or not v:
        return "expected a non-empty list of node addresses 1..254"
    for n in v:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 254:
            return "node address %r outside 1..254" % (n,)
    if len(set(v)) != len(v):
        return "node addresses repeat"


def _one_of(*choices):
    def check(v):
        if v not in choices:
            return "expected one of " + ", ".join(repr(c) for c in choices)
    return check


# table -> key -> (type, default or REQUIRED, extra check or None)
REQUIRED = object()
SCHEMA = {
    "site": {
        "id": (str, REQUIRED, _ident),
        "transformer": (str, REQUIRED, _ident),
        "key_file": (str, REQUIRED, None),
        "rated_current_a": ((int, float), 400, _positive),
    },
    "bus": {
        "port": (str, REQUIRED, None),
        "baud": (int, 115200, _baud),
        "nodes": (list, REQUIRED, _node_ids),
        "reply_timeout_ms": (int, 30, _positive),
        "retries": (int, 1, None),
        "poll_period_s": ((int, float), 10, _positive),
    },
    "lora": {
        "driver": (str, "sim", _one_of("sim", "serial-e22")),
        "port": (str, "", None),
        "freq_hz": (int, 865062500, _positive),
        "sf": (int, 7, _one_of(7, 8, 9, 10, 11, 12)),
        "bw_hz": (int, 125000, _one_of(125000, 250000, 500000)),
        "nodes": (list, REQUIRED, _node_ids),
    },
    "meter": {
        "profile": (str, REQUIRED, None),
        "transport": (str, "rtu", _one_of("rtu", "tcp")),
        "port": (str, "", None),
        "host": (str, "", None),
        "tcp_port": (int, 502, _port),
        "unit": (int, 1, None),
        "baud": (int, 9600, _baud),
        "timeout_s": ((int, float), 1.0, _positive),
    },
    "balancer": {
        "period_s": ((int, float), 60, _positive),
        "max_moves_per_round": (int, 1, _positive),
        "min_dwell_s": ((int, float), 3600, _positive),
        "max_moves_per_node_day": (int, 2, _positive),
        "trigger_cuf": ((int, float), 0.10, _positive),
        "persist_s": ((int, float), 300, _positive),
        "ack_timeout_s": ((int, float), 5, _positive),
    },
    "store": {
        "path": (str, REQUIRED, None),
        "max_rows": (int, 200000, _positive),
    },
    "uplink": {
        "host": (str, REQUIRED, None),
        "port": (int, 8883, _port),
        "client_id": (str, "", None),
        "tls": (bool, True, None),
        "ca": (str, "", None),
        "cert": (str, "", None),
        "key": (str, "", None),
        "summary_period_s": ((int, float), 900, _positive),
        "heartbeat_s": ((int, float), 300, _positive),
        "forward_readings": (bool, False, None),
    },
    "scada": {
        "enabled": (bool, False, None),
        "bind": (str, "127.0.0.1", None),
        "port": (int, 5020, _port),
    },
}
REQUIRED_TABLES = ("site", "store")


class Config:
    """Validated settings: ``cfg.table("bus")`` -> dict with defaults filled in; ``cfg.has("lora")``."""

    def __init__(self, path, tables):
        self.path = Path(path)
        self._tables = tables

    def has(self, name):
        return name in self._tables

    def table(self, name):
        return dict(self._tables[name])

    def resolve(self, relpath):
        """A path from the file, relative to the file's folder when not absolute."""
        p = Path(relpath)
        return p if p.is_absolute() else self.path.parent / p


def load(path):
    """Read and validate ``path``; raises ConfigError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, e.strerror or e)) from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not valid TOML: %s" % (path, e)) from e
    lines = text.splitlines()
    tables = {}
    for name, values in raw.items():
        if name not in SCHEMA:
            raise ConfigError("%s:%d: unknown table [%s]; known: %s"
                              % (path, _line_of(lines, name, None), name, ", ".join(sorted(SCHEMA))))
        if not isinstance(values, dict):
            raise ConfigError("%s:%d: %s must be a table" % (path, _line_of(lines, None, name), name))
        tables[name] = _check_table(path, lines, name, values)
    for name in REQUIRED_TABLES:
        if name not in tables:
            raise ConfigError("%s: missing table [%s]" % (path, name))
    if "bus" not in tables and "lora" not in tables:
        raise ConfigError("%s: no node link: add a [bus] (RS-485) or [lora] table" % path)
    if "meter" in tables:
        m = tables["meter"]
        need = "port" if m["transport"] == "rtu" else "host"
        if not m[need]:
            raise ConfigError("%s:%d: [meter] transport = %r needs '%s'"
                              % (path, _line_of(lines, "meter", "transport"), m["transport"], need))
    return Config(path, tables)


def _check_table(path, lines, name, values):
    schema = SCHEMA[name]
    out = {}
    for key, value in values.items():
        if key not in schema:
            raise ConfigError("%s:%d: [%s] unknown key '%s'; known: %s"
                              % (path, _line_of(lines, name, key), name, key, ", ".join(sorted(schema))))
        typ, _, check = schema[key]
        problem = None
        if isinstance(value, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            problem = "expected %s, got a boolean" % _type_name(typ)
        elif not isinstance(value, typ):
            problem = "expected %s, got %s" % (_type_name(typ), type(value).__name__)
        elif check is not None:
            problem = check(value)
        if problem:
            raise ConfigError("%s:%d: [%s] %s = %r: %s" % (path, _line_of(lines, name, key), name, key, value, problem))
        out[key] = value
    for key, (_, default, _) in schema.items():
        if key not in out:
            if default is REQUIRED:
                raise ConfigError("%s:%d: [%s] missing required key '%s'" % (path, _line_of(lines, name, None), name, key))
            out[key] = default
    return out


def _type_name(typ):
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _line_of(lines, table, key):
    """1-based line of ``key`` inside ``[table]`` (or of the table header when key is None)."""
    current = None
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    for i, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = m.group(1)
            if key is None and current == table:
                return i
            continue
        if key is not None and (table is None or current == table):
            if re.match(r"^\s*%s\s*=" % re.escape(key), line):
                return i
    return 0
