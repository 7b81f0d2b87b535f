"""The transformer Pi's node registry: keys, replay windows, liveness and the last reading per node.

Every frame a node sends (a poll reply on RS-485, an uplink on LoRa) comes
here to be opened; every message the Pi sends to a node is sealed here. The
registry does no I/O on a link: ``phasegate.bus`` and ``phasegate.lora.link``
move the bytes. It does its own small file I/O: the Pi's sequence counter and
the registry state (key generation and replay-window top per node).

API for the control loop (``now`` is a monotonic time in seconds, e.g.
``loop.time()``; the registry never reads a clock)::

    reg = Registry.from_config(cfg)                      # site key, nodes, thresholds, state files
    m = reg.receive(addr, frame.payload, now)            # Incoming, or None (refused, counted, logged)
    m.kind, m.seq, m.body                                # body decoded by phasecore.msg
    payload = reg.seal(addr, msg.COMMAND, fields)        # sealed with the Pi's one counter
    ack = await reg.command(link, addr, fields, now)     # seal, link.request(), open and check the ack
    for addr, old, new in reg.update(now): ...           # liveness transitions since the last call
    n = reg.nodes[addr]                                  # NodeState: liveness, phase, status, reading, counters
    reg.save_state()                                     # once per round: generations and window tops
    reg.rekey(addr, generation)                          # a replaced board: new keys, fresh window

``receive`` classifies every refusal into a counter of the node (or, for an
address that has no key, into ``reg.unknown``) and one log line per incident
naming the node, the class and the sequence number, never a key:
``malformed`` (cannot parse), ``unknown_kid`` (no key for that address),
``bad_tag`` (forged, corrupted, or sealed with another key or generation),
``replay`` (sequence number already accepted or below the window), ``schema``
(authentic, but the body breaks ``phasecore.msg``) and ``wrong_kind`` (a kind
a node never sends). An exact repeat of the node's last accepted envelope is
counted as ``duplicate`` without a warning: it is what a node sends when the
Pi polls again before the node has sampled anew, or when the Pi retries a poll
whose reply was only late. Logging is limited to ``log_burst`` lines per node
and class per minute; the counters always count.

Liveness, from the time of the last valid *reading*: ``online`` within
``stale_after_s``, ``stale`` within ``offline_after_s``, else ``offline``
(and ``offline`` before the first reading). ``locked_out`` and
``switchable`` come from the status bits of the last reading or ack
(``phasecore.msg.ST_*``).

Persistence. The Pi seals toward every node with one ``SequenceCounter``
(``phasecore.seal.GatewayContexts``) whose bound lives in ``CounterFile``: a
one-line text file with a CRC-32, written atomically (write a temporary file,
fsync, rename, fsync the folder), so a power cut leaves the old or the new
bound, never a torn one; a file that exists but does not check out raises
instead of restarting the counter. The state file keeps each node's key
generation and the top of its replay window; at start windows are restored
with ``ReplayWindow.restore(top)``, so frames accepted before a restart cannot
be replayed after it (up to what was accepted after the last ``save_state``:
call it once per polling round). If the state file exists but the counter file
is gone, the registry refuses to start (``CounterLostError``): the Pi's keys
toward every node must not start again at 0 (docs/security.md section 7).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self

from phasecore import keys as _keys
from phasecore import msg as _msg
from phasecore import seal as _seal
from phasecore.errors import (
    AuthenticationError,
    CBORDecodeError,
    MalformedError,
    PhasecoreError,
    ReplayError,
    SchemaError,
    UnknownKeyError,
    quote,
)
from phasecore.replay import PIV_MAX, ReplayWindow, SequenceCounter
from phasegate.errors import ProtocolError

if TYPE_CHECKING:
    from phaseconf import Settings
    from phasegate.bus import Reply

log = logging.getLogger(__name__)

__all__ = (
    "Registry",
    "NodeState",
    "Incoming",
    "CounterFile",
    "RegistryError",
    "CounterLostError",
    "CommandError",
    "load_site_key",
    "LIVENESS",
    "INCIDENTS",
)

LIVENESS = ("online", "stale", "offline")
INCIDENTS = ("malformed", "unknown_kid", "bad_tag", "replay", "schema", "wrong_kind")
# Kinds a node may send (docs/protocol.md section 3).
_NODE_KINDS = (_msg.READING, _msg.ACK, _msg.HEARTBEAT, _msg.EVENT, _msg.OTA_STATUS)
_STATE_FORMAT = 1
_COUNTER_MAGIC = "phasekit-pi-seq 1"
_MAX_STATE = 1 << 20  # 247 nodes of a few dozen bytes each; more is not a registry state


class Requester(Protocol):
    """What ``Registry.command`` sends through: ``phasegate.bus.Bus``, ``phasegate.lora.link.ClassALink``."""

    async def request(self, addr: int, payload: bytes, /) -> Reply | None: ...


class RegistryError(ProtocolError):
    """The registry's files cannot be read or written, or a call names an unknown node."""


