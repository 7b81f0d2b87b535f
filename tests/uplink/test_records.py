"""Uplink records: builders, batches (plain and zlib), aggregates, identity, hostile batches."""

import re
import zlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import msg
from phasegate.store import Store
from phaseuplink import records
from phaseuplink.records import RecordError

T = 1767225600  # 2026-01-01T00:00:00Z
READ = {
    "voltage_dV": 2314,
    "current_mA": 7482,
    "power_dW": 16502,
    "energy_Wh": 1234567,
    "frequency_dHz": 500,
    "pf_centi": 95,
    "phase": 1,
    "status": 0,
}
SUMMARY = {
    "time_s": T,
    "period_s": 900,
    "i_dA": [812, 790, 845],
    "i_n_dA": 41,
    "cuf_pm": 34,
    "nodes": [97, 2, 1, 0],
    "moves": 1,
}
COMMAND = {"id": 77, "op": msg.OP_MOVE, "deadline_s": T + 30, "phase": 2, "expect_phase": 1}
ACK = {"id": 77, "outcome": msg.ACK_DONE, "phase": 2}
PAUSE = {"id": 78, "op": msg.OP_PAUSE, "deadline_s": T + 30}  # the Pi's own command (node 0)


def roundtrip(tmp_path, items, **kw):
    """Buffer ``items`` in a real store, batch them per kind, decode; {kind: Batch}."""
    with Store(tmp_path / "buf.db") as store:
        store.put_many(items)
        out = {}
        for kind in records.KINDS:
            rows = store.pending(limit=10000, kind=kind)
            if rows:
                payload, _ = records.encode_batch(rows, **kw)
                out[kind] = records.decode_batch(kind, payload)
        return out


def test_every_builder_round_trips_through_store_and_batch(tmp_path):
    items = [
        records.reading(7, 70000, T + 5, READ),
        records.reading(8, 12, T + 6.9, list(READ.values()), generation=2),
        records.summary(T + 900, SUMMARY),
        records.event(T + 10, {"code": 37, "value": 240, "severity": 1}),
        records.event(T + 11, {"code": 6, "value": 1, "severity": 2}, addr=7, seq=70001),
        records.ack(T + 12, COMMAND, ACK, addr=7, seq=70002),
        records.ack(T + 13, COMMAND),
        records.ack(T + 13, PAUSE, {"id": 78, "outcome": msg.ACK_DONE, "phase": msg.PHASE_NONE}, addr=0),
        records.heartbeat(T + 14, {"uptime_s": 100, "fw": "0.1.0"}, addr=9, seq=5),
        records.pi_heartbeat(T + 15, {"uptime_s": 3600, "fw": "0.1.0", "backlog": 3, "dropped": 0}),
    ]
    got = roundtrip(tmp_path, items)
    assert [(r.src, r.seq, r.t_s, r.body) for r in got["reading"].records] == [
        (7, 70000, T + 5, READ),
        (8 + 2 * 256, 12, T + 6, READ),
    ]
    (s,) = got["summary"].records
    assert s.src == 0 and s.body == SUMMARY and s.t_s == T + 900
    assert got["event"].records[0].body == {"code": 37, "value": 240, "severity": 1}
    assert got["alarm"].records[0][:2] == (7, 70001)
    done, lost, pis = got["ack"].records
    assert done.body == {"command": COMMAND, "ack": ACK} and (done.src, done.seq) == (7, 70002)
    assert lost.body == {"command": COMMAND, "ack": None} and lost.src == 0
    assert pis.body["command"] == PAUSE and pis.body["ack"]["outcome"] == msg.ACK_DONE and pis.src == 0
    (node_hb,), (pi_hb,) = got["node_heartbeat"].records, got["heartbeat"].records
    assert node_hb.body["fw"] == "0.1.0" and node_hb.src == 9 and pi_hb.body["backlog"] == 3 and pi_hb.src == 0
    assert not any(b.errors for b in got.values())


def test_pi_records_are_sequenced_by_the_buffer_and_keep_their_seq(tmp_path):
    import shutil

    with Store(tmp_path / "buf.db") as store:
        ids = store.put_many([records.summary(T, SUMMARY), records.event(T, {"code": 41})])
        first = store.pending()
        assert [r.seq for r in first] == [(store.session << 32) + i for i in ids]
        sent = [records.decode_batch(r.kind, records.encode_batch([r])[0]).records[0].seq for r in first]
        assert sent == [r.seq for r in first]
    shutil.copy(tmp_path / "buf.db", tmp_path / "restored.db")  # a backup, restored later
    with Store(tmp_path / "buf.db") as store:
        assert store.pending() == first  # reopened (a restart): the same rows resend with the same seqs
        (new,) = store.put_many([records.event(T, {"code": 42})])
    with Store(tmp_path / "restored.db") as restored:
        (again,) = restored.put_many([records.event(T, {"code": 43})])
        assert again == new  # the restored file runs its ids again ...
        assert restored.pending()[-1].seq != (store.session << 32) + new  # ... but not its seqs


