"""The virtual board: real firmware under the MicroPython unix port, driven through mpremote over TCP.

Everything here is real: the ``micropython`` interpreter runs the node's
``boot.py``/``main.py`` from a flash folder; its meter UART talks to pymodbus
playing a PZEM-004T; its bus UART is a paced pty a test opens with pyserial;
its relay pins drive the simulated relay board; mpremote reaches its REPL
through the runner's TCP bridge. One board runs per test module (in a
background event loop); a test that resets it waits for the boot line again.
"""

import socket
import subprocess
import sys
import time

import pytest
import serial

from phasecore.codes import PHASE_A, PHASE_B, PHASE_C
from phasekit.sim.pzem import PzemMeter
from phasekit.sim.virtual_board import VirtualBoard
from vboard_support import BoardThread, make_flash

# The module's board boots in maintenance mode: boot.py opens the relays, main.py
# finds the config and stops before the node application (and its watchdog),
# so the tests own the REPL. test_deploy boots the application itself.
BOOTED = b"phasenode: maintenance mode"


def mpremote(url, *args, timeout=20):
    p = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", url, "resume", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return p


def mp_exec(url, code, timeout=20):
    p = mpremote(url, "exec", code, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    flash = tmp_path_factory.mktemp("vb") / "flash"
    make_flash(flash)
    b = BoardThread(flash, meters=[PzemMeter(address=1)])
    try:
        b.wait_for(BOOTED)
        yield b
    finally:
        b.close()
    assert not b.thread.is_alive()


def test_firmware_boots_from_the_flash_folder(board):
    assert board.vb.boots >= 1
    assert board.vb.relay_overlaps == 0 and board.vb.relays_closed() == []  # boot.py opened all relays
    out = mp_exec(board.vb.repl_url, "import os, sys; print(os.getcwd()); print(sys.path)")
    assert out.splitlines()[0] == str(board.vb.flash_dir)
    assert "lib" in out.splitlines()[1]


def test_firmware_reads_the_pymodbus_meter_through_its_hal(board):
    board.vb.meters[0].set(voltage=231.2, current=4.2, power_factor=0.95)
    out = mp_exec(
        board.vb.repl_url,
        (
            "import asyncio\n"
            "from phasenode import board, hal\n"
            "from phasenode.drivers.pzem import Pzem\n"
            "h = hal.for_board(board.load('board.json'))\n"
            "m = asyncio.run(Pzem(h.meter_uart(), address=1, timeout_ms=500).read())\n"
            "print(m.voltage_dv, m.current_ma, m.pf_centi)\n"
        ),
    )
    assert out.split() == ["2312", "4200", "95"]


def test_bus_uart_reaches_a_pyserial_bus_master(board):
    code = (
        "import time\n"
        "from phasenode import board, hal\n"
        "u = hal.for_board(board.load('board.json')).bus_uart()\n"
        "buf = bytearray(8)\n"
        "got = b''\n"
        "t = time.ticks_ms()\n"
        "while len(got) < 5 and time.ticks_diff(time.ticks_ms(), t) < 5000:\n"
        "    n = u.readinto(buf)\n"
        "    if n:\n"
        "        got += bytes(buf[:n])\n"
        "    time.sleep_ms(2)\n"
        "u.write(bytes(reversed(got)))\n"
        "print(got)\n"
    )
    with serial.Serial(board.vb.bus_port, 115200, timeout=5) as master:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mpremote", "connect", board.vb.repl_url, "resume", "exec", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(1.0)  # let mpremote interrupt main and start the code
            master.write(b"\x00\x01poll")
            reply = master.read(6)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert reply == b"llop\x01\x00"


def test_relay_pins_drive_the_simulated_relay_board_and_a_reset_opens_them(board):
    since = board.vb.console_offset
    mp_exec(
        board.vb.repl_url,
        "from phasenode import board, hal\nhal.for_board(board.load('board.json')).relay_pins()[1].value(1)\n",
    )
    deadline = time.monotonic() + 3
    while board.vb.relays_closed() != [PHASE_B] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert board.vb.relays_closed() == [PHASE_B]  # host-virtual is active high: phase B closed
    resets = len(board.vb.resets)
    mp_exec(board.vb.repl_url, "import machine\nmachine.soft_reset()")
    board.wait_for(BOOTED, since=since + 1)
    assert board.vb.resets[resets:] == ["soft reset"]
    assert board.vb.relays_closed() == [] and board.vb.relay_overlaps == 0
    assert board.vb.relay_log[-1][1] == 0


def test_a_starved_watchdog_resets_the_firmware(board):
    since = board.vb.console_offset
    resets = len(board.vb.resets)
    # Arm a 1.5 s watchdog, feed it once, then leave it: nobody feeds at the REPL.
    mp_exec(
        board.vb.repl_url,
        "from phasenode import board, hal\nw = hal.for_board(board.load('board.json')).watchdog(1500)\nw.feed()\n",
    )
    board.wait_for(BOOTED, since=since + 1, timeout=10)
    assert "watchdog" in board.vb.resets[resets:]
    assert board.vb.watchdog_feeds >= 1


def test_hard_reset_boots_again_with_relays_open(board):
    mp_exec(
        board.vb.repl_url,
        "from phasenode import board, hal\nhal.for_board(board.load('board.json')).relay_pins()[0].value(1)\n",
    )
    deadline = time.monotonic() + 3
    while board.vb.relays_closed() != [PHASE_A] and time.monotonic() < deadline:
        time.sleep(0.02)
    since = board.vb.console_offset
    boots = board.vb.boots
    board.call(board.vb.reset())  # the EN button
    assert board.vb.relays_closed() == []  # pins undriven the moment the MCU resets
    board.wait_for(BOOTED, since=since)
    assert board.vb.boots == boots + 1 and board.vb.resets[-1] == "reset"


def test_mpremote_filesystem_commands_work_on_the_flash(board, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello flash\n" * 100)
    p = mpremote(board.vb.repl_url, "fs", "cp", str(src), ":hello.txt", "+", "fs", "ls", "+", "fs", "cat", ":hello.txt")
    assert p.returncode == 0 and "hello.txt" in p.stdout and "hello flash" in p.stdout, p.stdout + p.stderr
    assert (board.vb.flash_dir / "hello.txt").read_bytes() == src.read_bytes()
    p = mpremote(board.vb.repl_url, "fs", "rm", ":hello.txt")
    assert p.returncode == 0 and not (board.vb.flash_dir / "hello.txt").exists()


def test_the_repl_takes_one_client_at_a_time(board):
    first = socket.create_connection(("127.0.0.1", board.vb.repl_port), timeout=5)
    try:
        first.sendall(b"\r\x03")
        second = socket.create_connection(("127.0.0.1", board.vb.repl_port), timeout=5)
        second.settimeout(5)
        assert second.recv(100) == b""  # closed by the board: the line is taken
        second.close()
    finally:
        first.close()
    time.sleep(0.1)
    assert mp_exec(board.vb.repl_url, "print(6 * 7)").strip() == "42"


def test_ctrl_c_interrupts_a_running_main_py(tmp_path):
    flash = tmp_path / "flash"
    make_flash(flash, main_py="import time\nprint('main running')\nwhile True:\n    time.sleep_ms(20)\n")
    b = BoardThread(flash, meters=[PzemMeter(address=1)])
    try:
        b.wait_for(b"main running")
        out = mp_exec(b.vb.repl_url, "print('at the REPL')")
        assert out.strip() == "at the REPL"
        assert b"KeyboardInterrupt" in b.vb.console
    finally:
        b.close()


def test_refuses_a_chip_board(tmp_path):
    from phasekit.sim.virtual_board import VirtualBoardError

    with pytest.raises(VirtualBoardError, match="host boards only"):
        VirtualBoard(tmp_path, board="esp32-devkitc-max485")


def test_lines_survive_a_dropped_hal(board):
    # boot.py builds a HAL and drops it; the garbage collector must not close the
    # descriptors under the HAL main.py builds next (MicroPython's FileIO closes on GC).
    out = mp_exec(
        board.vb.repl_url,
        (
            "import gc\n"
            "from phasenode import board, hal\n"
            "b = board.load('board.json')\n"
            "for i in range(3):\n"
            "    h = hal.for_board(b)\n"
            "    h.relay_pins()\n"
            "    h.bus_uart().any()\n"
            "    h = None\n"
            "    gc.collect()\n"
            "hal.for_board(b).relay_pins()[2].value(1)\n"
            "print(hal.for_board(b).bus_uart().write(b'ok'))\n"
        ),
    )
    assert out.strip() == "2"
    deadline = time.monotonic() + 3
    while board.vb.relays_closed() != [PHASE_C] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert board.vb.relays_closed() == [PHASE_C]
    mp_exec(
        board.vb.repl_url, "from phasenode import board, hal\nhal.for_board(board.load('board.json')).open_relays()\n"
    )


def test_without_a_config_main_says_so_and_leaves_the_repl_reachable(tmp_path):
    flash = tmp_path / "flash"
    make_flash(flash, maintenance=False)
    (flash / "config.json").unlink()
    b = BoardThread(flash, meters=[PzemMeter(address=1)])
    try:
        b.wait_for(b"config.json: missing")
        assert b"phasekit provision" in b.vb.console
        time.sleep(0.5)
        assert mp_exec(b.vb.repl_url, "print('still here')").strip() == "still here"
        assert b.vb.resets == [] and b.vb.watchdog_feeds == 0  # no watchdog armed: no reset loop
    finally:
        b.close()
