"""The MQTT uplink against a real Mosquitto with mutual TLS: order, ack-delete, outage."""

import asyncio
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from phasegate.store import Store
from phasegate.uplink import STATUS_ONLINE, Uplink, UplinkConfig, topic_for
from phasekit.broker import LocalBroker


class Collector:
    """A persistent-session QoS 1 subscriber that records every payload it receives."""

    def __init__(self, broker, topic="phasekit/#"):
        self.payloads = []
        self.status = []
        self.ready = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="collector", clean_session=False)
        c.tls_set(ca_certs=str(broker.tls.ca), certfile=str(broker.tls.client_cert), keyfile=str(broker.tls.client_key))
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topic, qos=1), self.ready.set())
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "collector did not connect"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            if msg.topic.endswith("/status"):
                self.status.append(msg.payload)
            else:
                self.payloads.append(msg.payload)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def config_for(broker, **kw):
    return UplinkConfig(broker.host, broker.port, client_id="phasegate-t1", ca=broker.tls.ca,
                        cert=broker.tls.client_cert, key=broker.tls.client_key,
                        status_topic=topic_for("s1", "t1", "status"), reconnect_min_s=0.1, reconnect_max_s=0.5, **kw)


async def run_until(uplink, predicate, timeout):
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return predicate()


def fill(store, start, n):
    store.put_many([("reading", topic_for("s1", "t1", "reading", "n7"), b"seq:%d" % i, b"n7", i, None)
                    for i in range(start, start + n)])


def test_buffer_drains_in_order_and_rows_are_deleted_only_when_acked(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        fill(store, 0, 2000)
        uplink = Uplink(store, config_for(broker))
        assert asyncio.run(run_until(uplink, lambda: len(store) == 0 and len(col.payloads) >= 2000, 30))
        col.close()
    assert col.payloads == [b"seq:%d" % i for i in range(2000)]
    assert uplink.stats["acked"] == 2000
    assert STATUS_ONLINE in col.status


def test_tls_without_ca_is_refused_in_config():
    with pytest.raises(ValueError, match="TLS needs a CA"):
        UplinkConfig("127.0.0.1", 8883)


def test_broker_outage_loses_nothing_and_backlog_drains_after_restart(tmp_path):
    with LocalBroker(tmp_path / "broker", persistence=True) as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        uplink = Uplink(store, config_for(broker, max_inflight=100))

        async def scenario():
            stop = asyncio.Event()
            task = asyncio.create_task(uplink.run(stop))
            fill(store, 0, 1500)
            uplink.wake()
            while uplink.stats["acked"] < 300:
                await asyncio.sleep(0.01)
            broker.stop()  # outage in the middle of the drain
            fill(store, 1500, 1500)  # readings keep arriving while the broker is away
            await asyncio.sleep(1.5)
            assert len(store) > 0 and not uplink.connected
            broker.start()
            deadline = time.monotonic() + 40
            while (len(store) or len(set(col.payloads)) < 3000) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await task
            assert len(store) == 0, "rows left in the buffer after the drain"

        asyncio.run(scenario())
        col.close()
    received = set(col.payloads)
    assert received == {b"seq:%d" % i for i in range(3000)}, "missing %d" % (3000 - len(received))
    assert uplink.stats["disconnects"] >= 1
