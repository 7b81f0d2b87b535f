"""The boot selector: which firmware slot a boot runs, and the A/B state on flash behind it (docs/ota.md).

It lives at the flash root (``/phaseboot.py``, copied as source by ``phasekit
deploy``), never inside an update slot, and imports nothing of phasenode or
phasecore: it runs before the slot that holds them is chosen. ``boot.py``
calls ``select()`` first (which only reads), opens the relays, then
``Selection.booted()`` (which writes the decision), so a boot never does
anything before the relays are open but read one small file.

Slots: ``"lib"`` is what ``phasekit deploy`` wrote (``/lib``); ``"a"`` and
``"b"`` are ``fw/a`` and ``fw/b``, each a complete firmware
(``fw/a/lib/phasenode/...``) written by an update (``phasenode.ota``). A slot
is chosen by putting its ``lib`` first on ``sys.path`` (on a chip that is
ahead of ``.frozen`` too) and taking ``/lib`` off it, so nothing of the other
firmware can be imported beside it.

The state (``fw/state.json`` and ``fw/state.bak.json``, both written on
every change, the valid one with the higher ``n`` wins; a SHA-256 prefix
over a fixed text form catches flipped bits): ``confirmed``, the slot known
good; ``trial``, a slot activated and not yet confirmed; ``boots``, trial
boots so far; ``failed``, a rollback reason the running trial set
(``phasecore.ota.RB_*``); ``tv``, the trial's version; ``last``, the last
rollback as ``[reason, version]``; ``reported``, whether that rollback was
reported upstream.

The rule, at every boot (``select``):

- no trial: boot ``confirmed``;
- a trial marked failed (health deadline missed, application stopped),
  booted before and this reset was not a power-on (a crash, a watchdog or
  an unexplained reset before confirmation), or booted three times (power
  cuts) without confirming: roll back, i.e. clear the trial, record why and
  boot ``confirmed``;
- otherwise boot the trial and count the boot.

A slot whose folder is missing is never booted: the selector falls back to
``lib``. No state, or no readable copy, is ``lib`` confirmed: what ``phasekit
deploy`` wrote, complete by construction (deploy removes ``fw/``).

Files go through a small file-system object (``PosixFs`` on a node: ``os``
and ``open``; the update benchmark passes a simulated flash that loses
power at any write): ``read``, ``write_atomic``, ``append``, ``size``,
``remove``, ``makedirs``, ``rmtree``, ``sha256``.

Public: ``select``, ``Selection``, ``load``, ``confirm``, ``fail``,
``activate``, ``mark_reported``, ``after_main``, ``slot_lib``, ``PosixFs``,
``STATE``, ``SLOTS``, ``MAX_BOOTS``, ``ROOT_SLOT``.
"""

import hashlib
import json
import os
import sys

__all__ = (
    "select",
    "Selection",
    "load",
    "confirm",
    "fail",
    "activate",
    "mark_reported",
    "after_main",
    "slot_lib",
    "PosixFs",
    "STATE",
    "SLOTS",
    "MAX_BOOTS",
    "ROOT_SLOT",
)

STATE = "fw/state.json"
_BAK = "fw/state.bak.json"
ROOT_SLOT = "lib"
SLOTS = (ROOT_SLOT, "a", "b")
MAX_BOOTS = 3  # trial boots (power cuts in between) before giving up on confirmation
_FORMAT = 1
_MAX_STATE = 1024
# Rollback reasons (phasecore.ota.RB_*: kept as numbers here, phasecore is not imported).
_RB_RESET = 1
_RB_APP = 3
_RB_BOOTS = 4
_ENOENT = 2
_BLOCK = 512


