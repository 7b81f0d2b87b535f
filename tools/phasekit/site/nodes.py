"""The houses' nodes of a simulated site: the real phasenode application, in this process or on the virtual board.

Every node is provisioned as an installer would (``phasekit.node.provision``:
config.json and node.key from the site key, in a folder of its own that is its
flash) and runs the real application (``phasenode.app.Node``: session, relay
controller with its interlocks, anomaly checks, persistence in that folder).
Around it, simulated hardware:

- the PZEM-004T: ``phasekit.sim.pzem.PzemPort`` in process (real Modbus RTU
  bytes at 9600 baud), ``PzemSim`` (pymodbus on a pty) on the virtual board;
  powered only while the house side is live, as the real meter is;
- the relay board: ``phasenode.hal.pin_host.RelayBoard`` with a sense of the
  house side (so a welded contact is caught, docs/relay-safety.md), stamped
  with the site clock;
- the RS-485 transceiver: a drop on the site's line (``phasekit.sim.rs485_hub``).

``CPythonNode``: in this process, on the site clock (``Node(clock=, speed=)``);
its RS-485 receive step runs when the line delivers bytes to it
(``Rs485Link.service``), not on a 2 ms poll of its UART. ``MicroPythonNode``:
``phasekit.sim.virtual_board.VirtualBoard`` (the MicroPython unix port running
the .mpy firmware that ``phasekit deploy`` would copy), its clock from
``PHASENODE_CLOCK``.

Both give the physics (``phasekit.site.physics``) the same handful of calls:
``closed()`` (the phases whose contact is closed *physically*), ``set_load``,
and the fault hooks ``disconnect``/``reconnect``, ``weld``/``unweld``.

Public: ``NodeSpec``, ``SiteNode``, ``CPythonNode``, ``MicroPythonNode``,
``stage_firmware``, ``RELAY_RULES``, ``LIMITS``, ``app_settings``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from phasecore.codes import PHASE_NAMES
from phasekit import repo
from phasekit.node import provision as _provision
from phasekit.sim.pzem import PzemMeter, PzemPort

if TYPE_CHECKING:
    from phasekit.sim.rs485_hub import HubUart, Rs485Hub
    from phasekit.sim.virtual_board import VirtualBoard
    from phasekit.site.clock import SiteClock
    from phasenode.app import Node
    from phasenode.hal.pin_host import RelayBoard

__all__ = (
    "NodeSpec",
    "SiteNode",
    "LoraNode",
    "lora_board",
    "CPythonNode",
    "MicroPythonNode",
    "stage_firmware",
    "RELAY_RULES",
    "LIMITS",
    "app_settings",
    "BOARD",
)

log = logging.getLogger(__name__)

BOARD = "host-virtual"
# The relay rules every node enforces whatever the Pi asks: the firmware's defaults (docs/relay-safety.md).
RELAY_RULES: dict[str, int] = {
    "dead_time_ms": 2000,
    "min_dwell_s": 900,
    "max_per_hour": 2,
    "max_per_day": 6,
    "lock_hold_s": 300,
    "settle_ms": 5000,
    "checkpoint_s": 3600,
}
# A 63 A supply fuse; the meter may fall silent for up to 10 site minutes between the node's
# samples without locking the relay (a node samples every few site minutes on a fast site).
LIMITS: dict[str, int] = {"overcurrent_ma": 63000, "meter_silent_ms": 600000}


def app_settings(sample_ms: int) -> dict[str, int]:
    """The node application's settings on a simulated site: its sampling period and a daily heartbeat.

    A queued heartbeat takes the place of a reading in one poll's answer; once a site day keeps the
    readings regular (the silent-node alarm judges their gaps).
    """
    return {"sample_ms": sample_ms, "heartbeat_s": 86400}


def boot_house(
    board: Any, link: Mapping[str, Any], folder: Path, clock: SiteClock, log_line: Callable[[str], None]
) -> tuple[RelayBoard, PzemMeter, PzemPort, Node]:
    """A house's node on the host HAL: its relay board, its PZEM-004T (powered while a phase is closed), the app.

    ``link``: the HAL wiring of its link (``{"bus": uart}`` or ``{"lora": chip}``). The node's files
    are as on its flash, written the same way, but without fsync: 50 nodes in one process fsyncing
    their checkpoints would stall the line they all share (docs/site.md).
    """
    from phasenode import persist
    from phasenode.app import Node
    from phasenode.hal.host import HostHal
    from phasenode.hal.pin_host import RelayBoard

    assert board.relays is not None  # the host boards have relays
    relays = RelayBoard(active_high=board.relays.active_high, clock=clock.ticks_ms, ids=board.relays.pins)
    meter = PzemMeter(address=1)
    port = PzemPort(meter, powered=relays.live)
    hal = HostHal(board, wiring={"meter": port, **link, "relays": relays, "sense": True})
    store = persist.Store(str(folder), fsync=False)
    node = Node(
        board, hal, store.load_config(), store, clock=clock.ticks_ms, watchdog=False, log=log_line, speed=clock.speed
    )
    return relays, meter, port, node


class NodeSpec:
    """What the site knows of one node: link address, house, home phase and which interpreter runs it."""

    __slots__ = ("addr", "house", "house_id", "home_phase", "kind", "line")

    def __init__(self, addr: int, house: int, house_id: str, home_phase: int, kind: str, line: int = 0):
        self.addr = addr
        self.house = house
        self.house_id = house_id
        self.home_phase = home_phase
        self.kind = kind  # "cpython" | "micropython" | "lora"
        self.line = line  # which RS-485 line (0: the Pi's [bus] port, 1..: its extra_lines)

    @property
    def node_id(self) -> str:
        return "n%03d-%s" % (self.addr, "".join(c for c in self.house_id if c.isalnum() or c in "._-")[:20])


class SiteNode:
    """The common face of a node to the physics and the fault plan."""

    spec: NodeSpec
    meter: PzemMeter

    def closed(self) -> list[int]:
        """The phases whose contact is closed now (physically)."""
        raise NotImplementedError

    def set_load(self, voltage: float, current: float, power: float, pf: float, energy_wh: float) -> None:
        """What the PZEM measures now (values the meter reports; zero while the house side is dead)."""
        m = self.meter
        m.voltage, m.current, m.power, m.power_factor, m.energy = voltage, current, power, pf, energy_wh

    def disconnect(self) -> None:
        raise NotImplementedError

    def reconnect(self) -> None:
        raise NotImplementedError

    def weld(self) -> bool:
        """Weld the closed contact shut; False when no contact is closed (nothing to weld)."""
        raise NotImplementedError

    def unweld(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def relay_faults(self) -> dict[str, Any]:
        """Physical checks of the relay board: two phases ever closed at once, shortest dead time seen."""
        raise NotImplementedError


def provision_node(
    site_key: bytes,
    folder: Path,
    spec: NodeSpec,
    sample_ms: int,
    board: str = BOARD,
    app: dict[str, int] | None = None,
) -> None:
    """config.json and node.key in ``folder``, as ``phasekit provision`` writes them.

    ``app``: the node's settings (default ``app_settings(sample_ms)``)."""
    _provision.provision(
        site_key,
        folder,
        spec.node_id,
        spec.addr,
        board,
        PHASE_NAMES[spec.home_phase],
        limits=LIMITS,
        relay=RELAY_RULES,
        app=app_settings(sample_ms) if app is None else app,
        force=True,
    )


