"""The Store on both engines (every test here runs on SQLite and on a real PostgreSQL 15).

What the ingest writes (typed columns, each record once, duplicates counted),
what the pages ask (fleet, nodes, series at every resolution, moves, CSV),
tenancy in SQL, roll-ups, retention per level, migrations.
"""

import csv
import io
import time

import pytest

from phasekit.testing.batches import SAMPLE_SUMMARY, readings
from phaseserver.clock import Clock
from phaseserver.errors import StorageError
from phaseserver.store import open_store
from phaseserver.store.migrate import applied, migrate, migrations
from phaseuplink import records

DAY = 86400


def recs(items, kind):
    """Records as the ingest core hands them to the store (decoded, validated)."""
    out = []
    for i, (k, _t, payload, src, seq, t_s) in enumerate(items):
        assert k == kind
        from phasecore import cbor

        out.append(
            records.Record(
                src,
                (1 << 32) + i if seq is None else seq,
                int(t_s),
                records.decode_body(kind, src, cbor.loads(payload)),
            )
        )
    return out


def day0():
    t = int(time.time()) - 5 * DAY
    return t - t % DAY


def test_readings_are_stored_once_in_typed_columns(store):
    t0 = day0()
    batch = recs(readings(10, t0, 6), "reading")
    assert store.add_batch("s1", "t1", "reading", batch, t0 + 400) == (60, 0)
    assert store.add_batch("s1", "t1", "reading", batch, t0 + 500) == (0, 60)
    assert store.add_batch("s1", "t1", "reading", batch[:10] + batch[:10], t0 + 600) == (0, 20)
    # Another transformer with the same (src, seq, t) is not a copy.
    assert store.add_batch("s1", "t2", "reading", batch[:5], t0 + 600) == (5, 0)
    rows = store.readings(None, "s1", "t1", t0, t0 + DAY)
    assert len(rows) == 60
    r = batch[0]
    first = [x for x in rows if x[1] == r.src and x[2] == r.seq][0]
    b = r.body
    assert first[3:] == (b["voltage_dV"], b["current_mA"], b["power_dW"], b["energy_Wh"], b["frequency_dHz"],
                         b["pf_centi"], b["phase"], b["status"])  # fmt: skip
    assert all(type(v) is int for v in first)
    assert store.counters(None, "s1", "t1") == {"batches": 3, "duplicates": 80, "records": 60}
    assert store.count_rows("reading") == 65


def test_every_kind_lands_in_its_table_and_registry(store):
    t0 = day0()
    store.add_batch("s1", "t1", "summary", recs([records.summary(t0, dict(SAMPLE_SUMMARY, time_s=t0))], "summary"), t0)
    ev = recs([records.event(t0 + 5, {"code": 41, "value": 7, "severity": 1}, addr=3, seq=9)], "event")
    al = recs([records.event(t0 + 6, {"code": 50, "severity": 3})], "alarm")
    cmd = {"id": 5, "op": 1, "deadline_s": t0 + 60, "phase": 2, "expect_phase": 0}
    ack = recs([records.ack(t0 + 7, cmd, {"id": 5, "outcome": 0, "phase": 2}, addr=3, seq=10)], "ack")
    hb = recs([records.pi_heartbeat(t0 + 8, {"uptime_s": 10, "fw": "0.1.0", "backlog": 42, "dropped": 0})], "heartbeat")
    nhb = recs([records.heartbeat(t0 + 9, {"uptime_s": 3, "fw": "node-1.2"}, addr=3, seq=11)], "node_heartbeat")
    agg, _ = records.aggregate(
        900, [(1, [2300, 1500, 3000, 100, 500, 95, 1, 0]), (2, [2310, 2500, 5000, 101, 500, 95, 1, 0])]
    )
    iv = recs([records.interval(4, t0, agg)], "interval")
    for kind, batch in (("event", ev), ("alarm", al), ("ack", ack), ("heartbeat", hb), ("node_heartbeat", nhb),
                        ("interval", iv)):  # fmt: skip
        assert store.add_batch("s1", "t1", kind, batch, t0 + 10) == (1, 0), kind
    assert store.count_rows("summary") == 1 and store.count_rows("aggregate") == 1 and store.count_rows("record") == 5
    (e,) = store.records(None, "s1", "t1", "event")
    assert e["body"] == {"code": 41, "value": 7, "severity": 1} and e["src"] == 3
    (mv,) = store.moves(None, "s1", "t1", t0, t0 + DAY)
    assert (mv["node"], mv["to_phase"], mv["outcome"], mv["phase_after"]) == (3, 2, 0, 2)
    (tx,) = store.fleet(None)
    assert (tx.site, tx.transformer, tx.fw, tx.backlog, tx.tenant_id) == ("s1", "t1", "0.1.0", 42, "unassigned")
    nodes = {n.addr: n for n in store.nodes(None, "s1", "t1")}
    assert nodes[3].fw == "node-1.2" and nodes[4].phase == 1 and set(nodes) == {3, 4}
    row = store.db.fetchone("SELECT i_a_da, i_b_da, i_c_da, cuf_pm, moves FROM summary")
    assert tuple(row) == (812, 790, 845, 34, 1)


