"""LoRa gateway mode: routing, de-duplication, store-and-forward to a real Mosquitto, and no forgery.

The gateway holds no keys. The end-to-end test plays two transformer sites'
nodes on the simulated channel, an attacker radio that alters and replays
frames, the gateway relaying to Mosquitto over mutual TLS, and the receiving
Pi (a subscriber with the site keys and ``phasegate.registry``): every genuine
reading opens exactly once; every altered or replayed frame is forwarded by
the gateway (it cannot tell) and refused by the receiver.
"""

import asyncio
import os
import threading
import time
import zlib

import paho.mqtt.client as mqtt
import pytest

from phasecore import cbor, frame, msg, seal
from phasegate import config
from phasegate.lora.channel import SimChannel
from phasegate.lora.radio import SimChannelRadio
from phasegate.lora_gateway import LoraGateway, Route, relay_sender, relay_topic
from phasegate.registry import Registry
from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig
from phasekit.sim.bus_nodes import SimNode
from phasekit.testing.broker import LocalBroker

SITE_A = bytes(range(32))  # synthetic test keys, one per site
SITE_B = bytes(range(1, 33))
ROUTES = [Route("feeder-12", "tx-1", [1, 2, 3], pi_dst=200), Route("feeder-13", "tx-2", [10, 11])]


def wire(node):
    return frame.encode(frame.MASTER, node.addr, node.reading_payload(), frame.LORA_MAX_PAYLOAD)


def gateway(tmp_path, clock=None, **kw):
    store = Store(tmp_path / "gw.db")
    return LoraGateway(None, store, ROUTES, "gw-01", clock=clock or (lambda: 1000.0), **kw), store


def test_frames_are_routed_by_address_and_stored_verbatim(tmp_path):
    gw, store = gateway(tmp_path)
    a, b = SimNode(2, SITE_A), SimNode(10, SITE_B)
    wa, wb = wire(a), wire(b)
    assert gw.handle_packet(wa) == 1 and gw.handle_packet(wb) == 1
    rows = store.pending()
    # Each to its transformer Pi's relay topic, named for the gateway (only that Pi may read it: phasekit.pki).
    assert [r.topic for r in rows] == ["phasekit/feeder-12/tx-1/relay/gw-01", "phasekit/feeder-13/tx-2/relay/gw-01"]
    assert [cbor.loads(r.payload) for r in rows] == [wa, wb]  # byte for byte, CRC included
    assert [r.kind for r in rows] == ["reading", "reading"]
    assert rows[0].sender == relay_sender("feeder-12", "tx-1", 2) == b"feeder-12/tx-1/2" and rows[0].seq == 0


def test_pi_frames_route_by_pi_dst_and_downlinks_are_not_relayed(tmp_path):
    gw, store = gateway(tmp_path)
    env = seal.seal_raw(msg.SUMMARY, b"\xa0", SimNode(1, SITE_A).sender)  # any sealed envelope will do
    assert gw.handle_packet(frame.encode(200, frame.MASTER, env)) == 1
    assert store.pending()[0].topic == relay_topic("feeder-12", "tx-1", "gw-01")
    assert store.pending()[0].kind == "summary"
    assert gw.handle_packet(frame.encode(2, frame.MASTER, env)) == 0  # Pi -> its node 2
    assert gw.counters["downlinks"] == 1


def test_unrouted_malformed_and_noise_are_counted_and_dropped(tmp_path, caplog):
    gw, store = gateway(tmp_path)
    stranger = SimNode(77, SITE_A)
    assert gw.handle_packet(wire(stranger)) == 0
    assert gw.handle_packet(frame.encode(frame.MASTER, 3, b"\xff\x01\x02")) == 0
    assert gw.handle_packet(b"\xa5\xff\x13\x37 just noise") == 0
    assert gw.handle_packet(frame.encode(5, 3, SimNode(3, SITE_A).reading_payload())) == 0  # node to node
    c = gw.counters
    assert (c["unrouted"], c["malformed"], c["forwarded"]) == (2, 1, 0)
    assert c["noise_bytes"] > 0 and gw.unrouted[(0, 77)] == 1
    assert len(store) == 0
    assert "matches no route" in caplog.text


def test_same_frame_heard_twice_is_forwarded_once_until_it_expires(tmp_path):
    now = [1000.0]
    gw, store = gateway(tmp_path, clock=lambda: now[0], dedup_s=60)
    w = wire(SimNode(1, SITE_A))
    assert gw.handle_packet(w) == 1
    assert gw.handle_packet(w) == 0 and gw.counters["duplicates"] == 1
    now[0] += 61
    assert gw.handle_packet(w) == 1  # outside the window: forwarded; the receiver's replay window refuses it
    assert len(store) == 2


