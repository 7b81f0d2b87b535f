"""Server ingest benchmark: records per second into PostgreSQL and SQLite, decode included; and the flood.

The ingest core's whole path, as a worker runs it: MQTT payloads (batches of
1,000 readings of a 100-node street, zlib as the Pi sends them) decoded and
validated (``phaseuplink.records``), told new from copies and written
(PostgreSQL: COPY into a staging table, INSERT ... ON CONFLICT DO NOTHING
RETURNING into the daily partitions; SQLite: one writer, executemany), with
the minute series, node registry, counters and roll-up marks, ``commit_max_messages``
batches per transaction. No broker: what is timed is the server's own work
(the MQTT path is exercised by the tests and ``--flood``). The reference, in
the same process on the same engine: plain INSERTs of the same rows, already
decoded, into a table with the same columns and primary key, one transaction
per batch: the ratio says what de-duplication, decoding and the derived data
cost. PostgreSQL is a real server started for the run (``fsync`` on).

``--flood N`` also runs the poison-and-flood experiment (``phasekit.testing.flood``)
with N messages per subscribed topic: peak RSS of the server process, every
genuine record stored, every flood message dead-lettered.

Targets: >= 20,000 records/s into PostgreSQL, >= 10,000 into SQLite; with
``--flood``: server under 200 MB resident and every genuine record stored.
Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from phasekit.testing.batches import encode, readings, topic
from phasekit.testing.processes import say

EXAMPLE = """examples:
  phasekit bench server-ingest --quick
  phasekit bench server-ingest --records 500000
  phasekit bench server-ingest --flood 10000
