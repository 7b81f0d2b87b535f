"""Semtech SX1276/77/78/79 LoRa radio driver (register level, over SPI).

The same chip sits on the TTGO LoRa32 node board and on common Raspberry Pi
LoRa HATs (Dragino LoRa HAT, RFM95W breakouts), so the node (MicroPython,
``machine.SPI``) and the transformer Pi (CPython, ``spidev``) share this
driver; it imports no other phasekit package. The caller gives an ``spi``
object with one method, ``transfer(buf) -> bytes`` (full duplex, chip select
held for the call); the HAL wraps machine.SPI or spidev in it. No sleeps or
clocks inside: callers poll ``tx_done()`` / ``read_packet()`` (or wait on
DIO0) from their own loop.

Register addresses and bit fields: SX1276/77/78/79 datasheet rev. 7, section
6.4 (LoRa mode register map).

Public: ``SX127x``, ``RadioError`` (an OSError: the chip is absent or does not
answer), the ``REG_*``/``MODE_*``/``IRQ_*`` register constants and
``SILICON_VERSION`` (the register-level simulator of the tools uses them).
"""

from phasecore.errors import quote

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


__all__ = ("SX127x", "RadioError")

REG_FIFO = const(0x00)
REG_OP_MODE = const(0x01)
REG_FRF_MSB = const(0x06)
REG_PA_CONFIG = const(0x09)
REG_OCP = const(0x0B)
REG_FIFO_ADDR_PTR = const(0x0D)
REG_FIFO_TX_BASE = const(0x0E)
REG_FIFO_RX_BASE = const(0x0F)
REG_FIFO_RX_CURRENT = const(0x10)
REG_IRQ_FLAGS = const(0x12)
REG_RX_NB_BYTES = const(0x13)
REG_PKT_SNR = const(0x19)
REG_PKT_RSSI = const(0x1A)
REG_MODEM_CONFIG1 = const(0x1D)
REG_MODEM_CONFIG2 = const(0x1E)
REG_PREAMBLE_MSB = const(0x20)
REG_PAYLOAD_LENGTH = const(0x22)
REG_MODEM_CONFIG3 = const(0x26)
REG_SYNC_WORD = const(0x39)
REG_DIO_MAPPING1 = const(0x40)
REG_VERSION = const(0x42)
REG_PA_DAC = const(0x4D)

# RegOpMode (datasheet 6.4, RegOpMode): bit 7 LongRangeMode (1 = LoRa; can only
# change in sleep), bit 3 LowFrequencyModeOn (0: the 862-1020 MHz band this
# driver targets), bits 2-0 Mode.
MODE_LONG_RANGE = const(0x80)
MODE_SLEEP = const(0x00)
MODE_STDBY = const(0x01)
MODE_TX = const(0x03)
MODE_RX_CONTINUOUS = const(0x05)

IRQ_TX_DONE = const(0x08)
IRQ_PAYLOAD_CRC_ERROR = const(0x20)
IRQ_RX_DONE = const(0x40)

SILICON_VERSION = const(0x12)
_FXOSC = const(32000000)
# RegModemConfig1 bandwidth codes (datasheet table "RegModemConfig1", bits 7-4).
_BW_CODES = (
    (7800, 0),
    (10400, 1),
    (15600, 2),
    (20800, 3),
    (31250, 4),
    (41700, 5),
    (62500, 6),
    (125000, 7),
    (250000, 8),
    (500000, 9),
)


class RadioError(OSError):
    """The radio is absent, misconfigured, or a packet failed its CRC."""


