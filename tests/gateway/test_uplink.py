"""The MQTT uplink against a real Mosquitto with mutual TLS: batches, order, ack-delete, outage, cadence.

PHASEKIT_OUTAGE_S sets how long the broker stays down in the outage test (1 s
by default, to keep the suite quick; issue 4's fault run is 600).
"""

import asyncio
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from phasecore import msg
from phasegate.store import Store
from phasegate.uplink import STATUS_ONLINE, Uplink, UplinkConfig
from phasekit.testing.broker import LocalBroker
from phasekit.testing.netproxy import TcpProxy
from phaseuplink import records
from phaseuplink.topics import topic_for

T0 = 1767225600  # 2026-01-01T00:00:00Z, a multiple of every period used here
OUTAGE_S = float(os.environ.get("PHASEKIT_OUTAGE_S", "1.0"))


class Collector:
    """A persistent-session QoS 1 subscriber that decodes every batch it receives."""

    def __init__(self, broker, topic="phasekit/#"):
        self.batches = []  # (kind, records.Batch)
        self.status = []
        self.ready = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="collector", clean_session=False)
        c.tls_set(ca_certs=str(broker.tls.ca), certfile=str(broker.tls.client_cert), keyfile=str(broker.tls.client_key))
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.ready.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "collector did not subscribe"

    def _on_message(self, client, userdata, m):
        kind = m.topic.rsplit("/", 1)[1]
        with self.lock:
            if kind == "status":
                self.status.append(m.payload)
            else:
                self.batches.append((kind, records.decode_batch(kind, m.payload)))

    def records(self, kind):
        with self.lock:
            return [r for k, b in self.batches if k == kind for r in b.records]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def config_for(broker, port=None, **kw):
    kw.setdefault("mode", "raw")
    kw.setdefault("raw_batch_s", 0.001)
    return UplinkConfig(
        broker.host,
        port or broker.port,
        site="s1",
        transformer="t1",
        ca=broker.tls.ca,
        cert=broker.tls.client_cert,
        key=broker.tls.client_key,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        **kw,
    )


def reading_items(start, n, nodes=20, t0=None):
    """n readings, round-robin over ``nodes`` nodes; node k's i-th reading has seq 1000 + i.

    Times start at ``t0``, by default a day ago by the real clock (what the uplink uses unless told otherwise).
    """
    if t0 is None:
        t0 = int(time.time()) - 86400
    out = []
    for i in range(start, start + n):
        addr, k = 1 + i % nodes, i // nodes
        values = [2300 + k % 50, 1000 + i % 7000, 2200, 50000 + k, 500, 95, addr % 3, 0]
        out.append(records.reading(addr, 1000 + k, t0 + 60 * k, values))
    return out


