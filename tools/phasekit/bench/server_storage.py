"""Server storage benchmark: bytes per stored reading, 30 days of a 100-node transformer, and query p99.

Data: one transformer of 100 nodes at 1-minute readings for ``--days`` (30
by default: 4.32 million readings), synthetic but shaped like a street (each
house an evening-peaked load with its own size and noise, energy counters
integrating it, voltage sagging with current, power factors around 0.93;
``phasekit.testing.batches``). The readings go in with COPY (PostgreSQL; SQLite:
executemany), partitions made as the store makes them; the per-minute
transformer series is computed from the same values, and the hourly and daily
roll-ups by the store's own ``rollup``. PostgreSQL is a real server started
for the run; sizes are ``pg_total_relation_size`` (heap, indexes, TOAST)
summed over each table's partitions, after ``VACUUM ANALYZE``; SQLite's are
``dbstat`` pages.

Reported: bytes per reading at the raw level; for each roll-up level the bytes
it takes per reading it summarises and per row; the 30-day total; and the
p50/p99 of what the transformer page asks the store for (one transformer's
last 24 h at 1-minute resolution, with its nodes and its moves), over
``--queries`` repetitions, on both stores. The HTTP layer adds its own time.

Targets: 30 days under 1 GB on PostgreSQL; query p99 under 100 ms on both stores.
Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from phasekit.testing.batches import reading_values
from phasekit.testing.processes import say

EXAMPLE = """examples:
  phasekit bench server-storage --quick
  phasekit bench server-storage --days 30 --engines postgres,sqlite
"""

SIZE_TARGET = 1 << 30
P99_TARGET_MS = 100.0
NODES = 100
SITE, TX, TENANT = "feeder-07", "tx-0042", "unassigned"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="2 days instead of 30, fewer queries")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--engines", default="postgres,sqlite")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", help="keep the databases here")


def generate(days: int, end_s: int, seed: int = 11) -> Any:
    """Per day: (reading rows, minute-series rows), each in the store's column order."""
    rng = random.Random(seed)
    sizes = {a: rng.uniform(1.5, 9.0) for a in range(1, NODES + 1)}
    energy = {a: rng.uniform(1e5, 5e6) for a in range(1, NODES + 1)}
    seq = dict.fromkeys(range(1, NODES + 1), 1000)
    start = end_s - days * 86400
    for d in range(days):
        rows: list[tuple[Any, ...]] = []
        series: list[tuple[Any, ...]] = []
        day = start + d * 86400
        for m in range(1440):
            t = day + 60 * m
            sums = [0.0] * 9
            for a in range(1, NODES + 1):
                v, energy[a] = reading_values(a, t, rng, energy[a], sizes[a])
                seq[a] += 1
                ts = t + a % 30
                rows.append((TENANT, SITE, TX, ts, a, seq[a], *v, float(ts + 2)))
                ph = v[6]
                cur, pf = v[1], v[5] / 100.0
                sums[ph] += cur
                sums[3 + ph] += cur * pf
                sums[6 + ph] += cur * math.sqrt(max(0.0, 1 - pf * pf))
            series.append((TENANT, SITE, TX, t, *(int(round(x)) for x in sums), NODES))
        yield day, rows, series


def build(store: Any, days: int, end_s: int) -> int:
    from phaseserver.store.sql import READING_COLUMNS

    series_cols = ("tenant_id", "site", "transformer", "t_s", "i_a_ma", "i_b_ma", "i_c_ma", "p_a_ma", "p_b_ma",
                   "p_c_ma", "q_a_ma", "q_b_ma", "q_c_ma", "nodes")  # fmt: skip
    store.db.execute(
        "INSERT INTO site (id, tenant_id, first_seen_s) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (SITE, TENANT, 0.0)
    )
    store.db.execute(
        "INSERT INTO transformer (tenant_id, site, id, first_seen_s) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (TENANT, SITE, TX, 0.0),
    )
    store.db.executemany(
        "INSERT INTO node (tenant_id, site, transformer, src, addr, generation, phase, last_t_s, last_seen_s)"
        " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(TENANT, SITE, TX, a, a, a % 3, end_s, float(end_s)) for a in range(1, NODES + 1)],
    )
    n = 0
    for i, (day, rows, series) in enumerate(generate(days, end_s)):
        store.prepare([("reading", day, day + 86399)])
        with store.db.transaction():
            store.db.copy_rows("reading", READING_COLUMNS, rows)
            store.db.copy_rows("series_minute", series_cols, series)
            store.db.executemany(
                "INSERT INTO rollup_dirty (site, transformer, t_s) VALUES (?, ?, ?)",
                [(SITE, TX, day + 3600 * h) for h in range(24)],
            )
        n += len(rows)
        if i % 5 == 4 or i == days - 1:
            say("%s: %d days, %d readings" % (store.engine, i + 1, n))
    t = time.perf_counter()
    hours = store.rollup(limit=10**6)
    say("%s: roll-ups of %d hours in %.1f s" % (store.engine, hours, time.perf_counter() - t))
    return n


