"""The gateway fault experiment: SIGKILLs, a broker outage and line noise, and nothing may be lost.

One experiment at two scales: ``FaultPlan.ci()`` runs in the test suite
(tests/gateway/test_faults.py, about a minute), ``FaultPlan.benchmark()`` is
issue 4's scale (100 nodes, 20 kills, a 10-minute outage) for ``phasekit
bench gateway-faults``. Every part is the real thing in its own process:
``phasekit gateway run`` on a TOML file, sealed simulated nodes on an RS-485
line paced at 115200 baud (``phasekit.sim.bus_nodes``; a noise burst can
land inside a reply), Mosquitto with mutual TLS and persistence
(``phasekit.testing.broker``), and the server's ingest into SQLite.

The gateway is SIGKILLed ``kills`` times at seeded random points and
restarted ``restart_s`` later (systemd's RestartSec); the broker is stopped
for ``outage_s`` in the middle; bursts of noise (false SYNC bytes among them)
hit the line every ``noise_every_s``. Ground truth: the gateway's
``BUFFERED_READING`` line written right after each buffer commit, and the
sequence numbers each node sealed (with the time). At the end the nodes fall
silent, the gateway drains and is stopped with SIGTERM, and the server
catches up. ``run_faults`` returns: readings sent, buffered, at the server,
stored twice, duplicates the server dropped, held in the Pi's buffer (not
lost), lost (buffered, neither at the server nor held: must be 0), at the
server but never sent (must be 0), and readings sent but never buffered,
each put down to the kill or the noise burst that interrupted it; and the
drain of the backlog after the outage, timed from the uplink's reconnect.
"""

from __future__ import annotations

import heapq
import random
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import (
    GatewayProc,
    buffered_readings,
    buffered_times,
    connect_times,
    gateway_toml,
    query_ro,
    start_server,
    write_config,
)
from phasekit.testing.processes import Children, say

__all__ = ("FaultPlan", "Results", "run_faults", "GRACE_S", "SITE_KEY")

SITE_KEY = bytes(range(32))  # synthetic
GRACE_S = 30  # phasegate.uplink's aggregation grace

# What a run returns: JSON-ready (``phasekit bench gateway-faults --json`` prints it); some keys by mode.
Results = dict[str, Any]


class FaultPlan:
    """What one fault run does; ``ci()`` and ``benchmark()`` are the two scales, ``replace(**kw)`` a variant."""

    FIELDS = (
        "nodes",
        "poll_period",
        "kills",
        "outage_s",
        "pre_s",
        "post_s",
        "restart_s",
        "noise_every_s",
        "raw_batch_s",
        "interval_period",
        "reply_timeout_ms",
        "drain_timeout_s",
        "margin_s",
        "server_still_s",
        "balancer_period_s",
        "keepalive_s",
        "seed",
    )
    # Set from FIELDS in __init__; int values are fine where a float is expected.
    nodes: int
    poll_period: float
    kills: int
    outage_s: float
    pre_s: float
    post_s: float
    restart_s: float
    noise_every_s: float
    raw_batch_s: float
    interval_period: int
    reply_timeout_ms: int
    drain_timeout_s: float
    margin_s: float
    server_still_s: float
    balancer_period_s: float | None
    keepalive_s: float | None
    seed: int

    def __init__(self, **kw: float | None):
        for name in self.FIELDS:
            setattr(self, name, kw.pop(name))
        if kw:
            raise TypeError("unknown fault plan keys: %s" % ", ".join(sorted(kw)))

    def replace(self, **kw: float | None) -> FaultPlan:
        """A copy with the fields ``kw`` names changed."""
        values = {name: getattr(self, name) for name in self.FIELDS}
        values.update(kw)
        return FaultPlan(**values)

    def as_dict(self) -> dict[str, float | None]:
        """The fields by name."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def benchmark(cls) -> FaultPlan:
        """Issue 4's scale: 100 nodes polled every 10 s, 20 SIGKILLs, a 10-minute broker outage."""
        return cls(
            nodes=100,
            poll_period=10.0,
            kills=20,
            outage_s=600.0,
            pre_s=150.0,
            post_s=150.0,
            restart_s=5.0,
            noise_every_s=30.0,
            raw_batch_s=1.0,
            interval_period=60,
            reply_timeout_ms=60,
            drain_timeout_s=420.0,
            margin_s=5.0,
            server_still_s=5.0,
            balancer_period_s=None,
            keepalive_s=None,
            seed=20261125,
        )

    @classmethod
    def quick(cls) -> FaultPlan:
        """A short smoke run of the benchmark (under a minute)."""
        return cls.benchmark().replace(
            nodes=20,
            poll_period=2.0,
            kills=3,
            outage_s=12.0,
            pre_s=10.0,
            post_s=12.0,
            restart_s=1.0,
            noise_every_s=5.0,
            drain_timeout_s=30.0,
            server_still_s=3.0,
        )

    @classmethod
    def ci(cls) -> FaultPlan:
        """The test suite's scale: 6 nodes polled every 0.4 s, 6 SIGKILLs, an 8 s outage, noise every 3 s."""
        return cls.benchmark().replace(
            nodes=6,
            poll_period=0.4,
            kills=6,
            outage_s=8.0,
            pre_s=9.0,
            post_s=9.0,
            restart_s=0.5,
            noise_every_s=3.0,
            drain_timeout_s=30.0,
            margin_s=1.0,
            server_still_s=3.0,
            balancer_period_s=2,
            keepalive_s=5,
        )