async def wait_for(predicate, timeout):
    """True as soon as ``predicate()`` is; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


async def running(uplink, body):
    """Run ``uplink`` while ``await body()`` runs; stop it cleanly after."""
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await task


def test_buffer_drains_in_order_in_batches_and_rows_are_deleted_when_acked(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        items = reading_items(0, 2000)
        store.put_many(items)
        uplink = Uplink(store, config_for(broker, batch_max_records=300, heartbeat_s=10**6))

        async def body():
            assert await wait_for(lambda: len(store) == 0 and len(col.records("reading")) >= 2000, 20)

        asyncio.run(running(uplink, body))
        col.close()
    got = [(r.src, r.seq) for r in col.records("reading")]
    assert got == [(it[3], it[4]) for it in items]  # every record once, in buffer order
    assert uplink.stats["batches"] == 7 + 1 and uplink.stats["acked"] == 2000 + 1  # + the Pi's first heartbeat
    assert STATUS_ONLINE in col.status
    assert col.records("heartbeat")[0].body["fw"]


def test_rows_stay_in_the_buffer_until_the_puback_arrives(tmp_path):
    with (
        LocalBroker(tmp_path / "broker") as broker,
        TcpProxy(broker.host, broker.port) as proxy,
        Store(tmp_path / "buf.db") as store,
    ):
        col = Collector(broker)
        uplink = Uplink(store, config_for(broker, port=proxy.port, heartbeat_s=10**6))

        async def body():
            assert await wait_for(lambda: uplink.connected and len(store) == 0, 10)
            proxy.hold_down()  # the broker's PUBACKs stop at the proxy
            store.put_many(reading_items(0, 500))
            uplink.wake()
            # The broker has the batch (the collector got it) but the Pi has no PUBACK: nothing deleted.
            assert await wait_for(lambda: len(col.records("reading")) == 500, 10)
            await asyncio.sleep(0.5)
            assert len(store) == 500 and uplink.inflight == 1
            proxy.release_down()
            assert await wait_for(lambda: len(store) == 0, 10)

        asyncio.run(running(uplink, body))
        col.close()


def test_broker_outage_loses_nothing_and_backlog_drains_after_restart(tmp_path):
    with LocalBroker(tmp_path / "broker", persistence=True) as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        uplink = Uplink(store, config_for(broker, batch_max_records=100, max_inflight=4, heartbeat_s=10**6))

        async def body():
            store.put_many(reading_items(0, 1500))
            uplink.wake()
            assert await wait_for(lambda: uplink.stats["acked"] >= 300, 10)
            broker.stop()  # outage in the middle of the drain
            store.put_many(reading_items(1500, 1500))  # readings keep arriving while the broker is away
            await asyncio.sleep(OUTAGE_S)
            assert len(store) > 0 and not uplink.connected
            broker.start()
            assert await wait_for(
                lambda: len(store) == 0 and len({(r.src, r.seq) for r in col.records("reading")}) >= 3000, 15
            ), "rows left in the buffer after the drain"

        asyncio.run(running(uplink, body))
        col.close()
    received = {(r.src, r.seq) for r in col.records("reading")}
    assert received == {(it[3], it[4]) for it in reading_items(0, 3000)}
    assert uplink.stats["disconnects"] >= 1


def test_raw_mode_holds_readings_for_raw_batch_s_and_sends_events_at_once(tmp_path):
    clock = Clock(T0 + 5)
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        uplink = Uplink(store, config_for(broker, raw_batch_s=300, heartbeat_s=3600), clock=clock)

        async def body():
            assert await wait_for(lambda: uplink.connected and len(col.records("heartbeat")) == 1, 10)
            store.put_many(reading_items(0, 100, nodes=100, t0=T0))
            store.put_many([records.event(T0 + 6, {"code": 37, "value": 150, "severity": 2})])
            uplink.wake()
            assert await wait_for(lambda: len(col.records("alarm")) == 1, 5)
            await asyncio.sleep(0.3)
            assert col.records("reading") == [] and len(store) == 100
            clock.t = T0 + 299  # the oldest reading has waited 299 s: not yet
            uplink.wake()
            await asyncio.sleep(0.3)
            assert col.records("reading") == []
            clock.t = T0 + 300
            uplink.wake()
            assert await wait_for(lambda: len(col.records("reading")) == 100 and len(store) == 0, 5)
            clock.t = T0 + 3605  # an hour on: the next heartbeat
            uplink.wake()
            assert await wait_for(lambda: len(col.records("heartbeat")) == 2, 5)

        asyncio.run(running(uplink, body))
        col.close()
    assert [k for k, _ in col.batches] == ["heartbeat", "alarm", "reading", "heartbeat"]
    hb = col.records("heartbeat")[1].body
    assert hb["uptime_s"] == 3600 and hb["mode"] == 1 and hb["records"] == 1 + 1 + 100


def test_interval_mode_sends_one_aggregate_per_node_and_period_and_never_a_raw_reading(tmp_path):
    clock = Clock(T0)
    period = 900
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        cfg = config_for(broker, mode="interval", period_s=period, grace_s=30, heartbeat_s=10**6)
        uplink = Uplink(store, cfg, clock=clock)
        # 3 nodes, 30 minutes of 1-minute readings: two full periods; node 3 moves A -> B at minute 20.
        items = []
        for minute in range(30):
            for addr in (1, 2, 3):
                phase = (1 if minute >= 20 else 0) if addr == 3 else addr - 1
                values = [2300 + minute, 1000 * addr + minute, 2000, 10000 * addr + 2 * minute, 500, 95, phase, 0]
                items.append(records.reading(addr, 100 + minute, T0 + 60 * minute + 10, values))

        late = items.pop(14 * 3)  # node 1's reading of minute 14 comes after its period closed

        async def body():
            assert await wait_for(lambda: uplink.connected, 10)
            store.put_many(items[:44])  # the first 15 minutes
            clock.t = T0 + period + 29  # period 1 ended 29 s ago: within the grace, still open
            uplink.wake()
            await asyncio.sleep(0.3)
            assert store.counts() == {"reading": 44}
            clock.t = T0 + period + 30
            uplink.wake()
            assert await wait_for(lambda: len(col.records("interval")) == 3, 5)
            store.put_many([late] + items[44:])
            clock.t = T0 + 2 * period + 30
            uplink.wake()
            assert await wait_for(lambda: len(col.records("interval")) == 6 and len(store) == 0, 5)

        asyncio.run(running(uplink, body))
        col.close()
    assert col.records("reading") == []
    aggs = {(r.src, r.t_s): r for r in col.records("interval")}
    first, second = aggs[(2, T0)], aggs[(2, T0 + period)]
    assert (first.seq, second.seq) == (T0, T0 + period)  # an aggregate's seq is its period start
    assert first.body["n"] == 15 and first.body["i_mean_mA"] == 2007 and first.body["i_max_mA"] == 2014
    assert (first.body["v_min_dV"], first.body["v_max_dV"]) == (2300, 2314)
    # Energy continues across the boundary: 2 Wh a minute, 28 within period 1 and 30 from its last reading on.
    assert (first.body["de_Wh"], second.body["de_Wh"]) == (28, 30)
    # The late reading joined node 1's next period: counted once, its energy not lost.
    one, two = aggs[(1, T0)].body, aggs[(1, T0 + period)].body
    assert (one["n"], two["n"], two["seq_span"]) == (14, 16, 15)
    assert (one["de_Wh"], two["de_Wh"]) == (26, 32)
    moved = aggs[(3, T0 + period)].body
    assert (moved["phase_first"], moved["phase"]) == (msg.PHASE_A, msg.PHASE_B)
    assert uplink.stats["aggregated"] == 90 and uplink.stats["intervals"] == 6


def test_config_checks_and_topics():
    with pytest.raises(ValueError, match="TLS needs a CA"):
        UplinkConfig("127.0.0.1", 8883)
    with pytest.raises(ValueError, match="mode 'fast'"):
        UplinkConfig("h", tls=False, mode="fast")
    cfg = UplinkConfig("h", tls=False, site="feeder-12", transformer="tx-0457")
    assert cfg.topic("interval") == "phasekit/feeder-12/tx-0457/interval"
    assert cfg.status_topic == topic_for("feeder-12", "tx-0457", "status")
    assert cfg.client_id == "phasegate-feeder-12-tx-0457"
    assert cfg.delay_s("reading") is None and cfg.delay_s("event") == 0
    with pytest.raises(ValueError, match="contains"):
        UplinkConfig("h", tls=False, site="a/b")


def test_config_from_the_gateway_file(tmp_path):
    from phasegate.config import load

    p = tmp_path / "gw.toml"
    p.write_text(
        '[site]\nid = "s9"\ntransformer = "t9"\nkey_file = "k"\n[bus]\nport = "/dev/null"\nnodes = [1]\n'
        '[store]\npath = "b.db"\n[uplink]\nhost = "broker"\nca = "tls/ca.crt"\nmode = "raw"\n'
        "raw_batch_s = 120\n"
    )
    cfg = UplinkConfig.from_config(load(p))
    assert (cfg.mode, cfg.raw_batch_s, cfg.period_s, cfg.keepalive_s, cfg.heartbeat_s) == ("raw", 120, 900, 1200, 3600)
    assert cfg.ca == str(tmp_path / "tls" / "ca.crt") and cfg.cert is None
    assert cfg.topic("reading") == "phasekit/s9/t9/reading"


AGGREGATOR = r"""
import sys
from phaseuplink import records
from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig

