"""The node's state on flash: config from provisioning, relay state and sequence bounds from the node.

Small JSON files in one folder passed in as ``root`` (``"/"`` on the ESP32's
flash file system, a temporary folder in tests); nothing here knows a path.
Every write is atomic: the text goes to ``NAME.tmp``, is flushed (and fsynced
where the interpreter has ``os.fsync``; LittleFS commits a file on close), then
renamed over ``NAME`` (atomic on LittleFS and POSIX). MicroPython's FAT driver
renames over an existing file by deleting it first, so a cut there can leave
only ``NAME.tmp``: loading falls back to a complete, valid ``NAME.tmp`` when
``NAME`` is missing or unreadable. A torn or garbage file never crashes the
node: state files fall back to a safe default with an event, the sequence
bound keeps two copies, and only a config that cannot be read is an error
(there is no safe default for a node's identity and key).

Files
-----
``config.json`` (written by ``phasekit provision``, read at boot, never written
by the node). One JSON object; unknown keys are refused so that a typo is not
silently ignored::

    {
      "format": 1,                         required, this version
      "node": {
        "id": "feeder7-n042",              required, 1..32 chars of A-Z a-z 0-9 . _ -
        "address": 42                      required, link address 1..247 (docs/protocol.md 1)
      },
      "key": {
        "file": "node.key",                required, file in the same folder holding the
                                           32-byte node secret, HKDF-derived from the site
                                           key (docs/protocol.md 4); the config only names it
        "generation": 0                    optional (0), bumped with every new key: the
                                           sequence counter is kept per generation
      },
      "board": "esp32-devkitc-max485",     required, a boards/NAME.json
      "home_phase": "A",                   required, "A" | "B" | "C": the phase the house is
                                           wired to; restored when no relay state is saved
      "limits": {                          optional, each key optional (default shown)
        "overcurrent_ma": 40000,           1000..100000: above it, LOCK_OVERCURRENT
        "overvoltage_dv": 2530,            1500..3000 (0.1 V): above it, LOCK_OVERVOLTAGE
        "undervoltage_dv": 2070,           1000..2600 (0.1 V), below overvoltage_dv
        "meter_silent_ms": 10000           1000..600000 without a good reading: LOCK_METER
      },
      "relay": {                           optional: phasenode.relay.RelayRules, defaults there
        "dead_time_ms": 2000, "min_dwell_s": 900, "max_per_hour": 2, "max_per_day": 6,
        "lock_hold_s": 300, "settle_ms": 5000, "checkpoint_s": 3600
      },
      "app": {                             optional, each key optional: the node application's
        "sample_ms": 2000, ...             settings (phasenode.app.Settings), names, ranges and
      }                                    defaults in APP_SETTINGS below
    }

Voltage defaults are 230 V +-10 % (EN 50160 supply voltage variations).

``relay.json`` (written by the node: a move's write-ahead and commit, lock
changes, an hourly checkpoint): ``{"format": 1, "phase": 0..3, "intent": 0..3,
"uptime_s", "moves": [uptime_s of recent moves, ascending], "locks", "n_moves",
"n_aborts", "crc"}``, the state of ``phasenode.relay.RelayController.snapshot()``.

``seq-NAME.json`` and ``seq-NAME.bak.json``: ``{"format": 1, "bound": n,
"crc"}``, the reserved upper bound of a sender sequence counter, written once
per block by ``phasecore.replay.SequenceCounter`` through
``sequence_storage(NAME)``. Both copies are written on every save; loading
takes the larger valid one. ``seq-pirx-gN.json`` (and ``.bak``) in the same
form holds the highest sequence number accepted from the Pi under key
generation N (``pi_seq_storage(N)``): a value that only grows too.

``oplock.json`` (written by the node on the Pi's LOCK and UNLOCK commands):
``{"format": 1, "oplock": 0..256, "crc"}``, the operator lock (0 unlocked,
else the LOCK reason + 1; ``oplock_storage()``). One file, replaced
atomically like relay.json: unlike a sequence bound it goes back to 0.
Firmware before this file kept the lock as the sequence bound ``oplock``
(``seq-oplock.json``, ``.bak``): those are read while ``oplock.json`` does not
exist, and removed once it is written.

The node's own files carry ``crc``: CRC-16/MODBUS of the values in a fixed
text form (``_digest``), so a flipped bit that still parses as JSON (a digit
``2`` becoming ``3`` is one bit) is caught as corruption instead of being
restored as a different phase or a smaller sequence bound.

Public: ``Store``, ``NodeConfig``, ``validate_config``, ``PersistError``,
``ConfigError``, ``CorruptStateError``, ``SequenceLostError``, ``FORMAT``,
``DEFAULT_LIMITS``, ``LIMIT_RANGES``, ``APP_SETTINGS``, the ``EV_*`` event codes.
"""

