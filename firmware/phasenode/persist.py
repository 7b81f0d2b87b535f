"""The node's files on flash: the config from provisioning, relay state and sequence bounds from the node.

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
``config.json``: the node's settings, written by ``phasekit provision``;
format, ranges and validation in ``phasenode.settings`` (``load_config``,
``save_config`` and ``read_secret`` here read and write it).

``relay.json`` (written by the node: a move's write-ahead and commit, lock
changes, an hourly checkpoint): ``{"format": 2, "phase": 0..3, "intent":
0..3, "uptime_s", "moves": [uptime_s of recent moves, ascending], "locks",
"n_moves", "n_aborts", "crc"}``, the state of
``phasenode.relay.RelayController.snapshot()``. ``phase`` and ``intent`` are
numbered as on the wire (``phasecore.codes``: 0 A, 1 B, 2 C, 3 none; an
``intent`` of 3 is no move in progress). Format 1, written by firmware before
this one, numbered them as the relay controller then did (0 none, 1 A, 2 B,
3 C) and its ``crc`` covers those values; a format-1 file is checked against
its own crc and then converted (``(p + 3) & 3``), so a node upgraded in the
field restores the phase it was on. The node writes format 2 only, and its
``crc`` covers the format too (a format-2 file whose "format" read 1 would
otherwise pass its crc and be converted into another phase). Firmware that
knows only format 1 finds a format-2 file unreadable: it restores the
config's home phase and latches STATE_LOST (docs/relay-safety.md), the safe
side, until unlocked.

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

Public: ``Store``, ``PersistError``, ``ConfigError``, ``CorruptStateError``,
``SequenceLostError`` (``phasenode.errors``'), ``FORMAT`` (of the sequence and
operator-lock files), ``RELAY_FORMAT``, ``CONFIG_FILE``, ``RELAY_FILE``,
``OPLOCK_FILE``, the ``EV_*`` codes of ``Store.pop_events`` (the store's own,
not on the wire).
"""

import json
import os

from phasecore.crc import crc16
from phasecore.errors import quote
from phasenode.compat import const
from phasenode.errors import ConfigError, CorruptStateError, PersistError, SequenceLostError
from phasenode.settings import CONFIG_FILE, NodeConfig, check_int, check_name
from phasenode.settings import FORMAT as _CONFIG_FORMAT

FORMAT = const(1)  # seq-*.json, oplock.json
RELAY_FORMAT = const(2)  # relay.json: phases numbered as on the wire (format 1: as the relay controller was)
_FORMATS = (FORMAT,)
_CONFIG_FORMATS = (_CONFIG_FORMAT,)
_RELAY_FORMATS = (RELAY_FORMAT, 1)  # format 1 is read (and converted), never written
RELAY_FILE = "relay.json"
OPLOCK_FILE = "oplock.json"
_OLD_OPLOCK = "oplock"  # the sequence-bound name the operator lock had before oplock.json
_MAX_OPLOCK = const(256)  # LOCK reason 0..255, + 1
_MAX_FILE = const(4096)  # every file here is well under 1 KB; more is garbage
_MAX_EVENTS = const(16)
_SECRET_LEN = const(32)
_ENOENT = const(2)

# Events (code, file, detail), drained with Store.pop_events().
EV_CORRUPT = const(1)  # a state file was unreadable: a safe default was used
EV_FROM_TMP = const(2)  # the file was missing or bad; its complete .tmp was used
EV_SEQ_COPY_BAD = const(3)  # one copy of a sequence bound was unreadable; the other used


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_relay_state(file, st):
    # Raises CorruptStateError naming the key; returns the state without "format".
    out = {}
    for k in ("phase", "intent", "uptime_s", "locks", "n_moves", "n_aborts"):
        v = st.get(k)
        if not _is_int(v) or v < 0:
            raise CorruptStateError(file, k, "must be an integer >= 0, got %s" % (quote(v),))
        out[k] = v
    if out["phase"] > 3:
        raise CorruptStateError(file, "phase", "must be 0..3, got %d" % out["phase"])
    if out["intent"] > 3:
        raise CorruptStateError(file, "intent", "must be 0..3, got %d" % out["intent"])
    if out["locks"] > 0xFF:
        raise CorruptStateError(file, "locks", "must be 0..255, got %d" % out["locks"])
    moves = st.get("moves")
    if not isinstance(moves, list) or len(moves) > 1440:
        raise CorruptStateError(file, "moves", "must be a list of at most 1440 times, got %s" % (quote(moves),))
    prev = 0
    for t in moves:
        if not _is_int(t) or t < prev or t > out["uptime_s"]:
            raise CorruptStateError(file, "moves", "times must ascend within 0..uptime_s, got %s" % (quote(t),))
        prev = t
    out["moves"] = list(moves)
    return out


_RELAY_KEYS = ("phase", "intent", "uptime_s", "locks", "n_moves", "n_aborts")


def _digest(values, moves):
    # CRC-16 over "v1,v2,...;m1,m2,..." : a fixed text form, independent of the
    # order json.dumps writes keys in (unordered dicts on MicroPython).
    text = ",".join("%d" % v for v in values) + ";" + ",".join("%d" % m for m in moves)
    return crc16(text.encode())


