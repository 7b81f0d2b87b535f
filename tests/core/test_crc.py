"""CRC-16/MODBUS against the catalogue check value and quoted Modbus frames."""

from phasecore.crc import crc16, crc16_le
from portable import load_vectors, unhex


def test_check_values_from_vectors():
    v = load_vectors("modbus/crc16_modbus.json")
    assert v["checks"], "no vectors"
    for case in v["checks"]:
        assert crc16(unhex(case["input_hex"])) == int(case["crc"], 16), case
        if "wire_bytes" in case:
            assert crc16_le(unhex(case["input_hex"])) == unhex(case["wire_bytes"])


def test_residue_over_frame_with_crc_is_zero():
    data = unhex("01040000000a")
    assert crc16(data + crc16_le(data)) == 0


def test_incremental_equals_one_shot():
    data = b"123456789"
    assert crc16(data[4:], crc16(data[:4])) == crc16(data) == 0x4B37


def test_accepts_bytearray_and_memoryview():
    data = bytearray(b"123456789")
    assert crc16(memoryview(data)) == crc16(data) == 0x4B37
