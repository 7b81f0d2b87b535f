"""Uplink records: what the transformer Pi buffers in SQLite and sends to the server.

Every reading, aggregate, summary, event, command outcome and heartbeat is a
*record*: ``(kind, src, seq, t_s, body)``. The Pi buffers records one per row
(``phasegate.store``); the uplink sends many rows of one kind in one MQTT
PUBLISH (a *batch*, ``encode_batch``), and the server (``phaseserver``)
unpacks it with ``decode_batch`` and deduplicates on (kind, src, seq). Both
import this module from ``phaseuplink``, the contract they share. The one thing to know:
a record's identity is fixed when it is built, so a batch sent twice (a crash
between publish and PUBACK) is recognised as a duplicate, never stored twice.
The format is specified in docs/uplink.md; this docstring is the short form.

Use from the controller (each builder returns the 6-tuple that
``Store.put_many`` takes: ``(kind, topic, payload, sender, seq, t_s)``)::

    from phaseuplink import records
    # m: a registry.Incoming (addr, kind, seq, body); g: reg.nodes[m.addr].generation
    items = [records.reading(m.addr, m.seq, t_s, m.body, generation=g)]   # every reading, in either mode
    items.append(records.event(t_s, m.body, addr=m.addr, seq=m.seq, generation=g))   # a node's event
    items.append(records.ack(t_s, command_fields, m.body, addr=m.addr, seq=m.seq, generation=g))
    items.append(records.ack(t_s, command_fields))       # a command that got no (valid) reply
    items.append(records.event(t_s, {"code": 37, "value": cuf_pm, "severity": 1}))   # a Pi event
    items.append(records.summary(t_s, summary_fields))   # phasecore.msg summary fields, once per period
    store.put_many(items)                                 # one transaction per polling round
    uplink.wake()                                         # phasegate.uplink.Uplink: send what is due

Node builders take ``generation=`` (the node's key generation, default 0);
every builder raises ``RecordError`` (an ``UplinkError``, a ValueError)
naming the field for a body that breaks the schema, before anything is
buffered.
``t_s`` is the record's Unix time (int or float seconds; stored as int). In
"interval" mode the uplink replaces a node's buffered readings of each closed
period by one ``interval`` record (``aggregate``); in "raw" mode it sends them
as they are. The controller does not need to know which.

Identity (src, seq):

- ``src`` = link address + 256 x key generation for a node (``sender_id``);
  0 for the Pi itself. A re-keyed node starts its sequence at 0 again, so the
  generation is part of its identity.
- ``seq``: for what a node sent (reading, node event, ack, node heartbeat) the
  node's sequence number (the sealed envelope's PIV), unique per src; for an
  ``interval`` record the start of its period (Unix s; the uplink files one
  aggregate per node and period, never two); for what the
  Pi itself records (summary, Pi event, unanswered command, Pi heartbeat)
  ``None`` here: the buffer assigns it when the row is stored (a random
  31-bit number drawn each time the buffer is opened, times 2**32, plus the
  row id; ``phasegate.store``), so a resent row keeps its seq and a buffer
  file restored from a backup cannot repeat one. The server's key is
  (site, transformer, kind, src, seq).

Kinds, their topics (``phasekit/<site>/<transformer>/<kind>``, ``phaseuplink.topics``) and bodies:

| kind | body |
|---|---|
| reading | the node's reading array (phasecore.msg kind 0), as it arrived |
| interval | map, ``INTERVAL_KEYS`` (one node, one period; ``aggregate``) |
| summary | phasecore.msg summary map (kind 1) |
| event, alarm | phasecore.msg event map (kind 5); alarm when severity >= 2 |
| ack | ``[command map, ack map or null]`` (phasecore.msg kinds 2 and 3) |
| heartbeat | the Pi's own (src 0): ``PI_HEARTBEAT_KEYS`` |
| node_heartbeat | a node's: phasecore.msg heartbeat map (kind 4) |

Batch (one MQTT payload, all records of one kind)::

    [1, t0, [[src, seq, dt, body], ...]]      t_s = t0 + dt

CBOR (RFC 8949, deterministic), sent zlib-compressed (RFC 1950) when that is
shorter; a receiver tells the two apart by the first byte (0x83 a CBOR array
of 3, 0x78 a zlib stream). ``decode_batch`` treats its input as hostile and
raises only ``RecordError``.
"""

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, cast

