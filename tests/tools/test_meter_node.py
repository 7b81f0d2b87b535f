"""phasekit meter --node: the installer's meter tools through an installed node (the virtual board, real peers).

The node runs its application (config, home phase A, relays restored); the
meter on its meter UART is pymodbus playing a PZEM-004T (``phasekit.sim.pzem``).
Each operation goes through mpremote to the node's REPL, runs on the node with
the node's own HAL and driver, and ends with the node restarted: the tests
check the meter's registers, that the application runs again, and what the
relay board did (one break, the same phase back, never two phases).
"""

import socket
import subprocess
import sys
import time

import pytest

from phasecore.codes import PHASE_A
from phasekit import meter_node
from phasekit.meter import MeterToolError
from phasekit.node.deploy import Device
from phasekit.sim.pzem import PzemMeter
from vboard_support import ROOT, BoardThread, make_flash

RUNNING = b"phasenode: running"
MASK_A = 1 << PHASE_A


def wait_relays(b, phases, timeout=15):
    deadline = time.monotonic() + timeout
    while b.vb.relays_closed() != phases and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b.vb.relays_closed() == phases, b.vb.relay_log[-5:]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    flash = tmp_path_factory.mktemp("vb") / "flash"
    make_flash(flash, maintenance=False)
    m = PzemMeter(address=1, voltage=231.4, current=4.2, power_factor=0.95, energy=1234567)
    b = BoardThread(flash, meters=[m], heapsize="4M")  # the firmware as source compiles on the board: more heap
    try:
        b.wait_for(RUNNING, timeout=20)
        wait_relays(b, [PHASE_A])  # the application restored the home phase after the dead time
        yield b, m
    finally:
        b.close()


class Through:
    """Run one operation through the node; afterwards check the node came back and what the relays did."""

    def __init__(self, node):
        self.b, self.m = node

    def __call__(self, fn, *args, **kw):
        b = self.b
        wait_relays(b, [PHASE_A])
        since, log_at, resets = b.vb.console_offset, len(b.vb.relay_log), len(b.vb.resets)
        try:
            return fn(b.vb.repl_url, *args, **kw)
        finally:
            self.came_back(since, log_at, resets)

    def came_back(self, since, log_at, resets):
        b = self.b
        b.wait_for(RUNNING, since=since, timeout=20)  # the application runs again
        wait_relays(b, [PHASE_A])
        assert b.vb.resets[resets:] == ["soft reset"]
        changes = b.vb.relay_log[log_at:]
        # Exactly one break: open at the reset, the same phase back after the dead time; never two phases.
        assert [mask for _t, mask in changes] == [0, MASK_A], changes
        assert b.vb.relay_overlaps == 0
        self.break_s = changes[1][0] - changes[0][0]
        assert self.break_s >= 2.0  # the default dead_time_ms, 2000


def test_read_through_the_node_gives_the_meter_values(node):
    through = Through(node)
    t0 = time.monotonic()
    f = through(meter_node.read)
    took = time.monotonic() - t0
    assert f.address == 0xF8 and f.board == "host-virtual" and f.node_address == 0xF8
    assert abs(f.reading.voltage - 231.4) < 0.05 and f.reading.energy_wh == 1234567 and f.alarm_w == 2300
    assert "231.4 V" in f.describe()
    print(
        "read through the node: %.2f s until the node is back on phase A; the house's break %.2f s"
        % (took, through.break_s)
    )


def test_scan_through_the_node_finds_its_meter(node):
    alone, found = Through(node)(meter_node.scan, 1, 4, timeout_ms=80)
    assert alone == 1 and [f.address for f in found] == [1]
    assert abs(found[0].reading.voltage - 231.4) < 0.05


def test_set_alarm_and_reset_energy_through_the_node_change_the_meter(node):
    _b, m = node
    through = Through(node)
    f = through(meter_node.set_alarm, 1, 4600)
    assert m.alarm_threshold == 4600 and f.alarm_w == 4600
    f = through(meter_node.reset_energy, 1)
    assert m.energy == 0 and f.reading.energy_wh == 0


