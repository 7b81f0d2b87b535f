"""The site PKI and the broker configuration it writes, checked against the real Mosquitto.

``phasekit.pki`` issues the certificates and writes a Mosquitto listener and
ACL; these tests start ``mosquitto`` with exactly those files (on a free
loopback port, stopped by its PID) and connect paho-mqtt clients holding the
issued certificates. A Pi publishes under its own topics and the server gets
it; it can neither publish nor read under another Pi's; servers, operators and
LoRa gateways get what their role needs and nothing else; revoked, expired,
foreign and missing certificates are refused; no client takes over another's
session by its client id; keys are 0600 and never printed or logged.

Negative checks do not sleep: after the forbidden attempts the same client
sends something allowed (a sentinel), and its arrival proves the earlier
messages would have arrived first had the broker let them through.
"""

import asyncio
import datetime
import getpass
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phasekit.cli import main as phasekit
from phasekit.pki import ALL_SITES, DEFAULT_DAYS, Identity, Pki, PkiError, validate_name
from phasekit.testing.broker import free_port, mosquitto_binary

UTC = datetime.timezone.utc
TIMEOUT = 5.0


# ---------------------------------------------------------------------- harness


class Mosquitto:
    """The real broker with the generated ``phasekit.conf`` dropped into an include folder, as on Debian."""

    def __init__(self, workdir, confdir, port):
        self.port = port
        self.log = Path(workdir) / "mosquitto.log"
        self.conf = Path(workdir) / "mosquitto.conf"
        # What /etc/mosquitto/mosquitto.conf holds on Debian, but for the user: Mosquitto started as
        # root drops to user "mosquitto", which cannot read the test's private folder.
        self.conf.write_text(
            "user %s\npersistence false\nlog_dest file %s\nlog_type all\ninclude_dir %s\n"
            % (getpass.getuser(), self.log, confdir)
        )
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "mosquitto exited: %s" % self.proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.005)
        self.stop()
        raise AssertionError("mosquitto did not listen on %d" % self.port)

    def reload(self):
        """SIGHUP: Mosquitto reads its configuration, ACL and CRL again; open connections stay."""
        self.proc.send_signal(signal.SIGHUP)
        needle = "Reloading config."
        deadline = time.monotonic() + TIMEOUT
        while self.log.read_text().count(needle) < self._reloads + 1:
            assert time.monotonic() < deadline, "mosquitto did not reload"
            time.sleep(0.005)
        self._reloads += 1

    _reloads = 0

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self.proc.stderr.close()
        self.proc = None


class Peer:
    """A paho-mqtt client with an issued certificate; every message it receives is kept in order."""

    def __init__(self, broker, bundle, client_id="", will=None, clean_session=True, ca=None):
        self.bundle = bundle
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean_session
        )
        self.client.tls_set(
            ca_certs=str(ca or bundle.ca),
            certfile=str(bundle.cert) if bundle else None,
            keyfile=str(bundle.key) if bundle else None,
        )
        if will:
            self.client.will_set(will, b"offline", qos=1, retain=True)
        self.port = broker.port
        self.messages = []
        self.granted = []
        self.connects = 0
        self.disconnects = 0
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        # paho writes from the caller's thread when it runs no loop thread of its own: every call
        # into the client holds this lock, so the socket is never used by two threads at once.
        self._io = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, rc, props):
        with self._cond:
            self.connects += 0 if rc.is_failure else 1
            self.disconnects += 1 if rc.is_failure else 0
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, rc, props):
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        with self._cond:
            self.messages.append((m.topic, bytes(m.payload)))
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, codes, props):
        with self._cond:
            self.granted += [c.value for c in codes]
            self._cond.notify_all()

    def _wait(self, predicate):
        with self._cond:
            return self._cond.wait_for(predicate, TIMEOUT)

    def connect(self):
        """True once the broker accepted (CONNACK success); False if TLS or MQTT refused it.

        The network loop runs on a thread of ours with a 10 ms poll (paho's ``loop_start`` takes up
        to a second to stop) and never reconnects: a client the broker dropped stays down.
        """
        try:
            with self._io:
                self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        assert self._wait(lambda: self.connects or self.disconnects), "neither CONNACK nor disconnect"
        if not self.connects:
            self._halt()
        return bool(self.connects)

    _thread = None

    def _loop(self):
        while not self._stopping.is_set():
            try:
                with self._io:
                    rc = self.client.loop(0.01)
            except (OSError, ssl.SSLError):
                break
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                break
            time.sleep(0.001)  # let a waiting publish() take the lock
        with self._cond:
            if not self.connects:
                self.disconnects += 1
            self._cond.notify_all()

    def _halt(self):
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(TIMEOUT)

    def subscribe(self, *filters):
        """The SUBACK codes, in order (Mosquitto 2.0 grants them all; the ACL filters each delivery)."""
        before = len(self.granted)
        for f in filters:
            with self._io:
                self.client.subscribe(f, qos=1)
        assert self._wait(lambda: len(self.granted) == before + len(filters))
        return self.granted[before:]

    def publish(self, topic, payload, retain=False):
        with self._io:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), "%s: no PUBACK for %s" % (self.bundle.record.cn, topic)

    def expect(self, topic, payload):
        """Wait for (topic, payload); return every message received up to and including it."""
        assert self._wait(lambda: (topic, payload) in self.messages), "%s never received %s %r; got %r" % (
            self.bundle.record.cn if self.bundle else "?",
            topic,
            payload,
            self.messages,
        )
        return self.messages[: self.messages.index((topic, payload)) + 1]

    def drop(self):
        """Close the TCP connection without DISCONNECT, as a Pi losing power does (the broker sends the will)."""
        self._halt()
        self.client.socket().shutdown(socket.SHUT_RDWR)
        self.client.socket().close()

    def close(self):
        self._halt()
        with self._io:
            if self.client.is_connected():
                self.client.disconnect()  # written at once: no loop thread any more
            sock = self.client.socket()
            if sock is not None:
                sock.close()


