"""phaseuplink.operator: the sealing side shared by the server and ``phasekit operator``, checked against the Pi's gate.

The Pi (``phasegate.operator.OperatorGate``) must accept what the shared
module seals, byte for byte the same as before the move, and the shared
module's own checks (ids, sequence numbers, payload shape, key files) refuse
bad input with ``OperatorFormatError``.
"""

import pytest

from phasecore import cbor, cose, msg
from phasegate import operator as gate_module
from phasegate.operator import OperatorGate, reset_state
from phaseuplink import operator
from phaseuplink.errors import UplinkError
from phaseuplink.operator import OperatorFormatError

SITE_KEY = bytes(range(32))
T_NOW = 1_800_000_000


def _fields(**kw):
    f = {"id": 3, "op": msg.OP_MOVE, "deadline_s": T_NOW + 60, "phase": 1}
    f.update(kw)
    return f


def test_the_gate_opens_what_the_shared_module_seals(tmp_path):
    key, iv = operator.operator_key(SITE_KEY, "server-1")
    payload = operator.seal_command(key, iv, "server-1", 2**33 + 5, "s1", "tx1", 7, _fields())
    reset_state(tmp_path / "ops.json", 0)  # the installer's step (phasekit gateway operator-reset)
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["server-1"], tmp_path / "ops.json", nodes=[7])
    assert gate.open(payload, T_NOW) == (7, _fields())
    node, sealed = operator.split_payload(payload)
    obj = cose.decode(sealed)
    assert node == 7 and obj.uhdr[cose.HDR_KID] == b"server-1"
    assert int.from_bytes(obj.uhdr[cose.HDR_PARTIAL_IV], "big") == 2**33 + 5


def test_the_gate_module_reexports_the_shared_functions():
    assert gate_module.seal_command is operator.seal_command
    assert gate_module.operator_key is operator.operator_key
    assert gate_module.external_aad is operator.external_aad
    assert gate_module.FORMAT == operator.FORMAT == 1


def test_bad_ids_sequences_and_fields_are_refused_with_a_typed_error():
    key, iv = operator.operator_key(SITE_KEY, "ops-1")
    for bad in ("", "x" * 33, "a/b", "ops 1", "é"):
        with pytest.raises(OperatorFormatError):
            operator.check_id(bad)
    for seq in (-1, 2**40, True):
        with pytest.raises(OperatorFormatError, match="sequence number"):
            operator.seal_command(key, iv, "ops-1", seq, "s1", "tx1", 7, _fields())
    with pytest.raises(OperatorFormatError, match="command fields"):
        operator.seal_command(key, iv, "ops-1", 1, "s1", "tx1", 7, _fields(phase=9))
    assert issubclass(OperatorFormatError, UplinkError) and issubclass(OperatorFormatError, ValueError)


def test_split_payload_refuses_anything_but_format_node_envelope():
    for bad in (b"\xff\x00", cbor.dumps([2, 7, b"x"]), cbor.dumps([1, "7", b"x"]), cbor.dumps([1, 7]), b""):
        with pytest.raises(OperatorFormatError):
            operator.split_payload(bad)
    assert operator.split_payload(cbor.dumps([1, 7, b"abc"])) == (7, b"abc")


def test_key_files_round_trip_and_bad_ones_name_the_file(tmp_path):
    key, iv = operator.operator_key(SITE_KEY, "ops-1")
    p = tmp_path / "ops.key"
    p.write_text(operator.format_key_file(key, iv))
    assert operator.read_key_file(str(p)) == (key, iv)
    for text in ("", "zz 00", key.hex() + " " + iv.hex()[:-2], "a b c"):
        p.write_text(text)
        with pytest.raises(OperatorFormatError, match="ops.key"):
            operator.read_key_file(str(p))
    with pytest.raises(OperatorFormatError, match="missing.key"):
        operator.read_key_file(str(tmp_path / "missing.key"))


def test_refusal_reasons_are_the_pis_own_list():
    from phasegate.controller import OPERATOR_REASONS

    assert operator.REFUSAL_REASONS == OPERATOR_REASONS
