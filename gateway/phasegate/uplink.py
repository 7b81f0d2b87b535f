"""MQTT uplink of the transformer Pi: drains the store-and-forward buffer over TLS.

Rows leave the SQLite buffer (``phasegate.store``) in order as QoS 1 PUBLISHes
and are deleted only when the broker's PUBACK arrives. While the broker is away
nothing new is handed to paho (its memory stays bounded; the buffer holds the
backlog); what was in flight is retransmitted by paho on reconnect (DUP flag),
and after a restart everything not acknowledged is sent again from the buffer.
Delivery is therefore at-least-once; the server deduplicates on (sender, seq),
which every sealed payload carries.

paho-mqtt runs its network loop in its own thread (``loop_start``); its
callbacks only hand events to the asyncio loop with ``call_soon_threadsafe``,
so the buffer is touched from one thread only.

Topic tree (documented in docs/uplink.md): ``phasekit/<site>/<transformer>/<kind>[/<node>]``,
with ``.../status`` retained: ``online`` on connect, ``offline`` as the last will.
"""

import asyncio
import logging
import ssl

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


def topic_for(site, transformer, kind, node=None):
    """``phasekit/<site>/<transformer>/<kind>[/<node>]``; ids may not contain MQTT wildcards."""
    parts = ["phasekit", site, transformer, kind] + ([str(node)] if node is not None else [])
    for p in parts:
        if not p or "/" in p or "+" in p or "#" in p:
            raise ValueError("topic level %r is empty or contains '/', '+' or '#'" % (p,))
    return "/".join(parts)


class UplinkConfig:
    """Broker connection settings (from the [uplink] table of the gateway config)."""

    def __init__(self, host, port=8883, client_id="phasegate", ca=None, cert=None, key=None,
                 status_topic="phasekit/status", keepalive_s=30, max_inflight=500,
                 reconnect_min_s=1, reconnect_max_s=60, tls=True):
        if tls and not ca:
            raise ValueError("uplink: TLS needs a CA file ('ca'); set tls = false only on a trusted lab network")
        if (cert is None) != (key is None):
            raise ValueError("uplink: a client certificate needs both 'cert' and 'key'")
        self.host = host
        self.port = int(port)
        self.client_id = client_id
        self.ca, self.cert, self.key = ca, cert, key
        self.status_topic = status_topic
        self.keepalive_s = int(keepalive_s)
        self.max_inflight = int(max_inflight)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.tls = tls


class Uplink:
    """Drain ``store`` to the broker until ``stop`` is set: ``await Uplink(store, cfg).run(stop)``."""

    def __init__(self, store, config):
        self.store = store
        self.config = config
        self.stats = {"published": 0, "acked": 0, "connects": 0, "disconnects": 0, "payload_bytes": 0}
        self._inflight = {}  # paho mid -> buffer row id
        self._last_sent_id = 0
        self._acked_mids = []
        self._loop = None
        self._connected = None
        self._wake = None
        self._client = None

    def wake(self):
        """Tell the uplink new rows are in the buffer (call from the asyncio thread)."""
        if self._wake is not None:
            self._wake.set()

    @property
    def connected(self):
        return self._connected is not None and self._connected.is_set()

    @property
    def backlog(self):
        return len(self.store)

    async def run(self, stop):
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._client = self._make_client()
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        try:
            while not stop.is_set():
                self._settle_acks()
                if not self._connected.is_set():
                    await _wait_any(self._connected, stop, timeout=1.0)
                    continue
                sent = self._publish_batch()
                if not sent:
                    self._wake.clear()
                    await _wait_any(self._wake, stop, timeout=0.05 if self._inflight else 1.0)
                else:
                    await asyncio.sleep(0)
            self._settle_acks()
        finally:
            await self._shutdown()

    def _make_client(self):
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.tls:
            client.tls_set(ca_certs=str(cfg.ca), certfile=str(cfg.cert) if cfg.cert else None,
                           keyfile=str(cfg.key) if cfg.key else None, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(cfg.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(cfg.max_inflight)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # paho thread -> asyncio loop
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("uplink: broker refused connection: %s", reason_code)
            return
        client.publish(self.config.status_topic, STATUS_ONLINE, qos=1, retain=True)
        self._loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._loop.call_soon_threadsafe(self._set_connected, False)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._loop.call_soon_threadsafe(self._note_ack, mid)

    def _note_ack(self, mid):
        # Bound late, not at scheduling time: _settle_acks swaps the list.
        self._acked_mids.append(mid)

    def _set_connected(self, up):
        if up:
            self.stats["connects"] += 1
            log.info("uplink: connected to %s:%d, %d rows buffered", self.config.host, self.config.port,
                     len(self.store))
            self._connected.set()
            self._wake.set()
        else:
            if self._connected.is_set():
                self.stats["disconnects"] += 1
                log.warning("uplink: disconnected; %d in flight, buffering", len(self._inflight))
            self._connected.clear()

    def _publish_batch(self):
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return 0
        rows = self.store.pending(limit=room, after_id=self._last_sent_id)
        for row in rows:
            info = self._client.publish(row.topic, row.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("uplink: publish of row %d failed (%s); will retry", row.id, mqtt.error_string(info.rc))
                break
            # NO_CONN: paho keeps a QoS 1 message queued and sends it on reconnect.
            self._inflight[info.mid] = row.id
            self._last_sent_id = row.id
            self.stats["published"] += 1
            self.stats["payload_bytes"] += len(row.payload)
        return len(rows)

    def _settle_acks(self):
        if not self._acked_mids:
            return
        mids, self._acked_mids = self._acked_mids, []
        ids = [self._inflight.pop(mid) for mid in mids if mid in self._inflight]
        if ids:
            self.store.ack(ids)
            self.stats["acked"] += len(ids)

    async def _shutdown(self):
        client = self._client
        if self._connected.is_set():
            info = client.publish(self.config.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            for _ in range(50):
                if info.is_published():
                    break
                await asyncio.sleep(0.02)
            self._settle_acks()
        client.disconnect()
        client.loop_stop()


async def _wait_any(event, stop, timeout):
    """Wait until ``event`` or ``stop`` is set, or ``timeout`` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