def _site(tmp_path, now=None):
    """A PKI with a broker, Pis s1/tA, s1/tB and s2/tA, servers, an operator and a LoRa gateway."""
    pki = Pki.init(tmp_path / "pki", site="s1")
    bundles = {"broker": pki.issue(Identity.broker(["localhost"], ["127.0.0.1"]))}
    for key, identity in (
        ("tA", Identity.pi("s1", "tA")),
        ("tB", Identity.pi("s1", "tB")),
        ("s2tA", Identity.pi("s2", "tA")),
        ("srv", Identity.server("srv", ["s1"])),
        ("all", Identity.server("all", [ALL_SITES])),
        ("ops", Identity.operator("ops", ["s1"])),
        ("gw", Identity.lora_gateway("s1", "gw")),
    ):
        bundles[key] = pki.issue(identity)
    port = free_port()
    pki.mosquitto(tmp_path / "conf", port=port, bind="127.0.0.1")
    return pki, bundles, Mosquitto(tmp_path, tmp_path / "conf", port)


@pytest.fixture(scope="module")
def running_site(tmp_path_factory):
    pki, bundles, broker = _site(tmp_path_factory.mktemp("site"))
    broker.start()
    yield pki, bundles, broker
    broker.stop()


@pytest.fixture
def site(running_site):
    """The module's broker and a ``peer(name, **kw)`` factory whose clients are closed after the test.

    Two live clients with the same certificate knock each other off (the CN is the client id),
    so a test keeps at most one open per identity unless that is what it tests.
    """
    pki, bundles, broker = running_site
    peers = []

    def peer(name, **kw):
        p = Peer(broker, bundles[name], **kw)
        peers.append(p)
        assert p.connect(), "%s refused" % name
        return p

    yield pki, bundles, broker, peer
    for p in peers:
        p.close()


def accepted(broker, bundle, **kw):
    """Whether the broker accepts a connection with ``bundle``; the client is closed again at once."""
    p = Peer(broker, bundle, **kw)
    try:
        return p.connect()
    finally:
        p.close()


# ---------------------------------------------------------------------- through Mosquitto


def test_a_pi_publishes_its_uplink_and_status_and_the_server_receives_them(site):
    _pki, _b, _broker, peer = site
    server = peer("srv", client_id="phaseserver", clean_session=False)
    assert server.subscribe("phasekit/s1/+/#") == [1]
    pi = peer("tA", will="phasekit/s1/tA/status")
    pi.publish("phasekit/s1/tA/status", b"online", retain=True)
    for kind in ("summary", "interval", "heartbeat", "alarm", "ack"):
        pi.publish("phasekit/s1/tA/" + kind, kind.encode())
    got = server.expect("phasekit/s1/tA/ack", b"ack")
    assert got[-6:] == [("phasekit/s1/tA/status", b"online")] + [
        ("phasekit/s1/tA/" + k, k.encode()) for k in ("summary", "interval", "heartbeat", "alarm", "ack")
    ]
    # The last will: the Pi vanishes without DISCONNECT, the broker publishes "offline" for it.
    pi.drop()
    server.expect("phasekit/s1/tA/status", b"offline")
    # A server subscribing later gets the retained status.
    late = peer("all")
    late.subscribe("phasekit/+/+/status")
    late.expect("phasekit/s1/tA/status", b"offline")


def test_a_pi_cannot_publish_under_another_pis_topics(site):
    _pki, _b, _broker, peer = site
    server = peer("all")
    server.subscribe("phasekit/#", "#")
    pi = peer("tA")
    forged = [
        "phasekit/s1/tB/summary",
        "phasekit/s1/tB/status",
        "phasekit/s1/tB/command",
        "phasekit/s2/tA/summary",
        "phasekit/s1/gw/reading",
        "phasekit/s1/summary",
        "phasekit/tA/summary",
        "phasekit/s1",
        "phasekit",
        "other/topic",
        "$SYS/broker/forged",
    ]
    for topic in forged:
        pi.publish(topic, b"forged", retain=topic.endswith("status"))
    pi.publish("phasekit/s1/tA/event", b"sentinel")
    assert ("phasekit/s1/tA/event", b"sentinel") in server.expect("phasekit/s1/tA/event", b"sentinel")
    assert not [m for m in server.messages if m[1] == b"forged"]
    # Nor by its last will: a Pi naming another Pi's status topic as its will gets it dropped.
    liar = peer("tA", will="phasekit/s1/tB/status", client_id="liar")
    liar.drop()
    peer("tA").publish("phasekit/s1/tA/event", b"sentinel-2")
    server.expect("phasekit/s1/tA/event", b"sentinel-2")
    assert ("phasekit/s1/tB/status", b"offline") not in server.messages


