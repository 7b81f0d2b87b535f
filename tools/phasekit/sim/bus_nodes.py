"""Simulated home nodes on an RS-485 bus, speaking the real frames over a pseudo-terminal.

``SimBus`` opens a pty pair: the bus master (``phasegate.bus``, pyserial)
opens ``sim.port``; the nodes sit on the other end in a thread of their own,
as separate devices would. Each ``SimNode`` answers a poll with a reading
sealed by ``phasecore.seal`` under its own node key (``phasecore.keys``), and a
sealed command with a sealed ack, exactly the bytes of docs/protocol.md. The
firmware's own loop lives in ``firmware/phasenode``; this stand-in exists so
the Pi side can be tested and benchmarked at 100 nodes without 100 interpreters.
On a ``SimBus`` a node answers the Pi's sealed heartbeat with a sealed heartbeat
of its own, as the firmware does on RS-485 (``phasenode.session``,
``answer_heartbeats``); a node that is not on a bus (the LoRa class-A
simulator) leaves a Pi heartbeat unanswered, as that firmware does.

Line timing: a pty has no baud rate. With ``pace=True`` a node behaves as on a
real line at ``baud``: it hears the end of the poll one poll-length of line
time after the master wrote it, waits its ``turnaround_s``, and its reply
reaches the master byte-paced (in chunks of a few characters) at ``baud``.
With ``pace=False`` it answers after ``turnaround_s`` only.

Misbehaviour for fault tests (``SimNode.mode``):

- ``"ok"``: a fresh sealed reading per poll;
- ``"silent"``: never answers (dead node, broken cable);
- ``"replay"``: after two fresh readings, answers with the first frame it ever
  sent (a recorded replay: authentic, but its sequence number was accepted);
- ``"wrong_key"``: seals with a key of another generation (a node provisioned
  with a stale or foreign key);
- ``"noise"``: sends ``noise_bytes`` of random bytes (false SYNCs included)
  before its real reply;
- ``"corrupt"``: flips one payload bit after the CRC was computed;
- ``"slow"``: waits ``slow_s`` before answering (beyond the master's timeout);
- ``"empty"``: answers with an empty payload (alive, nothing sealed yet).

An attacker on the line (``SimBus.tamper``): a function given each reply's
link address and wire bytes, returning the bytes to put on the line instead
(changed, or earlier ones it kept) or None to swallow them; with
``SimBus.inject`` it can deliver what it withheld later. Tests of what a
wire attacker can make the Pi do (issue 13) use it.
"""

from __future__ import annotations

import heapq
import os
import pty
import random
import select
import threading
import time
import tty
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from phasecore import codes, frame, keys, msg, seal
from phasecore.errors import PhasecoreError
from phasecore.replay import SequenceCounter

__all__ = ("SimNode", "SimBus", "MODES")

MODES = ("ok", "silent", "replay", "wrong_key", "noise", "corrupt", "slow", "empty")
_CHUNK = 4  # characters per paced write


class _MemoryStore:
    def __init__(self) -> None:
        self.value: int | None = None

    def load(self) -> int | None:
        return self.value

    def save(self, n: int) -> None:
        self.value = n


