"""Operator commands: sealed by the operator, verified by the transformer Pi before anything moves.

This module is the Pi's gate (``OperatorGate``); the sealing side (key
derivation, external AAD, payload format) is ``phaseuplink.operator``,
shared with the server, and re-exported here.

An operator (server-min, or an engineer with ``phasekit operator send``)
commands a node through the broker: move it, lock it, unlock it, change its
limits. The broker and every network hop in between are untrusted, so the
command is a COSE_Encrypt0 (RFC 9052) under AES-CCM-16-64-256 with a key
only the operator and the Pi hold:

    operator key = HKDF-SHA256(IKM = site key, salt = b"",
                               info = b"phasekit operator " + operator id [+ b"/" + generation], L = 32)
    base IV      = HKDF-SHA256(same IKM, info = b"phasekit operator iv " + operator id [+ ...], L = 13)

(the suffix, ``/`` and the operator key generation as two bytes big-endian,
only for generations above 0; generation 0 is the original derivation).

The operator is given its key file, never the site key (``phasekit operator
key``). Each command carries the operator id as ``kid`` and the
operator's sequence number as Partial IV (nonce = base IV XOR padded PIV,
RFC 9052 section 3.1); the operator's counter persists across restarts
(``phasecore.replay.SequenceCounter``), so a nonce is never used twice. The
external AAD binds the command to one site, one transformer and one node:
``["phasekit-op", 1, site, transformer, node]`` as CBOR. The plaintext is a
``phasecore.msg`` command body, which carries its own ``deadline_s``. Node 0
is the transformer itself: PAUSE and RESUME of its balancer (``TRANSFORMER_OPS``)
are accepted for node 0 only, every other command for a node 1..247 only
(reason ``wrong_scope``); the AAD binds a pause to this site's and
transformer's Pi, so it cannot be replayed to another.

On the MQTT topic ``phasekit/<site>/<transformer>/command`` the payload is
the CBOR array ``[1, node, cose_encrypt0]``. The Pi (``OperatorGate``)
refuses, with ``OperatorRefused`` naming why, anything that is not for this
site and transformer, names an unknown operator, fails the tag, repeats or
predates a sequence number it accepted (a replay window per operator,
persisted before the command is acted on), is past its deadline or breaks the
command schema. Only then does the controller carry it out, through the same
sealed Pi-to-node link and the node's own relay safety as its own moves.

Fail closed. The replay windows live in a state file (``operators.json``
beside the buffer, with a CRC-32, written atomically before a command is
acted on). If that file is missing, damaged or cannot be written, the gate
refuses every operator command (reason ``no_state``) until an administrator
re-initialises it with a new operator key generation (``phasekit gateway
operator-reset CONFIG --generation N``, docs/install-gateway.md): fresh
windows under fresh keys, so nothing sealed before can be replayed. Work per
message is bounded: a payload above ``MAX_PAYLOAD`` bytes is refused before
it is parsed, and a command whose deadline lies more than ``MAX_AHEAD_S``
beyond the Pi's clock is refused (``too_far``) after its sequence number is
spent, so it can never become valid later.

What this protects (docs/security.md): a broker, a LoRa gateway or anyone on
the network can neither forge an operator command nor replay one, not even
after a Pi restart. The last leg, Pi to node, is sealed with the node's key
under the Pi's counter: the node trusts the Pi, which holds the site key and
could derive any node key in any case.
"""

import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from phasecore import cbor, cose, msg
from phasecore.errors import PhasecoreError, ReplayError, quote
from phasecore.replay import PIV_MAX, ReplayWindow
from phasegate.errors import ProtocolError
from phaseuplink.operator import ALG as _ALG
from phaseuplink.operator import (
    FORMAT,
    MAX_GENERATION,
    REFUSAL_REASONS,
    check_generation,
    external_aad,
    operator_key,
    seal_command,
)
from phaseuplink.operator import check_id as _check_id

log = logging.getLogger(__name__)

# The sealing side (operator_key, seal_command, external_aad, FORMAT, the refusal reasons) lives in
# phaseuplink.operator, shared with the server; it is re-exported here for the Pi's callers and tests.
__all__ = (
    "OperatorGate",
    "OperatorRefused",
    "operator_key",
    "seal_command",
    "external_aad",
    "reset_state",
    "read_state",
    "StateError",
    "FORMAT",
    "MAX_PAYLOAD",
    "MAX_AHEAD_S",
    "REASONS",
    "TRANSFORMER_OPS",
)

# The state file's own format (2: with the key generation and a CRC-32).
STATE_FORMAT = 2
# A sealed command is about 60 bytes; a payload of this size is not one, and is refused before
# anything parses it (the MQTT client caps what the broker may deliver at the same order).
MAX_PAYLOAD = 1024
# A command valid for longer than this is refused: a withheld command must not stay usable for days.
MAX_AHEAD_S = 900
# Why a command is refused (OperatorRefused.reason), by the value of the Pi's OPERATOR_REFUSED event.
REASONS = REFUSAL_REASONS
# The commands for the transformer itself (node 0 in the payload and the AAD), carried out by the Pi.
TRANSFORMER_OPS = (msg.OP_PAUSE, msg.OP_RESUME)


