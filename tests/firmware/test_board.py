"""Board files: every shipped board loads, and each wiring mistake is refused naming file and key.

Portable: runs under CPython (pytest) and the MicroPython unix port.
"""

import json
import os

from phasenode import board
from phasenode.board import BoardError
from portable import raises

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
BOARDS = _HERE + "/../../boards"


def _read(name):
    with open(BOARDS + "/" + name) as f:
        return json.load(f)


def _copy(d):
    return json.loads(json.dumps(d))


def _set(container, key, value):
    container[key] = value  # MicroPython lists have no bound __setitem__


def _err(d, source="t.json"):
    """The BoardError for dict ``d``, with its message."""
    return raises(BoardError, board.from_dict, d, source)


def devkit():
    return _read("esp32-devkitc-max485.json")


def ttgo():
    return _read("ttgo-lora32-v21-sx1276.json")


def heltec():
    return _read("heltec-wifi-lora32-v3-sx1262.json")


def test_every_shipped_board_file_loads():
    names = sorted(n for n in os.listdir(BOARDS) if n.endswith(".json"))
    assert len(names) >= 4, names
    for n in names:
        b = board.load(BOARDS + "/" + n)
        assert b.name + ".json" == n, (b.name, n)  # deploy finds a board by its name


def test_devkit_wiring_reaches_the_firmware():
    b = board.load(BOARDS + "/esp32-devkitc-max485.json")
    assert b.mcu == "esp32" and b.capabilities == ("meter", "relays", "rs485")
    assert (b.meter_uart.id, b.meter_uart.tx, b.meter_uart.rx, b.meter_uart.baud) == (1, 26, 27, 9600)
    assert b.meter_uart.de_pin is None
    assert (b.bus_uart.id, b.bus_uart.tx, b.bus_uart.rx, b.bus_uart.baud, b.bus_uart.de_pin) == (2, 17, 16, 115200, 4)
    assert b.relays.pins == (32, 33, 25) and b.relays.active_high is False
    assert b.lora is None and b.led == 2 and b.watchdog_ms == 8000
    assert b.has("rs485") and not b.has("lora") and not b.is_host


def test_relay_polarity_maps_closed_and_open_to_levels():
    b = board.from_dict(devkit())
    assert (b.relays.level(True), b.relays.level(False), b.relays.open_level) == (0, 1, 1)  # active low
    d = devkit()
    d["relays"]["active_high"] = True
    b = board.from_dict(d)
    assert (b.relays.level(True), b.relays.level(False), b.relays.open_level) == (1, 0, 0)


def test_lora_wiring_of_both_radios():
    t = board.from_dict(ttgo())
    assert (t.lora.chip, t.lora.bus, t.lora.sck, t.lora.mosi, t.lora.miso, t.lora.cs) == ("sx1276", 1, 5, 27, 19, 18)
    assert (t.lora.reset, t.lora.irq, t.lora.busy, t.lora.freq_hz) == (23, 26, None, 865062500)
    assert t.bus_uart is None
    h = board.from_dict(heltec())
    assert h.mcu == "esp32s3" and h.lora.chip == "sx1262" and h.lora.busy == 13


def test_host_board_names_its_lines():
    b = board.load(BOARDS + "/host-virtual.json")
    assert b.is_host and b.meter_uart.id == "meter" and b.bus_uart.id == "bus"
    assert b.meter_uart.tx is None and b.bus_uart.de_pin is None
    assert b.relays.pins == ("relay_a", "relay_b", "relay_c") and b.relays.active_high


def test_error_names_file_and_key():
    d = devkit()
    d["relays"]["pins"][1] = 34
    e = _err(d, "boards/x.json")
    assert e.source == "boards/x.json" and e.key == "relays.pins[1]"
    assert str(e) == "boards/x.json: relays.pins[1]: GPIO 34 is input-only on esp32, cannot drive a relay", str(e)
    assert isinstance(e, ValueError)


def test_schema_version_and_type_errors():
    for mutate, key in (
        (lambda d: _set(d, "schema", 2), "schema"),
        (lambda d: d.pop("schema"), "schema"),
        (lambda d: _set(d, "mcu", "rp2040"), "mcu"),
        (lambda d: _set(d, "watchdog_ms", True), "watchdog_ms"),
        (lambda d: _set(d, "watchdog_ms", 100), "watchdog_ms"),
        (lambda d: d.pop("name"), "name"),
        (lambda d: _set(d["uarts"]["meter"], "baud", "9600"), "uarts.meter.baud"),
        (lambda d: _set(d["uarts"]["meter"], "parity", 0), "uarts.meter.parity"),
        (lambda d: _set(d["uarts"], "debug", {}), "uarts.debug"),
        (lambda d: _set(d["relays"], "active_high", 0), "relays.active_high"),
        (lambda d: _set(d["relays"], "pins", [32, 33]), "relays.pins"),
        (lambda d: _set(d, "capabilities", ["rs485", "wifi"]), "capabilities[1]"),
    ):
        d = devkit()
        mutate(d)
        e = _err(d)
        assert e.key == key, (key, str(e))


