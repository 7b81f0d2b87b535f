"""Operator commands, the sealing side: what an operator (server-min or ``phasekit operator``) puts on a command topic.

An operator commands a node through the broker: move it, lock it, unlock it,
change its limits. The broker and every network hop in between are
untrusted, so the command is a COSE_Encrypt0 (RFC 9052) under
AES-CCM-16-64-256 with a key only the operator and the transformer Pi hold:

    operator key = HKDF-SHA256(IKM = site key, salt = b"",
                               info = b"phasekit operator " + operator id [+ b"/" + generation], L = 32)
    base IV      = HKDF-SHA256(same IKM, info = b"phasekit operator iv " + operator id [...], L = 13)

The operator is given its key file (``format_key_file``/``read_key_file``,
written by ``phasekit operator key``), never the site key. Each command
carries the operator id as ``kid`` and the operator's sequence number as
Partial IV (nonce = base IV XOR padded PIV, RFC 9052 section 3.1). The one
thing to know: the caller's counter must persist across restarts
(``phasecore.replay.SequenceCounter``) so a nonce is never used twice under
one key. The external AAD binds the command to one site, one transformer and
one node: ``["phasekit-op", 1, site, transformer, node]`` as CBOR. Node 0
is the transformer itself (its Pi): only PAUSE and RESUME of its balancer
are addressed to it, and only to it. The plaintext is a ``phasecore.msg``
command body, which carries its own ``deadline_s``.

On the MQTT topic ``phasekit/<site>/<transformer>/command`` the payload is
the CBOR array ``[1, node, cose_encrypt0]`` (``split_payload`` reads it back).
The Pi's check of it is ``phasegate.operator.OperatorGate``; this module is
shared (``phaseuplink``) so the server seals without importing the gateway.
"""

from phasecore import cbor, cose, kdf, msg
from phasecore.errors import PhasecoreError, quote
from phaseuplink.errors import UplinkError

__all__ = (
    "FORMAT",
    "ALG",
    "OperatorFormatError",
    "REFUSAL_REASONS",
    "check_id",
    "check_generation",
    "MAX_GENERATION",
    "operator_key",
    "external_aad",
    "seal_command",
    "split_payload",
    "format_key_file",
    "read_key_file",
)

FORMAT = 1
ALG = cose.ALG_AES_CCM_16_64_256
_KEY_INFO = b"phasekit operator "
_IV_INFO = b"phasekit operator iv "
_MAX_ID = 32
MAX_GENERATION = 0xFFFF
_KEY_LEN = 32
_IV_LEN = 13
# Partial IV: at most 5 bytes (RFC 8613 section 3.1, as the link's), so 2^40 commands per operator key.
_PIV_MAX = (1 << 40) - 1


# Why a Pi refused an operator command: the value of its OPERATOR_REFUSED event (phasecore.codes) is the
# index here. The Pi's controller raises these names (phasegate.controller.OPERATOR_REASONS is this tuple);
# the server reads them back from the uplink. Append only: the index is on the wire.
REFUSAL_REASONS = (
    "malformed",
    "unknown_node",
    "unknown_operator",
    "bad_tag",
    "replay",
    "schema",
    "expired",
    "no_phase",
    "too_large",
    "too_far",
    "no_state",
    "wrong_scope",  # a node command to node 0 (the transformer), or PAUSE/RESUME to a node
)


class OperatorFormatError(UplinkError):
    """An operator id, key file or command payload that breaks the operator format; the message says which."""


def check_id(operator_id: str) -> bytes:
    """The operator id as the COSE ``kid`` bytes; 1-32 letters, digits, '-', '_' or '.', else OperatorFormatError."""
    if (
        not isinstance(operator_id, str)
        or not 1 <= len(operator_id) <= _MAX_ID
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in operator_id)
    ):
        raise OperatorFormatError(
            "operator id %s: 1-%d letters, digits, '-', '_' or '.'" % (quote(operator_id), _MAX_ID)
        )
    return operator_id.encode()


