"""The controller's journal writes every record to the SQLite buffer at once, in the uplink's formats."""

from phasecore import msg
from phasegate.journal import Journal
from phasegate.registry import Incoming, Registry
from phasegate.store import Store
from phaseuplink import records

SITE_KEY = bytes(range(32))
READING = dict(zip(msg.READING_FIELDS, (2314, 7482, 16502, 1234567, 500, 95, 1, 0)))


def _journal(tmp_path):
    reg = Registry(SITE_KEY, [5], tmp_path / "pi-seq.txt", tmp_path / "registry.json")
    store = Store(tmp_path / "buffer.db")
    return Journal(store, reg), store


def _rows(store):
    return store.pending(limit=100)


def test_each_record_is_committed_as_it_happens_with_the_node_identity(tmp_path):
    j, store = _journal(tmp_path)
    j.received(Incoming(5, msg.READING, 41, READING, 0.0), 1_700_000_000)
    rows = _rows(store)
    assert [(r.kind, r.sender, r.seq) for r in rows] == [("reading", records.sender_id(5, 0), 41)]
    # A second handle on the file sees it: committed, not waiting for a round to end.
    with Store(tmp_path / "buffer.db") as other:
        assert len(other) == 1
    assert msg.decode(msg.READING, rows[0].payload) == READING


def test_commands_events_and_summaries_use_the_record_builders(tmp_path):
    j, store = _journal(tmp_path)
    cmd = {"id": 9, "op": msg.OP_MOVE, "deadline_s": 1_700_000_060, "phase": 2, "expect_phase": 1}
    ack = Incoming(5, msg.ACK, 42, {"id": 9, "outcome": msg.ACK_DONE, "phase": 3}, 0.0)
    j.command(cmd, ack, 1_700_000_001)
    j.command(dict(cmd, id=10), None, 1_700_000_002)
    j.pi_event(5, 35, 0, True, 1_700_000_003)  # a move that did not take: an alarm
    j.pi_event(0, 39, 0, False, 1_700_000_004)  # meter fault: an event about the transformer
    j.summary(
        {
            "time_s": 1_700_000_005,
            "period_s": 900,
            "i_dA": [100, 110, 90],
            "cuf_pm": 100,
            "nodes": [1, 0, 0, 0],
            "moves": 1,
        },
        1_700_000_005,
    )
    rows = _rows(store)
    assert [(r.kind, r.sender) for r in rows] == [
        ("ack", records.sender_id(5, 0)),
        ("ack", 0),
        ("alarm", 0),
        ("event", 0),
        ("summary", 0),
    ]
    assert rows[0].seq == 42  # the node's ack keeps the node's sequence number; the Pi's own rows are
    assert len({r.seq for r in rows[1:]}) == 4  # sequenced by the buffer, each distinct
    assert j.stats == {"records": 5, "refused": 0}


def test_a_record_outside_the_schema_is_refused_and_counted_not_raised(tmp_path):
    j, store = _journal(tmp_path)
    j.summary({"time_s": 1, "period_s": 0, "i_dA": [1, 1, 1], "cuf_pm": 0, "nodes": [0, 0, 0, 0], "moves": 0}, 1)
    assert j.stats["refused"] == 1 and len(store) == 0