def test_a_pi_cannot_read_another_pis_topics_nor_the_uplink(site):
    _pki, _b, _broker, peer = site
    server = peer("srv")
    server.subscribe("phasekit/s1/+/#")
    pi_b = peer("tB")
    pi_b.publish("phasekit/s1/tB/status", b"online", retain=True)
    pi_b.subscribe("phasekit/s1/tB/command")
    server.expect("phasekit/s1/tB/status", b"online")
    pi_a = peer("tA")
    # Mosquitto 2.0 grants every SUBACK and checks read access on each message it would deliver.
    assert (
        pi_a.subscribe(
            "#",
            "phasekit/+/+/#",
            "phasekit/s1/tB/#",
            "phasekit/s1/tB/status",
            "phasekit/s1/tB/command",
            "phasekit/s1/tA/command",
        )
        == [1] * 6
    )  # docs/pki.md section 6
    pi_b.publish("phasekit/s1/tB/summary", b"b-summary")
    server.expect("phasekit/s1/tB/summary", b"b-summary")
    server.publish("phasekit/s1/tB/command", b"for-b")
    pi_b.expect("phasekit/s1/tB/command", b"for-b")
    server.publish("phasekit/s1/tA/command", b"for-a")
    assert pi_a.expect("phasekit/s1/tA/command", b"for-a") == [("phasekit/s1/tA/command", b"for-a")]
    # Not even its own uplink comes back to it: a Pi reads its command topic and nothing else.
    pi_a.publish("phasekit/s1/tA/summary", b"a-summary")
    server.expect("phasekit/s1/tA/summary", b"a-summary")
    server.publish("phasekit/s1/tA/command", b"for-a-2")
    assert pi_a.expect("phasekit/s1/tA/command", b"for-a-2")[-2:] == [
        ("phasekit/s1/tA/command", b"for-a"),
        ("phasekit/s1/tA/command", b"for-a-2"),
    ]


def test_servers_and_operators_command_the_pis_of_their_sites_only(site):
    _pki, _b, _broker, peer = site
    watcher = peer("all")
    watcher.subscribe("phasekit/#")
    pi_a, pi_s2 = peer("tA"), peer("s2tA")
    pi_a.subscribe("phasekit/s1/tA/command")
    pi_s2.subscribe("phasekit/s2/tA/command")
    server, ops = peer("srv"), peer("ops")
    server.publish("phasekit/s2/tA/command", b"forged")  # not its site
    server.publish("phasekit/s1/tA/summary", b"forged")  # not a command: a server cannot forge uplink
    server.publish("phasekit/s1/tA/status", b"forged", retain=True)
    ops.publish("phasekit/s2/tA/command", b"forged")
    ops.publish("phasekit/s1/tA/heartbeat", b"forged")
    server.publish("phasekit/s1/tA/command", b"from-server")
    ops.publish("phasekit/s1/tA/command", b"from-operator")
    assert pi_a.expect("phasekit/s1/tA/command", b"from-operator")[-2:] == [
        ("phasekit/s1/tA/command", b"from-server"),
        ("phasekit/s1/tA/command", b"from-operator"),
    ]
    watcher.expect("phasekit/s1/tA/command", b"from-operator")
    # The all-sites server commands every site.
    watcher.publish("phasekit/s2/tA/command", b"from-all")
    assert pi_s2.expect("phasekit/s2/tA/command", b"from-all") == [("phasekit/s2/tA/command", b"from-all")]
    assert not [m for m in watcher.messages if m[1] == b"forged"]
    # A server of one site may subscribe to everything (server-min's default): it gets its site only.
    server.subscribe("phasekit/+/+/#")
    pi_s2.publish("phasekit/s2/tA/summary", b"s2-summary")
    watcher.expect("phasekit/s2/tA/summary", b"s2-summary")
    pi_a.publish("phasekit/s1/tA/summary", b"s1-summary")
    assert ("phasekit/s2/tA/summary", b"s2-summary") not in server.expect("phasekit/s1/tA/summary", b"s1-summary")
    # An operator reads nothing, not even the commands it sends.
    ops.subscribe("#", "phasekit/s1/tA/command", "phasekit/s1/+/#")
    pi_a.publish("phasekit/s1/tA/summary", b"summary")
    server.publish("phasekit/s1/tA/command", b"again")
    pi_a.expect("phasekit/s1/tA/command", b"again")
    watcher.expect("phasekit/s1/tA/command", b"again")
    assert ops.messages == []


