"""The Pi's class-A LoRa link against the real node firmware (phasenode.app with phasenode.link_lora).

The node runs in-process on the host HAL with a LoRa board: its SX1276 is the
register-level simulator (``phasekit.sim.sx127x``) driven by the shared
``phaseradio.sx127x`` driver, its meter pymodbus playing a PZEM-004T,
its relays the simulated relay board. The Pi side is ``phasegate.lora.link.
ClassALink`` on the same simulated channel and ``phasegate.registry``. Real
time (the node's windows and duty cycle run on its own clock).
"""

import asyncio
import json
import os

from node_fixtures import ADDR, SITE_KEY, T0, provision, rmtree, tmpdir
from phasecore import msg
from phasegate.lora.channel import SimChannel
from phasegate.lora.link import ClassALink
from phasegate.lora.radio import SimChannelRadio
from phasegate.registry import Registry
from phasekit.sim.pzem import PzemMeter, PzemSim
from phasekit.sim.sx127x import SimSX1276
from phasenode import board as board_mod
from phasenode import relay as R
from phasenode.app import Node, Settings
from phasenode.hal import for_board
from phasenode.hal.pin_host import RelayBoard
from portable import REPO as ROOT


def lora_host_board(folder):
    """The host virtual board with an SX1276 instead of the RS-485 bus (lines are names on a host)."""
    with open(os.path.join(ROOT, "boards", "host-virtual.json")) as f:
        d = json.load(f)
    d["name"] = "host-lora"
    d["capabilities"] = ["lora", "relays", "meter"]
    del d["uarts"]["bus"]
    d["lora"] = {
        "chip": "sx1276",
        "bus": "lora",
        "sck": "lora_sck",
        "mosi": "lora_mosi",
        "miso": "lora_miso",
        "cs": "lora_cs",
        "reset": "lora_reset",
        "irq": "lora_irq",
        "busy": None,
        "freq_hz": 865062500,
        "tx_power_dbm": 14,
    }
    path = os.path.join(str(folder), "host-lora.json")
    with open(path, "w") as f:
        json.dump(d, f)
    return board_mod.load(path)


def test_class_a_link_reaches_the_real_node_firmware_in_its_window(tmp_path):
    board = lora_host_board(tmp_path)
    reg = Registry(SITE_KEY, {ADDR: "lora"}, tmp_path / "seq.txt", tmp_path / "reg.json")

    async def main():
        ch = SimChannel(sf=7)
        chip = SimSX1276(ch, "node-radio")
        chip.start()
        root = tmpdir("lorafw")
        store, config = provision(root, relay={"dead_time_ms": 100, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0})
        try:
            async with PzemSim(
                [PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)]
            ) as sim:
                relays = RelayBoard()
                hal = for_board(board, {"meter": sim.port, "lora": chip, "relays": relays})
                # Report at least every 3 s, no duty-cycle pause (1000 per mille): a short test.
                node = Node(
                    board,
                    hal,
                    config,
                    store,
                    Settings(
                        sample_ms=300,
                        meter_timeout_ms=150,
                        meter_retries=1,
                        heartbeat_s=3600,
                        lora_report_min_s=0,
                        lora_report_max_s=3,
                        lora_duty_pm=1000,
                    ),
                )
                node.start()
                link = ClassALink(SimChannelRadio(ch.radio("pi")), [ADDR])
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                seen = []
                runner = asyncio.create_task(
                    link.run(stop, lambda a, r: seen.append(reg.receive(a, r.frame.payload, loop.time())))
                )
                try:
                    await asyncio.sleep(3.5)
                    # The node's boot heartbeat came up with its nonce; the Pi's heartbeat echoes it.
                    nonce = reg.nodes[ADDR].boot_nonce
                    assert nonce is not None, seen
                    hb = reg.seal(ADDR, msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasegate", "time_s": T0, "echo": nonce})
                    pushed = await link.push(ADDR, hb, timeout_s=10)
                    await asyncio.sleep(1.2)  # the node's 1 s minimum dwell after boot
                    cmd = reg.seal(
                        ADDR, msg.COMMAND, {"id": 5, "op": msg.OP_MOVE, "deadline_s": T0 + 600, "phase": msg.PHASE_B}
                    )
                    reply = await link.request(ADDR, cmd, timeout_s=15)
                    ack = reply and reg.receive(ADDR, reply.frame.payload, loop.time())
                    await asyncio.sleep(0.5)
                    return seen, pushed, ack, relays.closed(), relays.ever_two_closed(), dict(link.counters)
                finally:
                    stop.set()
                    await runner
                    node.stop()
                    await asyncio.sleep(0)
                    hal.meter_uart().close()
        finally:
            chip.stop()
            rmtree(root)

    seen, pushed, ack, closed, two, counters = asyncio.run(asyncio.wait_for(main(), 60))
    assert all(m is not None for m in seen)
    kinds = [m.kind for m in seen]
    assert msg.READING in kinds and msg.HEARTBEAT in kinds
    r = [m for m in seen if m.kind == msg.READING][0].body
    assert (r["voltage_dV"], r["current_mA"], r["energy_Wh"]) == (2314, 7482, 1234567)
    assert pushed is True
    assert ack is not None and ack.kind == msg.ACK and ack.body["id"] == 5 and ack.body["outcome"] == msg.ACK_DONE
    assert closed == [R.PHASE_B] and not two
    assert counters["window_missed"] == 0 and counters["crc_errors"] == 0