import json
import os

from phasecore.crc import crc16
from phasecore.errors import PhasecoreError

from phasenode.compat import const
from phasenode.relay import RelayRules, RuleError

FORMAT = const(1)
CONFIG_FILE = "config.json"
RELAY_FILE = "relay.json"
OPLOCK_FILE = "oplock.json"
_OLD_OPLOCK = "oplock"   # the sequence-bound name the operator lock had before oplock.json
_MAX_OPLOCK = const(256)  # LOCK reason 0..255, + 1
_MAX_FILE = const(4096)   # every file here is well under 1 KB; more is garbage
_MAX_EVENTS = const(16)
_SECRET_LEN = const(32)
_ENOENT = const(2)

# Events (code, file, detail), drained with Store.pop_events().
EV_CORRUPT = const(1)        # a state file was unreadable: a safe default was used
EV_FROM_TMP = const(2)       # the file was missing or bad; its complete .tmp was used
EV_SEQ_COPY_BAD = const(3)   # one copy of a sequence bound was unreadable; the other used

DEFAULT_LIMITS = {
    "overcurrent_ma": 40000,
    "overvoltage_dv": 2530,
    "undervoltage_dv": 2070,
    "meter_silent_ms": 10000,
}
# name, minimum, maximum: what config.json may set, and what a SET_LIMITS
# command may set at run time (phasenode.checks validates with these).
LIMIT_RANGES = (
    ("overcurrent_ma", 1000, 100000),
    ("overvoltage_dv", 1500, 3000),
    ("undervoltage_dv", 1000, 2600),
    ("meter_silent_ms", 1000, 600000),
)
# The node application's settings (config.json "app", phasenode.app.Settings):
# name, minimum, maximum, default.
APP_SETTINGS = (
    ("sample_ms", 100, 600000, 2000),        # meter read period
    ("meter_address", 1, 248, 248),          # PZEM Modbus address; 248 (0xF8) = the one meter on the UART
    ("meter_timeout_ms", 20, 5000, 200),
    ("meter_retries", 0, 5, 1),
    ("heartbeat_s", 10, 86400, 900),         # node heartbeat (counters, firmware) period
    ("seq_block", 16, 65536, 1024),          # sequence numbers per flash write
    ("rx_persist_s", 0, 86400, 300),         # Pi sequence persisted on heartbeats at most this often
    ("bus_poll_ms", 1, 50, 2),               # RS-485 receive poll period
    ("set_samples", 1, 100, 2),              # anomaly checks: samples beyond a limit to set
    ("clear_samples", 1, 100, 3),            # ... and back inside to clear
    ("lora_sf", 7, 12, 7),
    ("lora_bw_hz", 7800, 500000, 125000),
    ("lora_cr", 1, 4, 1),
    ("lora_duty_pm", 1, 1000, 10),           # 10 per mille = 1 % (EU868 g1); India 865-867 MHz has none
    ("lora_rx_window_ms", 100, 10000, 1000),
    ("lora_report_min_s", 0, 86400, 30),
    ("lora_report_max_s", 1, 86400, 300),
    ("lora_delta_ma", 1, 100000, 500),
    ("lora_delta_pm", 0, 1000, 100),
    ("lora_polled", 0, 1, 0),                # 1: answer the Pi's polls (phasegate polled_link), else class A
    ("watchdog_ms", 0, 60000, 0),            # 0: the board file's watchdog_ms
)
_PHASE_LETTERS = ("A", "B", "C")
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


class PersistError(PhasecoreError):
    """A persisted file is missing, unreadable or invalid; ``.file`` and ``.key`` say where."""

    def __init__(self, file, key, msg):
        self.file = file
        self.key = key
        self.msg = msg
        super().__init__("%s: %s%s" % (file, (key + ": ") if key else "", msg))


class ConfigError(PersistError):
    """config.json (or the key file it names) is missing or invalid."""


class CorruptStateError(PersistError):
    """A state file the node wrote cannot be read back; the caller uses a safe default."""