class SimNode:
    """One node: link address, key generation and behaviour; seals real readings and acks."""

    def __init__(
        self,
        addr: int,
        site_key: bytes,
        generation: int = 0,
        phase: int = msg.PHASE_A,
        mode: str = "ok",
        current_mA: int = 7482,
        seed: int | None = None,
        noise_bytes: int = 40,
        slow_s: float = 0.2,
        freshness: bool = False,
    ):
        if mode not in MODES:
            raise ValueError("mode %r not one of %s" % (mode, ", ".join(MODES)))
        self.addr = addr
        self.phase = phase
        self.mode = mode
        self.current_mA = current_mA
        self.noise_bytes = noise_bytes
        self.slow_s = slow_s
        self.status = msg.ST_REBOOTED
        self._rng = random.Random(addr if seed is None else seed)
        nk = keys.NodeKeys.from_site_key(site_key, addr, generation)
        store = _MemoryStore()
        self.counter = SequenceCounter(store.load, store.save, block=64)
        self.sender, self.recipient = seal.contexts(nk.node_context(), self.counter)
        other = keys.NodeKeys.from_site_key(site_key, addr, (generation + 1) & 0xFFFF)
        self._wrong_sender, _ = seal.contexts(other.node_context(), self.counter)
        self.first_payload: bytes | None = None
        self.fresh_sent = 0
        self.drop_acks = 0  # ack transmissions to lose (the command is still carried out)
        self.polls = 0
        self.commands: list[dict[str, Any]] = []  # decoded command bodies that opened
        self.heartbeats = 0  # Pi heartbeats that opened
        # Answer the Pi's heartbeat with ours (SimBus sets it: the firmware does on RS-485).
        self.answer_heartbeats = False
        self._born = time.monotonic()
        self.command_errors = 0
        # (command payload, ack payload): a repeated command gets the same ack
        self._last_cmd: tuple[bytes, bytes] | None = None
        # As the firmware (phasenode.session): a boot nonce in its heartbeats until a Pi heartbeat
        # echoes it, and every command refused NO_TIME until then. Off by default: most Pi tests
        # do not exercise it.
        self.freshness = freshness
        self.boot_nonce: int | None = self._rng.randint(1, msg.NONCE_MAX) if freshness else None

    def reading_payload(self) -> bytes:
        """A freshly sealed reading (advances the sequence number)."""
        # Vary the current a little so consecutive readings differ.
        i = max(0, self.current_mA + self._rng.randint(-50, 50))
        # Power as a PZEM-004T gives it: V x I x pf (231.4 V, pf 0.95), in 0.1 W.
        body = msg.encode_reading(2314, i, round(2314 * i * 95 / 100000), 1234567, 500, 95, self.phase, self.status)
        self.status &= ~msg.ST_REBOOTED
        ctx = self._wrong_sender if self.mode == "wrong_key" else self.sender
        return seal.seal_raw(msg.READING, body, ctx)

    def answer_poll(self) -> bytes | None:
        """The payload answering a poll, or None for silence."""
        self.polls += 1
        if self.mode == "silent":
            return None
        if self.mode == "empty":
            return b""
        if self.mode == "replay" and self.fresh_sent >= 2:
            return self.first_payload
        p = self.reading_payload()
        self.fresh_sent += 1
        if self.first_payload is None:
            self.first_payload = p
        return p

    def answer_command(self, payload: bytes) -> bytes | None:
        """The sealed ack for a sealed command, or None if it does not open (a node stays silent)."""
        if self.mode == "silent":
            return None
        if self._last_cmd is not None and self._last_cmd[0] == payload:
            return self._lose_ack(self._last_cmd[1])
        try:
            kind, _seq, plain = seal.open_raw(payload, keys.PI_ID, self.recipient)
            if kind == msg.HEARTBEAT and self.answer_heartbeats:
                hb = msg.decode(msg.HEARTBEAT, plain)
                self.heartbeats += 1
                if self.boot_nonce is not None and hb.get("echo") == self.boot_nonce:
                    self.boot_nonce = None  # fresh
                out = self._seal(msg.HEARTBEAT, self._heartbeat_body())
                self._last_cmd = (payload, out)
                return out
            if kind != msg.COMMAND:
                raise PhasecoreError("kind %d is not a command" % kind)
            cmd = msg.decode(msg.COMMAND, plain)
        except PhasecoreError:
            self.command_errors += 1
            return None
        self.commands.append(cmd)
        outcome = msg.ACK_DONE
        if self.boot_nonce is not None:
            ack = msg.encode(
                msg.ACK, {"id": cmd["id"], "outcome": msg.ACK_REFUSED, "reason": codes.R_NO_TIME, "phase": self.phase}
            )
            out = seal.seal_raw(msg.ACK, ack, self.sender)
            self._last_cmd = (payload, out)
            return self._lose_ack(out)
        if cmd["op"] == msg.OP_MOVE:
            self.phase = cmd["phase"]
        elif cmd["op"] not in (msg.OP_LOCK, msg.OP_UNLOCK, msg.OP_REPORT):
            outcome = msg.ACK_UNSUPPORTED
        ack = msg.encode(msg.ACK, {"id": cmd["id"], "outcome": outcome, "phase": self.phase})
        out = seal.seal_raw(msg.ACK, ack, self.sender)
        self._last_cmd = (payload, out)
        return self._lose_ack(out)

    def _heartbeat_body(self) -> bytes:
        fields = {
            "uptime_s": int(time.monotonic() - self._born),
            "fw": "phasekit-sim",
            "tx": self.polls + len(self.commands) + self.heartbeats,
            "rx": self.polls + len(self.commands) + self.heartbeats,
            "rx_bad": self.command_errors,
            "phase": self.phase,
            "status": self.status,
        }
        if self.boot_nonce is not None:
            fields["boot_nonce"] = self.boot_nonce
        return msg.encode(msg.HEARTBEAT, fields)

    def _seal(self, kind: int, body: bytes) -> bytes:
        ctx = self._wrong_sender if self.mode == "wrong_key" else self.sender
        return seal.seal_raw(kind, body, ctx)

    def _lose_ack(self, ack: bytes) -> bytes | None:
        if self.drop_acks > 0:
            self.drop_acks -= 1
            return None
        return ack