class PosixFs:
    """The node's files through ``os`` and ``open``, paths relative to ``root`` ("" = the current folder)."""

    def __init__(self, root="", fsync=True):
        self.root = root.rstrip("/") + "/" if root else ""
        self._fsync = fsync and hasattr(os, "fsync")

    def path(self, name):
        return self.root + name

    def read(self, name, limit):
        """The file's bytes (at most ``limit``, else OSError), or None when it does not exist."""
        try:
            f = open(self.path(name), "rb")
        except OSError as e:
            if e.args and e.args[0] == _ENOENT:
                return None
            raise
        try:
            data = f.read(limit + 1)
        finally:
            f.close()
        if len(data) > limit:
            raise OSError("%s is larger than %d bytes" % (name, limit))
        return data

    def write_atomic(self, name, data):
        """Write ``NAME.tmp``, sync, rename over ``NAME``: the old or the new content after a power cut."""
        p = self.path(name)
        with open(p + ".tmp", "wb") as f:
            f.write(data)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.rename(p + ".tmp", p)

    def append(self, name, data):
        """Append and close (LittleFS commits the new length at close: a cut keeps the old length)."""
        with open(self.path(name), "ab") as f:
            f.write(data)
            if self._fsync:
                f.flush()
                os.fsync(f.fileno())

    def size(self, name):
        """Bytes in the file, -1 when it does not exist (a folder gives 0)."""
        try:
            st = os.stat(self.path(name))
        except OSError:
            return -1
        return 0 if st[0] & 0x4000 else st[6]

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            pass

    def makedirs(self, name):
        p = ""
        for part in name.split("/"):
            p = p + "/" + part if p else part
            try:
                os.mkdir(self.path(p))
            except OSError:
                pass

    def rmtree(self, name):
        p = self.path(name)
        try:
            names = os.listdir(p)
        except OSError:
            return
        for n in names:
            child = name + "/" + n
            try:
                isdir = os.stat(self.path(child))[0] & 0x4000
            except OSError:
                continue
            if isdir:
                self.rmtree(child)
            else:
                self.remove(child)
        try:
            os.rmdir(p)
        except OSError:
            pass

    def free(self):
        """Free bytes on the file system, -1 when the interpreter cannot say."""
        try:
            st = os.statvfs(self.root or ".")
        except (AttributeError, OSError):
            return -1
        return st[0] * st[4]

    def sha256(self, name, size):
        """SHA-256 of the first ``size`` bytes of the file (None if it is shorter or missing), read in blocks."""
        h = hashlib.sha256()
        buf = bytearray(_BLOCK)
        mv = memoryview(buf)
        left = size
        try:
            f = open(self.path(name), "rb")
        except OSError:
            return None
        try:
            while left > 0:
                n = f.readinto(buf)
                if not n:
                    return None
                n = n if n < left else left
                h.update(mv[:n])
                left -= n
        finally:
            f.close()
        return h.digest()


def slot_lib(slot):
    """The import folder of ``slot``: ``lib`` or ``fw/a/lib``."""
    return "lib" if slot == ROOT_SLOT else "fw/%s/lib" % slot


def _digest(st):
    text = "%d|%s|%s|%d|%d|%s|%s|%d" % (
        st["n"],
        st["confirmed"],
        st["trial"] or "-",
        st["boots"],
        st["failed"],
        ",".join("%d" % x for x in st["tv"]),
        ",".join("%d" % x for x in st["last"]),
        1 if st["reported"] else 0,
    )
    return "".join("%02x" % b for b in hashlib.sha256(text.encode()).digest()[:8])


def _fresh():
    return {
        "n": 0,
        "confirmed": ROOT_SLOT,
        "trial": None,
        "boots": 0,
        "failed": 0,
        "tv": [],
        "last": [],
        "reported": True,
    }


def _valid(st):
    if not isinstance(st, dict) or st.get("format") != _FORMAT:
        return False
    ints = ("n", "boots", "failed")
    for k in ints:
        v = st.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return False
    if st.get("confirmed") not in SLOTS or st.get("trial") not in (None, "a", "b"):
        return False
    if st["trial"] is not None and st["trial"] == st["confirmed"]:
        return False
    for k in ("tv", "last"):
        v = st.get(k)
        if not isinstance(v, list) or len(v) > 3:
            return False
        for x in v:
            if not isinstance(x, int) or isinstance(x, bool):
                return False
    return isinstance(st.get("reported"), bool) and st.get("sum") == _digest(st)


def load(fs=None):
    """The boot state (a dict, as described above); a fresh one (``lib`` confirmed) when none is readable."""
    fs = fs or PosixFs()
    best = None
    for name in (STATE, _BAK):
        try:
            data = fs.read(name, _MAX_STATE)
            st = json.loads(data.decode()) if data is not None else None
        except (OSError, ValueError):
            st = None
        if st is not None and _valid(st) and (best is None or st["n"] > best["n"]):
            best = st
    if best is None:
        return _fresh()
    out = _fresh()
    for k in out:
        out[k] = best[k]
    return out


def _save(fs, st):
    st = dict(st)
    st["n"] += 1
    st["format"] = _FORMAT
    st["sum"] = _digest(st)
    data = json.dumps(st).encode()
    fs.makedirs("fw")
    fs.write_atomic(STATE, data)
    fs.write_atomic(_BAK, data)
    del st["sum"]
    del st["format"]
    return st


class Selection:
    """What ``select`` decided: ``slot`` to run, ``trial`` (True when it is an unconfirmed one),
    ``rolled_back`` (the reason, 0 for none), ``state`` (what ``booted`` writes)."""

    def __init__(self, fs, slot, trial, rolled_back, state, changed):
        self.fs = fs
        self.slot = slot
        self.trial = trial
        self.rolled_back = rolled_back
        self.state = state
        self._changed = changed

    def booted(self):
        """Persist the decision (a counted trial boot, or the rollback); never raises (it is in boot.py)."""
        if not self._changed:
            return True
        try:
            self.state = _save(self.fs, self.state)
            self._changed = False
            return True
        except OSError as e:
            print("phaseboot: cannot save %s: %s" % (STATE, e))
            return False