from phasecore import cbor, msg
from phasecore.errors import PhasecoreError, quote
from phaseuplink.errors import RecordError

__all__ = (
    "KINDS",
    "BATCH_VERSION",
    "INTERVAL_KEYS",
    "PI_HEARTBEAT_KEYS",
    "RecordError",
    "Record",
    "Batch",
    "sender_id",
    "split_sender",
    "reading",
    "interval",
    "summary",
    "event",
    "ack",
    "heartbeat",
    "pi_heartbeat",
    "aggregate",
    "encode_batch",
    "decode_batch",
    "decode_body",
    "decode_relayed",
    "Relayed",
    "RELAYED_MAX_BYTES",
    "RELAYED_MAX_RECORDS",
    "MAX_BATCH_PLAIN",
    "Item",
    "Fields",
    "BatchRow",
)

KINDS = ("reading", "interval", "summary", "event", "alarm", "ack", "heartbeat", "node_heartbeat")
BATCH_VERSION = 1
# A batch larger than this, once inflated, is refused (a zip bomb must not
# allocate without bound); the uplink's default batch is far below it.
MAX_BATCH_PLAIN = 4 << 20
_U32 = 0xFFFFFFFF
_SEQ_MAX = (1 << 40) - 1  # a node's PIV is at most 5 bytes (docs/protocol.md section 2)
_PI_SEQ_MAX = (1 << 63) - 1
_SRC_MAX = 247 + 256 * 0xFFFF
_ALARM_SEVERITY = 2


class Record(NamedTuple):
    src: int
    seq: int
    t_s: int
    # decode_body's fields; Any: decoded CBOR, each kind with its own keys and value types.
    body: dict[str, Any]


class Batch(NamedTuple):
    t0: int
    records: list[Record]
    errors: list[tuple[int, str]]


# What every builder returns and phasegate.store.Store.put_many takes:
# (kind, topic, payload, sender, seq or None for the Pi's own, t_s).
Item = tuple[str, str, bytes, int, int | None, int]
# The fields of a phasecore.msg message by name; Any: each kind has its own keys and value
# types (ints, lists of ints, text), checked at run time by phasecore.msg (portable, so untyped).
Fields = Mapping[str, Any]