class SimBus:
    """Nodes on the far end of a pty pair; ``port`` is the master's end. Use as a context manager."""

    def __init__(self, nodes: Sequence[SimNode], baud: int = 115200, turnaround_s: float = 0.005, pace: bool = False):
        self.nodes = {n.addr: n for n in nodes}
        for n in nodes:
            n.answer_heartbeats = True
        self.baud = baud
        self.turnaround_s = turnaround_s
        self.pace = pace
        self.byte_s = 10.0 / baud
        self.frames_in = 0
        self.bytes_out = 0
        self._decoder = frame.Decoder()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # raw before pyserial opens it: no echo, no line discipline
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._outq: list[tuple[float, int, bytes]] = []  # (time, n, bytes): writes due
        self._n = 0
        # An attacker on the line: (addr, reply wire bytes) -> bytes to send instead, or None (swallowed).
        self.tamper: Callable[[int, bytes], bytes | None] | None = None

    def __enter__(self) -> SimBus:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the nodes' thread."""
        self._thread = threading.Thread(target=self._serve, name="sim-bus-nodes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the nodes' thread and close the line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def inject(self, data: bytes) -> None:
        """Write raw bytes onto the line now (noise, a forged frame, a recorded frame)."""
        with self._lock:
            os.write(self._master, data)

    def _serve(self) -> None:
        # Replies are scheduled, not slept on: a slow node must not hold up the others.
        while not self._stop.is_set():
            timeout = 0.05
            if self._outq:
                timeout = max(0.0, min(timeout, self._outq[0][0] - time.perf_counter() - 0.0005))
            r, _, _ = select.select([self._master], [], [], timeout)
            if r:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    return
                t_rx = time.perf_counter()
                for f in self._decoder.feed(data):
                    self.frames_in += 1
                    self._handle(f, t_rx)
            while self._outq and self._outq[0][0] - time.perf_counter() < 0.0005:
                t, _, chunk = heapq.heappop(self._outq)
                _sleep_until(t)
                try:
                    self.inject(chunk)
                except OSError:
                    return
                self.bytes_out += len(chunk)

    def _handle(self, f: frame.Frame, t_rx: float) -> None:
        node = self.nodes.get(f.dst)
        if node is None or f.src != frame.MASTER:
            return
        payload = node.answer_poll() if not f.payload else node.answer_command(f.payload)
        if payload is None:
            return
        out = bytearray(frame.encode(frame.MASTER, node.addr, payload))
        if node.mode == "corrupt":
            out[4] ^= 0x10
        start = t_rx + self.turnaround_s
        if self.pace:
            # The poll's last byte reached the node one poll-length after the master wrote it.
            start += (len(f.payload) + frame.OVERHEAD) * self.byte_s
        if node.mode == "slow":
            start += node.slow_s
        if node.mode == "noise":
            noise = bytearray(node._rng.getrandbits(8) for _ in range(node.noise_bytes))
            for i in range(0, len(noise), 7):
                noise[i] = frame.SYNC  # false starts for the decoder to reject
            out = noise + out
        wire = bytes(out)
        if self.tamper is not None:
            tampered = self.tamper(node.addr, wire)
            if tampered is None:
                return
            wire = tampered
        self._schedule(wire, start)

    def _schedule(self, data: bytes, start: float) -> None:
        step = _CHUNK if self.pace else len(data)
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            # Paced: a chunk is complete at the master when its last character has been shifted in.
            t = start + (i + len(chunk)) * self.byte_s if self.pace else start
            self._n += 1
            heapq.heappush(self._outq, (t, self._n, chunk))


def _sleep_until(t: float) -> None:
    while True:
        d = t - time.perf_counter()
        if d <= 0:
            return
        # time.sleep overshoots by ~0.1 ms on Linux; finish the last stretch by spinning.
        if d > 0.0005:
            time.sleep(d - 0.0003)
