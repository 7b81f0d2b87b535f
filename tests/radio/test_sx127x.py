"""The SX127x driver's register traffic, on both interpreters (CPython and MicroPython).

The peer is the chip's SPI side as the datasheet describes it (SX1276/77/78/79
rev. 7, section 4.3): an address byte with bit 7 set for a write, the address
incrementing after each data byte except at RegFifo (0x00), whose bytes go to
and come from the FIFO at RegFifoAddrPtr (section 4.1.2.3), and RegIrqFlags
bits cleared by writing ones (section 6.4). It has no radio behind it: what
goes over the air is tested against the register-level simulator on the
simulated channel (test_sx127x_cpython.py).
"""

from phaseradio.sx127x import RadioError, SX127x
from portable import raises

_FIFO = 0x00
_FIFO_ADDR_PTR = 0x0D
_IRQ_FLAGS = 0x12


class ChipRegisters:
    """The SPI side of an SX1276 after reset: 128 registers and a 256-byte FIFO."""

    def __init__(self):
        self.regs = bytearray(0x80)
        self.fifo = bytearray(256)
        self.regs[0x42] = 0x12  # RegVersion
        self.regs[0x01] = 0x09  # RegOpMode reset value: FSK, low-frequency mode, standby
        self.transfers = []

    def transfer(self, buf):
        self.transfers.append(bytes(buf))
        addr = buf[0] & 0x7F
        write = buf[0] & 0x80
        out = bytearray(len(buf))
        for i in range(1, len(buf)):
            if addr == _FIFO:
                ptr = self.regs[_FIFO_ADDR_PTR]
                if write:
                    self.fifo[ptr] = buf[i]
                else:
                    out[i] = self.fifo[ptr]
                self.regs[_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
                continue
            a = addr + i - 1
            if not write:
                out[i] = self.regs[a]
            elif a == _IRQ_FLAGS:
                self.regs[a] = self.regs[a] & ~buf[i] & 0xFF
            else:
                self.regs[a] = buf[i]
        return bytes(out)

    def deliver(self, payload, rssi_reg=0x40, snr_reg=0x20, crc_error=False):
        """What the modem does on RxDone: payload at RegFifoRxBaseAddr, length, signal, flags."""
        base = self.regs[0x0F]
        for i in range(len(payload)):
            self.fifo[(base + i) & 0xFF] = payload[i]
        self.regs[0x10] = base  # RegFifoRxCurrentAddr
        self.regs[0x13] = len(payload)  # RegRxNbBytes
        self.regs[0x19] = snr_reg  # RegPktSnrValue, two's complement, 0.25 dB
        self.regs[0x1A] = rssi_reg  # RegPktRssiValue
        self.regs[_IRQ_FLAGS] |= 0x40 | (0x20 if crc_error else 0)


def test_init_programs_frequency_sf_and_low_data_rate_optimisation():
    chip = ChipRegisters()
    SX127x(chip, freq_hz=866000000, sf=12).init()
    regs = chip.regs
    frf = (regs[0x06] << 16) | (regs[0x07] << 8) | regs[0x08]
    assert frf == 866000000 * (1 << 19) // 32000000
    assert regs[0x1E] >> 4 == 12 and regs[0x1E] & 0x04  # SF12, CRC on
    assert regs[0x26] & 0x08  # LDRO on for SF12/125 kHz
    assert regs[0x1D] == (7 << 4) | (1 << 1)  # 125 kHz, 4/5, explicit header
    assert regs[0x39] == 0x12 and regs[0x21] == 8  # sync word, 8-symbol preamble
    assert regs[0x01] == 0x81  # LoRa, standby
    # LoRa mode is selected in sleep (datasheet 6.4, RegOpMode bit 7): sleep, LoRa sleep, ... standby.
    ops = [t[1] for t in chip.transfers if t[0] == 0x80 | 0x01]
    assert ops[:2] == [0x00, 0x80] and ops[-1] == 0x81


def test_init_at_sf7_leaves_low_data_rate_optimisation_off():
    chip = ChipRegisters()
    SX127x(chip, sf=7).init()
    assert not chip.regs[0x26] & 0x08 and chip.regs[0x26] & 0x04  # LDRO off, AGC on


def test_tx_power_above_17_dbm_takes_the_high_power_dac():
    chip = ChipRegisters()
    SX127x(chip, tx_power_dbm=20).init()
    assert chip.regs[0x4D] == 0x87 and chip.regs[0x09] == 0x80 | 15
    chip = ChipRegisters()
    SX127x(chip, tx_power_dbm=14).init()
    assert chip.regs[0x4D] == 0x84 and chip.regs[0x09] == 0x80 | 12


def test_send_loads_the_fifo_and_starts_transmitting_and_tx_done_clears_its_flag():
    chip = ChipRegisters()
    radio = SX127x(chip)
    radio.init()
    payload = b"\x23" + bytes(range(38))
    radio.send(payload)
    assert bytes(chip.fifo[: len(payload)]) == payload
    assert chip.regs[0x22] == len(payload)  # RegPayloadLength
    assert chip.regs[0x40] == 0x40  # DIO0 = TxDone
    assert chip.regs[0x01] == 0x83  # LoRa, TX
    assert not radio.tx_done()
    chip.regs[_IRQ_FLAGS] |= 0x08
    assert radio.tx_done()
    assert chip.regs[_IRQ_FLAGS] & 0x08 == 0
    assert not radio.tx_done()


def test_read_packet_returns_payload_rssi_and_negative_snr():
    chip = ChipRegisters()
    radio = SX127x(chip)
    radio.init()
    radio.receive()
    assert chip.regs[0x01] == 0x85  # LoRa, continuous receive
    assert radio.read_packet() is None
    chip.deliver(b"reading", rssi_reg=56, snr_reg=0xF6)
    payload, rssi, snr = radio.read_packet()
    assert payload == b"reading"
    assert rssi == -101  # -157 + RegPktRssiValue on the HF port (datasheet 5.5.5)
    assert snr == -2.5  # 0xF6 = -10 quarter-dB
    assert radio.read_packet() is None  # RxDone was cleared


def test_a_packet_that_failed_its_crc_is_dropped_and_counted():
    chip = ChipRegisters()
    radio = SX127x(chip)
    radio.init()
    radio.receive()
    chip.deliver(b"noise", crc_error=True)
    assert radio.read_packet() is None
    assert radio.crc_errors == 1
    assert chip.regs[_IRQ_FLAGS] & 0x60 == 0


def test_missing_chip_is_a_clear_error():
    class NoChip:
        def transfer(self, buf):
            return bytes(len(buf))

    e = raises(RadioError, SX127x(NoChip()).init)
    assert "no SX127x on the SPI bus" in str(e)
    assert isinstance(e, OSError)  # callers catch OSError around the radio (phasenode.app)


def test_bad_parameters_raise_value_error():
    assert "bandwidth" in str(raises(ValueError, SX127x, None, bw_hz=100000))
    assert "spreading factor" in str(raises(ValueError, SX127x, None, sf=5))
    assert "coding rate" in str(raises(ValueError, SX127x, None, cr=5))
    assert "tx power" in str(raises(ValueError, SX127x, None, tx_power_dbm=21))
    assert "1..255 bytes" in str(raises(ValueError, SX127x(ChipRegisters()).send, b""))