def test_a_lora_gateway_publishes_under_its_relay_topics_only(site):
    _pki, _b, _broker, peer = site
    server = peer("srv")
    server.subscribe("phasekit/s1/+/#")
    gw = peer("gw", will="phasekit/s1/gw/status")
    gw.subscribe("#", "phasekit/s1/gw/#")
    gw.publish("phasekit/s1/tA/reading", b"forged")
    gw.publish("phasekit/s1/tA/command", b"forged")
    gw.publish("phasekit/s1/gw/status", b"online", retain=True)
    gw.publish("phasekit/s1/gw/reading", b"relayed")
    got = server.expect("phasekit/s1/gw/reading", b"relayed")
    assert ("phasekit/s1/gw/status", b"online") in got and not [m for m in got if m[1] == b"forged"]
    server.publish("phasekit/s1/gw/command", b"to-gw")  # allowed for the server; the gateway may not read it
    server.publish("phasekit/s1/tA/command", b"to-a")
    server.expect("phasekit/s1/tA/command", b"to-a")
    gw.publish("phasekit/s1/gw/reading", b"relayed-2")
    server.expect("phasekit/s1/gw/reading", b"relayed-2")
    assert gw.messages == []


def test_relayed_frames_reach_the_owning_pi_only(site):
    """A LoRa gateway relays to phasekit/<site>/<transformer>/relay/<itself>; only that transformer's Pi reads."""
    _pki, _b, _broker, peer = site
    pi_a, pi_b, pi_s2 = peer("tA"), peer("tB"), peer("s2tA")
    server, everything = peer("srv"), peer("all")
    pi_a.subscribe("phasekit/s1/tA/relay/+")
    pi_b.subscribe("phasekit/s1/tA/relay/+", "phasekit/s1/+/relay/#", "#")  # another Pi's, wholesale
    pi_s2.subscribe("#")
    server.subscribe("phasekit/+/+/#", "phasekit/s1/tA/relay/+")  # server-min's default, and the topic itself
    everything.subscribe("#")
    gw = peer("gw")
    gw.publish("phasekit/s1/tA/relay/other-gw", b"not-its-name")  # refused: the last level is the gateway
    gw.publish("phasekit/s2/tA/relay/gw", b"other-site")  # refused: another site
    gw.publish("phasekit/s1/tA/relay/gw", b"frames-1")
    gw.publish("phasekit/s1/tB/relay/gw", b"frames-for-b")
    got = pi_a.expect("phasekit/s1/tA/relay/gw", b"frames-1")
    assert got == [("phasekit/s1/tA/relay/gw", b"frames-1")]
    pi_b.publish("phasekit/s1/tA/relay/gw", b"forged-by-b")  # a Pi writes its own tree only
    gw.publish("phasekit/s1/tA/relay/gw", b"frames-2")
    pi_a.expect("phasekit/s1/tA/relay/gw", b"frames-2")
    # tB reads the relay topic of its own transformer, not tA's, whatever it subscribes to.
    pi_b.expect("phasekit/s1/tB/relay/gw", b"frames-for-b")
    assert [m for m in pi_b.messages if "/tA/" in m[0]] == []
    # The servers read the uplink of their sites but no relayed frames; nothing else reads anything.
    pi_a.publish("phasekit/s1/tA/summary", b"summary")
    server.expect("phasekit/s1/tA/summary", b"summary")
    everything.expect("phasekit/s1/tA/summary", b"summary")
    for p in (server, everything):
        assert [m for m in p.messages if "/relay/" in m[0]] == []
    assert pi_s2.messages == []
    assert [m for m in pi_a.messages if m[1] in (b"not-its-name", b"other-site", b"forged-by-b")] == []


def test_no_client_takes_over_another_clients_session_by_its_client_id(site):
    _pki, _b, _broker, peer = site
    server = peer("srv", client_id="phaseserver", clean_session=False)
    server.subscribe("phasekit/s1/+/#")
    # use_username_as_clientid: the client id a Pi asks for is replaced by its CN.
    for cid in ("phaseserver", "server:srv", "phasegate-s1-tB"):
        intruder = peer("tA", client_id=cid, clean_session=True)
        intruder.publish("phasekit/s1/tA/event", cid.encode())
        server.expect("phasekit/s1/tA/event", cid.encode())
        intruder.close()
    assert server.disconnects == 0 and server.connects == 1


