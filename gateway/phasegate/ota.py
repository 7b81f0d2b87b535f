"""Firmware roll-outs from the transformer Pi: a signed bundle to the bus's nodes over the bus itself,
canaries first, then waves, resumable across restarts of the Pi and of the nodes (docs/ota.md).

``phasekit ota push BUNDLE --config gateway.toml --canary N`` writes a request
into the gateway's OTA folder (``ota/`` beside the store); the running
gateway's ``Engine`` takes it up and owns the roll-out's state file
(``ota/rollout.json``, replaced atomically at every step), which ``phasekit
ota status`` reads. The Pi never decides whether a bundle is good: every
node checks the release signature and every hash itself, and refuses with
a typed reason the engine records.

Per node: ``pending`` -> BEGIN (a sealed OTA command) -> ``sending``: chunks
(kind 6) from the ``next`` the node reports in each answer (kind 7), so a
restart of either side resends nothing the node holds -> ``ready`` ->
ACTIVATE -> ``activating``: the node reboots into the new version on trial
and confirms itself healthy (its session talked to the Pi, its relay
controller restored), or goes back; the engine asks its status until it
says which -> ``done`` (or ``skipped``: already on that version) or
``failed`` (the reason: a refusal, a rollback, silence). The node is kept
out of balancing from ACTIVATE until it is done.

Waves: the first ``canary`` nodes, then ``wave`` at a time. The next wave
starts only when every node of the current one is done; a failure halts
the roll-out once the nodes of its wave have finished.

The bandwidth share (the one thing to know): everything the engine sends
goes in the gap between two polling rounds (``Bus.wait_idle``): at most
``chunks_per_gap`` chunks per gap (default 160), and each exchange only
while the gap left exceeds its worst case (a full frame out, the status
back, the reply timeout and retries), so a polling round never starts late
because of an update. At 115200 baud a chunk transaction is about 25 ms of
line time plus the node's work; 160 chunks take about 5 s of a 10 s
polling period, half the line. LoRa nodes are refused (``lora_refusal``).

Public: ``Engine``, ``Bundle``, ``new_plan``, ``request_push``,
``request_cancel``, ``read_plan``, ``lora_refusal``, ``OtaError``,
``ROLLOUT_FILE``, ``REQUEST_FILE``, ``NODE_STATES``, ``FINAL``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from phasecore import codes, msg
from phasecore import ota as _ota
from phasecore.errors import OtaRefused, quote
from phasegate.errors import ProtocolError

if TYPE_CHECKING:
    from phasegate.bus import Reply
    from phasegate.registry import Incoming, Registry

log = logging.getLogger(__name__)

__all__ = (
    "Engine",
    "Bundle",
    "Link",
    "new_plan",
    "request_push",
    "request_cancel",
    "read_plan",
    "lora_refusal",
    "OtaError",
    "ROLLOUT_FILE",
    "REQUEST_FILE",
    "NODE_STATES",
    "FINAL",
)

ROLLOUT_FILE = "rollout.json"
REQUEST_FILE = "request.json"
_FORMAT = 1
NODE_STATES = ("pending", "sending", "ready", "activating", "done", "skipped", "failed")
FINAL = ("done", "skipped", "failed")
_SAVE_EVERY = 32  # chunks between progress saves (the node, not this file, is the truth about progress)
_QUERY = 0xFFFFFFFF  # the index of a status query (an OTA data message without data)
# Refusals that say "not now" rather than "not this bundle": the step is tried again (until node_timeout_s).
_TRANSIENT = (codes.R_NO_TIME, codes.R_DEADLINE_PASSED, codes.R_PERSIST, codes.R_OTA_FLASH)

# Logged (INFO) when a node runs the roll-out's version, confirmed; harnesses may count them.
NODE_UPDATED = "node %d: firmware %s confirmed"


class OtaError(ProtocolError):
    """A bundle or roll-out request cannot be used (bad file, LoRa nodes, a roll-out already running)."""


class Link(Protocol):
    """What the engine sends through: ``phasegate.bus.Bus`` (``request``, ``wait_idle``, ``idle_left``)."""

    async def request(self, addr: int, payload: bytes, /) -> Reply | None: ...
    async def wait_idle(self) -> None: ...
    def idle_left(self) -> float: ...


# command(addr, fields) -> the node's ack (the controller's: time heartbeat first, numbered, journaled)
Command = Callable[[int, Mapping[str, Any]], Awaitable["Incoming | None"]]


class Bundle:
    """A bundle file, read as far as the Pi needs it: ``data``, ``manifest``, ``id``, ``version``, ``size``.

    Only the envelope and manifest are parsed: the Pi carries bytes and
    judges nothing else (``phasekit ota push`` checks the whole bundle, and
    the signature with the release public key, before it asks for a
    roll-out; the nodes check everything again).
    """

    def __init__(self, data: bytes):
        try:
            n = _ota.envelope_len(data)
            manifest, _kid, _sig = _ota.decode_envelope(data[_ota.HEAD_FIXED : _ota.HEAD_FIXED + n])
            self.manifest = _ota.decode_manifest(manifest)
        except OtaRefused as e:
            raise OtaError("bundle: %s" % e) from None
        self.data = data
        self.id: int = _ota.bundle_id(manifest)
        v = self.manifest["version"]
        self.version: tuple[int, int, int] = (v[0], v[1], v[2])
        self.size = len(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise OtaError("bundle %s: cannot read (%s)" % (path, type(e).__name__)) from None
        return cls(data)

    def count(self, chunk: int) -> int:
        """Chunks of ``chunk`` bytes."""
        return (self.size + chunk - 1) // chunk

    def chunk(self, index: int, chunk: int) -> bytes:
        return self.data[index * chunk : (index + 1) * chunk]


def lora_refusal(bundle_size: int, sf: int = 7, bw_hz: int = 125000, duty_pm: int = 10) -> str:
    """Why a bundle is not sent over LoRa, with the numbers: airtime and the duty-cycle wait it would take."""
    from phasecore import airtime

    chunks = (bundle_size + _ota.CHUNK_MAX - 1) // _ota.CHUNK_MAX
    # A LoRa packet holds a whole frame: the chunk, its CBOR, the seal and the frame's 6 bytes (249 + 6).
    on_air = chunks * airtime.airtime_us(255, sf, bw_hz) / 1e6
    wait_h = on_air / (duty_pm / 1000.0) / 3600
    return (
        "refused over LoRa: %d bytes are %d packets, %.0f s on air at SF%d/%d kHz; at a %.1f %% duty cycle the "
        "radio may send that in no less than %.1f h, and every node's readings share the channel. Update LoRa "
        "nodes over USB (phasekit deploy)" % (bundle_size, chunks, on_air, sf, bw_hz // 1000, duty_pm / 10, wait_h)
    )


# ---- the plan on disk ----------------------------------------------------------------------------------


def _atomic_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OtaError("%s: cannot read (%s)" % (path, e)) from None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise OtaError("%s: not a phasekit roll-out file" % path)
    return obj


def read_plan(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The roll-out state (``rollout.json``), None when there has been none."""
    return _read_json(Path(folder) / ROLLOUT_FILE)


