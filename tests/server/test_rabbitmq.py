"""High availability: a three-node RabbitMQ cluster feeds the ingest workers; one node killed under load loses nothing.

The Pis publish MQTT exactly as they do to Mosquitto: the real uplink
(``phasegate.uplink``, MQTT 3.1.1, TLS with its client certificate) to
RabbitMQ's MQTT plugin on node 3, which maps the certificate's common name to
a user (``ssl_cert_login``). The plugin routes each batch to ``amq.topic``;
two ingest workers (``python -m phaseserver run``, ``[ingest] source = "amqp"``,
the cluster's three nodes listed, node 2 first) consume the replicated quorum
queue and store into one PostgreSQL database, acknowledging after commit.
Node 2 (where the workers are connected and the queue's leader was elected)
is killed with SIGKILL while the Pis drain their buffers. The workers
reconnect to another node, the queue elects a new leader from its replicas,
RabbitMQ returns what was unacknowledged, and in the end the server holds
every record the Pis buffered, each once.
"""

import os
import signal
import subprocess
import sys
import time

from phasegate.store import Store
from phasekit.testing.broker import make_tls_files
from phasekit.testing.processes import Children
from phasekit.testing.rabbitmq import RabbitCluster
from phaseserver import config
from phaseserver.store import open_store
from phaseuplink import records
from server_support import wait_until

PIS = ("t1", "t2", "t3")
NODES = 40
MINUTES = 50  # 3 Pis x 40 nodes x 50 minutes = 6,000 readings, in batches of 20

UPLINK = r"""
import asyncio, sys
from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig
db, tx, port, ca, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
cfg = UplinkConfig("127.0.0.1", port, site="s1", transformer=tx, ca=ca, cert=cert, key=key, mode="raw",
                   raw_batch_s=0.001, batch_max_records=20, max_inflight=8, heartbeat_s=10**6,
                   reconnect_min_s=0.2, reconnect_max_s=1)
asyncio.run(Uplink(Store(db), cfg).run(asyncio.Event()))
"""


def buffered(db):
    with Store(db) as s:
        return len(s)


def test_a_broker_node_killed_under_load_loses_nothing_and_stores_nothing_twice(tmp_path, pg):
    t0 = int(time.time()) - 3 * 3600
    tls = make_tls_files(tmp_path / "tls")
    expected = {}
    for tx in PIS:
        items = [
            records.reading(a, 100 + m, t0 + 60 * m, [2300, 1000 + a, 2000, 9000 + m, 500, 95, a % 3, 0])
            for m in range(MINUTES)
            for a in range(1, NODES + 1)
        ]
        expected[tx] = sorted((it[5], it[3], it[4]) for it in items)
        with Store(tmp_path / ("%s.db" % tx)) as store:
            store.put_many(items)
    dsn = pg.create_database("rabbit_%d" % (os.getpid() % 10000))
    with RabbitCluster(tmp_path / "rabbit", nodes=3, tls=tls) as rc, Children() as children:
        n1, n2, n3 = rc.nodes
        hosts = ",".join("127.0.0.1:%d" % n.amqp_port for n in (n2, n1, n3))  # the workers start on node 2
        cfgs = []
        for w in ("a1", "a2"):
            cfgs.append(
                config.write(
                    tmp_path / ("%s.toml" % w),
                    {
                        "server": {"http_port": 0},
                        "storage": {
                            "engine": "postgres",
                            "dsn": dsn,
                            "retention_raw_days": 3650,
                            "retention_hourly_days": 3650,
                        },
                        "ingest": {
                            "source": "amqp",
                            "host": hosts,
                            "tls": False,
                            "client_id": w,
                            "in_flight": 50,
                            "reconnect_min_s": 0.2,
                            "reconnect_max_s": 2,
                            "keepalive_s": 10,
                        },
                    },
                )  # fmt: skip
            )
        view = open_store(cfgs[0])
        workers = [
            children.start(["-m", "phaseserver", "run", "--config", str(c.path)], open(tmp_path / ("%s.log" % w), "a"))
            for c, w in zip(cfgs, ("a1", "a2"))
        ]
        assert wait_until(lambda: "phasekit.uplink" in n1.ctl("list_queues", "-q", "name"), 30), "queue not declared"
        pis = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    UPLINK,
                    str(tmp_path / ("%s.db" % tx)),
                    tx,
                    str(n3.mqtts_port),
                    str(tls.ca),
                    str(tls.client_cert),
                    str(tls.client_key),
                ],
                stdout=open(tmp_path / ("pi-%s.log" % tx), "a"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            for tx in PIS
        ]
        try:
            total = sum(len(v) for v in expected.values())
            assert wait_until(lambda: view.count_rows("reading") >= total // 4, 60), view.count_rows("reading")
            at_kill = view.count_rows("reading")
            n2.kill()  # under load: the workers' node and the queue's first leader
            assert wait_until(lambda: all(buffered(tmp_path / ("%s.db" % tx)) == 0 for tx in PIS), 120), [
                buffered(tmp_path / ("%s.db" % tx)) for tx in PIS
            ]
            assert wait_until(lambda: view.count_rows("reading") >= total, 90), (view.count_rows("reading"), total)
            time.sleep(1.0)  # a late copy would land now; count again after it
            for tx in PIS:
                keys = view.db.fetchall(
                    "SELECT t_s, src, seq FROM reading WHERE site = 's1' AND transformer = ? ORDER BY t_s, src, seq",
                    (tx,),
                )
                assert [tuple(k) for k in keys] == expected[tx], tx  # 0 lost, 0 stored twice
            counters = view.counters(None)
            assert counters["records"] == total + len(PIS)  # the readings and each Pi's first heartbeat
            assert "invalid_batches" not in counters
            print(
                "rabbitmq: %d readings, node 2 killed at %d stored: lost 0, stored twice 0, copies dropped %d"
                % (total, at_kill, counters.get("duplicates", 0))
            )
        finally:
            for p in pis:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
            for w in workers:
                children.end(w)
            view.close()
        logs = "".join((tmp_path / ("%s.log" % w)).read_text() for w in ("a1", "a2"))
        assert "Traceback" not in logs, logs[-3000:]
        assert "AMQP connection lost" in logs  # the kill was felt, and survived
