"""``phasekit provision``: the node config and key, checked against the node's reader and an independent HKDF.

The key file is compared with HKDF-SHA256 from the ``cryptography`` package
computed here from the derivation in docs/protocol.md section 4 (not with
phasecore.keys), the config with ``phasenode.persist`` as the node reads it.
The site key must never appear in anything the command prints.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from phasecore.codes import PHASE_B
from phasenode import persist

PHASEKIT = str(Path(sys.executable).with_name("phasekit"))
SITE_KEY = bytes(range(100, 132))  # synthetic test key


def run(*args, timeout=60):
    return subprocess.run([PHASEKIT, *[str(a) for a in args]], capture_output=True, text=True, timeout=timeout)


def site_key_file(tmp_path, mode=0o600):
    p = tmp_path / "site.key"
    p.write_text(SITE_KEY.hex() + "\n")
    p.chmod(mode)
    return p


def expected_secret(addr, generation):
    info = b"phasekit node " + bytes([addr]) + generation.to_bytes(2, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(SITE_KEY)


def provision(tmp_path, *extra, out=None, key=None):
    out = out or tmp_path / "n042"
    key = key or site_key_file(tmp_path)
    return out, run(
        "provision",
        "--site-key",
        key,
        "--address",
        42,
        "--node-id",
        "feeder7-n042",
        "--board",
        "esp32-devkitc-max485",
        "--home-phase",
        "B",
        "--out",
        out,
        *extra,
    )


def test_writes_a_config_the_node_reads_and_the_derived_key(tmp_path):
    out, p = provision(tmp_path, "--limit", "overcurrent_ma=32000", "--relay", "dead_time_ms=3000")
    assert p.returncode == 0, p.stderr
    cfg = persist.Store(str(out), fsync=False).load_config()
    assert (cfg.node_id, cfg.address, cfg.key_generation, cfg.board, cfg.home_phase) == (
        "feeder7-n042",
        42,
        0,
        "esp32-devkitc-max485",
        PHASE_B,
    )
    assert cfg.limits["overcurrent_ma"] == 32000 and cfg.limits["overvoltage_dv"] == 2530
    assert cfg.rules.dead_time_ms == 3000
    assert (out / "node.key").read_bytes() == expected_secret(42, 0)
    assert persist.Store(str(out), fsync=False).read_secret(cfg) == expected_secret(42, 0)
    assert stat.S_IMODE((out / "node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert "phasekit deploy --config %s" % out in p.stdout


def test_the_site_key_never_appears_in_the_output_or_the_files(tmp_path):
    out, p = provision(tmp_path)
    text = p.stdout + p.stderr + (out / "config.json").read_text()
    for secret in (SITE_KEY, expected_secret(42, 0)):
        assert secret.hex() not in text and secret.hex().upper() not in text
    assert SITE_KEY not in (out / "config.json").read_bytes() + (out / "node.key").read_bytes()


def test_a_new_generation_gives_a_new_secret_and_overwriting_needs_force(tmp_path):
    out, p = provision(tmp_path)
    assert p.returncode == 0
    _, p = provision(tmp_path, "--generation", 1)
    assert p.returncode == 2 and "--force" in p.stderr and "generation" in p.stderr
    assert (out / "node.key").read_bytes() == expected_secret(42, 0)  # untouched
    _, p = provision(tmp_path, "--generation", 1, "--force")
    assert p.returncode == 0, p.stderr
    assert (out / "node.key").read_bytes() == expected_secret(42, 1) != expected_secret(42, 0)
    assert json.loads((out / "config.json").read_text())["key"]["generation"] == 1


def test_bad_values_are_named_and_nothing_is_written(tmp_path):
    for extra, words in (
        (("--limit", "overvoltage_dv=9"), "limits.overvoltage_dv"),
        (("--limit", "overvoltage"), "NAME=VALUE"),
        (("--limit", "frequency_dhz=500"), "limits.frequency_dhz: unknown key"),
        (("--relay", "dead_time_ms=abc"), "not an integer"),
        (("--generation", 70000), "key.generation"),
    ):
        out, p = provision(tmp_path, *extra, out=tmp_path / "bad")
        assert p.returncode == 2 and words in p.stderr, (extra, p.stderr)
        assert not out.exists()
    p = run(
        "provision",
        "--site-key",
        site_key_file(tmp_path),
        "--address",
        0,
        "--node-id",
        "x",
        "--board",
        "esp32-devkitc-max485",
        "--home-phase",
        "A",
        "--out",
        tmp_path / "bad",
    )
    assert p.returncode == 2 and "node.address" in p.stderr
    p = run(
        "provision",
        "--site-key",
        site_key_file(tmp_path),
        "--address",
        5,
        "--node-id",
        "bad id!",
        "--board",
        "esp32-devkitc-max485",
        "--home-phase",
        "A",
        "--out",
        tmp_path / "bad",
    )
    assert p.returncode == 2 and "node.id" in p.stderr
    p = run("provision", "--address", 5)
    assert p.returncode == 2 and "--site-key" in p.stderr and "--board" in p.stderr


def test_site_key_file_checks(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("zz" * 32)
    out, p = provision(tmp_path, key=bad)
    assert p.returncode == 2 and "not hex" in p.stderr
    bad.write_text("ab" * 16)
    out, p = provision(tmp_path, key=bad)
    assert p.returncode == 2 and "16 bytes, expected 32" in p.stderr
    out, p = provision(tmp_path, key=tmp_path / "missing.key")
    assert p.returncode == 2 and "cannot read" in p.stderr
    loose = site_key_file(tmp_path, mode=0o644)
    out, p = provision(tmp_path, key=loose)
    assert p.returncode == 0 and "readable by group or others" in p.stderr


def test_new_site_key_is_random_private_and_never_overwritten(tmp_path):
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    assert run("provision", "--new-site-key", a).returncode == 0
    assert run("provision", "--new-site-key", b).returncode == 0
    ka, kb = a.read_text().strip(), b.read_text().strip()
    assert len(bytes.fromhex(ka)) == 32 and ka != kb
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    p = run("provision", "--new-site-key", a)
    assert p.returncode == 2 and "never overwritten" in p.stderr and a.read_text().strip() == ka
    assert ka not in p.stdout + p.stderr
    # The transformer Pi reads the same file format.
    from phasegate.registry import load_site_key

    assert load_site_key(str(a)) == bytes.fromhex(ka)
    os.remove(b)
