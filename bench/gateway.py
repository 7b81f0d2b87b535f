"""Gateway benchmark (issue 4's targets): nothing lost under SIGKILLs and a broker outage; controller CPU.

    .venv/bin/python bench/gateway.py [faults|cpu|all] [--quick] [options]

Prints tables on stdout (progress on stderr), asserts nothing; exit status 1
if a target is missed. ``--quick`` runs a short smoke version of each part
(under a minute each). Every part runs the real thing in separate processes:
``phasekit gateway run`` on a TOML file (``python -m phasekit.cli``, this
checkout's tiers on PYTHONPATH), sealed simulated nodes on an RS-485 line (a
pty, ``phasekit.sim.bus_nodes``), Mosquitto with mutual TLS
(``phasekit.broker``) and the server's ingest (``python -m phaseserver``)
into SQLite.

faults: 100 nodes polled every 10 s (``--poll-period``) on a line paced at
115200 baud (so a noise burst can land inside a reply), uplink in raw mode
(every reading goes to the server on its own, so each one can be counted)
and, if asked, interval mode (``--modes raw,interval``). The gateway is
SIGKILLed 20 times at seeded random points and restarted ``--restart-s``
later (systemd's RestartSec); the broker is stopped for 10 minutes in the
middle (``--outage-s``); bursts of noise (false SYNC bytes among them) hit the
line every ``--noise-every-s``. Ground truth: the gateway's debug line
"buffered reading node=.. gen=.. seq=.." written right after each buffer
commit, and the sequence numbers each node sealed (with the time). At the end
the nodes fall silent, the gateway drains and is stopped with SIGTERM, and the
server catches up. Reported: readings sent, buffered, at the server, stored
twice, duplicates the server dropped, held in the Pi's buffer (not lost),
lost (buffered, neither at the server nor held: must be 0), at the server but
never sent (must be 0), and readings sent but never buffered, each put down to
the kill or the noise burst that interrupted it. Drain: when the broker comes
back, the rows then in the buffer are the backlog; timed from the broker's
start and from the uplink's reconnect (gateway log) to the last backlog
reading deleted from the buffer (acknowledged by the broker), polled from the
buffer file every 10 ms. PUBLISHes are counted at the server (the backlog's
records arrive in as many batches as were published). No kill falls into the
drain, nor into the ``--restart-s`` + 5 s before the broker returns.

cpu: 100 nodes at 1-minute readings (poll_period_s = 60) and at the default
10 s, each for ``--minutes`` (default 5), uplink connected in the default
interval mode, balancer on with a generated feeder's evening load (the nodes'
currents follow it minute by minute; phases as built, unevenly populated), the
line paced at 115200 baud (replies arrive in chunks of 4 characters, as from a
UART FIFO). CPU time of the gateway process (user + system, all its threads,
from /proc/<pid>/stat) over wall time, as % of one core: the whole run, the
start (the first ``--startup-s``: interpreter, imports, keys, TLS, first
round) and the steady state, and the worst minute of the steady state; RSS
(VmRSS at the end, VmHWM the peak). The server's ingest process is measured
the same way, for interest.
"""

import argparse
import heapq
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TIERS = ("shared", "firmware", "gateway", "server-min", "tools")
for _sub in _TIERS:
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from phasekit.broker import LocalBroker  # noqa: E402  (after the path set-up)
from phasekit.sim.bus_nodes import SimBus, SimNode  # noqa: E402

SITE_KEY = bytes(range(32))  # synthetic
TARGET_CPU_PCT = 10.0
TARGET_DRAIN_PER_S = 5000
TARGET_KILLS = 20
TARGET_OUTAGE_S = 600
BUFFERED = re.compile(r"buffered reading node=(\d+) gen=(\d+) seq=(\d+)")
CONNECTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO phasegate\.uplink: uplink: connected", re.M)
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) DEBUG phasegate\.journal: buffered reading", re.M)
MOVED = re.compile(r"node \d+: move \S+ -> \S+ acknowledged")
GRACE_S = 30  # phasegate.uplink's aggregation grace
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), text))
    sys.stderr.flush()


# ------------------------------------------------------------------ processes

class Children:
    """The subprocesses of one part: started here, each ended here (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in _TIERS))
        self.procs = []

    def start(self, args, log):
        p = subprocess.Popen([sys.executable, *args], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                             env=self.env)
        self.procs.append(p)
        return p

    def end(self, p, timeout=20):
        """SIGTERM and wait; SIGKILL if it does not stop. Returns the exit code."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say("pid %d did not stop within %d s of SIGTERM: SIGKILL" % (p.pid, timeout))
                p.kill()
                p.wait()
        return p.returncode

    def end_all(self):
        for p in self.procs:
            if p.poll() is None:
                self.end(p, timeout=10)


