"""The summary of a simulated site's day: what a person reads at the end, the same as JSON, and the plot.

``summarize(run)`` gathers, from the witnesses and the run's records:

- unbalance before and after: the day's mean and peak neutral current and
  mean CUF, had every house stayed on its as-built phase, and as it was;
- switchings per house (physical phase changes seen on the relay boards);
- records: readings produced on the line, buffered by the Pi, stored by the
  server, and every difference with the fault that explains it;
- alarms raised and cleared (the server's when it raises any, else the Pi's
  events), the silent-node alarm timed against its target;
- operator commands sent and refused, the forged one among them, and whether
  the server's audit log has the refusal;
- the relays' limits (dwell, hourly and daily budgets, dead time, never two
  phases) checked on what the relay boards physically did;
- memory (the process tree's RSS at its peak) and timing.

The keys are stable (docs/site.md, "The summary"); ``ok`` is true when every
target the site checks was met.

Public: ``summarize``, ``print_summary``, ``write_json``, ``plot``, ``alarms_from_events``, ``FORMAT``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from phasecore import codes, metrics

if TYPE_CHECKING:
    from phasekit.site.run import SiteRun

__all__ = ("summarize", "print_summary", "write_json", "plot", "alarms_from_events", "AlarmTracker", "FORMAT")

FORMAT = 1
_SILENT_TYPES = ("node_silent", "pi_liveness")
_CONDITION_TYPES = ("unbalance", "overcurrent", "backlog")


# The node alarms the Pi's events raise and clear: event code -> alarm type.
_RAISES = {
    codes.EV_NODE_STALE: "pi_liveness",
    codes.EV_NODE_OFFLINE: "pi_liveness",
    codes.EV_MOVE_NOT_VERIFIED: "relay_fault",
}
_CLEARS = {codes.EV_NODE_ONLINE: "pi_liveness", codes.EV_MOVE_VERIFIED: "relay_fault"}


class AlarmTracker:
    """Alarms as the Pi's own events tell them (a server that raises none of its own), fed incrementally.

    A node stale or offline is raised and cleared when it is online again; a
    move that did not take is raised and cleared by a verified move of that
    node; an operator command refused is raised and stays (nothing clears a refusal).
    """

    def __init__(self) -> None:
        self.alarms: list[dict[str, Any]] = []
        self._open: dict[tuple[str, int], dict[str, Any]] = {}
        self.last_id = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        for e in events:
            self.last_id = max(self.last_id, e.get("id", 0))
            self._one(e)

    def _one(self, e: dict[str, Any]) -> None:
        out, open_ = self.alarms, self._open
        code = e.get("code")
        node = e.get("node") or 0
        t = e.get("time_s") or e.get("t_s")
        if code in _RAISES:
            key = (_RAISES[code], node)
            if key not in open_:
                a = {"type": key[0], "node": node, "object": "node %d" % node, "raised_s": t, "cleared_s": None}
                open_[key] = a
                out.append(a)
        elif code in _CLEARS:
            done = open_.pop((_CLEARS[code], node), None)
            if done is not None:
                done["cleared_s"] = t
        elif code == codes.EV_OPERATOR_REFUSED:
            out.append(
                {
                    "type": "operator_refused",
                    "node": 0,
                    "object": "the Pi",
                    "raised_s": t,
                    "cleared_s": None,
                    "latched": True,
                }
            )


def alarms_from_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``AlarmTracker`` over every event at once."""
    tr = AlarmTracker()
    tr.feed(events)
    return tr.alarms


def _stats(rows: Sequence[tuple[float, float, float, float]]) -> dict[str, float]:
    if not rows:
        return {"neutral_mean_a": 0.0, "neutral_max_a": 0.0, "cuf_mean": 0.0, "phase_max_a": 0.0}
    ns = [r[3] for r in rows]
    cufs = [metrics.cuf(r[0], r[1], r[2]) for r in rows]
    return {
        "neutral_mean_a": round(statistics.fmean(ns), 2),
        "neutral_max_a": round(max(ns), 2),
        "cuf_mean": round(statistics.fmean(cufs), 4),
        "phase_max_a": round(max(max(r[:3]) for r in rows), 2),
    }


