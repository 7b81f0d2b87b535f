"""The store-and-forward buffer: order, ack, retention, durability across SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import pytest

from phasegate.store import Store, StoreError


def test_rows_come_back_in_insertion_order_until_acked(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        ids = s.put_many([("reading", "t/r", b"%d" % i, b"n1", i, 1.0) for i in range(10)])
        assert [r.payload for r in s.pending(limit=3)] == [b"0", b"1", b"2"]
        assert s.ack(ids[:3]) == 3
        assert [r.seq for r in s.pending()] == list(range(3, 10))
        assert len(s) == 7


def test_after_id_pages_through_in_flight_rows(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        s.put_many([("event", "t/e", b"x", b"", i, None) for i in range(5)])
        first = s.pending(limit=2)
        nxt = s.pending(limit=10, after_id=first[-1].id)
        assert [r.seq for r in nxt] == [2, 3, 4]


def test_buffer_survives_reopen(tmp_path):
    path = tmp_path / "buf.db"
    with Store(path) as s:
        s.put("summary", "site/t1/summary", b"\xa0", b"pi", 7)
    with Store(path) as s:
        (row,) = s.pending()
        assert (row.kind, row.topic, row.payload, row.sender, row.seq) == (
            "summary",
            "site/t1/summary",
            b"\xa0",
            b"pi",
            7,
        )


def test_full_buffer_drops_least_valuable_oldest_first_and_counts(tmp_path):
    with Store(tmp_path / "buf.db", max_rows=6) as s:
        s.put_many(
            [
                ("event", "e", b"e0", 0, 0, None),
                ("heartbeat", "h", b"h0", 0, 1, None),
                ("reading", "r", b"r0", 0, 2, None),
                ("reading", "r", b"r1", 0, 3, None),
                ("heartbeat", "h", b"h1", 0, 4, None),
                ("summary", "s", b"s0", 0, 5, None),
            ]
        )
        s.put_many(
            [
                ("reading", "r", b"r2", 0, 6, None),
                ("reading", "r", b"r3", 0, 7, None),
                ("reading", "r", b"r4", 0, 8, None),
            ]
        )
        kept = [r.payload for r in s.pending()]
        assert kept == [b"e0", b"r1", b"s0", b"r2", b"r3", b"r4"]
        assert s.dropped() == {"heartbeat": 2, "reading": 1}
        assert len(s) == 6


def test_bad_items_are_refused_and_nothing_is_written(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        with pytest.raises(StoreError, match="unknown kind 'gossip'"):
            s.put_many([("reading", "r", b"ok", b"", 1, None), ("gossip", "g", b"x", b"", 2, None)])
        with pytest.raises(StoreError, match="payload must be bytes"):
            s.put("reading", "r", "text")
        with pytest.raises(StoreError, match="topic"):
            s.put("reading", "", b"x")
        assert len(s) == 0


def test_corrupt_file_gives_store_error(tmp_path):
    path = tmp_path / "buf.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open buffer"):
        Store(path)


WRITER = r"""
import sys
from phasegate.store import Store
s = Store(sys.argv[1])
i = int(sys.argv[2])
while True:
    s.put_many([("reading", "r", b"x" * 40, b"n", i + k, None) for k in range(5)])
    i += 5
    print(i, flush=True)