class CounterLostError(RegistryError):
    """The Pi's sequence counter file is missing although the registry has run before."""


class CommandError(RegistryError):
    """A command got no reply, or the reply was not the matching authentic ack."""


def load_site_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte site key from ``path`` (64 hex digits; whitespace ignored)."""
    try:
        text = open(path, "r", encoding="ascii").read()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise RegistryError("site key %s: cannot read: %s" % (path, e)) from e
    hexdigits = "".join(text.split())
    try:
        key = bytes.fromhex(hexdigits)
    except ValueError:
        raise RegistryError("site key %s: not hex (expected 64 hex digits)" % path) from None
    if len(key) != _keys.SITE_KEY_LEN:
        raise RegistryError("site key %s: %d bytes, expected %d" % (path, len(key), _keys.SITE_KEY_LEN))
    if mode & 0o077:
        log.warning("site key %s is readable by group or others (mode %o); chmod 600", path, mode & 0o777)
    return key


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so a power cut leaves either the old or the new content."""
    tmp = "%s.tmp" % path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    # The rename is durable only once the folder's entry is on disk.
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CounterFile:
    """``load``/``save`` for a ``phasecore.replay.SequenceCounter``, keeping its contract.

    One line: ``phasekit-pi-seq 1 <bound> <crc32 hex>``. ``load()`` returns
    None only when the file does not exist; a file that exists and does not
    parse or check out raises ``RegistryError`` (the counter must not guess).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.saves = 0

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> int | None:
        try:
            with open(self.path, "r", encoding="ascii") as f:
                line = f.read(256)  # one short line; a longer file is damaged
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError("Pi counter %s: cannot read: %s" % (self.path, e)) from e
        parts = line.strip().rsplit(" ", 2)
        if len(parts) != 3 or parts[0] != _COUNTER_MAGIC:
            raise RegistryError("Pi counter %s: not a phasekit counter file; refusing to guess" % self.path)
        body = "%s %s" % (parts[0], parts[1])
        try:
            bound = int(parts[1])
            crc = int(parts[2], 16)
        except ValueError:
            raise RegistryError("Pi counter %s: damaged; refusing to guess" % self.path) from None
        if crc != zlib.crc32(body.encode("ascii")) or not 0 <= bound <= PIV_MAX + 1:
            raise RegistryError("Pi counter %s: checksum does not match; refusing to guess" % self.path)
        return bound

    def save(self, n: int) -> None:
        body = "%s %d" % (_COUNTER_MAGIC, n)
        _atomic_write(self.path, "%s %08x\n" % (body, zlib.crc32(body.encode("ascii"))))
        self.saves += 1


class Incoming:
    """An opened, validated message from a node."""

    __slots__ = ("addr", "kind", "seq", "body", "t")

    def __init__(self, addr: int, kind: int, seq: int, body: dict[str, Any], t: float):
        self.addr = addr
        self.kind = kind
        self.seq = seq
        self.body = body  # decoded by phasecore.msg: the kind's fields (Any: each has its own type)
        self.t = t

    def __repr__(self) -> str:
        return "Incoming(addr=%d, %s, seq=%d, %r)" % (self.addr, _msg.KIND_NAMES[self.kind], self.seq, self.body)


class NodeState:
    """What the Pi knows about one node."""

    def __init__(self, addr: int, generation: int = 0, link: str = "bus"):
        self.addr = addr
        self.generation = generation
        self.link = link
        self.liveness = "offline"
        self.reading: dict[str, int] | None = None  # last reading as a dict (phasecore.msg.READING_FIELDS)
        self.reading_seq: int | None = None
        self.reading_t: float | None = None
        self.heard_t: float | None = None  # last authentic message of any kind
        self.phase: int | None = None
        self.switch: int | None = None  # switch kind from the heartbeat: 0 mechanical, 1 solid-state; None: not heard
        self.status: int | None = None
        self.fw: str | None = None  # the firmware version of the node's last heartbeat
        self.phase_seq: int | None = None  # the newest reading, ack or heartbeat: phase and status are its
        # The boot nonce of the node's last authenticated heartbeat that carried one: the Pi echoes it
        # in its heartbeats, the node's proof that they are fresh (docs/protocol.md section 3).
        self.boot_nonce: int | None = None
        self.counters = {"readings": 0, "acks": 0, "heartbeats": 0, "events": 0, "ota": 0, "duplicate": 0}
        for name in INCIDENTS:
            self.counters[name] = 0
        self.last_payload: bytes | None = None
        self._log_window: dict[str, tuple[float, int]] = {}  # incident class -> (start, lines) this minute

    @property
    def locked_out(self) -> bool:
        return self.status is not None and bool(self.status & _msg.ST_LOCKED_MASK)

    @property
    def switchable(self) -> bool:
        return self.status is not None and not self.status & _msg.ST_NOT_SWITCHABLE

    def as_dict(self) -> dict[str, object]:
        return {
            "addr": self.addr,
            "generation": self.generation,
            "link": self.link,
            "liveness": self.liveness,
            "phase": self.phase,
            "status": self.status,
            "locked_out": self.locked_out,
            "reading": self.reading,
            "reading_seq": self.reading_seq,
            "fw": self.fw,
            "counters": dict(self.counters),
        }

    def __repr__(self) -> str:
        return "NodeState(addr=%d, %s, phase=%r, status=%r)" % (self.addr, self.liveness, self.phase, self.status)


class Registry:
    """Nodes of one transformer Pi: ``Registry(site_key, nodes, counter_path, state_path, ...)``.

    ``nodes`` is ``{addr: link}`` (``"bus"``, ``"lora"`` or ``"relay"``) or a list of
    addresses (all ``"bus"``). Generations come from the state file (0 for a
    node it does not list).
    """

    def __init__(
        self,
        site_key: bytes,
        nodes: dict[int, str] | Iterable[int],
        counter_path: str | os.PathLike[str],
        state_path: str | os.PathLike[str],
        stale_after_s: float = 60.0,
        offline_after_s: float = 300.0,
        block: int = 256,
        log_burst: int = 5,
        backend: str | None = None,
    ):
        if not 0 < stale_after_s < offline_after_s:
            raise RegistryError(
                "liveness thresholds: need 0 < stale_after_s (%s) < offline_after_s (%s)"
                % (quote(stale_after_s), quote(offline_after_s))
            )
        links: dict[int, str] = nodes if isinstance(nodes, dict) else {a: "bus" for a in nodes}
        self.stale_after_s = float(stale_after_s)
        self.offline_after_s = float(offline_after_s)
        self.log_burst = log_burst
        self.state_path = str(state_path)
        self.counter_file = CounterFile(counter_path)
        self._site_key = bytes(site_key)
        state = self._read_state()
        if state is not None and not self.counter_file.exists():
            raise CounterLostError(
                "Pi counter %s is missing but %s exists: the Pi's keys must not start again at 0. Restore the "
                "counter from a backup with a margin, or raise every node's generation and re-provision "
                "(docs/security.md section 7)" % (self.counter_file.path, self.state_path)
            )
        self.counter = SequenceCounter(self.counter_file.load, self.counter_file.save, block)
        self._gw = _seal.GatewayContexts(self.counter, backend=backend)
        self.nodes: dict[int, NodeState] = {}
        self.unknown: dict[int, int] = {}  # link address without a key -> frames refused
        self.counters = {"unknown_kid": 0}
        # Why the last receive() refused its frame ("class: error", cut), for the caller's dead letters.
        self.last_refusal: str | None = None
        saved = (state or {}).get("nodes", {})
        # Nodes in the state file but not configured now: keep their generation, so a node
        # that comes back is not given a generation (and keys) it has used before.
        self._retired: dict[str, dict[str, int]] = {k: v for k, v in saved.items() if int(k) not in links}
        for addr in sorted(links):
            entry = saved.get(str(addr), {})
            self._add(addr, links[addr], entry.get("generation", 0), entry.get("top", -1))
        if state is None:
            # First start: create both files now, so a later loss of the counter is detected.
            self.counter_file.save(self.counter.reserved)
            self.save_state()

    @classmethod
    def from_config(cls, cfg: Settings, backend: str | None = None) -> Self:
        """From a loaded ``phasegate.config.Config``: key file, [bus]/[lora]/[relay] nodes, state beside the store."""
        site = cfg.table("site")
        key = load_site_key(str(cfg.resolve(site["key_file"])))
        nodes: dict[int, str] = {}
        thresholds = None
        for table, link in (("bus", "bus"), ("lora", "lora"), ("relay", "relay")):
            if cfg.has(table):
                t = cfg.table(table)
                for a in t.get("nodes", []):
                    nodes[a] = link
                # More RS-485 lines: "bus2", "bus3", ... (phasegate.app names the links alike).
                for i, line in enumerate(t.get("extra_lines", [])):
                    for a in line["nodes"]:
                        nodes[a] = "bus%d" % (i + 2)
                if thresholds is None and "stale_after_s" in t:
                    thresholds = (t["stale_after_s"], t["offline_after_s"])
        folder = os.path.dirname(str(cfg.resolve(cfg.table("store")["path"])))
        stale, offline = thresholds or (60.0, 300.0)
        return cls(
            key,
            nodes,
            os.path.join(folder, "pi-seq.txt"),
            os.path.join(folder, "registry.json"),
            stale,
            offline,
            backend=backend,
        )

    def _add(self, addr: int, link: str, generation: int, top: int = -1) -> NodeState:
        self._retired.pop(str(addr), None)
        node_keys = _keys.NodeKeys.from_site_key(self._site_key, addr, generation)
        window = ReplayWindow.restore(top) if top >= 0 else None
        self._gw.add(node_keys, window)
        node = NodeState(addr, generation, link)
        self.nodes[addr] = node
        return node

    def add(self, addr: int, link: str = "bus", generation: int | None = None) -> NodeState:
        """Register a node joining the site; ``generation`` defaults to the one last recorded for it (else 0)."""
        old = self._retired.get(str(addr)) or {}
        if generation is None:
            generation = old.get("generation", 0)
        node = self._add(addr, link, generation, old.get("top", -1) if generation == old.get("generation") else -1)
        self.save_state()
        return node

    def remove(self, addr: int) -> None:
        """Stop serving ``addr``; its generation and window top stay recorded."""
        node = self.nodes.pop(addr, None)
        if node is not None:
            top = self._gw.recipients.get(_seal.kid_of(addr)).window.top
            self._retired[str(addr)] = {"generation": node.generation, "top": top}
        self._gw.remove(addr)
        self.save_state()

    def rekey(self, addr: int, generation: int) -> NodeState:
        """Node ``addr`` now holds the secret of ``generation`` (a replaced or wiped board)."""
        node = self._node(addr)
        if generation <= node.generation:
            raise RegistryError(
                "node %d: generation %d is not above the current %d (nonces would repeat)"
                % (addr, generation, node.generation)
            )
        fresh = self._add(addr, node.link, generation)
        fresh.counters = node.counters
        self.save_state()
        log.info("node %d: re-keyed to generation %d", addr, generation)
        return fresh

    def _node(self, addr: int) -> NodeState:
        node = self.nodes.get(addr)
        if node is None:
            raise RegistryError("node %s is not in the registry" % (quote(addr),))
        return node

    # ------------------------------------------------------------ persistence

    def _read_state(self) -> dict[str, Any] | None:
        # Any: decoded JSON, checked here: every value a damaged or edited file can hold gives a
        # RegistryError naming the file, never another error (huge numbers, deep nesting, wrong types).
        try:
            with open(self.state_path, "rb") as f:
                raw = f.read(_MAX_STATE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError("registry state %s: cannot read: %s" % (self.state_path, e)) from e
        if len(raw) > _MAX_STATE:
            raise RegistryError("registry state %s: larger than %d bytes" % (self.state_path, _MAX_STATE))
        try:
            state = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise RegistryError("registry state %s: cannot read: %s" % (self.state_path, quote(str(e), 100))) from None
        if (
            not isinstance(state, dict)
            or state.get("format") != _STATE_FORMAT
            or not isinstance(state.get("nodes"), dict)
        ):
            raise RegistryError("registry state %s: unknown format" % self.state_path)
        for k, v in state["nodes"].items():
            ok = isinstance(v, dict) and isinstance(k, str) and k.isdigit() and len(k) <= 3 and 1 <= int(k) <= 247
            ok = ok and type(v.get("generation")) is int and 0 <= v["generation"] <= _keys.MAX_GENERATION
            ok = ok and type(v.get("top", -1)) is int and -1 <= v.get("top", -1) <= PIV_MAX
            if not ok:
                raise RegistryError("registry state %s: bad entry for node %s" % (self.state_path, quote(k)))
        return state

    def save_state(self) -> None:
        """Write generations and replay-window tops (atomic). Call once per polling round."""
        nodes = dict(self._retired)
        for addr in sorted(self.nodes):
            ctx = self._gw.recipients.get(_seal.kid_of(addr))
            nodes[str(addr)] = {"generation": self.nodes[addr].generation, "top": ctx.window.top}
        _atomic_write(
            self.state_path, json.dumps({"format": _STATE_FORMAT, "nodes": nodes}, sort_keys=True, indent=1) + "\n"
        )

    # ------------------------------------------------------------ receive

    def receive(self, addr: int, payload: bytes, now: float) -> Incoming | None:
        """Open ``payload`` sent by link address ``addr``; ``Incoming`` or None (refused, counted, logged)."""
        node = self.nodes.get(addr)
        if node is None:
            self.counters["unknown_kid"] += 1
            self.last_refusal = "unknown_kid: no key for link address %s" % quote(addr)
            self.unknown[addr] = self.unknown.get(addr, 0) + 1
            if self.unknown[addr] <= self.log_burst:
                log.warning(
                    "frame from link address %s refused: no key for that address (%d so far)", addr, self.unknown[addr]
                )
            return None
        if node.last_payload is not None and payload == node.last_payload:
            node.counters["duplicate"] += 1
            return None
        try:
            kind, seq, plain = _seal.open_raw(payload, _seal.kid_of(addr), self._gw.recipients)
        except MalformedError as e:
            self._incident(node, "malformed", None, e, now)
            return None
        except UnknownKeyError as e:
            self._incident(node, "unknown_kid", None, e, now)
            return None
        except AuthenticationError as e:
            self._incident(node, "bad_tag", _peek_seq(payload), e, now)
            return None
        except ReplayError as e:
            self._incident(node, "replay", _peek_seq(payload), e, now)
            return None
        if kind not in _NODE_KINDS:
            self._incident(node, "wrong_kind", seq, "kind %d is not sent by nodes" % kind, now)
            return None
        try:
            body = _msg.decode(kind, plain)
        except (SchemaError, CBORDecodeError) as e:
            self._incident(node, "schema", seq, e, now)
            return None
        node.last_payload = bytes(payload)
        node.heard_t = now
        # Only a message sealed after the one the state came from may change it: the replay window
        # accepts a message that is late but new to it (withheld on the line), and that must not
        # set the node's phase or latest reading back in time.
        newer = node.phase_seq is None or seq > node.phase_seq
        if kind == _msg.READING:
            node.counters["readings"] += 1
            if newer:
                node.reading = body
                node.reading_seq = seq
                node.reading_t = now
        elif kind == _msg.ACK:
            node.counters["acks"] += 1
        elif kind == _msg.HEARTBEAT:
            node.counters["heartbeats"] += 1
            if "switch" in body:
                node.switch = body["switch"]
            node.fw = body["fw"]
            if "boot_nonce" in body and newer:
                # A late heartbeat (withheld on the line) must not set the nonce back either.
                node.boot_nonce = body["boot_nonce"]
        elif kind == _msg.OTA_STATUS:
            node.counters["ota"] += 1
        else:
            node.counters["events"] += 1
        if newer and kind != _msg.EVENT and ("phase" in body or "status" in body):
            node.phase_seq = seq
            if "phase" in body:
                node.phase = body["phase"]
            if "status" in body:
                node.status = body["status"]
        return Incoming(addr, kind, seq, body, now)

    def _incident(self, node: NodeState, what: str, seq: int | None, err: object, now: float) -> None:
        node.counters[what] += 1
        self.last_refusal = "%s: %s" % (what, quote(str(err), 200))
        # At most log_burst lines per node and class per minute; the counters always count.
        start, n = node._log_window.get(what, (now, 0))
        if now - start >= 60.0:
            if n > self.log_burst:
                log.warning("node %d: %d more %s incidents in the last minute", node.addr, n - self.log_burst, what)
            start, n = now, 0
        n += 1
        node._log_window[what] = (start, n)
        if n <= self.log_burst:
            log.warning("node %d: frame refused (%s, seq %s): %s", node.addr, what, "?" if seq is None else seq, err)

    # ------------------------------------------------------------ send

    def seal(self, addr: int, kind: int, fields: Mapping[str, Any]) -> bytes:
        """A sealed envelope of ``kind`` from the Pi to node ``addr`` (body encoded by phasecore.msg)."""
        self._node(addr)
        return _seal.seal_raw(kind, _msg.encode(kind, fields), self._gw.sender(addr))

    async def command(self, link: Requester, addr: int, fields: Mapping[str, Any], now: float) -> Incoming:
        """Seal a command, send it with ``link.request(addr, payload)``, return the node's ack (``Incoming``).

        ``link`` is a ``phasegate.bus.Bus`` or a LoRa link with the same
        ``request``. Raises ``CommandError`` if no reply came or the reply is
        not an authentic ack of this command id.
        """
        payload = self.seal(addr, _msg.COMMAND, fields)
        reply = await link.request(addr, payload)
        if reply is None:
            raise CommandError("node %d: no reply to command %d" % (addr, fields["id"]))
        m = self.receive(addr, reply.frame.payload, now if reply.t is None else reply.t)
        if m is None:
            raise CommandError("node %d: reply to command %d refused (see the node's counters)" % (addr, fields["id"]))
        if m.kind != _msg.ACK or m.body["id"] != fields["id"]:
            raise CommandError(
                "node %d: reply to command %d is a %s%s"
                % (
                    addr,
                    fields["id"],
                    _msg.KIND_NAMES[m.kind],
                    " for command %d" % m.body["id"] if m.kind == _msg.ACK else "",
                )
            )
        return m

    # ------------------------------------------------------------ liveness

    def liveness_of(self, node: NodeState, now: float) -> str:
        if node.reading_t is None:
            return "offline"
        age = now - node.reading_t
        if age <= self.stale_after_s:
            return "online"
        if age <= self.offline_after_s:
            return "stale"
        return "offline"

    def update(self, now: float) -> list[tuple[int, str, str]]:
        """Recompute liveness; ``[(addr, old, new), ...]`` for every node that changed."""
        changed = []
        for addr in sorted(self.nodes):
            node = self.nodes[addr]
            new = self.liveness_of(node, now)
            if new != node.liveness:
                changed.append((addr, node.liveness, new))
                node.liveness = new
        return changed

    def counts(self, now: float | None = None) -> list[int]:
        """``[online, stale, offline, locked_out]`` as in the summary message (phasecore.msg kind 1)."""
        if now is not None:
            self.update(now)
        out = [0, 0, 0, 0]
        for node in self.nodes.values():
            out[LIVENESS.index(node.liveness)] += 1
            out[3] += node.locked_out
        return out


def _peek_seq(payload: bytes) -> int | None:
    try:
        return _seal.header(payload)[1]
    except PhasecoreError:
        return None
