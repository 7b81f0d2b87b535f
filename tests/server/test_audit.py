"""The tamper-evident audit log on both engines: append-only, hash-chained, signed heads, and verify finding tampering.

Tampering is done the way an attacker with the database would do it: around
the append-only triggers (dropped on SQLite, disabled on PostgreSQL as its
superuser), then an edited row, a deleted row, a truncated tail, a chain
rewritten from an edit on, and a forged head. ``verify`` must find each and
name the first broken entry; ``phasekit server audit verify`` must exit 1
saying so.
"""

import itertools
import subprocess
import sys
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phaseserver import audit
from phaseserver.errors import AuditError, StorageError
from phaseserver.store.db import Database
from phaseserver.store.migrate import migrate
from server_support import make_config

KEY = Ed25519PrivateKey.generate()
_NAMES = itertools.count(int(time.time()) % 10**6 * 100)
T = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        d = Database.sqlite(str(tmp_path / "audit.db"))
    else:
        pg = request.getfixturevalue("pg")
        name = "audit_%d" % next(_NAMES)
        d = Database.postgres(pg.create_database(name))
    migrate(d)
    yield d
    d.close()


def _fill(db, n=10, t0=T):
    out = []
    for i in range(1, n + 1):
        with db.transaction():
            out.append(
                audit.record(
                    db, "user:alice", "t1" if i % 3 else "t2", "alarm.ack", "alarm:%d" % (i % 4),
                    {"state": "raised"}, {"state": "acknowledged", "comment": "é%d" % i}, "10.0.0.%d" % i,
                    now=t0 + i,
                )
            )  # fmt: skip
    return out


def _untrigger(db):
    """What an attacker with the database does first: remove the append-only guard."""
    if db.engine == "sqlite":
        for t in ("audit_log_no_update", "audit_log_no_delete", "audit_head_no_update", "audit_head_no_delete"):
            db.execute("DROP TRIGGER %s" % t)
    else:
        db.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        db.execute("ALTER TABLE audit_head DISABLE TRIGGER USER")


def test_entries_chain_and_verify_with_signed_heads(db, tmp_path):
    entries = _fill(db)
    assert [e.seq for e in entries] == list(range(1, 11))
    assert entries[0].prev_hash == "00" * 32 and entries[1].prev_hash == entries[0].hash
    heads = tmp_path / "heads.jsonl"
    head = audit.sign_head(db, KEY, str(heads), now=T + 100)
    assert head["seq"] == 10 and audit.sign_head(db, KEY, str(heads), now=T + 101) is None  # nothing new
    rep = audit.verify(db, KEY.public_key(), str(heads))
    assert rep.ok and rep.entries == 10 and rep.heads == 2, rep.summary()
    assert "intact" in rep.summary()
    # The stored state is the canonical JSON text; the API shows it decoded.
    assert entries[0].after == '{"comment":"é1","state":"acknowledged"}'
    assert entries[0].public()["after"] == {"state": "acknowledged", "comment": "é1"}


def test_the_database_refuses_update_and_delete(db):
    _fill(db, 3)
    for sql in ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 3"):
        with pytest.raises(StorageError, match="append-only"):
            db.execute(sql)
    audit.sign_head(db, KEY, None, now=T)
    with pytest.raises(StorageError, match="append-only"):
        db.execute("DELETE FROM audit_head")
    if db.engine == "postgres":
        with pytest.raises(StorageError, match="append-only"):
            db.execute("TRUNCATE audit_log")
    assert audit.verify(db, KEY.public_key()).ok


def test_an_edited_row_is_found(db):
    _fill(db)
    audit.sign_head(db, KEY, None, now=T + 50)
    _untrigger(db)
    db.execute("UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 4")
    rep = audit.verify(db, KEY.public_key())
    assert not rep.ok and rep.first_broken == 4
    assert "entry 4: its contents do not match its hash (edited)" in rep.summary()


def test_a_deleted_row_is_found(db):
    _fill(db)
    _untrigger(db)
    db.execute("DELETE FROM audit_log WHERE seq = 6")
    rep = audit.verify(db, None)
    assert rep.first_broken == 6 and "entry 6 missing" in rep.summary()


def test_a_truncated_tail_is_found_by_the_signed_head(db, tmp_path):
    heads = str(tmp_path / "heads.jsonl")
    _fill(db)
    audit.sign_head(db, KEY, heads, now=T + 50)
    _untrigger(db)
    db.execute("DELETE FROM audit_log WHERE seq > 7")
    db.execute("DELETE FROM audit_head")  # the attacker cleans the table too; the exported file remains
    rep = audit.verify(db, KEY.public_key(), heads)
    assert not rep.ok and rep.first_broken == 8
    assert "truncated" in rep.summary() and "entries 8..10 were removed" in rep.summary()
    # Without the exported heads, a clean truncation would go unseen: that is what the file is for.
    assert audit.verify(db, KEY.public_key()).ok