class CPythonNode(SiteNode):
    """The node application in this process, on a drop of the site's line."""

    def __init__(
        self,
        spec: NodeSpec,
        folder: Path,
        site_key: bytes,
        clock: SiteClock,
        hub: Rs485Hub,
        sample_ms: int,
        say: Callable[[str], object] | None = None,
    ):
        from phasenode import board as _board

        self.spec = spec
        self.folder = folder
        self._clock = clock
        self._say = say
        folder.mkdir(parents=True, exist_ok=True)
        provision_node(site_key, folder, spec, sample_ms)
        board = _board.load(str(repo.board_path(BOARD)))
        self.uart: HubUart = hub.add_uart("n%d" % spec.addr, on_rx=self._on_rx)
        self.relay_board, self.meter, self.port, self.node = boot_house(
            board, {"bus": self.uart}, folder, clock, self._log
        )
        if self.node.rs485 is None:
            raise RuntimeError("node %d has no RS-485 link: %s" % (spec.addr, self.node.local_only))

    def _log(self, line: str) -> None:
        log.info("node %d: %s", self.spec.addr, line)

    def _on_rx(self) -> None:
        rs = self.node.rs485
        if rs is not None:
            rs.service(self._clock.ticks_ms())

    async def start(self) -> None:
        self.node.start(serve_links=False)

    async def stop(self) -> None:
        tasks = list(self.node._tasks)
        self.node.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    def closed(self) -> list[int]:
        return self.relay_board.closed()

    def disconnect(self) -> None:
        self.uart.connected = False

    def reconnect(self) -> None:
        self.uart.connected = True

    def weld(self) -> bool:
        c = self.relay_board.closed()
        if not c:
            return False
        self.relay_board.weld(c[0])
        return True

    def unweld(self) -> None:
        self.relay_board.unweld()

    def relay_faults(self) -> dict[str, Any]:
        rb = self.relay_board
        return {
            "two_closed": rb.overlaps,
            "min_dead_time_ms": rb.min_gap_ms,
            "operations": sum(rb.operations),
            "transitions": list(rb.transitions[-16:]),
        }


