"""The message schema: what the plaintext of each sealed envelope holds.

One CBOR item per message (``phasecore.cbor``, deterministic encoding), the
kind travelling in the envelope header (docs/protocol.md sections 2 and 3).
The one thing to know: every number on the wire is an integer in a stated
unit (no floats, so NaN and infinities cannot occur: a float anywhere is a
``SchemaError``), and ``decode`` checks every type, range and cross-field rule
below, raising ``phasecore.errors.SchemaError`` that names the kind and the
field. Malformed CBOR raises ``CBORDecodeError``; nothing else escapes.

API:

- ``encode(kind, fields) -> bytes`` and ``decode(kind, body) -> fields``:
  ``fields`` is a dict of field name to value; ``encode`` validates exactly
  as ``decode`` does, so a node cannot send what a Pi would refuse.
- Reading fast path (one per node per poll): ``encode_reading(v_dV, i_mA,
  p_dW, e_Wh, f_dHz, pf_centi, phase, status) -> bytes``,
  ``encode_reading_into(buf, ...) -> n`` (writes into a caller's buffer of at
  least ``READING_MAX_LEN`` bytes, allocates nothing for values below 2**30),
  ``decode_reading(body) -> list`` of the 8 values in order.
- ``READING`` .. ``EVENT``, ``KIND_NAMES``; ``SCHEMA_VERSION``; the code
  constants below (``PHASE_*``, ``ST_*`` status bits, ``OP_*``, ``ACK_*``) with
  ``OP_NAMES``, ``OUTCOME_NAMES``, ``REASON_NAMES``, ``EVENT_NAMES``,
  ``STATUS_BITS`` and ``status_names(status)``. The codes and their names are
  ``phasecore.codes``' (the one table every tier uses), re-exported here; the
  reason and event constants themselves (``R_*``, ``EV_*``) are there.

Kind 0, reading (node -> Pi): a fixed-position array, no version: the kind
and length are the version (a later layout gets a new length).

| # | field | unit, range |
|---|---|---|
| 0 | voltage_dV | 0.1 V, 0..3000 |
| 1 | current_mA | 1 mA, 0..100000 |
| 2 | power_dW | 0.1 W, -300000..300000 (negative: export, on meters that see direction) |
| 3 | energy_Wh | 1 Wh, 0..2**32-1 (the meter's counter) |
| 4 | frequency_dHz | 0.1 Hz, 400..700, or 0 = not measured (no mains, meter fault) |
| 5 | pf_centi | 0.01, 0..100 |
| 6 | phase | 0 A, 1 B, 2 C, 3 none (all relays open: a move's dead time, a fault) |
| 7 | status | bit flags below, 0..0xFFF (bits 12-15 reserved, must be 0) |

Status bits (reading, ack, heartbeat). Bits 0-5 are the relay controller's
lock-out bits (``phasecore.codes.LOCK_*``) as they are, so a node sends
``locks | extras``; any of bits 0-6 means moves are refused.

| bit | name | meaning |
|---|---|---|
| 0 | OVERCURRENT | locked out: current above the node's limit (latched) |
| 1 | METER | locked out: meter silent or implausible; measurements are 0 or stale |
| 2 | OVERVOLTAGE | locked out: voltage above the node's limit |
| 3 | UNDERVOLTAGE | locked out: voltage below the node's limit |
| 4 | RELAY_FAULT | locked out: relay read-back mismatch or break not verified (latched) |
| 5 | STATE_LOST | locked out: persisted relay state unreadable at boot (latched) |
| 6 | OPERATOR_LOCK | locked by a LOCK command until UNLOCK |
| 7 | METER_ALARM | the meter's own power alarm (PZEM-004T register 0x0009) |
| 8 | SWITCHING | a move or the restore after boot is in progress |
| 9 | BUDGET | the switching budget of the hour or the day is spent |
| 10 | REBOOTED | first message since the node booted |
| 11 | NOT_SWITCHABLE | measure-only node (no relays, or a three-phase house) |

Map kinds 1-5: CBOR maps with small integer keys (one byte each); key 0 is
the schema version, ``SCHEMA_VERSION`` = 1, added by ``encode`` and checked
(and left out of the result) by ``decode``. Unknown keys are refused.
"u32" is 0..2**32-1. R = required, O = optional.

Kind 1, summary (Pi -> server, the MQTT uplink; one per summary period):

| key | field | R/O | unit, range |
|---|---|---|---|
| 1 | time_s | R | Unix time of the end of the period, u32 |
| 2 | period_s | R | 1..86400 |
| 3 | i_dA | R | mean phase currents [A, B, C], 0.1 A, each 0..100000 |
| 4 | i_n_dA | O | mean neutral current, 0.1 A, 0..100000 |
| 5 | cuf_pm | R | mean current unbalance factor, per mille, 0..2000 |
| 6 | cuf_max_pm | O | highest one-minute unbalance of the period, per mille, 0..2000 |
| 7 | v_dV | O | mean phase voltages [A, B, C], 0.1 V, each 0..3000 |
| 8 | p_W | O | mean phase active power [A, B, C], W, each -10**7..10**7 |
| 9 | vuf_pm | O | voltage unbalance factor, per mille, 0..1000 |
| 10 | nodes | R | node counts [online, stale, offline, locked out], each 0..65535 |
| 11 | moves | R | moves carried out in the period, 0..65535 |
| 12 | moves_failed | O | moves refused, failed or rolled back, 0..65535 |
| 13 | frequency_dHz | O | 400..700, or 0 = not measured |
| 14 | flags | O | bit 0 no transformer meter, bit 1 meter fault, bit 2 balancing paused; 0..7 |
| 15 | backlog | O | messages waiting in the store-and-forward buffer, u32 |

Kind 2, command (Pi -> node; the node checks it again, relay safety first):

| key | field | R/O | unit, range |
|---|---|---|---|
| 1 | id | R | command id, u32, echoed by the ack |
| 2 | op | R | 1 MOVE, 2 LOCK, 3 UNLOCK, 4 SET_LIMITS, 5 REPORT, 6 OTA, 7 PAUSE, 8 RESUME; others refused |
| 3 | deadline_s | R | Unix time after which the node must not act, u32 (nodes learn the time from the Pi's heartbeat) |
| 4 | ref_seq | O | the node's reading sequence number the decision was based on, 0..2**40-1 |
| 5 | phase | MOVE: R | target phase 0..2 |
| 6 | expect_phase | MOVE: O | the phase the Pi believes the node is on, 0..2; the node refuses if it is not |
| 7 | i_max_mA | SET_LIMITS | overcurrent lock-out threshold, mA, 1..100000 |
| 8 | v_min_dV | SET_LIMITS | undervoltage threshold, 0.1 V, 0..3000 |
| 9 | v_max_dV | SET_LIMITS | overvoltage threshold, 0.1 V, 0..3000, above v_min_dV |
| 10 | max_per_hour | SET_LIMITS | moves per rolling hour, 0..60 |
| 11 | max_per_day | SET_LIMITS | moves per rolling day, 0..1440 |
| 12 | min_dwell_s | SET_LIMITS | seconds on a phase before it may be left, 0..604800 |
| 13 | dead_time_ms | SET_LIMITS | break-before-make dead time, 0..10000 |
| 14 | reason | LOCK: O | why the operator locks, 0..255 (free for the operator) |
| 15 | ota | OTA: R | the update step: 1 BEGIN, 2 ACTIVATE, 3 CANCEL (``phasecore.codes.OTA_ACTIONS``) |
| 16 | ota_id | OTA: R | the bundle's id (``phasecore.ota.bundle_id``), u32 |
| 17 | ota_size | BEGIN: R | the bundle's bytes, 1..16777216 |
| 18 | ota_chunk | BEGIN: R | data bytes per OTA_DATA chunk, 16..222 (``phasecore.ota.CHUNK_MAX``) |

Rules: ``phase`` and ``expect_phase`` only with MOVE, and not equal; limit
fields (7-13) only with SET_LIMITS, at least one of them; ``reason`` only
with LOCK; ``ota`` and ``ota_id`` with OTA and only with it, ``ota_size``
and ``ota_chunk`` with BEGIN and only with it. REPORT asks the node for a
heartbeat now. PAUSE and RESUME (of the balancer) are the Pi's own, from an
operator for node 0; a node answers them UNSUPPORTED.

Kind 3, ack (node -> Pi, one per command that opened correctly):

| key | field | R/O | unit, range |
|---|---|---|---|
| 1 | id | R | the command's id, u32 |
| 2 | outcome | R | 0 DONE, 1 REFUSED, 2 FAILED (tried, did not take), 3 EXPIRED, 4 UNSUPPORTED; others refused |
| 3 | reason | O | ``REASON_NAMES``; 0..255 (0-11 the relay controller's refusals, ``phasecore.codes.R_*``) |
| 4 | phase | R | the phase the node is on after handling the command, 0..3 as in the reading |
| 5 | status | O | status bits as in the reading |

Kind 4, heartbeat (node -> Pi and Pi -> node/server):

| key | field | R/O | unit, range |
|---|---|---|---|
| 1 | uptime_s | R | seconds since boot, u32 |
| 2 | fw | R | firmware version, printable ASCII, 1..24 characters |
| 3 | boots | O | boot count, u32 |
| 4 | time_s | O | sender's Unix time, u32; the Pi always sends it (nodes check command deadlines against it) |
| 5 | tx | O | frames sent, u32 |
| 6 | rx | O | frames received and opened, u32 |
| 7 | rx_bad | O | frames dropped: bad CRC, tag, replay or schema, u32 |
| 8 | moves | O | relay moves since first boot, u32 |
| 9 | refusals | O | commands refused since first boot, u32 |
| 10 | heap_free | O | free heap in bytes, u32 |
| 11 | rssi_dBm | O | last received signal strength, -200..0 |
| 12 | phase | O | 0..3 as in the reading |
| 13 | status | O | status bits as in the reading |
| 14 | boot_nonce | O | node: a random number drawn at boot, 1..2**48-1, sent until the Pi has echoed it |
| 15 | echo | O | Pi: the boot_nonce the node last sent, 1..2**48-1 (its proof of freshness) |
| 16 | switch | O | node: switch hardware, 0 mechanical, 1 solid-state (the balancer's limits follow it) |

Keys 14 and 15 are the node's freshness after a reboot (docs/protocol.md
section 3, as OSCORE's Echo, RFC 8613 Appendix B.1.2): a node takes its clock
only from a Pi heartbeat that echoes the nonce it drew at this boot, which no
heartbeat sealed before the boot can carry.

Kind 5, event (node or Pi; informational, so unknown codes pass):

| key | field | R/O | unit, range |
|---|---|---|---|
| 1 | code | R | ``EVENT_NAMES``; 1..65535 (``phasecore.codes.EV_*``; 1-10 the relay controller's) |
| 2 | value | O | first argument, -2**63..2**63-1 |
| 3 | value2 | O | second argument, same range |
| 4 | time_s | O | Unix time, u32 |
| 5 | node | O | the node the event is about (Pi events), link address 1..247 |
| 6 | severity | O | 0 info, 1 warning, 2 alarm, 3 critical |
| 7 | text | O | detail for people, 0..64 characters |

Kinds 6 (OTA data, Pi -> node) and 7 (OTA status, node -> Pi) carry
firmware bundles; their bodies are ``phasecore.ota``'s, which ``encode`` and
``decode`` hand them to (imported only then: a node loads it when an update
begins).

Every phase in a message, the relay controller's event values included
(``MOVED`` from, to), is 0 A, 1 B, 2 C, 3 none (``phasecore.codes``).
"""