def test_chip_facts_refuse_bad_pins():
    cases = (
        (lambda d: _set(d["relays"]["pins"], 0, 20), "relays.pins[0]", "does not exist"),
        (lambda d: _set(d["relays"]["pins"], 2, 7), "relays.pins[2]", "SPI flash"),
        (lambda d: _set(d["relays"]["pins"], 0, 12), "relays.pins[0]", "strapping"),
        (lambda d: _set(d["uarts"]["bus"], "de_pin", 36), "uarts.bus.de_pin", "input-only"),
        (lambda d: _set(d["uarts"]["meter"], "tx", 39), "uarts.meter.tx", "input-only"),
        (lambda d: _set(d["uarts"]["meter"], "id", 0), "uarts.meter.id", "REPL"),
        (lambda d: _set(d["uarts"]["bus"], "id", 1), "uarts.bus.id", "already used"),
        (lambda d: _set(d["uarts"]["bus"], "rx", 32), "relays.pins[0]", "already used by uarts.bus.rx"),
        (lambda d: _set(d, "led", 26), "led", "already used by uarts.meter.tx"),
        (lambda d: _set(d["uarts"]["meter"], "de_pin", 4), "uarts.meter.de_pin", "only the RS-485"),
        (lambda d: d["uarts"]["bus"].pop("de_pin"), "uarts.bus.de_pin", "missing"),
    )
    for mutate, key, words in cases:
        d = devkit()
        mutate(d)
        e = _err(d)
        assert e.key == key and words in str(e), (key, words, str(e))


def test_esp32s3_has_its_own_pin_map():
    d = heltec()
    d["relays"]["pins"][0] = 46  # strapping on the S3, an ordinary pin number on the ESP32
    assert "strapping" in str(_err(d))
    d = heltec()
    d["relays"]["pins"][0] = 40  # exists on the S3 only
    assert board.from_dict(d).relays.pins[0] == 40
    d["mcu"] = "esp32"
    d["uarts"]["meter"]["tx"] = 26  # 47, 48 do not exist on the ESP32: fix them first
    d["uarts"]["meter"]["rx"] = 27
    assert _err(d).key == "relays.pins[0]"


def test_capabilities_must_match_the_wiring():
    d = devkit()
    d["capabilities"].append("lora")
    assert _err(d).key == "lora"
    d = devkit()
    d["capabilities"].remove("rs485")
    e = _err(d)
    assert e.key == "capabilities" and "uarts.bus" in str(e)


def test_lora_radio_checks():
    d = heltec()
    d["lora"]["busy"] = None
    assert _err(d).key == "lora.busy"  # the SX1262 needs BUSY
    d = ttgo()
    d["lora"]["busy"] = 4
    assert _err(d).key == "lora.busy"  # the SX1276 has none
    d = ttgo()
    d["lora"]["freq_hz"] = 2400000000
    assert _err(d).key == "lora.freq_hz"
    d = ttgo()
    d["lora"]["tx_power_dbm"] = 22
    assert _err(d).key == "lora.tx_power_dbm"
    d = ttgo()
    d["lora"]["chip"] = "sx1280"
    assert _err(d).key == "lora.chip"
    d = ttgo()
    d["lora"]["bus"] = 3
    assert _err(d).key == "lora.bus"


def test_host_board_refuses_gpio_numbers():
    d = _read("host-virtual.json")
    d["relays"]["pins"][0] = 32
    e = _err(d)
    assert e.key == "relays.pins[0]" and "line name" in str(e)
    d = _read("host-virtual.json")
    d["relays"]["pins"][2] = "relay_a"
    assert "already used" in str(_err(d))


def test_bad_text_and_missing_file():
    e = raises(BoardError, board.parse, "{not json", "boards/broken.json")
    assert str(e).startswith("boards/broken.json: not valid JSON"), str(e)
    e = raises(BoardError, board.parse, "[1, 2]", "b.json")
    assert "JSON object" in str(e)
    e = raises(BoardError, board.parse, " " * 20000, "big.json")
    assert "larger than" in str(e)
    e = raises(BoardError, board.load, _HERE + "/test_hal_cpython.py")  # any file over 8 KB
    assert "larger than 8192" in str(e) and "test_hal_cpython.py" in str(e)
    e = raises(BoardError, board.load, BOARDS + "/no-such-board.json")
    assert "no-such-board.json" in str(e) and "cannot read" in str(e)


def test_from_dict_does_not_keep_a_reference_to_mutable_input():
    d = devkit()
    b = board.from_dict(_copy(d))
    d["relays"]["pins"][0] = 99
    assert b.relays.pins == (32, 33, 25)
