"""Shared set-up for the node application tests (both interpreters; not a test file itself).

What a node needs around it, made of real parts where they can run on both
interpreters: the file store (``phasenode.persist``) in a fresh folder, the
simulated relay board (``phasenode.hal.pin_host``), the host board file and
HAL, and the Pi's side of the link built from ``phasecore`` exactly as the
gateway builds it (``seal.GatewayContexts``). Two small line doubles stand
in for wires: ``Wire`` (bytes in, writes recorded: the RS-485 bus) and
``ScriptedMeter`` (a Modbus RTU responder answering the PZEM-004T
measurement request with registers the test sets, as the recorded frames
of tests/firmware/test_pzem.py do). The CPython tests run the real peers
instead (pymodbus, pyserial over ptys).
"""

import os

from phasecore import frame, keys, msg, seal
from phasecore.crc import crc16_le
from phasecore.replay import SequenceCounter
from phasenode import board as board_mod
from phasenode.persist import Store

SITE_KEY = bytes(range(32))  # obviously synthetic (docs/security.md section 7)
ADDR = 7
T0 = 1700000000  # a Unix time for the Pi's heartbeats
# The boot nonce of a node built with ``fixed_random`` (its session's random source in these tests),
# which ``Pi.heartbeat`` echoes: a rig's node takes the time from the rig's Pi. The freshness rules
# themselves are tested with the real random source (tests/firmware/test_freshness.py).
BOOT_NONCE = 0x0A0B0C0D0E0F


def fixed_random(n):
    """A node session's random source that always gives BOOT_NONCE (6 bytes)."""
    assert n == 6
    return bytes((0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F))


from portable import REPO


def tmpdir(tag="node"):
    base = os.getenv("TMPDIR") or "/tmp"
    path = "%s/phasekit-%s-%s" % (base, tag, "".join("%02x" % b for b in os.urandom(6)))
    os.mkdir(path)
    return path


def rmtree(path):
    for name in os.listdir(path):
        p = path + "/" + name
        try:
            os.remove(p)
        except OSError:
            rmtree(p)
    os.rmdir(path)


def host_board():
    return board_mod.load(REPO + "/boards/host-virtual.json")


def provision(root, addr=ADDR, generation=0, limits=None, relay=None, home="A", board="host-virtual"):
    """Write config.json and the node key into ``root`` as ``phasekit provision`` would; returns (store, config)."""
    st = Store(root, fsync=False)
    cfg = {
        "format": 1,
        "node": {"id": "test-n%d" % addr, "address": addr},
        "key": {"file": "node.key", "generation": generation},
        "board": board,
        "home_phase": home,
    }
    if limits:
        cfg["limits"] = limits
    if relay:
        cfg["relay"] = relay
    st.write_secret("node.key", keys.node_secret(SITE_KEY, addr, generation))
    config = st.save_config(cfg)
    return st, config


class Clock:
    """A millisecond clock the test moves by hand: ``clock()``, ``clock.t += 500``."""

    def __init__(self, t=0):
        self.t = t

    def __call__(self):
        return self.t


class _Inbound:
    """The reading side of a UART double: ``any()`` and ``readinto`` over the bytes waiting in ``self.inb``."""

    def any(self):
        return len(self.inb)

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        n = min(n, len(self.inb))
        if not n:
            return None
        buf[:n] = self.inb[:n]
        self.inb = self.inb[n:]
        return n


class Wire(_Inbound):
    """One end of a line: ``inject(bytes)`` puts bytes on it, ``writes`` records what the node wrote."""

    def __init__(self):
        self.inb = bytearray()
        self.writes = []

    def inject(self, data):
        self.inb += data

    def read(self, n=None):
        if not self.inb:
            return None
        n = len(self.inb) if n is None else n
        out = bytes(self.inb[:n])
        self.inb = self.inb[n:]
        return out

    def write(self, buf):
        self.writes.append(bytes(buf))
        return len(buf)

    def flush(self):
        pass

    def take(self):
        out = self.writes
        self.writes = []
        return out