from phasecore import cbor
from phasecore.codes import (
    ACK,
    ACK_DONE,
    ACK_EXPIRED,
    ACK_FAILED,
    ACK_REFUSED,
    ACK_UNSUPPORTED,
    COMMAND,
    EVENT,
    EVENT_NAMES,
    HEARTBEAT,
    KIND_NAMES,
    OP_LOCK,
    OP_MOVE,
    OP_NAMES,
    OP_OTA,
    OP_PAUSE,
    OP_REPORT,
    OP_RESUME,
    OP_SET_LIMITS,
    OP_UNLOCK,
    OTA_ACTIONS,
    OTA_BEGIN,
    OTA_DATA,
    OTA_STATUS,
    OUTCOME_NAMES,
    PHASE_A,
    PHASE_B,
    PHASE_C,
    PHASE_NONE,
    READING,
    REASON_NAMES,
    ST_BUDGET,
    ST_LOCKED_MASK,
    ST_METER,
    ST_METER_ALARM,
    ST_NOT_SWITCHABLE,
    ST_OPERATOR_LOCK,
    ST_OVERCURRENT,
    ST_OVERVOLTAGE,
    ST_REBOOTED,
    ST_RELAY_FAULT,
    ST_STATE_LOST,
    ST_SWITCHING,
    ST_UNDERVOLTAGE,
    STATUS_BITS,
    SUMMARY,
)
from phasecore.errors import SchemaError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = (
    "encode",
    "decode",
    "encode_reading",
    "encode_reading_into",
    "decode_reading",
    "status_names",
    "READING",
    "SUMMARY",
    "COMMAND",
    "ACK",
    "HEARTBEAT",
    "EVENT",
    "KIND_NAMES",
    "SCHEMA_VERSION",
    "NONCE_MAX",
    "READING_FIELDS",
    "READING_MAX_LEN",
    "PHASE_A",
    "PHASE_B",
    "PHASE_C",
    "PHASE_NONE",
    "OP_MOVE",
    "OP_LOCK",
    "OP_UNLOCK",
    "OP_SET_LIMITS",
    "OP_REPORT",
    "OP_OTA",
    "OP_PAUSE",
    "OP_RESUME",
    "OP_NAMES",
    "OTA_DATA",
    "OTA_STATUS",
    "ACK_DONE",
    "ACK_REFUSED",
    "ACK_FAILED",
    "ACK_EXPIRED",
    "ACK_UNSUPPORTED",
    "OUTCOME_NAMES",
    "REASON_NAMES",
    "EVENT_NAMES",
    "STATUS_BITS",
    "ST_OVERCURRENT",
    "ST_METER",
    "ST_OVERVOLTAGE",
    "ST_UNDERVOLTAGE",
    "ST_RELAY_FAULT",
    "ST_STATE_LOST",
    "ST_OPERATOR_LOCK",
    "ST_METER_ALARM",
    "ST_SWITCHING",
    "ST_BUDGET",
    "ST_REBOOTED",
    "ST_NOT_SWITCHABLE",
    "ST_LOCKED_MASK",
    "SchemaError",
)

