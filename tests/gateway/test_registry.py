"""The node registry: opening and classifying frames, liveness on a controlled clock, persistence."""

import json
import logging
import os

import pytest

from phasecore import keys, msg, seal
from phasecore.replay import SequenceCounter
from phasegate.registry import CounterFile, CounterLostError, Registry, RegistryError, load_site_key
from phasekit.sim.bus_nodes import SimNode

SITE_KEY = bytes(range(32))  # synthetic test key


def registry(tmp_path, addrs=(1, 2, 3), **kw):
    return Registry(SITE_KEY, list(addrs), tmp_path / "pi-seq.txt", tmp_path / "registry.json", **kw)


def reading(node, **over):
    fields = dict(
        voltage_dV=2300,
        current_mA=5000,
        power_dW=11000,
        energy_Wh=10,
        frequency_dHz=500,
        pf_centi=95,
        phase=node.phase,
        status=0,
    )
    fields.update(over)
    return seal.seal_raw(msg.READING, msg.encode(msg.READING, fields), node.sender)


def test_liveness_follows_the_age_of_the_last_valid_reading(tmp_path):
    reg = registry(tmp_path, stale_after_s=30, offline_after_s=120)
    node = SimNode(1, SITE_KEY)
    assert reg.update(0.0) == [] and reg.nodes[1].liveness == "offline"
    assert reg.receive(1, node.reading_payload(), 10.0) is not None
    assert reg.update(10.0) == [(1, "offline", "online")]
    assert reg.update(40.0) == []  # 30 s old: still online
    assert reg.update(40.5) == [(1, "online", "stale")]
    assert reg.update(130.0) == []
    assert reg.update(130.5) == [(1, "stale", "offline")]
    reg.receive(1, node.reading_payload(), 131.0)
    assert reg.update(131.0) == [(1, "offline", "online")]
    assert reg.counts(131.0) == [1, 0, 2, 0]


def test_a_refused_frame_does_not_make_a_node_live(tmp_path):
    reg = registry(tmp_path)
    bad = SimNode(2, SITE_KEY, mode="wrong_key")
    assert reg.receive(2, bad.reading_payload(), 1.0) is None
    reg.update(1.0)
    assert reg.nodes[2].liveness == "offline" and reg.nodes[2].counters["bad_tag"] == 1


def test_reading_sets_phase_status_and_lock_out(tmp_path):
    reg = registry(tmp_path)
    node = SimNode(3, SITE_KEY, phase=msg.PHASE_B)
    m = reg.receive(3, reading(node, status=msg.ST_OVERCURRENT | msg.ST_METER_ALARM), 5.0)
    n = reg.nodes[3]
    assert m.body["current_mA"] == 5000 and n.reading == m.body and n.reading_seq == m.seq
    assert n.phase == msg.PHASE_B and n.locked_out and n.switchable
    reg.receive(3, reading(node, status=msg.ST_NOT_SWITCHABLE), 6.0)
    assert not n.locked_out and not n.switchable
    assert reg.counts(6.0) == [1, 0, 2, 0]


def test_every_failure_class_is_counted_and_logged_without_keys(tmp_path, caplog):
    reg = registry(tmp_path, addrs=(1, 2))
    node = SimNode(1, SITE_KEY)
    good = node.reading_payload()
    tampered = bytearray(node.reading_payload())
    tampered[-1] ^= 1
    authentic_bad_body = seal.seal_raw(msg.READING, b"\x83\x01\x02\x03", node.sender)
    node_sends_command = seal.seal_raw(
        msg.COMMAND, msg.encode(msg.COMMAND, {"id": 1, "op": msg.OP_REPORT, "deadline_s": 0}), node.sender
    )
    with caplog.at_level(logging.WARNING, logger="phasegate.registry"):
        assert reg.receive(1, good, 1.0) is not None
        assert reg.receive(1, good, 1.0) is None  # the same bytes again: a duplicate, not an attack
        assert reg.receive(1, bytes(tampered), 1.0) is None
        assert reg.receive(1, b"\xff\x00", 1.0) is None
        assert reg.receive(1, authentic_bad_body, 1.0) is None
        assert reg.receive(1, node_sends_command, 1.0) is None
        assert reg.receive(9, good, 1.0) is None  # an address with no key
    older = node.reading_payload()
    reg.receive(1, node.reading_payload(), 2.0)
    reg.receive(1, good, 2.0)  # replay of an earlier accepted frame (not the last one)
    with caplog.at_level(logging.WARNING, logger="phasegate.registry"):
        assert reg.receive(1, good, 2.0) is None
    c = reg.nodes[1].counters
    assert (c["readings"], c["duplicate"], c["bad_tag"], c["malformed"], c["schema"], c["wrong_kind"]) == (
        2,
        1,
        1,
        1,
        1,
        1,
    )
    assert c["replay"] == 2
    assert reg.counters["unknown_kid"] == 1 and reg.unknown == {9: 1}
    text = caplog.text
    for what in ("bad_tag", "malformed", "schema", "wrong_kind", "replay"):
        assert "node 1: frame refused (%s" % what in text
    assert "link address 9" in text
    nk = keys.NodeKeys.from_site_key(SITE_KEY, 1)
    for secret in (SITE_KEY, nk.node_key, nk.pi_key, nk.common_iv):
        assert secret.hex() not in text
    assert older  # sealed but never delivered: a gap in sequence numbers is fine


