"""AMQP source of the ingest: a RabbitMQ cluster's quorum queue, acknowledged after commit (pika).

The Pis keep publishing MQTT, unchanged, to RabbitMQ's MQTT plugin (their
client certificates as before); the plugin routes each PUBLISH to the
``amq.topic`` exchange with the topic as routing key (``/`` and ``.``
swapped: ``phasekit/s1/t1/reading`` becomes ``phasekit.s1.t1.reading``).
Every worker declares the same durable *quorum* queue (``amqp_queue``,
``x-queue-type: quorum``: Raft-replicated over the cluster, so it survives
the loss of a minority of nodes) bound to ``amq.topic`` with
``phasekit.*.*.*`` and consumes from it with manual acknowledgement and a
prefetch of ``in_flight``. RabbitMQ hands each message to one consumer; the
workers share the queue as MQTT 5 workers share a subscription.

The one thing to know: ``basic.ack`` is sent only after the transaction that
stored the message committed (``ingest.pump``). When a broker node dies, the
worker's connection breaks, RabbitMQ returns every unacknowledged message to
the queue, and the worker reconnects to another node of ``host`` (a comma
list ``h1:5672,h2:5672,h3:5672``) and gets them again: the store drops the
copies. So a node killed under load loses nothing and stores nothing twice.
(For the same reason, every queue bound to the uplink's topics must be a
quorum queue: a classic queue on the dead node would be gone with it.)

pika's ``BlockingConnection`` is not thread-safe: the connection lives in
this source's thread, and the pump's acknowledgements are handed to it with
``add_callback_threadsafe``. An acknowledgement is sent only on the channel
that delivered the message: delivery tags are per channel.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from typing import Any

from phasecore.errors import quote
from phaseserver.config import ServerConfig
from phaseserver.errors import ConfigError
from phaseserver.ingest.core import IngestCore, Message
from phaseserver.ingest.mqtt import SUBSCRIBED
from phaseserver.ingest.pump import Pump
from phaseuplink import topics

log = logging.getLogger(__name__)

__all__ = ("AmqpSource", "routing_key_to_topic", "BINDING", "hosts")

# Routing keys of every uplink topic (phasekit/<site>/<transformer>/<kind>) on amq.topic.
BINDING = topics.ROOT + ".*.*.*"


def routing_key_to_topic(key: str) -> str:
    """The MQTT topic of a routing key RabbitMQ's MQTT plugin made (it swaps '/' and '.')."""
    return key.translate(str.maketrans("./", "/."))


