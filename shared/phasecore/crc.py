"""CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF), table-driven.

Used by the Modbus RTU driver for the PZEM-004T and by the phasekit link frame.
The CRC goes on the wire low byte first (Modbus over Serial Line V1.02, 6.2.2);
running ``crc16`` over a frame including its CRC gives 0 (the residue).

The 256-entry table is kept as 512 bytes rather than a list of ints: on an
ESP32 a list of 256 ints costs about 1 KB of heap and a pointer chase per byte.
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_POLY_REFLECTED = const(0xA001)
INIT = const(0xFFFF)


def _make_table():
    table = bytearray(512)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table[2 * i] = crc & 0xFF
        table[2 * i + 1] = crc >> 8
    return bytes(table)


_TABLE = _make_table()


def crc16(data, crc=INIT):
    """CRC-16/MODBUS of ``data`` (bytes-like), continuing from ``crc``."""
    table = _TABLE
    for b in data:
        i = ((crc ^ b) & 0xFF) << 1
        crc = (crc >> 8) ^ (table[i] | (table[i + 1] << 8))
    return crc


def crc16_le(data):
    """The CRC as the two bytes that follow a frame on the wire (low byte first)."""
    crc = crc16(data)
    return bytes((crc & 0xFF, crc >> 8))