class BatchRow(Protocol):
    """What ``encode_batch`` reads of a buffered row (``phasegate.store.Row``)."""

    @property
    def id(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def sender(self) -> int | bytes: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def created_s(self) -> float: ...


# ------------------------------------------------------------------ identity


def sender_id(addr: int, generation: int = 0) -> int:
    """The record src of node ``addr`` (1..247) under key ``generation`` (0..65535)."""
    if type(addr) is not int or not 1 <= addr <= 247:
        raise RecordError("node address %s outside 1..247" % (quote(addr),))
    if type(generation) is not int or not 0 <= generation <= 0xFFFF:
        raise RecordError("key generation %s outside 0..65535" % (quote(generation),))
    return addr + (generation << 8)


def split_sender(src: int) -> tuple[int, int]:
    """``(addr, generation)`` of a record src; ``(0, 0)`` is the Pi."""
    return src & 0xFF, src >> 8


def _time(t_s: float) -> int:
    if isinstance(t_s, bool) or not isinstance(t_s, (int, float)) or not 0 <= t_s <= _U32:
        raise RecordError("record time %s is not a Unix time 0..2**32-1" % (quote(t_s),))
    return int(t_s)


def _node_seq(seq: int) -> int:
    if type(seq) is not int or not 0 <= seq <= _SEQ_MAX:
        raise RecordError("node sequence number %s outside 0..2**40-1" % (quote(seq),))
    return seq


def _row(kind: str, payload: bytes, src: int, seq: int | None, t_s: float) -> Item:
    return (kind, kind, payload, src, seq, _time(t_s))


def _msg_encode(kind: int, fields: Fields, what: str) -> bytes:
    try:
        return msg.encode(kind, fields)
    except PhasecoreError as e:
        raise RecordError("%s: %s" % (what, e)) from e


# ------------------------------------------------------------------ builders


def reading(addr: int, seq: int, t_s: float, body: dict[str, int] | Sequence[int], generation: int = 0) -> Item:
    """A node's reading; ``body`` is the dict of ``msg.READING_FIELDS`` (as the registry gives it) or the 8 values."""
    if isinstance(body, dict):
        payload = _msg_encode(msg.READING, body, "reading of node %s" % (quote(addr),))
    else:
        try:
            payload = msg.encode_reading(*body)
        except (TypeError, PhasecoreError) as e:
            raise RecordError("reading of node %s: %s" % (quote(addr), e)) from e
    return _row("reading", payload, sender_id(addr, generation), _node_seq(seq), t_s)


def interval(src: int, t_s: float, fields: Mapping[str, int]) -> Item:
    """One node's aggregate of the period starting at ``t_s`` (``fields`` as ``aggregate`` returns).

    Its seq is ``t_s``: one aggregate per node and period (the uplink sees to
    that), and the same seq in every record of a batch compresses to nothing.
    """
    if type(src) is not int or not 1 <= src <= _SRC_MAX:
        raise RecordError("interval src %s is not a node" % (quote(src),))
    t = _time(t_s)
    return _row("interval", _encode_map(_INTERVAL, "interval", fields), src, t, t)


def summary(t_s: float, fields: Fields) -> Item:
    """The transformer summary of one period (phasecore.msg summary fields); sequenced by the buffer."""
    return _row("summary", _msg_encode(msg.SUMMARY, fields, "summary"), 0, None, t_s)


def event(t_s: float, fields: Fields, addr: int | None = None, seq: int | None = None, generation: int = 0) -> Item:
    """An event (phasecore.msg event fields): the Pi's own, or node ``addr``'s with its ``seq``.

    Severity 2 (alarm) and 3 (critical) make it an ``alarm`` record: its own
    topic, and the last thing the buffer drops when full.
    """
    payload = _msg_encode(msg.EVENT, fields, "event")
    kind = "alarm" if fields.get("severity", 0) >= _ALARM_SEVERITY else "event"
    src, seq = _origin(addr, seq, generation, kind)
    return _row(kind, payload, src, seq, t_s)


# The commands the Pi answers itself (node 0 in the operator's payload): its ack record has src 0.
_PI_OPS = (msg.OP_PAUSE, msg.OP_RESUME)


def ack(
    t_s: float,
    command: Fields,
    ack: Fields | None = None,
    addr: int | None = None,
    seq: int | None = None,
    generation: int = 0,
) -> Item:
    """A command's outcome: the command's fields and the node's ack (``addr``, ``seq`` of the ack).

    ``ack`` None records a command that got no valid reply; the Pi sequences it.
    ``addr`` 0 (no ``seq``): a command the Pi carried out itself (PAUSE, RESUME
    of its balancer) with its own ack; src 0, the Pi sequences it.
    """
    cmd = _msg_encode(msg.COMMAND, command, "ack record's command")
    if addr == 0 and ack is not None:
        if seq is not None or command.get("op") not in _PI_OPS:
            raise RecordError("the Pi's own ack record is for PAUSE or RESUME and takes no seq (the Pi sequences it)")
        return _row("ack", b"\x82" + cmd + _msg_encode(msg.ACK, ack, "the Pi's ack"), 0, None, t_s)
    if ack is None:
        if addr is not None or seq is not None:
            raise RecordError("ack record without an ack takes no addr/seq (the Pi sequences it)")
        return _row("ack", b"\x82" + cmd + b"\xf6", 0, None, t_s)
    if addr is None or seq is None:
        raise RecordError("ack record with the node's ack needs the node's addr and the ack's seq")
    payload = b"\x82" + cmd + _msg_encode(msg.ACK, ack, "ack of node %s" % (quote(addr),))
    return _row("ack", payload, sender_id(addr, generation), _node_seq(seq), t_s)


def heartbeat(t_s: float, fields: Fields, addr: int, seq: int, generation: int = 0) -> Item:
    """A node's heartbeat (phasecore.msg heartbeat fields), kind ``node_heartbeat``.

    Its counters are cumulative, so in interval mode the uplink keeps only each
    node's latest and sends them every ``node_heartbeat_s`` (docs/uplink.md).
    The Pi's own is ``pi_heartbeat``.
    """
    payload = _msg_encode(msg.HEARTBEAT, fields, "heartbeat of node %s" % (quote(addr),))
    return _row("node_heartbeat", payload, sender_id(addr, generation), _node_seq(seq), t_s)


def pi_heartbeat(t_s: float, fields: Mapping[str, int | str]) -> Item:
    """The Pi's heartbeat (``PI_HEARTBEAT_KEYS`` fields); the uplink records one every heartbeat_s."""
    return _row("heartbeat", _encode_map(_PI_HEARTBEAT, "Pi heartbeat", fields), 0, None, t_s)


def _origin(addr: int | None, seq: int | None, generation: int, what: str) -> tuple[int, int | None]:
    if addr is None and seq is None:
        return 0, None
    if addr is None or seq is None:
        raise RecordError("%s record of a node needs both addr and seq" % what)
    return sender_id(addr, generation), _node_seq(seq)


# ------------------------------------------------------------------ maps

# (key, name, lo, hi, required, type); key 0 is the version, 1.
_MAP_VERSION = 1
_INT = 0
_TEXT = 1
# (key, name, lo, hi, required, type) of each field of a map kind.
_Spec = tuple[tuple[int, str, int, int, bool, int], ...]
INTERVAL_KEYS: _Spec = (
    (1, "period_s", 1, 86400, True, _INT),
    (2, "n", 1, 65535, True, _INT),  # readings aggregated
    (3, "seq_span", 0, _U32, True, _INT),  # last seq - first seq: n < seq_span + 1 means readings the Pi missed
    (4, "phase", 0, 3, True, _INT),  # phase of the last reading
    (5, "phase_first", 0, 3, False, _INT),  # phase of the first reading, only when it differs (a move)
    (6, "status", 0, 0xFFF, True, _INT),  # OR of the readings' status bits
    (7, "n_bad", 1, 65535, False, _INT),  # readings with the METER bit, left out of the measurements below
    (8, "i_mean_mA", 0, 100000, False, _INT),  # measurements: all present iff n - n_bad > 0
    (9, "i_max_mA", 0, 100000, False, _INT),
    (10, "v_min_dV", 0, 3000, False, _INT),
    (11, "v_max_dV", 0, 3000, False, _INT),
    # Energy since the previous aggregate of this node (see aggregate); mean power is
    # de_Wh * 3600 / period_s, so it is not sent again (the PZEM-004T sees no direction).
    (12, "de_Wh", 0, _U32, False, _INT),
    (13, "pf_mean_centi", 0, 100, False, _INT),
)
PI_HEARTBEAT_KEYS: _Spec = (
    (1, "uptime_s", 0, _U32, True, _INT),  # seconds since the uplink started
    (2, "fw", 1, 24, True, _TEXT),  # phasekit version (printable ASCII)
    (3, "backlog", 0, _U32, True, _INT),  # rows in the buffer
    (4, "dropped", 0, _U32, True, _INT),  # rows the retention policy dropped since the buffer was created
    (5, "connects", 0, _U32, False, _INT),  # broker connections since start
    (6, "batches", 0, _U32, False, _INT),  # batches acknowledged since start
    (7, "records", 0, _U32, False, _INT),  # records acknowledged since start
    (8, "mode", 0, 1, False, _INT),  # 0 interval, 1 raw
)
_INTERVAL = INTERVAL_KEYS
_PI_HEARTBEAT = PI_HEARTBEAT_KEYS


def _check_value(what: str, name: str, value: object, lo: int, hi: int, typ: int) -> None:
    if typ == _TEXT:
        if type(value) is not str or not lo <= len(value) <= hi or not all(" " <= c <= "~" for c in value):
            raise RecordError(
                "%s field %s = %s must be %d..%d printable ASCII characters" % (what, name, quote(value), lo, hi)
            )
    elif type(value) is not int or not lo <= value <= hi:
        raise RecordError("%s field %s = %s outside %d..%d" % (what, name, quote(value), lo, hi))


def _encode_map(spec: _Spec, what: str, fields: Mapping[str, object]) -> bytes:
    if not isinstance(fields, dict):
        raise RecordError("%s fields must be a dict, not %s" % (what, type(fields).__name__))
    body: dict[int, object] = {0: _MAP_VERSION}
    names = set()
    for key, name, lo, hi, req, typ in spec:
        names.add(name)
        if name in fields:
            _check_value(what, name, fields[name], lo, hi, typ)
            body[key] = fields[name]
        elif req:
            raise RecordError("%s field %s is missing" % (what, name))
    for name in fields:
        if name not in names:
            raise RecordError("%s has no field %s" % (what, quote(name)))
    if spec is _INTERVAL:
        _check_interval(body)
    return cbor.dumps(body)


def _decode_map(spec: _Spec, what: str, m: object) -> dict[str, Any]:
    if type(m) is not dict:
        raise RecordError("%s body must be a map, not %s" % (what, type(m).__name__))
    for k in m:
        # Integer keys only: True and False would pass for 1 and 0 in a dict lookup.
        if type(k) is not int or not 0 <= k <= len(spec):
            raise RecordError("%s has unknown key %s" % (what, quote(k)))
    if type(m.get(0)) is not int or m[0] != _MAP_VERSION:
        raise RecordError("%s version %s is not %d" % (what, quote(m.get(0)), _MAP_VERSION))
    out: dict[str, Any] = {}
    for key, name, lo, hi, req, typ in spec:
        if key in m:
            _check_value(what, name, m[key], lo, hi, typ)
            out[name] = m[key]
        elif req:
            raise RecordError("%s field %s (key %d) is missing" % (what, name, key))
    if spec is _INTERVAL:
        _check_interval(m)
    return out


def _check_interval(m: Mapping[int, Any]) -> None:
    have = [k for k in range(8, 14) if k in m]
    if have and len(have) != 6:
        raise RecordError("interval measurements must come all together (keys 8..13), got keys %s" % have)
    if not have and m.get(7, 0) != m[2]:
        raise RecordError("interval without measurements must have n_bad = n")
    if m.get(7, 0) > m[2]:
        raise RecordError("interval n_bad %d exceeds n %d" % (m[7], m[2]))
    if have and (m[8] > m[9] or m[10] > m[11]):
        raise RecordError("interval mean current above its max, or min voltage above max")
    if m[2] > m[3] + 1:
        raise RecordError("interval n %d exceeds seq_span + 1 = %d" % (m[2], m[3] + 1))
    if 5 in m and m[5] == m[4]:
        raise RecordError("interval phase_first is sent only when it differs from phase")


# ------------------------------------------------------------------ aggregate

_E_WRAP = 1 << 32
_V, _I, _P, _E, _F, _PF, _PHASE, _STATUS = range(8)  # msg.READING_FIELDS


def aggregate(
    period_s: float, readings: Sequence[tuple[int, Sequence[int]]], prev_energy: int | None = None
) -> tuple[dict[str, int], int | None]:
    """Aggregate one node's readings of one period; returns ``(fields, last_energy)``.

    ``readings`` is a non-empty list of ``(seq, values)`` in seq order, values
    the 8 reading values (``msg.decode_reading``). ``prev_energy`` is the
    energy counter of the node's last good reading before them (None if not
    known): ``de_Wh`` then counts from it, so consecutive aggregates add up to
    the meter's own count with no gap between periods. Readings with the
    METER status bit (meter silent or implausible: their values are 0 or
    stale) count in ``n`` and ``status`` only. A counter that goes down is a
    wrap past 2**32 when it was near the top, else a meter reset (counted
    from 0). ``last_energy`` is the counter to pass for the next period.
    """
    if not readings:
        raise RecordError("aggregate of no readings")
    n = len(readings)
    status = 0
    good = []
    for _, r in readings:
        status |= r[_STATUS]
        if not r[_STATUS] & msg.ST_METER:
            good.append(r)
    first_seq, last_seq = readings[0][0], readings[-1][0]
    fields = {
        "period_s": int(period_s),
        "n": n,
        "seq_span": last_seq - first_seq,
        "phase": readings[-1][1][_PHASE],
        "status": status,
    }
    if readings[0][1][_PHASE] != fields["phase"]:
        fields["phase_first"] = readings[0][1][_PHASE]
    if len(good) < n:
        fields["n_bad"] = n - len(good)
    if not good:
        return fields, prev_energy
    k = len(good)
    de = 0
    e_prev = prev_energy
    for r in good:
        e = r[_E]
        if e_prev is not None:
            d = e - e_prev
            if d < 0:
                # Near the top of the 32-bit counter: it wrapped; else the meter was reset to 0.
                d = d + _E_WRAP if e_prev >= _E_WRAP - (1 << 24) and e < (1 << 24) else e
            de += d
        e_prev = e
    fields["i_mean_mA"] = _round_div(sum(r[_I] for r in good), k)
    fields["i_max_mA"] = max(r[_I] for r in good)
    fields["v_min_dV"] = min(r[_V] for r in good)
    fields["v_max_dV"] = max(r[_V] for r in good)
    fields["de_Wh"] = min(de, _U32)
    fields["pf_mean_centi"] = _round_div(sum(r[_PF] for r in good), k)
    return fields, e_prev


def _round_div(total: int, n: int) -> int:
    # Round half away from zero, for negative sums (export) too.
    q = (abs(total) * 2 + n) // (2 * n)
    return q if total >= 0 else -q


# ------------------------------------------------------------------ batches


def _head(mt: int, n: int) -> bytes:
    # A CBOR head, shortest form (RFC 8949 3.1), for 0 <= n < 2**64.
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25, n >> 8, n & 0xFF))
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