def test_the_real_uplink_and_server_ingest_work_within_the_acl(tmp_path):
    """phasegate's uplink and phaseserver's ingest, with issued certificates, through the generated config."""
    from phasegate.store import Store
    from phasegate.uplink import Uplink, UplinkConfig
    from phasekit.testing.server import ServerThread
    from phaseserver import config
    from phaseserver.store import open_store
    from phaseuplink import records

    _pki, b, broker = _site(tmp_path)
    broker.start()
    try:
        pi, srv = b["tA"], b["srv"]
        t0 = int(time.time())
        summary = {
            "time_s": t0,
            "period_s": 900,
            "i_dA": [812, 790, 845],
            "cuf_pm": 34,
            "nodes": [97, 2, 1, 0],
            "moves": 1,
        }
        commands = []

        cfg = config.write(
            tmp_path / "server.toml",
            {
                "server": {"http_port": 0},
                "storage": {"path": str(tmp_path / "server.db")},
                "ingest": {  # the default topic, phasekit/+/+/#
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "ca": str(srv.ca),
                    "cert": str(srv.cert),
                    "key": str(srv.key),
                    "reconnect_min_s": 0.1,
                    "reconnect_max_s": 0.5,
                },
            },
        )

        def count(storage, kind):
            return storage.db.scalar("SELECT COUNT(*) FROM %s" % kind if kind == "summary" else
                                     "SELECT COUNT(*) FROM record WHERE kind = 'heartbeat'")  # fmt: skip

        def status(storage):
            row = storage.transformer(None, "s1", "tA")
            return None if row is None else row.status

        async def main():
            server = ServerThread(cfg)
            storage = open_store(cfg)
            try:
                with Store(tmp_path / "buf.db") as store:
                    stop = asyncio.Event()
                    store.put_many([records.summary(t0, summary)])
                    ucfg = UplinkConfig(
                        "127.0.0.1",
                        broker.port,
                        site="s1",
                        transformer="tA",
                        ca=str(pi.ca),
                        cert=str(pi.cert),
                        key=str(pi.key),
                        mode="interval",
                        period_s=900,
                    )
                    uplink = Uplink(store, ucfg)
                    uplink.on_command = commands.append
                    pi_task = asyncio.create_task(uplink.run(stop))
                    ops = Peer(broker, b["ops"])
                    for _ in range(500):
                        if count(storage, "summary") == 1 and status(storage) == "online":
                            break
                        await asyncio.sleep(0.01)
                    await asyncio.to_thread(ops.connect)
                    await asyncio.to_thread(ops.publish, "phasekit/s1/tA/command", b"sealed-command")
                    for _ in range(500):
                        if commands:
                            break
                        await asyncio.sleep(0.01)
                    ops.close()
                    stop.set()
                    await pi_task
                    for _ in range(500):
                        if status(storage) == "offline" and count(storage, "heartbeat") == 1:
                            break
                        await asyncio.sleep(0.01)
                    return count(storage, "summary"), count(storage, "heartbeat"), status(storage)
            finally:
                server.close()
                storage.close()

        assert asyncio.run(main()) == (1, 1, "offline")  # the summary, the uplink's heartbeat, a clean stop
        assert commands == [b"sealed-command"]
        assert "Denied" not in broker.log.read_text()
    finally:
        broker.stop()


def test_a_revoked_certificate_is_refused_once_the_broker_reads_the_new_crl(tmp_path, capsys):
    pki, b, broker = _site(tmp_path)
    broker.start()
    try:
        old = b["tA"]
        new = pki.issue(Identity.pi("s1", "tA"))  # rotation: a new key, the old one still valid
        assert accepted(broker, new)
        connected = Peer(broker, old)
        assert connected.connect()
        assert phasekit(["pki", "revoke", str(pki.folder), old.record.serial_hex[:10], "--reason", "superseded"]) == 0
        assert (
            phasekit(
                [
                    "pki",
                    "mosquitto",
                    str(pki.folder),
                    "--out",
                    str(tmp_path / "conf"),
                    "--port",
                    str(broker.port),
                    "--bind",
                    "127.0.0.1",
                ]
            )
            == 0
        )
        assert "revoked %s pi:s1:tA (superseded)" % old.record.serial_hex in capsys.readouterr().out
        broker.reload()
        assert not accepted(broker, old)
        assert accepted(broker, b["tB"])
        assert "certificate verify failed" in broker.log.read_text()
        # A reload leaves open connections alone (docs/pki.md: restart to drop them) ...
        connected.publish("phasekit/s1/tA/event", b"still here")
        assert connected.disconnects == 0
        # ... a restart drops it, and its reconnects are refused.
        broker.stop()
        broker.start()
        assert connected._wait(lambda: connected.disconnects > 0)
        connected.close()
        assert not accepted(broker, old) and accepted(broker, new)
        # Revoking the CN revokes every certificate it still has.
        assert [r.serial for r in pki.revoke("pi:s1:tA")] == [new.record.serial]
        pki.mosquitto(tmp_path / "conf", port=broker.port, bind="127.0.0.1")
        broker.reload()
        assert not accepted(broker, new)
        assert "user pi:s1:tA" not in (tmp_path / "conf" / "phasekit.acl").read_text()
    finally:
        broker.stop()


def test_expired_not_yet_valid_foreign_and_missing_certificates_are_refused(tmp_path):
    pki, b, broker = _site(tmp_path)
    now = datetime.datetime.now(UTC)
    expired = pki.issue(
        Identity.pi("s1", "tA"),
        not_before=now - datetime.timedelta(days=400),
        not_after=now - datetime.timedelta(days=1),
    )
    early = pki.issue(Identity.pi("s1", "tA"), not_before=now + datetime.timedelta(days=1))
    other = Pki.init(tmp_path / "other", site="s1")  # same site, same CN, another CA
    foreign = other.issue(Identity.pi("s1", "tA"))
    broker.start()
    try:
        assert accepted(broker, b["tA"])  # the same CN with a good certificate is fine
        assert not accepted(broker, expired)
        assert not accepted(broker, early)
        assert not accepted(broker, foreign, ca=b["tA"].ca)
        assert not accepted(broker, b["broker"])  # a server certificate (serverAuth only) is no client's
        assert not accepted(broker, None, ca=b["tA"].ca)  # no certificate: no anonymous access
        # Plain MQTT (no TLS) to the TLS listener: a CONNECT without a user, closed at once.
        with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as s:
            s.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]))
            try:
                assert s.recv(100) == b""  # closed, no CONNACK
            except ConnectionResetError:
                pass
        # And a client accepts only a broker certificate of its own CA.
        fake = Pki.init(tmp_path / "fake", site="s1").issue(Identity.pi("s1", "tA"))
        assert not accepted(broker, b["tA"], ca=fake.ca)
    finally:
        broker.stop()
    assert broker.log.read_text().count("New client connected") == 1  # the good certificate's only
    acl = (tmp_path / "conf" / "phasekit.acl").read_text()
    assert "\ntopic" not in acl.split("\nuser ")[0]  # no rule for everybody before the first user


