"""The Pi under a flood of its worst inputs, at CI and benchmark scale (``phasekit bench pi-flood``).

Every part is real: Mosquitto with mutual TLS, ``phasekit gateway run`` in its
own process polling sealed simulated nodes on a pseudo-terminal RS-485 line,
the operator gate with a state file. The flood:

- **command topic**: ``messages`` publishes of the worst kinds in turn: a
  command sealed under a stolen-looking but wrong key (parses, fails the tag:
  the most CPU per byte), hostile CBOR (a bignum of ~1000 bytes, deep
  nesting), a payload of ``oversize_bytes`` (refused unread: the broker does
  not deliver a packet above the Pi's MQTT 5 Maximum Packet Size) and a
  replay of a genuine command;
- **the bus**: one node's key is stolen (``ThiefNode``: every poll answered
  with a sealed alarm event under that node's real key), one node sits
  behind a noisy line (random bytes and false SYNCs before each reply), one
  sends corrupted frames;
- **LoRa relay**: ``relay_frames`` forged frames (sealed with a stolen key,
  headers saying "event") from one source address into a
  ``phasegate.lora_gateway.LoraGateway`` with a small buffer, among genuine
  readings of other addresses and the relay's own record.

Measured: the gateway keeps polling (honest nodes' polls during the flood),
every genuine reading is buffered (the gateway's ``BUFFERED_READING`` lines
against what the honest nodes sent), its resident memory (VmRSS sampled,
VmHWM at the end, from /proc), the flood's refusals (log), a genuine
operator command after the flood still moves its node, and at the relay
every genuine row survives. ``run(...)`` returns the figures as a dict.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from phasecore import cbor, frame, msg, seal
from phasegate.operator import operator_key, seal_command
from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import GatewayProc, buffered_readings, gateway_toml, phasekit_popen, write_config
from phasekit.testing.processes import Children, proc_cpu_s, proc_status

__all__ = ("run", "ThiefNode", "SITE_KEY", "RSS_LIMIT_MB")

SITE_KEY = bytes(range(32))  # synthetic
RSS_LIMIT_MB = 200.0
SITE, TRANSFORMER = "flood-site", "tx-1"
_HONEST = (1, 2, 3, 4, 5)
_THIEF, _NOISY, _CORRUPT = 20, 21, 22
_POLL_S = 0.5


class ThiefNode(SimNode):
    """A node whose key was stolen: it answers every poll with a sealed alarm event (severity 3)."""

    def answer_poll(self) -> bytes | None:
        self.polls += 1
        body = msg.encode(msg.EVENT, {"code": 999, "severity": 3, "value": self.polls, "text": "x" * 64})
        return seal.seal_raw(msg.EVENT, body, self.sender)


def _client(broker: LocalBroker, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    tls = broker.tls
    c.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _flood_payloads(n: int, oversize_bytes: int, replay: bytes) -> list[bytes]:
    wrong_key, wrong_iv = operator_key(bytes(range(1, 33)), "ops-1")
    bignum = cbor.dumps([1, 7, cbor.dumps(1 << 7900)])[:1000]
    deep = b"\x81" * 900 + b"\x00"
    oversize = b"\x83\x01\x07\x5a" + oversize_bytes.to_bytes(4, "big") + bytes(oversize_bytes)
    out = []
    for i in range(n):
        k = i % 5
        if k == 0:
            fields = {"id": i, "op": msg.OP_MOVE, "deadline_s": int(time.time()) + 60, "phase": 1}
            out.append(seal_command(wrong_key, wrong_iv, "ops-1", i + 1, SITE, TRANSFORMER, 1, fields))
        elif k == 1:
            out.append(bignum)
        elif k == 2:
            out.append(deep)
        elif k == 3:
            out.append(oversize)
        else:
            out.append(replay)
    return out


def _relay_flood(workdir: Path, frames: int) -> dict[str, Any]:
    """The LoRa relay's buffer under forged frames from one address (in this process)."""
    from phasegate.lora_gateway import LoraGateway, Route
    from phasegate.store import Store

    # Room for every genuine row (250 at 10,000 frames) and more: the flooder takes the rest.
    store = Store(workdir / "relay.db", max_rows=max(1000, frames // 10))
    gw = LoraGateway(None, store, [Route(SITE, TRANSFORMER, [1, 2, 3, 4, 5, 20])], "gw-1")  # type: ignore[arg-type]
    store.put_many([("heartbeat", "heartbeat", b"\xa0", 0, None, time.time())])  # the relay's own record
    honest = [SimNode(a, SITE_KEY) for a in _HONEST]
    thief = SimNode(_THIEF, SITE_KEY)
    body = msg.encode(msg.EVENT, {"code": 999, "severity": 3, "text": "x" * 64})
    genuine = 0
    t0 = time.perf_counter()
    for i in range(frames):
        env = seal.seal_raw(msg.EVENT, body, thief.sender)
        gw.handle_packet(frame.encode(frame.MASTER, _THIEF, env, frame.LORA_MAX_PAYLOAD))
        if i % 200 == 0:
            for n in honest:
                gw.handle_packet(frame.encode(frame.MASTER, n.addr, n.reading_payload(), frame.LORA_MAX_PAYLOAD))
                genuine += 1
    elapsed = time.perf_counter() - t0
    rows = store.pending(10**6)
    kept = sum(1 for r in rows if r.kind == "reading")
    own = sum(1 for r in rows if r.sender == 0)
    store.close()
    return {
        "relay_frames": frames,
        "relay_frames_per_s": frames / elapsed if elapsed else 0.0,
        "relay_genuine_sent": genuine,
        "relay_genuine_kept": kept,
        "relay_own_kept": own,
        "relay_rows": len(rows),
    }


def _parse_counts(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"([\w:]+)=(\d+)", text)}


def run(
    workdir: str | os.PathLike[str],
    messages: int = 2000,
    oversize_bytes: int = 256 * 1024,
    relay_frames: int = 2000,
    say: Callable[[str], object] = lambda s: None,
) -> dict[str, Any]:
    """Run the flood; returns the measurements (see the module docstring)."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"messages": messages, "oversize_bytes": oversize_bytes}
    honest = [SimNode(a, SITE_KEY, phase=msg.PHASE_A, current_mA=3000) for a in _HONEST]
    thief = ThiefNode(_THIEF, SITE_KEY)
    noisy = SimNode(_NOISY, SITE_KEY, mode="noise", noise_bytes=120)
    corrupt = SimNode(_CORRUPT, SITE_KEY, mode="corrupt")
    nodes = honest + [thief, noisy, corrupt]
    with Children(work) as children, LocalBroker(work / "broker") as broker, SimBus(nodes) as sim:
        body = gateway_toml(
            sim.port,
            [n.addr for n in nodes],
            broker,
            site=SITE,
            transformer=TRANSFORMER,
            bus={"poll_period_s": _POLL_S, "reply_timeout_ms": 50, "stale_after_s": 30, "offline_after_s": 120},
            balancer={"enabled": False},
            uplink={"mode": "raw", "raw_batch_s": 1.0, "operators": ["ops-1"]},
        )
        cfg = write_config(work, SITE_KEY, body)
        r = phasekit_popen("gateway", "operator-reset", str(cfg), "--generation", "0", text=True)
        out, _ = r.communicate(timeout=60)
        if r.returncode != 0:
            raise RuntimeError("operator-reset failed: %s" % out)
        gw = GatewayProc(children, cfg, work / "gateway.log", level="debug")
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(n.polls for n in honest) < 3:
            time.sleep(0.2)
        if min(n.polls for n in honest) < 3:
            raise RuntimeError("the gateway never polled the nodes:\n" + gw.log_text()[-2000:])
        time.sleep(1.5)  # subscribed to its command topic
        key, iv = operator_key(SITE_KEY, "ops-1")
        seq = [1]

        def genuine(node: int, phase: int) -> bytes:
            fields = {"id": seq[0], "op": msg.OP_MOVE, "deadline_s": int(time.time()) + 120, "phase": phase}
            seq[0] += 1
            return seal_command(key, iv, "ops-1", seq[0], SITE, TRANSFORMER, node, fields)

        pub = _client(broker, "operator")
        topic = "phasekit/%s/%s/command" % (SITE, TRANSFORMER)
        first = genuine(1, msg.PHASE_B)
        pub.publish(topic, first, qos=1).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        # The flood comes from a process of its own (as from another host): its TLS work must not
        # slow the simulated nodes in this process. Last, a genuine command behind the flood in the
        # broker's queue for the Pi (one publisher, one topic, QoS 1: in order): when it moves its
        # node, the Pi has been through the whole flood, and the gate still works.
        (work / "replay.bin").write_bytes(first)
        (work / "last.bin").write_bytes(genuine(2, msg.PHASE_C))
        polls0 = {n.addr: n.polls for n in honest}
        rss: list[float] = []
        say("flooding the command topic with %d messages" % messages)
        t0 = time.monotonic()
        cpu0 = proc_cpu_s(pid)
        flooder = children.start(
            [
                "-m",
                "phasekit.testing.pi_flood",
                broker.host,
                str(broker.port),
                str(broker.tls.ca),
                str(broker.tls.client_cert),
                str(broker.tls.client_key),
                topic,
                str(messages),
                str(oversize_bytes),
                str(work / "replay.bin"),
                str(work / "last.bin"),
            ],
            open(work / "flooder.log", "w"),
        )
        while flooder.poll() is None and time.monotonic() - t0 < 900:
            time.sleep(0.25)
            rss.append(proc_status(pid)["VmRSS"])
        if flooder.returncode != 0:
            raise RuntimeError("the flooder failed: %s" % (work / "flooder.log").read_text()[-2000:])
        res["publish_s"] = time.monotonic() - t0
        while time.monotonic() - t0 < 900 and honest[1].phase != msg.PHASE_C:
            time.sleep(0.25)
            rss.append(proc_status(pid)["VmRSS"])
        res["flood_s"] = time.monotonic() - t0
        res["gateway_cpu_pct_flood"] = 100.0 * (proc_cpu_s(pid) - cpu0) / res["flood_s"]
        res["genuine_after_flood_moved"] = honest[1].phase == msg.PHASE_C
        res["polls_during_flood"] = min(n.polls - polls0[n.addr] for n in honest)
        res["polls_expected"] = int(res["flood_s"] / _POLL_S)
        time.sleep(1.0)
        res["genuine_before_flood_moved"] = honest[0].phase == msg.PHASE_B
        st = proc_status(pid)
        rss.append(st["VmRSS"])
        res["rss_max_mb"] = max(rss)
        res["rss_hwm_mb"] = st["VmHWM"]
        sent = {n.addr: n.fresh_sent for n in honest}
        code = gw.stop()
        res["exit_code"] = code
        res["crashes"] = len(gw.crashes)
        log = gw.log_text()
        dl = phasekit_popen("gateway", "dead-letters", str(cfg), "--limit", "5", text=True)
        out, _ = dl.communicate(timeout=60)
        res["dead_letters_listed"] = dl.returncode == 0 and "dead letters" in out
    buffered: dict[int, set[int]] = {}
    for addr, _gen, s in buffered_readings(log):
        buffered.setdefault(addr, set()).add(s)
    res["honest_readings_sent"] = sum(sent.values())
    # A reply in flight when the gateway stopped is the only one that may be missing (one per node).
    res["honest_readings_buffered"] = sum(len(buffered.get(a, ())) for a in sent)
    res["honest_readings_missing"] = sum(max(0, sent[a] - len(buffered.get(a, ()))) for a in sent)
    stopped = re.findall(r"gateway stopped: controller (.*); operator gate (.*); dead letters (.*)", log)
    parts = stopped[-1] if stopped else ("", "", "")
    res["controller"], res["refused"], res["dead_letters"] = (_parse_counts(p) for p in parts)
    unread = re.findall(r"command of \d+ bytes refused unread \((\d+) so far\)", log)
    res["oversize_seen_by_pi"] = max((int(n) for n in unread), default=0)
    res["thief_polls"] = thief.polls
    res["noise_polls"] = noisy.polls
    res["tracebacks"] = log.count("Traceback")
    res["missing_per_node"] = {a: sent[a] - len(buffered.get(a, ())) for a in sent}
    res.update(_relay_flood(work, relay_frames))
    (work / "pi-flood.json").write_text(json.dumps(res, sort_keys=True, indent=1))
    return res


def _flood_main(argv: list[str]) -> int:
    """``python -m phasekit.testing.pi_flood HOST PORT CA CERT KEY TOPIC N OVERSIZE REPLAY_FILE LAST_FILE``."""
    host, port, ca, cert, key, topic, n, oversize, replay_file, last_file = argv
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    c.max_inflight_messages_set(1000)
    c.connect(host, int(port))
    c.loop_start()
    payloads = _flood_payloads(int(n), int(oversize), Path(replay_file).read_bytes())
    payloads.append(Path(last_file).read_bytes())
    infos = [c.publish(topic, p, qos=1) for p in payloads]
    for info in infos[-50:]:
        info.wait_for_publish(300)
    c.loop_stop()
    c.disconnect()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_flood_main(sys.argv[1:]))
