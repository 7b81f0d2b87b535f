"""Where every reading of a simulated site went: put on the line by a node, buffered by the Pi, stored by the server.

Three independent witnesses, none of them the code under test's own counters:

- ``LineWitness`` listens to the RS-485 line (the hub's monitor): every
  CRC-valid frame a node sends to the master whose sealed envelope's clear
  header (``phasecore.seal.header``: kind and sequence number, no key
  needed) says *reading* is a reading produced, keyed ``(src, seq)`` as the
  uplink keys it (src = link address + 256 x key generation);
- ``PiLog`` reads the transformer Pi's log for the line it writes right after
  a reading's buffer commit (``phasegate.journal.BUFFERED_READING``, parsed by
  ``phasekit.testing.gateway``), across every run of the Pi;
- ``ServerDb`` reads the server's database, read-only: the readings it stored,
  the Pi's events and the server's alarms (when it has an alarm table).

Public: ``LineWitness``, ``PiLog``, ``ServerDb``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phasecore import frame as _frame
from phasecore import msg, seal
from phasecore.errors import PhasecoreError
from phasegate.controller import MOVE_ACKNOWLEDGED
from phasegate.journal import BUFFERED_READING
from phasekit.testing.gateway import buffered_readings, moves_acknowledged

__all__ = ("LineWitness", "PiLog", "ServerDb")


class LineWitness:
    """Readings produced on the line: ``produced[(src, seq)] = (site time, wall time)`` of their first frame."""

    def __init__(self, site_now: Callable[[], float], generation: int = 0):
        self._now = site_now
        self.generation = generation
        self.produced: dict[tuple[int, int], tuple[float, float]] = {}
        self.repeats = 0  # the same reading sent again (the Pi polled before the node had sampled anew)
        self.frames_from_nodes = 0
        self.polls = 0
        self.commands = 0
        self.last_reading: dict[int, float] = {}  # link address -> site time of its last reading on the line
        self.poll_times: dict[int, list[float]] = {}  # link address -> site times of readings (intervals)
        # Readings the master cannot have taken: it had moved on to another node, or this is a second
        # reply to one frame (the master took the first as the answer to its retry).
        self.late: set[tuple[int, int]] = set()
        self._last_dst: dict[str, int] = {}  # line -> address of the master's latest frame on it
        self._answered: dict[int, bool] = {}  # node -> it already replied since the master's last frame to it

    def on_line(self, line: str) -> Callable[[_frame.Frame, str], None]:
        """The hub monitor for one line (``Rs485Hub(monitor=...)``)."""

        def monitor(f: _frame.Frame, sender: str) -> None:
            self.seen(f, line)

        return monitor

    def __call__(self, f: _frame.Frame, sender: str) -> None:
        self.seen(f, "line")

    def seen(self, f: _frame.Frame, line: str) -> None:
        """One CRC-valid frame on ``line``."""
        if f.dst == _frame.MASTER and f.src != _frame.MASTER:
            self.frames_from_nodes += 1
            answered = self._answered.get(f.src, False)
            self._answered[f.src] = True
            if not f.payload:
                return
            try:
                kind, seq = seal.header(f.payload)
            except PhasecoreError:
                return
            if kind != msg.READING:
                return
            key = (f.src + 256 * self.generation, seq)
            if key in self.produced:
                self.repeats += 1
                return
            t = self._now()
            self.produced[key] = (t, time.time())
            if self._last_dst.get(line) != f.src or answered:
                self.late.add(key)
            self.last_reading[f.src] = t
            self.poll_times.setdefault(f.src, []).append(t)
        elif f.src == _frame.MASTER:
            self._last_dst[line] = f.dst
            self._answered[f.dst] = False
            if f.payload:
                self.commands += 1
            else:
                self.polls += 1


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", re.M)


class PiLog:
    """The transformer Pi's log (every run appends to it), read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._tail = ""
        self.buffered: set[tuple[int, int, int]] = set()
        self.buffered_lines = 0
        self.moves: list[tuple[int, str, str]] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def poll(self) -> None:
        """Read what the Pi wrote since the last call."""
        try:
            with open(self.path, "r", errors="replace") as f:
                f.seek(self._offset)
                data = f.read()
                self._offset = f.tell()
        except OSError:
            return
        if not data:
            return
        text = self._tail + data
        cut = text.rfind("\n") + 1
        text, self._tail = text[:cut], text[cut:]
        for key in buffered_readings(text):
            self.buffered_lines += 1
            self.buffered.add(key)
        self.moves += moves_acknowledged(text)
        for line in text.splitlines():
            if " ERROR " in line or "Traceback" in line:
                self.errors.append(line[:300])
            elif " WARNING " in line and len(self.warnings) < 2000:
                self.warnings.append(line[:300])

    @staticmethod
    def formats() -> tuple[str, str]:
        """The log formats this relies on (the gateway exports them)."""
        return BUFFERED_READING, MOVE_ACKNOWLEDGED