LEVELS = {
    "raw": ("reading",),
    "minute series": ("series_minute",),
    "hourly": ("rollup_node_hour", "rollup_phase_hour", "rollup_tx_hour"),
    "daily": ("rollup_node_day", "rollup_phase_day", "rollup_tx_day"),
}


def sizes(store: Any) -> dict[str, int]:
    tables = [t for ts in LEVELS.values() for t in ts]
    if store.engine == "postgres":
        store.db.execute("VACUUM ANALYZE")
        return dict(store.size_bytes(tables))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out = {}
    for t in tables:
        out[t] = int(store.db.scalar("SELECT SUM(pgsize) FROM dbstat WHERE name = ?", (t,), 0))
    return out


def query_times(store: Any, end_s: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        pts = store.series(TENANT, SITE, TX, end_s - 86400, end_s, 60)
        nodes = store.nodes(TENANT, SITE, TX)
        store.moves(TENANT, SITE, TX, end_s - 86400, end_s)
        out.append((time.perf_counter() - t) * 1000)
        assert len(pts) >= 1439 and len(nodes) == NODES, (len(pts), len(nodes))
    return out


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q * len(s))) - 1)]


def main(args: argparse.Namespace) -> int:
    from phasekit.testing.postgres import LocalPostgres
    from phaseserver import config
    from phaseserver.store import open_store

    days = 2 if args.quick else args.days
    queries = 30 if args.quick else args.queries
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    end = int(time.time())
    end -= end % 86400
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="phasekit-bench-storage-") as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pg = LocalPostgres(fsync=True).start() if "postgres" in engines else None
        try:
            for engine in engines:
                storage: dict[str, Any] = {"retention_raw_days": 3650, "retention_hourly_days": 3650}
                if engine == "sqlite":
                    storage.update(engine="sqlite", path=str(folder / "storage.db"))
                else:
                    assert pg is not None
                    storage.update(engine="postgres", dsn=pg.create_database("bench_storage"))
                cfg = config.write(folder / ("%s.toml" % engine), {"storage": storage, "ingest": {"source": "none"}})
                store = open_store(cfg)
                try:
                    t = time.perf_counter()
                    n = build(store, days, end)
                    load_s = time.perf_counter() - t
                    size = sizes(store)
                    rows = {t: store.count_rows(t) for ts in LEVELS.values() for t in ts}
                    query_times(store, end, 5)  # warm the caches, as a running server's are
                    times = query_times(store, end, queries)
                finally:
                    store.close()
                results[engine] = {"readings": n, "load_s": load_s, "sizes": size, "rows": rows,
                                   "p50_ms": statistics.median(times), "p99_ms": _p(times, 0.99),
                                   "max_ms": max(times)}  # fmt: skip
        finally:
            if pg is not None:
                pg.stop()
    ok = True
    print()
    print("server storage: one transformer, %d nodes, 1-minute readings, %d days (%s readings)"
          % (NODES, days, "{:,}".format(NODES * 1440 * days)))  # fmt: skip
    for engine in engines:
        r = results[engine]
        print()
        print("%s (loaded in %.0f s)" % (engine, r["load_s"]))
        head = "%-15s %12s %12s %16s %12s" % ("level", "rows", "bytes", "bytes/reading", "bytes/row")
        print(head)
        print("-" * len(head))
        total = 0
        for level, tables in LEVELS.items():
            b = sum(r["sizes"][t] for t in tables)
            nrows = sum(r["rows"][t] for t in tables)
            total += b
            print("%-15s %12s %12s %16.1f %12.1f" % (level, "{:,}".format(nrows), "{:,}".format(b), b / r["readings"],
                  b / max(1, nrows)))  # fmt: skip
        r["total_bytes"] = total
        line = "%-15s %12s %12s %16.1f" % ("total", "", "{:,}".format(total), total / r["readings"])
        print(line)
        if engine == "postgres":
            scaled = total * 30 / days
            met = scaled < SIZE_TARGET
            ok &= met
            scaled_note = "" if days == 30 else " (scaled from %d days)" % days
            print(
                "30 days: %.0f MB%s (target < 1024 MB): %s" % (scaled / 2**20, scaled_note, "met" if met else "MISSED")
            )
        met = r["p99_ms"] < P99_TARGET_MS
        ok &= met
        print("query, last 24 h at 1 minute + nodes + moves: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d runs;"
              " target p99 < %.0f ms): %s" % (r["p50_ms"], r["p99_ms"], r["max_ms"], queries, P99_TARGET_MS,
                                              "met" if met else "MISSED"))  # fmt: skip
    if args.json:
        print(json.dumps(results, sort_keys=True, default=str))
    return 0 if ok else 1