def test_tenancy_is_enforced_in_sql_and_a_site_can_be_moved(store):
    t0 = day0()
    batch = recs(readings(3, t0, 2), "reading")
    store.add_batch("s1", "t1", "reading", batch, t0 + 200)
    store.add_batch("s2", "t9", "reading", batch, t0 + 200)
    store.db.execute("INSERT INTO tenant (id, name, created_s) VALUES ('acme', 'Acme Power', 0)")
    store.db.execute("INSERT INTO tenant (id, name, created_s) VALUES ('other', 'Other', 0)")
    assert store.fleet("acme") == [] and len(store.fleet(None)) == 2 and len(store.fleet("unassigned")) == 2
    assert store.assign_site("s1", "acme") > 0
    assert [r.site for r in store.fleet("acme")] == ["s1"]
    assert [r.site for r in store.fleet("unassigned")] == ["s2"]
    assert len(store.readings("acme", "s1", "t1", t0, t0 + DAY)) == 6
    assert store.readings("other", "s1", "t1", t0, t0 + DAY) == []  # another tenant sees nothing
    assert store.nodes("other", "s1", "t1") == [] and len(store.nodes("acme", "s1", "t1")) == 3
    assert store.series("other", "s1", "t1", t0, t0 + DAY) == []
    assert store.transformer("other", "s1", "t1") is None and store.transformer("acme", "s1", "t1") is not None
    # New data of a moved site arrives under its new tenant.
    more = recs(readings(3, t0 + 600, 1, seq0=5000), "reading")
    store.add_batch("s1", "t1", "reading", more, t0 + 700)
    assert store.db.scalar("SELECT COUNT(*) FROM reading WHERE site = 's1' AND tenant_id = 'acme'") == 9
    with pytest.raises(StorageError, match="no tenant"):
        store.assign_site("s1", "nobody")


def test_the_series_and_its_rollups_agree(store):
    t0 = day0()
    items = readings(30, t0, 180)  # three hours of 30 nodes
    for i in range(0, len(items), 900):
        store.add_batch("s1", "t1", "reading", recs(items[i : i + 900], "reading"), t0 + 3 * 3600)
    minute = store.series(None, "s1", "t1", t0, t0 + 3 * 3600, 60)
    assert len(minute) == 180 and all(p.minutes == 1 for p in minute)
    # The minute's phase current is the sum of that phase's node currents.
    first = [it for it in items[:30]]
    i_a = sum(records.decode_body("reading", it[3], __import__("phasecore").cbor.loads(it[2]))["current_mA"]
              for it in first if it[3] % 3 == 0) / 1000.0  # fmt: skip
    assert minute[0].i_a == pytest.approx(i_a, abs=0.002)
    assert all(p.i_n >= 0 and 0 <= p.cuf < 2 for p in minute)
    fifteen = store.series(None, "s1", "t1", t0, t0 + 3 * 3600, 900)
    assert len(fifteen) == 12 and fifteen[0].i_a == pytest.approx(sum(p.i_a for p in minute[:15]) / 15, rel=1e-9)
    assert store.series(None, "s1", "t1", t0, t0 + 3 * 3600, 3600) == []  # not rolled up yet
    assert store.rollup() == 3
    assert store.rollup() == 0  # nothing new
    hourly = store.series(None, "s1", "t1", t0, t0 + 3 * 3600, 3600)
    assert len(hourly) == 3
    for h, p in enumerate(hourly):
        sixty = minute[60 * h : 60 * h + 60]
        assert p.minutes == 60
        assert p.i_a == pytest.approx(sum(q.i_a for q in sixty) / 60, abs=0.001)
        assert p.i_n == pytest.approx(sum(q.i_n for q in sixty) / 60, abs=0.002)
        assert p.cuf == pytest.approx(sum(q.cuf for q in sixty) / 60, abs=0.001)
        assert p.i_max == pytest.approx(max(max(q.i_a, q.i_b, q.i_c) for q in sixty), abs=0.001)
    (daily,) = store.series(None, "s1", "t1", t0, t0 + DAY, DAY)
    assert daily.minutes == 180 and daily.i_b == pytest.approx(sum(p.i_b for p in hourly) / 3, abs=0.002)
    nodes = store.db.fetchall("SELECT src, n, i_sum_ma FROM rollup_node_hour WHERE t_s = ? ORDER BY src", (t0,))
    assert len(nodes) == 30 and all(n == 60 for _, n, _ in nodes)
    assert store.count_rows("rollup_node_day") == 30 and store.count_rows("rollup_phase_hour") == 9
    # A late batch into a rolled-up hour marks it again; the rebuild includes it.
    late = recs(readings(1, t0 + 30 * 60, 1, seq0=90000), "reading")
    store.add_batch("s1", "t1", "reading", late, t0 + DAY)
    assert store.rollup() == 1
    assert store.db.scalar("SELECT n FROM rollup_node_hour WHERE t_s = ? AND src = 1", (t0,)) == 61


