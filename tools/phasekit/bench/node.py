"""Benchmark of the home-node firmware on the MicroPython unix port (issue 3's targets).

    phasekit bench node [--cycles 10000] [--heapsize 512K] [--json]

Prints a table; exit status 1 if a target is missed.

What runs: the node application (``phasenode.app.Node``) compiled to .mpy by
``phasekit deploy``'s staging for the host target, under the MicroPython unix
port (this same file with ``--worker``), on the host HAL: its meter UART is a
pty to pymodbus playing the PZEM-004T (``phasekit.sim.pzem``, unpaced so the
cycles run back to back), its bus UART a pty whose other end this script
drives as the Pi, polling every 10 ms, its relays the simulated relay board.
The worker drives ``Node.sample_once`` (meter transaction, checks, relay
tick, reading sealed for the next poll) back to back while the node's other
tasks (bus responder, relay ticks, watchdog supervisor) run as usual.

Measured:

- peak heap in the steady loop: before each cycle ``gc.collect()``, after it
  ``gc.mem_alloc()``; the largest value is the heap the loop needs (live
  objects plus what one cycle allocates before a collection), target < 40 KB;
- allocation growth: the live heap after a collection, at cycle 100, 1,000
  and the last (10,000 by default), target no growth;
- poll answer latency at the master over an unpaced pty (write of the poll to
  the reply's first byte: all node time), and the node's own longest
  frame-in to reply-written time;
- size of firmware + core + radio drivers as .mpy for the ESP32 target (what
  ``phasekit deploy`` copies: the modules the node's manifests name), target < 150 KB.

The unix port is a 64-bit build: its objects are about twice the size of the
ESP32's (32-bit), so the heap figures are an upper bound for the chip.
"""

import sys

# typing.TYPE_CHECKING without importing typing: MicroPython runs this file and has no typing module
# (nor __future__). What is imported under it exists for mypy only, so annotations naming it are strings;
# MicroPython parses annotations and never evaluates them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

_MPY = sys.implementation.name == "micropython"
TARGET_HEAP = 40 * 1024
TARGET_MPY = 150 * 1024
TARGET_POLL_MS = 20.0
SITE_KEY = bytes(range(32))  # obviously synthetic (docs/security.md)
NODE_ADDR = 7


# ---------------------------------------------------------------- the worker (MicroPython)


def _worker(root, cycles):
    if TYPE_CHECKING:  # MicroPython's gc (mem_alloc, mem_free) and asyncio (sleep_ms): not in CPython's stubs
        gc: Any
        asyncio: Any
    import gc
    import json

    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio  # type: ignore[import-not-found, no-redef]  # MicroPython before 1.21

    gc.collect()
    heap0 = gc.mem_alloc()
    from phasenode import (
        app,
        board,
        link_rs485,  # noqa: F401
        persist,
    )
    from phasenode.hal import for_board, host, pin_host, uart_fd  # noqa: F401  (the HAL imports them when built)

    gc.collect()
    code = gc.mem_alloc() - heap0  # the modules' bytecode and tables: RAM unless frozen into the firmware

    b = board.load(root + "/board.json")
    store = persist.Store(root)
    cfg = store.load_config()
    hal = for_board(b)  # wiring from PHASENODE_WIRING, as on the virtual board
    settings = app.Settings(sample_ms=100, meter_timeout_ms=200, meter_retries=1, heartbeat_s=600)
    node = app.Node(b, hal, cfg, store, settings)
    gc.collect()
    built = gc.mem_alloc() - heap0 - code

    async def run():
        tasks = node.start()
        tasks[0].cancel()  # the periodic sampler: this loop drives the same cycle back to back
        for _ in range(50):
            await node.sample_once()
            await asyncio.sleep_ms(1)
        # Every key made now: a dict growing during the run would count as the node's growth.
        marks = [100, 1000, cycles] + [k for k in range(2000, cycles, 2000)]
        live = dict((k, 0) for k in marks)
        peak = 0
        per_cycle_max = 0
        per_cycle_sum = 0
        print(json.dumps({"event": "steady"}))
        for i in range(1, cycles + 1):
            gc.collect()
            a = gc.mem_alloc()
            if i in live:
                live[i] = a
            await node.sample_once()
            await asyncio.sleep_ms(1)  # the bus and relay tasks run here too
            b_ = gc.mem_alloc()
            if b_ > peak:
                peak = b_
            d = b_ - a
            per_cycle_sum += d
            if d > per_cycle_max:
                per_cycle_max = d
        node.stop()
        gc.collect()
        out = {
            "event": "done",
            "cycles": cycles,
            "peak": peak,
            "live": live,
            "heap0": heap0,
            "code": code,
            "built": built,
            "alloc_per_cycle_avg": per_cycle_sum // cycles,
            "alloc_per_cycle_max": per_cycle_max,
            "heap_total": gc.mem_alloc() + gc.mem_free(),
            "meter_errors": node.meter_errors,
            "checks_valid": node.checks.valid,
            "polls": node.rs485.polls,
            "replies": node.rs485.replies,
            "reply_us_max": node.rs485.reply_us_max,
            "relay_phase": node.relay.phase,
            "locks": node.relay.locks,
            "seal_errors": node.session.seal_errors,
        }
        print(json.dumps(out))

    asyncio.run(run())


