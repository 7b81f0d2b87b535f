"""The Pi's bus master and registry against the real node firmware (phasenode.app), in-process.

The node is ``phasenode.app.Node`` on the host HAL: its meter is pymodbus
playing a PZEM-004T over a paced pty (``phasekit.sim.pzem``), its RS-485 UART
is one end of a paced null-modem pty pair opened with pyserial, its relays
are the simulated relay board. The other end of the cable is the Pi's
``phasegate.bus.Bus`` (pyserial + asyncio), and every reply is opened by
``phasegate.registry``: the same bytes as on a real bus at 9600 baud.
"""

import asyncio

from node_fixtures import ADDR, SITE_KEY, T0, host_board, provision, rmtree, tmpdir
from phasecore import msg
from phasegate.bus import Bus, SerialLine
from phasegate.registry import Registry
from phasekit.sim.pzem import PzemMeter, PzemSim
from phasekit.sim.serial_line import NullModem
from phasenode import relay as R
from phasenode.app import Node, Settings
from phasenode.hal import for_board
from phasenode.hal.pin_host import RelayBoard

BAUD = 9600
RULES = {"dead_time_ms": 100, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}


def test_bus_master_polls_and_commands_the_real_node_firmware(tmp_path):
    reg = Registry(SITE_KEY, [ADDR], tmp_path / "seq.txt", tmp_path / "reg.json", stale_after_s=5, offline_after_s=20)

    async def main():
        root = tmpdir("busfw")
        store, config = provision(root, relay=RULES)
        cable = NullModem(BAUD, True)
        cable.start()
        try:
            async with PzemSim(
                [PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)]
            ) as sim:
                relays = RelayBoard()
                hal = for_board(host_board(), {"meter": sim.port, "bus": cable.paths[0], "relays": relays})
                node = Node(
                    host_board(),
                    hal,
                    config,
                    store,
                    Settings(sample_ms=300, meter_timeout_ms=150, meter_retries=1, heartbeat_s=3600),
                )
                node.start()
                bus = Bus(SerialLine(cable.paths[1], BAUD), [ADDR], reply_timeout_s=0.05, retries=2)
                try:
                    async with bus:
                        return await exchange(bus, relays, node)
                finally:
                    node.stop()
                    await asyncio.sleep(0)
                    hal.meter_uart().close()
                    hal.bus_uart().close()
        finally:
            await cable.stop()
            rmtree(root)

    async def exchange(bus, relays, node):
        loop = asyncio.get_running_loop()
        readings = []
        for _ in range(40):
            r = await bus.poll(ADDR)
            if r is not None and r.frame.payload:
                m = reg.receive(ADDR, r.frame.payload, loop.time())
                if m is not None and m.kind == msg.READING:
                    readings.append(m)
                    if len(readings) >= 3:
                        break
            await asyncio.sleep(0.1)
        # The node learns the time from the Pi's heartbeat, then takes a move (after its 1 s minimum dwell).
        await asyncio.sleep(1.2)
        # Its answer carries the boot nonce it drew; a second heartbeat echoes it (as the controller does).
        hb = await bus.request(ADDR, reg.seal(ADDR, msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasegate", "time_s": T0}))
        first = reg.receive(ADDR, hb.frame.payload, loop.time())
        assert first is not None and reg.nodes[ADDR].boot_nonce == first.body["boot_nonce"]
        echo = {"uptime_s": 5, "fw": "phasegate", "time_s": T0, "echo": reg.nodes[ADDR].boot_nonce}
        hb = await bus.request(ADDR, reg.seal(ADDR, msg.HEARTBEAT, echo))
        reply = reg.receive(ADDR, hb.frame.payload, loop.time())
        ack = await reg.command(
            bus,
            ADDR,
            {"id": 77, "op": msg.OP_MOVE, "deadline_s": T0 + 60, "phase": msg.PHASE_B, "expect_phase": msg.PHASE_A},
            loop.time(),
        )
        await asyncio.sleep(0.5)
        after = None
        for _ in range(20):
            r = await bus.poll(ADDR)
            m = r and r.frame.payload and reg.receive(ADDR, r.frame.payload, loop.time())
            if m and m.kind == msg.READING and m.body["phase"] == msg.PHASE_B:
                after = m
                break
            await asyncio.sleep(0.1)
        reg.update(loop.time())
        return readings, reply, ack, after, relays, bus.stats[ADDR], node.relay.stats()

    readings, reply, ack, after, relays, st, relay_stats = asyncio.run(asyncio.wait_for(main(), 60))
    r = readings[-1].body
    assert (r["voltage_dV"], r["current_mA"], r["energy_Wh"], r["pf_centi"]) == (2314, 7482, 1234567, 95)
    assert reply is not None and reply.kind == msg.HEARTBEAT
    assert ack.kind == msg.ACK and ack.body["id"] == 77 and ack.body["outcome"] == msg.ACK_DONE
    assert after is not None and relays.closed() == [R.PHASE_B] and not relays.ever_two_closed()
    assert relay_stats["moves_total"] == 1
    assert reg.nodes[ADDR].liveness == "online" and reg.nodes[ADDR].phase == msg.PHASE_B
    c = reg.nodes[ADDR].counters
    assert c["bad_tag"] == c["replay"] == c["malformed"] == c["schema"] == 0
    # 9600 baud: a poll (6 bytes) and a reading (~38 bytes) need ~46 ms of line; the node answers in < 20 ms.
    assert st.last_rtt_ms is not None and st.last_rtt_ms < 90