def test_a_rewritten_chain_is_found_by_the_signed_head(db):
    _fill(db, 3)
    audit.sign_head(db, KEY, None, now=T + 20)  # entries 1..3 signed
    for i in range(4, 11):
        with db.transaction():
            audit.record(db, "user:bob", "t1", "key.add", "key:%d" % i, None, None, "cli", now=T + 20 + i)
    audit.sign_head(db, KEY, None, now=T + 50)
    _untrigger(db)
    # Edit entry 5 and recompute every hash after it: the chain is consistent again, the head is not.
    rows = db.fetchall("SELECT seq, t_ms, tenant_id, actor, source, action, object, before_json, after_json "
                       "FROM audit_log WHERE seq >= 5 ORDER BY seq")  # fmt: skip
    prev = bytes.fromhex(db.fetchone("SELECT hash FROM audit_log WHERE seq = 4")[0])
    for seq, t_ms, tenant, actor, source, action, obj, before, after in rows:
        actor = "user:mallory" if seq == 5 else actor
        h = audit.entry_hash(seq, t_ms, tenant, actor, source, action, obj, before, after, prev)
        db.execute(
            "UPDATE audit_log SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?", (actor, prev.hex(), h.hex(), seq)
        )
        prev = h
    rep = audit.verify(db, KEY.public_key())
    assert not rep.ok and rep.first_broken == 4 and "an entry in 4..10 was rewritten" in rep.summary()


def test_a_forged_or_foreign_head_is_found(db, tmp_path):
    heads = tmp_path / "heads.jsonl"
    _fill(db, 4)
    audit.sign_head(db, KEY, str(heads), now=T + 10)
    text = heads.read_text()
    heads.write_text(text.replace('"seq":4', '"seq":3'))  # the signature no longer covers it
    rep = audit.verify(db, KEY.public_key(), str(heads))
    assert not rep.ok and "signature does not verify" in rep.summary()
    heads.write_text(text)
    assert audit.verify(db, KEY.public_key(), str(heads)).ok
    assert not audit.verify(db, Ed25519PrivateKey.generate().public_key(), str(heads)).ok
    heads.write_text("{not json\n")
    with pytest.raises(AuditError, match="line 1"):
        audit.verify(db, KEY.public_key(), str(heads))


def test_search_by_tenant_time_range_object_and_action(db):
    _fill(db, 12)
    assert [e.seq for e in audit.search(db, "t2")] == [12, 9, 6, 3]
    assert [e.seq for e in audit.search(db, "t1", t_from=T + 4, t_to=T + 8)] == [7, 5, 4]
    assert [e.seq for e in audit.search(db, "t1", obj="alarm:1")] == [5, 1]
    assert [e.seq for e in audit.search(db, "t1", obj="alarm:*", limit=3)] == [11, 10, 8]
    assert [e.seq for e in audit.search(db, "t1", obj="alarm:*", before_seq=8, limit=2)] == [7, 5]
    assert audit.search(db, "t1", action="login.failed") == []
    assert audit.search(db, "t3") == []


def test_bad_entries_are_refused(db):
    with pytest.raises(AuditError):
        audit.record(db, "", "t1", "x", "y", None, None, "cli")
    with pytest.raises(AuditError, match="plain JSON"):
        audit.record(db, "a", "t1", "x", "y", {"v": float("nan")}, None, "cli")
    with pytest.raises(AuditError, match="exceeds"):
        audit.record(db, "a", "t1", "x", "y", "z" * 70000, None, "cli")


def test_concurrent_writers_keep_one_chain(db):
    # Each thread its own connection, as the API's workers and the alarm engine have.
    def worker(k):
        d = db.clone()
        try:
            for i in range(15):
                with d.transaction():
                    audit.record(d, "user:w%d" % k, "t1", "alarm.ack", "alarm:%d" % i, None, None, "x", now=T + i)
        finally:
            d.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rep = audit.verify(db, None)
    assert rep.ok and rep.entries == 45, rep.summary()


def test_phasekit_server_audit_verify_names_the_first_broken_entry(tmp_path):
    cfg = make_config(tmp_path, "sqlite", None, ingest={"source": "none"})
    from phaseserver.store import open_store

    store = open_store(cfg)
    _fill(store.db, 5)
    store.close()

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "phaseserver", "audit", *args, "--config", str(cfg.path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert run("sign").returncode == 0
    r = run("verify")
    assert r.returncode == 0 and "intact: 5 entries" in r.stdout, r.stdout + r.stderr
    db = Database.sqlite(str(cfg.resolve(cfg.table("storage")["path"])))
    db.execute("DROP TRIGGER audit_log_no_update")
    db.execute('UPDATE audit_log SET after_json = \'{"state":"cleared"}\' WHERE seq = 3')
    db.close()
    r = run("verify")
    assert r.returncode == 1 and "BROKEN at entry 3" in r.stdout and "entry 3:" in r.stdout, r.stdout + r.stderr