def test_forged_frame_with_a_genuine_sequence_number_does_not_hide_the_genuine_one(tmp_path):
    gw, store = gateway(tmp_path)
    node = SimNode(1, SITE_A)
    genuine = node.reading_payload()
    forged = bytearray(genuine)
    forged[-3] ^= 0xFF  # same HDR and PIV, different ciphertext/tag
    assert gw.handle_packet(frame.encode(0, 1, bytes(forged))) == 1
    assert gw.handle_packet(frame.encode(0, 1, genuine)) == 1


def test_dedup_table_is_bounded(tmp_path):
    gw, store = gateway(tmp_path, dedup_max=50)
    node = SimNode(1, SITE_A)
    for _ in range(200):
        gw.handle_packet(wire(node))
    assert len(gw._seen) <= 50 and gw.counters["forwarded"] == 200


def test_gateway_config_builds_routes_store_and_uplink(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text("""
[site]
id = "relay-1"
transformer = "gw-01"
key_file = "unused.key"
[store]
path = "buf.db"
[lora]
driver = "sim"
[uplink]
host = "127.0.0.1"
tls = false
raw_batch_s = 5
[lora_gateway]
id = "gw-01"
dedup_s = 120
[[lora_gateway.routes]]
site = "feeder-12"
transformer = "tx-1"
nodes = [1, 2, 3]
pi_dst = 200
""")
    cfg = config.load(p)
    gw = LoraGateway.from_config(cfg, radio=None)
    assert gw.dedup_s == 120 and gw._by_pi_dst[200].transformer == "tx-1" and sorted(gw._by_node) == [1, 2, 3]
    assert gw.uplink.config.status_topic == "phasekit/relay-1/gw-01/status"
    assert gw.uplink.config.mode == "raw" and gw.uplink.config.raw_batch_s == 5
    assert os.path.exists(tmp_path / "buf.db")
    gw.store.close()
    p.write_text(p.read_text().replace('[lora]\ndriver = "sim"\n', ""))
    with pytest.raises(config.ConfigError, match=r"no node link|needs a \[lora\] table"):
        config.load(p)


class ReceivingPi:
    """The MQTT side with the keys: unpacks the gateway's batches, decodes each relayed frame, opens it."""

    def __init__(self, broker, registries, prefix):
        self.registries = registries  # (site, transformer) -> Registry
        self.opened = []
        self.refused = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="receiving-pi", clean_session=False)
        c.tls_set(ca_certs=str(broker.tls.ca), certfile=str(broker.tls.client_cert), keyfile=str(broker.tls.client_key))
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(prefix, qos=1), self.ready.set())
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, m):
        if m.topic.endswith("/status"):
            return
        data = zlib.decompress(m.payload) if m.payload[:1] == b"\x78" else m.payload
        version, t0, recs = cbor.loads(data)
        for src, _seq, _dt, body in recs:
            if not isinstance(body, bytes):
                continue  # the gateway's own records (its heartbeat)
            site, tx, addr = src.decode().split("/")
            frames = frame.Decoder(frame.LORA_MAX_PAYLOAD).feed(body)
            assert len(frames) == 1 and frames[0].src == int(addr)
            with self.lock:
                got = self.registries[(site, tx)].receive(int(addr), frames[0].payload, time.monotonic())
                (self.opened if got is not None else self.refused).append((site, int(addr), got))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_relay_end_to_end_through_mosquitto_cannot_read_or_forge(tmp_path):
    regs = {
        ("feeder-12", "tx-1"): Registry(SITE_A, [1, 2, 3], tmp_path / "a-seq", tmp_path / "a.json"),
        ("feeder-13", "tx-2"): Registry(SITE_B, [10, 11], tmp_path / "b-seq", tmp_path / "b.json"),
    }
    nodes = [SimNode(a, SITE_A) for a in (1, 2, 3)] + [SimNode(a, SITE_B) for a in (10, 11)]

    async def main(broker):
        ch = SimChannel(sf=7, time_scale=0.02)
        air = {n.addr: ch.radio("n%d" % n.addr) for n in nodes}
        attacker = ch.radio("attacker")
        repeater = ch.radio("repeater")  # a second path: the gateway hears some frames twice
        store = Store(tmp_path / "gw.db")
        up = Uplink(
            store,
            UplinkConfig(
                broker.host,
                broker.port,
                site="relay",
                transformer="gw-01",
                ca=broker.tls.ca,
                cert=broker.tls.client_cert,
                key=broker.tls.client_key,
                mode="raw",
                raw_batch_s=0.2,
                reconnect_min_s=0.1,
                reconnect_max_s=0.5,
            ),
        )
        gw = LoraGateway(SimChannelRadio(ch.radio("gw")), store, ROUTES, "gw-01", uplink=up, dedup_s=0.5)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(gw.run(stop)), asyncio.create_task(up.run(stop))]
        genuine = []
        for _rnd in range(3):
            for n in nodes:
                w = wire(n)
                genuine.append(w)
                await air[n.addr].send(w)
                if n.addr == 2:
                    await repeater.send(w)
        # The attacker alters a genuine frame in flight (and fixes the CRC, which protects nothing).
        f = frame.Decoder(frame.LORA_MAX_PAYLOAD).feed(genuine[0])[0]
        body = bytearray(f.payload)
        body[6] ^= 0x01  # a bit of the ciphertext: another current reading
        await attacker.send(frame.encode(0, f.src, bytes(body), frame.LORA_MAX_PAYLOAD))
        # ...and retransmits an old genuine frame once the gateway's dedup entry has expired.
        await asyncio.sleep(0.6)
        await attacker.send(genuine[6])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(rx.opened) + len(rx.refused) < len(genuine) + 2:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        store.close()
        return genuine, gw.counters

    with LocalBroker(tmp_path / "broker") as broker:
        rx = ReceivingPi(broker, regs, "phasekit/+/+/relay/gw-01")
        genuine, counters = asyncio.run(main(broker))
        rx.close()
    assert len(rx.opened) == len(genuine) == 15
    assert {(site, src) for site, src, _ in rx.opened} == {("feeder-12", a) for a in (1, 2, 3)} | {
        ("feeder-13", a) for a in (10, 11)
    }
    assert all(m.kind == msg.READING for _, _, m in rx.opened)
    assert counters["duplicates"] == 3  # node 2's frames heard again through the repeater
    assert counters["forwarded"] == 17  # 15 genuine + the altered + the replayed: it cannot tell
    assert len(rx.refused) == 2
    reg = regs[("feeder-12", "tx-1")]
    assert reg.nodes[1].counters["bad_tag"] == 1
    assert reg.nodes[2].counters["replay"] + reg.nodes[2].counters["duplicate"] == 1