def encode_batch(rows: Sequence[BatchRow], compress: bool = True, level: int = 9) -> tuple[bytes, int]:
    """One MQTT payload for ``rows`` (``store.Row``s of one kind, send order); returns ``(payload, plain_len)``.

    A row's payload goes into the batch as it is when it is one well-formed
    CBOR item; otherwise (a row not made by this module) as a byte string, so
    one bad row cannot spoil the batch (the server refuses that record alone).
    """
    if not rows:
        raise RecordError("a batch needs at least one row")
    t0 = min(int(r.created_s) for r in rows)
    parts = [b"\x83\x01", _head(0, t0), _head(0x80, len(rows))]
    for r in rows:
        if r.seq is None:
            raise RecordError("row %d has no seq (rows come from phasegate.store, which sequences the Pi's)" % r.id)
        seq = r.seq
        src = r.sender
        payload = bytes(r.payload)
        try:
            cbor.loads(payload)
        except PhasecoreError:
            payload = _head(0x40, len(payload)) + payload
        parts.append(b"\x84")
        # Not exactly an int: the bytes sender of a relayed frame (phasegate.lora_gateway).
        parts.append(_head(0, src) if type(src) is int else _head(0x40, len(cast(bytes, src))) + bytes(src))
        parts.append(_head(0, seq))
        parts.append(_head(0, int(r.created_s) - t0))
        parts.append(payload)
    plain = b"".join(parts)
    if compress:
        packed = zlib.compress(plain, level)
        if len(packed) < len(plain):
            return packed, len(plain)
    return plain, len(plain)