def _switchings(run: SiteRun) -> dict[str, Any]:
    """Physical phase changes per node: a house put on another phase than the one it had before."""
    per: dict[int, list[float]] = {}
    day0 = run.clock.epoch_s
    end = day0 + run.day_minutes * 60
    for spec in run.specs:
        log = run.physics.phase_log.get(spec.house, [])
        last = spec.home_phase
        times = []
        for t, ph in log:
            if ph == 3:
                continue
            if ph != last:
                if day0 <= t <= end:
                    times.append(t)
                last = ph
        per[spec.addr] = times
    counts = {a: len(ts) for a, ts in per.items()}
    total = sum(counts.values())
    moved = sorted(c for c in counts.values() if c)
    return {
        "total": total,
        "houses_moved": len(moved),
        "max_per_house": max(counts.values()) if counts else 0,
        "per_house": {str(a): c for a, c in sorted(counts.items()) if c},
        "_times": per,
    }


def _relay_limits(run: SiteRun, times: dict[int, list[float]]) -> dict[str, Any]:
    """Every node's physical moves against its own rules (docs/relay-safety.md)."""
    rules = run.o and None
    _ = rules
    from phasekit.site.nodes import RELAY_RULES

    dwell, per_h, per_d = RELAY_RULES["min_dwell_s"], RELAY_RULES["max_per_hour"], RELAY_RULES["max_per_day"]
    violations = []
    for addr, ts in times.items():
        for i, t in enumerate(ts):
            if i and t - ts[i - 1] < dwell - 60:  # the physics sees a phase change within one step
                violations.append({"node": addr, "rule": "min_dwell_s", "at_s": t})
            if sum(1 for u in ts if t - 3600 < u <= t) > per_h:
                violations.append({"node": addr, "rule": "max_per_hour", "at_s": t})
            if sum(1 for u in ts if t - 86400 < u <= t) > per_d:
                violations.append({"node": addr, "rule": "max_per_day", "at_s": t})
    two = run.physics.two_closed_seen
    gaps = []
    boards_two = 0
    for nd in run.nodes:
        rf = nd.relay_faults()
        boards_two += rf.get("two_closed") or 0
        if rf.get("min_dead_time_ms") is not None:
            gaps.append(rf["min_dead_time_ms"])
    min_gap = min(gaps) if gaps else None
    for nd in run.nodes:
        rf = nd.relay_faults()
        g = rf.get("min_dead_time_ms")
        if g is not None and g < RELAY_RULES["dead_time_ms"]:
            violations.append(
                {"node": nd.spec.addr, "rule": "dead_time_ms", "seen_ms": g, "transitions": rf.get("transitions")}
            )
    if two or boards_two:
        violations.append({"node": 0, "rule": "never two phases", "seen": two + boards_two})
    return {
        "rules": dict(RELAY_RULES),
        "violations": violations,
        "two_phases_closed_seen": two + boards_two,
        "min_dead_time_ms": min_gap,
        "ok": not violations,
    }


def _pi_down_windows(run: SiteRun) -> list[tuple[float, float]]:
    """Wall-time windows in which the Pi was not reading the line: from each kill to the next start's first poll."""
    out = []
    for k in run.pi.kills:
        later = [s for s in run.pi.started if s > k]
        out.append((k - 0.5, (later[0] if later else time.time()) + 0.1))
    return out


def _pi_stopped_at(run: SiteRun) -> float | None:
    return run.pi.stopped[-1] if run.pi.stopped else None