class SX127x:
    """One SX127x in LoRa mode. ``init()`` once, then ``send()``/``tx_done()``, ``receive()``/``read_packet()``;
    ``standby()`` turns the receiver off again."""

    def __init__(self, spi, freq_hz=865062500, sf=7, bw_hz=125000, cr=1, tx_power_dbm=14, sync_word=0x12, preamble=8):
        if not 6 <= sf <= 12:
            raise ValueError("spreading factor %s outside 6..12" % (quote(sf),))
        if not 1 <= cr <= 4:
            raise ValueError("coding rate index %s outside 1..4 (4/5..4/8)" % (quote(cr),))
        if not 2 <= tx_power_dbm <= 20:
            raise ValueError("tx power %s dBm outside 2..20 (PA_BOOST)" % (quote(tx_power_dbm),))
        self.spi = spi
        self.freq_hz = freq_hz
        self.sf = sf
        self.bw_hz = bw_hz
        self.bw_code = _bw_code(bw_hz)
        self.cr = cr
        self.tx_power_dbm = tx_power_dbm
        self.sync_word = sync_word
        self.preamble = preamble
        self.crc_errors = 0
        self._buf2 = bytearray(2)

    # register access: address byte with bit 7 set for a write (datasheet 4.3 SPI interface)
    def read_reg(self, addr):
        self._buf2[0] = addr & 0x7F
        self._buf2[1] = 0
        return self.spi.transfer(self._buf2)[1]

    def write_reg(self, addr, value):
        self._buf2[0] = addr | 0x80
        self._buf2[1] = value & 0xFF
        self.spi.transfer(self._buf2)

    def init(self):
        version = self.read_reg(REG_VERSION)
        if version != SILICON_VERSION:
            raise RadioError(
                "no SX127x on the SPI bus (RegVersion 0x%02x, expected 0x12): check wiring and CS pin" % version
            )
        # LoRa mode can only be selected in sleep.
        self.write_reg(REG_OP_MODE, MODE_SLEEP)
        self.write_reg(REG_OP_MODE, MODE_LONG_RANGE | MODE_SLEEP)
        frf = (self.freq_hz << 19) // _FXOSC
        self.write_reg(REG_FRF_MSB, frf >> 16)
        self.write_reg(REG_FRF_MSB + 1, frf >> 8)
        self.write_reg(REG_FRF_MSB + 2, frf)
        self.write_reg(REG_FIFO_TX_BASE, 0x00)
        self.write_reg(REG_FIFO_RX_BASE, 0x00)
        self.write_reg(REG_MODEM_CONFIG1, (self.bw_code << 4) | (self.cr << 1))  # explicit header
        self.write_reg(REG_MODEM_CONFIG2, (self.sf << 4) | 0x04)  # RxPayloadCrcOn
        # Low data rate optimisation is mandatory when a symbol lasts more than 16 ms.
        ldro = ((1 << self.sf) * 1000 // self.bw_hz) > 16
        self.write_reg(REG_MODEM_CONFIG3, (0x08 if ldro else 0) | 0x04)  # AgcAutoOn
        self.write_reg(REG_PREAMBLE_MSB, self.preamble >> 8)
        self.write_reg(REG_PREAMBLE_MSB + 1, self.preamble)
        self.write_reg(REG_SYNC_WORD, self.sync_word)
        # PA_BOOST output: Pout = 17 - (15 - OutputPower) dBm; +20 dBm needs the high-power DAC.
        if self.tx_power_dbm > 17:
            self.write_reg(REG_PA_DAC, 0x87)
            self.write_reg(REG_PA_CONFIG, 0x80 | (self.tx_power_dbm - 5))
        else:
            self.write_reg(REG_PA_DAC, 0x84)
            self.write_reg(REG_PA_CONFIG, 0x80 | (self.tx_power_dbm - 2))
        self.write_reg(REG_OCP, 0x20 | 11)  # over-current trip 100 mA
        self.standby()

    def standby(self):
        """LoRa standby (RegOpMode 0x81): receiver and transmitter off, oscillator running, FIFO kept.

        What a class-A node does after its receive window; ``receive()`` or
        ``send()`` leaves it again without the start-up time of sleep.
        """
        self.write_reg(REG_OP_MODE, MODE_LONG_RANGE | MODE_STDBY)

    def send(self, payload):
        """Load ``payload`` into the FIFO and start transmitting; poll ``tx_done()``."""
        n = len(payload)
        if not 0 < n <= 255:
            raise ValueError("LoRa payload must be 1..255 bytes, got %d" % n)
        self.standby()  # the FIFO is writable in standby, and a receive in progress stops
        self.write_reg(REG_FIFO_ADDR_PTR, 0x00)
        buf = bytearray(n + 1)
        buf[0] = REG_FIFO | 0x80
        buf[1:] = payload
        self.spi.transfer(buf)
        self.write_reg(REG_PAYLOAD_LENGTH, n)
        self.write_reg(REG_DIO_MAPPING1, 0x40)  # DIO0 = TxDone
        self.write_reg(REG_IRQ_FLAGS, 0xFF)
        self.write_reg(REG_OP_MODE, MODE_LONG_RANGE | MODE_TX)

    def tx_done(self):
        """True once the packet has left; the chip is back in standby."""
        if self.read_reg(REG_IRQ_FLAGS) & IRQ_TX_DONE:
            self.write_reg(REG_IRQ_FLAGS, IRQ_TX_DONE)
            return True
        return False

    def receive(self):
        """Enter continuous receive."""
        self.write_reg(REG_DIO_MAPPING1, 0x00)  # DIO0 = RxDone
        self.write_reg(REG_IRQ_FLAGS, 0xFF)
        self.write_reg(REG_OP_MODE, MODE_LONG_RANGE | MODE_RX_CONTINUOUS)

    def read_packet(self):
        """``(payload, rssi_dbm, snr_db)`` of a received packet, or None if none is waiting.

        A packet that failed its CRC is dropped and counted in ``crc_errors``.
        """
        flags = self.read_reg(REG_IRQ_FLAGS)
        if not flags & IRQ_RX_DONE:
            return None
        self.write_reg(REG_IRQ_FLAGS, IRQ_RX_DONE | IRQ_PAYLOAD_CRC_ERROR)
        if flags & IRQ_PAYLOAD_CRC_ERROR:
            self.crc_errors += 1
            return None
        n = self.read_reg(REG_RX_NB_BYTES)
        self.write_reg(REG_FIFO_ADDR_PTR, self.read_reg(REG_FIFO_RX_CURRENT))
        buf = bytearray(n + 1)
        buf[0] = REG_FIFO
        payload = bytes(self.spi.transfer(buf)[1:])
        snr = self.read_reg(REG_PKT_SNR)
        if snr > 127:
            snr -= 256
        # RSSI formula for the HF port (band 1, > 525 MHz): datasheet 5.5.5.
        rssi = -157 + self.read_reg(REG_PKT_RSSI)
        return payload, rssi, snr / 4


def _bw_code(bw_hz):
    for hz, code in _BW_CODES:
        if hz == bw_hz:
            return code
    raise ValueError("bandwidth %s Hz not supported by the SX127x" % (quote(bw_hz),))
