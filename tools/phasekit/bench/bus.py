"""RS-485 bus benchmark: a full polling round over 100 nodes at 115200 and 9600 baud (issue 4 targets).

The real bus master (``phasegate.bus`` over pyserial) polls simulated nodes
(``phasekit.sim.bus_nodes``) that answer every poll with a freshly sealed
reading over a pseudo-terminal; every reply is opened by ``phasegate.registry``
as in the controller. A pty has no baud rate, so the nodes pace the line
themselves: a node hears the end of a poll one poll-length of line time
after the master wrote it (10 bits a byte, 8N1), answers after a turnaround
of ``--turnaround-ms`` (default 5 ms: a MicroPython node's UART IRQ, its
seal of a pre-encoded reading with cryptolib, and DE switching; the issue
asks for under 20 ms), and its reply reaches the master byte-paced at the
baud rate. The master's own frame is not paced by the pty, so its line time
is added on the node side; nothing is counted twice.

Columns: poll and reply bytes on the wire; the line model per poll (poll +
reply line time + turnaround); the measured round; what the master and the
pty add on top (processing = measured - model, per poll); the master's CPU
per round (its thread's CPU time); and two ratios: measured over the line
model, and measured over the theoretical minimum (the line time of the bytes
alone, no turnaround, no processing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

from phasecore import frame
from phasegate.bus import line_time_s

EXAMPLE = """example:
  phasekit bench bus --nodes 100 --rounds 3 --turnaround-ms 5 --dead 10
"""

SITE_KEY = bytes(range(32))  # synthetic
TARGETS = {115200: 2.0, 9600: 10.0}


async def measure(
    baud: int, nodes: int, rounds: int, turnaround_s: float, dead: int, folder: str, reply_timeout_s: float
) -> dict[str, Any]:
    """One baud rate: ``rounds`` polling rounds after a warm-up; the best round and its line model."""
    from phasegate.bus import Bus, SerialLine
    from phasegate.registry import Registry
    from phasekit.sim.bus_nodes import SimBus, SimNode

    sims = [SimNode(a, SITE_KEY, mode="silent" if a > nodes - dead else "ok") for a in range(1, nodes + 1)]
    addrs = [n.addr for n in sims]
    reg = Registry(
        SITE_KEY, addrs, os.path.join(folder, "seq-%d.txt" % baud), os.path.join(folder, "reg-%d.json" % baud)
    )
    with SimBus(sims, baud=baud, turnaround_s=turnaround_s, pace=True) as sim:
        bus = Bus(SerialLine(sim.port, baud), addrs, reply_timeout_s=reply_timeout_s, retries=1)
        async with bus:
            await bus.poll_round()  # warm-up: the first readings carry the REBOOTED bit (2 bytes more)
            times: list[float] = []
            cpu: list[float] = []
            model: list[float] = []
            minimum: list[float] = []
            reply_bytes: list[int] = []
            loop = asyncio.get_running_loop()
            for _ in range(rounds):
                c0 = time.thread_time()
                t0 = loop.time()
                rd = await bus.poll_round()
                times.append(loop.time() - t0)
                cpu.append(time.thread_time() - c0)
                m = lo = 0.0
                opened = 0
                for addr, r in rd:
                    poll = frame.OVERHEAD
                    if r is None:
                        continue
                    reply = len(r.frame.payload) + frame.OVERHEAD
                    reply_bytes.append(reply)
                    lo += line_time_s(poll + reply, baud)
                    m += line_time_s(poll + reply, baud) + turnaround_s
                    opened += reg.receive(addr, r.frame.payload, r.t) is not None
                model.append(m)
                minimum.append(lo)
            answered = sum(1 for _, r in rd if r is not None)
    best = min(range(rounds), key=lambda i: times[i])
    return {
        "baud": baud,
        "nodes": nodes,
        "dead": dead,
        "answered": answered,
        "opened": opened,
        "poll_bytes": frame.OVERHEAD,
        "reply_bytes": statistics.mean(reply_bytes),
        "line_ms": line_time_s(frame.OVERHEAD + statistics.mean(reply_bytes), baud) * 1e3,
        "turnaround_ms": turnaround_s * 1e3,
        "round_s": times[best],
        "round_s_max": max(times),
        "model_s": model[best],
        "min_s": minimum[best],
        "processing_ms": (times[best] - model[best]) / max(1, answered) * 1e3,
        "cpu_ms": statistics.mean(cpu) * 1e3,
        "timeout_ms": reply_timeout_s * 1e3,
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench bus``."""
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turnaround-ms", type=float, default=5.0)
    ap.add_argument("--dead", type=int, default=0, help="nodes that never answer (back-off at work)")
    ap.add_argument("--baud", type=int, action="append", help="repeatable; default 115200 and 9600")


def main(args: argparse.Namespace) -> int:
    """Measure each baud rate and print the table; 1 if a round missed its target."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for baud in args.baud or (115200, 9600):
            # Reply timeout: turnaround + the first characters, with margin (the deadline moves out
            # once bytes flow); 30 ms is the config default.
            timeout = max(0.03, args.turnaround_ms / 1e3 + line_time_s(8, baud) + 0.01)
            rows.append(
                asyncio.run(
                    measure(baud, args.nodes, args.rounds, args.turnaround_ms / 1e3, args.dead, folder, timeout)
                )
            )
    print(
        "RS-485 polling round: %d nodes (%d silent), node turnaround %.1f ms, best of %d rounds, paced pty"
        % (args.nodes, args.dead, args.turnaround_ms, args.rounds)
    )
    hdr = (
        "baud",
        "poll B",
        "reply B",
        "line ms",
        "turn ms",
        "model s",
        "round s",
        "worst s",
        "proc ms/poll",
        "cpu ms/round",
        "x model",
        "x minimum",
        "target",
        "",
    )
    print("%7s %6s %7s %7s %7s %7s %7s %7s %12s %12s %7s %9s %6s %s" % hdr)
    ok = True
    for r in rows:
        target = TARGETS.get(r["baud"])
        met = target is None or r["round_s_max"] < target
        ok = ok and met and r["opened"] == r["answered"] == r["nodes"] - r["dead"]
        print(
            "%7d %6d %7.1f %7.2f %7.1f %7.2f %7.2f %7.2f %12.2f %12.1f %7.2f %9.2f %6s %s"
            % (
                r["baud"],
                r["poll_bytes"],
                r["reply_bytes"],
                r["line_ms"],
                r["turnaround_ms"],
                r["model_s"],
                r["round_s"],
                r["round_s_max"],
                r["processing_ms"],
                r["cpu_ms"],
                r["round_s"] / r["model_s"],
                r["round_s"] / r["min_s"],
                "<%gs" % target if target else "-",
                "ok" if met else "MISSED",
            )
        )
    print(
        "last round, answered/opened: "
        + ", ".join("%d baud %d/%d" % (r["baud"], r["answered"], r["opened"]) for r in rows)
    )
    return 0 if ok else 1