def _records(run: SiteRun) -> dict[str, Any]:
    produced = run.line.produced
    buffered = {(a + 256 * g, s) for a, g, s in run.pi_log.buffered}
    stored = run.server_db.readings()
    rows = run.server_db.reading_rows()
    windows = _pi_down_windows(run)
    not_buffered = [k for k in produced if k not in buffered]
    lost: dict[str, int] = {}
    unexplained = []
    for k in not_buffered:
        _t_site, t_wall = produced[k]
        stopped = _pi_stopped_at(run)
        if any(a <= t_wall <= b for a, b in windows):
            reason = "on the line while the Pi was killed (pi_kill)"
        elif stopped is not None and t_wall >= stopped - 0.5:
            reason = "on the line when the Pi was stopped at the end of the run"
        elif k in run.line.late:
            reason = "answered after the Pi's reply timeout (the Pi had moved on; the node sealed a new one)"
        else:
            unexplained.append(k)
            continue
        lost[reason] = lost.get(reason, 0) + 1
    # What the Pi buffered in the last moments before its stop at the end stays in its buffer (SQLite,
    # committed) and goes at its next start: waiting, not lost. Anything else not stored is a loss.
    waiting = (buffered & _pi_buffer_readings(run)) - stored if run.drained else set()
    not_stored = sorted(buffered - stored - waiting)
    # A reading the Pi buffered but never logged (killed between the commit and the log line) is still stored.
    stored_unlogged = sorted(stored - buffered)
    return {
        "produced": len(produced),
        "buffered": len(buffered),
        "stored": len(stored),
        "stored_rows": rows,
        "stored_once": rows == len(stored),
        "lost": [{"reason": r, "count": c} for r, c in sorted(lost.items())],
        "not_buffered_unexplained": len(unexplained),
        "buffered_not_stored": len(not_stored),
        "waiting_in_pi_buffer": len(waiting),
        "stored_not_logged_by_pi": len(stored_unlogged),
        "repeats_on_line": run.line.repeats,
        "ok": not unexplained and not not_stored,
        "_unexplained": unexplained[:20],
    }


def _pi_buffer_readings(run: SiteRun) -> set[tuple[int, int]]:
    """(sender, seq) of the readings still in the Pi's store-and-forward buffer (its outbox)."""
    path = run.pi_state / "buffer.db"
    if not path.exists():
        return set()
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        rows = con.execute("SELECT sender, seq FROM outbox WHERE kind = 'reading'").fetchall()
    except sqlite3.Error:
        return set()
    finally:
        con.close()
    return {(int(a), int(b)) for a, b in rows if isinstance(a, int) and b is not None}


def _alarms(run: SiteRun) -> tuple[list[dict[str, Any]], str, int]:
    """The day's alarms, where they came from, and how many were raised before the day began (start-up)."""
    server = run.server_db.alarms()
    source = "server"
    if server is None:
        server, source = alarms_from_events(run.server_db.events()), "pi-events"
    day0 = run.clock.epoch_s
    end = day0 + run.day_minutes * 60
    # Raised during the simulated day; after it the site stops its parts (a Pi stopped is offline).
    day = [a for a in server if day0 <= (a.get("raised_s") or 0) <= end]
    return day, source, len(server) - len(day)