def _open_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)


class RecordingNode(SimNode):
    """A sealed node that remembers when it sealed each reading (seq -> time.time())."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.sent: dict[int, float] = {}

    def reading_payload(self) -> bytes:
        payload = super().reading_payload()
        self.sent[self.counter.value - 1] = time.time()
        return payload


class Schedule:
    """Timed actions (absolute time.time()), run in order; the gateway is checked between them."""

    def __init__(self, gw: GatewayProc):
        self.gw = gw
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._n = 0

    def at(self, t: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` at time ``t`` (time.time())."""
        self._n += 1
        heapq.heappush(self._heap, (t, self._n, fn))

    def run_until(self, t_end: float) -> None:
        """Run what is due until ``t_end`` and until no restart is pending."""
        while True:
            now = time.time()
            if self._heap and self._heap[0][0] <= now:
                _, _, fn = heapq.heappop(self._heap)
                fn()
                continue
            if now >= t_end and not any(getattr(fn, "restart", False) for _, _, fn in self._heap):
                return
            if self.gw.proc is not None:
                self.gw.check()
            nxt = self._heap[0][0] if self._heap else t_end
            time.sleep(max(0.0, min(0.1, nxt - now)) or 0.01)


def kill_times(rng: random.Random, segments: Sequence[tuple[float, float]], k: int, spacing: float) -> list[float]:
    """``k`` seeded uniform times over ``segments`` [(start, end), ...] on one time line, ``spacing`` apart."""
    total = sum(b - a for a, b in segments)
    if total <= 0 or k * spacing > total:
        raise ValueError("%d kills %.0f s apart do not fit in %.0f s of run: lengthen it" % (k, spacing, total))
    for _ in range(5000):
        xs = sorted(rng.uniform(0, total) for _ in range(k))
        out: list[float] = []
        for x in xs:
            for a, b in segments:
                if x <= b - a:
                    out.append(a + x)
                    break
                x -= b - a
        if all(b - a >= spacing for a, b in zip(out, out[1:])):
            return out
    raise ValueError("could not place %d kills %.0f s apart: lengthen the run" % (k, spacing))


