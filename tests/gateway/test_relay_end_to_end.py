"""LoRa relay end to end: node -> LoRa gateway -> broker -> transformer Pi -> broker -> server (issue 13, item 8).

Every hop is the real thing: a sealed node (``phasekit.sim.bus_nodes.SimNode``
behind ``SimLoraNode``, class A) on a simulated channel that processes share
(``phasekit.sim.lora_hub``); a ``phasekit gateway run`` process in
``[lora_gateway]`` mode on that channel, holding no keys; Mosquitto with mutual
TLS; a second ``phasekit gateway run`` process, the transformer Pi, whose only
nodes come through the relay (``[relay]``); and ``python -m phaseserver``.
The Pi opens the relayed frames with its keys and replay windows; what it
accepted reaches the server as the Pi's own records. A forged frame and a
replayed one on the air are relayed (the gateway cannot tell) and refused
by the Pi; nothing of the gateway's relayed frames reaches the server.
"""

import asyncio
import json
import time

import pytest

from phasecore import frame
from phasegate.lora.channel import SimChannel
from phasekit.sim.bus_nodes import SimNode
from phasekit.sim.lora_hub import LoraHub
from phasekit.sim.lora_nodes import SimLoraNode
from phasekit.testing.broker import LocalBroker, mosquitto_binary
from phasekit.testing.gateway import GatewayProc, query_ro, start_server, uplink_table, write_config
from phasekit.testing.processes import Children

SITE_KEY = bytes(range(32))  # synthetic
NODE = 5


def _have_mosquitto():
    try:
        mosquitto_binary()
        return True
    except Exception:  # noqa: BLE001 - any reason: skip with it
        return False


pytestmark = pytest.mark.skipif(not _have_mosquitto(), reason="needs mosquitto (scripts/bootstrap installs it)")


def test_relayed_frames_reach_the_owning_pi_and_the_server_as_its_records(tmp_path):
    sock = tmp_path / "air.sock"
    gw_dir, pi_dir, srv_dir = tmp_path / "gw", tmp_path / "pi", tmp_path / "srv"
    for d in (gw_dir, pi_dir, srv_dir):
        d.mkdir()

    with LocalBroker(tmp_path / "broker") as broker, Children() as children:
        gw_cfg = write_config(
            gw_dir,
            b"\x00" * 32,  # the relay needs no key; the file is only what write_config always writes
            '[site]\nid = "s1"\ntransformer = "gw-01"\n\n'
            '[store]\npath = "gw.db"\n\n'
            '[lora]\ndriver = "sim"\nsim_socket = "%s"\n\n'
            % sock
            + uplink_table(broker, mode="raw", raw_batch_s=0.5)
            + '\n[lora_gateway]\nid = "gw-01"\n\n'
            '[[lora_gateway.routes]]\nsite = "s1"\ntransformer = "tx-1"\nnodes = [%d]\n' % NODE,
        )
        pi_cfg = write_config(
            pi_dir,
            SITE_KEY,
            '[site]\nid = "s1"\ntransformer = "tx-1"\nkey_file = "site.key"\n\n'
            "[relay]\nnodes = [%d]\n\n"
            % NODE
            + '[balancer]\nperiod_s = 2\n\n[store]\npath = "pi.db"\n\n'
            + uplink_table(broker, mode="raw", raw_batch_s=0.5),
        )
        server = start_server(children, broker, srv_dir)

        async def main():
            channel = SimChannel(sf=7)
            async with LoraHub(channel, sock) as hub:
                node = SimNode(NODE, SITE_KEY)
                lora_node = SimLoraNode(node, channel.radio("n%d" % NODE), scheme="class_a", interval_s=1.0)
                attacker = channel.radio("attacker")
                gw = GatewayProc(children, gw_cfg, gw_dir / "gw.log", level="info")
                pi = GatewayProc(children, pi_cfg, pi_dir / "pi.log", level="info")
                pi.start()
                gw.start()
                stop = asyncio.Event()
                deadline = time.monotonic() + 30
                while "gw-01" not in hub.clients and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert "gw-01" in hub.clients, "the gateway process joined the channel"
                run = asyncio.ensure_future(lora_node.run(stop))
                # Let genuine readings flow (the attacker's radio hears them), then it forges one and
                # replays one it heard.
                await asyncio.sleep(3.0)
                heard = []
                while (p := attacker.recv_nowait()) is not None:
                    heard.append(p[0])
                assert heard, "the attacker heard the node"
                forged = bytearray(node.reading_payload())
                forged[-3] ^= 0xFF
                await attacker.send(frame.encode(frame.MASTER, NODE, bytes(forged), frame.LORA_MAX_PAYLOAD))
                await asyncio.sleep(1.5)
                await attacker.send(heard[0])
                got = []
                while time.monotonic() < deadline + 20:
                    got = query_ro(
                        srv_dir / "server.db",
                        "SELECT src, seq FROM reading WHERE site = 's1' AND transformer = 'tx-1'",
                    )
                    if len(got) >= 8:
                        break
                    await asyncio.sleep(0.5)
                stop.set()
                await run
                pi_code = pi.stop()
                gw_code = gw.stop()
                return got, lora_node.uplinks, pi_code, gw_code

        got, uplinks, pi_code, gw_code = asyncio.run(main())
        children.end(server)

    pi_log = (pi_dir / "pi.log").read_text()
    gw_log = (gw_dir / "gw.log").read_text()
    assert pi_code == 0 and gw_code == 0, pi_log[-2000:] + gw_log[-2000:]
    # The node's readings, opened by the Pi that owns it, stored by the server as that Pi's records.
    assert len(got) >= 8, (got, pi_log[-3000:], gw_log[-3000:])
    assert {src for src, _ in got} == {NODE}
    assert len({seq for _, seq in got}) == len(got), "each reading once"
    assert len(got) <= uplinks
    # The forged frame was relayed (the gateway cannot tell) and refused by the Pi; the replayed one was
    # dropped as heard before (by the gateway or the Pi's relay link) or refused: stored once either way.
    assert "bad_tag" in pi_log, pi_log[-3000:]
    stored = query_ro(
        srv_dir / "server.db",
        "SELECT transformer, kind FROM record UNION ALL SELECT transformer, 'reading' FROM reading",
    )
    assert stored and all(t == "tx-1" or k == "heartbeat" for t, k in stored), stored
    refused = query_ro(srv_dir / "server.db", "SELECT * FROM ingest_counter WHERE name LIKE 'invalid%' AND value > 0")
    assert refused == [], json.dumps(refused)  # nothing refused by the server
