"""The Pi's LoRa radio interface: the real SX127x driver path against the register-level simulator."""

import asyncio
import importlib.util

import pytest

from phasegate.lora.channel import SimChannel
from phasegate.lora.radio import RadioError, SimChannelRadio, SX127xRadio, open_radio
from phasekit.sim.sx127x import SimSX1276
from phaseradio.sx127x import SX127x

LORA = {
    "driver": "sx127x",
    "freq_hz": 865062500,
    "sf": 7,
    "bw_hz": 125000,
    "cr": 1,
    "sync_word": 0x12,
    "tx_power_dbm": 14,
}


async def hat_and_node(**channel_kw):
    ch = SimChannel(**channel_kw)
    chip = SimSX1276(ch, "pi-hat", rssi_dbm=-97, snr_db=6.25)
    chip.start()
    pi = open_radio(LORA, spi=chip)
    node = SimChannelRadio(ch.radio("node"))
    await pi.start()
    return ch, chip, pi, node


def test_hat_receives_a_node_packet_with_rssi_and_snr():
    async def main():
        ch, chip, pi, node = await hat_and_node()
        await node.send(b"\xa5" + bytes(range(37)))
        pkt = await asyncio.wait_for(pi.recv(), 1)
        await pi.close()
        chip.stop()
        return pkt, pi

    pkt, pi = asyncio.run(main())
    assert pkt.payload == b"\xa5" + bytes(range(37))
    assert pkt.rssi_dbm == -97 and pkt.snr_db == 6.25
    assert pi.received == 1


def test_hat_sends_and_is_back_in_receive_afterwards():
    async def main():
        ch, chip, pi, node = await hat_and_node()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await pi.send(b"command-bytes")
        took = loop.time() - t0
        got = await asyncio.wait_for(node.recv(), 1)
        await node.send(b"ack-bytes")
        back = await asyncio.wait_for(pi.recv(), 1)
        await pi.close()
        chip.stop()
        return took, got, back, pi.airtime_s(13), chip.regs[0x01]

    took, got, back, air, opmode = asyncio.run(main())
    assert got.payload == b"command-bytes" and back.payload == b"ack-bytes"
    assert air <= took < air + 0.05  # returns once the packet has left, not before
    assert opmode == 0x85  # LoRa, continuous receive


def test_open_radio_programs_the_chip_from_the_lora_table():
    async def main():
        ch = SimChannel(sf=9, freq_hz=868100000)
        chip = SimSX1276(ch, "x")
        radio = open_radio(dict(LORA, sf=9, freq_hz=868100000, tx_power_dbm=20), spi=chip)
        await radio.start()
        await radio.close()
        return chip.regs

    regs = asyncio.run(main())
    frf = (regs[0x06] << 16) | (regs[0x07] << 8) | regs[0x08]
    assert frf == 868100000 * (1 << 19) // 32000000
    assert regs[0x1E] >> 4 == 9 and regs[0x4D] == 0x87  # SF9; +20 dBm needs the high-power DAC


def test_half_duplex_the_hat_hears_nothing_while_it_transmits():
    async def main():
        ch, chip, pi, node = await hat_and_node()
        await asyncio.gather(pi.send(b"x" * 60), node.send(b"y" * 10))
        await asyncio.sleep(0.05)
        got = pi._rx.qsize()
        await pi.close()
        chip.stop()
        return got, ch.stats

    got, stats = asyncio.run(main())
    assert got == 0 and stats["collided"] == 2


def test_missing_tx_done_is_a_radio_error_not_a_hang():
    class StuckChip:
        """Answers RegVersion but never sets TxDone: a HAT with a dead DIO or a wedged chip."""

        def __init__(self):
            self.regs = bytearray(0x80)
            self.regs[0x42] = 0x12

        def transfer(self, buf):
            out = bytearray(len(buf))
            if not buf[0] & 0x80:
                out[1:] = self.regs[buf[0] & 0x7F : (buf[0] & 0x7F) + len(buf) - 1]
            return bytes(out)

    async def main():
        radio = SX127xRadio(SX127x(StuckChip()), tx_timeout_s=0.2)
        await radio.start()
        try:
            with pytest.raises(RadioError, match="TxDone not set"):
                await asyncio.wait_for(radio.send(b"hello"), 2)
        finally:
            await radio.close()

    asyncio.run(main())


def test_open_radio_errors_are_clear():
    with pytest.raises(RadioError, match="needs a simulated channel"):
        open_radio({"driver": "sim"})
    with pytest.raises(RadioError, match="not implemented on the Pi"):
        open_radio({"driver": "serial-e22"})
    if importlib.util.find_spec("spidev") is None:
        with pytest.raises(RadioError, match="spidev|gpiod"):
            open_radio(dict(LORA, reset_pin=-1, dio0_pin=-1))