def decode_batch(kind: str, payload: bytes) -> Batch:
    """Decode and validate one batch of ``kind``: ``Batch(t0, records, errors)``.

    ``records`` are the valid ``Record(src, seq, t_s, body)``s, bodies decoded
    (``decode_body``); ``errors`` is ``[(index, message), ...]`` for records
    refused one by one, so one bad record does not cost the others. A batch
    that cannot be read at all raises ``RecordError``.
    """
    if kind not in KINDS:
        raise RecordError("unknown record kind %s" % (quote(kind),))
    data = _inflate(payload)
    try:
        b = cbor.loads(data)
    except PhasecoreError as e:
        raise RecordError("%s batch is not CBOR: %s" % (kind, e)) from e
    if type(b) is not list or len(b) != 3:
        raise RecordError("%s batch must be an array [version, t0, records]" % kind)
    version, t0, recs = b
    if type(version) is not int or version != BATCH_VERSION:
        raise RecordError("%s batch version %s is not %d" % (kind, quote(version), BATCH_VERSION))
    if type(t0) is not int or not 0 <= t0 <= _U32:
        raise RecordError("%s batch t0 %s outside 0..2**32-1" % (kind, quote(t0)))
    if type(recs) is not list or not recs:
        raise RecordError("%s batch holds no records" % kind)
    out = []
    errors = []
    for i, rec in enumerate(recs):
        try:
            out.append(_decode_record(kind, t0, rec))
        except RecordError as e:
            errors.append((i, "%s record %d: %s" % (kind, i, e)))
    return Batch(t0, out, errors)


