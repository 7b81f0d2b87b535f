"""LoRa gateway mode: relay sealed frames heard on the air to MQTT, unread and unforgeable.

A LoRa gateway Pi sits where several transformer sites are in radio range
and forwards what their nodes (and transformer Pis without an uplink of
their own) send, to the broker. It holds **no keys** (docs/security.md
section 6): it cannot read a frame, and whatever it or anyone on the air
changes in a frame fails the tag check at the Pi or server that opens it.
What it does:

1. decode each packet into link frames (``phasecore.frame``, CRC checked);
2. route by link addresses, from the ``[[lora_gateway.routes]]`` of the
   config: a frame from node ``src`` (to the master, ``dst`` 0) belongs to the
   route listing ``src``; a frame from a transformer Pi (``src`` 0) belongs to
   the route whose ``pi_dst`` is its ``dst`` (a transformer Pi relaying through
   the gateway addresses its frames to that link address). Frames from a Pi
   to one of its nodes are downlinks and are not forwarded; frames no route
   claims are counted (``unrouted``) and dropped;
3. read the envelope's clear header (``phasecore.seal.header``: kind and
   sequence number, no key needed) for the record's kind and the (sender,
   seq) the server deduplicates on; never for priority: anyone on the air
   can write that header, so in the buffer every relayed frame weighs the
   same and each source address holds a fair share (``phasegate.store``:
   the largest source loses its oldest rows first, and the relay's own
   records are never pushed out by relayed ones); a frame whose header does
   not parse cannot be opened by anyone and is dropped (``malformed``);
4. drop a frame heard before (a node heard twice, or through a repeater):
   the key is a hash of the whole frame, not (src, seq), so a forged frame
   carrying a genuine sequence number cannot suppress the genuine one;
   entries live ``dedup_s`` seconds, at most ``dedup_max`` of them;
5. put the frame, byte for byte as heard (CRC included), into its own SQLite
   store-and-forward buffer (``phasegate.store``), in the retention class of
   its kind, as a record ``(src, seq, t, body)`` with ``src`` the bytes
   ``b"<site>/<transformer>/<link address>"`` (so the server's (sender, seq)
   de-duplication works across sites), ``seq`` the envelope's sequence number
   and ``body`` the frame as one CBOR byte string, under the topic of the
   route's transformer Pi: ``phasekit/<site>/<transformer>/relay/<gateway>``
   (``phaseuplink.topics.relay_topic``). ``phasegate.uplink`` drains it in
   batches (``phaseuplink.records`` batch format, raw mode: a relay cannot
   aggregate what it cannot read), one topic per batch, over the gateway's one
   broker connection. The transformer Pi subscribes to its relay topics and
   opens the frames with its keys and replay windows (``phasegate.relay``);
   the broker's ACL lets this gateway publish to the relay topics of its
   site's transformers and only the owning Pi read them (``phasekit.pki``).
   Nothing relayed goes to the server: it holds no keys. The gateway's own
   records (its heartbeat, status) stay under ``phasekit/<site>/<gateway>/``.

API::

    gw = LoraGateway(radio, store, routes, gateway_id="gw-01", uplink=uplink)   # uplink in raw mode
    await gw.run(stop)                       # until stop (asyncio.Event) is set
    gw.handle(frame, now)                    # one decoded frame (what run does per frame)
    gw.counters                              # packets, frames, forwarded, duplicates, unrouted, ...
    LoraGateway.from_config(cfg, radio)      # routes, store and uplink from the gateway TOML
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

from phasecore import cbor as _cbor
from phasecore import frame as _frame
from phasecore import seal as _seal
from phasecore.errors import PhasecoreError, quote
from phasegate.errors import ConfigError
from phasegate.lora.radio import recv_or_stop
from phasegate.store import Store
from phasegate.uplink import Uplink, UplinkConfig
from phaseuplink.topics import relay_topic

if TYPE_CHECKING:
    from phaseconf import Settings
    from phasegate.clock import Clock
    from phasegate.lora.radio import Radio

log = logging.getLogger(__name__)

__all__ = ("LoraGateway", "Route", "STORE_KIND", "relay_topic", "relay_sender")

# Envelope kind (docs/protocol.md section 3) -> store retention class (phasegate.store.PRIORITY).
STORE_KIND = {0: "reading", 1: "summary", 2: "event", 3: "ack", 4: "heartbeat", 5: "event"}
_LOG_EVERY_S = 60.0


def relay_sender(site: str, transformer: str, src: int) -> bytes:
    """The record ``src`` of a relayed frame: ``b"<site>/<transformer>/<link address>"``."""
    return ("%s/%s/%d" % (site, transformer, src)).encode("ascii")


class Route:
    """Which site and transformer a set of link addresses belongs to."""

    __slots__ = ("site", "transformer", "nodes", "pi_dst")

    def __init__(self, site: str, transformer: str, nodes: Iterable[int], pi_dst: int | None = None):
        self.site = site
        self.transformer = transformer
        self.nodes = frozenset(nodes)
        self.pi_dst = pi_dst

    @classmethod
    def from_table(cls, t: Mapping[str, Any]) -> Self:
        return cls(t["site"], t["transformer"], t["nodes"], t.get("pi_dst"))

    def __repr__(self) -> str:
        return "Route(%s/%s, %d nodes, pi_dst=%r)" % (self.site, self.transformer, len(self.nodes), self.pi_dst)


class LoraGateway:
    def __init__(
        self,
        radio: Radio,
        store: Store,
        routes: Iterable[Route],
        gateway_id: str,
        uplink: Uplink | None = None,
        dedup_s: float = 600.0,
        dedup_max: int = 20000,
        clock: Callable[[], float] = time.time,
    ):
        self.radio = radio
        self.store = store
        self.uplink = uplink
        self.gateway_id = gateway_id
        self.dedup_s = float(dedup_s)
        self.dedup_max = int(dedup_max)
        self._clock = clock
        self._by_node: dict[int, Route] = {}
        self._by_pi_dst: dict[int, Route] = {}
        for r in routes:
            for a in r.nodes:
                if a in self._by_node:
                    raise ConfigError("node address %d is in two routes" % a)
                self._by_node[a] = r
            if r.pi_dst is not None:
                if r.pi_dst in self._by_pi_dst:
                    raise ConfigError("pi_dst %d is in two routes" % r.pi_dst)
                self._by_pi_dst[r.pi_dst] = r
        self.counters = {
            "packets": 0,
            "frames": 0,
            "forwarded": 0,
            "duplicates": 0,
            "unrouted": 0,
            "downlinks": 0,
            "malformed": 0,
            "noise_bytes": 0,
            "crc_errors": 0,
            "failed": 0,
        }
        self.unrouted: dict[tuple[int, int], int] = {}  # (dst, src) -> frames
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()  # frame hash -> time first heard
        self._decoder = _frame.Decoder(_frame.LORA_MAX_PAYLOAD)
        self._last_log: dict[str, float] = {}

    @classmethod
    def from_config(cls, cfg: Settings, radio: Radio, clock: Clock | None = None) -> Self:
        """The gateway of a config with ``[lora_gateway]``, ``[store]`` and ``[uplink]`` tables.

        The uplink publishes under ``phasekit/<site.id>/<site.transformer>/``
        (name the gateway in ``[site] transformer``) and always in raw mode.
        ``clock`` (``phasegate.clock``) stamps what it relays; default the wall clock.
        """
        wall = clock.wall if clock is not None else time.time
        gw = cfg.table("lora_gateway")
        st = cfg.table("store")
        store = Store(cfg.resolve(st["path"]), st["max_rows"])
        up_cfg = UplinkConfig.from_config(cfg)
        site = cfg.table("site")["id"]
        for t in gw["routes"]:
            if t["site"] != site:
                log.warning(
                    "lora gateway: route to %s/%s is not of this gateway's site %s: the broker's ACL lets a gateway"
                    " relay for its own site only (phasekit pki)",
                    t["site"],
                    t["transformer"],
                    site,
                )
        if up_cfg.mode != "raw":
            log.info("lora gateway: uplink mode '%s' -> 'raw' (a relay cannot aggregate sealed readings)", up_cfg.mode)
            up_cfg.mode = "raw"
        return cls(
            radio,
            store,
            [Route.from_table(t) for t in gw["routes"]],
            gw["id"],
            Uplink(store, up_cfg, clock=wall),
            gw["dedup_s"],
            gw["dedup_max"],
            clock=wall,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and forward until ``stop`` is set (the uplink runs as its own task)."""
        loop = asyncio.get_running_loop()
        stopper = loop.create_task(stop.wait())
        try:
            while not stop.is_set():
                recv = await recv_or_stop(self.radio, stopper)
                if recv is None:
                    break
                payload = b""
                try:
                    payload = recv.result().payload
                    self.handle_packet(payload)
                except Exception as e:  # noqa: BLE001 - one packet must never stop the relay
                    self._packet_failed(payload, e)
        finally:
            stopper.cancel()

    def _packet_failed(self, payload: bytes, err: Exception) -> None:
        """Count, log (cut, once a minute) and dead-letter a packet whose handling failed; the relay goes on."""
        self.counters["failed"] += 1
        text = "%s: %s" % (type(err).__name__, quote(str(err), 200))
        self._log(self._clock(), "failed", "packet not handled (%d so far): %s", self.counters["failed"], text)
        try:
            self.store.dead_letter("radio", bytes(payload), text)
        except Exception as e:  # noqa: BLE001 - a dead letter that cannot be kept must not stop the relay
            self._log(self._clock(), "dead_letter", "dead letter not kept: %s", quote(str(e), 200))

    def handle_packet(self, payload: bytes) -> int:
        """Every frame of one received packet; returns how many were forwarded."""
        dec = self._decoder
        skipped, crc = dec.bytes_skipped, dec.crc_errors + dec.oversize
        frames = dec.feed(payload) + dec.flush()
        self.counters["packets"] += 1
        self.counters["noise_bytes"] += dec.bytes_skipped - skipped
        self.counters["crc_errors"] += dec.crc_errors + dec.oversize - crc
        rows = []
        for f in frames:
            row = self._route(f)
            if row is not None:
                rows.append(row)
        if rows:
            self.store.put_many(rows)
            self.counters["forwarded"] += len(rows)
            if self.uplink is not None:
                self.uplink.wake()
        return len(rows)

    def handle(self, f: _frame.Frame, now: float | None = None) -> bool:
        """Route, deduplicate and store one decoded frame; True if it was forwarded."""
        row = self._route(f, now)
        if row is None:
            return False
        self.store.put_many([row])
        self.counters["forwarded"] += 1
        if self.uplink is not None:
            self.uplink.wake()
        return True

    def _route(self, f: _frame.Frame, now: float | None = None) -> tuple[str, str, bytes, bytes, int, float] | None:
        now = self._clock() if now is None else now
        self.counters["frames"] += 1
        if f.src == _frame.MASTER:
            route = self._by_pi_dst.get(f.dst)
            if route is None:
                if f.dst in self._by_node:
                    self.counters["downlinks"] += 1  # a Pi talking to its node: not ours to relay
                    return None
                self._unrouted(f, now)
                return None
        else:
            route = self._by_node.get(f.src)
            if route is None or f.dst != _frame.MASTER:
                self._unrouted(f, now)
                return None
        try:
            kind, seq = _seal.header(f.payload)
        except PhasecoreError:
            self.counters["malformed"] += 1
            self._log(now, "malformed", "frame %d->%d: envelope header does not parse; dropped", f.src, f.dst)
            return None
        wire = _frame.encode(f.dst, f.src, f.payload, _frame.LORA_MAX_PAYLOAD)
        if self._duplicate(hashlib.sha256(wire).digest()[:16], now):
            self.counters["duplicates"] += 1
            return None
        return (
            STORE_KIND[kind],
            relay_topic(route.site, route.transformer, self.gateway_id),
            _cbor.dumps(wire),
            relay_sender(route.site, route.transformer, f.src),
            seq,
            now,
        )

    def _duplicate(self, key: bytes, now: float) -> bool:
        seen = self._seen
        horizon = now - self.dedup_s
        while seen:
            k, t = next(iter(seen.items()))
            if t >= horizon and len(seen) < self.dedup_max:
                break
            seen.popitem(last=False)
        if key in seen:
            return True
        seen[key] = now
        return False

    def _unrouted(self, f: _frame.Frame, now: float) -> None:
        self.counters["unrouted"] += 1
        k = (f.dst, f.src)
        self.unrouted[k] = self.unrouted.get(k, 0) + 1
        if len(self.unrouted) > 512:
            self.unrouted.pop(next(iter(self.unrouted)))
        self._log(
            now,
            "unrouted",
            "frame %d->%d matches no route; dropped (%d so far)",
            f.src,
            f.dst,
            self.counters["unrouted"],
        )

    def _log(self, now: float, what: str, fmt: str, *args: object) -> None:
        # One line per class per minute: a neighbour's busy network must not flood the journal.
        if now - self._last_log.get(what, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[what] = now
            log.warning(fmt, *args)
