"""MQTT source of the ingest: paho-mqtt, MQTT 5, a shared subscription, acknowledgement after commit.

Each worker connects with its own fixed client id (``[ingest] client_id``),
``clean_start`` false and a session expiry (``session_expiry_s``), so the
broker keeps its session, and the messages queued for it, while it is away;
it subscribes at QoS 1 to ``phasekit/+/+/#``, or with ``shared_group`` set to
the MQTT 5 shared subscription ``$share/<group>/phasekit/+/+/#`` (OASIS MQTT
5.0 section 4.8.2): the broker hands each message to one worker of the group.

The one thing to know: a message is acknowledged (PUBACK, paho's
``manual_ack``) only after the transaction that stored it committed
(``ingest.pump``). A worker killed in the middle of a batch has acknowledged
nothing of it; the broker delivers those messages again when the worker's
session comes back (the same client id), and the store drops the copies.
So with fixed client ids and persistent sessions, killing a worker loses
nothing and stores nothing twice. (A worker whose session is gone for good
leaves its unacknowledged share with the broker until the session expires:
Mosquitto does not hand a shared subscriber's in-flight messages to another
member.)

Bounded per message: MQTT 5 ``Receive Maximum`` (``in_flight``) caps QoS 1
messages delivered and not acknowledged; ``Maximum Packet Size`` tells the
broker not to send anything larger than the payload cap (it drops such a
message rather than deliver it); the pump's queue bounds the rest by
blocking this thread.

An acknowledgement is sent only on the connection that delivered the message:
after a reconnect the broker sends the message again with the same packet
id, and an acknowledgement from the old connection could hit a new message
that reused the id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from phaseserver.config import ServerConfig
from phaseserver.errors import IngestError
from phaseserver.ingest.core import IngestCore, Message
from phaseserver.ingest.pump import Pump
from phaseuplink import topics

log = logging.getLogger(__name__)

__all__ = ("MqttSource", "subscription", "SUBSCRIBED")

# The log line of a granted subscription (harnesses wait for it before they publish).
SUBSCRIBED = "ingest: subscribed to %s"

_PACKET_OVERHEAD = 4096  # fixed header, topic, properties around the payload


def subscription(group: str) -> str:
    """The topic filter a worker subscribes to: shared when ``group`` is set."""
    return "$share/%s/%s" % (group, topics.SUBSCRIPTION) if group else topics.SUBSCRIPTION


class MqttSource:
    """``await MqttSource(config, core).run(stop)``: subscribe, hand messages to the pump, ack after commit."""

    def __init__(self, config: ServerConfig, core: IngestCore) -> None:
        self.config = config
        self.core = core
        self.settings = config.table("ingest")
        self.pump = Pump(core)
        self.subscribed = threading.Event()
        self.connects = 0
        self._generation = 0  # which connection delivered a message (see the module docstring)
        self._lock = threading.Lock()
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s["client_id"],
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if s["tls"]:
            try:
                client.tls_set(
                    ca_certs=str(self.config.resolve(s["ca"])),
                    certfile=str(self.config.resolve(s["cert"])) if s["cert"] else None,
                    keyfile=str(self.config.resolve(s["key"])) if s["key"] else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as e:
                raise IngestError("[ingest] TLS files: %s" % str(e)[:300]) from e
        if s["username"]:
            client.username_pw_set(s["username"], self.config.secret("ingest", "password_file") or None)
        client.reconnect_delay_set(s["reconnect_min_s"], s["reconnect_max_s"])
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _properties(self) -> Properties:
        s = self.settings
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = int(s["session_expiry_s"])
        p.ReceiveMaximum = int(s["in_flight"])
        p.MaximumPacketSize = int(s["max_payload_bytes"]) + _PACKET_OVERHEAD
        return p

    # ------------------------------------------------------------ paho's thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("ingest: broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
            self.connects += 1
        self.core.metrics.set_connected(True)
        log.info(
            "ingest: connected as %s (session present: %s); subscribing to %s",
            self.settings["client_id"],
            getattr(flags, "session_present", None),
            subscription(self.settings["shared_group"]),
        )
        client.subscribe(subscription(self.settings["shared_group"]), options=SubscribeOptions(qos=1))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.core.metrics.set_connected(False)
        self.subscribed.clear()
        log.warning("ingest: disconnected from the broker: %s", reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("ingest: subscription refused: %s", bad)
            return
        self.subscribed.set()
        log.info(SUBSCRIBED, subscription(self.settings["shared_group"]))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            if message.dup:
                self.core.metrics.delivered_again()
            ack = self._acker(message.mid, message.qos)
            topic = message.topic  # paho decodes it (UTF-8, MQTT requires it); a bad one raises here
            self.pump.put(Message(topic, bytes(message.payload), self.core.clock.now(), ack, "mqtt"))
        except Exception as e:  # a message paho cannot even hand over: acknowledge it, count it, go on
            self.core.metrics.error("source")
            log.warning("ingest: unreadable message dropped: %s", str(e)[:200])
            if message.qos:
                client.ack(message.mid, message.qos)

    def _acker(self, mid: int, qos: int) -> Callable[[], None] | None:
        if not qos:
            return None
        generation = self._generation

        def ack() -> None:
            if generation == self._generation:
                self.client.ack(mid, qos)

        return ack

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.pump.start()
        self.client.connect_async(
            s["host"],
            s["port"],
            keepalive=s["keepalive_s"],
            clean_start=False,
            properties=self._properties(),
        )
        self.client.loop_start()
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.pump.stop)
            self.client.disconnect()
            self.client.loop_stop()
            self.core.metrics.set_connected(False)
            log.info(
                "ingest: stopped after %d messages committed (%d delivered again by the broker)",
                self.pump.handled,
                self.core.metrics.redelivered,
            )

    def ready(self) -> str | None:
        """For ``/readyz``: None when connected and subscribed, else why not."""
        return None if self.subscribed.is_set() else "ingest: not subscribed to the broker"
