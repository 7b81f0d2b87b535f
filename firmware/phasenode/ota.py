"""The node's side of a firmware update: download a signed bundle beside the running firmware, verify
it, boot it on trial, confirm it or go back (docs/ota.md).

The node trusts no one but its release key (config.json ``release_key``):
the Pi only carries bytes. What this module does, step by step:

1. OTA BEGIN (a sealed command: ``ota_id``, ``ota_size``, ``ota_chunk``):
   refused without a release key (OTA_NO_KEY), during an unconfirmed trial
   boot (OTA_BUSY), or when too large (OTA_NO_SPACE); a bundle refused
   before is refused again at once with the same reason. A new bundle empties
   the free slot (``fw/a`` or ``fw/b``, whichever is not confirmed) and
   records the download in ``fw/dl.json``; the same bundle resumes.
2. OTA data chunks (kind 6), in stream order from the ``next`` the node
   reports in every answer (an OTA status, kind 7). As the bytes arrive:
   the envelope complete -> the signature is verified (``phasecore.ed25519``,
   under the release key; OTA_WRONG_KEY, OTA_BAD_SIGNATURE) and the
   manifest checked (target and .mpy version: OTA_WRONG_TARGET; versions
   against ``phasenode.version``: OTA_DOWNGRADE, OTA_TOO_OLD,
   OTA_SAME_VERSION; its size against BEGIN's: OTA_BAD_BUNDLE) *before any
   file is written*; the file table complete -> its SHA-256 (OTA_BAD_HASH);
   each file complete -> its SHA-256, read back from flash (a mismatch
   deletes the file to be sent again; a second one is OTA_BAD_HASH). The
   last byte -> every file is hashed again: state READY, event OTA_READY.
3. OTA ACTIVATE: every file hashed once more, then ``phaseboot.activate``
   makes the slot the next boot's trial, and the node resets at the next
   safe moment: the relay idle, not settling, and its minimum dwell since
   the last make over, so the reboot blinks the house no more often than a
   move could (the relay's own restore runs as after any reboot).
4. The trial boot: the health check below confirms it (``phaseboot.confirm``,
   event OTA_CONFIRMED) once the Pi has talked to the node (the time from an
   authentic heartbeat echoing this boot's nonce, and a reading taken by a
   poll) and the relay controller has restored (idle, no STATE_LOST); if that does not happen
   within ``confirm_s`` the trial is marked failed and the node resets,
   again at a safe moment; a crash or watchdog reset before confirmation
   fails it too (``phaseboot``). The next boot runs the previous firmware and
   reports OTA_ROLLED_BACK (reason, version).

Progress survives power cuts without a separate bitmap: the stream's bytes
are the head file (``fw/<slot>/head.bin``: magic, envelope, file table) and
the files themselves, appended chunk by chunk; LittleFS commits an append
at close, so after a cut each file has the length of its last whole
append, and ``next`` is recomputed from the lengths. Nothing here touches
the relays.

Loaded only when an update is under way (``phasenode.app`` creates the
``Updater`` on the first OTA message, or at boot during a trial or to report
a rollback), and ``phasecore.ed25519`` only for the seconds of a verify.

Public: ``Updater``, ``target_of``, ``DL_FILE``.
"""

import json
import sys

import phaseboot

from phasecore import ota
from phasecore.codes import (
    EV_OTA_CONFIRMED,
    EV_OTA_READY,
    EV_OTA_REFUSED,
    EV_OTA_ROLLED_BACK,
    LOCK_STATE_LOST,
    OTA_ACTIVATE,
    OTA_BEGIN,
    OTA_CANCEL,
    R_BUSY,
    R_DWELL,
    R_OTA_BAD_BUNDLE,
    R_OTA_BAD_HASH,
    R_OTA_BUSY,
    R_OTA_FLASH,
    R_OTA_NO_KEY,
    R_OTA_NO_SPACE,
    R_OTA_NOT_READY,
    R_OTA_UNKNOWN,
    R_OTA_WRONG_TARGET,
)
from phasecore.errors import OtaRefused
from phasenode.compat import const, ticks_diff
from phasenode.version import MIN_VERSION, VERSION

__all__ = ("Updater", "target_of", "DL_FILE")

DL_FILE = "fw/dl.json"
_DL_FORMAT = const(1)
_HEAD = "head.bin"
_ACTIVATE_DELAY_MS = const(2000)  # the ACTIVATE ack leaves before the reset
_RESET_RETRY_MS = const(1000)
_MAX_DL = const(512)