class Relayed(NamedTuple):
    """One frame a LoRa gateway relayed: its sender label, the envelope's sequence number, time, wire bytes."""

    sender: bytes
    seq: int
    t_s: int
    wire: bytes


# A relayed frame is one LoRa link frame: SYNC, LEN, DST, SRC, payload, CRC (docs/protocol.md section 1).
RELAYED_MAX_BYTES = 255
RELAYED_MAX_RECORDS = 1000


def decode_relayed(payload: bytes) -> list[Relayed]:
    """A batch a LoRa gateway published to a relay topic: ``Relayed`` per record; ``RecordError`` if unreadable.

    The batch format is section 3's; each record's ``src`` is the gateway's
    label ``b"<site>/<transformer>/<link address>"`` and its body the frame as
    heard (a byte string). A record that is not such a pair is dropped alone.
    At most ``RELAYED_MAX_RECORDS`` records and ``RELAYED_MAX_BYTES`` a frame:
    what the gateway sends is no larger.
    """
    if len(payload) > MAX_BATCH_PLAIN:
        raise RecordError("relay batch of %d bytes: at most %d" % (len(payload), MAX_BATCH_PLAIN))
    data = _inflate(payload)
    try:
        b = cbor.loads(data)
    except PhasecoreError as e:
        raise RecordError("relay batch is not CBOR: %s" % e) from e
    if type(b) is not list or len(b) != 3 or b[0] != BATCH_VERSION or type(b[1]) is not int:
        raise RecordError("relay batch must be an array [1, t0, records]")
    t0, recs = b[1], b[2]
    if not 0 <= t0 <= _U32 or type(recs) is not list:
        raise RecordError("relay batch: bad t0 or records")
    if len(recs) > RELAYED_MAX_RECORDS:
        raise RecordError("relay batch of %d records: at most %d" % (len(recs), RELAYED_MAX_RECORDS))
    out = []
    for rec in recs:
        if type(rec) is not list or len(rec) != 4:
            continue
        src, seq, dt, body = rec
        if (
            type(src) is not bytes
            or len(src) > 100
            or type(seq) is not int
            or not 0 <= seq <= _SEQ_MAX
            or type(dt) is not int
            or not 0 <= dt <= _U32 - t0
            or type(body) is not bytes
            or not 0 < len(body) <= RELAYED_MAX_BYTES
        ):
            continue
        out.append(Relayed(src, seq, t0 + dt, body))
    return out


