"""Simulated LoRa home nodes on ``phasegate.lora.channel.SimChannel``, for tests and ``phasekit bench lora``.

Each ``SimLoraNode`` wraps a ``phasekit.sim.bus_nodes.SimNode`` (which seals
real readings and acks under the node's key) and runs one of the two channel
schemes of ``phasegate.lora.link``:

- ``"polled"``: the receiver is always on; a poll addressed to the node is
  answered after ``turnaround_s`` with a sealed reading, a command with its ack.
- ``"class_a"``: the node reports every ``interval_s`` (random phase, +-
  ``jitter`` of the interval, as independent devices drift) and after each of
  its uplinks listens ``rx_delay_s`` plus the airtime of ``downlink_budget``
  bytes; a command heard there is acknowledged at once (another uplink, with
  its own window). Outside its windows it hears nothing.

Times are in channel seconds: with ``SimChannel(time_scale=s)`` every delay
here is multiplied by ``s`` as the airtime is, so a minute can run in a second.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from phasecore import frame

if TYPE_CHECKING:
    from phasegate.lora.channel import SimRadio
    from phasekit.sim.bus_nodes import SimNode

__all__ = ("SimLoraNode",)


class SimLoraNode:
    """A ``SimNode`` behind a radio on the simulated channel, running the ``scheme`` (``"polled"``, ``"class_a"``)."""

    def __init__(
        self,
        node: SimNode,
        radio: SimRadio,
        scheme: str = "polled",
        interval_s: float = 60.0,
        jitter: float = 0.05,
        turnaround_s: float = 0.02,
        rx_delay_s: float = 0.05,
        downlink_budget: int = 64,
        seed: int | None = None,
    ):
        if scheme not in ("polled", "class_a"):
            raise ValueError("scheme %r: 'polled' or 'class_a'" % (scheme,))
        self.node = node
        self.radio = radio
        self.scheme = scheme
        self.interval_s = interval_s
        self.jitter = jitter
        self.turnaround_s = turnaround_s
        self.rx_delay_s = rx_delay_s
        self.downlink_budget = downlink_budget
        self.scale = radio.channel.time_scale
        self.uplinks = 0
        self.windows = 0
        self._rng = random.Random(node.addr if seed is None else seed)
        self._decoder = frame.Decoder(frame.LORA_MAX_PAYLOAD)

    @property
    def addr(self) -> int:
        """The node's link address."""
        return self.node.addr

    async def run(self, stop: asyncio.Event) -> None:
        """Run the scheme until ``stop`` is set or the task is cancelled."""
        try:
            if self.scheme == "polled":
                await self._polled(stop)
            else:
                await self._class_a(stop)
        except asyncio.CancelledError:
            pass

    def _mine(self, payload: bytes) -> list[frame.Frame]:
        return [
            f
            for f in self._decoder.feed(payload) + self._decoder.flush()
            if f.dst == self.node.addr and f.src == frame.MASTER
        ]

    async def _send(self, payload: bytes) -> None:
        self.uplinks += 1
        await self.radio.send(frame.encode(frame.MASTER, self.node.addr, payload, frame.LORA_MAX_PAYLOAD))

    async def _polled(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            payload, _sender = await self.radio.recv()
            for f in self._mine(payload):
                reply = self.node.answer_poll() if not f.payload else self.node.answer_command(f.payload)
                if reply is None:
                    continue
                await asyncio.sleep(self.turnaround_s * self.scale)
                await self._send(reply)

    async def _class_a(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        t_next = loop.time() + self._rng.uniform(0, self.interval_s) * self.scale
        while not stop.is_set():
            delay = t_next - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except asyncio.TimeoutError:
                    pass
            reply = self.node.answer_poll()
            t_next += self.interval_s * (1 + self._rng.uniform(-self.jitter, self.jitter)) * self.scale
            while reply is not None:
                self._drain()  # what arrived outside a window was never heard
                await self._send(reply)
                reply = await self._window()

    def _drain(self) -> None:
        while self.radio.recv_nowait() is not None:
            pass

    async def _window(self) -> bytes | None:
        """Listen after an uplink; the ack to send if a command for this node arrived, else None."""
        self.windows += 1
        listen = (self.rx_delay_s + self.radio.channel.airtime_s(self.downlink_budget) / self.scale + 0.02) * self.scale
        loop = asyncio.get_running_loop()
        end = loop.time() + listen
        while True:
            left = end - loop.time()
            if left <= 0:
                return None
            try:
                payload, _sender = await asyncio.wait_for(self.radio.recv(), left)
            except asyncio.TimeoutError:
                return None
            for f in self._mine(payload):
                if f.payload:
                    return self.node.answer_command(f.payload)
