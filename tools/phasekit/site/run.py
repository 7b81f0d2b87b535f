"""``phasekit site run``: a whole transformer site on this machine, from the real code of every tier.

``SiteRun(options).run()`` builds and runs the site for one feeder day of site
time, puts it through the fault plan, and returns the summary (a dict with
the keys docs/site.md documents); ``main`` is what the command calls.

What runs (docs/site.md has the picture):

- one process, this one: the RS-485 line (``phasekit.sim.rs485_hub``), the
  in-process nodes (``phasekit.site.nodes``), the street's electricity and the
  transformer meter (``phasekit.site.physics``, pymodbus over TCP), the fault
  plan, the witnesses (``phasekit.site.accounting``) and the progress line;
- two or more MicroPython unix-port processes: the virtual board running the
  node firmware (.mpy) on a pty drop of the same line;
- the transformer Pi: ``phasekit gateway run gateway.toml``;
- Mosquitto with TLS and client certificates from the site PKI;
- the server (``python -m phaseserver``) with its SQLite database.

Every tier runs on one clock (``phasekit.site.clock.SiteClock``): the same
``speed``, ``epoch_s`` and ``start_s`` in the Pi's and the server's
``[clock]`` table, in ``PHASENODE_CLOCK`` for the virtual boards, as the
in-process nodes' tick counter.

The one thing to know: everything the site starts, it ends, on the way out of
``run`` whatever happened (the end of the day, Ctrl-C, an error); children are
also started with PR_SET_PDEATHSIG, so none outlives a killed site process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import math
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from phasecore import codes, msg
from phasekit.site import faults as _faults
from phasekit.site.clock import SiteClock
from phasekit.site.nodes import NodeSpec, SiteNode, make_nodes
from phasekit.site.services import SiteBroker, SiteError, SitePki, SiteServer, child_setup, free_port, gateway_toml

__all__ = ("SiteOptions", "SiteRun", "DEFAULT_SPEED", "SITE_ID", "TRANSFORMER", "OPERATOR")

DEFAULT_SPEED = 720.0  # a feeder day (1440 site minutes) in 120 wall seconds
SITE_ID = "demo-street"
TRANSFORMER = "tx-1"
OPERATOR = "ops-1"
SERVER_OPERATOR = "server-1"  # the operations server's own operator id (it seals commands from its API)
LORA_GATEWAY = "lgw-1"
OPERATOR_GENERATION = 0  # the operator key generation the Pi's gate is initialised at
# Wall seconds between starting the processes and the feeder's midnight: every tier is up by then.
WARMUP_S = 14.0
_TAIL_SITE_S = 20 * 60  # after the day: the last round's readings reach the server
_PHYSICS_S = 0.04  # wall seconds between two physics steps (29 site seconds at 720x)
_PROGRESS_S = 0.5


class SiteOptions:
    """What ``phasekit site run`` was asked for (defaults: the demo)."""

    def __init__(
        self,
        feeder: str | None = None,
        speed: float = DEFAULT_SPEED,
        houses: int | None = None,
        lora: int = 2,
        faults: str | None = None,
        json_path: str | None = None,
        hold: bool = False,
        folder: str | os.PathLike[str] = "phasekit-site",
        micropython: int = 2,
        poll_s: int | None = None,
        cache: str | None = None,
        minutes: int | None = None,
        plot: bool = True,
        progress: bool = True,
        seed: int = 1,
        lines: int | None = None,
        pi_on_disk: bool = False,
        real_nodes: dict[int, str] | None = None,
    ):
        self.feeder = feeder
        self.speed = float(speed)
        self.houses = houses
        self.lora = lora
        self.faults = faults
        self.json_path = json_path
        self.hold = hold
        self.folder = Path(folder)
        self.micropython = micropython
        self.poll_s = poll_s
        self.cache = cache
        self.minutes = minutes
        self.plot = plot
        self.progress = progress
        self.seed = seed
        self.lines = lines
        self.pi_on_disk = pi_on_disk
        # link address -> serial port of a real node (an ESP32 on an RS-485 adapter) taking that house's place
        self.real_nodes = dict(real_nodes or {})


NODES_PER_LINE = 20  # a longer street gets another RS-485 line (an adapter and a cable)


def lines_for(n_nodes: int) -> int:
    """RS-485 lines for ``n_nodes``: one per 20 nodes, at most 4."""
    return max(1, min(4, math.ceil(n_nodes / NODES_PER_LINE)))


def polling_period_s(n_nodes: int, speed: float, lines: int = 1) -> int:
    """The site's polling period (site seconds): a whole round of the busiest line with room to spare.

    A poll and its reply at 115200 baud take about 4 ms of line time; with the
    Pi's turn-around, its buffer commit and the hops between processes, about
    11 wall ms a node on this kind of (shared, two-core) machine, so 20 nodes
    on a line take 0.2-0.3 wall seconds. The period is twice that, in site
    time, rounded up to whole minutes, at least 3 minutes: a round that runs
    late still fits, so every node's polls stay about one period apart.
    """
    per_line = math.ceil(n_nodes / max(1, lines))
    round_wall = max(0.05, per_line * 0.011)
    return int(max(180, math.ceil(2.0 * round_wall * speed / 60.0) * 60))


# How much later than the period a healthy node's next poll may come, in wall seconds: the scheduling
# of five processes on a shared two-core machine (measured: p99 0.2-0.25 s, max 0.3 s at load 11).
JITTER_WALL_S = 0.3


def silence_gap_s(poll_s: int, speed: float) -> int:
    """Site seconds without a reading after which a node is silent: 2 minutes past its longest polling interval."""
    return int(120 + poll_s + JITTER_WALL_S * speed)


class SiteRun:
    """One run of the site: ``summary = await SiteRun(options, out).run()``."""

    def __init__(self, options: SiteOptions, out: IO[str] | None = None, err: IO[str] | None = None):
        self.o = options
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.t0 = time.monotonic()
        self.stop = asyncio.Event()
        self.interrupted = False
        self.folder = options.folder.resolve()
        self.summary: dict[str, Any] = {}
        self._children: list[Any] = []  # objects with stop()
        self._tasks: list[asyncio.Task[Any]] = []
        self._fault_state: dict[str, Any] = {}
        self._fault_log: list[dict[str, Any]] = []
        # The final drain saw everything buffered until then stored (what the Pi buffers after it
        # waits in its buffer for its next start, reported as such; without a drain it is a loss).
        self.drained = False
        self._rss_max = 0.0
        self._rss_parts: dict[str, float] = {}
        self._cpu: dict[tuple[str, int], float] = {}

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        self._clear_progress()
        self.err.write("[site %5.1fs] %s\n" % (time.monotonic() - self.t0, text))
        self.err.flush()

    _progress_shown = False

    def _clear_progress(self) -> None:
        if self._progress_shown and self.err.isatty():
            self.err.write("\r\x1b[K")
        self._progress_shown = False

    # ------------------------------------------------------------------ set-up

    def _load_feeder(self) -> Any:
        from phasekit.errors import UsageError
        from phasekit.feeder import format as ff
        from phasekit.feeder import ieee_eulv
        from phasekit.feeder.generate import generate

        folder = self.o.feeder
        if folder is None:
            try:
                folder = str(ieee_eulv.cached(self.o.cache, progress=self.say))
                self.say("feeder: the IEEE European LV test feeder, from %s" % folder)
            except ff.FeederFormatError as e:
                self.say("could not fetch the IEEE feeder (%s): a generated 55-house street instead" % e)
                f = generate(55, seed=self.o.seed)
                gen = self.folder / "feeder"
                ff.write(f, gen, meta={"seed": self.o.seed, "generator": f.source})
                folder = str(gen)
        try:
            return ff.load(folder)
        except ff.FeederFormatError as e:
            raise UsageError(str(e)) from None

    def _specs(self, feeder: Any) -> tuple[list[NodeSpec], list[int]]:
        """The nodes (one per metered single-phase house, up to --houses) and the houses in the site."""
        from phasekit.errors import UsageError

        cand = [h for h in range(feeder.n_houses) if feeder.metered[h] and feeder.phase[h] != 3]
        n = len(cand) if self.o.houses is None else self.o.houses
        if not 1 <= n <= min(len(cand), 200):
            raise UsageError("--houses %d: this feeder has %d houses with a node (1..%d)" % (n, len(cand), len(cand)))
        if not 0 <= self.o.micropython <= n:
            raise UsageError("--micropython %d: 0..%d" % (self.o.micropython, n))
        chosen = cand[:n]
        k = self.o.lora
        if not 0 <= k <= n - max(1, self.o.micropython):
            raise UsageError("--lora %d: 0..%d (the others are on RS-485)" % (k, n - max(1, self.o.micropython)))
        n_wired = n - k
        n_lines = self.o.lines or lines_for(n_wired)
        if not 1 <= n_lines <= min(8, n_wired):
            raise UsageError("--lines %d: 1..%d" % (n_lines, min(8, n_wired)))
        per_line = math.ceil(n_wired / n_lines)
        # The site's houses: the chosen ones, and the feeder's houses without a node (the meter sees them).
        houses = chosen + [h for h in range(feeder.n_houses) if not feeder.metered[h] or feeder.phase[h] == 3]
        mp = set()
        if self.o.micropython:
            step = max(1, n_wired // self.o.micropython)
            mp = {min(n_wired - 1, 1 + i * step) for i in range(self.o.micropython)}
            k = 0
            while len(mp) < self.o.micropython:
                mp.add(k)
                k += 1
        specs = [
            NodeSpec(
                i + 1,
                h,
                feeder.houses[h],
                int(feeder.phase[h]),
                "lora" if i >= n_wired else "micropython" if i in mp else "cpython",
                i // per_line if i < n_wired else -1,
            )
            for i, h in enumerate(chosen)
        ]
        for addr in self.o.real_nodes:
            if not 1 <= addr <= n:
                raise UsageError("--real-node %d: the site's nodes are 1..%d" % (addr, n))
        if self.o.real_nodes and self.o.speed != 1:
            raise UsageError("--real-node: a real node keeps the wall clock: run the site with --speed 1")
        # A real node takes its house's place: no simulated node there, its own line to the Pi.
        return [sp for sp in specs if sp.addr not in self.o.real_nodes], houses

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        try:
            try:
                await self._setup()
                await self._day()
            except asyncio.CancelledError:
                self.interrupted = True
            await self._finish()
        finally:
            await self._teardown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return self.summary

    def _interrupt(self) -> None:
        if self.stop.is_set():
            self.say("second interrupt: stopping now")
            raise KeyboardInterrupt
        self.interrupted = True
        self.say("interrupted: stopping every part of the site")
        self.stop.set()
        for t in self._tasks:
            if not t.done() and t.get_name() == "setup":
                t.cancel()

    async def _setup(self) -> None:
        o = self.o
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        (self.folder / "logs").mkdir()
        self.feeder = self._load_feeder()
        self.say(self.feeder.summary())
        self.specs, self.houses = self._specs(self.feeder)
        n = len(self.specs)
        self.n_lines = len({s.line for s in self.specs if s.line >= 0})
        self.lora_addrs = [s.addr for s in self.specs if s.kind == "lora"]
        self.poll_s = o.poll_s or polling_period_s(n, o.speed, self.n_lines)
        self.gap_s = silence_gap_s(self.poll_s, o.speed)
        self.sample_ms = min(600000, self.poll_s * 1000 // 2)
        self.day_minutes = o.minutes or self.feeder.n_minutes
        wall_now = time.time()
        day0 = datetime.datetime.fromtimestamp(wall_now, datetime.timezone.utc).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self.clock = SiteClock(o.speed, day0.timestamp(), wall_now + WARMUP_S)
        self.plan = _faults.load_plan(o.faults)
        self._pick_fault_nodes()
        self._banner()
        # Keys: the site key (the Pi's), the nodes' from it; the PKI for the broker and every client.
        self.site_key = secrets.token_bytes(32)
        pi_dir = self.folder / "pi"
        pi_dir.mkdir()
        (pi_dir / "site.key").write_text(self.site_key.hex() + "\n")
        os.chmod(pi_dir / "site.key", 0o600)
        self.pki = SitePki(
            self.folder / "pki", SITE_ID, TRANSFORMER, OPERATOR, lora_gateway=LORA_GATEWAY if self.lora_addrs else None
        )
        self.broker = SiteBroker(self.folder / "broker", self.pki)
        self.broker.start()
        self._children.append(self.broker)
        self.say("broker: Mosquitto with TLS and client certificates on 127.0.0.1:%d" % self.broker.port)
        from phasegate.operator import operator_key
        from phasekit.site.accounting import LineWitness, PiLog, ServerDb

        self.server = SiteServer(
            self.folder / "server",
            self.broker,
            self.pki,
            self.clock,
            self._alarm_settings(),
            (SERVER_OPERATOR, *operator_key(self.site_key, SERVER_OPERATOR)),
        )
        self.server.start()
        self._children.append(self.server)
        self.server_db = ServerDb(self.server.db)
        from phasekit.site.report import AlarmTracker

        self.alarm_tracker = AlarmTracker()
        # The transformer meter: pymodbus over TCP, as an SDM630 on a Modbus gateway.
        from phasegate.meter import MeterProfile
        from phasekit.sim.meter import MeterSim, tcp_server

        self.meter = MeterSim(MeterProfile.load("sdm630"))
        self.meter_port = free_port()
        self.meter_server = tcp_server([self.meter], port=self.meter_port)
        self._meter_task = asyncio.ensure_future(self.meter_server.serve_forever())
        # The RS-485 line and the nodes on it.
        from phasekit.sim.rs485_hub import Rs485Hub

        self.line = LineWitness(self.clock.now)
        self.hubs = [Rs485Hub(115200, chunk=32, monitor=self.line.on_line("line%d" % i)) for i in range(self.n_lines)]
        pi_ports = [hub.add_pty("pi") for hub in self.hubs]
        for hub in self.hubs:
            hub.start()
        self.lora_channel: Any = None
        if self.lora_addrs:
            await self._lora_air()
        consoles = {
            s.addr: open(self.folder / "logs" / ("micropython-%d.log" % s.addr), "ab")
            for s in self.specs
            if s.kind == "micropython"
        }
        self._consoles = list(consoles.values())
        self.nodes: list[SiteNode] = make_nodes(
            self.specs,
            self.folder / "nodes",
            self.site_key,
            self.clock,
            self.hubs,
            self.sample_ms,
            consoles,
            channel=self.lora_channel,
        )
        self.node_by_addr = {nd.spec.addr: nd for nd in self.nodes}
        from phasekit.site.physics import Physics

        self.physics = Physics(
            self.feeder, self.houses, {nd.spec.house: nd for nd in self.nodes}, self.clock, self.meter
        )
        self.physics.step()
        for nd in self.nodes:
            nd.meter.alarm_threshold = 25000
            await nd.start()
        self._children.append(_Nodes(self.nodes))
        # Everything built so far lives until the end: keep the collector's full passes off it (they
        # would stall the line for tens of wall milliseconds).
        gc.collect()
        gc.freeze()
        self.say(
            "nodes: %d in this process, %d on the MicroPython unix port (virtual boards), on %d RS-485 line%s "
            "at 115200 baud"
            % (
                sum(s.kind == "cpython" for s in self.specs),
                sum(s.kind == "micropython" for s in self.specs),
                self.n_lines,
                "s" if self.n_lines > 1 else "",
            )
        )
        # The transformer Pi.
        cfg = pi_dir / "gateway.toml"
        self.pi_state = self._pi_state_folder(pi_dir)
        cfg.write_text(self._gateway_toml(pi_ports))
        self.pi_cfg = cfg
        self.pi_log_path = self.folder / "logs" / "gateway.log"
        # A new Pi's operator gate starts fail-closed: the installer initialises its replay state once
        # (what `phasekit gateway operator-reset gateway.toml --generation 0` does).
        from phasegate.operator import reset_state

        reset_state(self.pi_state / "operators.json", OPERATOR_GENERATION)
        self.pi = _PiProc(cfg, self.pi_log_path)
        self.pi.start()
        self._children.append(self.pi)
        if self.lora_addrs:
            gw_dir = self.folder / "lora-gateway"
            gw_dir.mkdir()
            gw_cfg = gw_dir / "gateway.toml"
            gw_cfg.write_text(self._lora_gateway_toml(gw_dir))
            self.lora_gw = _PiProc(gw_cfg, self.folder / "logs" / "lora-gateway.log", level="info")
            self.lora_gw.start()
            self._children.append(self.lora_gw)
            self.say(
                "LoRa: %d node%s (class A, SF7) heard by a LoRa gateway (phasekit gateway run %s), relayed to the Pi"
                % (len(self.lora_addrs), "s" if len(self.lora_addrs) > 1 else "", gw_cfg)
            )
        self.pi_log = PiLog(self.pi_log_path)
        from phasekit.site.operator import SiteOperator

        self.operator = SiteOperator(
            self.site_key,
            OPERATOR,
            SITE_ID,
            TRANSFORMER,
            self.clock,
            self.broker,
            self.pki.operator,
            self.folder / "pki",
        )
        self.say("transformer Pi: phasekit gateway run %s (log %s)" % (cfg, self.pi_log_path))
        self.say(
            "server: %s  (its page and API; log in as %s, the password is in %s)"
            % (self.server.url, self.server.page_user, self.server.password_file)
        )

    def _alarm_settings(self) -> dict[str, float]:
        # The server's silent-node alarm: 2 site minutes beyond the longest normal polling interval.
        # The sweep (time-driven evaluation) every 0.1 wall s: 72 site s at 720x, not the default 5 s (an hour).
        return {"node_gap_s": float(self.gap_s), "sweep_s": max(0.05, min(5.0, 60.0 / self.o.speed))}

    def _pi_state_folder(self, pi_dir: Path) -> Path:
        """Where the Pi keeps its buffer, counter and registry: a RAM disk unless --pi-on-disk.

        Each reading the Pi accepts is committed with an fsync before anything else
        (phasegate.journal); on this machine's disk that costs 4-13 wall ms, a real
        time that 720x does not shrink, and it would stretch a polling round by half.
        /dev/shm keeps every property the site exercises (a SIGKILLed Pi loses
        nothing: the page cache outlives the process), only not a power cut.
        """
        shm = Path("/dev/shm")
        if self.o.pi_on_disk or not shm.is_dir() or not os.access(shm, os.W_OK):
            return pi_dir
        d = shm / ("phasekit-site-%d-%s" % (os.getpid(), secrets.token_hex(4)))
        d.mkdir(mode=0o700)
        self._shm = d
        (pi_dir / "state").symlink_to(d)
        return d

    def _gateway_toml(self, pi_ports: list[str]) -> str:
        p = self.poll_s
        bus = {
            "port": pi_ports[0],
            "baud": 115200,
            "nodes": [s.addr for s in self.specs if s.line == 0],
            # Generous for a shared two-core machine: a reply the Pi gave up on is a reading lost.
            "reply_timeout_ms": 200,
            "retries": 1,
            # A silent node is still polled every round (a line here has at most 20 nodes, so one
            # dead node costs one 200 ms timeout a round): its return is seen at the next round.
            "backoff_rounds": 1,
            "poll_period_s": p,
            "stale_after_s": self.gap_s,
            "offline_after_s": 3 * self.gap_s,
            "extra_lines": [
                {"port": port, "nodes": [s.addr for s in self.specs if s.line == i + 1]}
                for i, port in enumerate(pi_ports[1:])
            ]
            + [{"port": port, "nodes": [addr]} for addr, port in sorted(self.o.real_nodes.items())],
        }
        balancer = {
            "period_s": 60,
            "stale_s": self.gap_s,
            "warmup_s": int(2 * p),
            "verify_s": int(2 * p + JITTER_WALL_S * self.o.speed),
            "command_ttl_s": 1800,
            "heartbeat_s": 21600,
        }
        uplink = {
            "mode": "raw",
            "raw_batch_s": 30,
            "heartbeat_s": 3600,
            "keepalive_s": 20,
            "reconnect_max_s": 1,
            "summary_period_s": 900,
        }
        text = gateway_toml(
            SITE_ID,
            TRANSFORMER,
            bus,
            self.meter_port,
            self.broker,
            self.pki,
            self.clock,
            balancer,
            uplink,
            [OPERATOR, SERVER_OPERATOR],
            store=str(self.pi_state / "buffer.db"),
        )
        if self.lora_addrs:
            # Nodes heard only through the LoRa gateway (phasegate.relay): readings, no commands.
            text += "\n[relay]\nnodes = %s\nstale_after_s = 1800\noffline_after_s = 3600\n" % (self.lora_addrs,)
        return text

    async def _lora_air(self) -> None:
        """The LoRa channel (in this process), served to the gateway process, with a witness on it."""
        from phasegate.lora.channel import SimChannel
        from phasekit.sim.lora_hub import LoraHub

        self.lora_channel = SimChannel(sf=7)
        self.lora_sock = self.folder / "lora-air.sock"
        self.lora_hub = LoraHub(self.lora_channel, self.lora_sock)
        await self.lora_hub.start()
        self._children.append(_Closing(self.lora_hub))
        witness = self.lora_channel.radio("witness", queue_size=1024)
        self._lora_witness = asyncio.ensure_future(self._hear(witness))
        self._children.append(_Cancelling(self._lora_witness))

    async def _hear(self, radio: Any) -> None:
        from phasecore import frame as _frame

        dec = _frame.Decoder(_frame.LORA_MAX_PAYLOAD)
        while True:
            payload, _sender = await radio.recv()
            for f in dec.feed(payload) + dec.flush():
                self.line.seen(f, "lora")

    def _lora_gateway_toml(self, folder: Path) -> str:
        gw = self.pki.lora_gateway
        assert gw is not None
        return (
            '[site]\nid = "%s"\ntransformer = "%s"\n\n' % (SITE_ID, LORA_GATEWAY)
            + '[lora]\ndriver = "sim"\nsim_socket = "%s"\n\n' % self.lora_sock
            + '[lora_gateway]\nid = "%s"\n\n[[lora_gateway.routes]]\nsite = "%s"\ntransformer = "%s"\nnodes = %s\n\n'
            % (LORA_GATEWAY, SITE_ID, TRANSFORMER, self.lora_addrs)
            + '[store]\npath = "%s"\n\n' % (folder / "relay.db")
            + '[uplink]\nhost = "%s"\nport = %d\nca = "%s"\ncert = "%s"\nkey = "%s"\nmode = "raw"\nraw_batch_s = 30\n'
            "reconnect_max_s = 1\nkeepalive_s = 20\n\n"
            % (self.broker.host, self.broker.port, gw.ca, gw.cert, gw.key)
            + self.clock.toml()
        )

    def _pick_fault_nodes(self) -> None:
        """Nodes for the faults that name none: in-process nodes (their relay board is in reach)."""
        cpy = [s.addr for s in self.specs if s.kind == "cpython"]
        used: set[int] = set()
        self.fault_nodes: dict[int, int] = {}
        for i, f in enumerate(self.plan):
            if "node" not in f.params:
                continue
            addr = f.params["node"]
            if not addr:
                free = [a for a in cpy if a not in used] or cpy or [s.addr for s in self.specs]
                # Spread over the line, away from its first node (whose polls keep the most regular time).
                addr = free[
                    {"node_silent": len(free) // 4, "relay_stuck": len(free) // 2}.get(f.kind, len(free) * 3 // 4)
                ]
            if addr not in {s.addr for s in self.specs}:
                from phasekit.errors import UsageError

                raise UsageError("fault %s: node %d is not on this site (1..%d)" % (f.kind, addr, len(self.specs)))
            used.add(addr)
            self.fault_nodes[i] = addr

    def _banner(self) -> None:
        o = self.o
        c = self.clock
        day_wall = self.day_minutes * 60 / o.speed
        kinds = {k: sum(s.kind == k for s in self.specs) for k in ("cpython", "micropython", "lora")}
        lines = [
            "phasekit site: %s/%s, %d houses with a node (%d CPython, %d MicroPython on RS-485, %d on LoRa), feeder %s"
            % (
                SITE_ID,
                TRANSFORMER,
                len(self.specs),
                kinds["cpython"],
                kinds["micropython"],
                kinds["lora"],
                self.feeder.name,
            ),
            "clock: %g x (a site minute is %.0f ms, the day %.0f s of wall time); the feeder's midnight is %.0f s "
            "from now" % (o.speed, 60000 / o.speed, day_wall, WARMUP_S),
            "RS-485: %d line%s at 115200 baud; the Pi polls every node every %d site minutes (%.2f wall s)"
            % (self.n_lines, "s" if self.n_lines > 1 else "", self.poll_s // 60, self.poll_s / o.speed),
        ]
        if self.plan:
            lines.append("fault plan (site time of the feeder day):")
            nodes = {f.kind: self.fault_nodes[i] for i, f in enumerate(self.plan) if i in self.fault_nodes}
            lines += ["  " + x for x in _faults.describe(self.plan, nodes)]
        else:
            lines.append("fault plan: none")
        _ = c
        for line in lines:
            self.say(line)

    # ------------------------------------------------------------------ the day

    async def _day(self) -> None:
        end_day_s = self.day_minutes * 60 + _TAIL_SITE_S
        self._tasks = [
            asyncio.ensure_future(self._physics_loop()),
            asyncio.ensure_future(self._progress_loop()),
            asyncio.ensure_future(self._faults_loop()),
            asyncio.ensure_future(self._watch_loop()),
        ]
        try:
            while not self.stop.is_set():
                left = self.clock.real(end_day_s - self.clock.day_s())
                if left <= 0:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), min(left, 0.5))
                for t in self._tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        self._clear_progress()

    async def _physics_loop(self) -> None:
        while True:
            self.physics.step()
            await asyncio.sleep(_PHYSICS_S)

    async def _watch_loop(self) -> None:
        """Children that die by themselves are a failure of the run (except the ones the plan kills)."""
        from phasekit.testing.processes import proc_cpu_s, proc_status

        while True:
            await asyncio.sleep(1.0)
            self.server.check()
            if not self._fault_state.get("pi_down") and not self.pi.running:
                raise SiteError(
                    "the transformer Pi exited by itself (code %s): see %s" % (self.pi.code, self.pi_log_path)
                )
            if not self._fault_state.get("broker_down") and not self.broker.running:
                raise SiteError("the broker exited by itself: see %s" % self.broker.log)
            total = 0.0
            parts: dict[str, float] = {}
            cpu = self._cpu
            pids = {"site": os.getpid(), "pi": self.pi.pid, "server": self.server.pid, "broker": self.broker.pid}
            lgw = getattr(self, "lora_gw", None)
            if lgw is not None:
                pids["lora-gateway"] = lgw.pid
                if not lgw.running:
                    raise SiteError("the LoRa gateway exited by itself: see %s" % lgw.log_path)
            for nd in self.nodes:
                vb = getattr(nd, "vb", None)
                if vb is not None:
                    pids["micropython-%d" % nd.spec.addr] = vb.pid
            for name, pid in pids.items():
                if pid is None:
                    continue
                try:
                    rss = proc_status(pid).get("VmRSS", 0.0)
                except OSError:
                    continue
                parts[name] = rss
                total += rss
                with contextlib.suppress(OSError):
                    # CPU seconds per process (each run of the Pi counted apart: a restart starts at 0).
                    cpu[(name, pid)] = proc_cpu_s(pid)
            if total > self._rss_max:
                self._rss_max = total
                self._rss_parts = parts

    def _open_alarms(self) -> int:
        n = self.server_db.open_alarms()
        if n is not None:
            return n
        tr = self.alarm_tracker
        tr.feed(self.server_db.events(tr.last_id))
        return tr.open_count

    async def _progress_loop(self) -> None:
        stored = 0
        n = 0
        while True:
            await asyncio.sleep(_PROGRESS_S)
            n += 1
            self.pi_log.poll()
            if n % 2 == 0:
                stored = await asyncio.to_thread(self.server_db.count_readings)
                self._open = await asyncio.to_thread(self._open_alarms)
            ia, ib, ic, i_n = self.physics.last
            faults = ", ".join(sorted(k for k, v in self._fault_state.items() if v)) or "-"
            line = (
                "site %s | A %5.1f B %5.1f C %5.1f N %5.1f A | moves %3d | readings %5d sent %5d buffered %5d stored"
                " | alarms open %d | faults: %s"
                % (
                    self.clock.clock_text(self.clock.now()),
                    ia,
                    ib,
                    ic,
                    i_n,
                    len(self.pi_log.moves),
                    len(self.line.produced),
                    len(self.pi_log.buffered),
                    stored,
                    getattr(self, "_open", 0),
                    faults.replace("_", " "),
                )
            )
            if not self.o.progress:
                continue
            if self.err.isatty():
                self.err.write("\r\x1b[K" + line[: shutil.get_terminal_size((160, 20)).columns - 1])
                self._progress_shown = True
                self.err.flush()
            elif n % 10 == 0:
                self.err.write(line + "\n")
                self.err.flush()

    # ------------------------------------------------------------------ faults

    async def _at(self, minute: float) -> None:
        wait = self.clock.real(minute * 60 - self.clock.day_s())
        if wait > 0:
            await asyncio.sleep(wait)

    def _note(self, fault_index: int, what: str, **kw: Any) -> None:
        entry = dict(kw, fault=fault_index, what=what, t_s=self.clock.now(), at=self.clock.clock_text(self.clock.now()))
        self._fault_log.append(entry)
        self.say("%s  %s" % (entry["at"], what))

    async def _faults_loop(self) -> None:
        await asyncio.gather(*(self._run_fault(i, f) for i, f in enumerate(self.plan) if f.at_min < self.day_minutes))

    async def _run_fault(self, i: int, f: _faults.Fault) -> None:
        await self._at(f.at_min)
        p = f.params
        node = self.fault_nodes.get(i)
        if f.kind == "node_silent":
            assert node is not None
            nd = self.node_by_addr[node]
            nd.disconnect()
            self._fault_state["node_silent"] = True
            self._note(i, "fault: node %d drops off the line" % node, node=node, event="silent")
            await self._at(f.at_min + p["for_min"])
            nd.reconnect()
            self._fault_state["node_silent"] = False
            self._note(i, "fault over: node %d is back on the line" % node, node=node, event="back")
        elif f.kind == "broker_down":
            self._fault_state["broker_down"] = True
            await asyncio.to_thread(self.broker.stop)
            self._note(i, "fault: the broker stops", event="down")
            await self._at(f.at_min + p["for_min"])
            await asyncio.to_thread(self.broker.start)
            self._fault_state["broker_down"] = False
            self._note(i, "fault over: the broker is back", event="up")
        elif f.kind == "pi_kill":
            self._fault_state["pi_down"] = True
            self.pi.kill()
            self._note(i, "fault: the transformer Pi is killed (SIGKILL)", event="killed")
            await self._at(f.at_min + p["down_min"])
            self.pi.start()
            self._fault_state["pi_down"] = False
            self._note(i, "the transformer Pi is started again", event="restarted")
        elif f.kind == "forged_command":
            assert node is not None
            self._fault_state["forged_command"] = True
            sent = await asyncio.to_thread(self.operator.forge, node, self.pki.intruder)
            self._note(
                i,
                "fault: a forged command (MOVE node %d, sealed with a key no operator holds) is published by %s"
                % (node, sent.get("cert")),
                node=node,
                event="forged",
                published=sent.get("published"),
            )
            self._fault_state["forged_command"] = False
        elif f.kind == "relay_stuck":
            assert node is not None
            await self._relay_stuck(i, f, node)

    async def _relay_stuck(self, i: int, f: _faults.Fault, addr: int) -> None:
        p = f.params
        nd = self.node_by_addr[addr]
        self._fault_state["relay_stuck"] = True
        closed = nd.closed()
        if not nd.weld():
            self._note(i, "fault skipped: node %d has no closed contact to weld" % addr, node=addr, event="skipped")
            self._fault_state["relay_stuck"] = False
            return
        origin = closed[0]
        target = (origin + 1) % 3
        self._note(
            i,
            "fault: node %d's %s contact welds; the operator moves it to %s"
            % (addr, codes.PHASE_NAMES[origin], codes.PHASE_NAMES[target]),
            node=addr,
            event="welded",
            origin=origin,
            target=target,
        )
        await asyncio.to_thread(self.operator.send, addr, msg.OP_MOVE, target)
        await self._at(f.at_min + p["repair_after_min"])
        nd.unweld()
        await asyncio.to_thread(self.operator.send, addr, msg.OP_UNLOCK)
        self._note(
            i, "repair: node %d's contact is freed; the operator unlocks the node" % addr, node=addr, event="repaired"
        )
        await self._at(f.at_min + p["repair_after_min"] + p["retry_after_min"])
        now_phase = nd.closed()
        to = target if not now_phase or now_phase[0] != target else origin
        await asyncio.to_thread(self.operator.send, addr, msg.OP_MOVE, to)
        self._note(
            i,
            "the operator moves node %d to %s again" % (addr, codes.PHASE_NAMES[to]),
            node=addr,
            event="retry",
            target=to,
        )
        self._fault_state["relay_stuck"] = False

    # ------------------------------------------------------------------ the end

    async def _finish(self) -> None:
        """Let the last records reach the server, stop the Pi cleanly, count everything."""
        if not hasattr(self, "pi"):
            return
        if self.broker is not None and not self.broker.running:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.broker.start)
        self._fault_state.clear()
        for nd in self.nodes:
            nd.reconnect()
        if not self.interrupted:
            if not self.pi.running:
                self.pi.start()
            # Drain: everything the Pi buffered reaches the server (wall time: a few seconds).
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not self.stop.is_set():
                self.pi_log.poll()
                stored = await asyncio.to_thread(self.server_db.readings)
                bufd = {(a + 256 * g, s) for a, g, s in self.pi_log.buffered}
                if bufd <= stored:
                    self.drained = True
                    break
                await asyncio.sleep(0.5)
        await asyncio.to_thread(self.pi.stop)
        self.pi_log.poll()
        from phasekit.site import report

        self.summary = report.summarize(self)
        report.print_summary(self.summary, self.out)
        if self.o.json_path:
            report.write_json(self.summary, self.o.json_path)
            self.say("summary written to %s" % self.o.json_path)
        if self.o.plot and self.physics.minutes:
            png = self.folder / "day.png"
            try:
                report.plot(self, png)
                self.summary["plot"] = str(png)
                self.say("plot of the day: %s" % png)
            except ImportError as e:
                self.say("no plot: %s (pip install 'phasekit[bench]')" % e)
        if self.o.hold and not self.interrupted:
            self.say("holding the server up: %s (database %s); Ctrl-C to stop" % (self.server.url, self.server.db))
            with contextlib.suppress(asyncio.CancelledError):
                await self.stop.wait()

    async def _teardown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for child in reversed(self._children):
            try:
                r = child.stop()
                if asyncio.iscoroutine(r):
                    await r
                elif r is not None and not isinstance(r, int):
                    pass
            except Exception as e:  # noqa: BLE001 - every part must get its stop, whatever one of them says
                self.say("stopping %s: %s" % (type(child).__name__, e))
        self._children = []
        if hasattr(self, "meter_server"):
            with contextlib.suppress(Exception):
                await self.meter_server.shutdown()
            self._meter_task.cancel()
            await asyncio.gather(self._meter_task, return_exceptions=True)
        for hub in getattr(self, "hubs", []):
            hub.stop()
        shm = getattr(self, "_shm", None)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)
        for f in getattr(self, "_consoles", []):
            f.close()


class _Nodes:
    """The nodes as one child: ``stop()`` stops them all."""

    def __init__(self, nodes: list[SiteNode]):
        self.nodes = nodes

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)


class _Closing:
    """A child whose ``close()`` (a coroutine) ends it."""

    def __init__(self, obj: Any):
        self.obj = obj

    async def stop(self) -> None:
        await self.obj.close()


class _Cancelling:
    """A task of the site as a child: ``stop()`` cancels it."""

    def __init__(self, task: asyncio.Future[Any]):
        self.task = task

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class _PiProc:
    """``phasekit gateway run`` as a process of its own, restartable, every run appending to one log."""

    def __init__(self, cfg: Path, log_path: Path, level: str = "debug"):
        import subprocess

        self._subprocess = subprocess
        self.cfg = cfg
        self.log_path = log_path
        self.level = level
        self.proc: Any = None
        self.starts = 0
        self.code: int | None = None
        self.kills: list[float] = []
        self.started: list[float] = []
        self.stopped: list[float] = []

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = self._subprocess.Popen(
                [sys.executable, "-m", "phasekit.cli", "gateway", "run", str(self.cfg), "--log-level", self.level],
                stdout=log,
                stderr=self._subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                preexec_fn=child_setup,
            )
        self.starts += 1
        self.started.append(time.time())

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait()
            self.kills.append(time.time())
        self.code = self.proc.returncode if self.proc is not None else None
        self.proc = None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        self.stopped.append(time.time())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except self._subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.code = self.proc.returncode
        self.proc = None
        return self.code


def main(options: SiteOptions, out: IO[str] | None = None, err: IO[str] | None = None, strict: bool = True) -> int:
    """Run the site; the exit status: 0 ran to the end (and, ``strict``, every check passed), 1 a check
    failed (``strict``), 130 interrupted. ``phasekit demo`` is not strict: the summary says what failed."""
    run = SiteRun(options, out, err)
    try:
        summary = asyncio.run(run.run())
    except KeyboardInterrupt:
        return 130
    if run.interrupted:
        return 130
    return 0 if summary.get("ok") or not strict else 1