class SequenceLostError(PersistError):
    """Both copies of a sequence bound are unreadable: sealing must stop until rekeyed."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_name(file, key, v, max_len):
    if not isinstance(v, str) or not 1 <= len(v) <= max_len:
        raise ConfigError(file, key, "must be a string of 1..%d characters, got %r" % (max_len, v))
    for c in v:
        if c not in _NAME_CHARS:
            raise ConfigError(file, key, "character %r not allowed (A-Z a-z 0-9 . _ -)" % c)
    if v[0] == ".":
        raise ConfigError(file, key, "must not start with '.'")
    return v


def _check_int(file, key, v, lo, hi):
    if not _is_int(v) or not lo <= v <= hi:
        raise ConfigError(file, key, "must be an integer %d..%d, got %r" % (lo, hi, v))
    return v


def _check_keys(file, prefix, obj, allowed):
    if not isinstance(obj, dict):
        raise ConfigError(file, prefix.rstrip(".") or None, "must be an object, got %r" % (obj,))
    for k in obj:
        if k not in allowed:
            raise ConfigError(file, prefix + k, "unknown key")


class NodeConfig:
    """A validated config.json: ``node_id``, ``address``, ``key_file``, ``key_generation``,
    ``board``, ``home_phase`` (1..3), ``limits`` (dict, defaults filled), ``rules``
    (``RelayRules``), ``app`` (dict of every ``APP_SETTINGS`` name, defaults filled),
    ``seq_name`` (the sequence storage name for the current key), ``raw`` (the object as read).
    """

    def __init__(self, raw, file=CONFIG_FILE):
        f = file
        _check_keys(f, "", raw, ("format", "node", "key", "board", "home_phase", "limits", "relay", "app"))
        for k in ("format", "node", "key", "board", "home_phase"):
            if k not in raw:
                raise ConfigError(f, k, "required key missing")
        fmt = raw["format"]
        if not _is_int(fmt) or fmt != FORMAT:
            raise ConfigError(f, "format", "this firmware reads format %d, file has %r" % (FORMAT, fmt))
        node = raw["node"]
        _check_keys(f, "node.", node, ("id", "address"))
        for k in ("id", "address"):
            if k not in node:
                raise ConfigError(f, "node." + k, "required key missing")
        self.node_id = _check_name(f, "node.id", node["id"], 32)
        self.address = _check_int(f, "node.address", node["address"], 1, 247)
        key = raw["key"]
        _check_keys(f, "key.", key, ("file", "generation"))
        if "file" not in key:
            raise ConfigError(f, "key.file", "required key missing")
        self.key_file = _check_name(f, "key.file", key["file"], 32)
        self.key_generation = _check_int(f, "key.generation", key.get("generation", 0), 0, 65535)
        self.board = _check_name(f, "board", raw["board"], 48)
        hp = raw["home_phase"]
        if hp not in _PHASE_LETTERS:
            raise ConfigError(f, "home_phase", "must be \"A\", \"B\" or \"C\", got %r" % (hp,))
        self.home_phase = _PHASE_LETTERS.index(hp) + 1
        limits = raw.get("limits", {})
        _check_keys(f, "limits.", limits, DEFAULT_LIMITS)
        lim = {}
        for k, lo, hi in LIMIT_RANGES:
            lim[k] = _check_int(f, "limits." + k, limits.get(k, DEFAULT_LIMITS[k]), lo, hi)
        if lim["undervoltage_dv"] >= lim["overvoltage_dv"]:
            raise ConfigError(f, "limits.undervoltage_dv", "%d must be below overvoltage_dv %d" % (
                lim["undervoltage_dv"], lim["overvoltage_dv"]))
        self.limits = lim
        relay = raw.get("relay", {})
        if not isinstance(relay, dict):
            raise ConfigError(f, "relay", "must be an object, got %r" % (relay,))
        try:
            self.rules = RelayRules.from_dict(relay)
        except RuleError as e:
            raise ConfigError(f, "relay." + e.key, e.msg)
        self.app = _check_app(f, raw.get("app", {}))
        self.raw = raw

    @property
    def seq_name(self):
        return "g%d" % self.key_generation


def _check_app(file, app):
    # The "app" object: every setting in range, defaults filled (phasenode.app.Settings checks the same).
    if not isinstance(app, dict):
        raise ConfigError(file, "app", "must be an object, got %r" % (app,))
    out = {}
    for name, lo, hi, default in APP_SETTINGS:
        out[name] = _check_int(file, "app." + name, app.get(name, default), lo, hi)
    for k in app:
        if k not in out:
            raise ConfigError(file, "app." + k, "unknown setting")
    if out["lora_report_min_s"] > out["lora_report_max_s"]:
        raise ConfigError(file, "app.lora_report_min_s", "%d exceeds lora_report_max_s %d" % (
            out["lora_report_min_s"], out["lora_report_max_s"]))
    return out


def validate_config(obj, file=CONFIG_FILE):
    """Check a config object as the node will (for the provisioning tool); returns a ``NodeConfig``."""
    return NodeConfig(obj, file)


def _check_relay_state(file, st):
    # Raises CorruptStateError naming the key; returns the state without "format".
    out = {}
    for k in ("phase", "intent", "uptime_s", "locks", "n_moves", "n_aborts"):
        v = st.get(k)
        if not _is_int(v) or v < 0:
            raise CorruptStateError(file, k, "must be an integer >= 0, got %r" % (v,))
        out[k] = v
    if out["phase"] > 3:
        raise CorruptStateError(file, "phase", "must be 0..3, got %d" % out["phase"])
    if out["intent"] > 3:
        raise CorruptStateError(file, "intent", "must be 0..3, got %d" % out["intent"])
    if out["locks"] > 0xFF:
        raise CorruptStateError(file, "locks", "must be 0..255, got %d" % out["locks"])
    moves = st.get("moves")
    if not isinstance(moves, list) or len(moves) > 1440:
        raise CorruptStateError(file, "moves", "must be a list of at most 1440 times, got %r" % (moves,))
    prev = 0
    for t in moves:
        if not _is_int(t) or t < prev or t > out["uptime_s"]:
            raise CorruptStateError(file, "moves", "times must ascend within 0..uptime_s, got %r" % (t,))
        prev = t
    out["moves"] = list(moves)
    return out


_RELAY_KEYS = ("phase", "intent", "uptime_s", "locks", "n_moves", "n_aborts")


def _digest(values, moves):
    # CRC-16 over "v1,v2,...;m1,m2,..." : a fixed text form, independent of the
    # order json.dumps writes keys in (unordered dicts on MicroPython).
    text = ",".join("%d" % v for v in values) + ";" + ",".join("%d" % m for m in moves)
    return crc16(text.encode())


def _relay_digest(st):
    return _digest([st[k] for k in _RELAY_KEYS], st["moves"])


def _check_relay_file(file, obj):
    out = _check_relay_state(file, obj)
    if obj.get("crc") != _relay_digest(out):
        raise CorruptStateError(file, "crc", "does not match the content (flipped bits)")
    return out


class Store:
    """The node's files under ``root``: ``Store("/")`` on the board.

    ``fsync`` False skips ``os.fsync`` (CPython only; never on a node).
    """

    def __init__(self, root, fsync=True):
        if not isinstance(root, str) or not root:
            raise ValueError("root must be a folder path, got %r" % (root,))
        try:
            os.stat(root)
        except OSError:
            raise PersistError(root, None, "folder does not exist")
        self.root = root
        self._prefix = root.rstrip("/") + "/"
        self._fsync = fsync
        self._events = []
        self.events_dropped = 0

    def path(self, name):
        return self._prefix + name

    def pop_events(self):
        """Events since the last call as ``(code, file, detail)`` tuples, oldest first."""
        ev = self._events
        self._events = []
        return ev

    # --- config -----------------------------------------------------------------

    def load_config(self):
        """Read and validate config.json; raises ``ConfigError`` (missing, garbage, invalid)."""
        try:
            obj = self._read(CONFIG_FILE)
        except CorruptStateError as e:
            raise ConfigError(CONFIG_FILE, e.key, e.msg)
        if obj is None:
            raise ConfigError(CONFIG_FILE, None, "missing in %s: provision the node" % self.root)
        return NodeConfig(obj, CONFIG_FILE)

    def save_config(self, obj):
        """Validate and atomically write config.json (provisioning); returns the ``NodeConfig``."""
        cfg = NodeConfig(obj, CONFIG_FILE)
        self._write(CONFIG_FILE, obj)
        return cfg

    def read_secret(self, cfg):
        """The 32-byte node secret from the key file ``cfg`` names; ``ConfigError`` if wrong."""
        name = cfg.key_file
        try:
            with open(self.path(name), "rb") as f:
                data = f.read(_SECRET_LEN + 1)
        except OSError:
            raise ConfigError(name, None, "key file named by %s key.file is missing" % CONFIG_FILE)
        if len(data) != _SECRET_LEN:
            raise ConfigError(name, None, "must hold exactly %d bytes, has %s" % (
                _SECRET_LEN, "more" if len(data) > _SECRET_LEN else str(len(data))))
        return data

    def write_secret(self, name, secret):
        """Atomically write a key file (provisioning)."""
        _check_name(name, None, name, 32)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != _SECRET_LEN:
            raise ConfigError(name, None, "a node secret is %d bytes" % _SECRET_LEN)
        self._write_bytes(name, bytes(secret))

    # --- relay state --------------------------------------------------------------

    def load_relay(self):
        """The relay controller's saved state, None if none yet; ``CorruptStateError`` if unreadable."""
        return self._read(RELAY_FILE, _check_relay_file)

    def save_relay(self, state):
        """Atomically write the relay state (validated first, so it always reads back)."""
        if not isinstance(state, dict):
            raise CorruptStateError(RELAY_FILE, None, "state must be a dict, got %r" % (state,))
        out = _check_relay_state(RELAY_FILE, state)
        out["crc"] = _relay_digest(out)
        out["format"] = FORMAT
        self._write(RELAY_FILE, out)

    def relay_storage(self):
        """``(load, save)`` for ``RelayController``."""
        return self.load_relay, self.save_relay

    # --- sequence bounds ----------------------------------------------------------

    def sequence_storage(self, name):
        """``(load, save)`` for ``phasecore.replay.SequenceCounter``.

        ``load()`` gives the saved upper bound (int) or None when this counter
        was never saved; raises ``SequenceLostError`` when copies existed but
        none is readable (reusing a nonce is worse than stopping). ``save(n)``
        writes both copies durably before returning, or raises.
        """
        _check_name("sequence storage", None, name, 24)
        main = "seq-%s.json" % name
        bak = "seq-%s.bak.json" % name

        def load():
            best = None
            seen = False
            for fn in (main, bak):
                try:
                    obj = self._read(fn, _check_seq)
                except CorruptStateError as e:
                    seen = True
                    self._event(EV_SEQ_COPY_BAD, fn, str(e))
                    continue
                if obj is None:
                    continue
                seen = True
                if best is None or obj["bound"] > best:
                    best = obj["bound"]
            if best is None and seen:
                raise SequenceLostError(main, "bound", "no readable copy: replace the key (rekey) before sealing")
            return best

        def save(n):
            if not _is_int(n) or n < 0:
                raise ValueError("sequence bound must be an integer >= 0, got %r" % (n,))
            obj = {"format": FORMAT, "bound": n, "crc": _digest((n,), ())}
            self._write(main, obj)
            self._write(bak, obj)

        return load, save

    # --- session state: the Pi's sequence number, the operator lock ---------------------

    def pi_seq_storage(self, generation):
        """``(load, save)`` of the highest sequence number accepted from the Pi under key ``generation``.

        For ``phasenode.session.Session``. The value only grows, so it is kept
        as a sequence bound is (``seq-pirx-gN.json``, two copies, the larger
        valid one wins): ``load()`` gives it, None before the first one was
        saved, and raises ``SequenceLostError`` when copies exist but none is
        readable (the session then refuses commands until the node is
        rekeyed). ``save(n)`` writes both copies durably or raises.
        """
        _check_int("pi sequence storage", "generation", generation, 0, 65535)
        return self.sequence_storage("pirx-g%d" % generation)

    def oplock_storage(self):
        """``(load, save)`` of the operator lock (0 unlocked, 1..256 locked: the LOCK reason + 1).

        For ``phasenode.session.Session``. ``load()`` gives 0 when no lock was
        ever saved and raises ``CorruptStateError`` when the record cannot be
        read (the session then stays locked); ``save(v)`` replaces
        ``oplock.json`` atomically or raises. Reads the pre-``oplock.json``
        record (sequence bound ``oplock``) while there is no ``oplock.json``.
        """
        return self.load_oplock, self.save_oplock

    def load_oplock(self):
        """The saved operator lock, 0 when none; ``CorruptStateError`` if unreadable."""
        obj = self._read(OPLOCK_FILE, _check_oplock)
        if obj is not None:
            return obj["oplock"]
        # Migration: older firmware kept the lock through sequence_storage("oplock").
        try:
            v = self.sequence_storage(_OLD_OPLOCK)[0]()
        except SequenceLostError as e:
            raise CorruptStateError(e.file, e.key, "operator lock unreadable: " + e.msg)
        if v is None:
            return 0
        if v > _MAX_OPLOCK:
            raise CorruptStateError("seq-%s.json" % _OLD_OPLOCK, "bound",
                                    "operator lock must be 0..%d, got %d" % (_MAX_OPLOCK, v))
        return v

    def save_oplock(self, value):
        """Atomically write the operator lock (0..256); then drop the pre-``oplock.json`` record."""
        if not _is_int(value) or not 0 <= value <= _MAX_OPLOCK:
            raise ValueError("operator lock must be an integer 0..%d, got %r" % (_MAX_OPLOCK, value))
        self._write(OPLOCK_FILE, {"format": FORMAT, "oplock": value, "crc": _digest((value,), ())})
        # The lock is saved. The old record is never read again while oplock.json
        # exists, so a failure to delete it is no reason to report the save as
        # failed: it stays behind, stale and unread.
        for name in ("seq-%s.json" % _OLD_OPLOCK, "seq-%s.bak.json" % _OLD_OPLOCK):
            for n in (name, name + ".tmp"):
                try:
                    os.remove(self.path(n))
                except OSError:
                    pass

    # --- files ----------------------------------------------------------------------

    def _read(self, name, check=None):
        # The parsed, checked object from NAME, else from a complete NAME.tmp,
        # None when neither exists; CorruptStateError when NAME exists but is bad
        # and no good NAME.tmp saves the day.
        err = None
        try:
            obj = self._parse(name, check)
        except CorruptStateError as e:
            obj = None
            err = e
        if obj is not None:
            return obj
        try:
            alt = self._parse(name + ".tmp", check)
        except CorruptStateError:
            alt = None  # a torn tmp is the normal leftover of a cut write
        if alt is not None:
            self._event(EV_FROM_TMP, name, str(err) if err else "missing")
            return alt
        if err is not None:
            self._event(EV_CORRUPT, name, str(err))
            raise err
        return None

    def _parse(self, name, check):
        try:
            f = open(self.path(name), "rb")
        except OSError as e:
            if e.args and e.args[0] == _ENOENT:
                return None
            raise CorruptStateError(name, None, "cannot open: %r" % (e,))
        try:
            data = f.read(_MAX_FILE + 1)
        except OSError as e:
            raise CorruptStateError(name, None, "read failed: %r" % (e,))
        finally:
            f.close()
        if len(data) > _MAX_FILE:
            raise CorruptStateError(name, None, "larger than %d bytes" % _MAX_FILE)
        try:
            obj = json.loads(data.decode())
        except (ValueError, RuntimeError):
            # Bad UTF-8 (UnicodeError) or bad JSON are ValueErrors; nesting too
            # deep is RecursionError (CPython) or RuntimeError (MicroPython).
            raise CorruptStateError(name, None, "not valid JSON (%d bytes)" % len(data))
        if not isinstance(obj, dict):
            raise CorruptStateError(name, None, "top level must be an object")
        fmt = obj.get("format")
        if not _is_int(fmt) or fmt != FORMAT:
            raise CorruptStateError(name, "format", "expected %d, got %r" % (FORMAT, fmt))
        if check is not None:
            obj = check(name, obj)
        return obj

    def _write(self, name, obj):
        self._write_bytes(name, json.dumps(obj).encode())

    def _write_bytes(self, name, data):
        path = self.path(name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if self._fsync and hasattr(os, "fsync"):
                os.fsync(f.fileno())
        os.rename(tmp, path)
        if self._fsync and hasattr(os, "fsync") and hasattr(os, "open"):
            # POSIX: the rename is durable only once the folder is synced.
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _event(self, code, file, detail):
        ev = self._events
        if len(ev) >= _MAX_EVENTS:
            ev.pop(0)
            self.events_dropped += 1
        ev.append((code, file, detail))


def _check_oplock(file, obj):
    v = obj.get("oplock")
    if not _is_int(v) or not 0 <= v <= _MAX_OPLOCK:
        raise CorruptStateError(file, "oplock", "must be an integer 0..%d, got %r" % (_MAX_OPLOCK, v))
    if obj.get("crc") != _digest((v,), ()):
        raise CorruptStateError(file, "crc", "does not match the lock (flipped bits)")
    return obj


def _check_seq(file, obj):
    b = obj.get("bound")
    if not _is_int(b) or b < 0:
        raise CorruptStateError(file, "bound", "must be an integer >= 0, got %r" % (b,))
    if obj.get("crc") != _digest((b,), ()):
        raise CorruptStateError(file, "crc", "does not match the bound (flipped bits)")
    return obj
