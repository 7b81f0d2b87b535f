"""Uplink batches as a transformer Pi sends them, built without a Pi: for server tests and benchmarks.

``encode(items)`` turns record tuples from ``phaseuplink.records`` builders
(``(kind, topic, payload, src, seq, t_s)``) into one MQTT payload exactly as
``phaseuplink.records.encode_batch`` makes it for the Pi's buffer rows; a
record the Pi would sequence (``seq`` None) gets ``pi_seq``, ``pi_seq + 1``,
... ``readings(...)`` makes realistic 1-minute readings of a street: each
node's current follows an evening-peaked daily shape with its own size and
noise, its energy counter integrates it, and a few nodes sit on each phase.
"""

from __future__ import annotations

import math
import random
from collections import namedtuple
from collections.abc import Iterable, Sequence
from typing import Any

from phaseuplink import records, topics

__all__ = ("encode", "readings", "reading_values", "batches", "SAMPLE_SUMMARY", "topic")

_Row = namedtuple("_Row", "id kind topic payload sender seq created_s")

SAMPLE_SUMMARY = {
    "time_s": 0,
    "period_s": 900,
    "i_dA": [812, 790, 845],
    "cuf_pm": 34,
    "nodes": [97, 2, 1, 0],
    "moves": 1,
}


def topic(site: str, transformer: str, kind: str) -> str:
    return topics.topic_for(site, transformer, kind)


def encode(items: Sequence[tuple[Any, ...]], pi_seq: int = 1 << 32, compress: bool = True) -> bytes:
    """One batch payload of ``items`` (record builder tuples, all of one kind)."""
    rows = []
    for i, (kind, top, payload, src, seq, t_s) in enumerate(items):
        rows.append(_Row(i + 1, kind, top, payload, src, pi_seq + i if seq is None else seq, t_s))
    payload, _ = records.encode_batch(rows, compress=compress)
    return payload


def reading_values(addr: int, t_s: int, rng: random.Random, energy: float, size: float) -> tuple[list[int], float]:
    """One node's 8 reading values at ``t_s`` and its energy counter after it (a daily load shape)."""
    hour = (t_s % 86400) / 3600.0
    shape = 0.35 + 0.25 * math.exp(-((hour - 8.0) ** 2) / 4.0) + 0.9 * math.exp(-((hour - 19.5) ** 2) / 3.0)
    current = max(0.05, size * shape * (1.0 + 0.15 * rng.gauss(0, 1)))  # amperes
    voltage = 230.0 + 4.0 * rng.gauss(0, 1) - 0.02 * current
    pf = min(1.0, max(0.5, 0.93 + 0.04 * rng.gauss(0, 1)))
    power = voltage * current * pf
    energy += power / 60.0  # Wh in one minute
    values = [
        int(round(voltage * 10)),
        int(round(current * 1000)),
        int(round(power * 10)),
        int(energy),
        500 + rng.choice((-1, 0, 0, 1)),
        int(round(pf * 100)),
        addr % 3,
        0,
    ]
    return values, energy


def readings(nodes: int, t0: int, minutes: int, seed: int = 1, seq0: int = 1000) -> list[tuple[Any, ...]]:
    """Record tuples of ``nodes`` nodes' 1-minute readings from ``t0``, node by node within each minute."""
    rng = random.Random(seed)
    sizes = {a: rng.uniform(1.5, 9.0) for a in range(1, nodes + 1)}
    energy = {a: rng.uniform(1e5, 5e6) for a in range(1, nodes + 1)}
    out = []
    for m in range(minutes):
        t = t0 + 60 * m + 0
        for a in range(1, nodes + 1):
            values, energy[a] = reading_values(a, t + a % 30, rng, energy[a], sizes[a])
            out.append(records.reading(a, seq0 + m, t + a % 30, values))
    return out


def batches(items: Sequence[tuple[Any, ...]], size: int = 1000, pi_seq: int = 1 << 32) -> Iterable[bytes]:
    """``items`` in batches of ``size`` records, as the Pi's uplink sends them."""
    for i in range(0, len(items), size):
        yield encode(items[i : i + size], pi_seq=pi_seq + i)
