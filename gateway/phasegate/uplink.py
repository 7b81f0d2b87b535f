"""MQTT uplink of the transformer Pi: drains the store-and-forward buffer in batches over TLS.

Rows leave the SQLite buffer (``phasegate.store``) as *batches*: many rows of
one kind in one QoS 1 PUBLISH (``phaseuplink.records.encode_batch``, zlib when
that is shorter), and a batch's rows are deleted only when the broker's PUBACK
for that PUBLISH arrives. While the broker is away nothing new is handed to
paho (its memory stays bounded; the buffer holds the backlog); what was in
flight is retransmitted by paho on reconnect (DUP flag), and after a restart
everything not acknowledged is sent again from the buffer. Delivery is
therefore at-least-once; every record carries (src, seq) and the server drops
the duplicates (docs/uplink.md).

Cadence, the reason for batches: a cellular SIM must carry 100 nodes for a
few MB a month, and every PUBLISH costs ~60-100 bytes of MQTT, TLS and PUBACK
around its payload. So:

- ``mode = "interval"`` (the default): at the end of each period
  (``period_s``, the summary period) the buffered readings of every node are
  replaced, in one transaction, by one ``interval`` aggregate per node
  (``records.aggregate``); raw readings never leave the Pi. This runs whether
  or not the broker is reachable, so a long outage buffers aggregates, not
  readings.
- ``mode = "raw"``: readings are sent as they are, in batches, once the oldest
  has waited ``raw_batch_s`` (or a batch is full).
- Nodes' heartbeats carry cumulative counters: in interval mode only each
  node's latest is kept, and they go every ``node_heartbeat_s`` (100 nodes
  answering the Pi's 5-minute heartbeats would otherwise cost more than all
  the aggregates); in raw mode they go with the readings' cadence.
- Every other kind (aggregates, summaries, events, alarms, acks, the Pi's
  heartbeat) goes as soon as it is buffered. The uplink itself records a Pi
  heartbeat every ``heartbeat_s``.
- A backlog drains oldest first across kinds, ``max_inflight`` batches in
  flight. The MQTT keepalive defaults to longer than the period, so a
  connection that carries a batch every period never sends a PINGREQ.

``.../status`` is retained: ``online`` on connect, ``offline`` as the last will
and on a clean stop.

What the Pi receives (operator commands on ``.../command``) is bounded before
it is read: the client speaks MQTT 5 and announces a Maximum Packet Size
(``phaseuplink.tls``), so the broker does not deliver anything larger; a
payload above ``max_command_bytes`` that arrives all the same is refused in
paho's thread, unread. Commands wait in a bounded queue and are handed to
``on_command`` one at a time, with the loop yielding between them, so a burst
cannot hold up the polling; whatever a handler raises is logged, never the
end of the uplink, and so is whatever one pass of ``step`` raises.

paho-mqtt runs its network loop in its own thread (``loop_start``); its
callbacks only hand events to the asyncio loop with ``call_soon_threadsafe``,
so the buffer is touched from one thread only. Time for cadence, aggregation
periods and heartbeats comes from ``clock`` (default ``time.time``), so a
benchmark can run a simulated hour in seconds.

Use::

    uplink = Uplink(store, UplinkConfig.from_config(cfg))
    task = asyncio.create_task(uplink.run(stop))   # stop: asyncio.Event
    ...; store.put_many(items); uplink.wake()

Topic tree (``phaseuplink.topics``): ``phasekit/<site>/<transformer>/<kind>``
for the kinds of ``phaseuplink.records.KINDS``, and
``phasekit/<site>/<transformer>/status``. The formats, topics, TLS client
set-up and SQLite durability are the contract shared with the server
(``phaseuplink``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Self

import paho.mqtt.client as mqtt

from phasecore import msg
from phasecore.errors import PhasecoreError, quote
from phasegate.errors import ConfigError
from phasegate.operator import MAX_PAYLOAD as _OPERATOR_MAX_PAYLOAD
from phasegate.store import StoreError
from phaseuplink import records, topics
from phaseuplink.tls import connect_async, mqtt_client, settings_problem
from phaseuplink.topics import STATUS_OFFLINE, STATUS_ONLINE

if TYPE_CHECKING:
    from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from phaseconf import Settings
    from phasegate.store import Row, Store

log = logging.getLogger(__name__)

__all__ = ("Uplink", "UplinkConfig", "MODES", "STATUS_ONLINE", "STATUS_OFFLINE", "CONNECTED")

# Logged (INFO) when a broker session is up; harnesses time reconnects from it
# (phasekit.testing.gateway parses it). Keep the format stable.
CONNECTED = "uplink: connected to %s:%d, %d rows buffered"

MODES = ("interval", "raw")
# Send order when several kinds are due with rows of the same age does not
# matter; a fixed tuple keeps it deterministic.
_SEND_KINDS = ("alarm", "event", "ack", "summary", "interval", "heartbeat", "node_heartbeat", "reading")
# An aggregation pass handles at most this many readings (the rest the next tick).
_COMPACT_MAX = 50000
_STORE_RETRY_S = 5.0
_MAX_COMMAND = _OPERATOR_MAX_PAYLOAD
# Commands received and not yet handled, at most (each at most _MAX_COMMAND bytes: ~1 MB).
_COMMAND_QUEUE = 1000
# The MQTT versions the uplink speaks ([uplink] mqtt_version).
MQTT_VERSIONS = ("5", "3.1.1")
# A command PUBLISH: fixed header (5), topic (2 + up to ~100), packet id (2), MQTT 5 properties, payload.
_MAX_PACKET = _MAX_COMMAND + 1024
# A batch a LoRa gateway relays to this Pi (phasegate.relay): its uplink's batch_max_bytes, with room for
# the records' heads. The Maximum Packet Size the Pi announces grows to it only when it subscribes to them.
_MAX_RELAY = 65536 + 4096
# The buffer's state key holding when nodes' heartbeats were last sent (interval mode).
STATE_NODE_HEARTBEAT_SENT = "sent:node_heartbeat"
_NODE_HB_SENT = STATE_NODE_HEARTBEAT_SENT


class UplinkConfig:
    """Broker connection and cadence (from the [uplink] and [site] tables: ``UplinkConfig.from_config(cfg)``).

    A bad value raises ``ConfigError`` (a ValueError) naming it; an id that
    cannot be a topic level raises ``phaseuplink.topics.TopicError`` (a ValueError).
    """

    def __init__(
        self,
        host: str,
        port: int = 8883,
        site: str = "site",
        transformer: str = "transformer",
        client_id: str = "",
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        tls: bool = True,
        mode: str = "interval",
        period_s: float = 900,
        raw_batch_s: float = 300,
        heartbeat_s: float = 3600,
        node_heartbeat_s: float = 21600,
        keepalive_s: int = 1200,
        batch_max_records: int = 1000,
        batch_max_bytes: int = 65536,
        max_inflight: int = 16,
        compress: bool = True,
        reconnect_min_s: float = 1,
        reconnect_max_s: float = 30,
        grace_s: float = 30,
        fw: str | None = None,
        mqtt_version: str = "5",
    ):
        problem = settings_problem(tls, ca, cert, key)
        if problem:
            raise ConfigError("uplink: %s" % problem)
        if mqtt_version not in MQTT_VERSIONS:
            raise ConfigError(
                "uplink: mqtt_version %s is not one of %s" % (quote(mqtt_version), ", ".join(MQTT_VERSIONS))
            )
        if mode not in MODES:
            raise ConfigError("uplink: mode %s is not one of %s" % (quote(mode), ", ".join(MODES)))
        for name, value in (
            ("period_s", period_s),
            ("raw_batch_s", raw_batch_s),
            ("heartbeat_s", heartbeat_s),
            ("node_heartbeat_s", node_heartbeat_s),
            ("keepalive_s", keepalive_s),
            ("batch_max_records", batch_max_records),
            ("batch_max_bytes", batch_max_bytes),
            ("max_inflight", max_inflight),
        ):
            if value <= 0:
                raise ConfigError("uplink: %s must be positive, got %s" % (name, quote(value)))
        self.host = host
        self.port = int(port)
        self.prefix = topics.prefix(site, transformer)
        self.client_id = client_id or "phasegate-%s-%s" % (site, transformer)
        self.ca, self.cert, self.key = ca, cert, key
        self.tls = tls
        self.mode = mode
        self.period_s = int(period_s)
        self.raw_batch_s = raw_batch_s
        self.heartbeat_s = heartbeat_s
        self.node_heartbeat_s = node_heartbeat_s
        self.keepalive_s = int(keepalive_s)
        self.batch_max_records = int(batch_max_records)
        self.batch_max_bytes = int(batch_max_bytes)
        self.max_inflight = int(max_inflight)
        self.compress = compress
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.grace_s = grace_s
        self.fw = fw or _version()
        # What the Pi receives: operator commands (refused above MAX_PAYLOAD before parsing), and
        # MQTT control packets. The broker is told not to send anything larger (MQTT 5 CONNECT);
        # over MQTT 3.1.1 (None) the command's own cap, checked on receipt, is the only bound.
        self.mqtt_version = mqtt_version
        self.max_command_bytes = _MAX_COMMAND
        self.max_packet_bytes: int | None = _MAX_PACKET if mqtt_version == "5" else None

    @classmethod
    def from_config(cls, cfg: Settings) -> Self:
        """From a validated ``phasegate.config.Config`` (TLS file paths resolved against the file's folder)."""
        site, up = cfg.table("site"), cfg.table("uplink")

        def path(key: str) -> str | None:
            return str(cfg.resolve(up[key])) if up[key] else None

        return cls(
            up["host"],
            up["port"],
            site=site["id"],
            transformer=site["transformer"],
            client_id=up["client_id"],
            ca=path("ca"),
            cert=path("cert"),
            key=path("key"),
            tls=up["tls"],
            mode=up["mode"],
            period_s=up["summary_period_s"],
            raw_batch_s=up["raw_batch_s"],
            heartbeat_s=up["heartbeat_s"],
            node_heartbeat_s=up["node_heartbeat_s"],
            keepalive_s=up["keepalive_s"],
            reconnect_max_s=up["reconnect_max_s"],
            batch_max_records=up["batch_max_records"],
            max_inflight=up["max_inflight"],
            compress=up["compress"],
            mqtt_version=up["mqtt_version"],
        )

    def topic(self, kind: str) -> str:
        return self.prefix + "/" + kind

    @property
    def status_topic(self) -> str:
        return self.prefix + "/" + topics.STATUS_KIND

    def delay_s(self, kind: str) -> float | None:
        """How long a row of ``kind`` may wait for company; None: never sent as it is."""
        if kind == "reading":
            return None if self.mode == "interval" else self.raw_batch_s
        if kind == "node_heartbeat":
            # Interval mode: on a timer since the last send, not by age (the latest replaces the rest).
            return self.node_heartbeat_s if self.mode == "interval" else self.raw_batch_s
        return 0


class _Flight:
    """One PUBLISH in flight: its kind and the buffer rows it carries."""

    __slots__ = ("kind", "ids")

    def __init__(self, kind: str, ids: list[int]):
        self.kind = kind
        self.ids = ids


class Uplink:
    """Drain ``store`` to the broker until ``stop`` is set: ``await Uplink(store, cfg).run(stop)``."""

    def __init__(self, store: Store, config: UplinkConfig, clock: Callable[[], float] = time.time):
        self.store = store
        self.config = config
        # Set by the controller's app: called on the loop with each payload of <prefix>/command
        # (at most max_command_bytes; a larger one calls on_oversize with its size instead).
        self.on_command: Callable[[bytes], object] | None = None
        # Set by the app when LoRa gateways relay frames for this Pi: (topic, payload) of <prefix>/relay/+.
        self.on_relay: Callable[[str, bytes], object] | None = None
        self.on_oversize: Callable[[int], object] | None = None
        self.clock = clock
        self.stats = {
            "batches": 0,
            "published": 0,
            "batches_acked": 0,
            "acked": 0,
            "connects": 0,
            "disconnects": 0,
            "payload_bytes": 0,
            "plain_bytes": 0,
            "aggregated": 0,
            "intervals": 0,
            "superseded": 0,
            "step_errors": 0,
            "commands_oversize": 0,
            "relay_oversize": 0,
            "commands_dropped": 0,
        }
        self._inflight: dict[int, _Flight] = {}  # paho mid -> _Flight
        self._sent_upto = dict.fromkeys(records.KINDS, 0)
        self._acked_mids: list[int] = []
        self._commands: collections.deque[bytes] = collections.deque()
        self._command_ready: asyncio.Event | None = None
        # Made by run(), on the running loop; the paho callbacks come only after that.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._client: mqtt.Client | None = None
        # Set by the first step().
        self._start: float | None = None
        self._next_heartbeat: float | None = None
        self._next_compact: float = 0
        self._next_supersede: float = 0
        self._stopping = False

    def wake(self) -> None:
        """Tell the uplink new rows are in the buffer (call from the asyncio thread)."""
        if self._wake is not None:
            self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected is not None and self._connected.is_set()

    @property
    def backlog(self) -> int:
        return len(self.store)

    @property
    def inflight(self) -> int:
        """Batches published and not yet acknowledged."""
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._wake = wake = asyncio.Event()
        self._client = self._make_client()
        connect_async(self._client, self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        self._command_ready = asyncio.Event()
        commands = asyncio.ensure_future(self._serve_commands(stop))
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    self.step()
                except StoreError as e:
                    # Disk full or I/O error: nothing acknowledged is lost (rows stay and are
                    # sent again); keep the link up and retry rather than end the uplink.
                    log.error("uplink: buffer error, retrying in %.0f s: %s", _STORE_RETRY_S, e)
                    await _wait_any(asyncio.Event(), stop, timeout=_STORE_RETRY_S)
                    continue
                except Exception as e:  # noqa: BLE001 - one bad row or state must never end the uplink
                    self.stats["step_errors"] += 1
                    log.error("uplink: pass failed, retrying in %.0f s: %s: %s", _STORE_RETRY_S, type(e).__name__, e)
                    await _wait_any(asyncio.Event(), stop, timeout=_STORE_RETRY_S)
                    continue
                await _wait_any(wake, stop, timeout=1.0)
            self._settle_acks()
        finally:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)
            await self._shutdown()

    def step(self) -> None:
        """One pass: settle acknowledgements, aggregate closed periods, heartbeat, publish what is due.

        ``run`` calls it on every wake-up and at least once a second; without
        ``run`` (no broker) it does the local part: aggregation and heartbeats.
        """
        self._settle_acks()
        now = self.clock()
        if self._start is None or self._next_heartbeat is None:  # both None until the first step, then set
            self._start = self._next_heartbeat = now
        if self.config.mode == "interval":
            self._aggregate(now)
            if now >= self._next_supersede:
                self.stats["superseded"] += self.store.supersede("node_heartbeat")
                self._next_supersede = now + min(self.config.period_s, self.config.node_heartbeat_s)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        if self.connected:
            self._publish_due(now)

    # -------------------------------------------------------------- paho client

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        # clean_session: the backlog lives in the SQLite buffer, not in the broker.
        client = mqtt_client(
            cfg.client_id,
            ca=cfg.ca,
            cert=cfg.cert,
            key=cfg.key,
            tls=cfg.tls,
            clean_session=True,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            max_packet_size=cfg.max_packet_bytes
            if self.on_relay is None or cfg.max_packet_bytes is None
            else max(cfg.max_packet_bytes, _MAX_RELAY + 1024),
        )
        client.will_set(cfg.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        # Room for the status message beside our own limit, which paho must never queue behind.
        client.max_inflight_messages_set(cfg.max_inflight + 2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _running(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event, asyncio.Event, mqtt.Client]:
        """The loop, the connected and wake events and the client that ``run`` made."""
        loop, connected, wake, client = self._loop, self._connected, self._wake, self._client
        assert loop is not None and connected is not None and wake is not None and client is not None
        return loop, connected, wake, client

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
            log.warning("uplink: broker refused connection: %s", reason_code)
            return
        client.publish(self.config.status_topic, STATUS_ONLINE, qos=1, retain=True)
        if self.on_command is not None:
            # Operator commands (phasegate.operator): sealed end to end, verified before anything moves.
            client.subscribe(self.config.topic(topics.COMMAND_KIND), qos=1)
        if self.on_relay is not None:
            # Frames LoRa gateways relay for this Pi's nodes (phasegate.relay): opened here, nowhere else.
            client.subscribe(self.config.prefix + "/" + topics.RELAY_KIND + "/+", qos=1)
        self._running()[0].call_soon_threadsafe(self._set_connected, True)

    def _on_message(self, client: mqtt.Client, userdata: object, message: MQTTMessage) -> None:
        if self.on_command is not None and message.topic == self.config.topic(topics.COMMAND_KIND):
            if len(message.payload) > self.config.max_command_bytes:
                # Refused here, in paho's thread, before it reaches the loop or any parser. The
                # broker should not even deliver it (CONNECT's Maximum Packet Size, MQTT 5).
                self._running()[0].call_soon_threadsafe(self._oversize_command, len(message.payload))
                return
            self._running()[0].call_soon_threadsafe(self._queue_command, bytes(message.payload))

        elif (
            self.on_relay is not None
            and topics.is_relay(message.topic)
            and message.topic.startswith(self.config.prefix + "/")
        ):
            self._running()[0].call_soon_threadsafe(self.on_relay, message.topic, bytes(message.payload))

    def _queue_command(self, payload: bytes) -> None:
        # Handled one at a time by _serve_commands, which yields between them: a burst of a
        # thousand commands must not hold the loop (and the node polls) for the whole burst.
        if len(self._commands) >= _COMMAND_QUEUE:
            self.stats["commands_dropped"] += 1
            n = self.stats["commands_dropped"]
            if n <= 5 or n % 1000 == 0:
                log.warning("uplink: %d commands waiting; one dropped unread (%d so far)", len(self._commands), n)
            return
        self._commands.append(payload)
        if self._command_ready is not None:
            self._command_ready.set()

    async def _serve_commands(self, stop: asyncio.Event) -> None:
        ready = self._command_ready
        assert ready is not None
        while not stop.is_set():
            if not self._commands:
                ready.clear()
                await _wait_any(ready, stop, timeout=1.0)
                continue
            payload = self._commands.popleft()
            handler = self.on_command
            if handler is not None:
                try:
                    handler(payload)
                except Exception as e:  # noqa: BLE001 - the handler's own failure must not end the uplink
                    log.error("uplink: command handler failed: %s: %s", type(e).__name__, e)
            await asyncio.sleep(0)

    def _oversize_command(self, size: int) -> None:
        self.stats["commands_oversize"] += 1
        n = self.stats["commands_oversize"]
        if n <= 5 or n % 1000 == 0:
            log.warning("uplink: command of %d bytes refused unread (%d so far)", size, n)
        if self.on_oversize is not None:
            self.on_oversize(size)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._running()[0].call_soon_threadsafe(self._set_connected, False)

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        self._running()[0].call_soon_threadsafe(self._note_ack, mid)

    def _note_ack(self, mid: int) -> None:
        # Bound late, not at scheduling time: _settle_acks swaps the list.
        self._acked_mids.append(mid)
        self._running()[2].set()

    def _set_connected(self, up: bool) -> None:
        _, connected, wake, _ = self._running()
        if up:
            self.stats["connects"] += 1
            log.info(CONNECTED, self.config.host, self.config.port, len(self.store))
            connected.set()
            wake.set()
        else:
            if connected.is_set():
                self.stats["disconnects"] += 1
                (log.info if self._stopping else log.warning)(
                    "uplink: disconnected; %d batches in flight, buffering", len(self._inflight)
                )
            connected.clear()

    # -------------------------------------------------------------- sending

    def _due(self, kind: str, now: float) -> int | None:
        """The id of the first unsent row of ``kind`` if a batch of it should go now, else None."""
        delay = self.config.delay_s(kind)
        if delay is None:
            return None
        after = self._sent_upto[kind]
        head = self.store.pending(1, after_id=after, kind=kind)
        if not head:
            return None
        if kind == "node_heartbeat" and self.config.mode == "interval":
            sent = self.store.state(_NODE_HB_SENT)
            if sent is None:
                # The first heartbeats a Pi sees go one period later, when every node has answered.
                sent = now - delay + self.config.period_s
                self.store.replace((), (), {_NODE_HB_SENT: sent})
            if now - sent < delay:
                return None
            self.stats["superseded"] += self.store.supersede(kind)
            head = self.store.pending(1, after_id=after, kind=kind)
            return head[0].id if head else None
        if delay == 0 or now - head[0].created_s >= delay:
            return head[0].id
        if self.store.pending(1, after_id=after, kind=kind, offset=self.config.batch_max_records - 1):
            return head[0].id  # a full batch is waiting
        return None

    def _publish_due(self, now: float) -> None:
        cfg = self.config
        while len(self._inflight) < cfg.max_inflight:
            due = [(head, kind) for kind in _SEND_KINDS for head in (self._due(kind, now),) if head is not None]
            if not due:
                return
            _, kind = min(due)  # oldest first across kinds
            if not self._publish_batch(kind):
                return

    def _publish_batch(self, kind: str) -> bool:
        cfg = self.config
        rows = self.store.pending(cfg.batch_max_records, after_id=self._sent_upto[kind], kind=kind)
        # A row buffered with a whole topic (a LoRa gateway's relayed frames: phasekit/<site>/<transformer>/
        # relay/<gateway>) goes there, with the rows after it that share it; every other row to <prefix>/<kind>.
        topic = rows[0].topic if rows[0].topic.startswith(topics.ROOT + "/") else cfg.topic(kind)
        size = 0
        for n, row in enumerate(rows):
            size += len(row.payload) + 16  # the record's head, src, seq and dt: at most 16 bytes
            same = row.topic == topic if topic != cfg.topic(kind) else not row.topic.startswith(topics.ROOT + "/")
            if (size > cfg.batch_max_bytes or not same) and n:
                rows = rows[:n]
                break
        payload, plain_len = records.encode_batch(rows, compress=cfg.compress)
        info = self._running()[3].publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("uplink: publish of a %s batch failed (%s); will retry", kind, mqtt.error_string(info.rc))
            return False
        # NO_CONN: paho keeps a QoS 1 message queued and sends it on reconnect.
        self._inflight[info.mid] = _Flight(kind, [r.id for r in rows])
        if kind == "node_heartbeat":
            # Persisted, so a Pi restarting more often than node_heartbeat_s still sends them.
            self.store.replace((), (), {_NODE_HB_SENT: self.clock()})
        self._sent_upto[kind] = rows[-1].id
        self.stats["batches"] += 1
        self.stats["published"] += len(rows)
        self.stats["payload_bytes"] += len(payload)
        self.stats["plain_bytes"] += plain_len
        return True

    def _settle_acks(self) -> None:
        if not self._acked_mids:
            return
        mids, self._acked_mids = self._acked_mids, []
        ids = []
        for mid in mids:
            flight = self._inflight.pop(mid, None)
            if flight is not None:
                ids.extend(flight.ids)
                self.stats["batches_acked"] += 1
                self.stats["acked"] += len(flight.ids)
        if ids:
            self.store.ack(ids)

    # -------------------------------------------------------------- housekeeping

    def _aggregate(self, now: float) -> None:
        """Replace the readings of every closed period by one interval record per node and period."""
        if now < self._next_compact:
            return
        period = self.config.period_s
        # A period is closed grace_s after its end: a polling round stamped before the
        # boundary may still be on its way into the buffer.
        boundary = (int(now - self.config.grace_s) // period) * period
        rows = self.store.before("reading", boundary, limit=_COMPACT_MAX)
        self._next_compact = boundary + period + self.config.grace_s if len(rows) < _COMPACT_MAX else now
        if not rows:
            return
        groups: dict[tuple[int, int], list[tuple[int, Sequence[int]]]] = {}  # (period start, src) -> readings
        bad: list[tuple[Row, Exception]] = []
        filed: dict[int, int] = {}  # src -> start of the last period aggregated for it
        for row in rows:
            try:
                values = msg.decode_reading(row.payload)
                if type(row.sender) is not int or row.seq is None:
                    raise records.RecordError(
                        "not a node's reading (sender %s, seq %s)" % (quote(row.sender), quote(row.seq))
                    )
            except (PhasecoreError, records.RecordError) as e:
                bad.append((row, e))
                continue
            src = row.sender
            if src not in filed:
                filed[src] = self.store.state("period:%d" % src, -period)
            # A reading that comes after its period was aggregated (a late round, a clock
            # stepped back) joins the node's next period: an aggregate's seq is its period
            # start, so a second one for the same period would be taken for a duplicate.
            start = max(int(row.created_s) // period * period, filed[src] + period)
            groups.setdefault((start, src), []).append((row.seq, values))
        items: list[records.Item] = []
        state: dict[str, int] = {}
        n_bad = len(bad)
        for (start, src), readings in sorted(groups.items()):
            readings.sort(key=lambda r: r[0])
            key = "energy:%d" % src
            prev = state[key] if key in state else self.store.state(key)
            try:
                fields, last = records.aggregate(period, readings, prev)
                items.append(records.interval(src, start, fields))
            except records.RecordError as e:  # e.g. more readings than an aggregate counts
                log.error(
                    "uplink: %d readings of src %d at %d cannot be aggregated, dropped: %s",
                    len(readings),
                    src,
                    start,
                    e,
                )
                n_bad += len(readings)
                continue
            if last is not None:
                state[key] = last
            state["period:%d" % src] = start
        for row, err in bad:
            log.error("uplink: buffered reading row %d cannot be aggregated, dropped: %s", row.id, err)
        self.store.replace([r.id for r in rows], items, state, dropped={"reading": n_bad} if n_bad else None)
        self.stats["aggregated"] += len(rows) - n_bad
        self.stats["intervals"] += len(items)

    def _heartbeat(self, now: float) -> None:
        cfg = self.config
        start = self._start
        assert start is not None  # step() sets it before the first heartbeat
        fields: dict[str, int | str] = {
            "uptime_s": max(0, int(now - start)),
            "fw": cfg.fw,
            "backlog": min(len(self.store), 2**32 - 1),
            "dropped": min(sum(self.store.dropped().values()), 2**32 - 1),
            "connects": self.stats["connects"],
            "batches": self.stats["batches_acked"],
            "records": self.stats["acked"],
            "mode": MODES.index(cfg.mode),
        }
        self.store.put_many([records.pi_heartbeat(now, fields)])
        self._next_heartbeat = now + cfg.heartbeat_s

    async def _shutdown(self) -> None:
        self._stopping = True
        _, connected, _, client = self._running()
        if connected.is_set():
            info = client.publish(self.config.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            for _ in range(50):
                self._settle_acks()
                if info.is_published() and not self._inflight:
                    break
                await asyncio.sleep(0.02)
            self._settle_acks()
        client.disconnect()
        client.loop_stop()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phasekit")[:24]
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown"


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` or ``stop`` is set, or ``timeout`` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
