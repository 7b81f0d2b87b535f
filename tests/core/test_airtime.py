"""LoRa airtime against values published for the Semtech formula."""

from phasecore.airtime import airtime_us, symbol_time_us, utilisation
from portable import raises


def test_sf7_bw125_23_bytes_is_61_7_ms():
    # 23-byte PHY payload (10-byte LoRaWAN app payload), CR 4/5, 8-symbol preamble, CRC on:
    # 61.7 ms in the LoRaWAN airtime tables.
    assert airtime_us(23, sf=7) == 61696


def test_sf12_uses_low_data_rate_optimisation():
    # SF12/125 kHz with LDRO on (symbol 32.768 ms > 16 ms): 23 bytes 1482.8 ms and
    # 64 bytes (51-byte LoRaWAN app payload) 2793.5 ms in the LoRaWAN airtime tables.
    assert airtime_us(23, sf=12) == 1482752
    assert airtime_us(64, sf=12) == 2793472
    assert airtime_us(23, sf=12, low_dr_optimize=False) < airtime_us(23, sf=12)


def test_symbol_time_doubles_per_spreading_factor():
    assert symbol_time_us(7, 125000) == 1024
    assert symbol_time_us(8, 125000) == 2048


def test_airtime_grows_with_payload_and_sf():
    assert airtime_us(40, sf=7) > airtime_us(20, sf=7)
    assert airtime_us(40, sf=9) > 3 * airtime_us(40, sf=7)


def test_hundred_nodes_per_minute_at_sf7_use_a_few_percent():
    u = utilisation(100, 40, 60, sf=7)
    assert 0.05 < u < 0.15


def test_bad_parameters_raise_value_error():
    raises(ValueError, airtime_us, 10, sf=13)
    raises(ValueError, airtime_us, 10, cr=0)
    raises(ValueError, airtime_us, 300)