BOARD_LORA = "host-virtual-lora"
LORA_FREQ_HZ = 865062500


def lora_board() -> Any:
    """The LoRa nodes' board: boards/host-virtual-lora.json (the virtual board with an SX1276 instead of RS-485)."""
    from phasenode import board as _board

    return _board.load(str(repo.board_path(BOARD_LORA)))


def lora_settings(sample_ms: int) -> dict[str, int]:
    """A class-A LoRa node's settings on a simulated site: report on a 5 % change, at least every 5 site minutes."""
    # An hourly heartbeat: it carries the radio's RSSI, by which the server knows a LoRa node's gaps.
    return dict(
        app_settings(sample_ms),
        heartbeat_s=3600,
        lora_report_min_s=60,
        lora_report_max_s=300,
        lora_delta_pm=50,
        lora_rx_window_ms=300,
    )


class LoraNode(SiteNode):
    """The node application in this process with an SX1276 (``phasekit.sim.sx127x``) on the site's LoRa channel.

    Class A: it reports by exception and listens after each uplink; the LoRa
    gateway relays what it hears to the owning Pi, which sends nothing back
    (``phasegate.relay``: no downlink), so the node is measured, not moved.
    """

    def __init__(
        self,
        spec: NodeSpec,
        folder: Path,
        site_key: bytes,
        clock: SiteClock,
        channel: Any,
        sample_ms: int,
    ):
        from phasekit.sim.sx127x import SimSX1276

        self.spec = spec
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        provision_node(site_key, folder, spec, sample_ms, board=BOARD_LORA, app=lora_settings(sample_ms))
        board = lora_board()
        self.chip = SimSX1276(channel, "n%d" % spec.addr)
        self.relay_board, self.meter, self.port, self.node = boot_house(
            board, {"lora": self.chip}, folder, clock, self._log
        )
        if self.node.lora is None:
            raise RuntimeError("node %d has no LoRa link: %s" % (spec.addr, self.node.local_only))

    def _log(self, line: str) -> None:
        log.info("node %d: %s", self.spec.addr, line)

    async def start(self) -> None:
        self.chip.start()
        self.node.start()

    async def stop(self) -> None:
        tasks = list(self.node._tasks)
        self.node.stop()
        self.chip.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    def closed(self) -> list[int]:
        return self.relay_board.closed()

    def disconnect(self) -> None:
        pass  # the faults of the plan that silence a node pick one on a line

    def reconnect(self) -> None:
        pass

    def weld(self) -> bool:
        return False

    def unweld(self) -> None:
        pass

    def relay_faults(self) -> dict[str, Any]:
        rb = self.relay_board
        return {"two_closed": rb.overlaps, "min_dead_time_ms": rb.min_gap_ms, "operations": sum(rb.operations)}