def test_keys_are_0600_and_never_printed_or_logged(tmp_path, capsys, caplog):
    caplog.set_level("DEBUG")
    d, conf = str(tmp_path / "pki"), str(tmp_path / "conf")
    port = free_port()
    for argv in (
        ["init", d, "--site", "s1"],
        ["issue", d, "broker", "--dns", "localhost", "--ip", "127.0.0.1"],
        ["issue", d, "pi", "--transformer", "tA"],
        ["issue", d, "pi", "--site", "s1", "--transformer", "tA"],
        ["issue", d, "server", "--name", "srv"],
        ["issue", d, "operator", "--name", "ops", "--all-sites"],
        ["issue", d, "lora-gateway", "--name", "gw"],
        ["list", d],
        ["mosquitto", d, "--out", conf, "--port", str(port), "--bind", "127.0.0.1"],
    ):
        assert phasekit(["pki"] + argv) == 0, argv
    pki = Pki(d)
    serial = pki.records()[1].serial_hex
    assert phasekit(["pki", "revoke", d, serial]) == 0
    assert phasekit(["pki", "list", d]) == 0
    broker = Mosquitto(tmp_path, conf, port).start()
    try:
        bundle = pki.issue(Identity.pi("s1", "tB"))
        pki.mosquitto(conf, port=port, bind="127.0.0.1")
        broker.reload()
        p = Peer(broker, bundle)
        assert p.connect()
        p.publish("phasekit/s1/tB/event", b"x")
        p.close()
    finally:
        broker.stop()
    out = capsys.readouterr()
    keys = sorted(Path(tmp_path).rglob("*.key"))
    # The CA's, six issued by the commands, the Pi issued later, the broker's copy for Mosquitto.
    assert len(keys) == 9
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k
        assert stat.S_IMODE(k.parent.stat().st_mode) == 0o700, k.parent
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    said = out.out + out.err + caplog.text + broker.log.read_text()
    assert "PRIVATE KEY" not in said and "PRIVATE KEY" not in (tmp_path / "pki" / "index.json").read_text()
    for k in keys:
        pem = k.read_text()
        assert "PRIVATE KEY" in pem
        secret = serialization.load_pem_private_key(pem.encode(), None).private_numbers().private_value
        for chunk in [line for line in pem.splitlines() if "-----" not in line] + ["%x" % secret, str(secret)]:
            assert chunk not in said
    assert "serial" in out.out and "mode 600" in out.out
    assert re.search(r"pi:s1:tA\s+-\s+\S+ \S+ UTC\s+\S+ \S+ UTC unspecified", out.out)


# ---------------------------------------------------------------------- the library alone


def test_names_are_a_strict_charset_so_no_identity_can_spell_another():
    for good in ("s1", "feeder-12", "tx_0457", "a.b", "A" * 32, "-", "."):
        assert validate_name(good, "site") == good
    for bad in (
        "",
        "a:b",
        "a/b",
        "a+b",
        "a#b",
        "#",
        "+",
        "$SYS",
        "a b",
        "A" * 33,
        "tA\n",
        "tA\x00",
        "é",
        None,
        7,
        b"tA",
        "a\\b",
        "*",
    ):
        with pytest.raises(PkiError, match="expected 1-32"):
            validate_name(bad, "site")
    with pytest.raises(PkiError, match="transformer 'x:y'"):
        Identity.pi("s1", "x:y")
    with pytest.raises(PkiError) as e:
        Identity.pi("s1", "x" * 1000)
    assert len(str(e.value)) < 120  # quoted input is truncated
    # Names that would collide under a separator they could contain stay distinct.
    ids = [
        Identity.pi("a.b", "c"),
        Identity.pi("a", "b.c"),
        Identity.pi("a-b", "c"),
        Identity.pi("a", "b-c"),
        Identity.lora_gateway("a", "b"),
        Identity.pi("a", "b"),
        Identity.server("a", ["b"]),
        Identity.operator("a", ["b"]),
        Identity.server("pi", ["a"]),
    ]
    assert len({i.cn for i in ids}) == len(ids)
    assert all(i.cn.count(":") == (2 if i.role in ("pi", "lora-gateway") else 1) for i in ids)
    with pytest.raises(PkiError, match="all sites"):
        Identity.server("s", [ALL_SITES, "s1"])
    with pytest.raises(PkiError, match="at least one site"):
        Identity.operator("o", [])
    with pytest.raises(PkiError, match="DNS name"):
        Identity.broker(["bad_host!"])
    with pytest.raises(PkiError, match="IP address"):
        Identity.broker(["h"], ["300.1.1.1"])