"""


def test_sigkill_never_loses_a_committed_row_or_corrupts_the_file(tmp_path):
    path = tmp_path / "buf.db"
    committed = 0
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(committed)], stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 0.3 + 0.1 * round_
        last = committed
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line:
                last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with Store(path) as s:
            seqs = [r.seq for r in s.pending(limit=10**9)]
        # Every batch the writer reported committed is there, in order, with no gaps.
        assert seqs[:last] == list(range(last))
        assert seqs == list(range(len(seqs)))
        committed = len(seqs)
    assert committed > 0


def test_pending_by_kind_with_offset_and_rows_before_a_time(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        s.put_many([("reading" if i % 2 else "event", "t", b"%d" % i, 1, i, 100.0 + i) for i in range(10)])
        assert [r.seq for r in s.pending(limit=3, kind="reading")] == [1, 3, 5]
        assert [r.seq for r in s.pending(limit=1, kind="reading", offset=4)] == [9]
        assert s.pending(limit=1, kind="reading", offset=5) == []
        after = s.pending(limit=2, kind="event")[-1].id
        assert [r.seq for r in s.pending(kind="event", after_id=after)] == [4, 6, 8]
        assert [r.seq for r in s.before("reading", 105.0)] == [1, 3]
        assert s.counts() == {"event": 5, "reading": 5}


def test_replace_swaps_rows_sets_state_and_counts_drops_in_one_transaction(tmp_path):
    path = tmp_path / "buf.db"
    with Store(path) as s:
        ids = s.put_many([("reading", "r", b"%d" % i, 7, i, None) for i in range(4)])
        assert s.state("energy:7") is None and s.state("energy:7", -1) == -1
        (new,) = s.replace(
            ids[:3], [("interval", "i", b"agg", 7, 1000, None)], {"energy:7": 123}, dropped={"reading": 1}
        )
        assert [(r.kind, r.seq) for r in s.pending()] == [("reading", 3), ("interval", 1000)]
        assert len(s) == 2 and new > ids[-1]
        with pytest.raises(StoreError, match="unknown kind"):
            s.replace([ids[3]], [("gossip", "g", b"x", 0, None, None)], {"energy:7": 999})
        assert len(s) == 2 and s.state("energy:7") == 123  # refused whole: nothing deleted, state kept
    with Store(path) as s:
        assert s.state("energy:7") == 123 and s.dropped() == {"reading": 1}


def test_senders_are_ints_or_bytes_and_the_pi_is_zero(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        s.put_many(
            [
                ("event", "e", b"x", None, None, None),
                ("event", "e", b"y", 7, 5, None),
                ("event", "e", b"z", b"n7", 6, None),
            ]
        )
        assert [r.sender for r in s.pending()] == [0, 7, b"n7"]
        with pytest.raises(StoreError, match="sender must be"):
            s.put("event", "e", b"x", sender=-1)
        with pytest.raises(StoreError, match="seq must be"):
            s.put("event", "e", b"x", sender=1, seq="3")


def test_supersede_keeps_the_newest_row_of_each_sender(tmp_path):
    with Store(tmp_path / "buf.db") as s:
        s.put_many(
            [("node_heartbeat", "n", b"%d" % i, 1 + i % 3, i, None) for i in range(9)]
            + [("event", "e", b"x", 1, 100, None)]
        )
        assert s.supersede("node_heartbeat") == 6
        assert [(r.sender, r.seq) for r in s.pending(kind="node_heartbeat")] == [(1, 6), (2, 7), (3, 8)]
        assert len(s) == 4 and s.supersede("node_heartbeat") == 0


def _ids(rows):
    return sorted((r.kind, r.sender, r.seq) for r in rows)


def test_a_flooding_node_loses_its_own_rows_never_the_pis_or_other_nodes(tmp_path):
    # The flooder's events claim severity 3 (its own choice): kind "alarm", which must buy nothing.
    from phaseuplink import records

    with Store(tmp_path / "buf.db", max_rows=100) as s:
        pi = [records.summary(1000 + i, _summary()) for i in range(5)]
        pi += [records.event(1000 + i, {"code": 40, "severity": 2}) for i in range(5)]
        pi += [records.pi_heartbeat(1000, {"uptime_s": 1, "fw": "x", "backlog": 0, "dropped": 0})]
        s.put_many(pi)
        honest = []
        for addr in (2, 3, 4, 5):
            honest += [records.reading(addr, seq, 1000, [2300, 1000, 2300, 5, 500, 95, 0, 0]) for seq in range(6)]
        s.put_many(honest)
        before = _ids(s.pending(1000))
        for seq in range(3000):
            s.put_many([records.event(1000, {"code": 99, "severity": 3, "text": "x" * 60}, addr=9, seq=seq)])
        kept = _ids(s.pending(1000))
        assert set(before) <= set(kept), "a Pi record or an honest reading was evicted"
        assert len(s) == 100 and s.sources()[9] == 100 - len(before)
        assert s.dropped() == {"alarm": 3000 - (100 - len(before))}
        # The honest nodes keep writing during the flood: theirs stay, the flooder pays.
        s.put_many([records.reading(2, 100 + i, 1000, [2300, 1000, 2300, 5, 500, 95, 0, 0]) for i in range(10)])
        assert s.sources()[2] == 16 and s.sources()[0] == len(pi)


def _summary():
    return {"time_s": 1, "period_s": 900, "i_dA": [1, 2, 3], "cuf_pm": 1, "nodes": [1, 0, 0, 0], "moves": 0}


def test_fair_share_between_two_heavy_nodes_and_the_pi_last(tmp_path):
    with Store(tmp_path / "buf.db", max_rows=10) as s:
        s.put_many([("reading", "r", b"a", 7, i, 1.0) for i in range(8)])
        s.put_many([("reading", "r", b"b", 8, i, 1.0) for i in range(8)])
        assert s.sources() == {7: 5, 8: 5}
        s.put_many([("summary", "s", b"p", 0, None, 1.0) for _ in range(9)])
        left = s.sources()
        assert left[0] == 9 and sorted(left) in ([0, 7], [0, 8]) and sum(left.values()) == 10
        s.put_many([("heartbeat", "h", b"p", 0, None, 1.0) for _ in range(3)])
        # No node row left to drop: the Pi's own, least valuable and oldest first.
        assert sorted(s.counts().items()) == [("heartbeat", 1), ("summary", 9)]


def test_relayed_frames_weigh_the_same_whatever_their_header_says(tmp_path):
    # A LoRa relay cannot authenticate: a forged frame's header kind must not protect it.
    with Store(tmp_path / "buf.db", max_rows=20) as s:
        s.put_many([("heartbeat", "h", b"pi", 0, None, 1.0)])
        s.put_many([("reading", "r", b"g%d" % i, b"s/t/8", i, 1.0) for i in range(5)])
        s.put_many([("alarm", "a", b"f%d" % i, b"s/t/7", i, 1.0) for i in range(500)])
        assert s.sources() == {0: 1, b"s/t/8": 5, b"s/t/7": 14}
        # Within the flooding source, oldest first: its kinds do not reorder it.
        s.put_many([("reading", "r", b"late", b"s/t/7", 1000, 1.0)])
        assert [r.payload for r in s.pending(100, kind="reading")][-1] == b"late"


def test_dead_letters_are_bounded_rate_limited_and_counted(tmp_path):
    from phasegate import store as store_mod

    with Store(tmp_path / "buf.db") as s:
        for i in range(50):
            s.dead_letter("command", b"\xff" * 100000, "refused " * 1000, t_s=100.0 + i * 0.01)
        rows = s.dead_letters(1000)
        assert len(rows) == store_mod.DEAD_LETTER_BURST and s.dead_counts == {"command": 50}
        assert all(len(r.payload) == 256 and r.size == 100000 and len(r.error) <= 300 for r in rows)
        # A minute later the next one is written and says how many were only counted.
        assert s.dead_letter("command", b"x", "e", t_s=200.0)
        assert s.dead_letters(1)[0].suppressed == 40
        for i in range(3000):
            s.dead_letter("src%d" % i, b"x", "e", t_s=300.0)
        assert len(s.dead_letters(10**6)) == store_mod.DEAD_LETTER_MAX