def _relay_digest(st, fmt):
    values = [st[k] for k in _RELAY_KEYS]
    if fmt != 1:
        # From format 2 on the crc covers the format: a format-2 file whose
        # "format" read 1 would otherwise pass and be converted into another phase.
        values.insert(0, fmt)
    return _digest(values, st["moves"])


def _check_relay_file(file, obj):
    out = _check_relay_state(file, obj)
    fmt = obj["format"]  # 1 or RELAY_FORMAT (_parse checked)
    if obj.get("crc") != _relay_digest(out, fmt):
        raise CorruptStateError(file, "crc", "does not match the content (flipped bits)")
    if fmt == 1:
        # Format 1 numbered phase and intent as the relay controller then did
        # (0 none, 1 A, 2 B, 3 C); the wire's numbering is (that + 3) & 3.
        out["phase"] = (out["phase"] + 3) & 3
        out["intent"] = (out["intent"] + 3) & 3
    return out


class Store:
    """The node's files under ``root``: ``Store("/")`` on the board.

    ``fsync`` False skips ``os.fsync`` (CPython only; never on a node).
    """

    def __init__(self, root, fsync=True):
        if not isinstance(root, str) or not root:
            raise ValueError("root must be a folder path, got %s" % (quote(root),))
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
            obj = self._read(CONFIG_FILE, None, _CONFIG_FORMATS)
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
            raise ConfigError(
                name,
                None,
                "must hold exactly %d bytes, has %s"
                % (_SECRET_LEN, "more" if len(data) > _SECRET_LEN else str(len(data))),
            )
        return data

    def write_secret(self, name, secret):
        """Atomically write a key file (provisioning)."""
        check_name(name, None, name, 32)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != _SECRET_LEN:
            raise ConfigError(name, None, "a node secret is %d bytes" % _SECRET_LEN)
        self._write_bytes(name, bytes(secret))

    # --- relay state --------------------------------------------------------------

    def load_relay(self):
        """The relay controller's saved state, None if none yet; ``CorruptStateError`` if unreadable.

        Phases as on the wire, whichever format the file has (format 1 is converted).
        """
        return self._read(RELAY_FILE, _check_relay_file, _RELAY_FORMATS)

    def save_relay(self, state):
        """Atomically write the relay state (validated first, so it always reads back)."""
        if not isinstance(state, dict):
            raise CorruptStateError(RELAY_FILE, None, "state must be a dict, got %s" % (quote(state),))
        out = _check_relay_state(RELAY_FILE, state)
        out["crc"] = _relay_digest(out, RELAY_FORMAT)
        out["format"] = RELAY_FORMAT
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
        check_name("sequence storage", None, name, 24)
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
                raise ValueError("sequence bound must be an integer >= 0, got %s" % (quote(n),))
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
        check_int("pi sequence storage", "generation", generation, 0, 65535)
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
            raise CorruptStateError(
                "seq-%s.json" % _OLD_OPLOCK, "bound", "operator lock must be 0..%d, got %d" % (_MAX_OPLOCK, v)
            )
        return v

    def save_oplock(self, value):
        """Atomically write the operator lock (0..256); then drop the pre-``oplock.json`` record."""
        if not _is_int(value) or not 0 <= value <= _MAX_OPLOCK:
            raise ValueError("operator lock must be an integer 0..%d, got %s" % (_MAX_OPLOCK, quote(value)))
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

    def _read(self, name, check=None, formats=_FORMATS):
        # The parsed, checked object from NAME, else from a complete NAME.tmp,
        # None when neither exists; CorruptStateError when NAME exists but is bad
        # and no good NAME.tmp saves the day.
        err = None
        try:
            obj = self._parse(name, check, formats)
        except CorruptStateError as e:
            obj = None
            err = e
        if obj is not None:
            return obj
        try:
            alt = self._parse(name + ".tmp", check, formats)
        except CorruptStateError:
            alt = None  # a torn tmp is the normal leftover of a cut write
        if alt is not None:
            self._event(EV_FROM_TMP, name, str(err) if err else "missing")
            return alt
        if err is not None:
            self._event(EV_CORRUPT, name, str(err))
            raise err
        return None

    def _parse(self, name, check, formats):
        try:
            f = open(self.path(name), "rb")
        except OSError as e:
            if e.args and e.args[0] == _ENOENT:
                return None
            raise CorruptStateError(name, None, "cannot open: %s" % (quote(e),))
        try:
            data = f.read(_MAX_FILE + 1)
        except OSError as e:
            raise CorruptStateError(name, None, "read failed: %s" % (quote(e),))
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
        if not _is_int(fmt) or fmt not in formats:
            raise CorruptStateError(
                name, "format", "expected %s, got %s" % (" or ".join(["%d" % f for f in formats]), quote(fmt))
            )
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
        raise CorruptStateError(file, "oplock", "must be an integer 0..%d, got %s" % (_MAX_OPLOCK, quote(v)))
    if obj.get("crc") != _digest((v,), ()):
        raise CorruptStateError(file, "crc", "does not match the lock (flipped bits)")
    return obj


def _check_seq(file, obj):
    b = obj.get("bound")
    if not _is_int(b) or b < 0:
        raise CorruptStateError(file, "bound", "must be an integer >= 0, got %s" % (quote(b),))
    if obj.get("crc") != _digest((b,), ()):
        raise CorruptStateError(file, "crc", "does not match the bound (flipped bits)")
    return obj