def _silent_target(run: SiteRun, alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each node_silent fault: when its alarm was raised and cleared, against the targets."""
    out = []
    for entry in run._fault_log:
        if entry.get("event") != "silent":
            continue
        node = entry["node"]
        t0 = entry["t_s"]
        back = [e for e in run._fault_log if e.get("event") == "back" and e.get("node") == node and e["t_s"] >= t0]
        t1 = back[0]["t_s"] if back else None
        ts = sorted(run.line.poll_times.get(node, []))
        intervals = [b - a for a, b in zip(ts, ts[1:]) if not (t0 - run.poll_s <= a <= (t1 or a) + run.poll_s)]
        interval = statistics.median(intervals) if intervals else float(run.poll_s)
        mine = [
            a
            for a in alarms
            if a.get("node") == node and a.get("type") in _SILENT_TYPES and (a.get("raised_s") or 0) >= t0 - 60
        ]
        a = mine[0] if mine else None
        res: dict[str, Any] = {
            "node": node,
            "silent_s": t0,
            "back_s": t1,
            "polling_interval_s": round(interval, 1),
            "alarm": a["type"] if a else None,
        }
        if a:
            res["raised_after_s"] = round(a["raised_s"] - t0, 1)
            res["raise_target_s"] = round(120 + interval, 1)
            res["raised_in_time"] = res["raised_after_s"] <= res["raise_target_s"]
            if a.get("cleared_s") is not None and t1 is not None:
                res["cleared_after_return_s"] = round(a["cleared_s"] - t1, 1)
                res["clear_target_s"] = round(interval, 1)
                res["cleared_in_time"] = res["cleared_after_return_s"] <= res["clear_target_s"]
        out.append(res)
    return out


def _commands(run: SiteRun, alarms: list[dict[str, Any]]) -> dict[str, Any]:
    events = run.server_db.events()
    refused = [e for e in events if e.get("code") == codes.EV_OPERATOR_REFUSED]
    sent = [
        {k: v for k, v in s.items() if k in ("op", "node", "forged", "published", "t_s", "cert")}
        for s in run.operator.sent
    ]
    audit = run.server_db.audit()
    audited = None
    if audit is not None and refused:
        # The operations server audits each refusal the Pi reported (action command.refused_at_pi).
        audited = sum(1 for r in audit if "refused_at_pi" in str(r.get("action", ""))) >= len(refused)
    return {
        "sent": sent,
        "forged": sum(1 for s in sent if s.get("forged")),
        "refused_by_pi": len(refused),
        "refusals": [{"t_s": e["t_s"], "reason": _reason(e.get("value"))} for e in refused],
        "audited": audited,
    }


def _reason(v: Any) -> str:
    from phasegate.controller import OPERATOR_REASONS

    return OPERATOR_REASONS[v] if isinstance(v, int) and 0 <= v < len(OPERATOR_REASONS) else str(v)


def summarize(run: SiteRun) -> dict[str, Any]:
    """Everything the run measured, as a JSON-ready dict (keys: docs/site.md)."""
    minutes = sorted(run.physics.minutes)
    after = [run.physics.minutes[m] for m in minutes]
    built_all = run.physics.as_built()
    before = [built_all[m] for m in minutes]
    b, a = _stats(before), _stats(after)
    sw = _switchings(run)
    times = sw.pop("_times")
    limits = _relay_limits(run, times)
    recs = _records(run)
    unexplained = recs.pop("_unexplained")
    alarms, source, before_day = _alarms(run)
    silent = _silent_target(run, alarms)
    cmds = _commands(run, alarms)
    day = [round(m / 60.0, 4) for m in minutes]
    out: dict[str, Any] = {
        "format": FORMAT,
        "interrupted": run.interrupted,
        "site": {
            "id": run.specs and "%s/%s" % ("demo-street", "tx-1"),
            "feeder": run.feeder.name,
            "houses": len(run.houses),
            "nodes": {
                "cpython": sum(s.kind == "cpython" for s in run.specs),
                "micropython": sum(s.kind == "micropython" for s in run.specs),
                "lora": sum(s.kind == "lora" for s in run.specs),
            },
            "minutes_simulated": len(minutes),
        },
        "clock": {"speed": run.clock.speed, "epoch_s": run.clock.epoch_s, "start_s": run.clock.start_s},
        "broker": run.broker.kind,
        "server": {
            "kind": "operations",
            "url": run.server.url,
            "db": str(run.server.db),
        },
        "polling": dict({"period_s": run.poll_s, "silent_after_s": run.gap_s}, **_intervals(run)),
        "unbalance": {
            "as_built": b,
            "phasekit": a,
            "neutral_reduction_pct": round(100 * (1 - a["neutral_mean_a"] / b["neutral_mean_a"]), 1)
            if b["neutral_mean_a"]
            else 0.0,
        },
        "switchings": sw,
        "records": recs,
        "alarms": [_alarm_out(x, run) for x in alarms],
        "alarms_source": source,
        "alarms_before_day": before_day,
        "silent_node": silent,
        "faults": [dict(f.as_dict(), node=run.fault_nodes.get(i)) for i, f in enumerate(run.plan)],
        "fault_log": [{k: v for k, v in e.items() if k != "fault"} for e in run._fault_log],
        "commands": cmds,
        "relay_limits": limits,
        "resources": {
            "rss_mb_peak": round(run._rss_max, 1),
            "rss_mb_by_process": {k: round(v, 1) for k, v in run._rss_parts.items()},
            "cpu_s_by_process": _cpu(run),
        },
        "timing": {"wall_s": round(time.monotonic() - run.t0, 1)},
        "_day_hours": day,
    }
    checks = {
        "records_nothing_lost": recs["ok"],
        "records_stored_once": recs["stored_once"],
        "relay_limits": limits["ok"],
        # Every alarm the faults caused is cleared; a condition of the street itself (unbalance,
        # overcurrent) may still hold at the end, as it would on a real one.
        "alarms_cleared": all(
            x.get("cleared_s") is not None or x.get("latched") or x.get("type") in _CONDITION_TYPES for x in alarms
        ),
        "silent_node_in_time": all(s.get("raised_in_time") and s.get("cleared_in_time") for s in silent),
        "forged_refused": cmds["forged"] == 0 or cmds["refused_by_pi"] >= cmds["forged"],
        "memory_under_1gb": run._rss_max < 1024,
    }
    out["checks"] = checks
    out["ok"] = all(checks.values()) and not run.interrupted
    out["records"]["not_buffered_unexplained_keys"] = [
        [k[0], k[1], run.clock.clock_text(run.line.produced[k][0])] for k in unexplained
    ]
    return out


def _cpu(run: SiteRun) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, _pid), cpu in run._cpu.items():
        out[name] = round(out.get(name, 0.0) + cpu, 1)
    return out


def _intervals(run: SiteRun) -> dict[str, float | None]:
    """Site seconds between two readings of one RS-485 node on the line: median, 99th percentile, longest."""
    iv: list[float] = []
    wired = {s.addr for s in run.specs if s.line >= 0}
    for addr, ts in run.line.poll_times.items():
        if addr in wired:
            ts = sorted(ts)
            iv += [b - a for a, b in zip(ts, ts[1:])]
    if not iv:
        return {"interval_median_s": None, "interval_p99_s": None, "interval_max_s": None}
    iv.sort()
    return {
        "interval_median_s": round(statistics.median(iv), 1),
        "interval_p99_s": round(iv[int(0.99 * (len(iv) - 1))], 1),
        "interval_max_s": round(iv[-1], 1),
    }


def _alarm_out(a: dict[str, Any], run: SiteRun) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: a.get(k) for k in ("type", "object", "node", "raised_s", "cleared_s", "cleared_by") if k in a
    }
    out["raised"] = run.clock.clock_text(a["raised_s"]) if a.get("raised_s") else None
    out["cleared"] = run.clock.clock_text(a["cleared_s"]) if a.get("cleared_s") else None
    if a.get("latched"):
        out["latched"] = True
    return out


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def write_json(summary: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(_public(summary), indent=1, sort_keys=True, default=str) + "\n")


def print_summary(s: dict[str, Any], out: IO[str]) -> None:
    """The summary a person reads at the end of the run."""
    w = out.write
    u = s["unbalance"]
    b, a = u["as_built"], u["phasekit"]
    w("\n== phasekit site: the day in numbers ==\n")
    if s["interrupted"]:
        w("(interrupted: %d of the day's minutes were simulated)\n" % s["site"]["minutes_simulated"])
    w(
        "unbalance      as built: neutral mean %.1f A (peak %.1f A), CUF %.1f %%\n"
        "               phasekit: neutral mean %.1f A (peak %.1f A), CUF %.1f %%   (%.0f %% less neutral current)\n"
        % (
            b["neutral_mean_a"],
            b["neutral_max_a"],
            100 * b["cuf_mean"],
            a["neutral_mean_a"],
            a["neutral_max_a"],
            100 * a["cuf_mean"],
            u["neutral_reduction_pct"],
        )
    )
    sw = s["switchings"]
    per = ", ".join("n%s x%d" % kv for kv in sw["per_house"].items()) or "none"
    w(
        "switchings     %d in the day, %d houses moved, at most %d for one house: %s\n"
        % (sw["total"], sw["houses_moved"], sw["max_per_house"], per)
    )
    r = s["records"]
    w(
        "readings       %d put on the line by the nodes, %d buffered by the Pi, %d stored by the server (%s)\n"
        % (r["produced"], r["buffered"], r["stored"], "each once" if r["stored_once"] else "COPIES STORED")
    )
    for x in r["lost"]:
        w("               %d not buffered: %s\n" % (x["count"], x["reason"]))
    if r["not_buffered_unexplained"]:
        w("               %d not buffered and NOT EXPLAINED by a fault\n" % r["not_buffered_unexplained"])
    if r.get("waiting_in_pi_buffer"):
        n = r["waiting_in_pi_buffer"]
        w("               %d buffered at the Pi's stop, waiting in its buffer for its next start\n" % n)
    if r["buffered_not_stored"]:
        w("               %d buffered but NOT STORED by the server\n" % r["buffered_not_stored"])
    w(
        "alarms (%s):\n"
        % ("the server's" if s["alarms_source"] == "server" else "from the Pi's events; this server raises none")
    )
    if not s["alarms"]:
        w("               none\n")
    # Silences on nodes the plan did not silence: a polling interval stretched past the gap on a loaded
    # machine. Counted in one line (each is in the JSON), the planned ones and every other type listed.
    planned = {sn["node"] for sn in s["silent_node"]}
    extra = [a for a in s["alarms"] if a["type"] in _SILENT_TYPES and a.get("node") not in planned]
    if extra:
        longest = max(((a["cleared_s"] or a["raised_s"]) - a["raised_s"]) for a in extra)
        w(
            "               %d silences of nodes the plan did not silence (%d cleared, the longest %.0f site min):"
            " polls late on a loaded machine, see docs/site.md\n"
            % (len(extra), sum(1 for a in extra if a.get("cleared_s")), longest / 60)
        )
    for al in s["alarms"]:
        if al in extra:
            continue
        w(
            "               %-16s %-22s raised %s  %s\n"
            % (
                al["type"],
                al.get("object") or "",
                al["raised"],
                "cleared " + al["cleared"]
                if al.get("cleared")
                else ("(a refusal: stays on record)" if al.get("latched") else "STILL OPEN"),
            )
        )
    for sn in s["silent_node"]:
        if sn.get("alarm"):
            w(
                "silent node    node %d: alarm raised %.0f s after it fell silent"
                " (target 120 s + polling interval %.0f s = %.0f s)%s; cleared %s s after its return (target %.0f s)\n"
                % (
                    sn["node"],
                    sn["raised_after_s"],
                    sn["polling_interval_s"],
                    sn["raise_target_s"],
                    "" if sn["raised_in_time"] else " LATE",
                    "%.0f" % sn["cleared_after_return_s"] if "cleared_after_return_s" in sn else "never",
                    sn.get("clear_target_s", 0),
                )
            )
        else:
            w("silent node    node %d: NO ALARM\n" % sn["node"])
    c = s["commands"]
    w(
        "commands       %d operator commands sent (%d forged); the Pi refused %d%s\n"
        % (
            len(c["sent"]),
            c["forged"],
            c["refused_by_pi"],
            "; audited by the server"
            if c["audited"]
            else (
                ("; the server keeps no audit log" if c["refused_by_pi"] else "")
                if c["audited"] is None
                else "; NOT IN THE AUDIT LOG"
            ),
        )
    )
    rl = s["relay_limits"]
    w(
        "relay limits   %s (dwell %d s, %d an hour, %d a day, dead time %d ms; shortest dead time seen %s ms;"
        " two phases closed %d times)\n"
        % (
            "kept" if rl["ok"] else "VIOLATED: %s" % rl["violations"][:3],
            rl["rules"]["min_dwell_s"],
            rl["rules"]["max_per_hour"],
            rl["rules"]["max_per_day"],
            rl["rules"]["dead_time_ms"],
            rl["min_dead_time_ms"],
            rl["two_phases_closed_seen"],
        )
    )
    w(
        "memory         %.0f MB at the peak, the whole process tree (%s)\n"
        % (
            s["resources"]["rss_mb_peak"],
            ", ".join("%s %.0f" % kv for kv in sorted(s["resources"]["rss_mb_by_process"].items())),
        )
    )
    w("checks         %s\n" % ", ".join("%s %s" % (k, "ok" if v else "not met") for k, v in s["checks"].items()))
    out.flush()


def plot(run: SiteRun, path: Path) -> None:
    """Phase and neutral currents over the day, as built (neutral) and as it was, the moves and faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = sorted(run.physics.minutes)
    hours = [m / 60.0 for m in minutes]
    after = [run.physics.minutes[m] for m in minutes]
    built = run.physics.as_built()
    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    for i, (name, col) in enumerate((("phase A", "#d62728"), ("phase B", "#2ca02c"), ("phase C", "#1f77b4"))):
        ax.plot(hours, [r[i] for r in after], color=col, lw=0.7, alpha=0.8, label=name)
    ax.plot(hours, [built[m][3] for m in minutes], color="0.5", lw=1.0, ls="--", label="neutral, as built")
    ax.plot(hours, [r[3] for r in after], color="black", lw=1.5, label="neutral, with phasekit")
    day0 = run.clock.epoch_s
    top = max([max(r[:3]) for r in after] + [1.0]) * 1.08
    times = _switchings(run)["_times"]
    moves = sorted((t - day0) / 3600.0 for ts in times.values() for t in ts)
    if moves:
        ax.plot(moves, [-0.03 * top] * len(moves), "|", color="darkorange", ms=9, mew=1.2, label="a house moved")
    spans = {"silent": "back", "down": "up", "welded": "repaired"}
    labels = {
        "silent": "node silent",
        "down": "broker down",
        "welded": "relay stuck",
        "forged": "forged command",
        "killed": "Pi killed",
    }
    for e in run._fault_log:
        ev = e.get("event")
        if ev not in labels:
            continue
        h0 = (e["t_s"] - day0) / 3600.0
        end = next((x for x in run._fault_log if x.get("event") == spans.get(ev) and x["t_s"] >= e["t_s"]), None)
        if end is not None:
            ax.axvspan(h0, (end["t_s"] - day0) / 3600.0, color="purple", alpha=0.12, lw=0)
        else:
            ax.axvline(h0, color="purple", lw=0.8, alpha=0.6)
        ax.annotate(labels[ev], (h0, top), fontsize=7, rotation=90, va="top", ha="right", color="purple")
    end_h = max(1, math.ceil(max(hours) if hours else 24))
    ax.set_xlim(0, end_h)
    ax.set_ylim(-0.06 * top, top)
    ax.set_xticks(range(0, end_h + 1, 2 if end_h > 8 else 1))
    ax.set_xlabel("hour of the feeder day (site time)")
    ax.set_ylabel("current (A)")
    u = _stats([built[m] for m in minutes]), _stats(after)
    ax.set_title(
        "%s, %d houses: mean neutral current %.1f A as built, %.1f A with phasekit (%d moves)"
        % (run.feeder.name, len(run.houses), u[0]["neutral_mean_a"], u[1]["neutral_mean_a"], len(moves))
    )
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