def check_generation(generation: int) -> int:
    """An operator key generation 0..65535, else OperatorFormatError."""
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION:
        raise OperatorFormatError("operator key generation %s outside 0..%d" % (quote(generation), MAX_GENERATION))
    return generation


def operator_key(site_key: bytes, operator_id: str, generation: int = 0) -> tuple[bytes, bytes]:
    """``(key, base_iv)`` of one operator and key generation, derived from the site key (the Pi derives it).

    Generation 0 keeps the original derivation; a later generation (after the Pi's operator state was
    re-initialised, ``phasekit gateway operator-reset``) appends ``/`` and the generation (2 bytes,
    big-endian) to the operator id in the HKDF info, so its keys share nothing with the old ones.
    """
    oid = check_id(operator_id)
    if check_generation(generation):
        oid += b"/" + generation.to_bytes(2, "big")
    return (
        kdf.hkdf(bytes(site_key), _KEY_LEN, info=_KEY_INFO + oid),
        kdf.hkdf(bytes(site_key), _IV_LEN, info=_IV_INFO + oid),
    )


def external_aad(site: str, transformer: str, node: int) -> bytes:
    """The external AAD that binds a command to one site, transformer and node (0: the transformer's Pi)."""
    return cbor.dumps(["phasekit-op", FORMAT, site, transformer, node])


def _piv(seq: int) -> bytes:
    n = max(1, (seq.bit_length() + 7) // 8)
    return seq.to_bytes(n, "big")


def seal_command(
    key: bytes, base_iv: bytes, operator_id: str, seq: int, site: str, transformer: str, node: int, fields: dict
) -> bytes:
    """The MQTT payload of one operator command (``fields``: a phasecore.msg command; ``seq`` never reused)."""
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= _PIV_MAX:
        raise OperatorFormatError("sequence number %s outside 0..2^40-1" % (quote(seq),))
    try:
        plaintext = msg.encode(msg.COMMAND, fields)
    except PhasecoreError as e:
        raise OperatorFormatError("command fields: %s" % e) from e
    sealed = cose.encrypt(
        key,
        plaintext,
        ALG,
        external_aad(site, transformer, node),
        kid=check_id(operator_id),
        partial_iv=_piv(seq),
        base_iv=base_iv,
    )
    return cbor.dumps([FORMAT, node, sealed])


def split_payload(payload: bytes) -> tuple[int, bytes]:
    """``(node, cose_encrypt0 bytes)`` of a command payload; OperatorFormatError if it is not ``[1, node, bstr]``."""
    try:
        item = cbor.loads(bytes(payload))
    except PhasecoreError as e:
        raise OperatorFormatError("not CBOR: %s" % e) from e
    if not (
        isinstance(item, list)
        and len(item) == 3
        and item[0] == FORMAT
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
        and isinstance(item[2], bytes)
    ):
        raise OperatorFormatError("expected [%d, node, COSE_Encrypt0]" % FORMAT)
    return item[1], item[2]


def format_key_file(key: bytes, base_iv: bytes) -> str:
    """The text of an operator key file: the key and the base IV in hex, one line."""
    if len(key) != _KEY_LEN or len(base_iv) != _IV_LEN:
        raise OperatorFormatError("an operator key is 32 bytes and its base IV 13")
    return "%s %s\n" % (key.hex(), base_iv.hex())


def read_key_file(path: str) -> tuple[bytes, bytes]:
    """``(key, base_iv)`` from an operator key file; OperatorFormatError naming the file if it is not one."""
    try:
        with open(path, encoding="ascii") as f:
            parts = f.read(200).split()
        if len(parts) != 2:
            raise ValueError("expected two hex fields")
        key, base_iv = bytes.fromhex(parts[0]), bytes.fromhex(parts[1])
    except (OSError, ValueError) as e:
        raise OperatorFormatError("operator key file %s: %s" % (path, e)) from e
    if len(key) != _KEY_LEN or len(base_iv) != _IV_LEN:
        raise OperatorFormatError("operator key file %s: expected a 32-byte key and a 13-byte base IV" % path)
    return key, base_iv
