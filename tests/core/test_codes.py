"""phasecore.codes (both interpreters): one table of wire codes, each number with its one name.

Every constant is checked against its table by name, so a code added to one
and not the other, or a table that drifts from the constants, fails here; and
phasecore.msg's names are the same objects, not copies.
"""

from phasecore import codes, msg


def test_phases_are_the_wire_numbering_with_letter_names():
    assert (codes.PHASE_A, codes.PHASE_B, codes.PHASE_C, codes.PHASE_NONE) == (0, 1, 2, 3)
    assert codes.PHASE_NAMES == ("A", "B", "C", "-")
    for p, name in enumerate(codes.PHASE_NAMES[:3]):
        assert getattr(codes, "PHASE_" + name) == p


def test_every_named_table_matches_its_constants():
    for i, name in enumerate(codes.KIND_NAMES):
        assert getattr(codes, name.upper()) == i, name
    for op, name in codes.OP_NAMES.items():
        assert getattr(codes, "OP_" + name) == op, name
    assert 0 not in codes.OP_NAMES, "op 0 must stay unknown to the schema"
    for i, name in enumerate(codes.OUTCOME_NAMES):
        assert getattr(codes, "ACK_" + name) == i, name
    for i, name in enumerate(codes.REASON_NAMES):
        assert getattr(codes, "R_" + name) == i, name
    for code, name in codes.EVENT_NAMES.items():
        assert getattr(codes, "EV_" + name) == code, name
    for i, name in enumerate(codes.STATUS_BITS):
        assert getattr(codes, "ST_" + name) == 1 << i, name
    assert len(set(codes.REASON_NAMES)) == len(codes.REASON_NAMES)
    assert len(set(codes.EVENT_NAMES.values())) == len(codes.EVENT_NAMES)


def test_reason_and_event_ranges_belong_to_their_tier():
    assert codes.RELAY_REASONS == 12 and codes.REASON_NAMES[codes.RELAY_REASONS - 1] == "CONDITION_ACTIVE"
    assert codes.R_DEADLINE_PASSED == codes.RELAY_REASONS and len(codes.REASON_NAMES) == 17
    relay = [c for c in codes.EVENT_NAMES if c < 16]
    node = [c for c in codes.EVENT_NAMES if 16 <= c < 32]
    pi = [c for c in codes.EVENT_NAMES if c >= 32]
    assert sorted(relay) == list(range(1, 11))
    assert sorted(node) == list(range(16, 25)) + list(range(28, 32))  # 28-31: firmware updates
    assert sorted(c for c in pi if c < 60) == list(range(32, 49)) + [56, 57, 58]  # 56-58: roll-outs
    assert sorted(c for c in pi if 60 <= c < 65) == list(range(60, 65))  # the plausibility guard and verification
    assert sorted(c for c in pi if c >= 65) == [65, 66]  # the balancer paused and resumed by an operator


def test_ota_codes_have_their_own_ranges_and_names():
    assert codes.KIND_NAMES[6:] == ("ota_data", "ota_status") and (codes.OTA_DATA, codes.OTA_STATUS) == (6, 7)
    assert codes.OP_NAMES[codes.OP_OTA] == "OTA" and codes.OP_OTA == 6
    for action, name in codes.OTA_ACTIONS.items():
        assert getattr(codes, "OTA_" + name) == action, name
    for code, name in codes.OTA_REASON_NAMES.items():
        assert getattr(codes, "R_" + name) == code and 32 <= code < 48, name
    for i, name in enumerate(codes.OTA_STATE_NAMES):
        assert getattr(codes, "OTA_" + name) == i, name
    for i, name in enumerate(codes.ROLLBACK_NAMES[1:]):
        assert getattr(codes, "RB_" + name) == i + 1, name
    # The command handler's reasons (REASON_NAMES, by index) and the update's never share a number.
    assert not set(codes.OTA_REASON_NAMES) & set(range(len(codes.REASON_NAMES)))


def test_pause_and_resume_are_the_next_ops_and_the_schema_takes_them_bare():
    assert (codes.OP_PAUSE, codes.OP_RESUME) == (7, 8) and codes.OP_OTA == 6
    assert sorted(codes.OP_NAMES) == list(range(1, 9))
    assert codes.EVENT_NAMES[codes.EV_BALANCER_PAUSED] == "BALANCER_PAUSED"
    assert codes.EVENT_NAMES[codes.EV_BALANCER_RESUMED] == "BALANCER_RESUMED"
    for op in (codes.OP_PAUSE, codes.OP_RESUME):
        fields = {"id": 1, "op": op, "deadline_s": 1000}
        assert msg.decode(msg.COMMAND, msg.encode(msg.COMMAND, fields)) == fields
        for extra in ({"phase": 1}, {"reason": 1}, {"i_max_mA": 1000}, {"ota": 1}):
            try:
                bad = dict(fields)
                bad.update(extra)
                msg.encode(msg.COMMAND, bad)
            except ValueError:
                continue
            raise AssertionError("%s accepted with %s" % (codes.OP_NAMES[op], extra))


def test_quarantine_reasons_and_plausibility_checks_are_named_once():
    for i, name in enumerate(codes.QUARANTINE_REASONS):
        assert getattr(codes, "Q_" + name) == i, name
    assert len(set(codes.QUARANTINE_REASONS)) == len(codes.QUARANTINE_REASONS)
    assert len(set(codes.PLAUSIBILITY_CHECKS)) == len(codes.PLAUSIBILITY_CHECKS) == 7


def test_lock_bits_are_status_bits_0_to_5():
    locks = (
        codes.LOCK_OVERCURRENT,
        codes.LOCK_METER,
        codes.LOCK_OVERVOLTAGE,
        codes.LOCK_UNDERVOLTAGE,
        codes.LOCK_RELAY_FAULT,
        codes.LOCK_STATE_LOST,
    )
    assert locks == (
        codes.ST_OVERCURRENT,
        codes.ST_METER,
        codes.ST_OVERVOLTAGE,
        codes.ST_UNDERVOLTAGE,
        codes.ST_RELAY_FAULT,
        codes.ST_STATE_LOST,
    )
    assert locks == tuple(1 << i for i in range(6))
    assert codes.LOCK_ALL == 0x3F and codes.ST_LOCKED_MASK == codes.LOCK_ALL | codes.ST_OPERATOR_LOCK


def test_msg_names_are_the_codes_tables_not_copies():
    for name in ("KIND_NAMES", "OP_NAMES", "OUTCOME_NAMES", "REASON_NAMES", "EVENT_NAMES", "STATUS_BITS"):
        assert getattr(msg, name) is getattr(codes, name), name
    for name in (
        "READING",
        "EVENT",
        "PHASE_A",
        "PHASE_NONE",
        "OP_MOVE",
        "OP_PAUSE",
        "OP_RESUME",
        "ACK_UNSUPPORTED",
        "ST_LOCKED_MASK",
        "ST_NOT_SWITCHABLE",
    ):
        assert getattr(msg, name) == getattr(codes, name), name