def select(fs=None, power_on=None, path=None):
    """Decide the slot for this boot and put its folder first on ``path`` (``sys.path``); returns a ``Selection``.

    ``power_on``: True when this boot follows a power-on reset (a power cut,
    not a crash), None to ask ``machine.reset_cause()`` where there is one.
    Reads only; ``Selection.booted()`` writes. Never raises.
    """
    fs = fs or PosixFs()
    if power_on is None:
        power_on = _power_on()
    try:
        st = load(fs)
    except Exception as e:  # noqa: BLE001 - the selector must boot something whatever the flash holds
        print("phaseboot: state unreadable (%s): booting %s" % (e, ROOT_SLOT))
        st = _fresh()
    st = dict(st)
    changed = False
    reason = 0
    trial = st["trial"]
    if trial is not None:
        if st["failed"]:
            reason = st["failed"]
        elif st["boots"] >= 1 and not power_on:
            reason = _RB_RESET
        elif st["boots"] >= MAX_BOOTS:
            reason = _RB_BOOTS
        elif fs.size("fw/%s/lib" % trial) < 0:
            reason = _RB_APP
        changed = True
        if reason:
            st["last"] = [reason, _pack(st["tv"])]
            st["reported"] = False
            st["trial"] = None
            st["boots"] = 0
            st["failed"] = 0
            trial = None
        else:
            st["boots"] += 1
    slot = trial or st["confirmed"]
    if slot != ROOT_SLOT and fs.size("fw/%s/lib" % slot) < 0:
        print("phaseboot: slot %s is missing: booting %s" % (slot, ROOT_SLOT))
        slot = ROOT_SLOT
    if slot != ROOT_SLOT:
        p = sys.path if path is None else path
        # Only the slot's own modules: a module missing from it must fail to import (and roll the
        # trial back), never come from /lib, the other firmware (a mix of two versions).
        for root_lib in ("lib", "/lib", fs.path("lib")):
            while root_lib in p:
                p.remove(root_lib)
        lib = fs.path(slot_lib(slot))
        if lib not in p:
            p.insert(0, lib)
    return Selection(fs, slot, trial is not None, reason, st, changed)


def _pack(v):
    if len(v) != 3:
        return 0
    return (v[0] << 32) | (v[1] << 16) | v[2]


def _power_on():
    try:
        import machine

        return machine.reset_cause() == machine.PWRON_RESET
    except (ImportError, AttributeError):
        return False


def confirm(fs=None):
    """The running trial is healthy: it becomes ``confirmed``; returns the new state (None if no trial)."""
    fs = fs or PosixFs()
    st = load(fs)
    if st["trial"] is None:
        return None
    st["confirmed"] = st["trial"]
    st["trial"] = None
    st["boots"] = 0
    st["failed"] = 0
    return _save(fs, st)


def fail(fs, reason):
    """Mark the running trial failed (``reason`` a rollback code): the next boot goes back. None if no trial."""
    fs = fs or PosixFs()
    st = load(fs)
    if st["trial"] is None:
        return None
    st["failed"] = reason
    return _save(fs, st)


def activate(fs, slot, version):
    """Make ``slot`` (holding a verified firmware of ``version``, a 3-tuple) the trial of the next boot."""
    fs = fs or PosixFs()
    st = load(fs)
    if slot not in ("a", "b") or slot == st["confirmed"]:
        raise ValueError("cannot activate slot %s (confirmed is %s)" % (slot, st["confirmed"]))
    st["trial"] = slot
    st["boots"] = 0
    st["failed"] = 0
    st["tv"] = list(version)
    return _save(fs, st)


def mark_reported(fs=None):
    """The last rollback has been reported upstream."""
    fs = fs or PosixFs()
    st = load(fs)
    if st["reported"]:
        return st
    st["reported"] = True
    return _save(fs, st)


def after_main(rc, fs=None, reset=None):
    """``main.py``'s last word: the firmware stopped (``rc`` non-zero) in an unconfirmed trial -> fail it, reset.

    Returns True when it asked for a reset (which on a chip does not return).
    """
    if rc == 0:
        return False
    fs = fs or PosixFs()
    st = load(fs)
    if st["trial"] is None:
        return False
    try:
        fail(fs, _RB_APP)
    except OSError as e:
        # Not saved: the reset below still rolls back, as a reset before confirmation (RB_RESET).
        print("phaseboot: cannot mark the trial failed: %s" % e)
    print("phaseboot: the trial firmware stopped (%s): rebooting into %s" % (rc, st["confirmed"]))
    (reset or _reset)()
    return True


def _reset():
    # machine.reset() on a chip. The virtual board (the unix port) has none: ask its runner through the
    # watchdog line, as phasenode.hal.host does (phasenode itself may be what cannot be imported here).
    try:
        import machine
    except ImportError:
        machine = None
    if machine is not None and hasattr(machine, "reset"):
        machine.reset()
    wiring = os.getenv("PHASENODE_WIRING")
    fd = json.loads(wiring).get("watchdog") if wiring else None
    if fd is not None:
        open(fd, "wb").write(b"!")
        import time

        while True:
            time.sleep(0.05)
    if machine is not None:
        machine.soft_reset()