def test_a_flood_from_one_address_never_pushes_out_other_addresses_or_the_relays_own(tmp_path):
    # The holder of node 1's key (or anyone on the air: the relay cannot tell) floods sealed EVENT
    # frames, whose clear header says "event". The relay weighs them like any frame, per address.
    store = Store(tmp_path / "gw.db", max_rows=60)
    gw = LoraGateway(None, store, ROUTES, "gw-01", clock=lambda: 1000.0)
    store.put_many([("heartbeat", "heartbeat", b"\xa0", 0, None, 1000.0)])  # the relay's own record
    honest = [SimNode(a, SITE_A if a < 10 else SITE_B) for a in (2, 3, 10, 11)]
    for n in honest:
        for _ in range(5):
            assert gw.handle_packet(wire(n)) == 1
    genuine = {(r.sender, r.seq) for r in store.pending(1000)}
    thief = SimNode(1, SITE_A)
    body = msg.encode(msg.EVENT, {"code": 99, "severity": 3, "text": "x" * 40})
    for _ in range(2000):
        env = seal.seal_raw(msg.EVENT, body, thief.sender)
        assert gw.handle_packet(frame.encode(frame.MASTER, 1, env, frame.LORA_MAX_PAYLOAD)) == 1
    kept = {(r.sender, r.seq) for r in store.pending(1000)}
    assert genuine <= kept and len(store) == 60
    assert store.sources()[relay_sender("feeder-12", "tx-1", 1)] == 60 - len(genuine)


def test_a_packet_that_fails_is_dead_lettered_and_the_relay_goes_on(tmp_path):
    async def main():
        ch = SimChannel(sf=7, time_scale=0.01)
        node_radio = ch.radio("n2")
        store = Store(tmp_path / "gw.db")
        gw = LoraGateway(SimChannelRadio(ch.radio("gw")), store, ROUTES, "gw-01")
        stop = asyncio.Event()
        task = asyncio.ensure_future(gw.run(stop))
        # The buffer cannot be written (as on an SD card remounted read-only), so storing fails.
        store._db.execute("PRAGMA query_only = ON")
        node = SimNode(2, SITE_A)
        for _ in range(30):
            await node_radio.send(wire(node))
        await asyncio.sleep(0.5)
        assert not task.done() and gw.counters["failed"] >= 1, (gw.counters, store.dead_counts)
        store._db.execute("PRAGMA query_only = OFF")
        await node_radio.send(wire(node))
        for _ in range(100):
            if gw.counters["forwarded"]:
                break
            await asyncio.sleep(0.02)
        assert gw.counters["forwarded"] >= 1 and not task.done()
        stop.set()
        await task
        store.close()

    asyncio.run(main())
