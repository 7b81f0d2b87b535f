"""A firmware update of the real firmware on the virtual board, over its RS-485 pty, from the Pi's real engine.

The node is ``phasekit deploy``'s flash layout (boot.py, main.py, phaseboot.py,
lib/ as .mpy) under the MicroPython unix port (``phasekit.sim.virtual_board``),
provisioned with a release key; the Pi is ``phasegate.bus`` polling it every
2 s over the paced 115200-baud null-modem pty and ``phasegate.ota.Engine``
pushing a bundle built and signed as a release is (``phasekit.release``).

1. The whole firmware as a new version: downloaded in chunks between polls,
   verified by the node (signature with ``phasecore.ed25519`` on MicroPython,
   every file's SHA-256), activated, booted on trial by phaseboot after a
   reset, confirmed healthy; the node's heartbeat then carries the new
   version, and its flash says the new slot is confirmed.
2. A bad new version (signed, but missing modules: its application cannot
   start): activated, booted, fails, and the node goes back to the version
   before by itself; the Pi records the rollback and its reason.
3. A tampered bundle: refused by the node with its typed reason.

Throughout, the relay board only ever closes the house's phase, never two.
"""

import asyncio
import json
import os

from node_fixtures import ADDR, SITE_KEY, provision, rmtree, tmpdir
from phasecore import ota
from phasegate.bus import Bus, SerialLine
from phasegate.ota import Engine, read_plan, request_push
from phasegate.registry import Registry
from phasekit import release, repo
from phasekit.node import deploy
from phasekit.sim import virtual_board as vb_mod
from phasekit.sim.pzem import PzemMeter
from phasenode.version import MIN_VERSION, VERSION

RULES = {"dead_time_ms": 200, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}


def _key(folder):
    path = os.path.join(folder, "release.key")
    pub = release.generate_key(path)
    return path, pub


