"""The node's HAL on CPython: host parts against real peers, the ESP32 parts against a recording ``machine``.

Host side, real peers: ``FdUART`` on real pseudo-terminals and, through it,
the real PZEM driver against pymodbus (``phasekit.sim.pzem``); ``HostSPI``
under the real SX127x driver against the register-level SX1276 simulator on
the simulated LoRa channel; the relay pins driven by the real
``RelayController`` on the simulated relay board (``pin_host``).

ESP32 side: there is no ESP32 here, so ``phasenode.hal.esp32`` and
``uart_esp32`` run against a small stand-in ``machine`` module that records
every call in order. That pins our logic (DE raised before a write and dropped
only after flush, relay pins created at their open level, chip select around
each SPI transfer, watchdog period from the board file), not the chip.
"""

import asyncio
import json
import os
import pty
import sys
import time
import tty
import types
from pathlib import Path

import pytest

from phasekit.sim.pzem import PzemMeter, PzemSim
from phasenode import board as boardmod
from phasenode import hal, startup
from phasenode.drivers.pzem import Pzem
from phasenode.hal.host import HostSPI, HostWDT, WatchdogStarved
from phasenode.hal.pin_host import RelayBoard
from phasenode.hal.uart_fd import FdUART

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "boards"


def host_board():
    return boardmod.load(str(BOARDS / "host-virtual.json"))


def pty_pair():
    """A raw pty: (master fd, non-blocking slave fd)."""
    m, s = pty.openpty()
    tty.setraw(s)
    os.set_blocking(s, False)
    return m, s


# ---- FdUART --------------------------------------------------------------------------------


def test_fd_uart_moves_bytes_both_ways_and_never_blocks():
    m, s = pty_pair()
    try:
        u = FdUART(s, 9600)
        assert u.any() == 0 and u.read() is None and u.readinto(bytearray(4)) is None
        os.write(m, b"hello world")
        time.sleep(0.02)
        assert u.any() == 11
        buf = bytearray(5)
        assert u.readinto(buf) == 5 and buf == b"hello"
        assert u.readinto(buf, 2) == 2 and buf[:2] == b" w"
        assert u.read() == b"orld" and u.any() == 0
        assert u.write(b"\x01\x04\x00\x00") == 4
        time.sleep(0.02)
        assert os.read(m, 100) == b"\x01\x04\x00\x00"
    finally:
        os.close(m)
        os.close(s)


def test_fd_uart_receive_buffer_keeps_order_across_wraps():
    m, s = pty_pair()
    try:
        u = FdUART(s, 9600, rxbuf=16)
        sent = bytes(range(200))
        got = bytearray()
        for i in range(0, len(sent), 7):
            os.write(m, sent[i : i + 7])
            time.sleep(0.002)
            while u.any():
                got += u.read(5)
        deadline = time.monotonic() + 1
        while len(got) < len(sent) and time.monotonic() < deadline:
            got += u.read() or b""
        assert bytes(got) == sent
    finally:
        os.close(m)
        os.close(s)


def test_fd_uart_line_with_no_peer_is_silent():
    m, s = pty_pair()
    u = FdUART(s, 9600)
    os.close(m)  # far end gone: reading the slave gives EIO
    try:
        assert u.any() == 0 and u.read() is None
    finally:
        os.close(s)