# ---------------------------------------------------------------- the orchestrator (CPython)


def _mpy_size() -> "dict[str, int]":
    from phasekit import repo
    from phasekit.node import deploy

    staged = deploy.stage(str(repo.board_path("esp32-devkitc-max485")))
    try:
        return {
            "phasenode": staged.size_of("lib/phasenode/", ".mpy"),
            "phasecore": staged.size_of("lib/phasecore/", ".mpy"),
            "phaseradio": staged.size_of("lib/phaseradio/", ".mpy"),
            "total": staged.size_of("lib/", ".mpy"),
            "files": len([f for f in staged.files if f[0].endswith(".mpy")]),
        }
    finally:
        import shutil

        shutil.rmtree(staged.root, ignore_errors=True)


async def _run(cycles: int, heapsize: str, progress: "Callable[[str], object]") -> "dict[str, Any]":
    import asyncio
    import json
    import os
    import pty
    import shutil
    import tempfile
    import time
    import tty

    from phasecore import frame
    from phasekit import repo
    from phasekit.node import deploy
    from phasekit.node.provision import provision
    from phasekit.sim.pzem import PzemMeter, PzemSim
    from phasekit.testing import micropython

    flash = tempfile.mkdtemp(prefix="phasekit-bench-node-")
    cfg = tempfile.mkdtemp(prefix="phasekit-bench-cfg-")
    fds: list[int] = []
    try:
        # A node as `phasekit provision` makes one; the bench plays its Pi with the same site key.
        provision(
            SITE_KEY,
            cfg,
            "bench-n%d" % NODE_ADDR,
            NODE_ADDR,
            "host-virtual",
            "A",
            relay={"dead_time_ms": 200, "min_dwell_s": 60, "settle_ms": 0},
            force=True,
        )
        staged = deploy.stage(str(repo.board_path("host-virtual")), cfg, os.path.join(flash, "fw"), host=True)
        root = str(staged.root)
        async with PzemSim(
            [PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)], pace=False
        ) as sim:
            assert sim.port is not None  # started
            meter_fd = os.open(sim.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            bus_master, bus_slave = pty.openpty()
            tty.setraw(bus_master)
            tty.setraw(bus_slave)
            os.set_blocking(bus_slave, False)
            os.set_blocking(bus_master, False)
            fds += [meter_fd, bus_master, bus_slave]
            env = dict(
                os.environ,
                MICROPYPATH=root + "/lib:.frozen",
                PHASENODE_WIRING=json.dumps({"meter": meter_fd, "bus": bus_slave}),
            )
            proc = await asyncio.create_subprocess_exec(
                micropython.binary(),
                "-X",
                "heapsize=" + heapsize,
                os.path.abspath(__file__),
                "--worker",
                root,
                str(cycles),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(meter_fd, bus_slave),
                env=env,
                cwd=root,
            )
            lat: list[float | None] = []  # poll to the reply's first byte, ms; None: unanswered
            done: dict[str, Any] | None = None
            steady = asyncio.Event()
            loop = asyncio.get_running_loop()
            dec = frame.Decoder()
            # The reply awaited now, and the time its first byte came (one-slot cells shared with readable()).
            reply: list[asyncio.Future[None] | None] = [None]
            first_byte: list[float | None] = [None]

            def readable() -> None:
                try:
                    data = os.read(bus_master, 4096)
                except (BlockingIOError, OSError):
                    return
                if first_byte[0] is None:
                    first_byte[0] = time.perf_counter()
                fut = reply[0]
                if dec.feed(data) and fut is not None and not fut.done():
                    fut.set_result(None)

            loop.add_reader(bus_master, readable)

            async def master() -> None:
                poll = frame.encode(NODE_ADDR, frame.MASTER, b"")  # an empty poll: the node answers its reading
                await steady.wait()
                while True:
                    fut: asyncio.Future[None] = loop.create_future()
                    reply[0] = fut
                    first_byte[0] = None
                    t0 = time.perf_counter()
                    os.write(bus_master, poll)
                    try:
                        await asyncio.wait_for(fut, 0.2)
                        t1 = first_byte[0]
                        assert t1 is not None  # readable() stamped the reply's first byte before resolving it
                        lat.append((t1 - t0) * 1000)
                    except asyncio.TimeoutError:
                        lat.append(None)
                    await asyncio.sleep(0.01)

            mtask = asyncio.ensure_future(master())
            output: list[str] = []
            t_start = time.monotonic()
            stdout = proc.stdout
            assert stdout is not None  # stdout=PIPE
            while True:
                line = await stdout.readline()
                if not line:
                    break
                output.append(line.decode(errors="replace"))
                if line.startswith(b"{"):
                    ev = json.loads(line)
                    if ev.get("event") == "steady":
                        steady.set()
                        progress("steady loop reached; running %d cycles" % cycles)
                    elif ev.get("event") == "done":
                        done = ev
            await proc.wait()
            mtask.cancel()
            loop.remove_reader(bus_master)
            elapsed = time.monotonic() - t_start
            if done is None:
                raise RuntimeError("the MicroPython worker failed:\n" + "".join(output[-40:]))
            done["elapsed_s"] = elapsed
            done["latency_ms"] = lat
            return done
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(flash, ignore_errors=True)
        shutil.rmtree(cfg, ignore_errors=True)


def _pct(xs: "list[float]", p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def add_arguments(ap: "argparse.ArgumentParser") -> None:
    """Options of ``phasekit bench node``."""
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument(
        "--heapsize", default="512K", help="MicroPython heap for the run (default 512K, as the virtual board)"
    )
    ap.add_argument("--json", action="store_true")


def main(args: "argparse.Namespace") -> int:
    """Run the node under the unix port and print the table; 1 if a target is missed."""
    import asyncio
    import json

    def progress(msg: str) -> None:
        if not args.json:
            print("..", msg, file=sys.stderr, flush=True)

    progress("compiling firmware + core for the ESP32 target")
    size = _mpy_size()
    progress("running the node under the MicroPython unix port (heap %s)" % args.heapsize)
    import gc

    # This process times the node's answers: its own collector pauses must not count against the node.
    gc.collect()
    gc.disable()
    try:
        r = asyncio.run(_run(args.cycles, args.heapsize, progress))
    finally:
        gc.enable()
    base = r["heap0"] + r["code"]  # the interpreter's own objects and the imported modules
    data_peak = r["peak"] - base
    lat = sorted(x for x in r["latency_ms"] if x is not None)
    lost = sum(1 for x in r["latency_ms"] if x is None)
    live = dict((int(k), v) for k, v in r["live"].items())
    first = live.get(1000, live[min(live)])
    growth = live[max(live)] - first
    res = {
        "cycles": r["cycles"],
        "elapsed_s": round(r["elapsed_s"], 1),
        "peak_heap": r["peak"],
        "interpreter_heap": r["heap0"],
        "code_heap": r["code"],
        "node_built_heap": r["built"],
        "peak_heap_above_code": data_peak,
        "live_heap": live,
        "growth_1000_to_last": growth,
        "alloc_per_cycle_avg": r["alloc_per_cycle_avg"],
        "alloc_per_cycle_max": r["alloc_per_cycle_max"],
        "polls": len(r["latency_ms"]),
        "polls_unanswered": lost,
        "poll_ms": {"p50": _pct(lat, 0.5), "p90": _pct(lat, 0.9), "p99": _pct(lat, 0.99), "max": lat[-1]},
        "node_reply_us_max": r["reply_us_max"],
        "meter_errors": r["meter_errors"],
        "seal_errors": r["seal_errors"],
        "mpy": size,
    }
    ok = {
        "heap": data_peak < TARGET_HEAP,
        "growth": growth <= 0,
        "poll": _pct(lat, 0.99) < TARGET_POLL_MS and lost == 0,
        "mpy": size["total"] < TARGET_MPY,
    }
    res["targets_met"] = ok
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
    else:
        rows = [
            ("heap: interpreter at start", "%.1f KB" % (r["heap0"] / 1024), "", None),
            ("heap: imported firmware + core modules (code)", "%.1f KB" % (r["code"] / 1024), "frozen", None),
            ("heap: the node's objects once built", "%.1f KB" % (r["built"] / 1024), "", None),
            ("peak heap in the steady loop, above the code", "%.1f KB" % (data_peak / 1024), "< 40 KB", ok["heap"]),
            ("peak heap in the steady loop, everything", "%.1f KB" % (r["peak"] / 1024), "", None),
            (
                "live heap after gc at %d marks, cycle %d..%d" % (len(live), min(live), max(live)),
                ("%d B at every mark" % first)
                if len(set(live.values())) == 1
                else " / ".join("%d" % live[k] for k in sorted(live)) + " B",
                "",
                None,
            ),
            ("allocation growth, cycle 1000 -> %d" % r["cycles"], "%+d B" % growth, "none", ok["growth"]),
            (
                "allocated per cycle (avg / max)",
                "%d / %d B" % (r["alloc_per_cycle_avg"], r["alloc_per_cycle_max"]),
                "",
                None,
            ),
            (
                "poll answer p50 / p90 / p99",
                "%.2f / %.2f / %.2f ms" % (_pct(lat, 0.5), _pct(lat, 0.9), _pct(lat, 0.99)),
                "",
                None,
            ),
            (
                "poll answer max (%d polls, %d unanswered)" % (len(r["latency_ms"]), lost),
                "%.2f ms" % lat[-1],
                "< 20 ms",
                ok["poll"],
            ),
            ("node: frame in -> reply written, max", "%.2f ms" % (r["reply_us_max"] / 1000), "", None),
            (
                "firmware + core .mpy (ESP32 target, %d files)" % size["files"],
                "%.1f KB (node %.1f + core %.1f + radio %.1f)"
                % (size["total"] / 1024, size["phasenode"] / 1024, size["phasecore"] / 1024, size["phaseradio"] / 1024),
                "< 150 KB",
                ok["mpy"],
            ),
            (
                "cycles / wall time / meter errors",
                "%d / %.0f s / %d" % (r["cycles"], r["elapsed_s"], r["meter_errors"]),
                "",
                None,
            ),
        ]
        print("phasenode on the MicroPython unix port (64-bit: objects ~2x an ESP32's)")
        print("%-52s %-44s %-9s %s" % ("measure", "value", "target", "met"))
        for name, value, target, met in rows:
            print("%-52s %-44s %-9s %s" % (name, value, target, "" if met is None else ("yes" if met else "NO")))
    return 0 if all(ok.values()) else 1


if __name__ == "__main__" and _MPY:
    # micropython tools/phasekit/bench/node.py --worker ROOT CYCLES (from _run)
    _worker(sys.argv[2], int(sys.argv[3]))
