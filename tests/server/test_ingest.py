"""server-min ingest end to end: Pi uplink -> Mosquitto (mutual TLS) -> phaseserver, every record exactly once.

The fault test kills the uplink process with SIGKILL in the middle of a drain,
at moments when the broker already has batches whose PUBACK the Pi has not
seen (a proxy holds the broker-to-Pi direction, as a cellular downlink that
dies), so the restart must resend them: the server then holds every record
once and counts the copies it dropped. PHASEKIT_UPLINK_KILLS sets the number
of kills (3 by default, to keep the suite quick; issue 4's run is 20).
The server here is the real one (``phaseserver.app.build`` from a TOML file,
MQTT 5 source, pump, core, SQLite store) running in a thread.
"""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig
from phasekit.testing.batches import SAMPLE_SUMMARY
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import server_toml
from phasekit.testing.netproxy import TcpProxy
from phaseserver import config
from phaseserver.store import open_store
from phaseuplink import records
from server_support import ServerThread, wait_until

KILLS = int(os.environ.get("PHASEKIT_UPLINK_KILLS", "3"))


class Server:
    """The server from a TOML file in a thread, and a second connection (``view``) to read what it committed."""

    def __init__(self, broker, folder, client_id="phaseserver-test"):
        self.thread = ServerThread(config.load(server_toml(broker, folder, client_id)))
        self.view = View(open_store(self.thread.config))

    def close(self):
        self.thread.close()
        self.view.store.close()


class View:
    def __init__(self, store):
        self.store = store
        self.db = store.db

    def count(self, kind):
        table = {"reading": "reading", "interval": "aggregate", "summary": "summary"}.get(kind)
        if table:
            return self.db.scalar("SELECT COUNT(*) FROM %s" % table)
        return self.db.scalar("SELECT COUNT(*) FROM record WHERE kind = ?", (kind,))

    def readings_per_node(self, kind="reading"):
        if kind == "reading":
            return dict(self.db.fetchall("SELECT src, COUNT(*) FROM reading GROUP BY src ORDER BY src"))
        return dict(self.db.fetchall("SELECT src, SUM(n) FROM aggregate GROUP BY src ORDER BY src"))

    def keys(self):
        return self.db.fetchall("SELECT src, seq FROM reading ORDER BY src, seq")

    def status(self, site, transformer):
        row = self.store.transformer(None, site, transformer)
        return None if row is None else row.status

    def counters(self):
        return self.store.counters(None)

    def duplicates(self):
        return self.counters().get("duplicates", 0)


def readings(nodes, minutes, t0):
    return [
        records.reading(addr, 500 + m, t0 + 60 * m, [2300, 1000 + addr, 2000, 9000 + m, 500, 95, addr % 3, 0])
        for m in range(minutes)
        for addr in range(1, nodes + 1)
    ]


def test_uplink_to_server_end_to_end_in_interval_mode(tmp_path):
    # Two periods that closed at least 30 s (the uplink's grace) ago.
    t0 = (int(time.time()) - 60) // 900 * 900 - 1800
    with LocalBroker(tmp_path / "broker") as broker, Store(tmp_path / "buf.db") as store:
        server = Server(broker, tmp_path)
        store.put_many(readings(100, 30, t0))
        store.put_many(
            [
                records.summary(t0 + 900, dict(SAMPLE_SUMMARY, time_s=t0 + 900)),
                records.summary(t0 + 1800, dict(SAMPLE_SUMMARY, time_s=t0 + 1800)),
            ]
        )
        cfg = UplinkConfig(
            broker.host,
            broker.port,
            site="s1",
            transformer="t1",
            ca=broker.tls.ca,
            cert=broker.tls.client_cert,
            key=broker.tls.client_key,
            mode="interval",
            period_s=900,
        )
        uplink = Uplink(store, cfg)

        async def main():
            stop = asyncio.Event()
            task = asyncio.create_task(uplink.run(stop))
            for _ in range(500):
                if len(store) == 0 and server.view.count("interval") == 200:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await task

        asyncio.run(main())
        try:
            assert server.view.readings_per_node(kind="interval") == {a: 30 for a in range(1, 101)}
            assert server.view.count("reading") == 0 and server.view.count("summary") == 2
            assert wait_until(lambda: server.view.count("heartbeat") == 1, 5)
            assert wait_until(lambda: server.view.status("s1", "t1") == "offline", 5)  # clean stop
            # The interval aggregates feed the series and the node registry too.
            nodes = server.view.store.nodes(None, "s1", "t1")
            assert len(nodes) == 100 and {n.phase for n in nodes} == {0, 1, 2}
        finally:
            server.close()


UPLINK = r"""
import asyncio, sys
from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig
db, host, port, ca, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
cfg = UplinkConfig(host, port, site="s1", transformer="t1", ca=ca, cert=cert, key=key, mode="raw",
                   raw_batch_s=0.001, batch_max_records=20, max_inflight=4, heartbeat_s=10**6,
                   reconnect_min_s=0.1, reconnect_max_s=0.5)
asyncio.run(Uplink(Store(db), cfg).run(asyncio.Event()))
"""


class UplinkProcess:
    def __init__(self, db, broker, port):
        t = broker.tls
        self.proc = subprocess.Popen(
            [sys.executable, "-c", UPLINK, str(db), broker.host, str(port), str(t.ca), str(t.client_cert),
             str(t.client_key)]
        )  # fmt: skip

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def buffered(db, kind):
    with sqlite3.connect("file:%s?mode=ro" % db, uri=True) as c:
        return c.execute("SELECT COUNT(*) FROM outbox WHERE kind = ?", (kind,)).fetchone()[0]


