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
                               info = b"phasekit operator " + operator id, L = 32)
    base IV      = HKDF-SHA256(same IKM, info = b"phasekit operator iv " + operator id, L = 13)

The operator is given its key file, never the site key (``phasekit operator
key``). Each command carries the operator id as ``kid`` and the
operator's sequence number as Partial IV (nonce = base IV XOR padded PIV,
RFC 9052 section 3.1); the operator's counter persists across restarts
(``phasecore.replay.SequenceCounter``), so a nonce is never used twice. The
external AAD binds the command to one site, one transformer and one node:
``["phasekit-op", 1, site, transformer, node]`` as CBOR. The plaintext is a
``phasecore.msg`` command body, which carries its own ``deadline_s``.

On the MQTT topic ``phasekit/<site>/<transformer>/command`` the payload is
the CBOR array ``[1, node, cose_encrypt0]``. The Pi (``OperatorGate``)
refuses, with ``OperatorRefused`` naming why, anything that is not for this
site and transformer, names an unknown operator, fails the tag, repeats or
predates a sequence number it accepted (a replay window per operator,
persisted before the command is acted on), is past its deadline or breaks the
command schema. Only then does the controller carry it out, through the same
sealed Pi-to-node link and the node's own relay safety as its own moves.

What this protects (docs/security.md): a broker, a LoRa gateway or anyone on
the network can neither forge an operator command nor replay one, not even
after a Pi restart. The last leg, Pi to node, is sealed with the node's key
under the Pi's counter: the node trusts the Pi, which holds the site key and
could derive any node key in any case.
"""

import json
import logging
import os

from phasecore import cbor, cose, msg
from phasecore.errors import PhasecoreError, ReplayError
from phasecore.replay import ReplayWindow
from phasegate.errors import ProtocolError
from phaseuplink.operator import ALG as _ALG
from phaseuplink.operator import FORMAT, external_aad, operator_key, seal_command
from phaseuplink.operator import check_id as _check_id

log = logging.getLogger(__name__)

# The sealing side (operator_key, seal_command, external_aad, FORMAT) lives in phaseuplink.operator,
# shared with the server; it is re-exported here for the Pi's callers and tests.
__all__ = ("OperatorGate", "OperatorRefused", "operator_key", "seal_command", "external_aad", "FORMAT")


class OperatorRefused(ProtocolError, ValueError):
    """An operator command that must not be carried out; ``reason`` is a short word for counters."""

    def __init__(self, reason, detail):
        ValueError.__init__(self, "operator command refused (%s): %s" % (reason, detail))
        self.reason = reason


class OperatorGate:
    """The Pi's check of operator commands: ``gate.open(payload, now_wall_s) -> (node, fields)``.

    ``operators``: the operator ids this Pi accepts. Replay windows live in
    ``state_path`` (JSON, written atomically before ``open`` returns a command).
    """

    def __init__(self, site_key, site, transformer, operators, state_path, nodes=None):
        self.site, self.transformer = site, transformer
        self.nodes = set(nodes) if nodes is not None else None
        self.state_path = str(state_path)
        self._keys = {}
        for oid in operators:
            self._keys[_check_id(oid)] = operator_key(site_key, oid)
        self._windows = {oid: ReplayWindow() for oid in self._keys}
        for oid, top in self._read_state().items():
            if oid in self._windows and top >= 0:
                self._windows[oid] = ReplayWindow.restore(top)
        self.counters = {"accepted": 0}

    def open(self, payload, now_s):
        try:
            item = cbor.loads(payload)
        except PhasecoreError as e:
            raise self._refuse("malformed", "not CBOR: %s" % e) from e
        if not (
            isinstance(item, list)
            and len(item) == 3
            and item[0] == FORMAT
            and isinstance(item[1], int)
            and isinstance(item[2], bytes)
        ):
            raise self._refuse("malformed", "expected [%d, node, COSE_Encrypt0]" % FORMAT)
        node, sealed = item[1], item[2]
        if self.nodes is not None and node not in self.nodes:
            raise self._refuse("unknown_node", "node %r is not on this transformer" % (node,))
        try:
            obj = cose.decode(sealed)
        except PhasecoreError as e:
            raise self._refuse("malformed", str(e)) from e
        kid = obj.uhdr.get(cose.HDR_KID, obj.phdr.get(cose.HDR_KID))
        piv = obj.uhdr.get(cose.HDR_PARTIAL_IV)
        if kid not in self._keys:
            raise self._refuse("unknown_operator", "kid %r" % (kid,))
        if not isinstance(piv, bytes) or not 1 <= len(piv) <= 5:
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
        # Accepted from here on: persist the window first, so a restart cannot accept it again.
        window.accept(seq)
        self._save_state()
        if fields["deadline_s"] < now_s:
            raise self._refuse(
                "expired", "deadline %d is %d s past" % (fields["deadline_s"], now_s - fields["deadline_s"])
            )
        self.counters["accepted"] += 1
        log.info(
            "operator %s: %s for node %d accepted (seq %d)", kid.decode(), msg.OP_NAMES.get(fields["op"]), node, seq
        )
        return node, fields

    def _refuse(self, reason, detail):
        self.counters[reason] = self.counters.get(reason, 0) + 1
        err = OperatorRefused(reason, detail)
        log.warning("%s", err)
        return err

    def _read_state(self):
        try:
            with open(self.state_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            # Refusing to start would stop balancing; starting with empty windows would accept
            # replays. Deadlines bound what a replay could do, so start, loudly.
            log.error(
                "operator state %s unreadable (%s): replays within their deadline are possible", self.state_path, e
            )
            return {}
        return {k.encode(): int(v) for k, v in data.get("tops", {}).items()}

    def _save_state(self):
        data = {"format": FORMAT, "tops": {k.decode(): w.state()[1] for k, w in self._windows.items()}}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
