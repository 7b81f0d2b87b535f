"""What the two stores share: the ingest writes, roll-ups and queries, in SQL both engines accept.

``SqlStore`` implements ``store.base.Store`` over a ``Database``; the engine
classes (``store.sqlite.SQLiteStore``, ``store.postgres.PostgresStore``)
supply what differs: how new rows are told from copies and written in bulk
(``_insert_new``), partitions (``prepare``), retention and backup.

The one thing to know: a record's de-duplication key is
``(site, transformer, kind, src, seq, t_s)``, the primary key of its table
(the kind is implicit in the typed tables). Everything derived from records
(the per-minute series, the node registry, counters, roll-up marks) is
updated from the rows that were *new* in this batch only, inside the same
transaction, so a batch delivered twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from phasecore import metrics as _metrics
from phasecore.codes import OP_MOVE
from phasecore.errors import quote
from phaseserver.clock import Clock
from phaseserver.errors import StorageError
from phaseserver.store import migrate as _migrate
from phaseserver.store.base import UNASSIGNED, DeadLetter, FleetRow, NodeRow, SeriesPoint
from phaseserver.store.db import Database
from phaseuplink.records import Record, split_sender

log = logging.getLogger(__name__)

__all__ = ("SqlStore", "READING_COLUMNS", "RAW_TABLES", "HOUR_TABLES", "DAY_TABLES")

HOUR = 3600
DAY = 86400

READING_COLUMNS = (
    "tenant_id", "site", "transformer", "t_s", "src", "seq", "voltage_dv", "current_ma", "power_dw",
    "energy_wh", "frequency_dhz", "pf_centi", "phase", "status", "received_s",
)  # fmt: skip
AGGREGATE_COLUMNS = (
    "tenant_id", "site", "transformer", "t_s", "src", "seq", "period_s", "n", "seq_span", "phase", "phase_first",
    "status", "n_bad", "i_mean_ma", "i_max_ma", "v_min_dv", "v_max_dv", "de_wh", "pf_mean_centi", "received_s",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "tenant_id", "site", "transformer", "t_s", "src", "seq", "period_s", "i_a_da", "i_b_da", "i_c_da", "i_n_da",
    "cuf_pm", "cuf_max_pm", "moves", "moves_failed", "backlog", "body", "received_s",
)  # fmt: skip
RECORD_COLUMNS = (
    "tenant_id", "site", "transformer", "kind", "t_s", "src", "seq", "code", "severity", "value", "node", "body",
    "received_s",
)  # fmt: skip
# Tables per retention level.
RAW_TABLES = ("reading", "aggregate", "summary", "record", "series_minute")
HOUR_TABLES = ("rollup_node_hour", "rollup_phase_hour", "rollup_tx_hour")
DAY_TABLES = ("rollup_node_day", "rollup_phase_day", "rollup_tx_day")
_KIND_TABLE = {"reading": "reading", "interval": "aggregate", "summary": "summary"}
_SERIES_SUMS = ("i_a_ma", "i_b_ma", "i_c_ma", "p_a_ma", "p_b_ma", "p_c_ma", "q_a_ma", "q_b_ma", "q_c_ma")


def _json(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def _components(current_ma: float, pf_centi: int) -> tuple[float, float]:
    """Active and reactive parts of a current (mA) from its power factor (0.01); lagging assumed.

    The PZEM-004T reports |pf| only, so the reactive part's sign is unknown; loads in
    houses lag (motors, transformers), which is the assumption phasecore.metrics documents.
    """
    pf = min(100, max(0, pf_centi)) / 100.0
    return current_ma * pf, current_ma * math.sqrt(max(0.0, 1.0 - pf * pf))


class SqlStore:
    """The engine-neutral part of a store; see ``store.base.Store`` for the interface."""

    engine = "sql"

    def __init__(self, db: Database, clock: Clock, storage: Mapping[str, Any]) -> None:
        self.db = db
        self.engine = db.engine
        self.clock = clock
        self.storage = dict(storage)
        self._tenants: dict[str, str] = {}  # site -> tenant, refreshed inside each ingest transaction

    # ------------------------------------------------------------ life cycle

    def migrate(self) -> list[int]:
        return _migrate.migrate(self.db, self.clock)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ engine hooks

    def prepare(self, spans: Sequence[tuple[str, int, int]]) -> None:
        """Before a transaction: make sure the storage for ``(kind, min t_s, max t_s)`` exists (partitions)."""

    def _insert_new(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], key: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Insert the rows whose key is not stored yet; returns exactly those rows."""
        raise NotImplementedError

    def _lock_site(self, site: str) -> tuple[Any, ...] | None:
        return self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))

    # ------------------------------------------------------------ registry

    def _register(self, site: str, transformer: str, received_s: float) -> str:
        """The site's tenant (registering site and transformer on first sight, as 'unassigned')."""
        row = self._lock_site(site)
        if row is None:
            self.db.execute(
                "INSERT INTO site (id, tenant_id, first_seen_s) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (site, UNASSIGNED, received_s),
            )
            row = self._lock_site(site)
            if row is None:
                raise StorageError("site %s vanished while being registered" % quote(site))
        tenant = str(row[0])
        self.db.execute(
            "INSERT INTO transformer (tenant_id, site, id, first_seen_s) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (site, id) DO NOTHING",
            (tenant, site, transformer, received_s),
        )
        self._lock_transformer(site, transformer)
        return tenant

    def _lock_transformer(self, site: str, transformer: str) -> None:
        """Hold the transformer's row for the rest of the transaction (see PostgresStore)."""

    def _known(self, site: str, transformer: str) -> tuple[str, str, str]:
        """(tenant, site, transformer) to count under: the transformer's if it is known, else ('', '')."""
        row = self.db.fetchone("SELECT tenant_id FROM transformer WHERE site = ? AND id = ?", (site, transformer))
        if row is None:
            return UNASSIGNED, "", ""
        return str(row[0]), site, transformer

    def _bump(self, tenant: str, site: str, transformer: str, counts: Mapping[str, int]) -> None:
        rows = [(tenant, site, transformer, name, int(n)) for name, n in sorted(counts.items()) if n]
        if rows:
            self.db.executemany(
                "INSERT INTO ingest_counter (tenant_id, site, transformer, name, value) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (site, transformer, name) DO UPDATE SET value = ingest_counter.value + excluded.value",
                rows,
            )

    # ------------------------------------------------------------ writing

    def add_batch(
        self, site: str, transformer: str, kind: str, records: Sequence[Record], received_s: float
    ) -> tuple[int, int]:
        """Store one decoded batch; returns ``(new, duplicates)``. One transaction (joins the caller's)."""
        if not records:
            return 0, 0
        with self.db.transaction():
            tenant = self._register(site, transformer, received_s)
            if kind == "reading":
                new = self._add_readings(tenant, site, transformer, records, received_s)
            elif kind == "interval":
                new = self._add_aggregates(tenant, site, transformer, records, received_s)
            elif kind == "summary":
                new = self._add_summaries(tenant, site, transformer, records, received_s)
            else:
                new = self._add_records(tenant, site, transformer, kind, records, received_s)
            n_new = len(new)
            dup = len(records) - n_new
            if new:
                newest = max(r.t_s for r in new)
                self.db.execute(
                    "UPDATE transformer SET last_seen_s = ?, last_t_s = CASE WHEN last_t_s IS NULL OR last_t_s < ?"
                    " THEN ? ELSE last_t_s END WHERE site = ? AND id = ?",
                    (received_s, newest, newest, site, transformer),
                )
                self._nodes(tenant, site, transformer, kind, new, received_s)
                if kind in ("reading", "interval"):
                    hours = sorted({r.t_s - r.t_s % HOUR for r in new})
                    self.db.executemany(
                        "INSERT INTO rollup_dirty (site, transformer, t_s) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        [(site, transformer, h) for h in hours],
                    )
            self._bump(tenant, site, transformer, {"batches": 1, "records": n_new, "duplicates": dup})
        return n_new, dup

    def _add_readings(self, tenant: str, site: str, tx: str, recs: Sequence[Record], received_s: float) -> list[Record]:
        rows = []
        for r in recs:
            b = r.body
            rows.append(
                (
                    tenant, site, tx, r.t_s, r.src, r.seq, b["voltage_dV"], b["current_mA"], b["power_dW"],
                    b["energy_Wh"], b["frequency_dHz"], b["pf_centi"], b["phase"], b["status"], received_s,
                )
            )  # fmt: skip
        new_rows = self._insert_new("reading", READING_COLUMNS, rows, ("t_s", "src", "seq"))
        if not new_rows:
            return []
        new_keys = {(row[3], row[4], row[5]) for row in new_rows}
        new = [r for r in recs if (r.t_s, r.src, r.seq) in new_keys]
        # The minute series: each node's mean over the minute, summed by phase (docs/server.md).
        per_node: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for r in new:
            b = r.body
            per_node[(r.t_s - r.t_s % 60, r.src)].append((b["current_mA"], b["pf_centi"], b["phase"]))
        self._series(tenant, site, tx, per_node)
        return new

    def _series(
        self, tenant: str, site: str, tx: str, per_node: Mapping[tuple[int, int], list[tuple[int, int, int]]]
    ) -> None:
        minutes: dict[int, list[float]] = {}
        for (m, _src), values in per_node.items():
            phase = values[-1][2]
            acc = minutes.setdefault(m, [0.0] * 10)
            acc[9] += 1
            if not 0 <= phase <= 2:
                continue
            n = len(values)
            i = sum(v[0] for v in values) / n
            p = q = 0.0
            for cur, pf, _ph in values:
                a, b = _components(cur, pf)
                p += a
                q += b
            acc[phase] += i
            acc[3 + phase] += p / n
            acc[6 + phase] += q / n
        rows = [
            (tenant, site, tx, m, *(int(round(x)) for x in acc[:9]), int(acc[9])) for m, acc in sorted(minutes.items())
        ]
        sets = ", ".join("%s = series_minute.%s + excluded.%s" % (c, c, c) for c in (*_SERIES_SUMS, "nodes"))
        self.db.executemany(
            "INSERT INTO series_minute (tenant_id, site, transformer, t_s, %s, nodes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (site, transformer, t_s) DO UPDATE SET %s" % (", ".join(_SERIES_SUMS), sets),
            rows,
        )

    def _add_aggregates(
        self, tenant: str, site: str, tx: str, recs: Sequence[Record], received_s: float
    ) -> list[Record]:
        rows = []
        for r in recs:
            b = r.body
            rows.append(
                (
                    tenant, site, tx, r.t_s, r.src, r.seq, b["period_s"], b["n"], b["seq_span"], b["phase"],
                    b.get("phase_first"), b["status"], b.get("n_bad"), b.get("i_mean_mA"), b.get("i_max_mA"),
                    b.get("v_min_dV"), b.get("v_max_dV"), b.get("de_Wh"), b.get("pf_mean_centi"), received_s,
                )
            )  # fmt: skip
        new_rows = self._insert_new("aggregate", AGGREGATE_COLUMNS, rows, ("t_s", "src", "seq"))
        keys = {(row[3], row[4], row[5]) for row in new_rows}
        new = [r for r in recs if (r.t_s, r.src, r.seq) in keys]
        # Interval mode: the series gets one point per period (its start), from each node's mean.
        per_node: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for r in new:
            b = r.body
            if "i_mean_mA" in b:
                per_node[(r.t_s - r.t_s % 60, r.src)] = [(b["i_mean_mA"], b["pf_mean_centi"], b["phase"])]
        if per_node:
            self._series(tenant, site, tx, per_node)
        return new

    def _add_summaries(
        self, tenant: str, site: str, tx: str, recs: Sequence[Record], received_s: float
    ) -> list[Record]:
        rows = []
        for r in recs:
            b = r.body
            i = b["i_dA"]
            rows.append(
                (
                    tenant, site, tx, r.t_s, r.src, r.seq, b["period_s"], i[0], i[1], i[2], b.get("i_n_dA"),
                    b["cuf_pm"], b.get("cuf_max_pm"), b["moves"], b.get("moves_failed"), b.get("backlog"), _json(b),
                    received_s,
                )
            )  # fmt: skip
        new_rows = self._insert_new("summary", SUMMARY_COLUMNS, rows, ("t_s", "src", "seq"))
        keys = {(row[3], row[4], row[5]) for row in new_rows}
        return [r for r in recs if (r.t_s, r.src, r.seq) in keys]

    def _add_records(
        self, tenant: str, site: str, tx: str, kind: str, recs: Sequence[Record], received_s: float
    ) -> list[Record]:
        rows = []
        for r in recs:
            b = r.body
            code = severity = value = node = None
            if kind in ("event", "alarm"):
                code, severity, value, node = b.get("code"), b.get("severity", 0), b.get("value"), b.get("node")
            elif kind == "ack":
                cmd = b.get("command") or {}
                ack = b.get("ack")
                code = cmd.get("op")
                value = None if ack is None else ack.get("outcome")
                node = split_sender(r.src)[0] if r.src else None
            elif kind == "node_heartbeat":
                node = split_sender(r.src)[0]
            rows.append(
                (tenant, site, tx, kind, r.t_s, r.src, r.seq, code, severity, value, node, _json(b), received_s)
            )
        new_rows = self._insert_new("record", RECORD_COLUMNS, rows, ("kind", "t_s", "src", "seq"))
        keys = {(row[4], row[5], row[6]) for row in new_rows}
        new = [r for r in recs if (r.t_s, r.src, r.seq) in keys]
        if kind == "heartbeat" and new:
            last = max(new, key=lambda r: r.t_s)
            self.db.execute(
                "UPDATE transformer SET fw = ?, backlog = ? WHERE site = ? AND id = ?",
                (last.body.get("fw"), last.body.get("backlog"), site, tx),
            )
        return new

    def _nodes(self, tenant: str, site: str, tx: str, kind: str, new: Sequence[Record], received_s: float) -> None:
        latest: dict[int, Record] = {}
        for r in new:
            if r.src and (r.src not in latest or r.t_s >= latest[r.src].t_s):
                latest[r.src] = r
        if not latest:
            return
        rows = []
        for src, r in sorted(latest.items()):
            addr, gen = split_sender(src)
            b = r.body if isinstance(r.body, dict) else {}
            phase = b.get("phase") if kind in ("reading", "interval", "node_heartbeat") else None
            status = b.get("status") if kind in ("reading", "interval", "node_heartbeat") else None
            fw = b.get("fw") if kind == "node_heartbeat" else None
            rows.append((tenant, site, tx, src, addr, gen, phase, status, r.t_s, received_s, fw))
        # Newer facts win; a late, older record fills only what is unknown.
        self.db.executemany(
            "INSERT INTO node (tenant_id, site, transformer, src, addr, generation, phase, status, last_t_s,"
            " last_seen_s, fw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (site, transformer, src) DO UPDATE SET"
            " phase = CASE WHEN excluded.phase IS NOT NULL AND excluded.last_t_s >= COALESCE(node.last_t_s, 0)"
            "   THEN excluded.phase ELSE COALESCE(node.phase, excluded.phase) END,"
            " status = CASE WHEN excluded.status IS NOT NULL AND excluded.last_t_s >= COALESCE(node.last_t_s, 0)"
            "   THEN excluded.status ELSE COALESCE(node.status, excluded.status) END,"
            " fw = COALESCE(excluded.fw, node.fw),"
            " last_seen_s = excluded.last_seen_s,"
            " last_t_s = CASE WHEN node.last_t_s IS NULL OR excluded.last_t_s > node.last_t_s"
            "   THEN excluded.last_t_s ELSE node.last_t_s END",
            rows,
        )

    def count_invalid(self, site: str, transformer: str, batches: int = 0, records: int = 0) -> None:
        """Count refused batches and records under their transformer when it is known, else under ('', '')."""
        with self.db.transaction():
            tenant, s, t = self._known(site, transformer)
            self._bump(tenant, s, t, {"invalid_batches": batches, "invalid_records": records})

    def count(self, site: str, transformer: str, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` of a transformer (('', '') when it is not known)."""
        with self.db.transaction():
            tenant, s, t = self._known(site, transformer)
            self._bump(tenant, s, t, {name: n})

    def dead_letter(
        self,
        topic: str,
        payload_prefix: bytes,
        reason: str,
        received_s: float,
        payload_len: int | None = None,
        source: str = "mqtt",
    ) -> None:
        """Keep what ingest could not store, for an operator; topic and reason cut short, payload's prefix only."""
        parts = str(topic).split("/")
        site = parts[1][:64] if len(parts) > 1 else None
        tx = parts[2][:64] if len(parts) > 2 else None
        kind = parts[3][:32] if len(parts) > 3 else None
        tenant = UNASSIGNED
        if site:
            row = self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))
            tenant = str(row[0]) if row else UNASSIGNED
        self.db.execute(
            "INSERT INTO dead_letter (tenant_id, received_s, source, topic, site, transformer, kind, reason,"
            " payload_len, payload_prefix) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenant,
                received_s,
                source[:16],
                str(topic)[:200],
                site,
                tx,
                kind,
                str(reason)[:1000],
                len(payload_prefix) if payload_len is None else payload_len,
                bytes(payload_prefix),
            ),
        )

    def set_status(self, site: str, transformer: str, status: str, received_s: float) -> None:
        """The Pi's retained status (online/offline) as last received."""
        with self.db.transaction():
            self._register(site, transformer, received_s)
            self.db.execute(
                "UPDATE transformer SET status = ?, status_s = ? WHERE site = ? AND id = ?",
                (status, received_s, site, transformer),
            )

    def assign_site(self, site: str, tenant: str) -> int:
        """Move a site and everything stored for it to ``tenant`` (one transaction); returns rows moved."""
        with self.db.transaction():
            if self.db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant,)) is None:
                raise StorageError("no tenant %s" % quote(tenant[:64]))
            if not self.db.execute("UPDATE site SET tenant_id = ? WHERE id = ?", (tenant, site)):
                raise StorageError("no site %s" % quote(site[:64]))
            n = 0
            for table in ("transformer", "node", "ingest_counter", *RAW_TABLES, *HOUR_TABLES, *DAY_TABLES):
                n += max(0, self.db.execute("UPDATE %s SET tenant_id = ? WHERE site = ?" % table, (tenant, site)))
            self.db.execute("UPDATE dead_letter SET tenant_id = ? WHERE site = ?", (tenant, site))
        return n

    # ------------------------------------------------------------ roll-ups

    def rollup(self, limit: int = 10000) -> int:
        """Rebuild the hourly (then daily) roll-ups of the hours ingest marked; returns hours rebuilt."""
        dirty = self.db.fetchall(
            "SELECT site, transformer, t_s FROM rollup_dirty ORDER BY t_s, site, transformer LIMIT ?", (limit,)
        )
        days: set[tuple[str, str, int]] = set()
        for site, tx, hour in dirty:
            with self.db.transaction():
                self.db.execute(
                    "DELETE FROM rollup_dirty WHERE site = ? AND transformer = ? AND t_s = ?", (site, tx, hour)
                )
                row = self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))
                tenant = str(row[0]) if row else UNASSIGNED
                self._rollup_hour(tenant, site, tx, int(hour))
            days.add((site, tx, int(hour) - int(hour) % DAY))
        for site, tx, day in sorted(days):
            with self.db.transaction():
                row = self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))
                tenant = str(row[0]) if row else UNASSIGNED
                self._rollup_day(tenant, site, tx, day)
        return len(dirty)

    def _rollup_hour(self, tenant: str, site: str, tx: str, hour: int) -> None:
        self.prepare_rollups(hour)
        args = (site, tx, hour, hour + HOUR)
        for table in HOUR_TABLES:
            self.db.execute("DELETE FROM %s WHERE site = ? AND transformer = ? AND t_s = ?" % table, (site, tx, hour))
        # Per node: raw readings and interval aggregates of the hour.
        self.db.execute(
            "INSERT INTO rollup_node_hour (tenant_id, site, transformer, t_s, src, n, i_sum_ma, i_max_ma, v_min_dv,"
            " v_max_dv, pf_sum, e_wh, phase)"
            " SELECT ?, ?, ?, ?, src, SUM(n), SUM(i_sum), MAX(i_max), MIN(v_min), MAX(v_max), SUM(pf_sum), SUM(e),"
            " MAX(phase) FROM ("
            "  SELECT src, COUNT(*) AS n, SUM(current_ma) AS i_sum, MAX(current_ma) AS i_max,"
            "   MIN(voltage_dv) AS v_min, MAX(voltage_dv) AS v_max, SUM(pf_centi) AS pf_sum,"
            "   MAX(energy_wh) - MIN(energy_wh) AS e, MAX(phase) AS phase"
            "  FROM reading WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ? GROUP BY src"
            "  UNION ALL"
            "  SELECT src, SUM(n - COALESCE(n_bad, 0)), SUM(COALESCE(i_mean_ma, 0) * (n - COALESCE(n_bad, 0))),"
            "   MAX(i_max_ma), MIN(v_min_dv), MAX(v_max_dv),"
            "   SUM(COALESCE(pf_mean_centi, 0) * (n - COALESCE(n_bad, 0))),"
            "   SUM(de_wh), MAX(phase)"
            "  FROM aggregate WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ? GROUP BY src"
            " ) u GROUP BY src",
            (tenant, site, tx, hour, *args, *args),
        )
        # Per phase and per transformer: from the minute series (CUF and neutral per minute, then mean/max).
        minutes = self.db.fetchall(
            "SELECT t_s, i_a_ma, i_b_ma, i_c_ma, p_a_ma, p_b_ma, p_c_ma, q_a_ma, q_b_ma, q_c_ma FROM series_minute"
            " WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ?",
            args,
        )
        if not minutes:
            return
        n = len(minutes)
        sums = [0.0, 0.0, 0.0]
        maxes = [0, 0, 0]
        in_sum = in_max = cuf_sum = cuf_max = 0.0
        for row in minutes:
            i_n, c = _neutral_cuf(row)
            for k in range(3):
                sums[k] += row[1 + k]
                maxes[k] = max(maxes[k], int(row[1 + k]))
            in_sum += i_n
            in_max = max(in_max, i_n)
            cuf_sum += c
            cuf_max = max(cuf_max, c)
        self.db.executemany(
            "INSERT INTO rollup_phase_hour (tenant_id, site, transformer, t_s, phase, minutes, i_mean_ma, i_max_ma)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(tenant, site, tx, hour, k, n, int(round(sums[k] / n)), maxes[k]) for k in range(3)],
        )
        self.db.execute(
            "INSERT INTO rollup_tx_hour (tenant_id, site, transformer, t_s, minutes, i_n_mean_ma, i_n_max_ma,"
            " cuf_mean_pm, cuf_max_pm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenant,
                site,
                tx,
                hour,
                n,
                int(round(in_sum / n)),
                int(round(in_max)),
                int(round(1000 * cuf_sum / n)),
                int(round(1000 * cuf_max)),
            ),
        )

    def _rollup_day(self, tenant: str, site: str, tx: str, day: int) -> None:
        self.prepare_rollups(day, daily=True)
        args = (site, tx, day, day + DAY)
        for table in DAY_TABLES:
            self.db.execute("DELETE FROM %s WHERE site = ? AND transformer = ? AND t_s = ?" % table, (site, tx, day))
        self.db.execute(
            "INSERT INTO rollup_node_day (tenant_id, site, transformer, t_s, src, n, i_sum_ma, i_max_ma, v_min_dv,"
            " v_max_dv, pf_sum, e_wh, phase)"
            " SELECT ?, ?, ?, ?, src, SUM(n), SUM(i_sum_ma), MAX(i_max_ma), MIN(v_min_dv), MAX(v_max_dv), SUM(pf_sum),"
            " SUM(e_wh), MAX(phase) FROM rollup_node_hour"
            " WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ? GROUP BY src",
            (tenant, site, tx, day, *args),
        )
        self.db.execute(
            "INSERT INTO rollup_phase_day (tenant_id, site, transformer, t_s, phase, minutes, i_mean_ma, i_max_ma)"
            " SELECT ?, ?, ?, ?, phase, SUM(minutes), CAST(SUM(i_mean_ma * minutes) / SUM(minutes) AS INTEGER),"
            " MAX(i_max_ma) FROM rollup_phase_hour"
            " WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ? GROUP BY phase",
            (tenant, site, tx, day, *args),
        )
        self.db.execute(
            "INSERT INTO rollup_tx_day (tenant_id, site, transformer, t_s, minutes, i_n_mean_ma, i_n_max_ma,"
            " cuf_mean_pm, cuf_max_pm)"
            " SELECT ?, ?, ?, ?, SUM(minutes), CAST(SUM(i_n_mean_ma * minutes) / SUM(minutes) AS INTEGER),"
            " MAX(i_n_max_ma), CAST(SUM(cuf_mean_pm * minutes) / SUM(minutes) AS INTEGER), MAX(cuf_max_pm)"
            " FROM rollup_tx_hour WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ? HAVING COUNT(*) > 0",
            (tenant, site, tx, day, *args),
        )

    def prepare_rollups(self, t_s: int, daily: bool = False) -> None:
        """Make sure the roll-up tables can take rows of time ``t_s`` (partitions on PostgreSQL)."""

    # ------------------------------------------------------------ maintenance

    def retention(self, now_s: float) -> dict[str, int]:
        """Drop what is older than each level's retention; returns ``{level: partitions or rows dropped}``."""
        raise NotImplementedError

    def prune_dead_letters(self) -> int:
        """Keep at most ``dead_letter_max_rows`` dead letters (the newest)."""
        keep = int(self.storage.get("dead_letter_max_rows", 100000))
        top = self.db.scalar("SELECT MAX(id) FROM dead_letter", default=0)
        return max(0, self.db.execute("DELETE FROM dead_letter WHERE id <= ?", (int(top) - keep,)))

    def backup(self, path: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ queries

    @staticmethod
    def _tenant(tenant: str | None, column: str = "tenant_id") -> tuple[str, tuple[Any, ...]]:
        """``(" AND tenant_id = ?", (tenant,))``, or nothing for the system view (tenant None)."""
        if tenant is None:
            return "", ()
        return " AND %s = ?" % column, (tenant,)

    def fleet(self, tenant: str | None) -> list[FleetRow]:
        """Every transformer of the tenant (of all tenants when None) with its online state."""
        cond, args = self._tenant(tenant, "t.tenant_id")
        rows = self.db.fetchall(
            "SELECT t.tenant_id, t.site, t.id, t.name, t.status, t.status_s, t.last_seen_s, t.last_t_s,"
            " (SELECT COUNT(DISTINCT addr) FROM node n WHERE n.site = t.site AND n.transformer = t.id), t.fw, t.backlog"
            " FROM transformer t WHERE 1 = 1" + cond + " ORDER BY t.site, t.id",
            args,
        )
        return [FleetRow(*r) for r in rows]

    def transformer(self, tenant: str | None, site: str, transformer: str) -> FleetRow | None:
        """One transformer of the fleet view, or None (also when it belongs to another tenant)."""
        for row in self.fleet(tenant):
            if row.site == site and row.transformer == transformer:
                return row
        return None

    def nodes(self, tenant: str | None, site: str, transformer: str) -> list[NodeRow]:
        """The transformer's nodes: phase, last seen, firmware, key generation (one row per generation seen)."""
        cond, args = self._tenant(tenant)
        rows = self.db.fetchall(
            "SELECT src, addr, generation, phase, status, last_t_s, last_seen_s, fw FROM node"
            " WHERE site = ? AND transformer = ?" + cond + " ORDER BY addr, generation",
            (site, transformer, *args),
        )
        return [NodeRow(*r) for r in rows]

    def series(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, step_s: int = 60
    ) -> list[SeriesPoint]:
        """Phase currents, neutral and CUF over ``[start_s, end_s)`` in steps of ``step_s`` (>= 60).

        Steps below an hour come from the minute series; an hour or more from the hourly
        roll-ups, a day or more from the daily ones (which ``rollup`` keeps current).
        """
        step = max(60, int(step_s))
        cond, args = self._tenant(tenant)
        if step >= DAY and step % DAY == 0:
            return self._series_rollup("day", site, transformer, start_s, end_s, step, cond, args)
        if step >= HOUR and step % HOUR == 0:
            return self._series_rollup("hour", site, transformer, start_s, end_s, step, cond, args)
        rows = self.db.fetchall(
            "SELECT t_s, i_a_ma, i_b_ma, i_c_ma, p_a_ma, p_b_ma, p_c_ma, q_a_ma, q_b_ma, q_c_ma FROM series_minute"
            " WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ?" + cond + " ORDER BY t_s",
            (site, transformer, int(start_s), int(end_s), *args),
        )
        out: list[SeriesPoint] = []
        bucket = None
        acc: list[float] = []
        for row in rows:
            b = int(row[0]) - int(row[0]) % step
            if b != bucket:
                if bucket is not None:
                    out.append(_point(bucket, acc))
                bucket, acc = b, [0.0] * 7
            i_n, c = _neutral_cuf(row)
            acc[0] += row[1]
            acc[1] += row[2]
            acc[2] += row[3]
            acc[3] += i_n
            acc[4] += c
            acc[5] = max(acc[5], row[1], row[2], row[3])
            acc[6] += 1
        if bucket is not None:
            out.append(_point(bucket, acc))
        return out

    def _series_rollup(
        self, level: str, site: str, tx: str, start_s: int, end_s: int, step: int, cond: str, args: tuple[Any, ...]
    ) -> list[SeriesPoint]:
        where = " WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ?" + cond
        params = (site, tx, int(start_s), int(end_s), *args)
        phases = self.db.fetchall(
            "SELECT t_s, phase, minutes, i_mean_ma, i_max_ma FROM rollup_phase_%s%s ORDER BY t_s" % (level, where),
            params,
        )
        txs = {
            int(r[0]): r[1:]
            for r in self.db.fetchall(
                "SELECT t_s, minutes, i_n_mean_ma, cuf_mean_pm FROM rollup_tx_%s%s" % (level, where), params
            )
        }
        buckets: dict[int, list[float]] = {}
        for t, phase, minutes, mean, mx in phases:
            b = int(t) - int(t) % step
            acc = buckets.setdefault(b, [0.0] * 8)
            acc[int(phase)] += mean * minutes
            acc[5] = max(acc[5], mx)
            if int(phase) == 0:
                acc[6] += minutes
                tx_row = txs.get(int(t))
                if tx_row is not None:
                    acc[3] += tx_row[1] * minutes
                    acc[4] += tx_row[2] * minutes
        out = []
        for b in sorted(buckets):
            acc = buckets[b]
            m = acc[6] or 1.0
            out.append(
                SeriesPoint(
                    b,
                    acc[0] / m / 1000.0,
                    acc[1] / m / 1000.0,
                    acc[2] / m / 1000.0,
                    acc[3] / m / 1000.0,
                    acc[4] / m / 1000.0,
                    acc[5] / 1000.0,
                    int(acc[6]),
                )
            )
        return out

    def readings(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, src: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Raw readings ``(t_s, src, seq, voltage_dv, current_ma, power_dw, energy_wh, frequency_dhz, pf_centi,
        phase, status)`` of one transformer (one node when ``src`` is given), in time order."""
        cond, args = self._tenant(tenant)
        node = ""
        if src is not None:
            node = " AND src = ?"
            args = (src, *args)
        return self.db.fetchall(
            "SELECT t_s, src, seq, voltage_dv, current_ma, power_dw, energy_wh, frequency_dhz, pf_centi, phase, status"
            " FROM reading WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ?"
            + node
            + cond
            + " ORDER BY t_s, src, seq",
            (site, transformer, int(start_s), int(end_s), *args),
        )

    def records(
        self,
        tenant: str | None,
        site: str,
        transformer: str,
        kind: str,
        start_s: int = 0,
        end_s: int = 2**32,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events, alarms, acks or heartbeats of one transformer: newest first, bodies decoded."""
        cond, args = self._tenant(tenant)
        rows = self.db.fetchall(
            "SELECT t_s, src, seq, body, received_s FROM record WHERE site = ? AND transformer = ? AND kind = ?"
            " AND t_s >= ? AND t_s < ?" + cond + " ORDER BY t_s DESC, src, seq LIMIT ?",
            (site, transformer, kind, int(start_s), int(end_s), *args, int(limit)),
        )
        return [
            {"t_s": int(t), "src": int(s), "seq": int(q), "body": json.loads(b), "received_s": float(rx)}
            for t, s, q, b, rx in rows
        ]

    def moves(self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int) -> list[dict]:
        """The balancer's moves in a range (MOVE commands with their outcome), oldest first: marks for the series."""
        cond, args = self._tenant(tenant)
        rows = self.db.fetchall(
            "SELECT t_s, src, node, value, body FROM record WHERE site = ? AND transformer = ? AND kind = 'ack'"
            " AND t_s >= ? AND t_s < ? AND code = ?" + cond + " ORDER BY t_s, src, seq",
            (site, transformer, int(start_s), int(end_s), OP_MOVE, *args),
        )
        out = []
        for t, src, node, outcome, body in rows:
            b = json.loads(body)
            cmd = b.get("command") or {}
            ack = b.get("ack") or {}
            out.append(
                {
                    "t_s": int(t),
                    "node": node,
                    "to_phase": cmd.get("phase"),
                    "outcome": outcome,
                    "phase_after": ack.get("phase"),
                    "src": int(src),
                }
            )
        return out

    def export_csv(
        self, tenant: str | None, site: str, transformer: str, start_s: int, end_s: int, what: str = "readings"
    ) -> Iterator[str]:
        """CSV text in chunks (a header, then rows): ``readings`` (raw) or ``series`` (per minute)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if what == "readings":
            w.writerow(
                ("t_s", "src", "seq", "voltage_dv", "current_ma", "power_dw", "energy_wh", "frequency_dhz",
                 "pf_centi", "phase", "status")
            )  # fmt: skip
            step = 6 * HOUR
            for t in range(int(start_s), int(end_s), step):
                for row in self.readings(tenant, site, transformer, t, min(int(end_s), t + step)):
                    w.writerow(row)
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        elif what == "series":
            w.writerow(("t_s", "i_a_A", "i_b_A", "i_c_A", "i_n_A", "cuf"))
            for p in self.series(tenant, site, transformer, start_s, end_s, 60):
                w.writerow((p.t_s, "%.3f" % p.i_a, "%.3f" % p.i_b, "%.3f" % p.i_c, "%.3f" % p.i_n, "%.4f" % p.cuf))
            yield buf.getvalue()
        else:
            raise StorageError("export of %s: expected 'readings' or 'series'" % quote(str(what)[:40]))

    def dead_letters(self, tenant: str | None, limit: int = 100, before_id: int | None = None) -> list[DeadLetter]:
        """Dead letters, newest first (``before_id`` pages back)."""
        cond, args = self._tenant(tenant)
        page = ""
        if before_id is not None:
            page = " AND id < ?"
            args = (before_id, *args)
        rows = self.db.fetchall(
            "SELECT id, tenant_id, received_s, source, topic, site, transformer, kind, reason, payload_len,"
            " payload_prefix FROM dead_letter WHERE 1 = 1" + page + cond + " ORDER BY id DESC LIMIT ?",
            (*args, int(limit)),
        )
        return [
            DeadLetter(
                int(r[0]), str(r[1]), float(r[2]), str(r[3]), str(r[4]), r[5], r[6], r[7], str(r[8]), int(r[9]),
                bytes(r[10]),
            )
            for r in rows
        ]  # fmt: skip

    def counters(self, tenant: str | None = None, site: str | None = None, transformer: str | None = None) -> dict:
        """``{name: value}`` summed over the matching transformers (batches, records, duplicates, invalid_*)."""
        cond, args = self._tenant(tenant)
        for col, val in (("site", site), ("transformer", transformer)):
            if val is not None:
                cond += " AND %s = ?" % col
                args = (*args, val)
        return {
            str(n): int(v)
            for n, v in self.db.fetchall(
                "SELECT name, SUM(value) FROM ingest_counter WHERE 1 = 1" + cond + " GROUP BY name ORDER BY name",
                args,
            )
        }

    def count_rows(self, table: str, site: str | None = None, transformer: str | None = None) -> int:
        """Rows of one of the store's tables (tests, benchmarks, the CLI's status)."""
        if table not in (*RAW_TABLES, *HOUR_TABLES, *DAY_TABLES, "node", "transformer", "site", "dead_letter"):
            raise StorageError("no table %s to count" % quote(table[:40]))
        cond = ""
        args: tuple[Any, ...] = ()
        for col, val in (("site", site), ("transformer", transformer)):
            if val is not None:
                cond += " AND %s = ?" % col
                args = (*args, val)
        return int(self.db.scalar("SELECT COUNT(*) FROM %s WHERE 1 = 1%s" % (table, cond), args, 0))


def _neutral_cuf(row: Sequence[Any]) -> tuple[float, float]:
    """Neutral current (mA) and CUF (fraction) of one minute row (t, i_a, i_b, i_c, p_a..c, q_a..c)."""
    i_n = _metrics.neutral_rel(row[4], row[7], row[5], row[8], row[6], row[9])
    c = _metrics.cuf(row[1] / 1000.0, row[2] / 1000.0, row[3] / 1000.0)
    return i_n, c


def _point(bucket: int, acc: list[float]) -> SeriesPoint:
    n = acc[6] or 1.0
    return SeriesPoint(
        bucket,
        acc[0] / n / 1000.0,
        acc[1] / n / 1000.0,
        acc[2] / n / 1000.0,
        acc[3] / n / 1000.0,
        acc[4] / n,
        acc[5] / 1000.0,
        int(acc[6]),
    )
