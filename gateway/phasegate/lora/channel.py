"""A simulated LoRa channel: airtime, collisions, half-duplex and loss.

Used by tests and the simulated site in place of the air. Each radio's send
lasts the packet's real time on air (``phasecore.airtime``); two transmissions
that overlap in time on the channel destroy each other at every receiver (pure
ALOHA, no capture effect: pessimistic on purpose), a radio that is transmitting
hears nothing, and each delivery is dropped with probability ``loss``
(fading, interference). The offline ``simulate_aloha`` uses the same rule to
estimate how many nodes a channel carries.
"""

from __future__ import annotations

import asyncio
import random

from phasecore.airtime import airtime_us


def overlapping(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    return a_start < b_end and b_start < a_end


class _Tx:
    __slots__ = ("radio", "payload", "start", "end")

    def __init__(self, radio: SimRadio, payload: bytes, start: float, end: float):
        self.radio = radio
        self.payload = payload
        self.start = start
        self.end = end


class SimChannel:
    """One LoRa channel (frequency + SF + bandwidth) shared by simulated radios."""

    def __init__(
        self,
        sf: int = 7,
        bw_hz: int = 125000,
        loss: float = 0.0,
        seed: int = 0,
        time_scale: float = 1.0,
        freq_hz: int = 865062500,
        sync_word: int = 0x12,
    ):
        self.sf = sf
        self.bw_hz = bw_hz
        self.freq_hz = freq_hz
        self.sync_word = sync_word
        self.loss = loss
        self.time_scale = time_scale  # < 1 runs faster than real time (airtime shrinks alike)
        self._rng = random.Random(seed)
        self._radios: list[SimRadio] = []
        self._txs: list[_Tx] = []
        self.stats = {"sent": 0, "delivered": 0, "collided": 0, "lost": 0, "airtime_us": 0}

    def radio(self, name: str, queue_size: int = 64) -> SimRadio:
        r = SimRadio(self, name, queue_size)
        self._radios.append(r)
        return r

    def airtime_s(self, payload_len: int) -> float:
        return airtime_us(payload_len, sf=self.sf, bw_hz=self.bw_hz) / 1e6 * self.time_scale

    async def _transmit(self, radio: SimRadio, payload: bytes) -> None:
        if not 0 < len(payload) <= 255:
            raise ValueError("LoRa payload must be 1..255 bytes, got %d" % len(payload))
        loop = asyncio.get_running_loop()
        start = loop.time()
        tx = _Tx(radio, bytes(payload), start, start + self.airtime_s(len(payload)))
        self._txs.append(tx)
        self.stats["sent"] += 1
        self.stats["airtime_us"] += airtime_us(len(payload), sf=self.sf, bw_hz=self.bw_hz)
        radio.transmitting_until = tx.end
        await asyncio.sleep(tx.end - start)
        collided = any(o is not tx and overlapping(tx.start, tx.end, o.start, o.end) for o in self._txs)
        self._prune(loop.time())
        if collided:
            self.stats["collided"] += 1
            return
        for r in self._radios:
            if r is radio:
                continue
            if any(o.radio is r and overlapping(tx.start, tx.end, o.start, o.end) for o in self._txs):
                continue  # half-duplex: r was talking
            if self.loss and self._rng.random() < self.loss:
                self.stats["lost"] += 1
                continue
            r._deliver(tx.payload, radio.name)
            self.stats["delivered"] += 1

    def _prune(self, now: float) -> None:
        horizon = now - 2 * self.airtime_s(255)
        self._txs = [t for t in self._txs if t.end > horizon]


class SimRadio:
    """A radio on a SimChannel: ``await send(payload)``, ``await recv() -> (payload, sender_name)``."""

    def __init__(self, channel: SimChannel, name: str, queue_size: int):
        self.channel = channel
        self.name = name
        self.transmitting_until = 0.0
        self.dropped_rx = 0
        self._rx: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue(queue_size)

    async def send(self, payload: bytes) -> None:
        await self.channel._transmit(self, payload)

    async def recv(self) -> tuple[bytes, str]:
        return await self._rx.get()

    def recv_nowait(self) -> tuple[bytes, str] | None:
        """(payload, sender) or None."""
        try:
            return self._rx.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def _deliver(self, payload: bytes, sender: str) -> None:
        try:
            self._rx.put_nowait((payload, sender))
        except asyncio.QueueFull:
            self.dropped_rx += 1  # a real radio's FIFO overflows the same way


def simulate_aloha(
    nodes: int,
    interval_s: float,
    payload_len: int,
    duration_s: float = 3600,
    sf: int = 7,
    bw_hz: int = 125000,
    jitter: float = 1.0,
    seed: int = 1,
) -> tuple[float, float]:
    """Offline: share of packets that survive when ``nodes`` each send every ``interval_s`` with random phase.

    Returns ``(delivery_ratio, utilisation)``.
    """
    rng = random.Random(seed)
    air = airtime_us(payload_len, sf=sf, bw_hz=bw_hz) / 1e6
    starts: list[float] = []
    for _ in range(nodes):
        t = rng.uniform(0, interval_s)
        while t < duration_s:
            starts.append(t)
            t += interval_s + rng.uniform(-jitter, jitter)
    starts.sort()
    ok = 0
    for i, s in enumerate(starts):
        prev_clear = i == 0 or starts[i - 1] + air <= s
        next_clear = i == len(starts) - 1 or s + air <= starts[i + 1]
        ok += prev_clear and next_clear
    total = len(starts)
    return (ok / total if total else 1.0), total * air / duration_s