def proc_cpu_s(pid):
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat fields 14, 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid):
    """VmRSS and VmHWM in MB, and the thread count, from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
            elif key == "Threads":
                out[key] = int(value)
    return out


def write_config(folder, port, broker, addrs, poll_period_s, mode, raw_batch_s=None, summary_period_s=None,
                 reply_timeout_ms=None, balancer_period_s=None):
    """The gateway TOML; keys left out take the shipped defaults (phasegate.config)."""
    key = folder / "site.key"
    key.write_text(SITE_KEY.hex())
    os.chmod(key, 0o600)
    bus = ["port = \"%s\"" % port, "nodes = %r" % list(addrs), "poll_period_s = %r" % poll_period_s]
    if reply_timeout_ms is not None:
        bus.append("reply_timeout_ms = %d" % reply_timeout_ms)
    uplink = ["host = \"%s\"" % broker.host, "port = %d" % broker.port, "ca = \"%s\"" % broker.tls.ca,
              "cert = \"%s\"" % broker.tls.client_cert, "key = \"%s\"" % broker.tls.client_key,
              "mode = \"%s\"" % mode]
    if raw_batch_s is not None:
        uplink.append("raw_batch_s = %r" % raw_batch_s)
    if summary_period_s is not None:
        uplink.append("summary_period_s = %r" % summary_period_s)
    balancer = ["period_s = %d" % balancer_period_s] if balancer_period_s else []
    text = ("[site]\nid = \"bench-site\"\ntransformer = \"tx-100\"\nkey_file = \"site.key\"\n\n"
            "[bus]\n%s\n\n[balancer]\n%s\n\n[store]\npath = \"buffer.db\"\n\n[uplink]\n%s\n"
            % ("\n".join(bus), "\n".join(balancer), "\n".join(uplink)))
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def start_server(children, broker, folder):
    tls = broker.tls
    log = open(folder / "server.log", "a")
    p = children.start(["-m", "phaseserver", "--host", broker.host, "--port", str(broker.port), "--ca", str(tls.ca),
                        "--cert", str(tls.client_cert), "--key", str(tls.client_key),
                        "--db", str(folder / "server.db"), "--client-id", "bench-gateway-server"], log)
    log.close()  # the child has its own descriptor
    time.sleep(1.5)  # subscribed (persistent session) before anything is published
    if p.poll() is not None:
        raise RuntimeError("the server exited at start: %s" % (folder / "server.log").read_text()[-2000:])
    return p


class GatewayProc:
    """``phasekit gateway run`` restarted as often as needed, every run appending to one log."""

    def __init__(self, children, cfg, log_path, level):
        self.children = children
        self.cfg = cfg
        self.log_path = log_path
        self.level = level
        self.proc = None
        self.starts = 0
        self.started_t = None
        self.crashes = []  # (time, exit code) of exits nobody asked for

    def start(self):
        with open(self.log_path, "a") as log:
            self.proc = self.children.start(["-m", "phasekit.cli", "gateway", "run", str(self.cfg),
                                             "--log-level", self.level], log)
        self.starts += 1
        self.started_t = time.time()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check(self):
        """Note an exit nobody asked for (a crash) and start again at once."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes.append((time.time(), self.proc.returncode))
            say("gateway exited by itself with code %r: restarting" % self.proc.returncode)
            self.proc = None
            self.start()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self):
        code = self.children.end(self.proc, timeout=30)
        self.proc = None
        return code


def _ro(db):
    return sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)


def _query(db, sql, args=()):
    if not Path(db).exists():
        return []
    con = _ro(db)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


# ------------------------------------------------------------------ faults

