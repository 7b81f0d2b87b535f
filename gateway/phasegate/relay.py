"""Frames a LoRa gateway relayed for this Pi: from the broker to the controller, as if heard on a link.

Nodes out of the Pi's radio range are heard by a LoRa gateway Pi
(``phasegate.lora_gateway``), which holds no keys and forwards their sealed
frames, byte for byte, to ``phasekit/<site>/<transformer>/relay/<gateway>``
(``phaseuplink.topics.relay_topic``). This Pi subscribes to
``.../relay/+`` through its uplink (``Uplink.on_relay``); the broker's ACL
lets the gateways publish there and only this Pi read (``phasekit.pki``).
``RelayLink`` is the link the controller runs for those nodes (registry link
name ``"relay"``): each frame is checked (CRC, addressed to the Pi, from a
node of ``[relay] nodes``), heard-twice copies (two gateways, a repeater) are
dropped by a hash of the frame, and the rest goes to the controller's
``on_reply`` exactly as a reply on the bus would, so the registry opens it
with the node's keys and the same replay window as a direct frame, and the
journal uplinks its readings as this Pi's records.

No downlink: the gateway relays upward only, so a relayed node gets no
commands and no heartbeats from this Pi (``downlink = False``; ``request``
answers None at once). The controller never plans a move for it; it is
measured, balanced around and reported, not switched.

The one thing to know: everything arriving here is hostile until the registry
has opened it. A batch is bounded (``phaseuplink.records.decode_relayed``:
1000 frames of at most 255 bytes), the queue to the controller is bounded
(``queue_max``; beyond it frames are dropped and counted), and nothing the
gateway wrote outside the sealed envelope (its sender label, sequence number,
time, even the topic's gateway name) is trusted: the frame's own SRC, checked
by the tag, says whose it is.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from phasecore import frame as _frame
from phasegate.bus import Reply
from phaseuplink import records, topics

if TYPE_CHECKING:
    from phasegate.bus import OnReply

log = logging.getLogger(__name__)

__all__ = ("RelayLink",)

_LOG_EVERY_S = 60.0


class RelayLink:
    """The controller's link for nodes heard only through LoRa gateways (module docstring)."""

    downlink = False  # the controller never commands these nodes (no path down)

    def __init__(
        self,
        nodes: Iterable[int],
        report_max_s: float = 300.0,
        queue_max: int = 2000,
        dedup_max: int = 4096,
    ):
        self.nodes = frozenset(nodes)
        # How long a node may be silent between two relayed reports: the controller waits that long
        # before calling a move unverified, were it ever to command one.
        self.poll_period_s = float(report_max_s)
        self.queue_max = int(queue_max)
        self.dedup_max = int(dedup_max)
        self.counters = {
            "messages": 0,
            "bad_batches": 0,
            "frames": 0,
            "delivered": 0,
            "duplicates": 0,
            "foreign": 0,
            "bad_frames": 0,
            "queue_full": 0,
        }
        self.gateways: dict[str, int] = {}  # gateway name (from the topic) -> frames it relayed
        self._queue: collections.deque[tuple[_frame.Frame, float]] = collections.deque()
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._wake: asyncio.Event | None = None
        self._last_log: dict[str, float] = {}

    def deliver(self, topic: str, payload: bytes) -> int:
        """One MQTT message from a relay topic (call on the loop); returns the frames queued for the controller."""
        self.counters["messages"] += 1
        try:
            relayed = records.decode_relayed(payload)
        except records.RecordError as e:
            self.counters["bad_batches"] += 1
            self._log("bad_batch", "relay %s: batch refused (%d bytes): %s", topic[:120], len(payload), e)
            return 0
        gateway = topic.rsplit("/", 1)[-1] if topics.is_relay(topic) else "?"
        queued = 0
        now = time.monotonic()
        for r in relayed:
            self.counters["frames"] += 1
            decoder = _frame.Decoder(_frame.LORA_MAX_PAYLOAD)
            frames = decoder.feed(r.wire) + decoder.flush()
            if len(frames) != 1:
                self.counters["bad_frames"] += 1
                continue
            f = frames[0]
            if f.dst != _frame.MASTER or f.src not in self.nodes:
                self.counters["foreign"] += 1
                self._log(
                    "foreign", "relay %s: frame %d->%d is not for this Pi's nodes; dropped", gateway, f.src, f.dst
                )
                continue
            key = hashlib.sha256(r.wire).digest()[:16]
            if key in self._seen:
                self.counters["duplicates"] += 1  # heard by two gateways, or a repeater
                continue
            self._seen[key] = None
            while len(self._seen) > self.dedup_max:
                self._seen.popitem(last=False)
            if len(self._queue) >= self.queue_max:
                self.counters["queue_full"] += 1
                continue
            self._queue.append((f, now))
            self.gateways[gateway[:32]] = self.gateways.get(gateway[:32], 0) + 1
            queued += 1
        if queued and self._wake is not None:
            self._wake.set()
        return queued

    async def run(self, stop: asyncio.Event, on_reply: OnReply) -> None:
        """Hand queued frames to ``on_reply(addr, Reply)`` until ``stop`` is set."""
        self._wake = wake = asyncio.Event()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                while self._queue:
                    f, t = self._queue.popleft()
                    self.counters["delivered"] += 1
                    res = on_reply(f.src, Reply(f.src, f, 0.0, 1, t))
                    if inspect.isawaitable(res):
                        await res
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            stopper.cancel()

    async def request(self, addr: int, payload: bytes) -> Reply | None:
        """No path down through a relay: nothing is sent, nothing answers."""
        return None

    def _log(self, what: str, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_log.get(what, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[what] = now
            log.warning(fmt, *args)