def _decode_record(kind: str, t0: int, rec: object) -> Record:
    if type(rec) is not list or len(rec) != 4:
        raise RecordError("must be an array [src, seq, dt, body]")
    src, seq, dt, body = rec
    if type(src) is not int or not 0 <= src <= _SRC_MAX:
        raise RecordError("src %s outside 0..%d" % (quote(src), _SRC_MAX))
    if type(seq) is not int or not 0 <= seq <= (_PI_SEQ_MAX if src == 0 else _SEQ_MAX):
        raise RecordError("src %d: seq %s out of range" % (src, quote(seq)))
    if type(dt) is not int or not 0 <= dt <= _U32 - t0:
        raise RecordError("src %d seq %d: dt %s out of range" % (src, seq, quote(dt)))
    try:
        value = decode_body(kind, src, body)
    except RecordError as e:
        raise RecordError("src %d seq %d: %s" % (src, seq, e)) from e
    return Record(src, seq, t0 + dt, value)


def _inflate(payload: bytes) -> bytes:
    data = bytes(payload)
    if not data:
        raise RecordError("empty batch")
    if data[0] != 0x78:
        return data
    d = zlib.decompressobj()
    try:
        plain = d.decompress(data, MAX_BATCH_PLAIN)
    except zlib.error as e:
        raise RecordError("batch is not a valid zlib stream: %s" % e) from e
    if d.unconsumed_tail:
        raise RecordError("batch inflates beyond %d bytes" % MAX_BATCH_PLAIN)
    if not d.eof or d.unused_data:
        raise RecordError("batch zlib stream is truncated or has trailing bytes")
    return plain


