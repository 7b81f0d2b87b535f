"""phasekit meter: the installer's PZEM-004T tools against the simulated meter (pymodbus behind a paced pty).

The simulator (``phasekit.sim.pzem``) implements what the tools use per the
PZEM-004T v3 manual: input registers, holding registers 0x0001 (alarm) and
0x0002 (address, the echo from the old address), function 0x42 (reset
energy) and the general address 0xF8 answered only with one meter on the
line. It runs on its own asyncio loop in a thread, as a separate device
would; the tools open the other end of the line with pyserial.
"""

import asyncio
import subprocess
import sys
import threading

import pytest

from phasekit import meter
from phasekit.sim.pzem import PzemMeter, PzemSim


class SimThread:
    def __init__(self, meters):
        self.meters = meters
        self.port = None
        self._ready = threading.Event()
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "the PZEM simulator did not start"

    def _main(self):
        async def serve():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with PzemSim(self.meters) as sim:
                self.port = sim.port
                self._ready.set()
                await self._stop.wait()

        asyncio.run(serve())

    def close(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def one_meter():
    m = PzemMeter(address=1, voltage=231.4, current=4.2, power_factor=0.95, energy=1234567)
    sim = SimThread([m])
    yield sim, m
    sim.close()


def test_scan_finds_the_meter_and_the_general_address_names_it(one_meter):
    sim, m = one_meter
    alone, found = meter.scan(sim.port, 1, 4, timeout_ms=80)
    assert alone == 1
    assert [f.address for f in found] == [1]
    f = found[0]
    assert abs(f.reading.voltage - 231.4) < 0.05 and f.reading.energy_wh == 1234567 and f.alarm_w == 2300
    assert "address   1: 231.4 V" in f.describe()


def test_set_address_with_one_meter_through_0xf8_then_it_answers_only_there(one_meter):
    sim, m = one_meter
    f = meter.set_address(sim.port, 42)
    assert f.address == 42 and m.address == 42
    assert meter.read(sim.port, 42).address == 42
    with pytest.raises(meter.MeterToolError, match="no meter answers at address 1"):
        meter.read(sim.port, 1, timeout_ms=80)


def test_set_address_refuses_with_two_meters_on_the_line():
    a, b = PzemMeter(address=1), PzemMeter(address=2)
    sim = SimThread([a, b])
    try:
        with pytest.raises(meter.MeterToolError, match="connect exactly one meter"):
            meter.set_address(sim.port, 9, timeout_ms=80)
        assert (a.address, b.address) == (1, 2)  # nothing was written
        alone, found = meter.scan(sim.port, 1, 3, timeout_ms=80)
        assert alone is None and [f.address for f in found] == [1, 2]
    finally:
        sim.close()


def test_reset_energy_and_set_alarm_read_back(one_meter):
    sim, m = one_meter
    f = meter.reset_energy(sim.port, 1)
    assert m.energy == 0 and f.reading.energy_wh == 0
    f = meter.set_alarm(sim.port, 1, 4600)
    assert m.alarm_threshold == 4600 and f.alarm_w == 4600
    with pytest.raises(meter.MeterToolError, match="0..25000"):
        meter.set_alarm(sim.port, 1, 30000)
    m.fail_with = 4  # the meter reports a device failure: a typed refusal, no traceback
    with pytest.raises(meter.MeterToolError, match="alarm threshold not set"):
        meter.set_alarm(sim.port, 1, 100)


def test_the_command_line_runs_the_same_steps(one_meter):
    sim, m = one_meter

    def phasekit(*args):
        return subprocess.run(
            [sys.executable, "-m", "phasekit.cli", "meter", *args, "--port", sim.port],
            capture_output=True,
            text=True,
            timeout=60,
        )

    p = phasekit("scan", "--to", "3")
    assert p.returncode == 0 and "its address is 1" in p.stdout and "1 meter(s) found" in p.stdout, p.stdout
    p = phasekit("set-address", "7")
    assert p.returncode == 0 and "now answers at address 7" in p.stdout, p.stdout + p.stderr
    p = phasekit("set-alarm", "1200", "--address", "7")
    assert p.returncode == 0 and "alarm at 1200 W" in p.stdout
    p = phasekit("read", "--address", "3", "--timeout-ms", "60")
    assert p.returncode == 1 and "no meter answers at address 3" in p.stderr and "Traceback" not in p.stderr
    p = phasekit("set-address", "300")
    assert p.returncode == 1 and "1..247" in p.stderr