def run_faults(plan: FaultPlan, mode: str, folder: Path, progress: Callable[[str], object] = say) -> Results:
    """One fault run of ``plan`` (a ``FaultPlan``) in ``mode`` ("raw" or "interval"); returns the results dict.

    Logs, the buffer and the server's database are left in ``folder``.
    """
    args = plan
    say = progress
    rng = random.Random("%s-%s" % (args.seed, mode))
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [RecordingNode(a, SITE_KEY, phase=(a - 1) % 3, current_mA=3000 + 97 * a) for a in range(1, args.nodes + 1)]
    by_addr = {n.addr: n for n in nodes}
    children = Children()
    res: Results = {
        "mode": mode,
        "nodes": args.nodes,
        "poll_period_s": args.poll_period,
        "kills": [],
        "noise": [],
        "outage_s": args.outage_s,
    }
    summary_period = args.interval_period if mode == "interval" else None
    raw_batch = args.raw_batch_s if mode == "raw" else None
    res["batching"] = ("raw_batch_s %g" % args.raw_batch_s) if mode == "raw" else ("period %d s" % args.interval_period)
    try:
        # Paced at 115200 baud: replies reach the gateway in chunks, so a noise burst can land inside one.
        with LocalBroker(folder / "broker", persistence=True) as broker, SimBus(nodes, baud=115200, pace=True) as sim:
            server = start_server(children, broker, folder, client_id="faults-server")
            cfg = write_config(
                folder,
                SITE_KEY,
                gateway_toml(
                    sim.port,
                    [n.addr for n in nodes],
                    broker,
                    site="fault-site",
                    transformer="tx-%d" % len(nodes),
                    bus={"poll_period_s": args.poll_period, "reply_timeout_ms": args.reply_timeout_ms},
                    balancer={"period_s": args.balancer_period_s},
                    uplink={
                        "mode": mode,
                        "raw_batch_s": raw_batch,
                        "summary_period_s": summary_period,
                        "keepalive_s": args.keepalive_s,
                    },
                ),
                name="gateway.toml",
            )
            gw = GatewayProc(children, cfg, folder / "gateway.log", "debug", on_restart=say)
            sched = Schedule(gw)
            guard = args.restart_s + args.margin_s  # the gateway is up when the broker returns
            segments = [
                (args.margin_s, args.pre_s - 1.0),
                (args.pre_s + 1.0, args.pre_s + args.outage_s - guard),
                (args.pre_s + args.outage_s + args.margin_s, args.pre_s + args.outage_s + args.post_s - args.margin_s),
            ]
            kill_at = kill_times(rng, segments, args.kills, args.restart_s + 2.0)
            say(
                "%s: %d nodes, poll every %g s, %d SIGKILLs at %s s, broker down %g..%g s"
                % (
                    mode,
                    args.nodes,
                    args.poll_period,
                    len(kill_at),
                    ", ".join("%.0f" % t for t in kill_at),
                    args.pre_s,
                    args.pre_s + args.outage_s,
                )
            )

            def kill() -> None:
                t = time.time()
                if not gw.running:
                    return
                assert gw.started_t is not None  # running: it was started
                up = t - gw.started_t
                gw.kill()
                res["kills"].append({"t": t, "uptime_s": up})
                say("SIGKILL %d (gateway up %.1f s)" % (len(res["kills"]), up))
                sched.at(t + args.restart_s, _Restart(gw))

            def noise() -> None:
                t = time.time()
                for _ in range(5):  # 40 random bytes, false SYNCs among them, 0.1 s apart
                    sim.inject(bytes(rng.getrandbits(8) | (0xA5 if rng.random() < 0.2 else 0) for _ in range(40)))
                    time.sleep(0.1)
                res["noise"].append((t, time.time()))

            def noise_in(t0: float, t1: float) -> None:
                t = t0 + rng.uniform(0.3, 1.0) * args.noise_every_s
                while t < t1:
                    sched.at(t, noise)
                    t += rng.uniform(0.7, 1.3) * args.noise_every_s

            t0 = time.time()
            res["t0"] = t0
            gw.start()
            # Before the outage.
            for k in kill_at:
                if k < args.pre_s:
                    sched.at(t0 + k, kill)
            noise_in(t0, t0 + args.pre_s)
            sched.run_until(t0 + args.pre_s)
            broker.stop()
            t_down = time.time()
            say("broker stopped: outage of %g s" % args.outage_s)
            for k in kill_at:
                if args.pre_s <= k < args.pre_s + args.outage_s:
                    sched.at(t_down + k - args.pre_s, kill)
            noise_in(t_down, t_down + args.outage_s)
            sched.run_until(t_down + args.outage_s)
            # The broker comes back: time the drain of what the buffer then holds.
            broker.start()
            res["drain"] = measure_drain(folder / "buffer.db", gw, mode, args)
            d = res["drain"]
            say(
                "drain: %d rows (%d readings) backlog; reconnect %.1f s after the broker, gone %.3f s later"
                % (d["rows"], d["readings"], d.get("reconnect_s", float("nan")), d.get("all_s", float("nan")))
            )
            t_up = time.time()
            for k in kill_at:
                if k >= args.pre_s + args.outage_s:
                    sched.at(t_up + k - args.pre_s - args.outage_s, kill)
            noise_in(t_up, t_up + args.post_s)
            sched.run_until(t_up + args.post_s)
            # The end: nodes fall silent, the buffer drains, SIGTERM as systemd stops it.
            sched.run_until(time.time())
            time.sleep(3.0)
            for n in nodes:
                n.mode = "silent"
            res["t_silent"] = time.time()
            wait = args.raw_batch_s + 60 if mode == "raw" else args.interval_period + GRACE_S + 60
            say("nodes silent; waiting up to %.0f s for the buffer to drain" % wait)
            deadline = time.time() + wait
            while time.time() < deadline:
                gw.check()
                left = query_ro(
                    folder / "buffer.db", "SELECT COUNT(*) FROM outbox WHERE kind IN ('reading', 'interval')"
                )
                if left and left[0][0] == 0:
                    break
                time.sleep(0.5)
            res["final_exit"] = gw.stop()
            res["starts"] = gw.starts
            res["crashes"] = gw.crashes
            say("gateway stopped (exit %r); waiting for the server to catch up" % res["final_exit"])
            wait_server(folder, args.server_still_s)
            children.end(server)
    finally:
        children.end_all()
    res.update(analyse(folder, mode, nodes, by_addr, res))
    return res


