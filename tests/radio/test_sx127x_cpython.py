"""The SX127x driver against a register-level SX1276 simulator on a simulated channel (CPython: asyncio channel).

The register-level checks that need no air run on both interpreters
(tests/radio/test_sx127x.py).
"""

import asyncio

from phasegate.lora.channel import SimChannel
from phasekit.sim.sx127x import SimSX1276
from phaseradio.sx127x import SX127x


async def wait_for(pred, timeout=2.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.002)
    return None


async def link(node_kwargs=None, gw_kwargs=None, **channel_kw):
    ch = SimChannel(**channel_kw)
    chips = SimSX1276(ch, "node"), SimSX1276(ch, "gw", rssi_dbm=-101, snr_db=-2.5)
    for c in chips:
        c.start()
    node = SX127x(chips[0], **(node_kwargs or {}))
    gw = SX127x(chips[1], **(gw_kwargs or {}))
    node.init()
    gw.init()
    gw.receive()
    return ch, chips, node, gw


def test_packet_sent_by_one_driver_is_read_by_the_other():
    async def main():
        ch, chips, node, gw = await link()
        node.send(b"\x23" + bytes(range(38)))
        assert await wait_for(node.tx_done)
        got = await wait_for(gw.read_packet)
        for c in chips:
            c.stop()
        return got

    payload, rssi, snr = asyncio.run(main())
    assert payload == b"\x23" + bytes(range(38))
    assert rssi == -101 and snr == -2.5


def test_mismatched_spreading_factor_hears_nothing():
    async def main():
        ch, chips, node, gw = await link(node_kwargs={"sf": 9})
        node.send(b"hello")
        assert await wait_for(node.tx_done)
        got = await wait_for(gw.read_packet, timeout=0.3)
        for c in chips:
            c.stop()
        return got

    assert asyncio.run(main()) is None


def test_init_on_the_simulated_chip_programs_frequency_sf_and_low_data_rate_optimisation():
    async def main():
        ch = SimChannel(sf=12, freq_hz=866000000)
        chip = SimSX1276(ch, "x")
        SX127x(chip, freq_hz=866000000, sf=12).init()
        return chip.regs

    regs = asyncio.run(main())
    frf = (regs[0x06] << 16) | (regs[0x07] << 8) | regs[0x08]
    assert frf == 866000000 * (1 << 19) // 32000000
    assert regs[0x1E] >> 4 == 12 and regs[0x1E] & 0x04  # SF12, CRC on
    assert regs[0x26] & 0x08  # LDRO on for SF12/125 kHz
    assert regs[0x01] == 0x81  # LoRa, standby
