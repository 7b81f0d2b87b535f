"""The transformer Pi as one process: everything built from the gateway TOML file, run until stopped.

``phasekit gateway run CONFIG`` calls ``run(config)``; systemd stops it with
SIGTERM, which ends the polling, lets the uplink publish the retained
"offline" status, saves the registry and closes the buffer. A SIGKILL or a
power cut at any point loses nothing the Pi accepted (``phasegate.journal``
commits each message before it is acted on further).

What runs depends on the tables present:

- ``[bus]``, ``[lora]`` with nodes and/or ``[relay]`` (nodes heard through LoRa
  gateways, ``phasegate.relay``): the transformer controller
  (``phasegate.controller``) over those links, with the ``[meter]`` when
  configured, ``[balancer]`` limits, the ``[plausibility]`` guard
  (``phasegate.plausibility``), the ``[store]`` buffer, the ``[uplink]``
  when configured (the controller never waits for it) and the ``[scada]``
  Modbus TCP view when enabled;
- ``[lora_gateway]``: a LoRa relay Pi (``phasegate.lora_gateway``) that
  forwards sealed frames unread.

With a ``[bus]``, the firmware roll-out engine (``phasegate.ota``) runs too,
idle until ``phasekit ota push`` leaves a request in ``ota/`` beside the
store; a roll-out in progress carries on after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasecore import balancer as _bal
from phasegate import config as _config
from phasegate.clock import Clock
from phasegate.controller import Controller, node_components
from phasegate.journal import Journal
from phasegate.plausibility import Guard, GuardConfig
from phasegate.registry import Registry
from phasegate.store import Store

if TYPE_CHECKING:
    from pymodbus.client import ModbusBaseClient

    from phaseconf import Settings
    from phasegate.controller import NodeLink
    from phasegate.lora.channel import SimChannel
    from phasegate.lora.radio import SimChannelRadio, SocketChannelRadio, SX127xRadio
    from phasegate.meter import MeterProfile, ModbusMeter
    from phasegate.ota import Engine as OtaEngine
    from phasegate.relay import RelayLink
    from phasegate.scada import ScadaState
    from phasegate.uplink import Uplink

log = logging.getLogger(__name__)

# Logged (INFO) at a clean stop: what the run handled and refused (harnesses parse it:
# phasekit.testing.pi_flood). Keep the format stable: each part "name=count, ...".
STOPPED = "gateway stopped: controller %s; operator gate %s; dead letters %s"

__all__ = (
    "Gateway",
    "run",
    "run_lora_gateway",
    "balancer_config",
    "meter_profile",
    "operator_state_path",
    "pause_state_path",
    "store_path",
)

_BALANCER_KEYS = (
    "moves_per_round",
    "min_dwell_s",
    "moves_per_day",
    "multi_share",
    "persist_rounds",
    "min_gain_a",
    "min_gain_frac",
    "scarcity",
    "scarcity_from",
    "stale_s",
    "warmup_s",
    "ss_min_dwell_s",
    "ss_moves_per_day",
    "ss_min_move_gain_a",
    "ss_min_gain_a",
)


def meter_profile(cfg: Settings) -> MeterProfile:
    """The [meter] profile: a shipped name (``sdm630``) or a JSON path relative to the config file."""
    from phasegate.meter import MeterProfile

    name = cfg.table("meter")["profile"]
    if "/" in name or name.endswith(".json"):
        name = str(cfg.resolve(name))
    return MeterProfile.load(name)


def store_path(cfg: Settings) -> Path:
    """The buffer file of the config ([store] path, relative to the config's folder)."""
    return cfg.resolve(cfg.table("store")["path"])


def operator_state_path(cfg: Settings) -> Path:
    """The operator gate's state file: ``operators.json`` beside the buffer (``phasegate.operator``)."""
    return store_path(cfg).parent / "operators.json"


def pause_state_path(cfg: Settings) -> Path:
    """The balancer's pause state: ``balancer.json`` beside the buffer (``phasegate.controller``)."""
    return store_path(cfg).parent / "balancer.json"


def balancer_config(table: Mapping[str, Any]) -> _bal.Config:
    """``phasecore.balancer.Config`` from a validated [balancer] table."""
    return _bal.Config(**{k: table[k] for k in _BALANCER_KEYS})


class Gateway:
    """The parts of one transformer Pi, built from a validated config; ``await gw.run(stop)``."""

    def __init__(self, cfg: Settings, backend: str | None = None, channel: SimChannel | None = None):
        """``channel``: the simulated LoRa channel when ``[lora] driver = "sim"`` (simulated sites, tests)."""
        self.cfg = cfg
        # Site time for everything about the site (phasegate.clock): the wall clock unless [clock] says otherwise.
        self.clock = Clock.from_table(cfg.table("clock") if cfg.has("clock") else None)
        site = cfg.table("site")
        self.site, self.transformer = site["id"], site["transformer"]
        store_t = cfg.table("store")
        self.store = Store(cfg.resolve(store_t["path"]), store_t["max_rows"])
        self.registry = Registry.from_config(cfg, backend=backend)
        self.links: dict[str, NodeLink] = {}
        if cfg.has("bus"):
            from phasegate.bus import Bus

            bus_t = cfg.table("bus")
            self.links["bus"] = Bus.from_config(bus_t, clock=self.clock)
            # More lines, polled side by side: links "bus2", "bus3", ... (as phasegate.registry names them).
            for i, line in enumerate(bus_t["extra_lines"]):
                self.links["bus%d" % (i + 2)] = Bus.from_config(dict(bus_t, **line), clock=self.clock)
        self.radio: SimChannelRadio | SocketChannelRadio | SX127xRadio | None = None
        if cfg.has("lora") and cfg.table("lora")["nodes"]:
            from phasegate.lora.link import ClassALink
            from phasegate.lora.radio import open_radio

            t = cfg.table("lora")
            self.radio = open_radio(t, channel=channel)
            # The node firmware reports by exception and listens after each uplink (class A).
            self.links["lora"] = ClassALink(self.radio, t["nodes"], report_max_s=t["report_max_s"])
        self.relay: RelayLink | None = None
        if cfg.has("relay"):
            from phasegate.relay import RelayLink

            # Nodes heard only through LoRa gateways: their frames come in through the uplink.
            self.relay = RelayLink(cfg.table("relay")["nodes"])
            self.links["relay"] = self.relay
        self.meter_client: ModbusBaseClient | None = None
        self.meter = self._meter() if cfg.has("meter") else None
        self.uplink = self._uplink() if cfg.has("uplink") else None
        self.journal = Journal(self.store, self.registry, self.uplink)
        b = cfg.table("balancer") if cfg.has("balancer") else _config.defaults("balancer")
        self.balancing = b["enabled"]
        pl = cfg.table("plausibility") if cfg.has("plausibility") else _config.defaults("plausibility")
        # Envelopes and quarantines outlive a restart, beside the registry state.
        guard: Guard | bool = (
            Guard(GuardConfig.from_table(pl), cfg.resolve(store_t["path"]).parent / "plausibility.json")
            if pl["enabled"]
            else False
        )
        self.controller = Controller(
            self.registry,
            _bal.Balancer(balancer_config(b), capacity=max(len(self.registry.nodes), 1)),
            self.links,
            meter=self.meter,
            journal=self.journal,
            period_s=b["period_s"],
            ack_timeout_s=b["ack_timeout_s"],
            verify_s=b["verify_s"],
            suspend_s=b["suspend_s"],
            unconfirmed_s=b["unconfirmed_s"],
            command_ttl_s=b["command_ttl_s"],
            heartbeat_s=b["heartbeat_s"],
            summary_period_s=cfg.table("uplink")["summary_period_s"] if cfg.has("uplink") else 900,
            clock=self.clock,
            guard=guard,
            pause_path=pause_state_path(cfg),
        )
        if self.uplink is not None and self.relay is not None:
            self.uplink.on_relay = self.relay.deliver
        if self.uplink is not None and cfg.table("uplink")["operators"]:
            from phasegate.operator import OperatorGate
            from phasegate.registry import load_site_key

            self.controller.operator_gate = OperatorGate(
                load_site_key(str(cfg.resolve(site["key_file"]))),
                self.site,
                self.transformer,
                cfg.table("uplink")["operators"],
                operator_state_path(cfg),
                nodes=self.registry.nodes,
            )
            self.uplink.on_command = self.controller.on_operator_command
            self.uplink.on_oversize = self.controller.on_oversize_command
        self.ota: OtaEngine | None = None
        bus = self.links.get("bus")
        if bus is not None:
            from phasegate.ota import Engine as OtaEngine

            ctl = self.controller
            self.ota = OtaEngine(
                cfg.resolve(store_t["path"]).parent / "ota",
                self.registry,
                bus,  # type: ignore[arg-type]  # a Bus: request, wait_idle, idle_left
                command=ctl.command,
                hold=ctl.hold,
                release=ctl.release,
                event=ctl.event,
                on_message=ctl.handle,
                heartbeat=ctl.heartbeat,
            )
        self.scada_state: ScadaState | None = None
        # (local date, moves_done at its start) for SCADA's moves_today
        self._moves_day: tuple[tuple[int, ...] | None, int] = (None, 0)
        if cfg.has("scada") and cfg.table("scada")["enabled"]:
            from phasegate import scada

            self.scada_state = scada.ScadaState()

    def _meter(self) -> ModbusMeter:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        from phasegate.meter import ModbusMeter

        t = self.cfg.table("meter")
        profile = meter_profile(self.cfg)
        if t["transport"] == "tcp":
            self.meter_client = AsyncModbusTcpClient(t["host"], port=t["tcp_port"], timeout=t["timeout_s"], retries=1)
        else:
            self.meter_client = AsyncModbusSerialClient(
                t["port"], baudrate=t["baud"], timeout=t["timeout_s"], retries=1
            )
        return ModbusMeter(
            profile, self.meter_client, unit=t["unit"], max_current_a=4 * self.cfg.table("site")["rated_current_a"]
        )

    def _uplink(self) -> Uplink:
        from phasegate.uplink import Uplink, UplinkConfig

        return Uplink(self.store, UplinkConfig.from_config(self.cfg), clock=self.clock.wall)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` (asyncio.Event) is set; the uplink and SCADA run beside the controller."""
        tasks: list[asyncio.Future[None]] = []
        if self.meter_client is not None:
            await self.meter_client.connect()  # a meter that is not there yet: reads fail and are journaled
        if self.radio is not None:
            await self.radio.start()
        for link in self.links.values():
            if hasattr(link, "open"):
                link.open()
        try:
            if self.uplink is not None:
                tasks.append(asyncio.ensure_future(self.uplink.run(stop)))
            if self.scada_state is not None:
                tasks.append(asyncio.ensure_future(self._scada(stop, self.scada_state)))
            if self.ota is not None:
                tasks.append(asyncio.ensure_future(self.ota.run(stop)))
            if not self.balancing:
                self.controller.balancer.config.moves_per_round = 0
                log.info("balancing disabled in [balancer]: measuring and reporting only")
            log.info(
                "gateway %s/%s: %d nodes on %s, meter %s, uplink %s",
                self.site,
                self.transformer,
                len(self.registry.nodes),
                "+".join(sorted(self.links)) or "no link",
                "yes" if self.meter else "none",
                "yes" if self.uplink else "none",
            )
            await self.controller.run(stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in self.links.values():
                if hasattr(link, "close"):
                    link.close()
            if self.radio is not None:
                await self.radio.close()
            if self.meter_client is not None:
                self.meter_client.close()
            self.registry.save_state()
            log.info(
                STOPPED, _counts(self.controller.stats), _counts(self._gate_counters()), _counts(self.store.dead_counts)
            )
            self.store.close()

    def _gate_counters(self) -> dict[str, int]:
        gate = self.controller.operator_gate
        return dict(gate.counters) if gate is not None else {}

    async def _scada(self, stop: asyncio.Event, state: ScadaState) -> None:
        from phasegate import scada

        t = self.cfg.table("scada")
        server = scada.server(state, host=t["bind"], port=t["port"])
        serving = asyncio.ensure_future(server.serve_forever())
        try:
            while not stop.is_set():
                self._update_scada(state)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=5.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            await server.shutdown()
            serving.cancel()

    def _moves_today(self) -> int:
        """Moves carried out since local midnight (since start on the day the gateway started)."""
        today = time.localtime(self.controller.clock.wall())[:3]
        done = self.controller.stats["moves_done"]
        if self._moves_day[0] != today:
            self._moves_day = (today, done if self._moves_day[0] is not None else 0)
        return done - self._moves_day[1]

    def _update_scada(self, state: ScadaState) -> None:
        from phasecore import metrics

        ctl = self.controller
        r = ctl.last_meter
        online, stale, offline, locked = self.registry.counts()
        values: dict[str, float | None] = {
            "nodes_online": online,
            "nodes_stale": stale,
            "nodes_offline": offline,
            "nodes_locked": locked,
            "meter_ok": 1 if r is not None else 0,
            "moves_today": self._moves_today(),
            "uplink_connected": 1 if self.uplink is not None and self.uplink.connected else 0,
            "backlog": len(self.store),
            "updated_s": int(ctl.clock.wall()),
        }
        comps = ctl.last_components or node_components(self.registry)
        if comps is not None:
            mags = metrics.phase_magnitudes(*comps)
            values.update(
                current_a=mags[0],
                current_b=mags[1],
                current_c=mags[2],
                current_n=metrics.neutral_rel(*comps),
                cuf=metrics.cuf(*mags),
            )
        if r is not None:
            values.update(voltage_a=r.voltages[0], voltage_b=r.voltages[1], voltage_c=r.voltages[2])
        state.update(**values)


async def run_lora_gateway(cfg: Settings, stop: asyncio.Event, channel: SimChannel | None = None) -> None:
    """A LoRa relay Pi ([lora_gateway]): forward sealed frames heard on [lora] to [uplink], unread."""
    from phasegate.lora.radio import open_radio
    from phasegate.lora_gateway import LoraGateway

    radio = open_radio(cfg.table("lora"), channel=channel, name=cfg.table("lora_gateway")["id"])
    gw = LoraGateway.from_config(cfg, radio, clock=Clock.from_table(cfg.table("clock") if cfg.has("clock") else None))
    await radio.start()
    assert gw.uplink is not None  # from_config always gives the relay its uplink
    uplink = asyncio.ensure_future(gw.uplink.run(stop))
    try:
        log.info("LoRa gateway %s: %d routes", gw.gateway_id, len(cfg.table("lora_gateway")["routes"]))
        await gw.run(stop)
    finally:
        stop.set()
        await asyncio.gather(uplink, return_exceptions=True)
        await radio.close()
        gw.store.close()


def _counts(d: Mapping[str, int]) -> str:
    return ", ".join("%s=%d" % kv for kv in sorted(d.items())) or "none"


def run(path: str | os.PathLike[str]) -> int:
    """Load ``path``, run the gateway until SIGTERM/SIGINT; returns the process exit code."""
    cfg = _config.load(path)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if cfg.has("lora_gateway"):
            await run_lora_gateway(cfg, stop)
        else:
            await Gateway(cfg).run(stop)

    asyncio.run(main())
    return 0