SCHEMA_VERSION = const(1)
_STATUS_MAX = const(0xFFF)

READING_FIELDS = ("voltage_dV", "current_mA", "power_dW", "energy_Wh", "frequency_dHz", "pf_centi", "phase", "status")
# 1 head + 3 (voltage) + 5 (current) + 5 (power) + 5 (energy) + 3 (frequency) + 2 (pf) + 1 + 3 (status).
READING_MAX_LEN = const(28)

# A map holding arrays of integers is as deep as any body goes; anything
# deeper is refused by the CBOR decoder before it is built.
_MAX_BODY_DEPTH = const(2)
_U32 = 0xFFFFFFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
# A boot nonce: 48 random bits (a node draws a fresh one at every boot; docs/security.md section 5).
NONCE_MAX = (1 << 48) - 1

# Field value types.
_INT = const(0)  # int lo..hi
_FREQ = const(1)  # 0 or lo..hi
_ARR3 = const(2)  # list of 3 ints, each lo..hi
_ARR4 = const(3)  # list of 4 ints, each lo..hi
_ASCII = const(4)  # str of lo..hi printable ASCII characters
_TEXT = const(5)  # str of lo..hi characters
_CODE = const(6)  # int, one of the keys of the dict or indices of the tuple in lo

_R = True
_O = False