def new_plan(
    bundle: Bundle,
    bundle_file: str,
    nodes: Iterable[int],
    canary: int = 1,
    wave: int = 10,
    chunks_per_gap: int = 160,
    health_s: float = 1800.0,
    chunk: int = _ota.DEFAULT_CHUNK,
    node_timeout_s: float = 900.0,
) -> dict[str, Any]:
    """A roll-out's initial state: every node ``pending``, canaries first in ``order``."""
    order = list(nodes)
    if not order or len(set(order)) != len(order):
        raise OtaError("a roll-out needs distinct node addresses, got %s" % quote(order))
    if canary < 0 or wave < 1 or chunks_per_gap < 1 or not 16 <= chunk <= _ota.CHUNK_MAX:
        raise OtaError("canary >= 0, wave >= 1, chunks_per_gap >= 1 and chunk 16..%d" % _ota.CHUNK_MAX)
    return {
        "format": _FORMAT,
        "bundle": bundle_file,
        "id": bundle.id,
        "version": _ota.version_text(bundle.version),
        "size": bundle.size,
        "chunk": chunk,
        "canary": canary,
        "wave": wave,
        "chunks_per_gap": chunks_per_gap,
        "health_s": health_s,
        "node_timeout_s": node_timeout_s,
        "created": time.time(),
        "state": "running",
        "reason": None,
        "order": order,
        "nodes": {
            str(a): {"state": "pending", "next": 0, "error": None, "fw": None, "attempts": 0, "t": None} for a in order
        },
    }