def test_incident_logging_is_rate_limited_but_counting_is_not(tmp_path, caplog):
    reg = registry(tmp_path, addrs=(2,), log_burst=3)
    bad = SimNode(2, SITE_KEY, mode="wrong_key")
    with caplog.at_level(logging.WARNING, logger="phasegate.registry"):
        for i in range(50):
            reg.receive(2, bad.reading_payload(), float(i))
        reg.receive(2, bad.reading_payload(), 70.0)
    assert reg.nodes[2].counters["bad_tag"] == 51
    assert caplog.text.count("frame refused (bad_tag") == 4  # 3 in the first minute, 1 in the next
    assert "47 more bad_tag incidents" in caplog.text


def test_pi_counter_never_repeats_across_restarts(tmp_path):
    seqs = []
    for restart in range(4):
        reg = registry(tmp_path, block=8)
        for _ in range(5 + restart):
            env = reg.seal(1, msg.COMMAND, {"id": 1, "op": msg.OP_REPORT, "deadline_s": 1})
            seqs.append(seal.header(env)[1])
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
    # each restart skips the rest of the reserved block, never goes back
    assert CounterFile(tmp_path / "pi-seq.txt").load() > seqs[-1]


def test_nodes_open_what_the_pi_seals_and_the_counter_is_shared(tmp_path):
    reg = registry(tmp_path)
    a, b = SimNode(1, SITE_KEY), SimNode(2, SITE_KEY)
    e1 = reg.seal(1, msg.COMMAND, {"id": 3, "op": msg.OP_MOVE, "deadline_s": 9, "phase": 2})
    e2 = reg.seal(2, msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasegate", "time_s": 1700000000})
    assert a.answer_command(e1) is not None and a.phase == 2
    assert seal.header(e2)[1] == seal.header(e1)[1] + 1
    # a node cannot open what was sealed for another node
    assert b.answer_command(e1) is None and b.command_errors == 1


def test_replay_windows_survive_a_restart(tmp_path):
    node = SimNode(1, SITE_KEY)
    reg = registry(tmp_path)
    old = node.reading_payload()
    assert reg.receive(1, old, 1.0) is not None
    reg.save_state()
    reg2 = registry(tmp_path)
    assert reg2.receive(1, old, 2.0) is None and reg2.nodes[1].counters["replay"] == 1
    assert reg2.receive(1, node.reading_payload(), 3.0) is not None


def test_lost_counter_with_existing_state_refuses_to_start(tmp_path):
    registry(tmp_path)
    os.remove(tmp_path / "pi-seq.txt")
    with pytest.raises(CounterLostError, match="must not start again at 0"):
        registry(tmp_path)


def test_damaged_counter_file_raises_instead_of_restarting(tmp_path):
    registry(tmp_path)
    path = tmp_path / "pi-seq.txt"
    text = path.read_text()
    path.write_text(text.replace(" 256 ", " 257 ") if " 256 " in text else text[:-3] + "00\n")
    with pytest.raises(RegistryError, match="checksum does not match|damaged"):
        registry(tmp_path)
    path.write_text("")
    with pytest.raises(RegistryError, match="not a phasekit counter"):
        registry(tmp_path)


def test_counter_file_keeps_the_sequence_counter_contract(tmp_path):
    cf = CounterFile(tmp_path / "c.txt")
    assert cf.load() is None
    c = SequenceCounter(cf.load, cf.save, block=4)
    assert [c.next() for _ in range(6)] == list(range(6))
    assert cf.load() == 8 and cf.saves == 2
    c2 = SequenceCounter(cf.load, cf.save, block=4)
    assert c2.next() == 8
    assert not os.path.exists(str(tmp_path / "c.txt") + ".tmp")


def test_rekey_gives_fresh_keys_and_old_generation_frames_fail(tmp_path):
    reg = registry(tmp_path)
    old_board = SimNode(2, SITE_KEY, generation=0)
    assert reg.receive(2, old_board.reading_payload(), 1.0) is not None
    reg.rekey(2, 1)
    new_board = SimNode(2, SITE_KEY, generation=1)
    assert reg.receive(2, old_board.reading_payload(), 2.0) is None
    assert reg.nodes[2].counters["bad_tag"] == 1
    # the replacement board's counter starts at 0 again: fine under new keys
    m = reg.receive(2, new_board.reading_payload(), 3.0)
    assert m is not None and m.seq == 0
    with pytest.raises(RegistryError, match="not above"):
        reg.rekey(2, 1)
    # the generation is persisted
    assert json.loads((tmp_path / "registry.json").read_text())["nodes"]["2"]["generation"] == 1
    assert registry(tmp_path).nodes[2].generation == 1


def test_removed_node_keeps_its_generation_when_it_comes_back(tmp_path):
    reg = registry(tmp_path)
    reg.rekey(3, 4)
    reg.remove(3)
    reg2 = registry(tmp_path, addrs=(1, 2))
    assert 3 not in reg2.nodes
    assert reg2.add(3).generation == 4


def test_liveness_thresholds_are_checked(tmp_path):
    with pytest.raises(RegistryError, match="liveness thresholds"):
        registry(tmp_path, stale_after_s=60, offline_after_s=30)


def test_site_key_file(tmp_path):
    p = tmp_path / "site.key"
    p.write_text(SITE_KEY.hex() + "\n")
    p.chmod(0o600)
    assert load_site_key(str(p)) == SITE_KEY
    p.write_text("zz" * 32)
    with pytest.raises(RegistryError, match="not hex"):
        load_site_key(str(p))
    p.write_text("00" * 16)
    with pytest.raises(RegistryError, match="16 bytes, expected 32"):
        load_site_key(str(p))


def test_unknown_node_in_calls_is_a_registry_error(tmp_path):
    reg = registry(tmp_path)
    with pytest.raises(RegistryError, match="node 77 is not in the registry"):
        reg.seal(77, msg.COMMAND, {"id": 1, "op": msg.OP_REPORT, "deadline_s": 1})
