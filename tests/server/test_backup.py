"""Backup and restore on both stores: the restored store serves the same data to the same queries.

SQLite: the online backup API while a writer keeps going, then restore over
the live file's place (server stopped). PostgreSQL: pg_dump -Fc while a writer
keeps going, pg_restore into a new database; a database that already has the
schema is refused.
"""

import threading
import time

import pytest

from phasekit.testing.batches import readings
from phaseserver import cli
from phaseserver import config as config_mod
from phaseserver.store import open_store
from phaseuplink import records

DAY = 86400


def recs(items):
    from phasecore import cbor

    return [records.Record(src, seq, int(t), records.decode_body("reading", src, cbor.loads(p)))
            for _k, _t, p, src, seq, t in items]  # fmt: skip


def snapshot(store, t0):
    return (
        store.readings(None, "s1", "t1", t0, t0 + DAY),
        store.series(None, "s1", "t1", t0, t0 + DAY, 60),
        store.series(None, "s1", "t1", t0, t0 + DAY, 3600),
        store.nodes(None, "s1", "t1"),
        store.counters(None, "s1", "t1"),
    )


def test_backup_while_ingesting_then_restore_serves_the_same_data(engine, server_config, tmp_path, pg, capsys):
    cfg = server_config(engine)
    store = open_store(cfg)
    t0 = int(time.time()) - 3 * DAY
    t0 -= t0 % DAY
    store.add_batch("s1", "t1", "reading", recs(readings(20, t0, 120)), t0 + 8000)
    store.rollup()
    before = snapshot(store, t0)
    # A writer keeps going (another transformer) while the backup runs: the copy is one consistent moment.
    writer_store = open_store(cfg)
    stop = threading.Event()

    def write():
        k = 0
        while not stop.is_set():
            writer_store.add_batch("s1", "t2", "reading", recs(readings(5, t0 + 60 * k, 1, seq0=k)), t0)
            k += 1

    th = threading.Thread(target=write, daemon=True)
    th.start()
    time.sleep(0.2)
    out = tmp_path / ("backup.%s" % ("db" if engine == "sqlite" else "dump"))
    assert cli.main(["backup", "--config", str(cfg.path), str(out)]) == 0
    stop.set()
    th.join(10)
    writer_store.close()
    assert out.stat().st_size > 10000
    if engine == "sqlite":
        store.close()
        db_path = cfg.resolve(cfg.table("storage")["path"])
        db_path.write_bytes(b"garbage: the disk died")  # the live database is lost
        assert cli.main(["restore", "--config", str(cfg.path), str(out)]) == 0
        restored_cfg = cfg
    else:
        store.close()
        dsn = pg.create_database("restored_%d" % (int(time.time() * 1000) % 10**8))
        text = cfg.path.read_text().replace(cfg.table("storage")["dsn"], dsn)
        (tmp_path / "restored.toml").write_text(text)
        restored_cfg = config_mod.load(tmp_path / "restored.toml")
        assert cli.main(["restore", "--config", str(restored_cfg.path), str(out)]) == 0
        # Restoring again over a database that has the schema is refused, not merged.
        assert cli.main(["restore", "--config", str(restored_cfg.path), str(out)]) == 1
        assert "not empty" in capsys.readouterr().err
    restored = open_store(restored_cfg)
    try:
        assert snapshot(restored, t0) == before
        assert restored.migrate() == []  # the schema came along, recorded
        n = restored.count_rows("reading", "s1", "t2")
        assert n % 5 == 0  # whole batches of the concurrent writer, never half of one
        assert restored.counters(None, "s1", "t2").get("records", 0) == n  # rows and counters of one moment
        # The restored store goes on ingesting.
        assert restored.add_batch("s1", "t1", "reading", recs(readings(2, t0 + 9000, 1, seq0=77)), t0)[0] == 2
    finally:
        restored.close()


def test_a_damaged_sqlite_backup_is_refused_and_nothing_is_replaced(server_config, tmp_path):
    cfg = server_config("sqlite")
    open_store(cfg).close()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    db_path = cfg.resolve(cfg.table("storage")["path"])
    before = db_path.read_bytes()
    assert cli.main(["restore", "--config", str(cfg.path), str(bad)]) == 1
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("engine", ["sqlite"])
def test_backup_command_needs_a_config(engine, tmp_path, capsys):
    assert cli.main(["backup", "--config", str(tmp_path / "missing.toml"), str(tmp_path / "x")]) == 2
    assert "cannot read" in capsys.readouterr().err