def _load(bundle):
    return x509.load_pem_x509_certificate(bundle.cert.read_bytes())


def test_certificates_carry_the_identity_usage_and_lifetime(tmp_path):
    t = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    pki = Pki.init(tmp_path / "pki", site="s1", now=t)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert ca.not_valid_after_utc - t == datetime.timedelta(days=3650)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value == x509.BasicConstraints(True, 0)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    broker = pki.issue(Identity.broker(["MQTT.example.net", "mqtt2.example.net"], ["192.0.2.10", "2001:db8::1"]), now=t)
    pi = pki.issue(Identity.pi("s1", "tA"), now=t)
    srv = pki.issue(Identity.server("srv", ["s1", "s2"]), days=30, now=t)
    for bundle, days, eku in (
        (broker, DEFAULT_DAYS["broker"], ExtendedKeyUsageOID.SERVER_AUTH),
        (pi, DEFAULT_DAYS["pi"], ExtendedKeyUsageOID.CLIENT_AUTH),
        (srv, 30, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        cert = _load(bundle)
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        assert cert.issuer == ca.subject
        assert cert.not_valid_after_utc - t == datetime.timedelta(days=days)
        assert t - cert.not_valid_before_utc == datetime.timedelta(minutes=5)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [eku]
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == bundle.record.cn
        assert cert.serial_number == bundle.record.serial
        assert bundle.ca.read_bytes() == pki.ca_cert.read_bytes()
    assert _load(pi).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi:s1:tA"
    san = _load(broker).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.net", "mqtt2.example.net"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10", "2001:db8::1"]
    assert broker.record.cn == "mqtt.example.net"
    assert (pi.cert.name, pi.key.name, srv.cert.name) == ("gateway.crt", "gateway.key", "server.crt")
    # A leaf never outlives its CA.
    late = pki.issue(Identity.pi("s1", "tB"), now=t + datetime.timedelta(days=3500))
    assert late.record.not_after == ca.not_valid_after_utc
    # The index survives a reopen.
    again = Pki(tmp_path / "pki")
    assert [(r.serial, r.cn, r.not_after, r.identity) for r in again.records()] == [
        (r.serial, r.cn, r.not_after, r.identity) for r in pki.records()
    ]
    assert again.records()[2].identity.sites == ("s1", "s2")


def test_a_csr_is_signed_for_the_identity_and_no_key_is_written(tmp_path):
    pki = Pki.init(tmp_path / "pki", site="s1")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi:s1:tB")]))  # a lie: ignored
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    issued = pki.issue(Identity.pi("s1", "tA"), csr=csr, out=tmp_path / "for-the-pi")
    cert = _load(issued)
    assert issued.key is None and sorted(os.listdir(tmp_path / "for-the-pi")) == ["ca.crt", "gateway.crt"]
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi:s1:tA"
    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(rsa.generate_private_key(65537, 2048), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    for bad, match in (
        (rsa_csr, "EC P-256"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "not a PEM CSR"),
        (b"\xff" * 100, "not a PEM CSR"),
    ):
        with pytest.raises(PkiError, match=match):
            pki.issue(Identity.pi("s1", "tA"), csr=bad)
    assert len(pki.records()) == 1


def test_revoke_by_serial_or_cn_rewrites_the_crl(tmp_path):
    t = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    pki = Pki.init(tmp_path / "pki", site="s1", now=t)
    a1, a2 = pki.issue(Identity.pi("s1", "tA"), now=t), pki.issue(Identity.pi("s1", "tA"), now=t)
    b = pki.issue(Identity.pi("s1", "tB"), now=t)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())

    def crl():
        c = x509.load_pem_x509_crl(pki.crl.read_bytes())
        assert c.is_signature_valid(ca.public_key()) and c.next_update_utc == ca.not_valid_after_utc
        return c

    assert len(crl()) == 0
    n0 = crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert pki.revoke(a1.record.serial_hex[:8], "key-compromise", now=t) == [pki.records()[0]]
    c = crl()
    assert [r.serial_number for r in c] == [a1.record.serial]
    assert (
        c.get_revoked_certificate_by_serial_number(a1.record.serial)
        .extensions.get_extension_for_class(x509.CRLReason)
        .value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == n0 + 1
    with pytest.raises(PkiError, match="already revoked"):
        pki.revoke(a1.record.serial_hex)
    assert [r.serial for r in pki.revoke("pi:s1:tA", now=t)] == [a2.record.serial]  # what the CN still had
    assert sorted(r.serial_number for r in crl()) == sorted([a1.record.serial, a2.record.serial])
    assert Pki(tmp_path / "pki").records()[2].revoked_at is None and b.record.revoked_at is None
    for target, match in (
        ("pi:s1:tC", "no certificate"),
        ("0000000000000000", "no certificate"),
        ("", "expected a serial"),
        ("pi:s1:tB", None),
    ):
        if match is None:
            continue
        with pytest.raises(PkiError, match=match):
            pki.revoke(target)
    with pytest.raises(PkiError, match="reason"):
        pki.revoke("pi:s1:tB", "because")


def test_the_acl_names_each_valid_identity_and_only_its_topics(tmp_path):
    t = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    pki = Pki.init(tmp_path / "pki", site="s1", now=t)
    pki.issue(Identity.broker(["localhost"]), now=t)
    pki.issue(Identity.pi("s1", "tA"), now=t)
    pki.issue(Identity.pi("s1", "gone"), now=t)
    pki.revoke("pi:s1:gone", now=t)
    pki.issue(
        Identity.pi("s1", "old"),
        now=t,
        not_before=t - datetime.timedelta(days=9),
        not_after=t - datetime.timedelta(days=1),
    )
    pki.issue(Identity.lora_gateway("s1", "gw"), now=t)
    pki.issue(Identity.server("srv", ["s1"]), now=t)
    pki.issue(Identity.server("srv", ["s2"]), now=t)  # re-issued with another scope: the union applies
    pki.issue(Identity.operator("ops", [ALL_SITES]), now=t)
    body = pki.acl(now=t).split("\n\n", 1)[1]
    assert (
        body
        == """\
# LoRa gateway s1/gw: publishes its status and the frames it relays to its site's Pis
user lora-gateway:s1:gw
topic write phasekit/s1/gw/#
topic write phasekit/s1/+/relay/gw

# operator ops: publishes commands to the Pis of every site, reads nothing
user operator:ops
topic write phasekit/+/+/command

# transformer Pi s1/tA: publishes its uplink and status, reads its commands and relayed frames
user pi:s1:tA
topic write phasekit/s1/tA/#
topic read phasekit/s1/tA/command
topic read phasekit/s1/tA/relay/+

# server srv: reads the uplink of site s1, s2 (not relayed frames), publishes commands to its Pis
user server:srv
topic deny phasekit/s1/+/relay/#
topic read phasekit/s1/+/#
topic write phasekit/s1/+/command
topic deny phasekit/s2/+/relay/#
topic read phasekit/s2/+/#
topic write phasekit/s2/+/command
"""
    )
    # A Pi and a LoRa gateway cannot share a topic prefix.
    with pytest.raises(PkiError, match="cannot share a name"):
        pki.issue(Identity.lora_gateway("s1", "tA"))
    with pytest.raises(PkiError, match="cannot share a name"):
        pki.issue(Identity.pi("s1", "gw"))
    files = pki.mosquitto(tmp_path / "conf", port=8883, install_dir="/etc/mosquitto/phasekit", now=t)
    conf = files.conf.read_text()
    for line in (
        "listener 8883",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "acl_file /etc/mosquitto/phasekit/phasekit.acl",
        "crlfile /etc/mosquitto/phasekit/crl.pem",
        "keyfile /etc/mosquitto/phasekit/broker.key",
        "cafile /etc/mosquitto/phasekit/ca.crt",
    ):
        assert "\n%s\n" % line in conf
    assert files.users == ["lora-gateway:s1:gw", "operator:ops", "pi:s1:tA", "server:srv"]


def test_bad_folders_and_arguments_get_clear_errors(tmp_path, capsys):
    with pytest.raises(PkiError, match="not a PKI folder"):
        Pki(tmp_path)
    pki = Pki.init(tmp_path / "pki", site="s1")
    with pytest.raises(PkiError, match="never overwritten"):
        Pki.init(tmp_path / "pki", site="s1")
    with pytest.raises(PkiError, match="no valid broker"):
        pki.mosquitto(tmp_path / "conf")
    pki.issue(Identity.broker(["a.example"]))
    pki.issue(Identity.broker(["b.example"]))
    with pytest.raises(PkiError, match="several brokers"):
        pki.mosquitto(tmp_path / "conf")
    assert pki.mosquitto(tmp_path / "conf", broker="b.example").broker.cn == "b.example"
    with pytest.raises(PkiError, match="port"):
        pki.mosquitto(tmp_path / "conf", port=70000)
    with pytest.raises(PkiError, match="lifetime"):
        pki.issue(Identity.pi("s1", "tA"), days=0)
    now = datetime.datetime.now(UTC)
    with pytest.raises(PkiError, match="empty"):
        pki.issue(Identity.pi("s1", "tA"), not_before=now, not_after=now - datetime.timedelta(seconds=1))
    with pytest.raises(PkiError, match="never overwritten"):
        pki.issue(Identity.pi("s1", "tA"), out=tmp_path / "pki")
    (tmp_path / "pki" / "index.json").write_text('{"format": 1, "site": "s1", "crl_number": 1, "certs": [{}]}')
    with pytest.raises(PkiError, match="damaged index"):
        Pki(tmp_path / "pki")
    (tmp_path / "pki" / "index.json").write_text("not json" * 1000)
    with pytest.raises(PkiError, match="damaged index") as e:
        Pki(tmp_path / "pki")
    assert len(str(e.value)) < 200
    # The command line: exit 2 and one line, no traceback.
    assert phasekit(["pki", "list", str(tmp_path / "pki")]) == 2
    assert phasekit(["pki", "issue", str(tmp_path), "pi", "--transformer", "tA"]) == 2
    assert phasekit(["pki", "init", str(tmp_path / "x"), "--site", "s/1"]) == 2
    err = capsys.readouterr().err
    assert err.count("phasekit: error:") == 3 and "Traceback" not in err