def decode_body(kind: str, src: int, body: Any) -> dict[str, Any]:
    """Validate one decoded record body of ``kind`` from ``src``; returns it as field dicts.

    reading -> dict of ``msg.READING_FIELDS``; ack -> ``{"command": {...}, "ack": {...} or None}``;
    the map kinds -> dict of field names.
    """
    # body: decoded CBOR of any shape; checking it is what this function is for.
    try:
        if kind == "reading":
            if src == 0:
                raise RecordError("a reading comes from a node, not src 0")
            return msg.decode(msg.READING, cbor.dumps(body))
        if kind == "interval":
            if src == 0:
                raise RecordError("an interval aggregate is about a node, not src 0")
            return _decode_map(_INTERVAL, "interval", body)
        if kind == "summary":
            return msg.decode(msg.SUMMARY, cbor.dumps(body))
        if kind in ("event", "alarm"):
            fields = msg.decode(msg.EVENT, cbor.dumps(body))
            if (fields.get("severity", 0) >= _ALARM_SEVERITY) != (kind == "alarm"):
                raise RecordError("severity %s does not match kind %s" % (quote(fields.get("severity", 0)), kind))
            return fields
        if kind == "ack":
            if type(body) is not list or len(body) != 2:
                raise RecordError("ack body must be [command, ack or null]")
            command = msg.decode(msg.COMMAND, cbor.dumps(body[0]))
            # src 0 with an ack: the Pi's own answer to a command for itself (PAUSE, RESUME of its balancer).
            pis_own = src == 0 and command["op"] in _PI_OPS
            if (body[1] is None) != (src == 0) and not pis_own:
                raise RecordError("an ack record carries the node's ack exactly when src is the node")
            return {
                "command": command,
                "ack": None if body[1] is None else msg.decode(msg.ACK, cbor.dumps(body[1])),
            }
        if kind == "heartbeat":
            if src != 0:
                raise RecordError("a heartbeat record is the Pi's (src 0); a node's is node_heartbeat")
            return _decode_map(_PI_HEARTBEAT, "Pi heartbeat", body)
        if kind == "node_heartbeat":
            if src == 0:
                raise RecordError("a node_heartbeat comes from a node, not src 0")
            return msg.decode(msg.HEARTBEAT, cbor.dumps(body))
    except PhasecoreError as e:
        raise RecordError(str(e)) from e
    raise RecordError("unknown record kind %s" % (quote(kind),))