def test_batch_is_compressed_only_when_that_is_shorter_and_both_forms_decode(tmp_path):
    many = [records.reading(1 + i % 100, 5000 + i, T + i // 100 * 60, READ) for i in range(500)]
    with Store(tmp_path / "buf.db") as store:
        store.put_many(many + [records.summary(T, SUMMARY)])
        rows = store.pending(limit=1000, kind="reading")
        packed, plain_len = records.encode_batch(rows)
        plain, plain_len2 = records.encode_batch(rows, compress=False)
        assert packed[0] == 0x78 and plain[0] == 0x83 and plain_len == plain_len2 == len(plain)
        assert len(packed) < 0.6 * len(plain)
        assert records.decode_batch("reading", packed) == records.decode_batch("reading", plain)
        # Independent decoder: the plain batch is ordinary CBOR.
        version, t0, recs = cbor2.loads(plain)
        assert (version, t0, len(recs)) == (1, T, 500)
        assert recs[0] == [1, 5000, 0, list(READ.values())]
        (small,) = store.pending(kind="summary")
        payload, _ = records.encode_batch([small])
        assert payload[0] == 0x83  # zlib's 6 bytes of framing would not pay off


def test_a_row_that_is_not_cbor_costs_only_itself(tmp_path):
    with Store(tmp_path / "buf.db") as store:
        store.put_many(
            [
                records.reading(1, 1, T, READ),
                ("reading", "reading", b"\xff\x00junk", 2, 9, T),
                records.reading(3, 1, T, READ),
            ]
        )
        batch = records.decode_batch("reading", records.encode_batch(store.pending())[0])
    assert [r.src for r in batch.records] == [1, 3]
    assert len(batch.errors) == 1 and batch.errors[0][0] == 1 and "src 2 seq 9" in batch.errors[0][1]


def test_builders_refuse_bad_identity_and_bad_bodies():
    with pytest.raises(RecordError, match="node address 0 outside"):
        records.reading(0, 1, T, READ)
    with pytest.raises(RecordError, match="generation 70000"):
        records.reading(1, 1, T, READ, generation=70000)
    with pytest.raises(RecordError, match="sequence number -1"):
        records.reading(1, -1, T, READ)
    with pytest.raises(RecordError, match="voltage_dV"):
        records.reading(1, 1, T, dict(READ, voltage_dV=99999))
    with pytest.raises(RecordError, match="record time"):
        records.reading(1, 1, -5, READ)
    with pytest.raises(RecordError, match="needs both addr and seq"):
        records.event(T, {"code": 4}, addr=3)
    with pytest.raises(RecordError, match="summary.*cuf_pm"):
        records.summary(T, dict(SUMMARY, cuf_pm=5000))
    with pytest.raises(RecordError, match="needs the node's addr"):
        records.ack(T, COMMAND, ACK)
    with pytest.raises(RecordError, match="Pi's own ack record is for PAUSE or RESUME"):
        records.ack(T, COMMAND, ACK, addr=0)  # a node's command is answered by the node, not src 0
    with pytest.raises(RecordError, match="Pi heartbeat has no field 'colour'"):
        records.pi_heartbeat(T, {"uptime_s": 1, "fw": "x", "backlog": 0, "dropped": 0, "colour": 1})


def values(**kw):
    r = dict(READ, **kw)
    return [r[f] for f in msg.READING_FIELDS]


def test_aggregate_means_extremes_and_energy_continue_from_the_previous_period():
    rs = [
        (100, values(current_mA=1000, voltage_dV=2300, power_dW=2000, energy_Wh=5000, pf_centi=90)),
        (101, values(current_mA=3001, voltage_dV=2350, power_dW=-500, energy_Wh=5003, pf_centi=95)),
        (103, values(current_mA=2000, voltage_dV=2280, power_dW=1000, energy_Wh=5010, pf_centi=96)),
    ]
    fields, last = records.aggregate(900, rs, prev_energy=4990)
    assert fields == {
        "period_s": 900,
        "n": 3,
        "seq_span": 3,
        "phase": 1,
        "status": 0,
        "i_mean_mA": 2000,
        "i_max_mA": 3001,
        "v_min_dV": 2280,
        "v_max_dV": 2350,
        "de_Wh": 20,
        "pf_mean_centi": 94,
    }
    assert last == 5010
    # Without a previous counter the period counts from its own first reading.
    assert records.aggregate(900, rs)[0]["de_Wh"] == 10
    # The fields are a valid interval record.
    row = records.interval(7, T, fields)
    assert row[4] == row[5] == T  # the seq of an aggregate is its period start
    assert records.decode_body("interval", 7, cbor2.loads(row[2])) == fields


def test_aggregate_energy_wrap_reset_meter_faults_and_moves():
    top = 2**32 - 10
    wrap = [(1, values(energy_Wh=top - 5)), (2, values(energy_Wh=top)), (3, values(energy_Wh=20))]
    assert records.aggregate(60, wrap)[0]["de_Wh"] == 5 + 30
    reset = [(1, values(energy_Wh=90000)), (2, values(energy_Wh=3))]
    assert records.aggregate(60, reset)[0]["de_Wh"] == 3
    faulty = [
        (1, values(phase=0, energy_Wh=100)),
        (2, values(phase=3, status=msg.ST_METER, energy_Wh=0, voltage_dV=0, current_mA=0)),
        (3, values(phase=2, status=msg.ST_SWITCHING, energy_Wh=104)),
    ]
    fields, last = records.aggregate(60, faulty)
    assert (fields["n"], fields["n_bad"], fields["phase"], fields["phase_first"]) == (3, 1, 2, 0)
    assert fields["v_min_dV"] == READ["voltage_dV"] and fields["de_Wh"] == 4 and last == 104
    assert fields["status"] == msg.ST_METER | msg.ST_SWITCHING
    dead = [(5, values(status=msg.ST_METER, energy_Wh=0))]
    fields, last = records.aggregate(60, dead, prev_energy=77)
    assert "i_mean_mA" not in fields and fields["n_bad"] == 1 and last == 77
    records.interval(4, T, fields)  # measurements absent together: valid
    assert records.aggregate(60, [(1, values(current_mA=5)), (2, values(current_mA=10))])[0]["i_mean_mA"] == 8


def test_interval_body_rules():
    ok, _ = records.aggregate(60, [(1, values()), (2, values())])
    with pytest.raises(RecordError, match="all together"):
        records.interval(1, T, {k: v for k, v in ok.items() if k != "de_Wh"})
    with pytest.raises(RecordError, match="mean current above its max"):
        records.interval(1, T, dict(ok, i_mean_mA=ok["i_max_mA"] + 1))
    with pytest.raises(RecordError, match="exceeds seq_span"):
        records.interval(1, T, dict(ok, seq_span=0))
    with pytest.raises(RecordError, match="not a node"):
        records.interval(0, T, ok)


def test_structural_batch_errors_are_record_errors():
    good = records.reading(1, 1, T, READ)
    with pytest.raises(RecordError, match="unknown record kind"):
        records.decode_batch("gossip", b"\x84")
    with pytest.raises(RecordError, match="empty batch"):
        records.decode_batch("reading", b"")
    with pytest.raises(RecordError, match="version 2"):
        records.decode_batch("reading", cbor2.dumps([2, T, [[1, 1, 0, list(READ.values())]]]))
    with pytest.raises(RecordError, match="holds no records"):
        records.decode_batch("reading", cbor2.dumps([1, T, []]))
    bomb = zlib.compress(b"\x00" * (records.MAX_BATCH_PLAIN + 10), 9)
    with pytest.raises(RecordError, match="inflates beyond"):
        records.decode_batch("reading", bomb)
    packed = zlib.compress(cbor2.dumps([1, T, [[1, 1, 0, cbor2.loads(good[2])]]]))
    with pytest.raises(RecordError, match="truncated"):
        records.decode_batch("reading", packed[:-3])
    # A reading claiming to be from the Pi, a record with a negative dt: refused one by one.
    b = records.decode_batch(
        "reading",
        cbor2.dumps(
            [1, T, [[0, 1, 0, cbor2.loads(good[2])], [1, 2, -1, cbor2.loads(good[2])], [1, 3, 0, cbor2.loads(good[2])]]]
        ),
    )
    assert [r.seq for r in b.records] == [3] and [i for i, _ in b.errors] == [0, 1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(records.KINDS))
def test_hostile_bytes_raise_only_record_error(data, kind):
    for payload in (data, zlib.compress(data)):
        try:
            records.decode_batch(kind, payload)
        except RecordError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_batches_raise_only_record_error(data):
    kind, body = data.draw(
        st.sampled_from(
            [
                ("reading", [[1, 10, 0, list(READ.values())], [2, 11, 60, list(READ.values())]]),
                (
                    "ack",
                    [
                        [2, 3, 0, cbor2.loads(records.ack(T, COMMAND, ACK, addr=2, seq=3)[2])],
                        [0, 9, 5, cbor2.loads(records.ack(T, COMMAND)[2])],
                    ],
                ),
            ]
        )
    )
    plain = bytearray(cbor2.dumps([1, T, body]))
    for _ in range(data.draw(st.integers(1, 4))):
        plain[data.draw(st.integers(0, len(plain) - 1))] = data.draw(st.integers(0, 255))
    try:
        b = records.decode_batch(kind, bytes(plain))
        assert len(b.records) + len(b.errors) >= 1
    except RecordError:
        pass


def test_docs_list_every_kind_and_key_as_the_code_has_them():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "uplink.md").read_text()
    for kind in records.KINDS:
        assert "phasekit/<site>/<transformer>/%s " % kind in doc, kind
    for spec in (records.INTERVAL_KEYS, records.PI_HEARTBEAT_KEYS):
        for key, name, _, _, required, _ in spec:
            row = re.search(r"^\| %d \| %s \| ([RO]) \|" % (key, name), doc, re.M)
            assert row, "docs/uplink.md has no row for key %d %s" % (key, name)
            assert row.group(1) == ("R" if required else "O"), name