def _small_bad_bundle(path, key_path, version):
    """A signed bundle whose firmware cannot start: the package and its startup only, the rest missing."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    staged = deploy.stage(str(repo.board_path("host-virtual")), None, os.path.dirname(path) + "/stage", host=True)
    files = []
    for dev, local, _size in staged.files:
        if dev in ("lib/phasenode/__init__.mpy", "lib/phasenode/startup.mpy"):
            files.append((dev, local.read_bytes()))
    files.append(("lib/phasenode/version.mpy", b"M\x06\x00\x1f"))  # a .mpy header with nothing after it
    key = load_pem_private_key(open(key_path, "rb").read(), None)
    data = release.bundle_bytes(files, version, tuple(VERSION), "host", 6, None, key)
    with open(path, "wb") as f:
        f.write(data)


def test_update_rollback_and_refusal_of_the_real_firmware_on_the_virtual_board():
    async def main():
        work = tmpdir("otavb")
        cfg_dir = work + "/cfg"
        flash = work + "/flash"
        os.mkdir(cfg_dir)
        try:
            key_path, pub = _key(work)
            provision(cfg_dir, relay=RULES)
            with open(cfg_dir + "/config.json") as f:
                cfg = json.load(f)
            cfg["release_key"] = pub.hex()
            cfg["app"] = {"sample_ms": 500, "ota_confirm_s": 60}
            with open(cfg_dir + "/config.json", "w") as f:
                json.dump(cfg, f)
            deploy.stage(str(repo.board_path("host-virtual")), cfg_dir, flash, host=True)
            new = (VERSION[0], VERSION[1], VERSION[2] + 1)
            good = work + "/good.pkb"
            release.build(good, ota.version_text(new), ota.version_text(MIN_VERSION), "host")
            release.sign(good, key_path)
            bad = work + "/bad.pkb"
            _small_bad_bundle(bad, key_path, (new[0], new[1], new[2] + 1))
            tampered = work + "/tampered.pkb"
            release.build(
                tampered, ota.version_text((new[0], new[1], new[2] + 2)), ota.version_text(MIN_VERSION), "host"
            )
            release.sign(tampered, key_path)
            data = bytearray(open(tampered, "rb").read())
            data[ota.parse_head(bytes(data)).files_at + 2] ^= 0x40  # a byte of the first file, after signing
            with open(tampered, "wb") as f:
                f.write(data)
            meters = [PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)]
            async with vb_mod.VirtualBoard(flash, meters=meters) as vb:
                await vb.wait_for(b"phasenode: running", timeout=60)
                return await pi(vb, work, good, bad, tampered, new, flash)
        finally:
            rmtree(work)

    async def roll(engine, folder, bundle, timeout, vb=None):
        request_push(folder, bundle, [ADDR], replace=True, canary=1, chunks_per_gap=1000, health_s=240)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while loop.time() - t0 < timeout:
            await asyncio.sleep(0.5)
            plan = read_plan(folder)
            if plan is not None and plan["id"] == ota.parse_head(open(bundle, "rb").read()).id:
                n = plan["nodes"][str(ADDR)]
                if n["state"] in ("done", "failed", "skipped"):
                    return n, loop.time() - t0
        raise AssertionError(
            "no outcome within %d s: %r\nconsole:\n%s"
            % (timeout, read_plan(folder), vb.console[-4000:].decode("utf-8", "replace") if vb else "")
        )

    async def pi(vb, work, good, bad, tampered, new, flash):
        reg = Registry(SITE_KEY, [ADDR], work + "/seq.txt", work + "/reg.json")
        bus = Bus(SerialLine(vb.bus_port, 115200), [ADDR], reply_timeout_s=0.2, retries=2, poll_period_s=2.0)
        out = {}
        async with bus:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()

            def on_reply(addr, r):
                if r is not None and r.frame.payload:
                    reg.receive(addr, r.frame.payload, loop.time())

            folder = work + "/ota"
            engine = Engine(folder, reg, bus, idle_poll_s=0.2, watch_period_s=1.0)
            tasks = [asyncio.ensure_future(bus.run(stop, on_reply)), asyncio.ensure_future(engine.run(stop))]
            try:
                out["bad"] = await roll(engine, folder, bad, 300, vb)
                await engine.heartbeat(ADDR)
                out["fw_after_bad"] = reg.nodes[ADDR].fw
                out["tampered"] = await roll(engine, folder, tampered, 400, vb)
                out["good"] = await roll(engine, folder, good, 400, vb)
                out["fw_after_good"] = reg.nodes[ADDR].fw
                out["rtt_ms"] = bus.stats[ADDR].last_rtt_ms
                out["state_after_good"] = json.load(open(flash + "/fw/state.json"))
                out["resets"] = list(vb.resets)
                out["engine"] = dict(engine.stats)
                for t in tasks:
                    if t.done():
                        t.result()  # an engine or bus that died is a failure of its own
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        out["relay_log"] = list(vb.relay_log)
        out["overlaps"] = vb.relay_overlaps
        out["console"] = vb.console[-3000:].decode("utf-8", "replace")
        return out

    out = asyncio.run(asyncio.wait_for(main(), 1500))
    new = ota.version_text((VERSION[0], VERSION[1], VERSION[2] + 1))
    old = ota.version_text(VERSION)
    (bad, _t) = out["bad"]
    assert bad["state"] == "failed" and "rolled back to %s (APP)" % old in bad["error"], (bad, out["console"])
    assert out["fw_after_bad"] == "phasenode " + old
    (tampered, _t) = out["tampered"]
    assert tampered["state"] == "failed" and tampered["error"] == "refused: OTA_BAD_HASH", tampered
    (good, t_good) = out["good"]
    assert good["state"] == "done", (good, out["console"])
    assert out["fw_after_good"] == "phasenode " + new, out["fw_after_good"]
    # The bad version went to slot a and back, the tampered one was refused there, the good one holds it now.
    assert out["state_after_good"]["confirmed"] == "a" and out["state_after_good"]["trial"] is None
    assert out["resets"] == ["reset"] * 3, out["resets"]  # bad: activate, roll back; good: activate
    # The house: only phase A ever closed (bit 0), never two at once, closed again after every reboot.
    masks = {m for _t, m in out["relay_log"]}
    assert masks <= {0, 1} and out["overlaps"] == 0, out["relay_log"]
    assert out["relay_log"][-1][1] == 1
    print(
        "\nvirtual board update: %.0f s to done (download, verify, reset, trial, confirm); last chunk rtt %.1f ms; %r"
        % (t_good, out["rtt_ms"] or -1, out["engine"])
    )