class ScriptedMeter(_Inbound):
    """A PZEM-004T answering function 0x04 registers 0..9 with the values set by ``set``.

    ``mode``: "ok"; "silent" (no reply); "bad_crc" (the reply's CRC flipped);
    "raw" (answer the register values in ``regs`` as they are, for garbage).
    """

    def __init__(self, address=0xF8):
        self.address = address
        self.mode = "ok"
        self.requests = 0
        self.inb = bytearray()
        self.regs = None
        self.set()

    def set(self, v_dV=2300, i_mA=5000, p_dW=None, e_Wh=1000, f_dHz=500, pf=95, alarm=False):
        if p_dW is None:
            p_dW = v_dV * i_mA * pf // 100000
        self.regs = [
            v_dV,
            i_mA & 0xFFFF,
            i_mA >> 16,
            p_dW & 0xFFFF,
            p_dW >> 16,
            e_Wh & 0xFFFF,
            e_Wh >> 16,
            f_dHz,
            pf,
            0xFFFF if alarm else 0,
        ]

    def write(self, req):
        req = bytes(req)
        self.requests += 1
        if self.mode == "silent" or len(req) != 8 or req[1] != 4:
            return len(req)
        body = bytearray((req[0], 4, 20))
        for r in self.regs:
            body.append((r >> 8) & 0xFF)
            body.append(r & 0xFF)
        reply = bytearray(bytes(body) + crc16_le(bytes(body)))
        if self.mode == "bad_crc":
            reply[-1] ^= 0x55
        self.inb += reply
        return len(req)

    def flush(self):
        pass


class Pi:
    """The transformer Pi's side of one node's link, as phasegate builds it."""

    def __init__(self, addr=ADDR, generation=0):
        self.addr = addr
        self._n = 0
        self.gw = seal.GatewayContexts(SequenceCounter(self._load, self._save, block=16))
        self.gw.add(keys.NodeKeys.from_site_key(SITE_KEY, addr, generation))
        self.dec = frame.Decoder()
        self._next_id = 1

    def _load(self):
        return self._n or None

    def _save(self, n):
        self._n = n

    def poll(self):
        return frame.encode(self.addr, frame.MASTER, b"")

    def sealed(self, kind, fields):
        return seal.seal_raw(kind, msg.encode(kind, fields), self.gw.sender(self.addr))

    def heartbeat(self, time_s=T0, echo=BOOT_NONCE):
        fields = {"uptime_s": 1, "fw": "pi", "time_s": time_s}
        if echo is not None:
            fields["echo"] = echo
        return frame.encode(self.addr, frame.MASTER, self.sealed(msg.HEARTBEAT, fields))

    def command(self, op, deadline_s=T0 + 60, **fields):
        fields["op"] = op
        fields["deadline_s"] = deadline_s
        if "id" not in fields:
            fields["id"] = self._next_id
            self._next_id += 1
        return frame.encode(self.addr, frame.MASTER, self.sealed(msg.COMMAND, fields))

    def frames(self, data):
        out = []
        for chunk in data if isinstance(data, list) else [data]:
            out += self.dec.feed(chunk)
        return out

    def open(self, f):
        """``(kind, seq, body)`` of a node's frame (a ``Frame``); raises what ``seal.open_raw`` raises."""
        kind, seq, plain = seal.open_raw(f.payload, seal.kid_of(f.src), self.gw.recipients)
        return kind, seq, msg.decode(kind, plain)

    def replies(self, wire):
        """Every frame the node wrote on ``wire`` since last asked, opened: [(kind, seq, body), ...]."""
        return self.replies_of(wire.take())

    def replies_of(self, writes):
        """The frames in ``writes`` (a list of written chunks), opened: [(kind, seq, body), ...]."""
        out = []
        for f in self.frames(writes):
            assert f.dst == frame.MASTER and f.src == self.addr, f
            out.append(self.open(f) if f.payload else (None, None, None))
        return out