# Per map kind: (key, name, type, lo, hi, required), in key order.
_SUMMARY = (
    (1, "time_s", _INT, 0, _U32, _R),
    (2, "period_s", _INT, 1, 86400, _R),
    (3, "i_dA", _ARR3, 0, 100000, _R),
    (4, "i_n_dA", _INT, 0, 100000, _O),
    (5, "cuf_pm", _INT, 0, 2000, _R),
    (6, "cuf_max_pm", _INT, 0, 2000, _O),
    (7, "v_dV", _ARR3, 0, 3000, _O),
    (8, "p_W", _ARR3, -10000000, 10000000, _O),
    (9, "vuf_pm", _INT, 0, 1000, _O),
    (10, "nodes", _ARR4, 0, 65535, _R),
    (11, "moves", _INT, 0, 65535, _R),
    (12, "moves_failed", _INT, 0, 65535, _O),
    (13, "frequency_dHz", _FREQ, 400, 700, _O),
    (14, "flags", _INT, 0, 7, _O),
    (15, "backlog", _INT, 0, _U32, _O),
)
_COMMAND = (
    (1, "id", _INT, 0, _U32, _R),
    (2, "op", _CODE, OP_NAMES, 0, _R),
    (3, "deadline_s", _INT, 0, _U32, _R),
    (4, "ref_seq", _INT, 0, (1 << 40) - 1, _O),
    (5, "phase", _INT, 0, 2, _O),
    (6, "expect_phase", _INT, 0, 2, _O),
    (7, "i_max_mA", _INT, 1, 100000, _O),
    (8, "v_min_dV", _INT, 0, 3000, _O),
    (9, "v_max_dV", _INT, 0, 3000, _O),
    (10, "max_per_hour", _INT, 0, 60, _O),
    (11, "max_per_day", _INT, 0, 1440, _O),
    (12, "min_dwell_s", _INT, 0, 604800, _O),
    (13, "dead_time_ms", _INT, 0, 10000, _O),
    (14, "reason", _INT, 0, 255, _O),
    (15, "ota", _CODE, OTA_ACTIONS, 0, _O),
    (16, "ota_id", _INT, 0, _U32, _O),
    (17, "ota_size", _INT, 1, 16777216, _O),
    (18, "ota_chunk", _INT, 16, 222, _O),
)
_LIMIT_KEYS = (7, 8, 9, 10, 11, 12, 13)
_ACK = (
    (1, "id", _INT, 0, _U32, _R),
    (2, "outcome", _CODE, OUTCOME_NAMES, 0, _R),
    (3, "reason", _INT, 0, 255, _O),
    (4, "phase", _INT, 0, 3, _R),
    (5, "status", _INT, 0, _STATUS_MAX, _O),
)
_HEARTBEAT = (
    (1, "uptime_s", _INT, 0, _U32, _R),
    (2, "fw", _ASCII, 1, 24, _R),
    (3, "boots", _INT, 0, _U32, _O),
    (4, "time_s", _INT, 0, _U32, _O),
    (5, "tx", _INT, 0, _U32, _O),
    (6, "rx", _INT, 0, _U32, _O),
    (7, "rx_bad", _INT, 0, _U32, _O),
    (8, "moves", _INT, 0, _U32, _O),
    (9, "refusals", _INT, 0, _U32, _O),
    (10, "heap_free", _INT, 0, _U32, _O),
    (11, "rssi_dBm", _INT, -200, 0, _O),
    (12, "phase", _INT, 0, 3, _O),
    (13, "status", _INT, 0, _STATUS_MAX, _O),
    (14, "boot_nonce", _INT, 1, NONCE_MAX, _O),
    (15, "echo", _INT, 1, NONCE_MAX, _O),
    (16, "switch", _INT, 0, 1, _O),
)
_EVENT = (
    (1, "code", _INT, 1, 65535, _R),
    (2, "value", _INT, _I64_MIN, _I64_MAX, _O),
    (3, "value2", _INT, _I64_MIN, _I64_MAX, _O),
    (4, "time_s", _INT, 0, _U32, _O),
    (5, "node", _INT, 1, 247, _O),
    (6, "severity", _INT, 0, 3, _O),
    (7, "text", _TEXT, 0, 64, _O),
)
_SPECS = (None, _SUMMARY, _COMMAND, _ACK, _HEARTBEAT, _EVENT)