class RecordingNode(SimNode):
    """A sealed node that remembers when it sealed each reading (seq -> time.time())."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = {}

    def reading_payload(self):
        payload = super().reading_payload()
        self.sent[self.counter.value - 1] = time.time()
        return payload


class Schedule:
    """Timed actions (absolute time.time()), run in order; the gateway is checked between them."""

    def __init__(self, gw):
        self.gw = gw
        self._heap = []
        self._n = 0

    def at(self, t, fn):
        self._n += 1
        heapq.heappush(self._heap, (t, self._n, fn))

    def run_until(self, t_end):
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


def kill_times(rng, segments, k, spacing):
    """``k`` seeded uniform times over ``segments`` [(start, end), ...] on one time line, ``spacing`` apart."""
    total = sum(b - a for a, b in segments)
    if total <= 0 or k * spacing > total:
        raise SystemExit("bench/gateway.py: %d kills %.0f s apart do not fit in %.0f s of run: lengthen it"
                         % (k, spacing, total))
    for _ in range(5000):
        xs = sorted(rng.uniform(0, total) for _ in range(k))
        out = []
        for x in xs:
            for a, b in segments:
                if x <= b - a:
                    out.append(a + x)
                    break
                x -= b - a
        if all(b - a >= spacing for a, b in zip(out, out[1:])):
            return out
    raise SystemExit("bench/gateway.py: could not place %d kills %.0f s apart: lengthen the run" % (k, spacing))


def run_faults(args, mode, folder):
    """One fault run in ``mode`` ("raw" or "interval"); returns the results dict."""
    rng = random.Random("%s-%s" % (args.seed, mode))
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [RecordingNode(a, SITE_KEY, phase=(a - 1) % 3, current_mA=3000 + 97 * a)
             for a in range(1, args.fault_nodes + 1)]
    by_addr = {n.addr: n for n in nodes}
    children = Children()
    res = {"mode": mode, "nodes": args.fault_nodes, "poll_period_s": args.poll_period, "kills": [], "noise": [],
           "outage_s": args.outage_s}
    summary_period = args.interval_period if mode == "interval" else None
    raw_batch = args.raw_batch_s if mode == "raw" else None
    res["batching"] = ("raw_batch_s %g" % raw_batch) if mode == "raw" else ("period %d s" % summary_period)
    try:
        # Paced at 115200 baud: replies reach the gateway in chunks, so a noise burst can land inside one.
        with LocalBroker(folder / "broker", persistence=True) as broker, \
                SimBus(nodes, baud=115200, pace=True) as sim:
            server = start_server(children, broker, folder)
            cfg = write_config(folder, sim.port, broker, [n.addr for n in nodes], args.poll_period, mode,
                               raw_batch_s=raw_batch, summary_period_s=summary_period,
                               reply_timeout_ms=args.reply_timeout_ms)
            gw = GatewayProc(children, cfg, folder / "gateway.log", "debug")
            sched = Schedule(gw)
            guard = args.restart_s + 5  # the gateway is up when the broker returns
            segments = [(5.0, args.pre_s - 1.0),
                        (args.pre_s + 1.0, args.pre_s + args.outage_s - guard),
                        (args.pre_s + args.outage_s + 5.0, args.pre_s + args.outage_s + args.post_s - 5.0)]
            plan = kill_times(rng, segments, args.kills, args.restart_s + 2.0)
            say("%s: %d nodes, poll every %g s, %d SIGKILLs at %s s, broker down %g..%g s"
                % (mode, args.fault_nodes, args.poll_period, len(plan), ", ".join("%.0f" % t for t in plan),
                   args.pre_s, args.pre_s + args.outage_s))

            def kill():
                t = time.time()
                if not gw.running:
                    return
                up = t - gw.started_t
                gw.kill()
                res["kills"].append({"t": t, "uptime_s": up})
                say("SIGKILL %d (gateway up %.1f s)" % (len(res["kills"]), up))
                sched.at(t + args.restart_s, _Restart(gw))

            def noise():
                t = time.time()
                for _ in range(5):  # 40 random bytes, false SYNCs among them, 0.1 s apart
                    sim.inject(bytes(rng.getrandbits(8) | (0xA5 if rng.random() < 0.2 else 0) for _ in range(40)))
                    time.sleep(0.1)
                res["noise"].append((t, time.time()))

            def noise_in(t0, t1):
                t = t0 + rng.uniform(0.3, 1.0) * args.noise_every_s
                while t < t1:
                    sched.at(t, noise)
                    t += rng.uniform(0.7, 1.3) * args.noise_every_s

            t0 = time.time()
            res["t0"] = t0
            gw.start()
            # Before the outage.
            for k in plan:
                if k < args.pre_s:
                    sched.at(t0 + k, kill)
            noise_in(t0, t0 + args.pre_s)
            sched.run_until(t0 + args.pre_s)
            broker.stop()
            t_down = time.time()
            say("broker stopped: outage of %g s" % args.outage_s)
            for k in plan:
                if args.pre_s <= k < args.pre_s + args.outage_s:
                    sched.at(t_down + k - args.pre_s, kill)
            noise_in(t_down, t_down + args.outage_s)
            sched.run_until(t_down + args.outage_s)
            # The broker comes back: time the drain of what the buffer then holds.
            broker.start()
            res["drain"] = measure_drain(folder / "buffer.db", gw, mode, args)
            d = res["drain"]
            say("drain: %d rows (%d readings) backlog; reconnect %.1f s after the broker, gone %.3f s later"
                % (d["rows"], d["readings"], d.get("reconnect_s", float("nan")), d.get("all_s", float("nan"))))
            t_up = time.time()
            for k in plan:
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
                left = _query(folder / "buffer.db", "SELECT COUNT(*) FROM outbox WHERE kind IN ('reading', 'interval')")
                if left and left[0][0] == 0:
                    break
                time.sleep(0.5)
            res["final_exit"] = gw.stop()
            res["starts"] = gw.starts
            res["crashes"] = gw.crashes
            say("gateway stopped (exit %r); waiting for the server to catch up" % res["final_exit"])
            wait_server(folder, 3.0 if args.quick else 5.0)
            children.end(server)
    finally:
        children.end_all()
    res.update(analyse(folder, mode, nodes, by_addr, res))
    return res


class _Restart:
    """A scheduled restart of the gateway (the scheduler waits for pending ones)."""

    restart = True

    def __init__(self, gw):
        self.gw = gw

    def __call__(self):
        self.gw.start()


def measure_drain(db, gw, mode, args):
    """From the broker's start: the rows in the buffer then, until the last of them is deleted (acked).

    The backlog is what the uplink sends as it is: every row in raw mode; in
    interval mode every row but the readings (they wait for their period's
    end and leave as aggregates).
    """
    t_b = time.time()
    rows = _query(db, "SELECT id, kind, sender, seq FROM outbox ORDER BY id")
    if mode == "interval":
        rows = [r for r in rows if r[1] != "reading"]
    out = {"t_broker": t_b, "rows": len(rows), "readings": sum(1 for r in rows if r[1] == "reading")}
    out["backlog"] = [(r[1], r[2], r[3]) for r in rows]
    if not rows:
        return out
    max_id = rows[-1][0]
    max_reading = max((r[0] for r in rows if r[1] == "reading"), default=0)
    not_kind = "reading" if mode == "interval" else ""
    con = None
    deadline = t_b + args.drain_timeout_s
    try:
        while time.time() < deadline:
            gw.check()
            try:
                if con is None:
                    con = _ro(db)
                n_read, n_all = con.execute(
                    "SELECT (SELECT COUNT(*) FROM outbox WHERE kind = 'reading' AND id <= ?),"
                    " (SELECT COUNT(*) FROM outbox WHERE kind != ? AND id <= ?)",
                    (max_reading, not_kind, max_id)).fetchone()
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
    text = Path(gw.log_path).read_text(errors="replace")
    for m in CONNECTED.finditer(text):
        t = _stamp(m.group(1), m.group(2))
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


def _stamp(date, ms):
    return time.mktime(time.strptime(date, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000.0


def polling_rounds(log_text, nodes, gap_s=1.5):
    """Durations of whole polling rounds (every node's reading buffered), from the journal's timestamps.

    A round is a run of "buffered reading" lines with no gap over ``gap_s``;
    its duration, first to last line, is the polls and the per-reading buffer
    commits (fsync) of ``nodes - 1`` nodes.
    """
    rounds, first, last, n = [], None, None, 0
    for m in STAMPED.finditer(log_text):
        t = _stamp(m.group(1), m.group(2))
        if last is not None and t - last > gap_s:
            if n >= nodes:
                rounds.append(last - first)
            first, n = None, 0
        if first is None:
            first = t
        last = t
        n += 1
    if n >= nodes:
        rounds.append(last - first)
    return sorted(rounds)


def wait_server(folder, still_s=5.0, timeout=90):
    """Until the server's record count holds still for ``still_s`` (it acknowledges after each commit)."""
    db = folder / "server.db"
    last, since = None, time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = _query(db, "SELECT COUNT(*) FROM record")
        n = n[0][0] if n else 0
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= still_s:
            return
        time.sleep(0.5)


def analyse(folder, mode, nodes, by_addr, res):
    log_text = (folder / "gateway.log").read_text(errors="replace")
    logged = [(int(n) + 256 * int(g), int(s)) for n, g, s in BUFFERED.findall(log_text)]
    buffered = set(logged)
    sent = {(n.addr, s): t for n in nodes for s, t in n.sent.items()}  # generation 0: src = address
    held_rows = _query(folder / "buffer.db", "SELECT kind, sender, seq, payload FROM outbox")
    held = {(r[1], r[2]) for r in held_rows if r[0] == "reading"}
    out = {"sent": len(sent), "buffered": len(buffered), "logged_twice": len(logged) - len(buffered),
           "held": len(held), "held_rows": len(held_rows),
           "errors": len(re.findall(r"^\S+ \S+ (ERROR|CRITICAL) ", log_text, re.M)),
           "tracebacks": log_text.count("Traceback (most recent call last)"),
           "connects": len(CONNECTED.findall(log_text)), "rounds": polling_rounds(log_text, len(nodes))}
    counters = dict(_query(folder / "server.db", "SELECT name, SUM(value) FROM counter GROUP BY name"))
    out["duplicates"] = counters.get("duplicates", 0)
    out["invalid"] = counters.get("invalid_batches", 0) + counters.get("invalid_records", 0)
    server = _query(folder / "server.db", "SELECT kind, src, seq, n, received_s FROM record")
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

        at_server, n_intervals = {}, 0
        for kind, src, _seq, n, _r in server:
            if kind == "interval":
                at_server[src] = at_server.get(src, 0) + n
                n_intervals += 1
        held_n = {}
        for kind, sender, _seq, payload in held_rows:
            if kind == "reading":
                held_n[sender] = held_n.get(sender, 0) + 1
            elif kind == "interval":
                held_n[sender] = held_n.get(sender, 0) + cbor.loads(payload)[2]
        per_src = {}
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
    out.update(never_buffered=len(missing), per_kill=per_kill, by_noise=by_noise, other=other,
               other_keys=other_keys[:20])
    # Drain: how many PUBLISHes carried the backlog (distinct arrival times at the server).
    d = res.get("drain", {})
    backlog = set(d.pop("backlog", ()))
    if backlog:
        arrivals = {r[4] for r in server if (r[0], r[1], r[2]) in backlog}
        reading_arrivals = {r[4] for r in server if r[0] == "reading" and (r[0], r[1], r[2]) in backlog}
        d["publishes"] = len(arrivals)
        d["reading_publishes"] = len(reading_arrivals)
    return out


# ------------------------------------------------------------------ cpu

class FeederNode(SimNode):
    """A node whose current follows a generated feeder house, minute by minute from 18:00."""

    def __init__(self, addr, feeder, t0, **kw):
        super().__init__(addr, SITE_KEY, phase=int(feeder.phase[addr - 1]) % 3, **kw)
        self.feeder = feeder
        self.t0 = t0

    def reading_payload(self):
        m = (18 * 60 + int((time.time() - self.t0) // 60)) % 1440
        kw = abs(float(self.feeder.load_kw[self.addr - 1, m]))
        pf = max(0.3, min(1.0, float(self.feeder.pf[self.addr - 1, m])))
        self.current_mA = min(99000, int(kw * 1e6 / (231.4 * pf)))
        return super().reading_payload()


def run_cpu(args, poll_period_s, folder):
    from phasekit.feeder.generate import generate

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    feeder = generate(args.nodes, seed=args.seed)
    nodes = [FeederNode(a, feeder, t0) for a in range(1, args.nodes + 1)]
    children = Children()
    samples = {"gateway": [], "server": []}
    try:
        with LocalBroker(folder / "broker") as broker, SimBus(nodes, baud=115200, pace=True) as sim:
            server = start_server(children, broker, folder)
            cfg = write_config(folder, sim.port, broker, [n.addr for n in nodes], poll_period_s, "interval")
            gw = GatewayProc(children, cfg, folder / "gateway.log", "info")
            gw.start()
            pids = {"gateway": gw.proc.pid, "server": server.pid}
            wall = args.minutes * 60.0
            say("cpu: %d nodes polled every %g s, interval uplink, %.1f min" % (args.nodes, poll_period_s, wall / 60))
            next_t = gw.started_t
            while True:
                now = time.time()
                if gw.proc.poll() is not None:
                    raise RuntimeError("the gateway exited during the CPU run: see %s" % (folder / "gateway.log"))
                for name, pid in pids.items():
                    try:
                        samples[name].append((now, proc_cpu_s(pid), proc_status(pid)))
                    except OSError:
                        pass
                if now - gw.started_t >= wall:
                    break
                next_t += 1.0
                time.sleep(max(0.0, next_t - time.time()))
            polls = sum(n.polls for n in nodes)
            exit_code = gw.stop()
            children.end(server)
    finally:
        children.end_all()
    log_text = (folder / "gateway.log").read_text(errors="replace")
    out = {"poll_period_s": poll_period_s, "minutes": args.minutes, "polls": polls, "exit": exit_code,
           "moves": len(MOVED.findall(log_text)), "warnings": len(re.findall(r"^\S+ \S+ WARNING ", log_text, re.M)),
           "errors": len(re.findall(r"^\S+ \S+ (ERROR|CRITICAL) ", log_text, re.M)),
           "tracebacks": log_text.count("Traceback (most recent call last)")}
    for name, s in samples.items():
        out[name] = cpu_figures(s, s[0][0] if name == "server" else gw.started_t, args.startup_s)
    return out


def cpu_figures(samples, t_start, startup_s):
    """% of one core: whole run, start, steady state, worst steady minute; RSS at the end and peak."""
    if len(samples) < 3:
        return None
    t_end, c_end, st_end = samples[-1]
    start = next((s for s in samples if s[0] - t_start >= startup_s), samples[-1])
    worst = None
    steady = [s for s in samples if s[0] >= start[0]]
    j = 0
    for t, c, _ in steady:
        while j < len(steady) and steady[j][0] - t < 60.0:
            j += 1
        if j >= len(steady):
            break
        rate = 100.0 * (steady[j][1] - c) / (steady[j][0] - t)
        worst = rate if worst is None else max(worst, rate)
    return {"total_pct": 100.0 * c_end / (t_end - t_start), "cpu_s": c_end, "wall_s": t_end - t_start,
            "startup_s": start[0] - t_start, "startup_cpu_s": start[1],
            "startup_pct": 100.0 * start[1] / max(start[0] - t_start, 1e-9),
            "steady_pct": 100.0 * (c_end - start[1]) / max(t_end - start[0], 1e-9),
            "worst_minute_pct": worst, "rss_mb": st_end.get("VmRSS", 0.0),
            "peak_rss_mb": max(s[2].get("VmHWM", 0.0) for s in samples), "threads": st_end.get("Threads", 0)}


# ------------------------------------------------------------------ report

def report_faults(results, args):
    ok = True
    print("Faults: %d nodes on one RS-485 line (pty paced at 115200 baud), polled every %g s; `phasekit gateway run`"
          " SIGKILLed and restarted %g s later;" % (args.fault_nodes, args.poll_period, args.restart_s))
    print("broker (Mosquitto, mutual TLS, persistence) stopped for %g s in the middle; noise bursts every ~%g s;"
          " server ingest into SQLite" % (args.outage_s, args.noise_every_s))
    print()
    cols = [r["mode"] for r in results]
    rows = []

    def row(label, values, target=""):
        rows.append((label, [str(v) for v in values], target))

    row("uplink batching", [r["batching"] for r in results])
    row("run length, min", ["%.1f" % ((r["t_silent"] - r["t0"]) / 60) for r in results])
    row("SIGKILLs", [len(r["kills"]) for r in results], "%d" % TARGET_KILLS)
    row("broker outage, s", [r["outage_s"] for r in results], "%d" % TARGET_OUTAGE_S)
    row("noise bursts (5 x 40 B)", [len(r["noise"]) for r in results])
    row("gateway starts / crashes", ["%d / %d" % (r["starts"], len(r["crashes"])) for r in results], "- / 0")
    row("final SIGTERM exit code", [r["final_exit"] for r in results], "0")
    row("ERROR lines / tracebacks", ["%d / %d" % (r["errors"], r["tracebacks"]) for r in results])
    row("readings sent by nodes", [r["sent"] for r in results])
    row("readings buffered (log)", [r["buffered"] for r in results])
    row("readings at the server", ["%d%s" % (r["stored"], " (in %d aggregates)" % r["intervals"]
                                             if "intervals" in r else "") for r in results])
    row("buffered, log line cut by a kill", [r["unlogged"] for r in results])
    row("held in the Pi's buffer", [r["held"] for r in results], "(not lost)")
    row("LOST (buffered, not at server)", [len(r["lost"]) for r in results], "0")
    row("at the server, never sent", ["n/a" if r["phantom"] is None else len(r["phantom"]) for r in results], "0")
    row("stored twice", ["n/a" if r["stored_twice"] is None else r["stored_twice"] for r in results], "0")
    row("duplicates dropped by server", [r["duplicates"] for r in results])
    row("invalid batches/records", [r["invalid"] for r in results], "0")
    row("whole polling rounds: median / max s", ["%s / %s" % (_median(r["rounds"]), "%.2f" % r["rounds"][-1])
                                                  if r["rounds"] else "-" for r in results])
    row("sent, never buffered", [r["never_buffered"] for r in results])
    row("  ... interrupted by a kill", [sum(r["per_kill"]) for r in results])
    row("  ... corrupted by noise", [r["by_noise"] for r in results])
    row("  ... other", [r["other"] for r in results])
    for r in results:
        ok = ok and not r["lost"] and not r["phantom"] and not r["stored_twice"] and not r["crashes"] \
            and r["final_exit"] == 0 and not r["invalid"]
    w = max(len(x[0]) for x in rows)
    cw = max(12, max(len(v) for x in rows for v in x[1]))
    head = "%-*s " % (w, "") + " ".join("%*s" % (cw, c) for c in cols) + "   target"
    print(head)
    print("-" * len(head))
    for label, values, target in rows:
        print("%-*s " % (w, label) + " ".join("%*s" % (cw, v) for v in values) + "   " + target)
    print()
    for r in results:
        print("%s: readings lost in flight per kill (kill #: n, gateway uptime at the kill): %s"
              % (r["mode"], ", ".join("%d: %d (%.0f s)" % (i + 1, n, k["uptime_s"])
                                      for i, (n, k) in enumerate(zip(r["per_kill"], r["kills"])))))
        if r["other_keys"]:
            print("%s: unexplained never-buffered readings (src, seq), first 20: %s" % (r["mode"], r["other_keys"]))
        if r["lost"] and r["mode"] == "raw":
            print("%s: LOST (src, seq), first 20: %s" % (r["mode"], r["lost"][:20]))
    print()
    print("Drain after the outage: the backlog (rows in the buffer when the broker came back: all in raw mode,"
          " all but the open period's readings in interval mode)")
    print("until its last row is deleted (acknowledged by the broker); PUBLISHes counted at the server")
    head = "%-9s %8s %7s %10s %9s %10s %9s %10s %8s %10s %12s %6s" % (
        "mode", "readings", "rows", "reconnect", "readings", "readings/s", "rows", "rows/s", "PUBLISH", "PUBLISH/s",
        "from broker", "target")
    print(head)
    print("%-9s %8s %7s %10s %9s %10s %9s %10s %8s %10s %12s" % ("", "", "", "s", "gone, s", "", "gone, s", "",
                                                                  "", "", "readings/s"))
    print("-" * len(head))
    for r in results:
        d = r["drain"]
        full = len(r["kills"]) >= TARGET_KILLS and r["outage_s"] >= TARGET_OUTAGE_S
        judged = r["mode"] == "raw"
        rate = d["readings"] / d["readings_s"] if d.get("readings") and "readings_s" in d else None
        rows_rate = d["rows"] / d["all_s"] if d.get("rows") and "all_s" in d else None
        pubs = d.get("publishes")
        if judged:
            met = rate is not None and rate >= TARGET_DRAIN_PER_S
            if full:
                ok = ok and met
            verdict = ("ok" if met else "MISSED") if full else "(%s)" % ("ok" if met else "low")
        else:
            verdict = "-"

        def num(x, fmt):
            return "-" if x is None else fmt % x

        print("%-9s %8d %7d %10s %9s %10s %9s %10s %8s %10s %12s %6s" % (
            r["mode"], d.get("readings", 0), d.get("rows", 0), num(d.get("reconnect_s"), "%.2f"),
            num(d.get("readings_s") if d.get("readings") else None, "%.3f"), num(rate, "%.0f"),
            num(d.get("all_s"), "%.3f"), num(rows_rate, "%.0f"), num(pubs, "%d"),
            num(pubs / d["all_s"] if pubs and "all_s" in d else None, "%.1f"),
            num(d["readings"] / d["readings_from_broker_s"] if d.get("readings") and "readings_from_broker_s" in d
                else None, "%.0f"), verdict))
    print()
    print("Rates are timed from the uplink's reconnect (its log line) to the last backlog row deleted (the buffer"
          " file polled every 10 ms); \"from broker\": the whole")
    print("recovery, broker start to empty, with paho's reconnect back-off (1 s doubling to 300 s while the broker"
          " is away; a restarted gateway begins at 1 s again).")
    print("A reading \"interrupted by a kill\" was sealed by its node at most 3 s before a SIGKILL and never"
          " committed: the Pi never had it, so it is not lost by the Pi;")
    print("its node's next reading carries the meter's cumulative energy on. Interval mode counts readings inside"
          " the aggregates (n per node and period).")
    print("Whole polling rounds: first to last reading of a round in the gateway log (polls at 115200 baud, 5 ms node"
          " turnaround, and one buffer commit, fsync, per reading).")
    if not all(len(r["kills"]) >= TARGET_KILLS and r["outage_s"] >= TARGET_OUTAGE_S for r in results):
        print("(short run: not the issue's scale; the drain target is judged on the full run only)")
    return ok


def _median(xs):
    return "%.2f" % xs[len(xs) // 2] if xs else "-"


def report_cpu(results, args):
    print("CPU: %d nodes, interval uplink to Mosquitto (TLS), balancer on, feeder load, line paced at 115200 baud;"
          " %% of one core (user+sys, /proc)" % args.nodes)
    print()
    head = "%-8s %-8s %6s %8s %6s %9s %9s %9s %9s %9s %8s %8s %7s %7s" % (
        "process", "poll s", "min", "polls", "moves", "total %", "start s", "start %", "steady %", "worst 1m",
        "RSS MB", "peak MB", "threads", "target")
    print(head)
    print("-" * len(head))
    ok = True
    for r in results:
        for name in ("gateway", "server"):
            f = r[name]
            if f is None:
                continue
            target = ""
            if name == "gateway" and r["poll_period_s"] == 60:
                met = f["steady_pct"] < TARGET_CPU_PCT
                ok = ok and met and r["exit"] == 0
                target = "ok" if met else "MISSED"
            print("%-8s %-8g %6.1f %8d %6s %9.2f %9.1f %9.1f %9.2f %9s %8.1f %8.1f %7d %7s" % (
                name, r["poll_period_s"], f["wall_s"] / 60, r["polls"] if name == "gateway" else 0,
                r["moves"] if name == "gateway" else "", f["total_pct"], f["startup_s"], f["startup_pct"],
                f["steady_pct"], "-" if f["worst_minute_pct"] is None else "%.2f" % f["worst_minute_pct"],
                f["rss_mb"], f["peak_rss_mb"], f["threads"], target))
    print()
    print("start: the first %g s (interpreter, imports, key derivation, TLS connect, the first polling round);"
          " steady: the rest; worst 1m: the busiest 60 s of the steady state." % args.startup_s)
    print("Target: gateway steady state under %g%% of one core at 1-minute readings. Gateway log: %s"
          % (TARGET_CPU_PCT, ", ".join("poll %g s: %d warnings, %d errors, exit %r"
                                      % (r["poll_period_s"], r["warnings"], r["errors"], r["exit"])
                                      for r in results)))
    return ok


# ------------------------------------------------------------------ main

def parse(argv):
    p = argparse.ArgumentParser(prog="bench/gateway.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  .venv/bin/python bench/gateway.py --quick\n"
                                       "  .venv/bin/python bench/gateway.py faults --outage-s 120 --kills 5\n"
                                       "  .venv/bin/python bench/gateway.py cpu --minutes 10\n")
    p.add_argument("part", nargs="?", default="all", choices=("all", "faults", "cpu"))
    p.add_argument("--quick", action="store_true", help="a short smoke run of each part (under a minute each)")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    p.add_argument("--workdir", help="keep logs and databases here (default: a temporary folder, removed)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--nodes", type=int, default=100)
    f = p.add_argument_group("faults")
    f.add_argument("--modes", default="raw", help="uplink modes to run, comma-separated: raw, interval")
    f.add_argument("--poll-period", type=float, default=10.0, help="[bus] poll_period_s (10: the default)")
    f.add_argument("--kills", type=int, default=TARGET_KILLS)
    f.add_argument("--outage-s", type=float, default=TARGET_OUTAGE_S)
    f.add_argument("--pre-s", type=float, default=150.0, help="run before the outage")
    f.add_argument("--post-s", type=float, default=150.0, help="run after the drain")
    f.add_argument("--restart-s", type=float, default=5.0, help="SIGKILL to restart (systemd RestartSec=5)")
    f.add_argument("--noise-every-s", type=float, default=30.0)
    f.add_argument("--raw-batch-s", type=float, default=1.0, help="[uplink] raw_batch_s in raw mode")
    f.add_argument("--interval-period", type=int, default=60,
                   help="[uplink] summary_period_s in interval mode (short, so aggregation meets the kills)")
    f.add_argument("--reply-timeout-ms", type=int, default=60,
                   help="[bus] reply_timeout_ms (the pty and a loaded machine, not the line, set it)")
    f.add_argument("--drain-timeout-s", type=float, default=420.0)
    c = p.add_argument_group("cpu")
    c.add_argument("--minutes", type=float, default=5.0, help="minutes per poll period")
    c.add_argument("--cpu-periods", default="60,10", help="poll periods to measure, comma-separated")
    c.add_argument("--startup-s", type=float, default=20.0)
    args = p.parse_args(argv)
    args.fault_nodes = args.nodes
    if args.quick:
        args.fault_nodes = min(args.nodes, 20)
        args.poll_period = min(args.poll_period, 2.0)
        args.kills, args.outage_s, args.pre_s, args.post_s = 3, 12.0, 10.0, 12.0
        args.restart_s, args.noise_every_s, args.drain_timeout_s = 1.0, 5.0, 30.0
        args.minutes, args.cpu_periods, args.startup_s = 0.6, "10", 10.0
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    # Both, explicitly: a process started in the background of a script inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="phasekit-bench-gateway-")
        work = Path(tmp.name)
    ok = True
    out = {}
    try:
        if args.part in ("all", "faults"):
            results = []
            for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
                if mode not in ("raw", "interval"):
                    raise SystemExit("bench/gateway.py: --modes: %r is not raw or interval" % mode)
                results.append(run_faults(args, mode, work / ("faults-" + mode)))
            ok = report_faults(results, args) and ok
            print()
            out["faults"] = results
        if args.part in ("all", "cpu"):
            results = [run_cpu(args, float(x), work / ("cpu-%s" % x.strip()))
                       for x in args.cpu_periods.split(",") if x.strip()]
            ok = report_cpu(results, args) and ok
            out["cpu"] = results
    except KeyboardInterrupt:
        say("interrupted: subprocesses ended")
        return 130
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(out, sort_keys=True, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
