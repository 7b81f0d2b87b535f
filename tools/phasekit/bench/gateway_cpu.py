"""Gateway benchmark, CPU (issue 4's target): the controller's share of a core at 100 nodes.

100 nodes at 1-minute readings (poll_period_s = 60) and at the default
10 s, each for ``--minutes`` (default 5), uplink connected in the default
interval mode, balancer on with a generated feeder's evening load (the
nodes' currents follow it minute by minute; phases as built, unevenly
populated), the line paced at 115200 baud (replies arrive in chunks of 4
characters, as from a UART FIFO). Every part is real and in its own process
(``phasekit gateway run``, Mosquitto with mutual TLS, the server's ingest).
CPU time of the gateway process (user + system, all its threads, from
/proc/<pid>/stat) over wall time, as % of one core: the whole run, the start
(the first ``--startup-s``: interpreter, imports, keys, TLS, first round)
and the steady state, and the worst minute of the steady state; RSS (VmRSS
at the end, VmHWM the peak). The server's ingest process is measured the
same way, for interest. Exit status 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasekit.bench.gateway_faults import _interruptible, _workdir
from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import GatewayProc, gateway_toml, moves_acknowledged, start_server, write_config
from phasekit.testing.processes import Children, proc_cpu_s, proc_status, say

if TYPE_CHECKING:
    from phasekit.feeder.format import Feeder

# A process sample: (time.time(), CPU seconds so far, /proc status figures).
Sample = tuple[float, float, dict[str, float]]

SITE_KEY = bytes(range(32))  # synthetic
TARGET_CPU_PCT = 10.0

EXAMPLE = """examples:
  phasekit bench gateway-cpu --quick
  phasekit bench gateway-cpu --minutes 10 --cpu-periods 60
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench gateway-cpu``."""
    p.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    p.add_argument("--workdir", help="keep logs and databases here (default: a temporary folder, removed)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--minutes", type=float, default=5.0, help="minutes per poll period")
    p.add_argument("--cpu-periods", default="60,10", help="poll periods to measure, comma-separated")
    p.add_argument("--startup-s", type=float, default=20.0)


def main(args: argparse.Namespace) -> int:
    """Run each poll period and print the table; 1 if the target is missed."""
    if args.quick:
        args.minutes, args.cpu_periods, args.startup_s = 0.6, "10", 10.0
    with _workdir(args.workdir) as work, _interruptible():
        results = [
            run_cpu(args, float(x), work / ("cpu-%s" % x.strip())) for x in args.cpu_periods.split(",") if x.strip()
        ]
    ok = report_cpu(results, args)
    if args.json:
        print(json.dumps({"cpu": results}, sort_keys=True, default=str))
    return 0 if ok else 1


class FeederNode(SimNode):
    """A node whose current follows a generated feeder house, minute by minute from 18:00."""

    def __init__(self, addr: int, feeder: Feeder, t0: float, **kw: Any):
        super().__init__(addr, SITE_KEY, phase=int(feeder.phase[addr - 1]) % 3, **kw)
        self.feeder = feeder
        self.t0 = t0

    def reading_payload(self) -> bytes:
        m = (18 * 60 + int((time.time() - self.t0) // 60)) % 1440
        kw = abs(float(self.feeder.load_kw[self.addr - 1, m]))
        pf = max(0.3, min(1.0, float(self.feeder.pf[self.addr - 1, m])))
        self.current_mA = min(99000, int(kw * 1e6 / (231.4 * pf)))
        return super().reading_payload()


def run_cpu(args: argparse.Namespace, poll_period_s: float, folder: Path) -> dict[str, Any]:
    """One run at ``poll_period_s``: the gateway's and the server's CPU figures, polls, moves, log counts."""
    from phasekit.feeder.generate import generate

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    feeder = generate(args.nodes, seed=args.seed)
    nodes = [FeederNode(a, feeder, t0) for a in range(1, args.nodes + 1)]
    children = Children()
    samples: dict[str, list[Sample]] = {"gateway": [], "server": []}
    try:
        with LocalBroker(folder / "broker") as broker, SimBus(nodes, baud=115200, pace=True) as sim:
            server = start_server(children, broker, folder, client_id="cpu-server")
            cfg = write_config(
                folder,
                SITE_KEY,
                gateway_toml(
                    sim.port,
                    [n.addr for n in nodes],
                    broker,
                    site="bench-site",
                    transformer="tx-100",
                    bus={"poll_period_s": poll_period_s},
                    uplink={"mode": "interval"},
                ),
                name="gateway.toml",
            )
            gw = GatewayProc(children, cfg, folder / "gateway.log", "info", on_restart=say)
            gw.start()
            proc, started_t = gw.proc, gw.started_t
            assert proc is not None and started_t is not None  # start() sets both
            pids = {"gateway": proc.pid, "server": server.pid}
            wall = args.minutes * 60.0
            say("cpu: %d nodes polled every %g s, interval uplink, %.1f min" % (args.nodes, poll_period_s, wall / 60))
            next_t = started_t
            while True:
                now = time.time()
                if proc.poll() is not None:
                    raise RuntimeError("the gateway exited during the CPU run: see %s" % (folder / "gateway.log"))
                for name, pid in pids.items():
                    try:
                        samples[name].append((now, proc_cpu_s(pid), proc_status(pid)))
                    except OSError:
                        pass
                if now - started_t >= wall:
                    break
                next_t += 1.0
                time.sleep(max(0.0, next_t - time.time()))
            polls = sum(n.polls for n in nodes)
            exit_code = gw.stop()
            children.end(server)
    finally:
        children.end_all()
    log_text = (folder / "gateway.log").read_text(errors="replace")
    out: dict[str, Any] = {
        "poll_period_s": poll_period_s,
        "minutes": args.minutes,
        "polls": polls,
        "exit": exit_code,
        "moves": len(moves_acknowledged(log_text)),
        "warnings": len(re.findall(r"^\S+ \S+ WARNING ", log_text, re.M)),
        "errors": len(re.findall(r"^\S+ \S+ (ERROR|CRITICAL) ", log_text, re.M)),
        "tracebacks": log_text.count("Traceback (most recent call last)"),
    }
    for name, s in samples.items():
        out[name] = cpu_figures(s, s[0][0] if name == "server" else started_t, args.startup_s)
    return out


def cpu_figures(samples: Sequence[Sample], t_start: float, startup_s: float) -> dict[str, float | None] | None:
    """% of one core: whole run, start, steady state, worst steady minute; RSS at the end and peak."""
    if len(samples) < 3:
        return None
    t_end, c_end, st_end = samples[-1]
    start = next((s for s in samples if s[0] - t_start >= startup_s), samples[-1])
    worst: float | None = None
    steady = [s for s in samples if s[0] >= start[0]]
    j = 0
    for t, c, _ in steady:
        while j < len(steady) and steady[j][0] - t < 60.0:
            j += 1
        if j >= len(steady):
            break
        rate = 100.0 * (steady[j][1] - c) / (steady[j][0] - t)
        worst = rate if worst is None else max(worst, rate)
    return {
        "total_pct": 100.0 * c_end / (t_end - t_start),
        "cpu_s": c_end,
        "wall_s": t_end - t_start,
        "startup_s": start[0] - t_start,
        "startup_cpu_s": start[1],
        "startup_pct": 100.0 * start[1] / max(start[0] - t_start, 1e-9),
        "steady_pct": 100.0 * (c_end - start[1]) / max(t_end - start[0], 1e-9),
        "worst_minute_pct": worst,
        "rss_mb": st_end.get("VmRSS", 0.0),
        "peak_rss_mb": max(s[2].get("VmHWM", 0.0) for s in samples),
        "threads": st_end.get("Threads", 0),
    }


def report_cpu(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> bool:
    """Print the table; True when the target is met."""
    print(
        "CPU: %d nodes, interval uplink to Mosquitto (TLS), balancer on, feeder load, line paced at 115200 baud;"
        " %% of one core (user+sys, /proc)" % args.nodes
    )
    print()
    head = "%-8s %-8s %6s %8s %6s %9s %9s %9s %9s %9s %8s %8s %7s %7s" % (
        "process",
        "poll s",
        "min",
        "polls",
        "moves",
        "total %",
        "start s",
        "start %",
        "steady %",
        "worst 1m",
        "RSS MB",
        "peak MB",
        "threads",
        "target",
    )
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
            print(
                "%-8s %-8g %6.1f %8d %6s %9.2f %9.1f %9.1f %9.2f %9s %8.1f %8.1f %7d %7s"
                % (
                    name,
                    r["poll_period_s"],
                    f["wall_s"] / 60,
                    r["polls"] if name == "gateway" else 0,
                    r["moves"] if name == "gateway" else "",
                    f["total_pct"],
                    f["startup_s"],
                    f["startup_pct"],
                    f["steady_pct"],
                    "-" if f["worst_minute_pct"] is None else "%.2f" % f["worst_minute_pct"],
                    f["rss_mb"],
                    f["peak_rss_mb"],
                    f["threads"],
                    target,
                )
            )
    print()
    print(
        "start: the first %g s (interpreter, imports, key derivation, TLS connect, the first polling round);"
        " steady: the rest; worst 1m: the busiest 60 s of the steady state." % args.startup_s
    )
    print(
        "Target: gateway steady state under %g%% of one core at 1-minute readings. Gateway log: %s"
        % (
            TARGET_CPU_PCT,
            ", ".join(
                "poll %g s: %d warnings, %d errors, exit %r"
                % (r["poll_period_s"], r["warnings"], r["errors"], r["exit"])
                for r in results
            ),
        )
    )
    return ok
