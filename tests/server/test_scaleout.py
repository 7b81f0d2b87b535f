"""Scale-out: several ingest workers share the uplink; killing one mid-batch loses nothing and stores nothing twice.

Three ``python -m phaseserver run`` processes (fixed client ids w1..w3, MQTT 5
shared subscription ``$share/ingest/phasekit/+/+/#``, persistent sessions)
ingest into one PostgreSQL database while a publisher sends QoS 1 batches of
three transformers through Mosquitto (mutual TLS). Worker w2 is killed with
SIGKILL while batches flow (more than once), and started again under the same
client id: its session gives back what it had not acknowledged. At the end
every record sent is stored exactly once (the stored keys equal the keys sent,
no more, no fewer); the copies the broker delivered again were dropped and
counted as duplicates.
"""

import os
import re
import signal
import threading
import time

from phasekit.testing.batches import encode, readings, topic
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import server_toml, wait_subscribed
from phasekit.testing.processes import Children
from phaseserver import config
from phaseserver.store import open_store
from phaseuplink.tls import mqtt_client
from server_support import wait_until

TRANSFORMERS = ("t1", "t2", "t3")
NODES = 50
MINUTES = 40  # 3 x 50 x 40 = 6,000 readings in 240 batches of 25
BATCH = 25


def publish_all(broker, payloads, started, errors, pace_s=0.004):
    """Publish ``[(topic, payload)]`` at QoS 1 (a Pi's uplink would), wait for every PUBACK; failures to ``errors``."""
    try:
        _publish_all(broker, payloads, started, pace_s)
    except BaseException as e:  # reported to the test's thread
        errors.append(repr(e))


def _publish_all(broker, payloads, started, pace_s):
    client = mqtt_client(
        "pi-publisher", ca=broker.tls.ca, cert=broker.tls.client_cert, key=broker.tls.client_key, clean_session=True
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = []
        for i, (t, p) in enumerate(payloads):
            infos.append(client.publish(t, p, qos=1))
            if i == 20:
                started.set()
            time.sleep(pace_s)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_workers_share_the_uplink_and_a_killed_worker_loses_nothing(tmp_path, pg):
    t0 = int(time.time()) - 2 * 3600
    t0 -= t0 % 60
    payloads, expected = [], {}
    for tx in TRANSFORMERS:
        items = readings(NODES, t0, MINUTES, seed=hash(tx) % 1000)
        expected[tx] = sorted((it[5], it[3], it[4]) for it in items)  # (t_s, src, seq)
        for i in range(0, len(items), BATCH):
            payloads.append((topic("s1", tx, "reading"), encode(items[i : i + BATCH])))
    # Interleave the transformers, as three Pis publishing at once.
    payloads = [p for trio in zip(*[payloads[k::3] for k in range(3)]) for p in trio] or payloads
    dsn = pg.create_database("scaleout_%d" % (os.getpid() % 10000))
    with LocalBroker(tmp_path / "broker") as broker, Children() as children:
        cfgs = {}
        for w in ("w1", "w2", "w3"):
            path = server_toml(
                broker, tmp_path, client_id=w, shared_group="ingest", in_flight=20, commit_max_messages=8
            )
            text = path.read_text().replace(
                'path = "%s"' % (tmp_path / "server.db"), 'engine = "postgres"\ndsn = "%s"' % dsn
            )
            path.write_text(text)
            cfgs[w] = path
        view = open_store(config.load(cfgs["w1"]))  # migrates once, before the workers start

        def start(w):
            log = open(tmp_path / ("%s.log" % w), "a")
            return children.start(["-m", "phaseserver", "run", "--config", str(cfgs[w])], log)

        procs = {w: start(w) for w in cfgs}
        for w in cfgs:  # every worker's session subscribed before the first publish
            wait_subscribed(tmp_path / ("%s.log" % w), 1, proc=procs[w])
        started = threading.Event()
        errors = []
        pub = threading.Thread(target=publish_all, args=(broker, payloads, started, errors), daemon=True)
        pub.start()
        assert started.wait(20)

        def stored():
            return view.count_rows("reading")

        kills = 0
        for _ in range(3):
            before = stored()
            assert wait_until(lambda before=before: stored() >= before + 200, 30), "no progress"
            os.kill(procs["w2"].pid, signal.SIGKILL)  # mid-batch: batches are flowing to all three
            procs["w2"].wait(10)
            kills += 1
            time.sleep(0.3)
            procs["w2"] = start("w2")  # the same client id: its session gives back the unacknowledged
            wait_subscribed(tmp_path / "w2.log", 1 + kills, proc=procs["w2"])  # back, with its session
        pub.join(120)
        assert not pub.is_alive() and not errors, ("the publisher did not get every PUBACK", errors)
        total = sum(len(v) for v in expected.values())
        assert wait_until(lambda: stored() >= total, 60), (stored(), total)
        time.sleep(1.0)  # anything still arriving would be a copy: let it land, then count again
        for tx in TRANSFORMERS:
            keys = view.db.fetchall(
                "SELECT t_s, src, seq FROM reading WHERE site = 's1' AND transformer = ? ORDER BY t_s, src, seq", (tx,)
            )
            assert [tuple(k) for k in keys] == expected[tx], tx  # 0 lost, 0 stored twice
        counters = view.counters(None)
        assert counters["records"] == total
        assert "invalid_batches" not in counters and "invalid_records" not in counters
        print(
            "scale-out: %d records via 3 workers, %d SIGKILLs of w2: lost 0, stored twice 0, copies dropped %d"
            % (total, kills, counters.get("duplicates", 0))
        )
        view.close()
        for w in cfgs:
            children.end(procs[w])  # SIGTERM: each logs what it committed and what came again
        logs = {w: (tmp_path / ("%s.log" % w)).read_text() for w in cfgs}
        assert not any("Traceback" in text for text in logs.values()), logs
        # w2's restarts got messages its killed runs had received and not acknowledged (the broker's DUP).
        again = [int(n) for n in re.findall(r"\((\d+) delivered again by the broker\)", logs["w2"])]
        print("w2 runs: messages delivered again per run %s" % again)
        assert len(again) >= 1 and sum(again) > 0, logs["w2"][-2000:]