def status_names(status):
    """The names of the bits set in a status value, lowest bit first."""
    return [STATUS_BITS[i] for i in range(len(STATUS_BITS)) if status >> i & 1]


def _kind_name(kind):
    if type(kind) is not int or not 0 <= kind < len(KIND_NAMES):
        raise SchemaError("unknown message kind %s (0..%d)" % (quote(kind), len(KIND_NAMES) - 1))
    return KIND_NAMES[kind]


# ---------------------------------------------------------------- reading


def _check_reading(v, i, p, e, f, pf, phase, status):
    # Each check on its own line so the error names the field; ints only
    # (type(True) is bool, so booleans are refused too).
    if type(v) is not int or not 0 <= v <= 3000:
        _bad_reading(0, v, "0..3000 (0.1 V)")
    if type(i) is not int or not 0 <= i <= 100000:
        _bad_reading(1, i, "0..100000 (mA)")
    if type(p) is not int or not -300000 <= p <= 300000:
        _bad_reading(2, p, "-300000..300000 (0.1 W)")
    if type(e) is not int or not 0 <= e <= _U32:
        _bad_reading(3, e, "0..4294967295 (Wh)")
    if type(f) is not int or not (f == 0 or 400 <= f <= 700):
        _bad_reading(4, f, "0 or 400..700 (0.1 Hz)")
    if type(pf) is not int or not 0 <= pf <= 100:
        _bad_reading(5, pf, "0..100 (0.01)")
    if type(phase) is not int or not 0 <= phase <= 3:
        _bad_reading(6, phase, "0..3 (A, B, C, none)")
    if type(status) is not int or not 0 <= status <= _STATUS_MAX:
        _bad_reading(7, status, "0..0xfff (bits 12-15 reserved)")