class ServerDb:
    """Read-only queries on the server's SQLite database (both the first server's and the operations server's)."""

    def __init__(self, path: Path):
        self.path = path

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        try:
            con = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True, timeout=2)
        except sqlite3.Error:
            return []
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.Error:
            return []
        finally:
            con.close()

    def tables(self) -> set[str]:
        return {r[0] for r in self._q("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def readings(self) -> set[tuple[int, int]]:
        """(src, seq) of every node reading stored."""
        t = self.tables()
        if "reading" in t:
            rows = self._q("SELECT src, seq FROM reading")
        else:
            rows = self._q("SELECT src, seq FROM record WHERE kind = 'reading'")
        return {(int(a), int(b)) for a, b in rows}

    def reading_rows(self) -> int:
        """Rows holding readings (a copy stored twice would show here as one more row than keys)."""
        t = self.tables()
        if "reading" in t:
            return int((self._q("SELECT COUNT(*) FROM reading") or [(0,)])[0][0])
        return int((self._q("SELECT COUNT(*) FROM record WHERE kind = 'reading'") or [(0,)])[0][0])

    def count_readings(self) -> int:
        t = self.tables()
        if "reading" in t:
            return int((self._q("SELECT COUNT(*) FROM reading") or [(0,)])[0][0])
        return int((self._q("SELECT COUNT(*) FROM record WHERE kind = 'reading'") or [(0,)])[0][0])

    def events(self, after_id: int = 0) -> list[dict[str, Any]]:
        """The Pi's and nodes' events stored after row ``after_id``, in row order:
        ``{"id", "t_s", "src", "code", "severity", "node", "value", "time_s"}``."""
        out = []
        cols = {r[1] for r in self._q("PRAGMA table_info(record)")}
        if "code" in cols:
            # The operations server keeps the event's fields as columns (and has no row id to follow).
            rows = self._q(
                "SELECT t_s, src, code, value, node, severity FROM record WHERE kind IN ('event', 'alarm') ORDER BY t_s"
            )
            return [
                {"id": 0, "t_s": float(t), "time_s": t, "src": src, "code": c, "value": v, "node": n, "severity": sev}
                for t, src, c, v, n, sev in rows
            ]
        rows = self._q(
            "SELECT id, t_s, src, body FROM record WHERE kind IN ('event', 'alarm') AND id > ? ORDER BY id", (after_id,)
        )
        for rid, t_s, src, body in rows:
            try:
                b = json.loads(body)
            except (TypeError, ValueError):
                continue
            if isinstance(b, dict):
                fields = {str(k): v for k, v in b.items()}
                e = _event(t_s, src, fields)
                e["id"] = rid
                out.append(e)
        return out

    def open_alarms(self) -> int | None:
        """Alarms the server holds open now, or None when it raises none."""
        rows = self._q("SELECT COUNT(*) FROM alarm WHERE cleared_s IS NULL")
        return int(rows[0][0]) if rows else None

    def alarms(self) -> list[dict[str, Any]] | None:
        """The server's alarms (``alarm`` table), or None when this server raises none."""
        if "alarm" not in self.tables():
            return None
        rows = self._q(
            "SELECT id, object, type, severity, max_severity, since_s, raised_s, cleared_s, cleared_by, node, detail"
            " FROM alarm ORDER BY raised_s, id"
        )
        keys = ("id", "object", "type", "severity", "max_severity", "since_s", "raised_s", "cleared_s", "cleared_by")
        out = []
        for r in rows:
            d = dict(zip(keys, r[:9]))
            d["node"] = r[9]
            out.append(d)
        return out

    def audit(self) -> list[dict[str, Any]] | None:
        """The server's audit log entries (``audit`` table), or None when it keeps none."""
        t = self.tables()
        name = "audit" if "audit" in t else "audit_log" if "audit_log" in t else None
        if name is None:
            return None
        cols = [r[1] for r in self._q("PRAGMA table_info(%s)" % name)]
        rows = self._q("SELECT * FROM %s ORDER BY 1" % name)
        return [dict(zip(cols, r)) for r in rows]


def _event(t_s: Any, src: Any, b: dict[str, Any]) -> dict[str, Any]:
    # Record bodies are the msg event map; the first server stores them as JSON with the
    # integer keys or with names, depending on its version: accept both.
    def pick(name: str, key: str) -> Any:
        return b.get(name, b.get(key))

    return {
        "t_s": float(t_s),
        "src": src,
        "code": pick("code", "1"),
        "value": pick("value", "2"),
        "time_s": pick("time_s", "4"),
        "node": pick("node", "5"),
        "severity": pick("severity", "6"),
    }