def target_of(board):
    """The bundle target a board runs: ``"esp32"`` for a chip, ``"host"`` for the virtual board."""
    return "host" if board.mcu == "host" else "esp32"


def _mpy_version():
    # The .mpy major version this interpreter loads; None on CPython (which loads no .mpy).
    v = getattr(sys.implementation, "_mpy", None)
    return None if v is None else v & 0xFF


def _dl_sum(d):
    text = "%d|%d|%d|%s|%d|%d" % (d["id"], d["size"], d["chunk"], d["slot"], d["state"], d["reason"])
    return "".join("%02x" % b for b in _sha(text.encode())[:8])


def _sha(data):
    import hashlib

    return hashlib.sha256(data).digest()


class Updater:
    """The update state machine of one node; see the module docstring.

    ``fs``: the flash (``phaseboot.PosixFs``); ``release_key``: 32 bytes or None;
    ``target``: ``target_of(board)``; ``events``: the node's ``EventQueue``;
    ``session`` and ``relay``: the node's (health and safe-reboot checks);
    ``reset``: what reboots the node; ``confirm_s``: the trial's deadline;
    ``now_ms``: the clock now (ticks_ms); ``boot``: the ``phaseboot.Selection``
    of this boot (None: read the state).
    """

    def __init__(
        self,
        fs,
        release_key,
        target,
        events=None,
        session=None,
        relay=None,
        reset=None,
        confirm_s=600,
        now_ms=0,
        boot=None,
        mpy=-1,
        version=VERSION,
        min_version=MIN_VERSION,
        max_size=ota.MAX_FILES_LEN + 16384,
    ):
        self.fs = fs
        self.release_key = release_key
        self.target = target
        self.events = events
        self.session = session
        self.relay = relay
        self._reset = reset
        self.confirm_s = confirm_s
        self.mpy = _mpy_version() if mpy == -1 else mpy
        self.version = tuple(version)
        self.min_version = tuple(min_version)
        self.max_size = max_size
        self._t0 = now_ms
        self._now = now_ms
        self.reset_at = None  # ticks_ms from which to reset when safe (activation, failed trial)
        self.resets = 0
        self.dl = None
        self.head = None
        self._env = None
        self._have = None  # bytes present per file, in table order
        self._bad = None  # hash mismatches per file (this boot)
        self._head_n = 0
        st = phaseboot.load(fs)
        self.trial = st["trial"] is not None and (boot is None or boot.trial)
        self.confirmed = False
        self.rollback = st["last"][0] if st["last"] else 0
        if st["last"] and not st["reported"]:
            reason, packed = st["last"][0], st["last"][1] if len(st["last"]) > 1 else 0
            self._event(EV_OTA_ROLLED_BACK, reason, packed)
            try:
                phaseboot.mark_reported(fs)
            except OSError:
                pass  # reported again after the next boot: an event twice, never none
        self._load_dl()

    # --- the state on flash ----------------------------------------------------------

    def _load_dl(self):
        try:
            data = self.fs.read(DL_FILE, _MAX_DL)
            d = json.loads(data.decode()) if data is not None else None
        except (OSError, ValueError):
            d = None
        if not isinstance(d, dict) or d.get("format") != _DL_FORMAT:
            return
        try:
            if d.get("sum") != _dl_sum(d) or d["slot"] not in ("a", "b"):
                return
        except (KeyError, TypeError, ValueError):
            return
        st = phaseboot.load(self.fs)
        if d["slot"] in (st["confirmed"], st["trial"]):
            # Left behind by a cut just after an activation: that slot now boots, never touch it.
            self.fs.remove(DL_FILE)
            return
        self.dl = d
        if d["state"] in (ota.RECEIVING, ota.READY):
            try:
                self._resume()
            except OtaRefused as e:
                self._refused(e)

    def _save_dl(self):
        d = self.dl
        d["format"] = _DL_FORMAT
        d["sum"] = _dl_sum(d)
        self.fs.makedirs("fw")
        self.fs.write_atomic(DL_FILE, json.dumps(d).encode())

    def _slot_path(self, name):
        return "fw/%s/%s" % (self.dl["slot"], name)

    # --- commands ------------------------------------------------------------------

    def command(self, cmd, now_ms):
        """An OTA command (decoded ``phasecore.msg`` fields); returns ``(outcome, reason)`` for the ack."""
        self._now = now_ms
        action = cmd["ota"]
        try:
            if action == OTA_BEGIN:
                self._begin(cmd["ota_id"], cmd["ota_size"], cmd["ota_chunk"])
            elif action == OTA_ACTIVATE:
                self._activate(cmd["ota_id"], now_ms)
            elif action == OTA_CANCEL:
                self._cancel(cmd["ota_id"])
        except OtaRefused as e:
            return 1, e.reason  # ACK_REFUSED
        except (OSError, ValueError):
            return 2, R_OTA_FLASH  # ACK_FAILED
        return 0, 0

    def _begin(self, ota_id, size, chunk):
        if self.release_key is None:
            raise OtaRefused(R_OTA_NO_KEY, "no release key provisioned")
        if phaseboot.load(self.fs)["trial"] is not None:
            raise OtaRefused(R_OTA_BUSY, "a trial boot is not confirmed yet")
        d = self.dl
        if d is not None and d["id"] == ota_id:
            if d["state"] == ota.REFUSED:
                raise OtaRefused(d["reason"], "bundle refused before")
            if d["state"] in (ota.RECEIVING, ota.READY) and d["size"] == size and d["chunk"] == chunk:
                return
        if size > self.max_size:
            raise OtaRefused(R_OTA_NO_SPACE, "bundle of %d bytes exceeds %d" % (size, self.max_size))
        st = phaseboot.load(self.fs)
        slot = "b" if st["confirmed"] == "a" else "a"
        self.fs.rmtree("fw/" + slot)
        free = self.fs.free() if hasattr(self.fs, "free") else -1
        if 0 <= free < size:
            raise OtaRefused(R_OTA_NO_SPACE, "bundle of %d bytes, %d free on flash" % (size, free))
        self.fs.makedirs("fw/" + slot)
        self.dl = {"id": ota_id, "size": size, "chunk": chunk, "slot": slot, "state": ota.RECEIVING, "reason": 0}
        self._save_dl()
        self._forget()
        self._head_n = 0

    def _forget(self):
        self.head = None
        self._env = None
        self._have = None
        self._bad = None

    def _cancel(self, ota_id):
        d = self.dl
        if d is None or d["id"] != ota_id:
            return
        self.fs.remove(DL_FILE)
        self.fs.rmtree("fw/" + d["slot"])
        self.dl = None
        self._forget()

    def _activate(self, ota_id, now_ms):
        d = self.dl
        if d is None or d["id"] != ota_id:
            raise OtaRefused(R_OTA_UNKNOWN, "no bundle %d downloaded" % ota_id)
        if d["state"] != ota.READY:
            raise OtaRefused(R_OTA_NOT_READY, "bundle not complete and verified")
        if self.head is None or self.head.files is None:
            self._resume()
        if not self._verify_files():
            raise OtaRefused(R_OTA_NOT_READY, "a file changed on flash: it is sent again")
        phaseboot.activate(self.fs, d["slot"], self.head.manifest["version"])
        self.fs.remove(DL_FILE)
        self.dl = None
        self.reset_at = now_ms + _ACTIVATE_DELAY_MS

    # --- chunks ------------------------------------------------------------------------

    def data(self, ota_id, index, data, now_ms):
        """A chunk (kind 6); returns the OTA status fields to answer with (``index`` echoed)."""
        self._now = now_ms
        d = self.dl
        if d is None or d["id"] != ota_id:
            st = self._status(ota_id, self._idle_state(), 0, R_OTA_UNKNOWN)
        else:
            st = None
            if d["state"] == ota.RECEIVING and data:
                try:
                    self._write(index, data)
                except OtaRefused as e:
                    self._refused(e)
                except OSError:
                    # Not a verdict on the bundle: the chunk is asked for again, the reason says why.
                    st = self.status()
                    st["reason"] = R_OTA_FLASH
            if st is None:
                st = self.status()
        st["index"] = index
        return st

    def status(self):
        """The OTA status fields now (``phasecore.ota`` kind 7)."""
        d = self.dl
        if d is None:
            return self._status(0, self._idle_state(), 0, 0)
        nxt = 0 if d["state"] != ota.RECEIVING else self._next() // d["chunk"]
        if d["state"] == ota.READY:
            nxt = (d["size"] + d["chunk"] - 1) // d["chunk"]
        return self._status(d["id"], d["state"], nxt, d["reason"])

    def _idle_state(self):
        if self.trial and not self.confirmed:
            return ota.TRIAL
        return ota.ACTIVATING if self.reset_at is not None else ota.IDLE

    def _status(self, ota_id, state, nxt, reason):
        out = {"ota_id": ota_id, "state": state, "next": nxt, "version": self.version}
        if reason:
            out["reason"] = reason
        if self.rollback:
            out["rollback"] = self.rollback
        return out

    def _refused(self, e):
        d = self.dl
        d["state"] = ota.REFUSED
        d["reason"] = e.reason
        self._forget()
        try:
            self._save_dl()  # first: a cut while the slot is emptied leaves a refusal, not a half slot to resume
            self.fs.rmtree("fw/" + d["slot"])
        except OSError:
            pass  # refused in RAM; after a reboot the download resumes and is refused again
        self._event(EV_OTA_REFUSED, e.reason, d["id"])

    def _next(self):
        # The first stream byte not yet on flash.
        if self.head is None or self.head.files is None:
            return self._head_n
        at = self.head.files_at
        have = self._have
        for i, (_path, size, _h) in enumerate(self.head.files):
            if have[i] < size:
                return at + have[i]
            at += size
        return at

    def _head_limit(self):
        if self._env is None:
            return ota.HEAD_FIXED
        if self.head is None:
            return ota.HEAD_FIXED + self._env
        return self.head.files_at

    def _write(self, index, data):
        d = self.dl
        start = index * d["chunk"]
        end = start + len(data)
        if end > d["size"] or (len(data) != d["chunk"] and end != d["size"]):
            return  # not a chunk of this bundle's cut: ignored, the status says what is wanted
        # The head: magic, envelope, table (each checked as it completes, before any file is written).
        while self.head is None or self.head.files is None:
            lim = self._head_limit()
            hp = self._head_n
            if not start <= hp < end:
                return
            stop = lim if lim < end else end
            self.fs.append(self._slot_path(_HEAD), data[hp - start : stop - start])
            self._head_n = stop
            if stop == lim:
                self._head_progress()
        at = self.head.files_at
        have = self._have
        for i, (path, size, _h) in enumerate(self.head.files):
            f_end = at + size
            p = at + have[i]
            if have[i] < size and start <= p < end:
                stop = f_end if f_end < end else end
                self.fs.append(self._slot_path(path), data[p - start : stop - start])
                have[i] = stop - at
                if have[i] == size:
                    self._file_done(i)
            at = f_end
            if at >= end:
                break
        if self._next() == d["size"] and self._verify_files():
            d["state"] = ota.READY
            self._save_dl()
            self._event(EV_OTA_READY, ota.pack_version(self.head.manifest["version"]), d["id"])

    def _head_progress(self):
        n = self._head_n
        if self._env is None and n >= ota.HEAD_FIXED:
            self._env = ota.envelope_len(self._read_head(ota.HEAD_FIXED))
        if self._env is not None and self.head is None and n >= ota.HEAD_FIXED + self._env:
            raw = self._read_head(ota.HEAD_FIXED + self._env)
            manifest, kid, sig = ota.decode_envelope(raw[ota.HEAD_FIXED : ota.HEAD_FIXED + self._env])
            head = ota.Head(self._env, manifest, kid, sig)
            self._check(head)
            self.head = head
        head = self.head
        if head is not None and head.files is None and n >= head.files_at:
            raw = self._read_head(head.files_at)
            head.set_table(memoryview(raw)[head.table_at : head.files_at])
            self._open_files(head)

    def _check(self, head):
        # Everything about the bundle that does not need its files: before one byte of them is written.
        d = self.dl
        if head.id != d["id"]:
            raise OtaRefused(R_OTA_BAD_BUNDLE, "manifest id %d is not the bundle %d begun" % (head.id, d["id"]))
        ota.verify_signature(head.manifest_bytes, head.kid, head.signature, self.release_key)
        m = head.manifest
        if m["target"] != self.target or (self.mpy is not None and m["mpy"] and m["mpy"] != self.mpy):
            raise OtaRefused(
                R_OTA_WRONG_TARGET,
                "bundle is for %s .mpy v%d, this node is %s .mpy v%s" % (m["target"], m["mpy"], self.target, self.mpy),
            )
        ota.check_versions(m, self.version, self.min_version)
        if head.total != d["size"]:
            raise OtaRefused(R_OTA_BAD_BUNDLE, "manifest says %d bytes, BEGIN %d" % (head.total, d["size"]))

    def _open_files(self, head):
        n = len(head.files)
        self._have = [0] * n
        self._bad = [0] * n
        made = {}
        for i, (path, size, _h) in enumerate(head.files):
            folder = path.rsplit("/", 1)[0]
            if folder not in made:
                self.fs.makedirs(self._slot_path(folder))
                made[folder] = True
            got = self.fs.size(self._slot_path(path))
            if got > size:
                self.fs.remove(self._slot_path(path))
                got = -1
            if got < 0:
                self.fs.append(self._slot_path(path), b"")
                got = 0
            self._have[i] = got
            if got == size and size == 0:
                self._file_done(i)

    def _file_done(self, i):
        path, size, h = self.head.files[i]
        if self.fs.sha256(self._slot_path(path), size) == h:
            return
        self._bad[i] += 1
        self.fs.remove(self._slot_path(path))
        self.fs.append(self._slot_path(path), b"")
        self._have[i] = 0
        if self._bad[i] >= 2:
            raise OtaRefused(R_OTA_BAD_HASH, "file %s does not match its SHA-256" % path)

    def _verify_files(self):
        # Every file hashed from flash; a bad one is emptied to be sent again (``next`` points at it).
        # Returns False when one was bad; the second mismatch of a file refuses the bundle.
        for i, (path, size, h) in enumerate(self.head.files):
            p = self._slot_path(path)
            if self.fs.size(p) == size and self.fs.sha256(p, size) == h:
                continue
            self._bad[i] += 1
            self.fs.remove(p)
            self.fs.append(p, b"")
            self._have[i] = 0
            if self._bad[i] >= 2:
                raise OtaRefused(R_OTA_BAD_HASH, "file %s does not match its SHA-256" % path)
            if self.dl["state"] == ota.READY:
                self.dl["state"] = ota.RECEIVING
                self._save_dl()
            return False
        return True

    def _read_head(self, n):
        data = self.fs.read(self._slot_path(_HEAD), ota.HEAD_FIXED + ota.MAX_ENVELOPE + ota.MAX_TABLE)
        if data is None or len(data) < n:
            raise OtaRefused(R_OTA_BAD_BUNDLE, "head file shorter than expected")
        return data

    def _resume(self):
        # After a reboot (or a BEGIN of the bundle already under way): where the download stands. The
        # head is checked again in the steps it arrived in (the signature too), the files' lengths read.
        self._forget()
        self.fs.makedirs("fw/" + self.dl["slot"])
        n = self.fs.size(self._slot_path(_HEAD))
        self._head_n = n if n > 0 else 0
        self._head_progress()
        if self.dl["state"] == ota.READY and self._next() != self.dl["size"]:
            self.dl["state"] = ota.RECEIVING
            self._save_dl()

    # --- the trial, and resets ---------------------------------------------------------------

    def healthy(self):
        """True once the Pi has talked to the node (time, a reading polled) and the relay restored."""
        s = self.session
        if s is None or s.now_s() is None or s.rebooted:
            return False
        r = self.relay
        return r is None or (not r.busy and not r.locks & LOCK_STATE_LOST)

    def tick(self, now_ms):
        """Called often (the app's supervisor): confirms a healthy trial, resets when one is due and safe."""
        self._now = now_ms
        if self.trial and not self.confirmed:
            if self.healthy():
                if phaseboot.confirm(self.fs) is not None:
                    self.confirmed = True
                    self._event(EV_OTA_CONFIRMED, ota.pack_version(self.version), 0)
            elif self.reset_at is None and ticks_diff(now_ms, self._t0) > self.confirm_s * 1000:
                phaseboot.fail(self.fs, ota.RB_HEALTH)
                self.reset_at = now_ms
        if self.reset_at is not None and ticks_diff(now_ms, self.reset_at) >= 0 and self.safe_to_reset(now_ms):
            self.resets += 1
            self.reset_at = now_ms + _RESET_RETRY_MS
            if self._reset is not None:
                self._reset()

    def safe_to_reset(self, now_ms):
        """A reboot blinks the house as a move does: only with the relay idle, settled and past its dwell."""
        r = self.relay
        if r is None:
            return True
        if r.busy or r.blackout:
            return False
        other = 0 if r.phase != 0 else 1
        return r.check(other, now_ms) not in (R_BUSY, R_DWELL)

    def _event(self, code, a, b):
        if self.events is not None:
            self.events.add(code, a, b)
