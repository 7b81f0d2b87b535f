"""``phasekit flash``: image checks, the esptool command lines, and esptool's own error path.

There is no ESP32 on this machine, so nothing is flashed here. What is tested:
the image check on synthetic images (a real ESP image header, 0xE9 and the
chip id at offset 12, followed by zeros: not a MicroPython build); the esptool
commands built per chip (offset 0x1000 for the ESP32, 0x0 for the ESP32-S3);
that the installed esptool accepts those exact command lines (it gets as far as
opening the port, which nothing listens on); and that its failure becomes a
clear message and exit status 1.
"""

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from phasekit.node import flash

PHASEKIT = str(Path(sys.executable).with_name("phasekit"))


def esp_image(path, chip_id, size=300 * 1024):
    # ESP image header (esptool bin_image.py): magic 0xE9, segment count, SPI mode,
    # size/frequency, entry point; extended header: wp pin, drive strengths, chip id (u16).
    head = bytes([0xE9, 4, 2, 0x20]) + struct.pack("<I", 0x40081000)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<H", chip_id) + bytes(10)
    path.write_bytes(head + ext + bytes(size - len(head) - len(ext)))
    return path


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "socket://127.0.0.1:%d" % s.getsockname()[1]


def run(*args, timeout=60):
    return subprocess.run([PHASEKIT, *[str(a) for a in args]], capture_output=True, text=True, timeout=timeout)


def test_image_check_knows_the_chip(tmp_path):
    img32 = esp_image(tmp_path / "esp32.bin", 0)
    imgs3 = esp_image(tmp_path / "esp32s3.bin", 9)
    assert flash.check_image(img32, "esp32") == 300 * 1024
    assert flash.check_image(imgs3, "esp32s3") == 300 * 1024
    with pytest.raises(flash.FlashError, match="built for esp32s3 \\(chip id 9\\), not esp32"):
        flash.check_image(imgs3, "esp32")
    with pytest.raises(flash.FlashError, match="built for esp32 \\(chip id 0\\), not esp32s3"):
        flash.check_image(img32, "esp32s3")


def test_image_check_refuses_files_that_are_not_esp_images(tmp_path):
    uf2 = tmp_path / "fw.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(200 * 1024))
    with pytest.raises(flash.FlashError, match="not an ESP firmware image"):
        flash.check_image(uf2, "esp32")
    tiny = esp_image(tmp_path / "tiny.bin", 0, size=4096)
    with pytest.raises(flash.FlashError, match="is not a MicroPython firmware image"):
        flash.check_image(tiny, "esp32")
    with pytest.raises(flash.FlashError, match="cannot read"):
        flash.check_image(tmp_path / "missing.bin", "esp32")


def test_commands_use_the_offset_of_each_chip(tmp_path):
    img = tmp_path / "fw.bin"
    e, w = flash.esptool_commands(img, "esp32", "/dev/ttyUSB0", 921600)
    assert e[1:] == ["-m", "esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "921600", "erase-flash"]
    assert w[-4:] == ["write-flash", "-z", "0x1000", str(img)]
    (w,) = flash.esptool_commands(img, "esp32s3", "/dev/ttyACM0", erase=False)
    assert w[-4:] == ["write-flash", "-z", "0x0", str(img)] and "--chip" in w and "esp32s3" in w
    with pytest.raises(flash.FlashError, match="unknown chip"):
        flash.esptool_commands(img, "rp2040", "/dev/ttyACM0")


def test_dry_run_takes_the_chip_from_the_board_file(tmp_path):
    img = esp_image(tmp_path / "fw.bin", 9)
    p = run("flash", img, "--board", "heltec-wifi-lora32-v3-sx1262", "--port", "/dev/ttyACM0", "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith("-> esp32s3 on /dev/ttyACM0 at 0x0")
    assert lines[1].endswith("--chip esp32s3 --port /dev/ttyACM0 --baud 460800 erase-flash")
    assert lines[2].endswith("write-flash -z 0x0 " + str(img))


def test_usage_errors(tmp_path):
    img = esp_image(tmp_path / "fw.bin", 0)
    p = run("flash", img, "--board", "host-virtual", "--port", "/dev/ttyUSB0")
    assert p.returncode == 2 and "virtual board" in p.stderr
    p = run("flash", img, "--board", "esp32-devkitc-max485", "--chip", "esp32s3", "--port", "/dev/ttyUSB0")
    assert p.returncode == 2 and "contradicts" in p.stderr
    p = run("flash", img, "--port", "/dev/ttyUSB0")
    assert p.returncode == 2 and "--chip or --board" in p.stderr
    p = run("flash", img, "--chip", "esp32s3", "--port", "/dev/ttyUSB0", "--dry-run")
    assert p.returncode == 2 and "not esp32s3" in p.stderr


def test_esptool_accepts_the_command_lines_and_its_failure_is_reported(tmp_path):
    img = esp_image(tmp_path / "fw.bin", 0)
    port = closed_port()
    # Each command line as built: esptool parses it and fails only on opening the port.
    for cmd in flash.esptool_commands(img, "esp32", port, 115200):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "Could not open " + port in out, out
        assert "Usage" not in out and "No such" not in out, out
    p = run("flash", img, "--chip", "esp32", "--port", port, "--baud", "115200")
    assert p.returncode == 1
    assert "esptool erase-flash failed" in p.stderr and "download mode" in p.stderr, p.stderr
    p = run("flash", img, "--chip", "esp32", "--port", port, "--no-erase")
    assert p.returncode == 1 and "esptool write-flash failed" in p.stderr
