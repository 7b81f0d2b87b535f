"""phasegate.ota: roll-outs over the real bus master to nodes running the real firmware session and updater.

The line is ``phasekit.sim.bus_nodes.SimBus`` (a pseudo-terminal paced at
115200 baud); the nodes that update are ``FirmwareNode`` (phasenode.session
and phasenode.ota in-process, their flash a folder), beside simulated nodes
that only answer polls. The bundles are small synthetic ones, signed with a
fresh release key (what the nodes check does not depend on the files'
contents; tests/firmware/test_ota_vboard_cpython.py sends the real firmware).
"""

import asyncio
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phasecore import ota
from phasegate.bus import Bus, SerialLine
from phasegate.ota import Bundle, Engine, OtaError, lora_refusal, read_plan, request_cancel, request_push
from phasegate.registry import Registry
from phasekit.release import bundle_bytes
from phasekit.sim.bus_nodes import FirmwareNode, SimBus, SimNode
from phasenode.version import MIN_VERSION, VERSION

SITE_KEY = bytes(range(32))
NEW = (VERSION[0], VERSION[1], VERSION[2] + 1)


def _key():
    k = Ed25519PrivateKey.generate()
    return k, k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _bundle(path, key, version=NEW, size=2500):
    files = [("lib/phasenode/a.mpy", os.urandom(size)), ("lib/phasenode/b.mpy", os.urandom(size // 2))]
    data = bundle_bytes(files, version, tuple(MIN_VERSION), "host", 0, None, key)
    with open(path, "wb") as f:
        f.write(data)
    return data


async def _run(tmp_path, nodes, plan_kw, bundle, stop_when=None, timeout=120, kill_after=None, period=1.0):
    """Poll ``nodes`` and run the engine until the roll-out ends; returns (plan, engines' stats, round times)."""
    addrs = sorted(n.addr for n in nodes)
    reg = Registry(SITE_KEY, addrs, tmp_path / "seq.txt", tmp_path / "reg.json")
    folder = tmp_path / "ota"
    rounds = []
    stats = []
    with SimBus(nodes, baud=115200, turnaround_s=0.003, pace=True) as sim:
        bus = Bus(SerialLine(sim.port, 115200), addrs, reply_timeout_s=0.05, retries=1, poll_period_s=period)
        async with bus:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            seen = [0]

            def on_reply(addr, r):
                if r is not None and r.frame.payload:
                    reg.receive(addr, r.frame.payload, loop.time())
                if bus.counters["rounds"] != seen[0]:
                    seen[0] = bus.counters["rounds"]
                    rounds.append(bus.counters["last_round_s"])

            polling = asyncio.ensure_future(bus.run(stop, on_reply))
            request_push(folder, bundle, [n.addr for n in nodes if isinstance(n, FirmwareNode)], **plan_kw)
            engine = Engine(folder, reg, bus, idle_poll_s=0.1, watch_period_s=0.3)
            task = asyncio.ensure_future(engine.run(stop))
            t0 = loop.time()
            plan = None
            while loop.time() - t0 < timeout:
                await asyncio.sleep(0.1)
                if kill_after is not None and engine.stats["chunks"] >= kill_after:
                    # The Pi killed mid-transfer (the engine's task cancelled wherever it is): a new one from
                    # the files carries on.
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    stats.append(dict(engine.stats))
                    kill_after = None
                    reg = Registry(SITE_KEY, addrs, tmp_path / "seq.txt", tmp_path / "reg.json")
                    engine = Engine(folder, reg, bus, idle_poll_s=0.1, watch_period_s=0.3)
                    task = asyncio.ensure_future(engine.run(stop))
                plan = read_plan(folder)
                if plan is not None and plan["state"] != "running":
                    break
                if stop_when is not None and plan is not None and stop_when(plan):
                    break
            stop.set()
            await asyncio.gather(polling, task, return_exceptions=True)
            stats.append(dict(engine.stats))
    return plan, stats, rounds


def test_canary_first_then_waves_every_node_confirmed_and_polling_never_waits(tmp_path):
    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    data = _bundle(path, key)
    fw = [FirmwareNode(a, SITE_KEY, str(tmp_path / ("n%d" % a)), pub) for a in (3, 4, 5, 6)]
    for n in fw:
        os.makedirs(n.root, exist_ok=True)
    fw = [FirmwareNode(a, SITE_KEY, str(tmp_path / ("n%d" % a)), pub) for a in (3, 4, 5, 6)]
    others = [SimNode(a, SITE_KEY) for a in (1, 2, 7, 8)]
    plan, stats, rounds = asyncio.run(_run(tmp_path, fw + others, {"canary": 1, "wave": 2, "health_s": 60}, path))
    assert plan["state"] == "done", plan
    nodes = plan["nodes"]
    assert all(nodes[str(a)]["state"] == "done" for a in (3, 4, 5, 6)), nodes
    assert all(n.version == NEW and n.slot == "a" for n in fw)
    # Canary first: node 3 was confirmed before any node of the next wave was activated.
    assert nodes["3"]["t"] < min(nodes[str(a)]["activated"] for a in (4, 5, 6))
    # Waves of two: 4 and 5 confirmed before 6 was activated.
    assert max(nodes["4"]["t"], nodes["5"]["t"]) < nodes["6"]["activated"]
    chunks = (len(data) + ota.DEFAULT_CHUNK - 1) // ota.DEFAULT_CHUNK
    assert stats[-1]["chunks"] <= 4 * chunks + 4, stats  # each node got each chunk once (a lost reply at most)
    assert max(rounds) < 0.5, rounds  # 8 nodes: the update never held a round back


def test_a_pi_restart_mid_transfer_resends_nothing_the_node_holds(tmp_path):
    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    data = _bundle(path, key, size=9000)
    os.makedirs(tmp_path / "n3")
    node = FirmwareNode(3, SITE_KEY, str(tmp_path / "n3"), pub)
    plan, stats, _rounds = asyncio.run(
        _run(tmp_path, [node, SimNode(1, SITE_KEY)], {"canary": 1, "health_s": 60}, path, kill_after=20)
    )
    assert plan["state"] == "done" and node.version == NEW, plan
    chunks = (len(data) + ota.DEFAULT_CHUNK - 1) // ota.DEFAULT_CHUNK
    sent = sum(s["chunks"] for s in stats)
    answered = sum(s["chunk_replies"] for s in stats)
    assert len(stats) == 2 and stats[0]["chunks"] >= 20
    # Every chunk whose status came back was new to the node, across the restart, but two: the chunk in
    # flight at the kill, whose answer then arrives during the new engine's first request and is taken for
    # its answer (frames carry no request id), which shifts the next answer by one. A chunk whose status was
    # lost (a loaded machine) is sent again, as it must be, and is not counted here.
    assert answered <= chunks + 2, (sent, answered, chunks, stats)


def test_a_failing_canary_halts_the_roll_out_with_its_typed_reason(tmp_path):
    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    _bundle(path, key)
    _other, other_pub = _key()
    roots = [tmp_path / "n3", tmp_path / "n4"]
    for r in roots:
        os.makedirs(r)
    canary = FirmwareNode(3, SITE_KEY, str(roots[0]), other_pub)  # trusts another release key
    second = FirmwareNode(4, SITE_KEY, str(roots[1]), pub)
    plan, _stats, _rounds = asyncio.run(_run(tmp_path, [canary, second], {"canary": 1, "wave": 5}, path))
    assert plan["state"] == "halted", plan
    assert plan["nodes"]["3"]["state"] == "failed" and plan["nodes"]["3"]["error"] == "refused: OTA_WRONG_KEY"
    assert plan["nodes"]["4"]["state"] == "pending" and second.version == tuple(VERSION)


def test_a_node_already_on_the_version_is_skipped_and_one_without_a_key_fails(tmp_path):
    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    _bundle(path, key, version=tuple(VERSION))
    for a in (3, 4):
        os.makedirs(tmp_path / ("n%d" % a))
    same = FirmwareNode(3, SITE_KEY, str(tmp_path / "n3"), pub)
    nokey = FirmwareNode(4, SITE_KEY, str(tmp_path / "n4"), None)
    plan, _s, _r = asyncio.run(_run(tmp_path, [same, nokey], {"canary": 0, "wave": 5}, path))
    assert plan["nodes"]["3"]["state"] == "skipped", plan
    assert plan["nodes"]["4"]["error"] == "refused: OTA_NO_KEY"
    assert plan["state"] == "halted"


def test_requests_on_disk_replace_cancel_and_refuse(tmp_path):
    key, _pub = _key()
    path = str(tmp_path / "b.pkb")
    data = _bundle(path, key)
    folder = tmp_path / "ota"
    plan = request_push(folder, path, [3, 4], canary=1)
    assert plan["id"] == Bundle(data).id and plan["order"] == [3, 4]
    assert json.load(open(folder / "request.json"))["action"] == "push"
    assert (folder / ("bundle-%08x.pkb" % plan["id"])).read_bytes() == data
    # The engine takes it up and owns the state file from then on.
    reg = Registry(SITE_KEY, [3], tmp_path / "seq.txt", tmp_path / "reg.json")
    engine = Engine(folder, reg, None)
    assert engine.take_request() and not (folder / "request.json").exists()
    plan = read_plan(folder)
    assert plan["state"] == "running"
    assert plan["nodes"]["4"]["state"] == "failed" and "not a node of this Pi" in plan["nodes"]["4"]["error"]
    with pytest.raises(OtaError, match="is running"):
        request_push(folder, path, [3])
    request_cancel(folder)
    assert engine.take_request() and read_plan(folder)["state"] == "cancelled"
    with pytest.raises(OtaError, match="bundle"):
        Bundle(b"PKOT\x00\x05hello")
    assert engine.waves() == [[3], [4]]


def test_lora_is_refused_with_the_airtime_it_would_take():
    text = lora_refusal(139433)
    assert text.startswith("refused over LoRa: 139433 bytes are 629 packets")
    assert "duty cycle" in text and "phasekit deploy" in text


def test_phasekit_ota_push_status_cancel_against_a_gateway_config(tmp_path):
    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    _bundle(path, key)
    (tmp_path / "site.key").write_text(SITE_KEY.hex() + "\n")
    os.chmod(tmp_path / "site.key", 0o600)
    (tmp_path / "pub").write_text(pub.hex() + "\n")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[site]\nid = "s"\ntransformer = "t"\nkey_file = "site.key"\nrated_current_a = 400\n'
        '[bus]\nport = "/dev/null"\nbaud = 115200\nnodes = [3, 4]\n'
        '[lora]\ndriver = "sim"\nnodes = [9]\n'
        '[store]\npath = "%s"\n' % (tmp_path / "buffer.db")
    )

    def phasekit(*args):
        return subprocess.run([sys.executable, "-m", "phasekit.cli", "ota", *args], capture_output=True, text=True)

    p = phasekit("push", path, "--config", str(cfg), "--nodes", "3,9")
    assert p.returncode == 1 and "nodes 9 are on LoRa: refused over LoRa" in p.stderr, p.stderr
    _other, other_pub = _key()
    (tmp_path / "other.pub").write_text(other_pub.hex())
    p = phasekit("push", path, "--config", str(cfg), "--release-key", str(tmp_path / "other.pub"))
    assert p.returncode == 1 and "OTA_WRONG_KEY" not in p.stderr and "not the node's release key" in p.stderr, p.stderr
    p = phasekit("push", path, "--config", str(cfg), "--canary", "1", "--release-key", str(tmp_path / "pub"))
    assert p.returncode == 0 and "signature checked" in p.stdout, p.stdout + p.stderr
    p = phasekit("status", "--config", str(cfg))
    assert p.returncode == 0 and "waiting for the gateway" in p.stdout, p.stdout
    # What the gateway's engine makes of it, then what status shows.
    reg = Registry(SITE_KEY, [3, 4], tmp_path / "seq.txt", tmp_path / "reg.json")
    Engine(tmp_path / "ota", reg, None).take_request()
    p = phasekit("status", "--config", str(cfg))
    assert p.returncode == 0 and "running" in p.stdout and "pending" in p.stdout, p.stdout
    p = phasekit("cancel", "--config", str(cfg))
    assert p.returncode == 0
    Engine(tmp_path / "ota", reg, None).take_request()
    p = phasekit("status", "--config", str(cfg), "--json")
    assert json.loads(p.stdout)["state"] == "cancelled"


def test_phasekit_gateway_run_carries_a_roll_out_through_a_sigkill(tmp_path):
    """The real gateway process: ``phasekit ota push`` while it runs, SIGKILL mid-transfer, restart, done."""
    import signal
    import time

    from phasekit.testing.gateway import phasekit_popen, write_config

    key, pub = _key()
    path = str(tmp_path / "b.pkb")
    data = _bundle(path, key, size=12000)
    roots = {a: tmp_path / ("n%d" % a) for a in (3, 4)}
    for r in roots.values():
        os.makedirs(r)
    fw = [FirmwareNode(a, SITE_KEY, str(r), pub) for a, r in roots.items()]
    others = [SimNode(a, SITE_KEY) for a in (1, 2)]
    with SimBus(fw + others, baud=115200, turnaround_s=0.003, pace=True) as sim:
        cfg = write_config(
            tmp_path,
            SITE_KEY,
            '[site]\nid = "s"\ntransformer = "t"\nkey_file = "site.key"\n'
            '[bus]\nport = "%s"\nbaud = 115200\nnodes = [1, 2, 3, 4]\nreply_timeout_ms = 60\npoll_period_s = 1\n'
            '[balancer]\nenabled = false\n[store]\npath = "buffer.db"\n' % sim.port,
        )
        gw = phasekit_popen("gateway", "run", str(cfg), text=True)
        try:
            p = phasekit(
                "ota", "push", path, "--config", str(cfg), "--nodes", "3,4", "--canary", "1", "--chunks-per-gap", "20"
            )
            assert p.returncode == 0, p.stderr
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                plan = read_plan(tmp_path / "ota")
                if plan is not None and plan["nodes"]["3"]["next"] >= 10:
                    break
                time.sleep(0.1)
            gw.send_signal(signal.SIGKILL)  # a power cut of the Pi, in the middle of node 3's transfer
            gw.communicate(timeout=20)
            assert read_plan(tmp_path / "ota")["state"] == "running"
            gw = phasekit_popen("gateway", "run", str(cfg), text=True)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                plan = read_plan(tmp_path / "ota")
                if plan["state"] != "running":
                    break
                time.sleep(0.3)
            status = phasekit("ota", "status", "--config", str(cfg))
            gw.send_signal(signal.SIGTERM)
            out, _ = gw.communicate(timeout=30)
        finally:
            if gw.poll() is None:
                gw.kill()
    assert plan["state"] == "done", (plan, out[-3000:])
    assert all(n.version == NEW for n in fw) and all(plan["nodes"][str(a)]["state"] == "done" for a in (3, 4))
    assert "phasenode %s" % ota.version_text(NEW) in status.stdout and status.stdout.count("done") >= 2, status.stdout
    # What node 3 got: each chunk once (a lost or late answer aside), though the Pi died in between.
    assert fw[0].requests < 3 * ((len(data) + 221) // 222), fw[0].requests


def phasekit(*args):
    return subprocess.run([sys.executable, "-m", "phasekit.cli", *args], capture_output=True, text=True)