def hosts(text: str, default_port: int) -> list[tuple[str, int]]:
    """``"h1:5672,h2"`` -> ``[("h1", 5672), ("h2", default_port)]``; ConfigError for a bad entry."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        host, _, port = part.rpartition(":") if part.count(":") == 1 else (part, "", "")
        try:
            p = int(port) if port else default_port
        except ValueError:
            raise ConfigError("[ingest] host: %s is not host[:port]" % quote(part[:80])) from None
        if not host or not 1 <= p <= 65535:
            raise ConfigError("[ingest] host: %s is not host[:port]" % quote(part[:80]))
        out.append((host, p))
    if not out:
        raise ConfigError("[ingest] host: no broker named")
    return out


class AmqpSource:
    """``await AmqpSource(config, core).run(stop)``: consume the quorum queue, ack after commit."""

    def __init__(self, config: ServerConfig, core: IngestCore) -> None:
        self.config = config
        self.core = core
        self.settings = config.table("ingest")
        self.pump = Pump(core)
        self.subscribed = threading.Event()
        self.connects = 0
        self._stop = threading.Event()
        self._conn: Any = None
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._hosts = hosts(self.settings["host"], self.settings["port"])

    def _parameters(self) -> list[Any]:
        import pika

        s = self.settings
        creds = None
        if s["username"]:
            creds = pika.PlainCredentials(s["username"], self.config.secret("ingest", "password_file"))
        ssl_options = None
        if s["tls"]:
            ctx = ssl.create_default_context(cafile=str(self.config.resolve(s["ca"])))
            if s["cert"]:
                ctx.load_cert_chain(str(self.config.resolve(s["cert"])), str(self.config.resolve(s["key"])))
        out = []
        for host, port in self._hosts:
            if s["tls"]:
                ssl_options = pika.SSLOptions(ctx, host)
            kw: dict[str, Any] = {
                "host": host,
                "port": port,
                "virtual_host": s["amqp_vhost"],
                "heartbeat": int(s["keepalive_s"]),
                "blocked_connection_timeout": 60,
                "connection_attempts": 1,
                "socket_timeout": 5,
                "ssl_options": ssl_options,
            }
            if creds is not None:
                kw["credentials"] = creds
            out.append(pika.ConnectionParameters(**kw))
        return out

    # ------------------------------------------------------------ the connection's thread

    def _serve(self) -> None:
        import pika
        import pika.exceptions

        delay = float(self.settings["reconnect_min_s"])
        while not self._stop.is_set():
            try:
                self._conn = pika.BlockingConnection(self._parameters())
                ch = self._conn.channel()
                ch.queue_declare(self.settings["amqp_queue"], durable=True, arguments={"x-queue-type": "quorum"})
                ch.queue_bind(self.settings["amqp_queue"], self.settings["amqp_exchange"], routing_key=BINDING)
                ch.basic_qos(prefetch_count=int(self.settings["in_flight"]))
                ch.basic_consume(self.settings["amqp_queue"], self._on_message, auto_ack=False)
                self._channel = ch
                self.connects += 1
                self.core.metrics.set_connected(True)
                self.subscribed.set()
                delay = float(self.settings["reconnect_min_s"])
                log.info("ingest: consuming %s on %s", self.settings["amqp_queue"], self._conn._impl.params.host)
                log.info(SUBSCRIBED, self.settings["amqp_queue"])
                ch.start_consuming()
            except (pika.exceptions.AMQPError, OSError, ssl.SSLError) as e:
                if not self._stop.is_set():
                    log.warning(
                        "ingest: AMQP connection lost (%s); again in %.1f s", str(e)[:200] or type(e).__name__, delay
                    )
            except Exception as e:  # one bad moment of the client library must not end ingest
                self.core.metrics.error("source")
                log.exception("ingest: AMQP source failed: %s", str(e)[:200])
            finally:
                self.subscribed.clear()
                self.core.metrics.set_connected(False)
                self._channel = None
                conn, self._conn = self._conn, None
                if conn is not None and conn.is_open:
                    try:
                        conn.close()
                    except Exception:  # closing a broken connection: nothing left to do
                        pass
            if self._stop.wait(delay):
                break
            delay = min(float(self.settings["reconnect_max_s"]), delay * 2)

    def _on_message(self, ch: Any, method: Any, properties: Any, body: bytes) -> None:
        conn = self._conn
        tag = method.delivery_tag

        def ack() -> None:
            def send() -> None:
                if self._channel is ch and ch.is_open:  # tags belong to the channel that delivered them
                    ch.basic_ack(tag)

            conn.add_callback_threadsafe(send)

        try:
            if method.redelivered:
                self.core.metrics.delivered_again()
            topic = routing_key_to_topic(method.routing_key)
            if not self.pump.put(Message(topic, bytes(body), self.core.clock.now(), ack, "amqp")):
                return  # stopping: left unacknowledged, RabbitMQ delivers it again
        except Exception as e:  # a delivery we cannot even queue: acknowledge it, count it, go on
            self.core.metrics.error("source")
            log.warning("ingest: unreadable delivery dropped: %s", str(e)[:200])
            ch.basic_ack(tag)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        self.pump.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="ingest-amqp", daemon=True)
        self._thread.start()
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._stop.set()
        self.pump.stop()  # finish and acknowledge the transaction in progress
        conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: self._channel.stop_consuming() if self._channel else None)
            except Exception:  # the connection is already gone
                pass
        if self._thread is not None:
            self._thread.join(15)
        log.info(
            "ingest: stopped after %d messages committed (%d delivered again by the broker)",
            self.pump.handled,
            self.core.metrics.redelivered,
        )
        deadline = time.monotonic() + 1
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def ready(self) -> str | None:
        """For ``/readyz``: None when consuming, else why not."""
        return None if self.subscribed.is_set() else "ingest: not consuming the AMQP queue"