class _Restart:
    """A scheduled restart of the gateway (the scheduler waits for pending ones)."""

    restart = True

    def __init__(self, gw: GatewayProc):
        self.gw = gw

    def __call__(self) -> None:
        self.gw.start()


def measure_drain(db: Path, gw: GatewayProc, mode: str, args: FaultPlan) -> dict[str, Any]:
    """From the broker's start: the rows in the buffer then, until the last of them is deleted (acked).

    The backlog is what the uplink sends as it is: every row in raw mode; in
    interval mode every row but the readings (they wait for their period's
    end and leave as aggregates).
    """
    t_b = time.time()
    rows = query_ro(db, "SELECT id, kind, sender, seq FROM outbox ORDER BY id")
    if mode == "interval":
        rows = [r for r in rows if r[1] != "reading"]
    out: dict[str, Any] = {"t_broker": t_b, "rows": len(rows), "readings": sum(1 for r in rows if r[1] == "reading")}
    out["backlog"] = [(r[1], r[2], r[3]) for r in rows]
    if not rows:
        return out
    max_id = rows[-1][0]
    max_reading = max((r[0] for r in rows if r[1] == "reading"), default=0)
    not_kind = "reading" if mode == "interval" else ""
    con: sqlite3.Connection | None = None
    deadline = t_b + args.drain_timeout_s
    try:
        while time.time() < deadline:
            gw.check()
            try:
                if con is None:
                    con = _open_ro(db)
                n_read, n_all = con.execute(
                    "SELECT (SELECT COUNT(*) FROM outbox WHERE kind = 'reading' AND id <= ?),"
                    " (SELECT COUNT(*) FROM outbox WHERE kind != ? AND id <= ?)",
                    (max_reading, not_kind, max_id),
                ).fetchone()
            except sqlite3.OperationalError:
                n_read, n_all = 1, 1
            now = time.time()
            if n_read == 0 and "t_readings" not in out:
                out["t_readings"] = now
            if n_all == 0:
                out["t_all"] = now
                break
            time.sleep(0.01)
    finally:
        if con is not None:
            con.close()
    # The uplink's reconnect, from its log line (after the broker's start).
    for t in connect_times(gw.log_text()):
        if t >= t_b - 0.001:
            out["t_connect"] = t
            break
    if "t_connect" in out:
        out["reconnect_s"] = out["t_connect"] - t_b
    for key in ("readings", "all"):
        if "t_" + key in out:
            out[key + "_s"] = max(out["t_" + key] - out.get("t_connect", t_b), 1e-3)
            out[key + "_from_broker_s"] = out["t_" + key] - t_b
    return out