def test_csv_export(store):
    t0 = day0()
    store.add_batch("s1", "t1", "reading", recs(readings(2, t0, 3), "reading"), t0 + 300)
    text = "".join(store.export_csv(None, "s1", "t1", t0, t0 + DAY))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["t_s", "src", "seq"] and len(rows) == 7
    text = "".join(store.export_csv(None, "s1", "t1", t0, t0 + DAY, "series"))
    assert text.splitlines()[0] == "t_s,i_a_A,i_b_A,i_c_A,i_n_A,cuf" and len(text.splitlines()) == 4
    assert "".join(store.export_csv("other", "s1", "t1", t0, t0 + DAY)).count("\n") == 1  # header only
    with pytest.raises(StorageError):
        list(store.export_csv(None, "s1", "t1", t0, t0 + DAY, "everything"))


def test_retention_drops_each_level_by_its_own_age(engine, server_config):
    store = open_store(server_config(engine, storage={"retention_raw_days": 3, "retention_hourly_days": 10,
                                                     "retention_daily_days": 400}))  # fmt: skip
    try:
        now = int(time.time())
        today = now - now % DAY
        for age in (1, 5, 20):
            store.add_batch(
                "s1", "t1", "reading", recs(readings(2, today - age * DAY, 2, seq0=age * 100), "reading"), now
            )
        store.rollup()
        assert store.count_rows("reading") == 12 and store.count_rows("rollup_node_hour") == 6
        dropped = store.retention(now)
        assert dropped["raw"] > 0 and dropped["hourly"] > 0 and dropped["daily"] == 0
        ages = sorted({(today - t) // DAY for (t,) in store.db.fetchall("SELECT t_s - t_s % 86400 FROM reading")})
        assert ages == [1]
        hour_ages = sorted({(today - t) // DAY for (t,) in store.db.fetchall("SELECT t_s FROM rollup_node_hour")})
        assert hour_ages == [1, 5]
        assert store.count_rows("rollup_node_day") == 6  # daily roll-ups kept 400 days
        if engine == "postgres":
            names = [p[0] for p in store.partitions("reading")]
            assert all(
                int(n.rsplit("_p", 1)[1]) >= int(time.strftime("%Y%m%d", time.gmtime(today - 3 * DAY))) for n in names
            )
            assert any(n.endswith(time.strftime("%Y%m%d", time.gmtime(today + DAY))) for n in names)  # made ahead
    finally:
        store.close()


def test_dead_letters_are_kept_bounded_and_listed_newest_first(engine, server_config):
    store = open_store(server_config(engine, storage={"dead_letter_max_rows": 100}))
    try:
        for i in range(130):
            store.dead_letter("phasekit/s1/t1/reading", b"\x00" * 10, "reason %d" % i, 1000.0 + i, 5000)
        assert store.prune_dead_letters() == 30
        rows = store.dead_letters(None, limit=3)
        assert [r.reason for r in rows] == ["reason 129", "reason 128", "reason 127"]
        assert rows[0].payload_len == 5000 and rows[0].payload_prefix == b"\x00" * 10 and rows[0].kind == "reading"
        assert [r.reason for r in store.dead_letters(None, limit=2, before_id=rows[2].id)] == [
            "reason 126",
            "reason 125",
        ]
        assert store.dead_letters("acme") == []
    finally:
        store.close()


def test_migrations_are_recorded_idempotent_and_refuse_a_newer_database(store):
    versions = [m.version for m in migrations(store.engine)]
    assert versions[0] == 1 and versions == sorted(versions)
    assert set(applied(store.db)) == set(versions)
    assert store.migrate() == []
    store.db.execute("INSERT INTO schema_migration (version, name, applied_s) VALUES (9999, 'future', 0)")
    with pytest.raises(StorageError, match="newer"):
        migrate(store.db, Clock())


def test_a_migration_that_fails_leaves_nothing_behind(store, tmp_path):
    folder = tmp_path / "mig"
    (folder / store.engine).mkdir(parents=True)
    for step in migrations(store.engine):  # every real step (the store has them all), then a broken one
        (folder / store.engine / step.path.name).write_text(step.path.read_text())
    (folder / store.engine / "0999_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    with pytest.raises(StorageError, match="0999_broken"):
        migrate(store.db, Clock(), folder)
    assert 999 not in applied(store.db)
    with pytest.raises(StorageError):
        store.db.execute("SELECT * FROM half_done")