def _bad_reading(index, value, rng):
    raise SchemaError("reading field %s = %s outside %s" % (READING_FIELDS[index], quote(value), rng))


def _put_int(buf, pos, n):
    # A CBOR integer head (RFC 8949 3.1), shortest form, for |n| < 2**32.
    mt = 0x00
    if n < 0:
        mt = 0x20
        n = -1 - n
    if n < 24:
        buf[pos] = mt | n
        return pos + 1
    if n < 0x100:
        buf[pos] = mt | 24
        buf[pos + 1] = n
        return pos + 2
    if n < 0x10000:
        buf[pos] = mt | 25
        buf[pos + 1] = n >> 8
        buf[pos + 2] = n & 0xFF
        return pos + 3
    buf[pos] = mt | 26
    buf[pos + 1] = (n >> 24) & 0xFF
    buf[pos + 2] = (n >> 16) & 0xFF
    buf[pos + 3] = (n >> 8) & 0xFF
    buf[pos + 4] = n & 0xFF
    return pos + 5


def encode_reading_into(buf, v_dV, i_mA, p_dW, e_Wh, f_dHz, pf_centi, phase, status):
    """Write a reading into ``buf`` (bytearray or memoryview, >= READING_MAX_LEN bytes); return its length.

    The same bytes as ``cbor.dumps`` of the 8-item list, without building the
    list: the node's sampling loop can reuse one buffer for ever.
    """
    _check_reading(v_dV, i_mA, p_dW, e_Wh, f_dHz, pf_centi, phase, status)
    if len(buf) < READING_MAX_LEN:
        raise SchemaError("reading buffer of %d bytes is below READING_MAX_LEN %d" % (len(buf), READING_MAX_LEN))
    buf[0] = 0x88  # array of 8 items
    pos = _put_int(buf, 1, v_dV)
    pos = _put_int(buf, pos, i_mA)
    pos = _put_int(buf, pos, p_dW)
    pos = _put_int(buf, pos, e_Wh)
    pos = _put_int(buf, pos, f_dHz)
    pos = _put_int(buf, pos, pf_centi)
    pos = _put_int(buf, pos, phase)
    return _put_int(buf, pos, status)