def polling_rounds(log_text: str, nodes: int, gap_s: float = 1.5) -> list[float]:
    """Durations of whole polling rounds (every node's reading buffered), from the journal's timestamps.

    A round is a run of "buffered reading" lines with no gap over ``gap_s``;
    its duration, first to last line, is the polls and the per-reading buffer
    commits (fsync) of ``nodes - 1`` nodes.
    """
    rounds: list[float] = []
    first: float | None = None
    last: float | None = None
    n = 0
    for t in buffered_times(log_text):
        if last is not None and t - last > gap_s:
            if n >= nodes and first is not None:
                rounds.append(last - first)
            first, n = None, 0
        if first is None:
            first = t
        last = t
        n += 1
    if n >= nodes and first is not None and last is not None:
        rounds.append(last - first)
    return sorted(rounds)


# The server's stored records (phaseserver's typed tables) as (kind, src, seq, readings it stands for, received_s).
SERVER_ROWS = (
    "SELECT 'reading', src, seq, 1, received_s FROM reading"
    " UNION ALL SELECT 'interval', src, seq, n, received_s FROM aggregate"
    " UNION ALL SELECT 'summary', src, seq, NULL, received_s FROM summary"
    " UNION ALL SELECT kind, src, seq, NULL, received_s FROM record"
)
SERVER_ROW_COUNT = (
    "SELECT (SELECT COUNT(*) FROM reading) + (SELECT COUNT(*) FROM aggregate) + (SELECT COUNT(*) FROM summary)"
    " + (SELECT COUNT(*) FROM record)"
)


def wait_server(folder: Path, still_s: float = 5.0, timeout: float = 90) -> None:
    """Until the server's record count holds still for ``still_s`` (it acknowledges after each commit)."""
    db = folder / "server.db"
    last: int | None = None
    since = time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = query_ro(db, SERVER_ROW_COUNT)
        n = int(rows[0][0]) if rows else 0
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= still_s:
            return
        time.sleep(0.5)