class OperatorRefused(ProtocolError, ValueError):
    """An operator command that must not be carried out; ``reason`` is a short word for counters."""

    def __init__(self, reason: str, detail: str):
        ValueError.__init__(self, "operator command refused (%s): %s" % (reason, detail))
        self.reason = reason


class StateError(ProtocolError, ValueError):
    """The operator state file is missing, damaged or cannot be written: operator commands are refused."""


# ------------------------------------------------------------------ the state file


def _crc(generation: int, tops: Mapping[str, int]) -> str:
    core = json.dumps({"format": STATE_FORMAT, "generation": generation, "tops": dict(tops)}, sort_keys=True)
    return "%08x" % zlib.crc32(core.encode("utf-8"))


def read_state(path: str | os.PathLike[str]) -> tuple[int, dict[str, int]]:
    """``(generation, {operator id: window top})`` from the state file; ``StateError`` if missing or damaged."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
    except FileNotFoundError:
        raise StateError("operator state %s is missing" % path) from None
    except OSError as e:
        raise StateError("operator state %s cannot be read: %s" % (path, e)) from e
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise StateError("operator state %s is damaged (not JSON: %s)" % (path, quote(str(e)))) from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise StateError("operator state %s is damaged or of an unknown format" % path)
    generation, tops = data.get("generation"), data.get("tops")
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION or not isinstance(tops, dict):
        raise StateError("operator state %s is damaged (generation or windows)" % path)
    for k, v in tops.items():
        if not isinstance(k, str) or type(v) is not int or not -1 <= v <= PIV_MAX:
            raise StateError("operator state %s is damaged (window of %s)" % (path, quote(k)))
    if data.get("crc") != _crc(generation, tops):
        raise StateError("operator state %s is damaged (checksum does not match)" % path)
    return generation, tops


def _write_state(path: str, generation: int, tops: Mapping[str, int]) -> None:
    data = {"format": STATE_FORMAT, "generation": generation, "tops": dict(tops), "crc": _crc(generation, tops)}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename is durable once the folder's entry is on disk
    finally:
        os.close(dfd)


def reset_state(path: str | os.PathLike[str], generation: int) -> int | None:
    """Re-initialise the operator state at ``generation``: empty windows under that generation's keys.

    The administrator's step after a damaged or missing state file (``phasekit
    gateway operator-reset``). A readable file's generation must be exceeded
    (the old keys' commands could otherwise be replayed into empty windows);
    returns the generation the file had, or None if it was missing or damaged.
    """
    check_generation(generation)
    try:
        old: int | None = read_state(path)[0]
    except StateError:
        old = None
    if old is not None and generation <= old:
        raise StateError(
            "operator state %s is at generation %d: a reset needs a higher one (--generation %d)" % (path, old, old + 1)
        )
    _write_state(str(path), generation, {})
    return old


class OperatorGate:
    """The Pi's check of operator commands: ``gate.open(payload, now_wall_s) -> (node, fields)``.

    ``operators``: the operator ids this Pi accepts. Replay windows and the
    operator key generation live in ``state_path`` (JSON with a CRC, written
    atomically before ``open`` returns a command); a missing or damaged file
    makes every command refused until ``reset_state`` (module docstring).
    """

    def __init__(
        self,
        site_key: bytes,
        site: str,
        transformer: str,
        operators: Iterable[str],
        state_path: str | os.PathLike[str],
        nodes: Iterable[int] | None = None,
        max_ahead_s: float = MAX_AHEAD_S,
    ):
        self.site, self.transformer = site, transformer
        self.nodes = set(nodes) if nodes is not None else None
        self.state_path = str(state_path)
        self.max_ahead_s = max_ahead_s
        self.counters = {"accepted": 0}
        self.problem: str | None = None  # why every command is refused, or None
        self.generation = 0
        tops: dict[str, int] = {}
        try:
            self.generation, tops = read_state(self.state_path)
        except StateError as e:
            self.problem = str(e)
            log.error("%s: operator commands are refused until 'phasekit gateway operator-reset'", e)
        self._keys: dict[bytes, tuple[bytes, bytes]] = {}  # operator id -> (key, base IV)
        for oid in operators:
            self._keys[_check_id(oid)] = operator_key(site_key, oid, self.generation)
        self._windows = {oid: ReplayWindow() for oid in self._keys}
        for name, top in tops.items():
            kid = name.encode()
            if kid in self._windows and top >= 0:
                self._windows[kid] = ReplayWindow.restore(top)

    def open(self, payload: bytes, now_s: float) -> tuple[int, dict[str, Any]]:
        """Verify one command payload; returns ``(node, fields)`` or raises ``OperatorRefused`` (nothing else).

        ``node`` 0 is the transformer itself (only ``TRANSFORMER_OPS``).
        """
        # The fields are phasecore.msg's decoded command (Any: each field its own type).
        if not isinstance(payload, (bytes, bytearray)):
            raise self._refuse("malformed", "payload of type %s" % type(payload).__name__)
        if len(payload) > MAX_PAYLOAD:
            raise self._refuse("too_large", "%d bytes, at most %d" % (len(payload), MAX_PAYLOAD))
        if self.problem is not None:
            raise self._refuse("no_state", self.problem)
        try:
            return self._open(bytes(payload), now_s)
        except OperatorRefused:
            raise
        except Exception as e:  # noqa: BLE001 - one message must not escape as anything but a refusal
            raise self._refuse("malformed", "%s: %s" % (type(e).__name__, quote(str(e), 200))) from e

    def _open(self, payload: bytes, now_s: float) -> tuple[int, dict[str, Any]]:
        try:
            item = cbor.loads(payload)
        except PhasecoreError as e:
            raise self._refuse("malformed", "not CBOR: %s" % e) from e
        if not (
            type(item) is list
            and len(item) == 3
            and type(item[0]) is int
            and item[0] == FORMAT
            and type(item[1]) is int
            and type(item[2]) is bytes
        ):
            raise self._refuse("malformed", "expected [%d, node, COSE_Encrypt0]" % FORMAT)
        node, sealed = item[1], item[2]
        if node != 0 and (not 1 <= node <= 247 or (self.nodes is not None and node not in self.nodes)):
            raise self._refuse("unknown_node", "node %s is not on this transformer" % quote(node))
        try:
            obj = cose.decode(sealed)
        except PhasecoreError as e:
            raise self._refuse("malformed", str(e)) from e
        kid = obj.uhdr.get(cose.HDR_KID, obj.phdr.get(cose.HDR_KID))
        piv = obj.uhdr.get(cose.HDR_PARTIAL_IV)
        if type(kid) is not bytes or kid not in self._keys:
            raise self._refuse("unknown_operator", "kid %s" % quote(kid))
        if type(piv) is not bytes or not 1 <= len(piv) <= 5:
            raise self._refuse("malformed", "missing or bad Partial IV")
        seq = int.from_bytes(piv, "big")
        key, base_iv = self._keys[kid]
        try:
            plaintext = cose.decrypt(
                key, sealed, external_aad(self.site, self.transformer, node), alg=_ALG, base_iv=base_iv
            )
        except PhasecoreError as e:
            raise self._refuse("bad_tag", "%s (operator %s, seq %d)" % (e, kid.decode(), seq)) from e
        window = self._windows[kid]
        try:
            window.check(seq)
        except ReplayError as e:
            raise self._refuse("replay", "operator %s: %s" % (kid.decode(), e)) from e
        try:
            fields = msg.decode(msg.COMMAND, plaintext)
        except PhasecoreError as e:
            raise self._refuse("schema", str(e)) from e
        if (node == 0) != (fields["op"] in TRANSFORMER_OPS):
            target = "node %d" % node if node else "the transformer"
            raise self._refuse("wrong_scope", "%s is not a command for %s" % (msg.OP_NAMES[fields["op"]], target))
        # Accepted from here on: persist the window first, so a restart cannot accept it again;
        # a window that cannot be persisted closes the gate (fail closed).
        window.accept(seq)
        try:
            _write_state(self.state_path, self.generation, self._tops())
        except OSError as e:
            self.problem = "operator state %s cannot be written: %s" % (self.state_path, e)
            raise self._refuse("no_state", self.problem) from e
        deadline = fields["deadline_s"]
        if deadline < now_s:
            raise self._refuse("expired", "deadline %d is %d s past" % (deadline, now_s - deadline))
        if deadline > now_s + self.max_ahead_s:
            raise self._refuse(
                "too_far", "deadline %d is %d s ahead, at most %d" % (deadline, deadline - now_s, self.max_ahead_s)
            )
        self.counters["accepted"] += 1
        log.info(
            "operator %s: %s for node %d accepted (seq %d)", kid.decode(), msg.OP_NAMES.get(fields["op"]), node, seq
        )
        return node, fields

    def _tops(self) -> dict[str, int]:
        return {k.decode(): w.state()[1] for k, w in self._windows.items()}

    def _refuse(self, reason: str, detail: str) -> OperatorRefused:
        self.counters[reason] = self.counters.get(reason, 0) + 1
        err = OperatorRefused(reason, detail)
        # One line per refusal would let a flood fill the journal: the first few of each reason, then every 1000th.
        n = self.counters[reason]
        if n <= 5 or n % 1000 == 0:
            log.warning("%s (%d so far)", err, n)
        return err