"""

TARGETS = {"postgres": 20000.0, "sqlite": 10000.0}
RSS_TARGET_MB = 200.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short run (20,000 records per engine)")
    p.add_argument("--records", type=int, default=200_000, help="readings per engine (default 200,000)")
    p.add_argument("--engines", default="postgres,sqlite")
    p.add_argument("--group", type=int, default=20, help="batches (of 1,000 records) per transaction")
    p.add_argument("--flood", type=int, default=0, metavar="N", help="also run the flood with N messages per topic")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", help="keep databases and logs here")


def _payloads(n_records: int) -> tuple[list[bytes], int]:
    nodes = 100
    minutes = max(1, n_records // nodes)
    t0 = int(time.time()) - 20 * 86400
    t0 -= t0 % 86400
    items = readings(nodes, t0, minutes, seed=3)
    return [encode(items[i : i + 1000]) for i in range(0, len(items), 1000)], len(items)


def _store(engine: str, folder: Path, pg: Any) -> Any:
    from phaseserver import config
    from phaseserver.store import open_store

    storage: dict[str, Any] = {"retention_raw_days": 3650, "retention_hourly_days": 3650}
    if engine == "sqlite":
        storage.update(engine="sqlite", path=str(folder / "bench.db"))
    else:
        storage.update(engine="postgres", dsn=pg.create_database("bench_ingest"))
    cfg = config.write(folder / ("%s.toml" % engine), {"storage": storage, "ingest": {"source": "none"}})
    return open_store(cfg)


def _ours(store: Any, payloads: list[bytes], group: int) -> tuple[float, int]:
    from phaseserver.clock import Clock
    from phaseserver.ingest.core import IngestCore, Limits, Message

    core = IngestCore(store, Clock(), Limits())
    t = topic("bench", "t1", "reading")
    new = 0
    start = time.perf_counter()
    for i in range(0, len(payloads), group):
        now = time.time()
        for o in core.handle_many([Message(t, p, now) for p in payloads[i : i + group]]):
            assert o.kind == "stored", o
            new += o.new
    return time.perf_counter() - start, new


def _reference(store: Any, payloads: list[bytes]) -> float:
    """Plain INSERTs of the same rows, decoded beforehand, one transaction per batch."""
    from phaseuplink import records

    db = store.db
    cols = "t_s, src, seq, voltage_dv, current_ma, power_dw, energy_wh, frequency_dhz, pf_centi, phase, status"
    db.execute(
        "CREATE TABLE ref_reading (site TEXT, transformer TEXT, t_s BIGINT, src INTEGER, seq BIGINT,"
        " voltage_dv INTEGER, current_ma INTEGER, power_dw INTEGER, energy_wh BIGINT, frequency_dhz INTEGER,"
        " pf_centi INTEGER, phase INTEGER, status INTEGER, PRIMARY KEY (site, transformer, t_s, src, seq))"
    )
    batches = []
    for p in payloads:
        b = records.decode_batch("reading", p)
        batches.append(
            [("bench", "t1", r.t_s, r.src, r.seq, *(r.body[k] for k in ("voltage_dV", "current_mA", "power_dW",
              "energy_Wh", "frequency_dHz", "pf_centi", "phase", "status"))) for r in b.records]
        )  # fmt: skip
    sql = "INSERT INTO ref_reading (site, transformer, %s) VALUES (%s)" % (cols, ", ".join("?" * 13))
    start = time.perf_counter()
    for rows in batches:
        with db.transaction():
            db.executemany(sql, rows)
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> int:
    from phasekit.testing.postgres import LocalPostgres

    n = 20_000 if args.quick else args.records
    say("encoding %d readings into batches of 1,000" % n)
    payloads, total = _payloads(n)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="phasekit-bench-ingest-") as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pg = LocalPostgres(fsync=True).start() if "postgres" in engines else None
        try:
            for engine in engines:
                store = _store(engine, folder, pg)
                try:
                    say("%s: ingest core, %d batches, %d per transaction" % (engine, len(payloads), args.group))
                    secs, new = _ours(store, payloads, args.group)
                    assert new == total, (new, total)
                    say("%s: reference plain INSERT" % engine)
                    ref = _reference(store, payloads)
                finally:
                    store.close()
                results[engine] = {"records": total, "seconds": secs, "rate": total / secs,
                                   "ref_seconds": ref, "ref_rate": total / ref}  # fmt: skip
            if args.flood:
                from phasekit.testing import flood

                say("flood: %d messages per topic" % args.flood)
                results["flood"] = flood.run(folder / "flood", args.flood, genuine_batches=50)
        finally:
            if pg is not None:
                pg.stop()
    ok = True
    print()
    print("server ingest, decode included (batches of 1,000 readings, %d batches per transaction)" % args.group)
    head = "%-10s %10s %9s %14s %14s %8s %10s %5s" % ("engine", "records", "seconds", "records/s", "plain INSERT/s",
                                                   "ratio", "target", "met")  # fmt: skip
    print(head)
    print("-" * len(head))
    for engine in engines:
        r = results[engine]
        met = r["rate"] >= TARGETS[engine]
        ok &= met
        cells = (engine, r["records"], r["seconds"], "{:,.0f}".format(r["rate"]), "{:,.0f}".format(r["ref_rate"]),
                 r["rate"] / r["ref_rate"], ">= {:,.0f}".format(TARGETS[engine]), "yes" if met else "NO")  # fmt: skip
        print("%-10s %10d %9.2f %14s %14s %8.2f %10s %5s" % cells)
    if "flood" in results:
        f = results["flood"]
        met = f["peak_rss_mb"] < RSS_TARGET_MB and f["genuine_stored"] == f["genuine_records"] and f["server_alive"]
        ok &= met
        print()
        print("flood: %d topics x %d messages (%d, %.0f MB) while a genuine Pi sent %d readings"
              % (f["topics"], f["per_topic"], f["flood_messages"], f["flood_mb"], f["genuine_records"]))  # fmt: skip
        print("  server peak RSS %.1f MB (target < %.0f), alive %s, tracebacks %d"
              % (f["peak_rss_mb"], RSS_TARGET_MB, f["server_alive"], f["tracebacks"]))  # fmt: skip
        print("  genuine stored %d of %d (%d already while the flood was being worked through)"
              % (f["genuine_stored"], f["genuine_records"], f["genuine_stored_while_flooded"]))  # fmt: skip
        print("  dead letters %d of %d expected; flood records stored %d; published in %.1f s, all handled in %.1f s"
              % (f["dead_letters"], f["expected_dead_letters"], f["flood_records_stored"], f["publish_s"],
                 f["done_s"]))  # fmt: skip
        print("  met: %s" % ("yes" if met else "NO"))
    if args.json:
        print(json.dumps(results, sort_keys=True, default=str))
    return 0 if ok else 1