def analyse(
    folder: Path, mode: str, nodes: Sequence[RecordingNode], by_addr: dict[int, RecordingNode], res: Results
) -> Results:
    """What the logs and the databases of a finished run say was sent, buffered, stored, held and lost."""
    log_text = (folder / "gateway.log").read_text(errors="replace")
    logged = [(a + 256 * g, s) for a, g, s in buffered_readings(log_text)]
    buffered = set(logged)
    sent = {(n.addr, s): t for n in nodes for s, t in n.sent.items()}  # generation 0: src = address
    held_rows = query_ro(folder / "buffer.db", "SELECT kind, sender, seq, payload FROM outbox")
    held = {(r[1], r[2]) for r in held_rows if r[0] == "reading"}
    out: Results = {
        "sent": len(sent),
        "buffered": len(buffered),
        "logged_twice": len(logged) - len(buffered),
        "held": len(held),
        "held_rows": len(held_rows),
        "errors": len(re.findall(r"^\S+ \S+ (ERROR|CRITICAL) ", log_text, re.M)),
        "tracebacks": log_text.count("Traceback (most recent call last)"),
        "connects": len(connect_times(log_text)),
        "rounds": polling_rounds(log_text, len(nodes)),
    }
    counters = dict(query_ro(folder / "server.db", "SELECT name, SUM(value) FROM ingest_counter GROUP BY name"))
    out["duplicates"] = counters.get("duplicates", 0)
    out["invalid"] = counters.get("invalid_batches", 0) + counters.get("invalid_records", 0)
    server = query_ro(folder / "server.db", SERVER_ROWS)
    if mode == "raw":
        readings = [(r[1], r[2]) for r in server if r[0] == "reading"]
        stored = set(readings)
        out["stored"] = len(stored)
        out["stored_twice"] = len(readings) - len(stored)
        out["lost"] = sorted(buffered - stored - held)
        out["phantom"] = sorted(stored - set(sent))
        # A kill between a commit and its log line: in the buffer (and sent on), not in the log.
        out["unlogged"] = len((stored | held) - buffered)
        accounted = buffered | stored | held
    else:
        # Interval mode: readings reach the server as per-node aggregates (n readings each).
        from phasecore import cbor

        at_server: dict[int, int] = {}
        n_intervals = 0
        for kind, src, _seq, n, _r in server:
            if kind == "interval":
                at_server[src] = at_server.get(src, 0) + n
                n_intervals += 1
        held_n: dict[int, int] = {}
        for kind, sender, _seq, payload in held_rows:
            if kind == "reading":
                held_n[sender] = held_n.get(sender, 0) + 1
            elif kind == "interval":
                held_n[sender] = held_n.get(sender, 0) + cbor.loads(payload)[2]
        per_src: dict[int, int] = {}
        for src, _seq in buffered:
            per_src[src] = per_src.get(src, 0) + 1
        lost = unlogged = 0
        for src in set(per_src) | set(at_server) | set(held_n):
            diff = per_src.get(src, 0) - at_server.get(src, 0) - held_n.get(src, 0)
            if diff > 0:
                lost += diff
            else:
                unlogged -= diff
        out["stored"] = sum(at_server.values())
        out["intervals"] = n_intervals
        out["stored_twice"] = None  # readings are not stored one by one (an aggregate per node and period)
        out["lost"] = list(range(lost))
        out["phantom"] = None  # not checkable: an aggregate does not list its readings' seqs
        out["unlogged"] = unlogged
        out["held"] = sum(held_n.values())
        accounted = buffered
    # Sent but never buffered: put down to the kill that followed within 3 s, or the noise burst around it.
    missing = sorted((t, key) for key, t in sent.items() if key not in accounted)
    kills = [k["t"] for k in res["kills"]]
    per_kill = [0] * len(kills)
    by_noise = other = 0
    other_keys = []
    for t, key in missing:
        k = next((i for i, tk in enumerate(kills) if 0 <= tk - t <= 3.0), None)
        if k is not None:
            per_kill[k] += 1
        elif any(a - 0.5 <= t <= b + 0.5 for a, b in res["noise"]):
            by_noise += 1
        elif t >= res.get("t_silent", float("inf")) - 1:
            other += 1  # the last polls before the nodes fell silent
            other_keys.append(key)
        else:
            other += 1
            other_keys.append(key)
    out.update(
        never_buffered=len(missing), per_kill=per_kill, by_noise=by_noise, other=other, other_keys=other_keys[:20]
    )
    # Drain: how many PUBLISHes carried the backlog (distinct arrival times at the server).
    d = res.get("drain", {})
    backlog = set(d.pop("backlog", ()))
    if backlog:
        arrivals = {r[4] for r in server if (r[0], r[1], r[2]) in backlog}
        reading_arrivals = {r[4] for r in server if r[0] == "reading" and (r[0], r[1], r[2]) in backlog}
        d["publishes"] = len(arrivals)
        d["reading_publishes"] = len(reading_arrivals)
    return out
