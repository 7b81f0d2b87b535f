"""LoRa channel schemes at 100 nodes a minute: polled schedule vs class-A receive windows.

Runs the real Pi side (``phasegate.lora.link``: ``polled_link`` and
``ClassALink``, ``phasegate.registry`` opening every frame) against simulated
nodes (``phasekit.sim.lora_nodes``, real sealed readings and acks) on the
simulated channel (``phasegate.lora.channel``: real airtime, pure-ALOHA
collisions, half duplex, seeded loss), faster than real time. Prints, per
scheme: readings due and delivered, loss, channel utilisation (airtime of
every packet over the run), collisions, and the latency of commands (from
``request`` to the authenticated ack, in channel seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phasegate.bus import Reply

EXAMPLE = """example:
  phasekit bench lora --nodes 100 --minutes 5 --sf 7 --loss 0.0 --scale 0.05
"""

SITE_KEY = bytes(range(32))  # synthetic


async def run_scheme(
    scheme: str,
    nodes: int = 100,
    minutes: float = 5.0,
    sf: int = 7,
    loss: float = 0.0,
    scale: float = 0.05,
    commands: int = 8,
    seed: int = 1,
    folder: str | None = None,
    interval_s: float = 60.0,
) -> dict[str, Any]:
    """One scheme for ``minutes`` of channel time: readings due and delivered, airtime, command latency.

    The registries' files go in ``folder`` (default: a temporary folder, removed afterwards).
    """
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="phasekit-bench-lora-") as tmp:
            return await run_scheme(scheme, nodes, minutes, sf, loss, scale, commands, seed, tmp, interval_s)
    from phasecore import msg
    from phasegate.bus import Bus
    from phasegate.lora.channel import SimChannel
    from phasegate.lora.link import RX_DELAY_S, ClassALink, polled_link
    from phasegate.lora.radio import SimChannelRadio
    from phasegate.registry import CommandError, Registry
    from phasekit.sim.bus_nodes import SimNode
    from phasekit.sim.lora_nodes import SimLoraNode

    ch = SimChannel(sf=sf, loss=loss, seed=seed, time_scale=scale)
    addrs = list(range(1, nodes + 1))
    reg = Registry(
        SITE_KEY,
        {a: "lora" for a in addrs},
        os.path.join(folder, "%s-seq.txt" % scheme),
        os.path.join(folder, "%s-reg.json" % scheme),
        stale_after_s=1e6,
        offline_after_s=2e6,
    )
    pi = SimChannelRadio(ch.radio("pi", queue_size=256))
    sims = [
        SimLoraNode(
            SimNode(a, SITE_KEY, seed=seed * 1000 + a),
            ch.radio("n%d" % a),
            scheme,
            interval_s=interval_s,
            seed=seed * 1000 + a,
        )
        for a in addrs
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(s.run(stop)) for s in sims]
    delivered = [0]

    def on_frame(addr: int, reply: Reply | None) -> None:
        if reply is None:
            return
        m = reg.receive(addr, reply.frame.payload, loop.time())
        if m is not None and m.kind == msg.READING:
            delivered[0] += 1

    link: Bus | ClassALink
    if scheme == "polled":
        bus = polled_link(pi, addrs, turnaround_s=0.02 * scale, poll_period_s=interval_s * scale, guard_s=0.05 * scale)
        bus.open()
        link = bus
        runner = loop.create_task(link.run(stop, on_frame))
    else:
        link = ClassALink(pi, addrs, rx_delay_s=RX_DELAY_S * scale)
        runner = loop.create_task(link.run(stop, on_frame))

    rng = random.Random(seed)
    latencies: list[float] = []
    failed = [0]
    duration = minutes * 60.0 * scale

    async def one_command(i: int) -> None:
        await asyncio.sleep(rng.uniform(0.05, 0.6) * duration)
        addr = rng.choice(addrs)
        t0 = loop.time()
        fields = {"id": i + 1, "op": msg.OP_REPORT, "deadline_s": 4000000000}
        try:
            if isinstance(link, Bus):  # the polled scheme
                await reg.command(link, addr, fields, t0)
            else:
                payload = reg.seal(addr, msg.COMMAND, fields)
                reply = await link.request(addr, payload, timeout_s=150.0 * scale)
                if reply is None or reg.receive(addr, reply.frame.payload, loop.time()) is None:
                    raise CommandError("no ack")
            latencies.append((loop.time() - t0) / scale)
        except CommandError:
            failed[0] += 1

    cmd_tasks = [loop.create_task(one_command(i)) for i in range(commands)]
    await asyncio.sleep(duration)
    await asyncio.gather(*cmd_tasks)
    stop.set()
    await asyncio.wait_for(runner, 30)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if isinstance(link, Bus):  # the polled scheme
        link.close()
        rounds = link.counters["rounds"]
        due = sum(link.stats[a].polls - link.stats[a].retries for a in addrs)
    else:
        rounds = 0
        due = sum(s.node.fresh_sent for s in sims)
    channel_s = duration / scale
    return {
        "scheme": scheme,
        "nodes": nodes,
        "minutes": minutes,
        "sf": sf,
        "loss": loss,
        "due": due,
        "delivered": delivered[0],
        "lost_pct": 100.0 * (1 - delivered[0] / due) if due else 0.0,
        "utilisation_pct": 100.0 * ch.stats["airtime_us"] / 1e6 / channel_s,
        "packets": ch.stats["sent"],
        "collided": ch.stats["collided"],
        "channel_lost": ch.stats["lost"],
        "rounds": rounds,
        "cmd_ok": len(latencies),
        "cmd_failed": failed[0],
        "cmd_latency_median_s": statistics.median(latencies) if latencies else None,
        "cmd_latency_max_s": max(latencies) if latencies else None,
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench lora``."""
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--sf", type=int, default=7)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--scale", type=float, default=0.05, help="channel seconds per real second (smaller: faster)")
    ap.add_argument("--commands", type=int, default=8)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between a node's readings")
    ap.add_argument("--scheme", action="append", choices=("class_a", "polled"), help="repeatable; default both")


def main(args: argparse.Namespace) -> int:
    """Run each scheme and print the table; always 0 (no targets here)."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for scheme in args.scheme or ("class_a", "polled"):
            rows.append(
                asyncio.run(
                    run_scheme(
                        scheme,
                        args.nodes,
                        args.minutes,
                        args.sf,
                        args.loss,
                        args.scale,
                        args.commands,
                        folder=folder,
                        interval_s=args.interval,
                    )
                )
            )
    print(
        "LoRa, %d nodes, a reading every %g s each, SF%d/125 kHz, %.0f simulated minutes, extra loss %.0f%%"
        % (args.nodes, args.interval, args.sf, args.minutes, 100 * args.loss)
    )
    print(
        "%-8s %6s %9s %7s %8s %8s %9s %7s %12s %12s"
        % ("scheme", "due", "delivered", "lost%", "util%", "packets", "collided", "cmds", "cmd med s", "cmd max s")
    )
    for r in rows:
        print(
            "%-8s %6d %9d %7.1f %8.1f %8d %9d %3d/%-3d %12s %12s"
            % (
                r["scheme"],
                r["due"],
                r["delivered"],
                r["lost_pct"],
                r["utilisation_pct"],
                r["packets"],
                r["collided"],
                r["cmd_ok"],
                r["cmd_ok"] + r["cmd_failed"],
                "-" if r["cmd_latency_median_s"] is None else "%.2f" % r["cmd_latency_median_s"],
                "-" if r["cmd_latency_max_s"] is None else "%.2f" % r["cmd_latency_max_s"],
            )
        )
    return 0
