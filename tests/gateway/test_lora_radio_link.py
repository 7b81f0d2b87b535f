"""The Pi's LoRa node links on the simulated channel: polled schedule and class-A windows."""

import asyncio
import os

from phasecore import msg
from phasegate.lora.channel import SimChannel
from phasegate.lora.link import ClassALink, polled_link
from phasegate.lora.radio import SimChannelRadio, open_radio
from phasegate.registry import Registry
from phasekit.sim.bus_nodes import SimNode
from phasekit.sim.lora_nodes import SimLoraNode
from phasekit.sim.sx127x import SimSX1276

SITE_KEY = bytes(range(32))  # synthetic test key
SCALE = 0.1  # channel seconds per real second


def registry(tmp_path, addrs):
    return Registry(
        SITE_KEY, {a: "lora" for a in addrs}, os.path.join(tmp_path, "seq.txt"), os.path.join(tmp_path, "reg.json")
    )


def start_nodes(ch, addrs, scheme, stop, **kw):
    sims = [SimLoraNode(SimNode(a, SITE_KEY), ch.radio("n%d" % a), scheme, **kw) for a in addrs]
    loop = asyncio.get_running_loop()
    return sims, [loop.create_task(s.run(stop)) for s in sims]


async def finish(stop, tasks):
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_polled_link_reads_every_node_and_delivers_a_command(tmp_path):
    addrs = [1, 2, 3, 4, 5]
    reg = registry(tmp_path, addrs)

    async def main():
        ch = SimChannel(sf=7, time_scale=SCALE)
        stop = asyncio.Event()
        sims, tasks = start_nodes(ch, addrs, "polled", stop)
        link = polled_link(SimChannelRadio(ch.radio("pi")), addrs, turnaround_s=0.02 * SCALE, guard_s=0.05 * SCALE)
        async with link:
            rd = await link.poll_round()
            ack = await reg.command(link, 3, {"id": 9, "op": msg.OP_MOVE, "deadline_s": 9, "phase": 2}, 0.0)
        await finish(stop, tasks)
        return rd, ack, ch.stats, sims

    rd, ack, stats, sims = asyncio.run(main())
    got = [reg.receive(a, r.frame.payload, 1.0) for a, r in rd]
    assert all(m is not None and m.kind == msg.READING for m in got)
    assert ack.body["id"] == 9 and sims[2].node.phase == 2
    assert stats["collided"] == 0


def test_polled_link_over_the_sx127x_hat_driver(tmp_path):
    addrs = [7, 8]
    reg = registry(tmp_path, addrs)

    async def main():
        ch = SimChannel(sf=7, time_scale=SCALE)
        chip = SimSX1276(ch, "pi-hat", rssi_dbm=-110, snr_db=-3.0)
        chip.start()
        radio = open_radio({"driver": "sx127x", "freq_hz": 865062500, "sf": 7, "bw_hz": 125000}, spi=chip)
        radio.poll_s = 0.001
        radio.time_scale = SCALE
        await radio.start()
        stop = asyncio.Event()
        sims, tasks = start_nodes(ch, addrs, "polled", stop)
        link = polled_link(radio, addrs, turnaround_s=0.02 * SCALE, guard_s=0.05 * SCALE)
        async with link:
            rounds = [await link.poll_round() for _ in range(3)]
            rssi = link.line.last_rx.rssi_dbm
        await finish(stop, tasks)
        await radio.close()
        chip.stop()
        return rounds, rssi

    rounds, rssi = asyncio.run(main())
    opened = [reg.receive(a, r.frame.payload, 1.0) for rd in rounds for a, r in rd if r is not None]
    assert len(opened) >= 5 and all(m is not None for m in opened)
    assert rssi == -110


def test_class_a_command_goes_out_in_the_window_after_an_uplink(tmp_path):
    addrs = [1, 2, 3]
    reg = registry(tmp_path, addrs)

    async def main():
        ch = SimChannel(sf=7, time_scale=SCALE)
        stop = asyncio.Event()
        sims, tasks = start_nodes(ch, addrs, "class_a", stop, interval_s=5.0)
        sims[1].node.drop_acks = 1  # the first ack is lost: the command is sent again, same bytes
        link = ClassALink(SimChannelRadio(ch.radio("pi")), addrs, rx_delay_s=0.05 * SCALE)
        seen = []
        runner = asyncio.create_task(link.run(stop, lambda a, r: seen.append(reg.receive(a, r.frame.payload, 0.0))))
        payload = reg.seal(2, msg.COMMAND, {"id": 4, "op": msg.OP_MOVE, "deadline_s": 9, "phase": 1})
        reply = await link.request(2, payload, timeout_s=30 * SCALE)
        ack = reg.receive(2, reply.frame.payload, 0.0)
        await finish(stop, tasks)
        await asyncio.wait_for(runner, 2)
        return ack, reply, seen, sims, link

    ack, reply, seen, sims, link = asyncio.run(main())
    assert ack.kind == msg.ACK and ack.body["id"] == 4 and ack.body["phase"] == 1
    assert reply.attempts == 2 and link.stats[2].retries == 1
    assert len(sims[1].node.commands) == 1  # executed once although sent twice
    assert seen and all(m is not None and m.kind == msg.READING for m in seen)
    assert link.counters["downlinks"] == 2