def encode_reading(v_dV, i_mA, p_dW, e_Wh, f_dHz, pf_centi, phase, status):
    """The reading body as bytes (22 bytes for a typical house; at most READING_MAX_LEN)."""
    buf = bytearray(READING_MAX_LEN)
    n = encode_reading_into(buf, v_dV, i_mA, p_dW, e_Wh, f_dHz, pf_centi, phase, status)
    return bytes(buf[:n])


def decode_reading(body):
    """The 8 reading values, in ``READING_FIELDS`` order, as a list; validated."""
    r = cbor.loads(body, _MAX_BODY_DEPTH)
    if type(r) is not list or len(r) != 8:
        raise SchemaError("reading body must be an array of 8 integers, not %s" % _describe(r))
    _check_reading(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
    return r


def _describe(obj):
    if type(obj) is list:
        return "an array of %d items" % len(obj)
    return "a %s" % type(obj).__name__


# ---------------------------------------------------------------- maps


def _check_field(kname, field, value):
    key, name, typ, lo, hi, _ = field
    if typ == _INT or typ == _FREQ:
        if type(value) is not int:
            _bad(kname, name, value, "must be an integer")
        if not lo <= value <= hi and not (typ == _FREQ and value == 0):
            _bad(kname, name, value, "outside %s%d..%d" % ("0 or " if typ == _FREQ else "", lo, hi))
    elif typ == _ARR3 or typ == _ARR4:
        n = 3 if typ == _ARR3 else 4
        if type(value) is not list or len(value) != n:
            _bad(kname, name, value, "must be an array of %d integers" % n)
        for x in value:
            if type(x) is not int or not lo <= x <= hi:
                _bad(kname, name, value, "has an item outside %d..%d" % (lo, hi))
    elif typ == _CODE:
        if type(value) is not int or not (0 <= value < len(lo) if type(lo) is tuple else value in lo):
            _bad(kname, name, value, "is not a known code")
    else:  # _ASCII, _TEXT
        if type(value) is not str or not lo <= len(value) <= hi:
            _bad(kname, name, value, "must be a text of %d..%d characters" % (lo, hi))
        if typ == _ASCII:
            for c in value:
                if not " " <= c <= "~":
                    _bad(kname, name, value, "must be printable ASCII")


def _bad(kname, name, value, what):
    raise SchemaError("%s field %s = %s %s" % (kname, name, quote(value), what))


def _check_rules(kind, kname, by_key):
    # Cross-field rules; by_key maps wire key -> value of the fields present.
    if kind == COMMAND:
        op = by_key[2]
        if op == OP_MOVE:
            if 5 not in by_key:
                raise SchemaError("command field phase is required for MOVE")
            if by_key.get(6, -1) == by_key[5]:
                raise SchemaError("command MOVE to phase %d which is its expect_phase" % by_key[5])
        else:
            for key, name in ((5, "phase"), (6, "expect_phase")):
                if key in by_key:
                    raise SchemaError("command field %s is only for MOVE, not %s" % (name, OP_NAMES[op]))
        n_limits = 0
        for key in _LIMIT_KEYS:
            if key in by_key:
                n_limits += 1
                if op != OP_SET_LIMITS:
                    raise SchemaError(
                        "command field %s is only for SET_LIMITS, not %s" % (_COMMAND[key - 1][1], OP_NAMES[op])
                    )
        if op == OP_SET_LIMITS:
            if not n_limits:
                raise SchemaError("command SET_LIMITS carries no limit")
            if 8 in by_key and 9 in by_key and by_key[8] >= by_key[9]:
                raise SchemaError("command field v_min_dV = %d is not below v_max_dV = %d" % (by_key[8], by_key[9]))
        if 14 in by_key and op != OP_LOCK:
            raise SchemaError("command field reason is only for LOCK, not %s" % OP_NAMES[op])
        if op == OP_OTA:
            for key in (15, 16):
                if key not in by_key:
                    raise SchemaError("command field %s is required for OTA" % _COMMAND[key - 1][1])
        begin = op == OP_OTA and by_key[15] == OTA_BEGIN
        for key in (15, 16, 17, 18):
            if key in by_key and op != OP_OTA:
                raise SchemaError("command field %s is only for OTA, not %s" % (_COMMAND[key - 1][1], OP_NAMES[op]))
            if key >= 17 and (key in by_key) != begin:
                raise SchemaError("command field %s is for OTA BEGIN, and required there" % _COMMAND[key - 1][1])


def encode(kind, fields):
    """Encode a message of ``kind`` from a dict of field names; raise SchemaError if it breaks the schema."""
    kname = _kind_name(kind)
    if kind >= OTA_DATA:
        from phasecore import ota

        return ota.encode(kind, fields)
    if type(fields) is not dict:
        raise SchemaError("%s fields must be a dict, not %s" % (kname, type(fields).__name__))
    if kind == READING:
        values = []
        for name in READING_FIELDS:
            if name not in fields:
                raise SchemaError("reading field %s is missing" % name)
            values.append(fields[name])
        if len(fields) != 8:
            _unknown_names(kname, fields, READING_FIELDS)
        return encode_reading(*values)
    spec = _SPECS[kind]
    body = {0: SCHEMA_VERSION}
    for field in spec:
        name = field[1]
        if name in fields:
            value = fields[name]
            _check_field(kname, field, value)
            body[field[0]] = value
        elif field[5]:
            raise SchemaError("%s field %s is missing" % (kname, name))
    if len(body) != len(fields) + 1:
        _unknown_names(kname, fields, [f[1] for f in spec])
    _check_rules(kind, kname, body)
    return cbor.dumps(body)


def _unknown_names(kname, fields, known):
    for name in fields:
        if name not in known:
            raise SchemaError("%s has no field %s" % (kname, quote(name)))


def decode(kind, body):
    """Decode and validate a message body of ``kind``; return a dict of field names (no version)."""
    kname = _kind_name(kind)
    if kind >= OTA_DATA:
        from phasecore import ota

        return ota.decode(kind, body)
    if kind == READING:
        r = decode_reading(body)
        out = {}
        for i in range(8):
            out[READING_FIELDS[i]] = r[i]
        return out
    m = cbor.loads(body, _MAX_BODY_DEPTH)
    if type(m) is not dict:
        raise SchemaError("%s body must be a map, not %s" % (kname, _describe(m)))
    spec = _SPECS[kind]
    for k in m:
        # Integer keys only: True and 1.0 would otherwise pass for key 1 in a dict lookup.
        if type(k) is not int or not 0 <= k <= len(spec):
            raise SchemaError("%s has unknown key %s" % (kname, quote(k)))
    if 0 not in m:
        raise SchemaError("%s has no schema version (key 0)" % kname)
    if type(m[0]) is not int or m[0] != SCHEMA_VERSION:
        raise SchemaError("%s schema version %s is not %d" % (kname, quote(m[0]), SCHEMA_VERSION))
    out = {}
    for field in spec:
        key = field[0]
        if key in m:
            value = m[key]
            _check_field(kname, field, value)
            out[field[1]] = value
        elif field[5]:
            raise SchemaError("%s field %s (key %d) is missing" % (kname, field[1], key))
    _check_rules(kind, kname, m)
    return out