def stage_firmware(dest: Path) -> Path:
    """The node firmware as ``phasekit deploy`` stages it for the virtual board (.mpy), once per site."""
    from phasekit.node import deploy

    deploy.stage(repo.board_path(BOARD), None, dest, host=True)
    return dest


class MicroPythonNode(SiteNode):
    """The node firmware under the MicroPython unix port (the virtual board), on a pty drop of the line."""

    def __init__(
        self,
        spec: NodeSpec,
        folder: Path,
        site_key: bytes,
        clock: SiteClock,
        hub: Rs485Hub,
        sample_ms: int,
        firmware: Path,
        console: IO[bytes] | None = None,
        say: Callable[[str], object] | None = None,
    ):
        from phasekit.sim.virtual_board import VirtualBoard

        self.spec = spec
        self.folder = folder
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(firmware, folder)
        provision_node(site_key, folder, spec, sample_ms)
        self.meter = PzemMeter(address=1)
        self.line_name = "mp%d" % spec.addr
        line = hub.add_pty(self.line_name)
        self._hub = hub
        self.vb: VirtualBoard = VirtualBoard(
            folder,
            board=BOARD,
            meters=[self.meter],
            bus_line=line,
            env={"PHASENODE_CLOCK": clock.env()},
            sense=True,
            log=say,
            console=console,
        )
        self._welded = False

    async def start(self) -> None:
        await self.vb.start()

    async def stop(self) -> None:
        await self.vb.stop()

    def closed(self) -> list[int]:
        return self.vb.relays_closed()

    def set_load(self, voltage: float, current: float, power: float, pf: float, energy_wh: float) -> None:
        super().set_load(voltage, current, power, pf, energy_wh)
        # Powered from the measured mains: silent while the house side is dead.
        self.meter.mute = 0 if self.vb.relay_mask else 1 << 30

    def disconnect(self) -> None:
        self._hub.endpoint(self.line_name).connected = False

    def reconnect(self) -> None:
        self._hub.endpoint(self.line_name).connected = True

    def weld(self) -> bool:
        return False  # the relay board lives inside the interpreter: the plan welds an in-process node

    def unweld(self) -> None:
        pass

    def relay_faults(self) -> dict[str, Any]:
        return {"two_closed": self.vb.relay_overlaps, "min_dead_time_ms": None, "operations": None}


def make_nodes(
    specs: list[NodeSpec],
    root: Path,
    site_key: bytes,
    clock: SiteClock,
    hubs: list[Rs485Hub],
    sample_ms: int,
    consoles: Mapping[int, IO[bytes]] | None = None,
    say: Callable[[str], object] | None = None,
    channel: Any = None,
) -> list[SiteNode]:
    """Provision and build every node of ``specs`` under ``root`` (one folder each), on ``hubs[spec.line]``."""
    out: list[SiteNode] = []
    firmware: Path | None = None
    for spec in specs:
        folder = root / spec.node_id
        if spec.kind == "lora":
            out.append(LoraNode(spec, folder, site_key, clock, channel, sample_ms))
        elif spec.kind == "micropython":
            if firmware is None:
                firmware = stage_firmware(root / "_firmware")
            out.append(
                MicroPythonNode(
                    spec,
                    folder,
                    site_key,
                    clock,
                    hubs[spec.line],
                    sample_ms,
                    firmware,
                    console=(consoles or {}).get(spec.addr),
                    say=say,
                )
            )
        else:
            out.append(CPythonNode(spec, folder, site_key, clock, hubs[spec.line], sample_ms, say=say))
    return out