class Clock:
    t = 1767225600
store = Store(sys.argv[1])
uplink = Uplink(store, UplinkConfig("127.0.0.1", tls=False, mode="interval", period_s=300, heartbeat_s=10**9),
                clock=lambda: Clock.t)
minute = int(sys.argv[2])
while True:
    Clock.t = 1767225600 + 60 * minute + 1
    store.put_many([records.reading(a, 1000 + minute, Clock.t, [2300, 1000, 2000, 5000 + 2 * minute, 500, 95, 0, 0])
                    for a in range(1, 21)])
    minute += 1
    print(minute, flush=True)
    uplink.step()  # no broker: aggregation only
"""


def test_aggregation_killed_at_any_point_counts_every_reading_exactly_once(tmp_path):
    """SIGKILL while readings are being replaced by aggregates: each reading is in the buffer or in one aggregate."""
    import random
    import signal
    import subprocess
    import sys

    db = tmp_path / "buf.db"
    minute = 0
    rng = random.Random(4)
    for _round in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", AGGREGATOR, str(db), str(minute)], stdout=subprocess.PIPE, text=True
        )
        printed = [minute]

        def read(out=proc.stdout, printed=printed):
            for line in out:
                printed.append(int(line))

        # Read on a thread, kill after a random time: the kill must not be in step with the output.
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 20
        while len(printed) < 2 and time.monotonic() < deadline:  # started (slow on a loaded machine)
            time.sleep(0.01)
        time.sleep(0.1 + rng.random() * 0.4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
        printed = printed[-1]
        with Store(db) as store:
            rows = [r for r in store.pending(limit=10**6) if r.kind in ("reading", "interval")]
        counted, aggregated, energy = {}, {}, {}
        for r in rows:
            if r.kind == "reading":
                counted[r.sender] = counted.get(r.sender, 0) + 1
            else:
                body = records.decode_body("interval", r.sender, cbor_loads(r.payload))
                counted[r.sender] = counted.get(r.sender, 0) + body["n"]
                aggregated[r.sender] = aggregated.get(r.sender, 0) + body["n"]
                energy[r.sender] = energy.get(r.sender, 0) + body["de_Wh"]
        assert len(set(counted.values())) == 1, counted  # every node the same count: none lost, none twice
        minute = counted[1]
        assert printed <= minute <= printed + 1  # the put after the last print may have committed
        # Aggregates chain their energy (2 Wh a minute): no gap at a boundary, none counted twice.
        assert all(energy[a] == 2 * (aggregated[a] - 1) for a in energy), (energy, aggregated)
    assert minute > 10


def cbor_loads(b):
    import cbor2

    return cbor2.loads(b)


def test_aggregation_runs_without_a_broker_and_counts_a_row_it_cannot_read(tmp_path, caplog):
    clock = Clock(T0 + 900 + 30)
    with Store(tmp_path / "buf.db") as store:
        store.put_many(reading_items(0, 30, nodes=10, t0=T0))  # 3 readings of 10 nodes, all in the period at T0
        store.put_many([("reading", "reading", b"\xff", 5, 99, T0 + 5)])  # not a reading
        uplink = Uplink(store, UplinkConfig("127.0.0.1", tls=False, mode="interval", period_s=900), clock=clock)
        uplink.step()  # no run(), no broker: the Pi aggregates on its own
        assert store.counts() == {"heartbeat": 1, "interval": 10}
        assert store.dropped() == {"reading": 1} and "row 31 cannot be aggregated" in caplog.text
        agg = records.decode_batch("interval", records.encode_batch(store.pending(kind="interval"))[0])
        assert {r.body["n"] for r in agg.records} == {3} and {r.t_s for r in agg.records} == {T0}


def test_a_buffered_reading_without_a_node_sender_is_dropped_and_the_uplink_goes_on(tmp_path, caplog):
    # A valid reading body under a bytes sender (a relayed frame's row) or without a seq raised
    # RecordError inside a try that caught only PhasecoreError: the uplink task ended for good.
    clock = Clock(T0 + 900 + 30)
    with Store(tmp_path / "buf.db") as store:
        store.put_many(reading_items(0, 30, nodes=10, t0=T0))
        body = msg.encode_reading(2300, 1000, 2300, 5, 500, 95, 0, 0)
        store.put_many([("reading", "reading", body, b"s/t/7", 99, T0 + 5), ("reading", "reading", body, 5, 1, T0 + 6)])
        store._db.execute("UPDATE outbox SET seq = NULL WHERE payload = ? AND sender = 5 AND seq = 1", (body,))
        store._db.commit()
        uplink = Uplink(store, UplinkConfig("127.0.0.1", tls=False, mode="interval", period_s=900), clock=clock)
        uplink.step()
        assert store.counts() == {"heartbeat": 1, "interval": 10}
        assert store.dropped() == {"reading": 2} and "cannot be aggregated" in caplog.text
        clock.t += 900
        store.put_many(reading_items(30, 40, nodes=10, t0=T0 + 900))
        uplink.step()  # still running: the next period is aggregated
        assert store.counts()["interval"] == 20


def test_interval_mode_sends_each_nodes_latest_heartbeat_every_node_heartbeat_s(tmp_path):
    clock = Clock(T0 + 1)
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        col = Collector(broker)
        cfg = config_for(broker, mode="interval", heartbeat_s=3600, node_heartbeat_s=21600)
        uplink = Uplink(store, cfg, clock=clock)

        def answers(k):  # 20 nodes answer the Pi's heartbeat round k
            return [
                records.heartbeat(clock.t, {"uptime_s": 300 * k, "fw": "0.1.0", "rx": k}, a, 10 + k)
                for a in range(1, 21)
            ]

        async def body():
            assert await wait_for(lambda: len(col.records("heartbeat")) == 1, 10)  # the Pi's, at once
            store.put_many(answers(0))
            uplink.wake()
            await asyncio.sleep(0.3)
            assert col.records("node_heartbeat") == []  # the first go one period (900 s) later
            for k in range(1, 76):  # six and a quarter hours of 5-minute rounds
                clock.t = T0 + 1 + 300 * k
                store.put_many(answers(k))
                uplink.step()
                await asyncio.sleep(0)
                if k == 3:
                    assert await wait_for(lambda: len(col.records("node_heartbeat")) == 20, 5)
                if k == 74:
                    assert len(col.records("node_heartbeat")) == 20  # then every node_heartbeat_s (6 h)
            assert await wait_for(lambda: len(col.records("node_heartbeat")) == 40, 5)
            await asyncio.sleep(0.3)
            assert len(col.records("heartbeat")) == 6 + 1  # the Pi's own, hourly, never held back

        asyncio.run(running(uplink, body))
        col.close()
    sent = col.records("node_heartbeat")
    assert {r.src for r in sent} == set(range(1, 21))
    assert sorted({r.body["rx"] for r in sent}) == [3, 75]  # each node's latest, twice
    assert uplink.stats["superseded"] == 20 * 76 - 40