def test_pzem_driver_reads_the_pymodbus_meter_through_fd_uart():
    async def main():
        async with PzemSim([PzemMeter(address=3)]) as sim:
            sim.meters[0].set(voltage=229.4, current=7.25, power_factor=0.9)
            fd = os.open(sim.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                meter = Pzem(FdUART(fd, 9600), address=3, timeout_ms=300)
                return await meter.read()
            finally:
                os.close(fd)

    m = asyncio.run(main())
    assert (m.voltage_dv, m.current_ma, m.pf_centi) == (2294, 7250, 90)


# ---- watchdog -------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def test_host_watchdog_counts_feeds_and_reports_starvation():
    clock = Clock()
    wdt = HostWDT(8000, ticks=clock)
    for dt in (1000, 3000, 500):
        clock.t += dt
        wdt.feed()
    assert wdt.feeds == 3 and wdt.max_gap_ms == 3000
    clock.t += 8000
    assert not wdt.starved()
    wdt.check()
    clock.t += 1
    assert wdt.starved()
    with pytest.raises(WatchdogStarved, match="not fed for 8001 ms"):
        wdt.check()
    wdt.feed()
    assert not wdt.starved() and wdt.max_gap_ms == 8001


def test_host_watchdog_tells_the_runner_over_a_descriptor():
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        wdt = HostWDT(1500, fd=w)
        wdt.feed()
        wdt.feed()
        assert os.read(r, 100) == b"W1500\n.."
    finally:
        os.close(r)
        os.close(w)


def test_host_watchdog_refuses_a_bad_period():
    with pytest.raises(hal.HalError):
        HostWDT(0)


# ---- SPI + LoRa -------------------------------------------------------------------------------


def host_lora_board():
    d = json.loads((BOARDS / "host-virtual.json").read_text())
    d["capabilities"].append("lora")
    d["lora"] = {
        "chip": "sx1276",
        "bus": "spi",
        "sck": "sck",
        "mosi": "mosi",
        "miso": "miso",
        "cs": "cs",
        "reset": "rst",
        "irq": "dio0",
        "busy": None,
        "freq_hz": 865062500,
        "tx_power_dbm": 14,
    }
    return boardmod.from_dict(d, "host-lora.json")


def test_host_spi_carries_the_sx127x_driver_to_the_simulated_chip():
    from phasegate.lora.channel import SimChannel
    from phasekit.sim.sx127x import SimSX1276
    from phaseradio.sx127x import SX127x

    async def main():
        ch = SimChannel()
        node_chip, gw_chip = SimSX1276(ch, "node"), SimSX1276(ch, "gw")
        node_chip.start()
        gw_chip.start()
        try:
            h = hal.for_board(host_lora_board(), {"lora": node_chip})
            spi = h.lora_spi()
            assert h.lora_spi() is spi  # built once
            node = SX127x(spi, freq_hz=865062500)
            gw = SX127x(gw_chip, freq_hz=865062500)
            node.init()
            gw.init()
            gw.receive()
            node.send(b"phasekit")
            got = None
            for _ in range(1000):
                got = gw.read_packet()
                if got:
                    break
                await asyncio.sleep(0.002)
            return got, spi
        finally:
            node_chip.stop()
            gw_chip.stop()

    got, spi = asyncio.run(main())
    assert got is not None and got[0] == b"phasekit"
    assert spi.transfers > 10 and spi.bytes >= 2 * spi.transfers


def test_host_spi_checks_the_exchange_length():
    class Short:
        def transfer(self, buf):
            return bytes(len(buf) - 1)

    with pytest.raises(hal.HalError, match="answered 1 bytes to a 2-byte transfer"):
        HostSPI(Short()).transfer(b"\x42\x00")


# ---- host HAL, relays, startup -------------------------------------------------------------------


def test_host_hal_relays_start_open_and_obey_the_relay_controller():
    from phasenode.relay import PHASE_B, RelayController, RelayRules

    b = host_board()
    rb = RelayBoard(active_high=b.relays.active_high, ids=b.relays.pins)
    h = hal.for_board(b, {"relays": rb})
    pins = h.relay_pins()
    assert [p.value() for p in pins] == [b.relays.open_level] * 3 and rb.closed() == []
    saved = {}
    now = [0]
    ctl = RelayController(
        pins,
        b.relays.active_high,
        lambda: saved.get("s"),
        lambda st: saved.__setitem__("s", st),
        now[0],
        rules=RelayRules(dead_time_ms=100, settle_ms=0),
        home_phase=PHASE_B,
    )
    for t in range(0, 1000, 50):
        ctl.tick(t)
    assert rb.closed() == [PHASE_B] and not rb.ever_two_closed()
    h.open_relays()
    assert rb.closed() == []


def test_host_hal_reports_contacts_on_a_descriptor():
    b = host_board()
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        h = hal.for_board(b, {"relays": w})
        pins = h.relay_pins()
        pins[2].value(1)  # host-virtual is active high: closes C
        pins[2].value(0)
        assert os.read(r, 100) == b"R0\nR4\nR0\n"
        assert h.relay_board.operations == [0, 0, 1]
    finally:
        os.close(r)
        os.close(w)


def test_host_hal_names_unwired_lines_and_missing_capabilities():
    h = hal.for_board(host_board(), {})
    with pytest.raises(hal.HalError, match="line 'meter'"):
        h.meter_uart()
    with pytest.raises(hal.MissingCapability, match="LoRa"):
        h.lora_spi()
    with pytest.raises(hal.HalError, match="not a descriptor"):
        hal.for_board(host_board(), {"bus": 3.5}).bus_uart()


def test_host_hal_takes_its_wiring_from_the_environment(monkeypatch):
    monkeypatch.delenv("PHASENODE_WIRING", raising=False)
    with pytest.raises(hal.HalError, match="PHASENODE_WIRING is not set"):
        hal.for_board(host_board())
    monkeypatch.setenv("PHASENODE_WIRING", "[1]")
    with pytest.raises(hal.HalError, match="JSON object"):
        hal.for_board(host_board())
    m, s = pty_pair()
    try:
        monkeypatch.setenv("PHASENODE_WIRING", json.dumps({"bus": s}))
        u = hal.for_board(host_board()).bus_uart()
        os.write(m, b"\x07")
        time.sleep(0.02)
        assert u.read() == b"\x07"
    finally:
        os.close(m)
        os.close(s)


def test_startup_boot_opens_relays_and_survives_a_bad_board_file(tmp_path):
    lines = []
    b, h = startup.boot(str(BOARDS / "host-virtual.json"), {}, lines.append)
    assert b.name == "host-virtual" and h.relay_board.closed() == [] and lines == []
    bad = tmp_path / "board.json"
    bad.write_text('{"schema": 1, "name": "x", "mcu": "esp32", "capabilities": [], "watchdog_ms": 5}')
    b, h = startup.boot(str(bad), None, lines.append)
    assert (b, h) == (None, None)
    assert lines == ["phasenode boot: %s: watchdog_ms: 5 outside 1000..60000 ms; relays left undriven (open)" % bad]


def test_startup_main_without_config_says_how_to_provision(tmp_path):
    lines = []
    rc = startup.main(str(BOARDS / "host-virtual.json"), root=str(tmp_path), wiring={}, log=lines.append)
    assert rc == 1 and len(lines) == 1
    assert "config.json" in lines[0] and "phasekit provision" in lines[0], lines


# ---- ESP32 HAL against a recording machine module ----------------------------------------------


def fake_machine(log):
    """A stand-in ``machine`` that appends every hardware action to ``log`` in order."""
    m = types.ModuleType("machine")

    class Pin:
        OUT, IN = 3, 1

        def __init__(self, n, mode=None, value=None):
            self.n = n
            self.level = value
            log.append(("pin", n, mode, value))

        def value(self, v=None):
            if v is None:
                return self.level
            self.level = v
            log.append(("set", self.n, v))

        def __call__(self, v=None):
            return self.value(v)

    class UART:
        def __init__(self, uid, **kw):
            log.append(("uart", uid, tuple(sorted(kw.items()))))

        def write(self, b):
            log.append(("write", bytes(b)))
            return len(b)

        def flush(self):
            log.append(("flush",))

        def any(self):
            return 0

    class SPI:
        MSB = 0

        def __init__(self, bus, **kw):
            log.append(
                ("spi", bus, kw["baudrate"], kw["polarity"], kw["phase"], kw["sck"].n, kw["mosi"].n, kw["miso"].n)
            )

        def write_readinto(self, out, into):
            log.append(("xfer", bytes(out)))
            into[:] = bytes(len(out))
            into[-1] = 0x12

    class WDT:
        def __init__(self, timeout):
            log.append(("wdt", timeout))

    m.Pin, m.UART, m.SPI, m.WDT = Pin, UART, SPI, WDT
    m.reset = lambda: log.append(("reset",))
    return m


@pytest.fixture
def esp32(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "machine", fake_machine(log))
    monkeypatch.setattr(time, "sleep_us", lambda us: log.append(("sleep_us", us)), raising=False)
    monkeypatch.setattr(time, "sleep_ms", lambda ms: log.append(("sleep_ms", ms)), raising=False)
    for mod in ("phasenode.hal.esp32", "phasenode.hal.uart_esp32"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    return log


def test_esp32_rs485_driver_enable_wraps_write_and_flush(esp32):
    h = hal.for_board(boardmod.load(str(BOARDS / "esp32-devkitc-max485.json")))
    bus = h.bus_uart()
    assert ("pin", 4, 3, 0) in esp32  # DE low (receive) from the start
    del esp32[:]
    bus.write(b"\x01\x02")
    # 10 bits per character at 115200 baud: 87 us of the last character after flush().
    assert esp32 == [("set", 4, 1), ("write", b"\x01\x02"), ("flush",), ("sleep_us", 87), ("set", 4, 0)]
    meter = h.meter_uart()
    del esp32[:]
    meter.write(b"\x05")
    assert esp32 == [("write", b"\x05")]  # the PZEM's TTL UART has no DE pin


def test_esp32_uart_parameters_come_from_the_board_file(esp32):
    h = hal.for_board(boardmod.load(str(BOARDS / "esp32-devkitc-max485.json")))
    h.meter_uart()
    h.bus_uart()
    uarts = [e for e in esp32 if e[0] == "uart"]
    assert uarts[0][1] == 1 and dict(uarts[0][2])["baudrate"] == 9600 and dict(uarts[0][2])["tx"] == 26
    assert uarts[1][1] == 2 and dict(uarts[1][2])["baudrate"] == 115200 and dict(uarts[1][2])["rx"] == 16
    assert all(dict(u[2])["timeout"] == 0 for u in uarts)  # drivers poll any(); reads never block


def test_esp32_relay_pins_are_born_open_active_low(esp32):
    h = hal.for_board(boardmod.load(str(BOARDS / "esp32-devkitc-max485.json")))
    pins = h.relay_pins()
    # Created as outputs already at level 1 (open, active low): never a low glitch.
    assert esp32 == [("pin", 32, 3, 1), ("pin", 33, 3, 1), ("pin", 25, 3, 1)]
    assert h.relay_pins() is pins
    del esp32[:]
    pins[1].value(0)
    h.open_relays()
    assert esp32 == [("set", 33, 0), ("set", 32, 1), ("set", 33, 1), ("set", 25, 1)]


def test_esp32_lora_spi_and_reset(esp32):
    h = hal.for_board(boardmod.load(str(BOARDS / "ttgo-lora32-v21-sx1276.json")))
    spi = h.lora_spi()
    assert ("spi", 1, 5000000, 0, 0, 5, 27, 19) in esp32 and ("pin", 18, 3, 1) in esp32  # CS idles high
    del esp32[:]
    got = spi.transfer(bytearray(b"\x42\x00"))
    assert got[1] == 0x12
    assert esp32 == [("set", 18, 0), ("xfer", b"\x42\x00"), ("set", 18, 1)]
    del esp32[:]
    h.lora_reset()
    assert esp32 == [("pin", 23, 3, 1), ("set", 23, 0), ("sleep_us", 100), ("set", 23, 1), ("sleep_ms", 5)]
    with pytest.raises(hal.MissingCapability, match="RS-485"):
        h.bus_uart()


def test_esp32_watchdog_period_from_board_and_built_once(esp32):
    h = hal.for_board(boardmod.load(str(BOARDS / "heltec-wifi-lora32-v3-sx1262.json")))
    w = h.watchdog()
    assert h.watchdog() is w and esp32 == [("wdt", 8000)]


def test_host_board_never_imports_machine():
    sys.modules.pop("phasenode.hal.esp32", None)
    assert "machine" not in sys.modules
    hal.for_board(host_board(), {})
    assert "phasenode.hal.esp32" not in sys.modules
    with pytest.raises(ImportError):
        hal.for_board(boardmod.load(str(BOARDS / "esp32-devkitc-max485.json")))
    with pytest.raises(hal.HalError, match="chip board"):
        hal.for_board(boardmod.load(str(BOARDS / "esp32-devkitc-max485.json")), {"bus": 3})