def request_push(
    folder: str | os.PathLike[str],
    bundle_path: str | os.PathLike[str],
    nodes: Iterable[int],
    replace: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Copy the bundle into ``folder`` and ask the gateway for a roll-out (``request.json``); returns the plan."""
    folder = Path(folder)
    bundle = Bundle.load(bundle_path)
    current = read_plan(folder)
    if current is not None and current["state"] == "running" and not replace:
        raise OtaError(
            "a roll-out of %s is running (phasekit ota status): cancel it, or push with --replace" % current["version"]
        )
    folder.mkdir(parents=True, exist_ok=True)
    name = "bundle-%08x.pkb" % bundle.id
    if not (folder / name).exists():
        tmp = folder / (name + ".tmp")
        tmp.write_bytes(bundle.data)
        os.replace(tmp, folder / name)
    plan = new_plan(bundle, name, nodes, **options)
    _atomic_json(folder / REQUEST_FILE, {"format": _FORMAT, "action": "push", "plan": plan})
    return plan


def request_cancel(folder: str | os.PathLike[str]) -> None:
    """Ask the gateway to stop the running roll-out (nodes already activated finish their trial)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_json(folder / REQUEST_FILE, {"format": _FORMAT, "action": "cancel"})


# ---- the engine ------------------------------------------------------------------------------------------


class Engine:
    """Runs the roll-out of ``folder`` over ``link`` (the bus), sealing through ``registry``.

    ``command(addr, fields)``: sends a command and returns the node's ack
    (the controller's ``command``: time heartbeat first, journaled); default:
    a heartbeat and ``registry.command`` here. ``hold(addr, s)`` /
    ``release(addr)``: keep a rebooting node out of balancing.
    ``event(addr, code, value, alarm)``: journal a Pi event.
    ``on_message(Incoming)``: what to do with a node message the engine gets
    (the controller's handler: a heartbeat is journaled); ``heartbeat(addr)``:
    the controller's time heartbeat (default: one here, echoing the node's
    boot nonce as the controller does). ``clock`` has
    ``monotonic()`` and ``wall()``; ``sleep`` is awaited between steps.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        registry: Registry,
        link: Link,
        command: Command | None = None,
        hold: Callable[[int, float], None] | None = None,
        release: Callable[[int], None] | None = None,
        event: Callable[[int, int, float, bool], None] | None = None,
        on_message: Callable[[Incoming], None] | None = None,
        heartbeat: Callable[[int], Awaitable[None]] | None = None,
        clock: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        watch_period_s: float = 5.0,
        idle_poll_s: float = 2.0,
    ):
        self.folder = Path(folder)
        self.registry = registry
        self.link = link
        self._command = command or self._default_command
        self._hold = hold
        self._release = release
        self._event = event
        self._on_message = on_message
        self._heartbeat = heartbeat
        self.clock = clock or _Clock()
        self._sleep = sleep
        self.watch_period_s = watch_period_s
        self.idle_poll_s = idle_poll_s
        self.plan: dict[str, Any] | None = None
        self.bundle: Bundle | None = None
        self._progress: dict[int, float] = {}  # monotonic time of the node's last progress
        self._next_id = int(self.clock.wall()) & 0xFFFFFF00
        self.stats = {"chunks": 0, "chunk_replies": 0, "gaps": 0, "status_queries": 0, "saves": 0}
        self.t_chunk = self._chunk_time()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.plan = read_plan(self.folder)
        if self.plan is not None and self.plan["state"] == "running":
            self._load_bundle()

    def _chunk_time(self) -> float:
        # Worst case of one chunk transaction: a maximum frame out, a status back, every retry timing out.
        baud = getattr(getattr(self.link, "line", None), "baud", None)
        if baud is None:
            return 0.0
        from phasegate.bus import line_time_s

        timeout = getattr(self.link, "reply_timeout_s", 0.03)
        retries = getattr(self.link, "retries", 1)
        return line_time_s(256 + 48, baud) + (retries + 1) * timeout + 0.01

    def _load_bundle(self) -> None:
        assert self.plan is not None
        self.bundle = Bundle.load(self.folder / self.plan["bundle"])
        if self.bundle.id != self.plan["id"]:
            raise OtaError("%s is not bundle %08x" % (self.plan["bundle"], self.plan["id"]))

    def save(self) -> None:
        if self.plan is not None:
            _atomic_json(self.folder / ROLLOUT_FILE, self.plan)
            self.stats["saves"] += 1

    # ---- requests from phasekit ota ---------------------------------------------------------------------

    def take_request(self) -> bool:
        """Apply ``request.json`` if there is one (a new roll-out, or cancel); True when one was taken."""
        path = self.folder / REQUEST_FILE
        try:
            req = _read_json(path)
        except OtaError as e:
            log.warning("ota: %s; ignored", e)
            path.unlink(missing_ok=True)
            return False
        if req is None:
            return False
        if req.get("action") == "cancel":
            if self.plan is not None and self.plan["state"] == "running":
                self.plan["state"] = "cancelled"
                self.plan["reason"] = "cancelled by the operator"
                self.save()
                log.info("ota: roll-out of %s cancelled", self.plan["version"])
        elif req.get("action") == "push" and isinstance(req.get("plan"), dict):
            old = self.plan
            self.plan = req["plan"]
            try:
                self._load_bundle()
            except OtaError as e:
                log.warning("ota: roll-out refused: %s", e)
                self.plan = old
            else:
                unknown = [a for a in self.plan["order"] if a not in self.registry.nodes]
                for a in unknown:
                    self._fail(a, "not a node of this Pi")
                self.save()
                log.info(
                    "ota: roll-out of %s (%d bytes, id %08x) to %d nodes, %d canaries first",
                    self.plan["version"],
                    self.plan["size"],
                    self.plan["id"],
                    len(self.plan["order"]),
                    self.plan["canary"],
                )
        path.unlink(missing_ok=True)
        return True

    # ---- the loop -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work on the roll-out until ``stop``; idle (checking for requests) when there is none."""
        while not stop.is_set():
            self.take_request()
            if self.plan is None or self.plan["state"] != "running":
                await self._pause(stop, self.idle_poll_s)
                continue
            if not await self.step():
                await self._pause(stop, min(self.watch_period_s, self.idle_poll_s))

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        if self._sleep is asyncio.sleep:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        else:
            await self._sleep(seconds)

    def waves(self) -> list[list[int]]:
        """The roll-out's waves: the canaries, then ``wave`` nodes at a time, in the plan's order."""
        assert self.plan is not None
        order = self.plan["order"]
        c = self.plan["canary"]
        w = self.plan["wave"]
        out = [order[:c]] if c else []
        out += [order[i : i + w] for i in range(c, len(order), w)]
        return [x for x in out if x]

    def node(self, addr: int) -> dict[str, Any]:
        assert self.plan is not None
        n: dict[str, Any] = self.plan["nodes"][str(addr)]
        return n

    async def step(self) -> bool:
        """One unit of work on the running roll-out; False when it only waits (nothing to do right now)."""
        plan = self.plan
        assert plan is not None
        for wave in self.waves():
            states = [self.node(a)["state"] for a in wave]
            if all(s in FINAL for s in states):
                if "failed" in states:
                    self._halt("%d node(s) of a wave failed" % states.count("failed"))
                    return True
                continue
            for a in wave:
                if self.node(a)["state"] in ("pending", "sending"):
                    await self._send(a)
                    return True
            for a in wave:
                if self.node(a)["state"] == "ready":
                    await self._activate(a)
                    return True
            return await self._watch([a for a in wave if self.node(a)["state"] == "activating"])
        plan["state"] = "done"
        self.save()
        log.info("ota: roll-out of %s done", plan["version"])
        return True

    def _halt(self, reason: str) -> None:
        assert self.plan is not None
        self.plan["state"] = "halted"
        self.plan["reason"] = reason
        self.save()
        log.warning("ota: roll-out of %s halted: %s", self.plan["version"], reason)
        if self._event is not None:
            failed = sum(1 for n in self.plan["nodes"].values() if n["state"] == "failed")
            self._event(0, codes.EV_OTA_HALTED, failed, True)

    def _set(self, addr: int, state: str, **fields: Any) -> None:
        n = self.node(addr)
        n["state"] = state
        n["t"] = self.clock.wall()
        n.update(fields)
        self._progress[addr] = self.clock.monotonic()
        self.save()

    def _fail(self, addr: int, error: str, code: int = 0) -> None:
        if self.plan is None or str(addr) not in self.plan["nodes"]:
            return
        self._set(addr, "failed", error=error)
        log.warning("ota: node %d: update to %s failed: %s", addr, self.plan["version"], error)
        if self._release is not None:
            self._release(addr)
        if self._event is not None:
            self._event(addr, codes.EV_OTA_NODE_FAILED, code, True)

    def _stalled(self, addr: int) -> bool:
        assert self.plan is not None
        t = self._progress.setdefault(addr, self.clock.monotonic())
        return self.clock.monotonic() - t > self.plan["node_timeout_s"]

    # ---- talking to a node -------------------------------------------------------------------------------

    async def _gap(self, transactions: int = 4) -> None:
        """Wait until the bus is between rounds with room for ``transactions`` worst-case exchanges.

        A polling period whose gaps are shorter than that (a fast schedule, long
        reply timeouts) gets the step at the start of a whole gap instead.
        """
        left = self.link.idle_left()
        if left > transactions * self.t_chunk:
            return
        if left > 0:
            await self._sleep(left + 0.005)  # let this short remainder pass: a whole gap comes next
        self.stats["gaps"] += 1
        await self.link.wait_idle()

    async def _default_command(self, addr: int, fields: Mapping[str, Any]) -> Incoming | None:
        from phasegate.registry import CommandError

        await self.heartbeat(addr)
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        f = dict(fields, id=self._next_id)
        try:
            return await self.registry.command(self.link, addr, f, self.clock.monotonic())
        except CommandError as e:
            log.info("ota: node %d: %s", addr, e)
            return None

    async def heartbeat(self, addr: int) -> None:
        """A Pi heartbeat with the time, echoing the node's boot nonce (the node takes the time only then,
        refuses commands without it, and confirms a trial after it); the controller's when it has one."""
        if self._heartbeat is not None:
            await self._heartbeat(addr)
            return
        node = self.registry.nodes.get(addr)
        echoed = node.boot_nonce if node is not None else None
        nonce = await self._heartbeat_to(addr, echoed)
        if nonce is not None and nonce != echoed:
            # The node rebooted (a new nonce): echo that one at once, as the controller does.
            await self._heartbeat_to(addr, nonce)

    async def _heartbeat_to(self, addr: int, echo: int | None) -> int | None:
        fields: dict[str, Any] = {"uptime_s": 0, "fw": "phasegate ota", "time_s": int(self.clock.wall())}
        if echo is not None:
            fields["echo"] = echo
        reply = await self.link.request(addr, self.registry.seal(addr, msg.HEARTBEAT, fields))
        if reply is None or not reply.frame.payload:
            return None
        m = self.registry.receive(addr, reply.frame.payload, self.clock.monotonic())
        if m is None:
            return None
        if self._on_message is not None:
            self._on_message(m)
        if m.kind == msg.HEARTBEAT:
            nonce: int | None = m.body.get("boot_nonce")
            return nonce
        return None

    async def _ota_command(self, addr: int, action: int, **fields: int) -> Incoming | None:
        assert self.plan is not None
        f: dict[str, Any] = {
            "op": msg.OP_OTA,
            "deadline_s": int(self.clock.wall()) + 120,
            "ota": action,
            "ota_id": self.plan["id"],
        }
        f.update(fields)
        return await self._command(addr, f)

    async def status(self, addr: int, index: int = _QUERY, data: bytes = b"") -> dict[str, Any] | None:
        """Send one OTA data message (a chunk, or an empty status query); the node's OTA status, or None."""
        assert self.plan is not None
        payload = self.registry.seal(addr, msg.OTA_DATA, {"ota_id": self.plan["id"], "index": index, "data": data})
        reply = await self.link.request(addr, payload)
        if data:
            self.stats["chunks"] += 1
        else:
            self.stats["status_queries"] += 1
        if reply is None or not reply.frame.payload:
            return None
        m = self.registry.receive(addr, reply.frame.payload, self.clock.monotonic())
        if m is None:
            return None
        if m.kind != msg.OTA_STATUS:
            if self._on_message is not None:
                self._on_message(m)
            return None
        if m.body.get("index", index) != index:
            # The late answer to an earlier message (one whose reply timed out): this one's answer is still
            # on its way. Let it arrive and be dropped as late, so the answers line up again.
            self.stats["late"] = self.stats.get("late", 0) + 1
            await self._sleep(getattr(self.link, "reply_timeout_s", 0.0) * 2)
            return None
        if data:
            self.stats["chunk_replies"] += 1
        return m.body

    # ---- pending / sending -----------------------------------------------------------------------------------

    async def _begin(self, addr: int) -> bool:
        assert self.plan is not None and self.bundle is not None
        n = self.node(addr)
        n["attempts"] += 1
        await self._gap()
        ack = await self._ota_command(addr, codes.OTA_BEGIN, ota_size=self.bundle.size, ota_chunk=self.plan["chunk"])
        if ack is None:
            if self._stalled(addr):
                self._fail(addr, "no answer to OTA BEGIN for %d s" % self.plan["node_timeout_s"])
            return False
        outcome = ack.body["outcome"]
        reason = ack.body.get("reason", 0)
        if outcome == msg.ACK_DONE:
            self._set(addr, "sending", error=None)
            return True
        if outcome == msg.ACK_REFUSED and reason == codes.R_OTA_SAME_VERSION:
            self._set(addr, "skipped", error="already runs %s" % self.plan["version"], fw=self.plan["version"])
            return False
        if outcome == msg.ACK_UNSUPPORTED:
            self._fail(addr, "the node's firmware has no updates over its link (UNSUPPORTED)")
            return False
        if outcome == msg.ACK_EXPIRED or reason in _TRANSIENT:
            n["error"] = "BEGIN: %s, trying again" % _reason_name(reason)
            if self._stalled(addr):
                self._fail(addr, "BEGIN refused for %d s: %s" % (self.plan["node_timeout_s"], _reason_name(reason)))
            return False
        self._fail(addr, "refused: %s" % _reason_name(reason), reason)
        return False

    async def _send(self, addr: int) -> None:
        assert self.plan is not None and self.bundle is not None
        n = self.node(addr)
        if n["state"] == "pending" and not await self._begin(addr):
            return
        chunk = self.plan["chunk"]
        total = self.bundle.count(chunk)
        await self._gap(1)
        st = await self.status(addr)
        if st is None:
            if self._stalled(addr):
                self._fail(addr, "silent for %d s while sending" % self.plan["node_timeout_s"])
            return
        sent = 0
        misses = 0
        while True:
            if not self._apply(addr, st):
                return
            nxt = st["next"]
            if nxt != n["next"]:
                n["next"] = nxt
                self._progress[addr] = self.clock.monotonic()
            if nxt >= total:
                # Complete but not READY: the node re-checks a file; ask again.
                st = await self.status(addr)
                if st is None:
                    return
                continue
            if sent >= self.plan["chunks_per_gap"] or self.link.idle_left() <= self.t_chunk:
                if sent:
                    self.save()
                self.stats["gaps"] += 1
                await self.link.wait_idle()
                sent = 0
            reply = await self.status(addr, nxt, self.bundle.chunk(nxt, chunk))
            sent += 1
            if sent % _SAVE_EVERY == 0:
                self.save()
            if reply is None:
                misses += 1
                if misses >= 3:
                    if self._stalled(addr):
                        self._fail(addr, "silent for %d s while sending" % self.plan["node_timeout_s"])
                    return  # the next step tries again (after the others of the wave had their turn)
                continue
            misses = 0
            st = reply

    def _apply(self, addr: int, st: Mapping[str, Any]) -> bool:
        """Act on an OTA status; True to go on sending."""
        assert self.plan is not None
        state = st["state"]
        if st["ota_id"] != self.plan["id"] or state in (_ota.IDLE, _ota.TRIAL, _ota.ACTIVATING):
            # The node has no download of this bundle (flash wiped, cancelled): BEGIN again.
            if st.get("reason") == codes.R_OTA_UNKNOWN or state == _ota.IDLE:
                self._set(addr, "pending")
            return False
        if state == _ota.REFUSED:
            reason = st.get("reason", 0)
            if reason == codes.R_OTA_SAME_VERSION:
                self._set(addr, "skipped", error="already runs %s" % self.plan["version"], fw=self.plan["version"])
            else:
                self._fail(addr, "refused: %s" % _reason_name(reason), reason)
            return False
        if state == _ota.READY:
            self._set(addr, "ready", next=self.bundle.count(self.plan["chunk"]) if self.bundle else 0)
            log.info("ota: node %d: bundle %s received and verified", addr, self.plan["version"])
            return False
        if st.get("reason") == codes.R_OTA_FLASH:
            self.node(addr)["error"] = "the node cannot write its flash (OTA_FLASH); trying again"
        return True

    # ---- ready / activating -----------------------------------------------------------------------------------

    async def _activate(self, addr: int) -> None:
        assert self.plan is not None
        await self._gap()
        ack = await self._ota_command(addr, codes.OTA_ACTIVATE)
        if ack is None:
            # The ack may be what was lost: the node's status says whether it took the activation.
            st = await self.status(addr)
            if st is None or not (st["state"] in (_ota.ACTIVATING, _ota.TRIAL) or self._is_new(st)):
                if self._stalled(addr):
                    self._fail(addr, "no answer to OTA ACTIVATE for %d s" % self.plan["node_timeout_s"])
                return
        else:
            outcome = ack.body["outcome"]
            reason = ack.body.get("reason", 0)
            if outcome != msg.ACK_DONE:
                if outcome == msg.ACK_EXPIRED or reason in _TRANSIENT:
                    if self._stalled(addr):
                        why = _reason_name(reason)
                        self._fail(addr, "ACTIVATE refused for %d s: %s" % (self.plan["node_timeout_s"], why))
                elif reason == codes.R_OTA_NOT_READY:
                    self._set(addr, "sending")
                elif reason == codes.R_OTA_UNKNOWN:
                    self._set(addr, "pending")
                else:
                    self._fail(addr, "activation refused: %s" % _reason_name(reason), reason)
                return
        if self._hold is not None:
            self._hold(addr, self.plan["health_s"] + 60)
        self._set(addr, "activating", error=None, activated=self.clock.wall())
        log.info("ota: node %d: activated %s, waiting for it to confirm", addr, self.plan["version"])

    def _is_new(self, st: Mapping[str, Any]) -> bool:
        assert self.plan is not None
        v = st.get("version")
        return v is not None and _ota.version_text(v) == self.plan["version"]

    async def _watch(self, addrs: list[int]) -> bool:
        assert self.plan is not None
        progressed = False
        for addr in addrs:
            n = self.node(addr)
            await self._gap(2)
            await self.heartbeat(addr)
            st = await self.status(addr)
            node = self.registry.nodes.get(addr)
            if node is not None and node.fw:
                n["fw"] = node.fw
            if st is not None and self._is_new(st) and st["state"] != _ota.TRIAL:
                self._set(addr, "done", error=None, fw="phasenode " + self.plan["version"])
                log.info(NODE_UPDATED, addr, self.plan["version"])
                if self._release is not None:
                    self._release(addr)
                if self._event is not None and self.bundle is not None:
                    self._event(addr, codes.EV_OTA_NODE_UPDATED, _ota.pack_version(self.bundle.version), False)
                progressed = True
            elif st is not None and not self._is_new(st) and st["state"] == _ota.IDLE:
                rb = st.get("rollback", 0)
                self._fail(
                    addr,
                    "rolled back to %s (%s)"
                    % (_ota.version_text(st["version"]) if st.get("version") else "?", _rollback_name(rb)),
                    256 + rb,
                )
                progressed = True
            elif self.clock.wall() - n.get("activated", n["t"] or 0) > self.plan["health_s"]:
                self._fail(addr, "not confirmed within %d s of activation" % self.plan["health_s"])
                progressed = True
        return progressed


class _Clock:
    """Monotonic seconds (the clock of asyncio's default loop) and Unix seconds, usable outside a loop too."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


def _reason_name(code: int) -> str:
    return codes.OTA_REASON_NAMES.get(code) or (
        codes.REASON_NAMES[code] if 0 <= code < len(codes.REASON_NAMES) else "reason %d" % code
    )


def _rollback_name(code: int) -> str:
    return _ota.ROLLBACK_NAMES[code] if 0 < code < len(_ota.ROLLBACK_NAMES) else "reason unknown"


def chunk_budget_s(chunks: int, baud: int) -> float:
    """Line time of ``chunks`` chunk transactions at ``baud`` (a full frame out, a status of ~40 bytes back)."""
    from phasegate.bus import line_time_s

    return chunks * line_time_s(256 + 40, baud)
