"""MQTT ingest of server-min: subscribe to every transformer, decode batches, store each record once.

paho-mqtt subscribes to ``phasekit/+/+/#`` (QoS 1, persistent session, TLS
with a client certificate: ``phaseuplink.tls``) and runs its network loop in
its own thread; each message is handed to the asyncio loop, decoded
(``phaseuplink.records``: the contract shared with the Pi, so the server
never imports the gateway), committed to ``phaseserver.storage`` and only
then acknowledged (``manual_ack``): a server killed between receipt and
commit gets the message again from the broker, and the UNIQUE key makes that
harmless. The broker keeps the session while the server is away
(``clean_session=False``).

Topics (docs/uplink.md, ``phaseuplink.topics``):
``phasekit/<site>/<transformer>/<kind>`` carries a batch of records of that
kind, ``.../status`` the retained ``online`` / ``offline``; a message on any
other topic is logged and ignored. Sealed frames a LoRa gateway relays
(``.../relay/<gateway>``) are the transformer Pi's to open, not the server's
(the broker's ACL keeps them from it; a broker without one may still deliver
them): they are counted (``relay_ignored``) and acknowledged, never stored. A batch that cannot be read is counted and
logged, never stored in part; records refused one by one are counted and the
rest stored.

Use::

    ingest = Ingest(Storage("server.db"), IngestConfig(host, 8883, ca=..., cert=..., key=...))
    await ingest.run(stop)                     # stop: asyncio.Event
    ingest.handle(topic, payload)              # the same without MQTT: -> (new, duplicates)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from phaseserver.errors import ConfigError
from phaseuplink import records, topics
from phaseuplink.tls import mqtt_client, settings_problem

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    from paho.mqtt.client import ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from phaseserver.storage import Storage

log = logging.getLogger(__name__)

__all__ = ("Ingest", "IngestConfig", "TOPIC")

TOPIC = topics.SUBSCRIPTION


class IngestConfig:
    """Broker connection of the ingest; ``ConfigError`` (a ValueError) names a bad setting."""

    def __init__(
        self,
        host: str,
        port: int = 8883,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        tls: bool = True,
        client_id: str = "phaseserver",
        topic: str = TOPIC,
        keepalive_s: int = 60,
        reconnect_min_s: float = 1,
        reconnect_max_s: float = 30,
    ):
        problem = settings_problem(tls, ca, cert, key)
        if problem:
            raise ConfigError("ingest: %s" % problem)
        self.host, self.port = host, int(port)
        self.ca, self.cert, self.key, self.tls = ca, cert, key, tls
        self.client_id = client_id
        self.topic = topic
        self.keepalive_s = int(keepalive_s)
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s


class Ingest:
    """Subscribe, decode, store, acknowledge: ``await Ingest(storage, config).run(stop)``."""

    def __init__(self, storage: Storage, config: IngestConfig):
        self.storage = storage
        self.config = config
        self.stats = {
            "messages": 0,
            "batches": 0,
            "records": 0,
            "duplicates": 0,
            "invalid_batches": 0,
            "invalid_records": 0,
            "relay_ignored": 0,
            "connects": 0,
        }
        self.subscribed: asyncio.Event | None = None  # made by run(), set once the subscription is granted
        # Made by run(), on the running loop; the paho callbacks come only after that.
        self._queue: asyncio.Queue[tuple[str, bytes, int, int]] | None = None  # (topic, payload, mid, qos)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

    def handle(self, topic: str, payload: bytes) -> tuple[int, int]:
        """Decode and store one message; returns ``(new, duplicates)`` (0, 0 for status or refused input)."""
        self.stats["messages"] += 1
        if topics.is_relay(topic):
            # The owning Pi opens these (phasegate.relay); the server holds no keys for them.
            self.stats["relay_ignored"] += 1
            log.debug("ingest: relayed frames on %s are the Pi's, not stored", topic[:120])
            return 0, 0
        try:
            site, transformer, kind = topics.parse(topic)
        except topics.TopicError as e:
            log.warning("ingest: message ignored: %s", e)
            return 0, 0
        if kind == topics.STATUS_KIND:
            self.storage.set_status(site, transformer, bytes(payload).decode("ascii", "replace")[:32])
            return 0, 0
        try:
            batch = records.decode_batch(kind, payload)
        except records.RecordError as e:
            self.stats["invalid_batches"] += 1
            self.storage.count_invalid(site, transformer, batches=1)
            log.warning("ingest: %s/%s: batch refused (%d bytes): %s", site, transformer, len(payload), e)
            return 0, 0
        if batch.errors:
            self.stats["invalid_records"] += len(batch.errors)
            self.storage.count_invalid(site, transformer, records=len(batch.errors))
            for _, err in batch.errors[:5]:
                log.warning("ingest: %s/%s: %s", site, transformer, err)
        new, dup = self.storage.add_batch(site, transformer, kind, batch.records)
        self.stats["batches"] += 1
        self.stats["records"] += new
        self.stats["duplicates"] += dup
        return new, dup

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes, int, int]] = asyncio.Queue()
        self._queue = queue
        self.subscribed = asyncio.Event()
        self._client = client = self._make_client()
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait([getter, stopping], return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                topic, payload, mid, qos = getter.result()
                self.handle(topic, payload)
                # Acknowledge only what is committed (or refused for good).
                if qos:
                    client.ack(mid, qos)
        finally:
            stopping.cancel()
            client.disconnect()
            client.loop_stop()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        # A persistent session and manual acks: the broker keeps what arrives while the
        # server is away, and a message is acknowledged only once it is committed.
        client = mqtt_client(
            cfg.client_id,
            ca=cfg.ca,
            cert=cfg.cert,
            key=cfg.key,
            tls=cfg.tls,
            clean_session=False,
            manual_ack=True,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _running(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, bytes, int, int]], asyncio.Event]:
        """The loop, the message queue and the subscribed event that ``run`` made."""
        loop, queue, subscribed = self._loop, self._queue, self.subscribed
        assert loop is not None and queue is not None and subscribed is not None
        return loop, queue, subscribed

    # paho thread -> asyncio loop
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("ingest: broker refused connection: %s", reason_code)
            return
        client.subscribe(self.config.topic, qos=1)
        self._running()[0].call_soon_threadsafe(self._count_connect)

    def _count_connect(self) -> None:
        self.stats["connects"] += 1

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        loop, _, subscribed = self._running()
        loop.call_soon_threadsafe(subscribed.set)

    def _on_message(self, client: mqtt.Client, userdata: object, message: MQTTMessage) -> None:
        loop, queue, _ = self._running()
        loop.call_soon_threadsafe(queue.put_nowait, (message.topic, message.payload, message.mid, message.qos))