@pytest.mark.parametrize("kills", [KILLS])
def test_sigkill_mid_drain_every_record_exactly_once_after_dedup(tmp_path, kills):
    t0 = int(time.time()) - 86400
    db = tmp_path / "buf.db"
    minutes = 10 * kills + 20  # each kill waits for 200 readings to arrive first; the drain goes on meanwhile
    items = readings(100, minutes, t0)
    pi_items = [records.summary(t0 + 900 * k, dict(SAMPLE_SUMMARY, time_s=t0 + 900 * k)) for k in range(1, 3)]
    with Store(db) as store:
        for k in range(0, len(items), 100):  # the order a controller writes them: readings, then a summary
            store.put_many(items[k : k + 100] + (pi_items if k == 1000 else []))
    with LocalBroker(tmp_path / "broker") as broker, TcpProxy(broker.host, broker.port) as proxy:
        server = Server(broker, tmp_path)

        def overlap():
            # Records the server has that are still in the Pi's buffer: each will arrive again.
            return server.view.count("reading") + buffered(db, "reading") - len(items)

        def settled_overlap():
            a = overlap()
            time.sleep(0.2)
            return a >= 20 and overlap() == a

        procs = []
        try:
            sure_duplicates = 0
            for _ in range(kills):
                up = UplinkProcess(db, broker, proxy.port)
                procs.append(up)
                start = server.view.count("reading")
                assert wait_until(lambda start=start: server.view.count("reading") >= start + 200, 15), "no progress"
                proxy.hold_down()  # PUBACKs stop reaching the Pi; the broker still delivers its batches
                assert wait_until(settled_overlap, 15), overlap()
                sure_duplicates += overlap()  # rows on the server and in the buffer: all will come again
                up.kill()
                proxy.release_down()
                assert wait_until(lambda: server.view.status("s1", "t1") == "offline", 10)
            up = UplinkProcess(db, broker, proxy.port)
            procs.append(up)
            assert wait_until(lambda: buffered(db, "reading") == 0 and server.view.count("reading") == len(items), 20)
            assert wait_until(lambda: server.view.status("s1", "t1") == "online", 5)
            up.kill()
            view = server.view
            assert view.keys() == sorted((it[3], it[4]) for it in items)
            assert view.readings_per_node() == {a: minutes for a in range(1, 101)}
            assert view.count("summary") == 2 and view.count("heartbeat") == kills + 1
            assert view.duplicates() >= sure_duplicates > 0
            c = view.counters()
            assert c["records"] == len(items) + 2 + kills + 1 and "invalid_records" not in c
        finally:
            for p in procs:
                p.kill()
            server.close()


def test_a_buffer_sent_twice_is_stored_once(tmp_path):
    t0 = int(time.time()) - 86400
    with Store(tmp_path / "buf.db") as store:
        store.put_many(readings(10, 10, t0) + [records.event(t0, {"code": 43, "value": 5, "severity": 1})])
    copy = sqlite3.connect(tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "buf.db") as src:
        src.backup(copy)  # the buffer as a crash before any PUBACK would leave it
    copy.close()
    with LocalBroker(tmp_path / "broker") as broker:
        server = Server(broker, tmp_path)
        try:
            for path in ("buf.db", "copy.db"):
                with Store(tmp_path / path) as store:
                    cfg = UplinkConfig(
                        broker.host,
                        broker.port,
                        site="s1",
                        transformer="t1",
                        ca=broker.tls.ca,
                        cert=broker.tls.client_cert,
                        key=broker.tls.client_key,
                        mode="raw",
                        raw_batch_s=0.001,
                        heartbeat_s=10**6,
                    )
                    uplink = Uplink(store, cfg)

                    async def main(uplink=uplink):
                        stop = asyncio.Event()
                        task = asyncio.create_task(uplink.run(stop))
                        while len(store):
                            await asyncio.sleep(0.02)
                        stop.set()
                        await task

                    asyncio.run(main())
            # The copy's own heartbeat is new (a new buffer session); its readings and event are not.
            assert wait_until(lambda: server.view.counters().get("duplicates") == 101, 5)
            assert server.view.count("reading") == 100 and server.view.count("event") == 1
            assert server.view.count("heartbeat") == 2
        finally:
            server.close()


WITHOUT_GATEWAY = r"""
import runpy, sys
sys.modules["phasegate"] = None  # any import of the gateway now fails, as on a server without it installed
sys.modules["phasekit"] = None   # nor the tools
import phaseserver.app, phaseserver.ingest.core, phaseserver.ingest.mqtt, phaseserver.ingest.amqp
import phaseserver.store.sqlite, phaseserver.store.postgres, phaseserver.cli, phaseserver.backup
sys.argv = ["phaseserver", "--help"]
runpy.run_module("phaseserver", run_name="__main__")
"""


def test_the_server_imports_and_runs_without_the_gateway():
    p = subprocess.run([sys.executable, "-c", WITHOUT_GATEWAY], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "operations server" in p.stdout and "run" in p.stdout
    # The check itself bites: the same block stops an import of the gateway.
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_GATEWAY.replace("import phaseserver.app,", "import phasegate.store, phaseserver.app,"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and "phasegate" in p.stderr
