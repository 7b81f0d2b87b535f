"""The firmware-update rig: randomized update runs with power cuts at the node and restarts of the Pi.

Used by ``phasekit bench ota`` (1,000 runs) and tests/tools/test_bench_ota.py
(a CI-sized number). Each run is one node and one transformer Pi, in one
process, in virtual time:

- the node is the real firmware code on CPython: ``phaseboot`` choosing the
  slot at every boot, ``phasenode.ota.Updater``, ``phasenode.session.Session``
  and ``phasenode.relay.RelayController`` on the simulated relay board
  (``phasenode.hal.pin_host``); its flash is ``SimFlash``, an in-memory file
  system with LittleFS's semantics (an append or a file replaced is
  committed whole or not at all) that loses power at an armed write, or,
  with ``torn=True``, FAT's (a cut append leaves a random part of its
  bytes). Keys, sequence bounds and the relay state are kept in memory and
  survive every cut (``phasenode.persist`` and its own power-cut tests cover
  them);
- the Pi is the real ``phasegate.ota.Engine`` with a ``phasegate.registry``
  on real files in a temporary folder, talking to the node directly (no
  serial line: ``RigLink`` hands each sealed payload to the node's session
  and returns its sealed answer); it polls the node every 10 s as the bus
  would. A Pi restart is an exception raised out of the engine at an armed
  request: engine and registry are built again from their files;
- the firmware is a synthetic bundle (a few files of random bytes) signed
  with a fresh release key: the properties checked do not depend on what
  the files contain. The node starts on version 1.0.0 in ``lib``;
  the bundle is 1.1.0, except where a run tampers with it (one byte of a
  file, of the file table, of the manifest or of the signature; an old
  version below the running minimum; another signing key; a minimum above
  the running version) or makes the new version bad (it crashes at boot, or
  boots but never talks to the Pi).

After a run the node is booted once more and checked: the slot the boot
selector picks holds exactly one version, every file matching the
manifest of that version (``lib`` the old one; ``fw/a``, ``fw/b`` a new one
whose signature verifies), never a mix; the relay board never closed any
phase but the house's (no move), never two; the version the node reports is
the slot's. Expected outcomes are checked too: a good bundle ends on the
new version, a tampered one is refused with its typed reason, a bad one
rolls back.

Public: ``SimFlash``, ``Run``, ``run``, ``Totals``, ``TAMPER``, ``BAD``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from phasecore import codes, keys, ota
from phasecore.replay import SequenceCounter
from phasenode.hal.pin_host import PowerCut, RelayBoard

__all__ = ("SimFlash", "Run", "run", "Totals", "TAMPER", "BAD", "OLD", "NEW")

OLD = (1, 0, 0)
NEW = (1, 1, 0)
SITE_KEY = bytes(range(32))  # synthetic
ADDR = 7
TAMPER = ("file", "table", "manifest", "signature", "old", "other_key", "too_old")
EXPECTED_REASON = {
    "file": codes.R_OTA_BAD_HASH,
    "table": codes.R_OTA_BAD_HASH,
    "manifest": codes.R_OTA_BAD_SIGNATURE,
    "signature": codes.R_OTA_BAD_SIGNATURE,
    "old": codes.R_OTA_DOWNGRADE,
    "other_key": codes.R_OTA_WRONG_KEY,
    "too_old": codes.R_OTA_TOO_OLD,
}
BAD = ("crash", "silent")
DEAD_TIME_MS = 300
_TICK_MS = 100
_POLL_MS = 10000
_REQUEST_MS = 30


class PiRestart(Exception):
    """The Pi process is killed here (fault injection of the rig)."""


class Crash(Exception):
    """The new firmware crashes at boot (a run's bad version): the chip resets, not a power-on."""


# ---- the simulated flash -------------------------------------------------------------------------------


class SimFlash:
    """An in-memory flash file system with ``phaseboot.PosixFs``'s methods, that loses power at an armed write.

    ``cut_at``: the write operation (counting from 1 in ``ops``) at which
    ``PowerCut`` is raised. LittleFS semantics: nothing of the cut operation
    lands; ``torn``: a cut append lands a random part of its bytes first.
    """

    def __init__(self, rng: random.Random, torn: bool = False):
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.ops = 0
        self.cut_at: int | None = None
        self.cuts = 0
        self.torn = torn
        self.rng = rng

    def _write_op(self) -> bool:
        self.ops += 1
        return self.cut_at is not None and self.ops >= self.cut_at

    def _cut(self) -> None:
        self.cut_at = None
        self.cuts += 1
        raise PowerCut("flash write %d" % self.ops)

    def path(self, name: str) -> str:
        return name

    def _parent_ok(self, name: str) -> bool:
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        return parent == "" or parent in self.dirs

    def read(self, name: str, limit: int) -> bytes | None:
        data = self.files.get(name)
        if data is not None and len(data) > limit:
            raise OSError("%s is larger than %d bytes" % (name, limit))
        return data

    def write_atomic(self, name: str, data: bytes) -> None:
        if not self._parent_ok(name):
            raise OSError(2, "no folder for %s" % name)
        if self._write_op():
            self._cut()
        self.files[name + ".tmp"] = bytes(data)
        if self._write_op():
            self._cut()
        self.files[name] = self.files.pop(name + ".tmp")

    def append(self, name: str, data: bytes) -> None:
        if not self._parent_ok(name):
            raise OSError(2, "no folder for %s" % name)
        if self._write_op():
            if self.torn and data:
                self.files[name] = self.files.get(name, b"") + bytes(data[: self.rng.randrange(len(data))])
            self._cut()
        self.files[name] = self.files.get(name, b"") + bytes(data)

    def size(self, name: str) -> int:
        if name in self.dirs:
            return 0
        data = self.files.get(name)
        return -1 if data is None else len(data)

    def remove(self, name: str) -> None:
        if name in self.files:
            if self._write_op():
                self._cut()
            del self.files[name]

    def makedirs(self, name: str) -> None:
        p = ""
        for part in name.split("/"):
            p = p + "/" + part if p else part
            if p not in self.dirs:
                if self._write_op():
                    self._cut()
                self.dirs.add(p)

    def rmtree(self, name: str) -> None:
        for f in sorted(f for f in self.files if f.startswith(name + "/")):
            self.remove(f)
        for d in sorted((d for d in self.dirs if d == name or d.startswith(name + "/")), reverse=True):
            if self._write_op():
                self._cut()
            self.dirs.discard(d)

    def sha256(self, name: str, size: int) -> bytes | None:
        data = self.files.get(name)
        if data is None or len(data) < size:
            return None
        return hashlib.sha256(data[:size]).digest()

    def free(self) -> int:
        return 4 * 1024 * 1024 - sum(len(v) for v in self.files.values())


class _Mem:
    """A load/save pair kept in memory (committed at once; survives every cut)."""

    def __init__(self) -> None:
        self.value: Any = None

    def load(self) -> Any:
        return self.value

    def save(self, v: Any) -> None:
        self.value = v


# ---- bundles ---------------------------------------------------------------------------------------------


def _files(rng: random.Random, n: int, size: int) -> list[tuple[str, bytes]]:
    names = ["lib/phasenode/%s.mpy" % w for w in ("app", "session", "relay", "ota", "checks", "link", "pzem", "x")]
    names += ["lib/phasecore/%s.mpy" % w for w in ("cbor", "seal", "msg", "aes", "ccm", "crc")]
    return [(names[i], rng.randbytes(rng.randint(size // 2, size))) for i in range(n)]


def _bundle(
    files: list[tuple[str, bytes]], version: tuple[int, int, int], min_version: tuple[int, int, int], key: Any
) -> bytes:
    from phasekit.release import bundle_bytes

    return bundle_bytes(files, version, min_version, "host", 0, None, key)


def tamper(data: bytes, how: str, rng: random.Random) -> bytes:
    """One byte of the bundle changed where ``how`` says (file, table, manifest, signature)."""
    head = ota.parse_head(data)
    b = bytearray(data)
    if how == "file":
        i = rng.randrange(head.files_at, head.total)
    elif how == "table":
        i = rng.randrange(head.table_at, head.files_at)
    elif how == "signature":
        i = head.table_at - 1 - rng.randrange(ota.SIG_LEN)
    else:  # manifest: a byte of its values that keeps it well-formed CBOR (the table hash: 32 bytes)
        m = head.manifest_bytes
        at = data.index(m) + m.index(head.manifest["table_sha256"])
        i = at + rng.randrange(32)
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


# ---- the node ------------------------------------------------------------------------------------------


class Node:
    """The node's firmware objects, booted from its flash as a chip boots; see the module docstring."""

    def __init__(self, rig: Run):
        self.rig = rig
        self.flash = rig.flash
        self.board = RelayBoard(True, clock=lambda: rig.now_ms, keep=None)
        self.relay_mem = _Mem()
        self.seq_mem = _Mem()
        self.pirx_mem = _Mem()
        self.oplock_mem = _Mem()
        self.oplock_mem.value = 0
        self.up = False
        self.down_until = 0
        self.reset_pending = False
        self.boots = 0
        self.slot = "lib"
        self.version = OLD
        self.session: Any = None
        self.relay: Any = None
        self.ota: Any = None
        self.events: Any = None
        self.silent = False

    def boot(self, power_on: bool) -> None:
        """One boot: the selector, then the relay controller, the session; may raise PowerCut or Crash."""
        import phaseboot

        from phasenode.events import EventQueue
        from phasenode.relay import RelayController, RelayRules
        from phasenode.session import Session

        rig = self.rig
        self.up = True
        self.boots += 1
        self.ota = None
        self.session = None
        self.relay = None
        now = rig.now_ms
        # The relays open before anything else (boot.py: select reads, relays open, booted writes).
        sel = phaseboot.select(self.flash, power_on=power_on, path=[])
        pins = [self.board.Pin(p.id, self.board.Pin.OUT, value=0) for p in self.board.pins]
        rules = RelayRules(dead_time_ms=DEAD_TIME_MS, min_dwell_s=60, settle_ms=0, lock_hold_s=0)
        self.relay = RelayController(pins, True, self.relay_mem.load, self.relay_mem.save, now, rules, codes.PHASE_A)
        sel.booted()
        self.slot = sel.slot
        self.version, min_version = rig.slot_version(self.slot)
        self.silent = False
        if self.version == NEW and rig.bad == "crash":
            raise Crash("the new firmware crashes at boot")
        self.silent = self.version == NEW and rig.bad == "silent"
        self.events = EventQueue()
        nk = keys.NodeKeys.from_site_key(SITE_KEY, ADDR, 0)
        counter = SequenceCounter(self.seq_mem.load, self.seq_mem.save, block=64)
        self.session = Session(
            nk.node_context(),
            counter,
            (self.pirx_mem.load, self.pirx_mem.save),
            (self.oplock_mem.load, self.oplock_mem.save),
            self.relay,
            None,
            self.events,
            now,
            3600,
            0,
            answer_heartbeats=True,
            fw="phasenode " + ota.version_text(self.version),
            ota=self._make_updater,
        )
        self.session.set_measurement(2300, 5000, 11000, 1000, 500, 95, False)
        self._version = (self.version, min_version)
        st = phaseboot.load(self.flash)
        if st["trial"] is not None or not st["reported"]:
            self.session.updater()

    def _make_updater(self) -> Any:
        import phaseboot  # noqa: F401 - as phasenode.app: the boot selector must be there

        from phasenode.ota import Updater

        if self.ota is None:
            v, mv = self._version
            self.ota = Updater(
                self.flash,
                self.rig.release_public,
                "host",
                self.events,
                self.session,
                self.relay,
                reset=self._reset,
                confirm_s=600,
                now_ms=self.rig.now_ms,
                mpy=None,
                version=v,
                min_version=mv,
            )
        return self.ota

    def _reset(self) -> None:
        self.reset_pending = True

    def tick(self, now_ms: int) -> None:
        self.relay.tick(now_ms)
        self.session.prepare(now_ms)
        if self.ota is not None:
            self.ota.tick(now_ms)

    def handle(self, payload: bytes, now_ms: int) -> bytes | None:
        if self.silent:
            return None
        return self.session.handle(payload, now_ms)

    def poll(self, now_ms: int) -> bytes | None:
        if self.silent:
            return None
        self.session.prepare(now_ms)
        return self.session.answer_poll(now_ms)


# ---- the Pi's side --------------------------------------------------------------------------------------


class _Frame:
    def __init__(self, payload: bytes):
        self.payload = payload


class _Reply:
    def __init__(self, payload: bytes, t: float):
        self.frame = _Frame(payload)
        self.t = t
        self.addr = ADDR


class _Clock:
    def __init__(self, rig: Run):
        self.rig = rig

    def monotonic(self) -> float:
        return self.rig.now_ms / 1000.0

    def wall(self) -> float:
        return 1700000000 + self.rig.now_ms / 1000.0


class RigLink:
    """The Pi's link to the node in the rig: each request costs a chunk transaction of virtual time."""

    def __init__(self, rig: Run):
        self.rig = rig

    async def request(self, addr: int, payload: bytes) -> _Reply | None:
        rig = self.rig
        rig.requests += 1
        if rig.pi_restart_at is not None and rig.requests >= rig.pi_restart_at:
            rig.pi_restart_at = None
            raise PiRestart()
        rig.advance(_REQUEST_MS)
        reply = rig.node_call(lambda: rig.node.handle(payload, rig.now_ms))
        await asyncio.sleep(0)
        if not reply:
            return None
        return _Reply(reply, rig.now_ms / 1000.0)

    async def wait_idle(self) -> None:
        await asyncio.sleep(0)

    def idle_left(self) -> float:
        return float("inf")


# ---- one run ------------------------------------------------------------------------------------------------


class Run:
    """One randomized update run (``seed``); ``go()`` runs it and returns the result dict."""

    def __init__(
        self,
        seed: int,
        cuts: int = 3,
        restarts: int = 2,
        p_tamper: float = 0.25,
        p_bad: float = 0.15,
        torn: bool = False,
        n_files: int = 6,
        file_size: int = 1500,
        max_hours: float = 12.0,
    ):
        rng = self.rng = random.Random(seed)
        self.seed = seed
        self.now_ms = 0
        self.max_ms = int(max_hours * 3600 * 1000)
        self.flash = SimFlash(rng, torn)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        self.release_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.tamper = rng.choice(TAMPER) if rng.random() < p_tamper else None
        self.bad = rng.choice(BAD) if self.tamper is None and rng.random() < p_bad else None
        base = _files(rng, n_files, file_size)
        for path, data in base:
            self.flash.files[path] = data
            folder = path.rsplit("/", 1)[0]
            self.flash.dirs.update({"lib", folder})
        self.base = dict(base)
        new_files = [(p, rng.randbytes(len(d) + rng.randint(-100, 100))) for p, d in base]
        version, min_version, signer = NEW, OLD, key
        if self.tamper == "old":
            version, min_version = (0, 9, 0), (0, 9, 0)
        elif self.tamper == "too_old":
            min_version = (1, 0, 5)
        elif self.tamper == "other_key":
            signer = Ed25519PrivateKey.generate()
        self.new_version = version
        data = _bundle(new_files, version, min_version, signer)
        self.good_head = ota.parse_head(data)
        if self.tamper in ("file", "table", "manifest", "signature"):
            data = tamper(data, self.tamper, rng)
        self.bundle = data
        self.node = Node(self)
        self.requests = 0
        self.registry: Any = None  # the Pi's, from its first start on
        self.pi_restart_at: int | None = None
        self._restarts_left = restarts
        self._cuts_left = cuts
        self.pi_restarts = 0
        self.node_cuts = 0
        self.resets = 0
        self.crashes = 0
        self.outages_ms: list[int] = []
        self.down: list[tuple[int, int]] = []  # (start, end) ms of the node's power cuts
        self.folder = tempfile.mkdtemp(prefix="phasekit-ota-rig-")
        self.expected_ops = (len(data) // ota.DEFAULT_CHUNK + n_files) * 2 + 20
        self._next_poll = _POLL_MS

    # ---- time and the node ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        rng = self.rng
        if self._cuts_left > 0 and self.flash.cut_at is None and rng.random() < 0.7:
            self._cuts_left -= 1
            self.flash.cut_at = self.flash.ops + rng.randint(1, self.expected_ops)
        if self._restarts_left > 0 and self.pi_restart_at is None and rng.random() < 0.7:
            self._restarts_left -= 1
            self.pi_restart_at = self.requests + rng.randint(1, max(2, self.expected_ops // 2))

    def node_call(self, fn: Callable[[], Any]) -> Any:
        """Run node code; a power cut or a crash inside it takes the node down (and the answer with it)."""
        node = self.node
        if not node.up:
            return None
        try:
            out = fn()
        except PowerCut:
            self._power_cut()
            return None
        except Crash:
            self._crash()
            return None
        if node.reset_pending:
            node.reset_pending = False
            self._reboot(power_on=False, cause="reset")
        return out

    def _power_cut(self) -> None:
        node = self.node
        self.node_cuts += 1
        node.board.power_cut()
        node.up = False
        node.down_until = self.now_ms + self.rng.choice((50, 500, 5000, 60000))
        self.down.append((self.now_ms, node.down_until))
        self._arm()

    def _crash(self) -> None:
        self.crashes += 1
        self._reboot(power_on=False, cause="crash")

    def _reboot(self, power_on: bool, cause: str) -> None:
        node = self.node
        if cause == "reset":
            self.resets += 1
        # A chip reset undrives the pins: the relays open as on a power cut, and boot.py opens them anyway.
        node.board.power_cut()
        node.board.power_on()
        for _ in range(50):
            try:
                node.boot(power_on)
                return
            except PowerCut:
                self.node_cuts += 1
                node.board.power_cut()
                node.board.power_on()
                power_on = True
                self._arm()
            except Crash:
                self.crashes += 1
                node.board.power_cut()
                node.board.power_on()
                power_on = False
        raise RuntimeError("seed %d: the node does not boot" % self.seed)

    def advance(self, ms: int) -> None:
        """Let ``ms`` of virtual time pass: the node ticks, comes back after a cut, is polled."""
        end = self.now_ms + ms
        while self.now_ms < end:
            self.now_ms = min(end, self.now_ms + _TICK_MS)
            node = self.node
            if not node.up:
                if self.now_ms >= node.down_until:
                    node.board.power_on()
                    self._reboot(power_on=True, cause="power")
                continue
            self.node_call(functools.partial(node.tick, self.now_ms))
            if self.now_ms >= self._next_poll:
                self._next_poll = self.now_ms + _POLL_MS
                self._poll()

    def _poll(self) -> None:
        payload = self.node_call(lambda: self.node.poll(self.now_ms))
        if payload and self.registry is not None:
            self.registry.receive(ADDR, payload, self.now_ms / 1000.0)
            self.registry.save_state()

    def slot_version(self, slot: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The version a slot holds, as its head file says (``lib``: the old one)."""
        if slot == "lib":
            return OLD, OLD
        data = self.flash.files.get("fw/%s/head.bin" % slot, b"")
        try:
            n = ota.envelope_len(data)
            m, _k, _s = ota.decode_envelope(data[ota.HEAD_FIXED : ota.HEAD_FIXED + n])
            man = ota.decode_manifest(m)
        except ota.OtaRefused:
            return (0, 0, 0), (0, 0, 0)  # a slot without a manifest: the final check reports it
        v, mv = man["version"], man["min_version"]
        return (v[0], v[1], v[2]), (mv[0], mv[1], mv[2])

    # ---- the Pi --------------------------------------------------------------------------------------------------

    def _pi(self) -> Any:
        from phasegate.ota import Engine
        from phasegate.registry import Registry

        self.registry = Registry(SITE_KEY, [ADDR], self.folder + "/pi-seq.txt", self.folder + "/registry.json", 60, 300)
        link: Any = RigLink(self)  # the engine's Link (request, wait_idle, idle_left) with the rig's reply type
        return Engine(
            self.folder + "/ota",
            self.registry,
            link,
            clock=_Clock(self),
            sleep=self._sleep,
            watch_period_s=5.0,
            idle_poll_s=5.0,
        )

    async def _sleep(self, seconds: float) -> None:
        self.advance(int(seconds * 1000))
        await asyncio.sleep(0)

    async def _pi_until_done(self) -> str:
        from phasegate.ota import request_push

        bundle_path = self.folder + "/bundle.pkb"
        with open(bundle_path, "wb") as f:
            f.write(self.bundle)
        self._pi()  # first start: creates the Pi's files
        request_push(
            self.folder + "/ota",
            bundle_path,
            [ADDR],
            canary=1,
            wave=1,
            chunks_per_gap=64,
            health_s=1800.0,
            node_timeout_s=1800.0,
        )
        self._arm()
        while True:
            engine = self._pi()
            stop = asyncio.Event()
            try:
                while self.now_ms < self.max_ms:
                    engine.take_request()
                    plan = engine.plan
                    if plan is not None and plan["state"] != "running":
                        return str(plan["state"])
                    if plan is None:
                        await self._sleep(5.0)
                        continue
                    if not await engine.step():
                        await self._sleep(5.0)
                return "timeout"
            except PiRestart:
                self.pi_restarts += 1
                self._arm()
                del stop
                continue

    def go(self) -> dict[str, Any]:
        try:
            self._reboot(power_on=True, cause="power")
            plan_state = asyncio.run(self._pi_until_done())
            self.flash.cut_at = None
            self.pi_restart_at = None
            # Let the node settle: a pending reset, a trial's confirmation or its deadline.
            for _ in range(200):
                st = self._boot_state()
                if (
                    st["trial"] is None
                    and not self.node.reset_pending
                    and (self.node.ota is None or self.node.ota.reset_at is None)
                ):
                    break
                self.advance(10000)
            self.advance(2000)
            return self._verdict(plan_state)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _boot_state(self) -> dict[str, Any]:
        import phaseboot

        return phaseboot.load(self.flash)

    # ---- the checks -----------------------------------------------------------------------------------------------

    def _verdict(self, plan_state: str) -> dict[str, Any]:
        import phaseboot

        problems: list[str] = []
        node = self.node
        # Boot once more, from what is on flash now.
        node.board.power_cut()
        node.board.power_on()
        self._reboot(power_on=True, cause="final")
        self.advance(DEAD_TIME_MS + 500)
        sel = phaseboot.select(self.flash, power_on=True, path=[])
        slot = sel.slot
        if slot == "lib":
            for path, data in self.base.items():
                if self.flash.files.get(path) != data:
                    problems.append("lib/ does not hold the old firmware (%s)" % path)
            on = "old"
        else:
            # head.bin holds the stream's head (magic, envelope, file table): the manifest the slot was
            # verified against, checked again here, then every file against it.
            data = self.flash.files.get("fw/%s/head.bin" % slot, b"")
            head: Any = None
            try:
                n = ota.envelope_len(data)
                m, kid, sig = ota.decode_envelope(data[ota.HEAD_FIXED : ota.HEAD_FIXED + n])
                head = ota.Head(n, m, kid, sig)
                head.set_table(data[head.table_at : head.files_at])
                ota.verify_signature(m, kid, sig, self.release_public)
            except ota.OtaRefused as e:
                problems.append("slot %s: its head does not verify: %s" % (slot, e))
                head = None
            on = "broken"
            if head is not None:
                for path, size, h in head.files:
                    p = "fw/%s/%s" % (slot, path)
                    if self.flash.size(p) != size or self.flash.sha256(p, size) != h:
                        problems.append("slot %s: %s does not match the manifest: a mix" % (slot, path))
                on = "new" if tuple(head.manifest["version"]) == self.new_version else "other"
        if node.version != (OLD if slot == "lib" else self.new_version):
            problems.append("the node reports %s on slot %s" % (node.version, slot))
        b = node.board
        if b.overlaps or b.max_closed > 1:
            problems.append("two phases closed: %s" % b.first_violation)
        if b.operations[1] or b.operations[2]:
            problems.append("a relay other than the house's phase closed: %r" % (b.operations,))
        if b.closed() != [codes.PHASE_A]:
            problems.append("after the final boot the house is on %r, not A" % (b.closed(),))
        # The house without supply, from phase A opening to it closing again, for every outage no power
        # cut touched (those are the grid's): reboots of the update (activation, rollback) and crashes.
        opened = None
        for t, i, closed, _cause in b.transitions:
            if i != codes.PHASE_A:
                continue
            if not closed:
                opened = t
            elif opened is not None:
                if not any(s0 <= t and e >= opened for s0, e in self.down):
                    self.outages_ms.append(t - opened)
                opened = None
        expected = "new"
        if self.tamper is not None or self.bad is not None:
            expected = "old"
        if on != expected:
            problems.append("ended on the %s version, expected the %s one" % (on, expected))
        error = self._node_error()
        if self.tamper is not None:
            want = codes.OTA_REASON_NAMES[EXPECTED_REASON[self.tamper]]
            if error is None or want not in error:
                problems.append("tampered (%s): refused as %r, expected %s" % (self.tamper, error, want))
        if self.bad is not None and (error is None or "rolled back" not in error):
            problems.append("bad new version (%s): Pi saw %r, expected a rollback" % (self.bad, error))
        return {
            "seed": self.seed,
            "on": on,
            "slot": slot,
            "plan": plan_state,
            "tamper": self.tamper,
            "bad": self.bad,
            "error": error,
            "node_cuts": self.node_cuts,
            "pi_restarts": self.pi_restarts,
            "resets": self.resets,
            "crashes": self.crashes,
            "boots": node.boots,
            "requests": self.requests,
            "max_outage_ms": max(self.outages_ms) if self.outages_ms else 0,
            "hours": self.now_ms / 3600000.0,
            "problems": problems,
        }

    def _node_error(self) -> str | None:
        from phasegate.ota import read_plan

        try:
            plan = read_plan(self.folder + "/ota")
        except Exception:  # noqa: BLE001 - reported as no error text
            return None
        if plan is None:
            return None
        err = plan["nodes"][str(ADDR)].get("error")
        return None if err is None else str(err)


class Totals:
    """Counts over many runs (``run``): outcomes, faults injected, problems with their seeds."""

    def __init__(self) -> None:
        self.runs = 0
        self.on: dict[str, int] = {}
        self.tamper: dict[str, int] = {}
        self.bad: dict[str, int] = {}
        self.node_cuts = 0
        self.pi_restarts = 0
        self.resets = 0
        self.crashes = 0
        self.requests = 0
        self.max_outage_ms = 0
        self.failures: list[tuple[int, list[str]]] = []
        self.seconds = 0.0

    def add(self, r: dict[str, Any]) -> None:
        self.runs += 1
        self.on[r["on"]] = self.on.get(r["on"], 0) + 1
        if r["tamper"]:
            self.tamper[r["tamper"]] = self.tamper.get(r["tamper"], 0) + 1
        if r["bad"]:
            self.bad[r["bad"]] = self.bad.get(r["bad"], 0) + 1
        self.node_cuts += r["node_cuts"]
        self.pi_restarts += r["pi_restarts"]
        self.resets += r["resets"]
        self.crashes += r["crashes"]
        self.requests += r["requests"]
        self.max_outage_ms = max(self.max_outage_ms, r["max_outage_ms"])
        if r["problems"]:
            self.failures.append((r["seed"], r["problems"]))


def run(
    n: int,
    seed: int = 1,
    torn_every: int = 4,
    progress: Callable[[int, Totals], None] | None = None,
    **options: Any,
) -> Totals:
    """``n`` runs with seeds ``seed`` .. ``seed + n - 1`` (every ``torn_every``-th on FAT-like torn writes)."""
    tot = Totals()
    t0 = time.monotonic()
    for i in range(n):
        r = Run(seed + i, torn=torn_every > 0 and i % torn_every == torn_every - 1, **options).go()
        tot.add(r)
        if progress is not None:
            progress(i + 1, tot)
    tot.seconds = time.monotonic() - t0
    return tot


# ---- test vectors for the portable tests ---------------------------------------------------------------------


def vector_bundles() -> dict[str, Any]:
    """Signed bundles for tests/vectors/ota (the portable node tests cannot sign): a fresh key each time.

    The node under test runs 1.0.0 (minimum 1.0.0). ``good`` is 1.1.0; ``same``
    1.0.0; ``old`` 0.9.0 (below the running minimum); ``too_old`` 1.2.0 that
    replaces nothing below 1.0.5; ``other_key`` 1.1.0 signed by another key;
    ``unsigned`` 1.1.0 without a signature; ``esp32`` 1.1.0 for the chip target.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from phasekit.release import bundle_bytes

    rng = random.Random(20250101)
    files = [
        ("lib/phasecore/cbor.mpy", rng.randbytes(700)),
        ("lib/phasenode/__init__.mpy", b""),
        ("lib/phasenode/app.mpy", rng.randbytes(500)),
        ("lib/phasenode/sub/deep.mpy", rng.randbytes(230)),
    ]
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    out = {
        "good": bundle_bytes(files, (1, 1, 0), (1, 0, 0), "host", 0, None, key),
        "same": bundle_bytes(files, (1, 0, 0), (1, 0, 0), "host", 0, None, key),
        "old": bundle_bytes(files, (0, 9, 0), (0, 9, 0), "host", 0, None, key),
        "too_old": bundle_bytes(files, (1, 2, 0), (1, 0, 5), "host", 0, None, key),
        "other_key": bundle_bytes(files, (1, 1, 0), (1, 0, 0), "host", 0, None, other),
        "unsigned": bundle_bytes(files, (1, 1, 0), (1, 0, 0), "host", 0, None, None),
        "esp32": bundle_bytes(files, (1, 1, 0), (1, 0, 0), "esp32", 0, None, key),
    }
    return {
        "source": "phasekit.testing.ota_rig.vector_bundles (synthetic files, a fresh Ed25519 key)",
        "release_key": pub.hex(),
        "running": [1, 0, 0],
        "running_min": [1, 0, 0],
        "bundles": {k: v.hex() for k, v in out.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m phasekit.testing.ota_rig vectors PATH``: write the portable tests' bundles."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "vectors":
        print("usage: python -m phasekit.testing.ota_rig vectors tests/vectors/ota/bundles.json", file=sys.stderr)
        return 2
    with open(args[1], "w", encoding="ascii") as f:
        json.dump(vector_bundles(), f, indent=1, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
