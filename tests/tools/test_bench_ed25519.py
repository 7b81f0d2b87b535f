"""The Ed25519 benchmark runs end to end on both interpreters and prints its table."""

import argparse
import json

from phasekit.bench import ed25519 as bench_ed25519


def _args(*argv):
    p = argparse.ArgumentParser()
    bench_ed25519.add_arguments(p)
    return p.parse_args(list(argv))


def test_bench_prints_every_row_and_plausible_numbers(capsys):
    status = bench_ed25519.main(_args("--manifest-bytes", "512", "--repeat", "3", "--json"))
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()
    assert any(line.startswith("CPython") for line in lines)
    assert any(line.startswith("MicroPython") and "100K" in line for line in lines)
    assert any(line.startswith("ESP32 240 MHz (estimate)") for line in lines)
    r = json.loads(lines[-1])
    assert r["manifest_bytes"] == 512
    mpy, est = r["micropython"], r["esp32_estimate"]
    assert mpy["refused_bad"] and r["cpython"]["refused_bad"]
    # a verify needs some heap but fits an ESP32's ~100 KB, and takes longer there than here
    assert 16 <= mpy["min_heap_kib"] <= 100 and 0 < mpy["headroom_kib"] < 64
    assert 0 < mpy["sha512_ms"] < mpy["ms"]
    assert est["low"] < est["factor"] < est["high"] and est["ms"] > mpy["ms"] * 10


def test_factor_override_is_used(capsys):
    status = bench_ed25519.main(_args("--manifest-bytes", "64", "--repeat", "1", "--factor", "100", "--json"))
    r = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status == 0
    assert r["esp32_estimate"]["factor"] == 100
    assert abs(r["esp32_estimate"]["ms"] - 100 * r["micropython"]["ms"]) < 1e-6