def test_set_address_through_the_node_with_its_one_meter(node):
    _b, m = node
    through = Through(node)
    try:
        f = through(meter_node.set_address, 42)
        assert f.address == 42 and m.address == 42
        assert through(meter_node.read, 42).reading is not None
    finally:
        m.address = 1


def test_errors_through_the_node_are_typed_and_the_node_still_restarts(node):
    b, m = node
    through = Through(node)
    with pytest.raises(MeterToolError, match="no meter answers at address 9 on the node's meter line"):
        through(meter_node.read, 9, timeout_ms=80)
    second = PzemMeter(address=2)
    b.vb.pzem.meters.append(second)  # a second meter on the node's line: 0xF8 is garbled
    try:
        with pytest.raises(MeterToolError, match="general address 0xF8"):
            through(meter_node.set_address, 9, timeout_ms=80)
        assert (m.address, second.address) == (1, 2)  # nothing was written
    finally:
        b.vb.pzem.meters.remove(second)
    with pytest.raises(MeterToolError, match="0..25000"):
        meter_node.set_alarm(b.vb.repl_url, 1, 30000)  # refused on the PC: the node is not touched


def test_the_relays_hold_while_the_node_runs_the_operation(node):
    b, _m = node
    wait_relays(b, [PHASE_A])
    since, log_at, resets = b.vb.console_offset, len(b.vb.relay_log), len(b.vb.resets)
    dev = Device(b.vb.repl_url, echo=lambda _s: None)
    out = dev.exec(meter_node.snippet({"op": "read", "address": 1, "timeout_ms": 200}), "test")
    assert meter_node.MARKER in out and '"found": [[1,' in out
    assert b"KeyboardInterrupt" in b.vb.console[-4000:]  # the application was interrupted ...
    time.sleep(0.5)
    assert b.vb.relays_closed() == [PHASE_A] and len(b.vb.relay_log) == log_at  # ... and the relay held
    dev.reset()
    t = Through(node)
    t.came_back(since, log_at, resets)


def test_a_node_that_does_not_answer_is_a_typed_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with pytest.raises(MeterToolError, match="through mpremote failed on socket://127.0.0.1:%d" % port):
        meter_node.read("socket://127.0.0.1:%d" % port)


def test_a_node_without_a_meter_says_so(tmp_path):
    import json

    spec = json.loads((ROOT / "boards" / "host-virtual.json").read_text())
    spec["name"] = "host-no-meter"
    spec["capabilities"] = [c for c in spec["capabilities"] if c != "meter"]
    del spec["uarts"]["meter"]
    board_file = tmp_path / "host-no-meter.json"
    board_file.write_text(json.dumps(spec))
    flash = tmp_path / "flash"
    make_flash(flash, board_file=board_file)  # maintenance mode: boots straight to the REPL
    b = BoardThread(flash, board=board_file, meters=[])
    try:
        b.wait_for(b"phasenode: maintenance mode")
        since = b.vb.console_offset
        with pytest.raises(MeterToolError, match="has no meter: its board file .*host-no-meter.* names no meter UART"):
            meter_node.read(b.vb.repl_url)
        b.wait_for(b"phasenode: maintenance mode", since=since)  # restarted all the same
        assert b.vb.resets == ["soft reset"]
    finally:
        b.close()


def test_the_command_line_through_the_node(node):
    b, _m = node
    through = Through(node)

    def phasekit(url, *args):
        return subprocess.run(
            [sys.executable, "-m", "phasekit.cli", "meter", *args, "--node", url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    p = through(lambda url: phasekit(url, "read", "--address", "1"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        "address   1: 231.4 V" in p.stdout and "the house is off" in p.stdout and "polls meter address 0xF8" in p.stdout
    )
    p = phasekit(b.vb.repl_url, "read", "--baud", "4800")
    assert p.returncode == 2 and "--baud is for --port" in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "phasekit.cli", "meter", "read", "--node", "x", "--port", "y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "not allowed with argument" in p.stderr
