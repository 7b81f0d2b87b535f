"""A transformer's day as its Pi would send it: readings, summaries, heartbeats, the balancer's moves, events.

``street_day(site, transformer, end_s)`` builds every record with
``phaseuplink.records`` (the uplink contract the Pi uses) and batches them
as the Pi's uplink does in raw mode (one batch of each kind every
``batch_s``, 300 s by default), returning ``(topic, payload, received_s)``
in arrival order for ``ingest(core, messages)`` to hand to a server's real
ingest core. The day: ``nodes`` houses on three phases with evening-peaked
loads (``phasekit.testing.batches.readings``), the Pi's 15-minute summaries
computed from those readings (mean phase currents, neutral estimate, CUF
by ``phasecore.metrics.cuf``), node and Pi heartbeats (firmware, backlog),
the balancer's moves with their acknowledgements around the evening peak,
and optionally a relay that did not switch (the Pi's ``MOVE_NOT_VERIFIED``
alarm event) and a node that falls silent before the end; the server's
alarm engine raises ``relay_fault`` and ``node_silent`` from those, as it
would from a real Pi.

The one thing to know: record times end at ``end_s``, so pass a time near
now (the ingest refuses records from too far in the future or past).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from phasecore import codes, metrics
from phasekit.testing import batches
from phaseuplink import records

__all__ = ("street_day", "ingest", "PI_FW", "NODE_FW")

PI_FW = "phasegate 0.9.1"
NODE_FW = ("phasenode 1.3.0", "phasenode 1.2.4")


def street_day(
    site: str,
    transformer: str,
    end_s: int,
    nodes: int = 24,
    hours: int = 24,
    seed: int = 5,
    batch_s: int = 300,
    moves: int = 6,
    relay_fault_node: int | None = None,
    silent_node: int | None = None,
    silent_s: int = 2400,
) -> list[tuple[str, bytes, float]]:
    """The messages of ``hours`` of one transformer ending at ``end_s``, as (topic, payload, received_s)."""
    end_s -= end_s % 60
    t0 = end_s - hours * 3600
    by_kind: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    # Each house's 1-minute readings (the load shapes of phasekit.testing.batches), and per minute the
    # current on each phase as the Pi's meter would see it.
    rng = random.Random(seed)
    sizes = {a: rng.uniform(1.5, 9.0) for a in range(1, nodes + 1)}
    energy = {a: rng.uniform(1e5, 5e6) for a in range(1, nodes + 1)}
    per_minute: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    quiet_from = end_s - silent_s if silent_node is not None else end_s
    for m in range(hours * 60):
        t = t0 + 60 * m
        for a in range(1, nodes + 1):
            values, energy[a] = batches.reading_values(a, t + a % 30, rng, energy[a], sizes[a])
            if a == silent_node and t >= quiet_from:
                continue
            by_kind["reading"].append(records.reading(a, 1000 + m, t + a % 30, values))
            per_minute[t][values[6]] += values[1] / 1000.0

    # The Pi's summary of each 15-minute period, from what its nodes reported.
    period = 900
    for p0 in range(t0, end_s, period):
        minutes = [per_minute[t] for t in range(p0, p0 + period, 60) if t in per_minute]
        if not minutes:
            continue
        mean = [sum(m[k] for m in minutes) / len(minutes) for k in range(3)]
        neutral = _neutral(mean)
        cuf = metrics.cuf(*mean)
        cuf_max = max(metrics.cuf(*m) for m in minutes)
        summary = {
            "time_s": p0 + period,
            "period_s": period,
            "i_dA": [int(round(10 * x)) for x in mean],
            "i_n_dA": int(round(10 * neutral)),
            "cuf_pm": min(2000, int(round(1000 * cuf))),
            "cuf_max_pm": min(2000, int(round(1000 * cuf_max))),
            "nodes": [sum(1 for a in range(1, nodes + 1) if a % 3 == k) for k in range(3)] + [0],
            "moves": 0,
        }
        by_kind["summary"].append(records.summary(p0 + period, summary))

    # Heartbeats: each node's once an hour (firmware, uptime), the Pi's every 15 minutes (backlog).
    for h in range(hours):
        t = t0 + 3600 * h + 45
        for a in range(1, nodes + 1):
            if silent_node == a and t >= end_s - silent_s:
                continue
            fw = NODE_FW[1] if a % 7 == 0 else NODE_FW[0]
            by_kind["node_heartbeat"].append(
                records.heartbeat(t, {"uptime_s": 86400 * 3 + 3600 * h, "fw": fw, "boots": 2}, a, 500000 + h)
            )
    for t in range(t0 + 60, end_s, 900):
        by_kind["heartbeat"].append(
            records.pi_heartbeat(t, {"uptime_s": t - t0 + 86400, "fw": PI_FW, "backlog": 0, "dropped": 0})
        )

    # The balancer's moves around the evening peak (18:00-21:00 of the data's clock), each acknowledged.
    peak = t0 + ((18 * 3600 - t0) % 86400)
    if peak + 3 * 3600 > end_s:
        peak -= 86400
    peak = max(t0, peak)
    for k in range(moves):
        t = peak + k * (3 * 3600 // max(1, moves)) + 120
        addr = 1 + (k * 5) % nodes
        before = addr % 3
        to = (before + 1) % 3
        command = {"id": 100 + k, "op": codes.OP_MOVE, "deadline_s": t + 600, "phase": to, "expect_phase": before}
        ack = {"id": 100 + k, "outcome": 0, "phase": to}
        by_kind["ack"].append(records.ack(t, command, ack, addr=addr, seq=800000 + k))
    if relay_fault_node is not None:
        t = end_s - 1800
        event = {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 0, "node": relay_fault_node, "severity": 2}
        by_kind["alarm"].append(records.event(t, event))

    # The uplink: every batch_s, one batch per kind of what was recorded since the last (raw mode).
    out: list[tuple[str, bytes, float]] = [(batches.topic(site, transformer, "status"), b"online", float(t0))]
    pi_seq = 1 << 33
    for kind, items in sorted(by_kind.items()):
        windows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for item in items:
            windows[(item[5] - t0) // batch_s].append(item)
        for w, group in sorted(windows.items()):
            received = t0 + (w + 1) * batch_s + 2.0
            for i in range(0, len(group), 1000):
                part = group[i : i + 1000]
                out.append((batches.topic(site, transformer, kind), batches.encode(part, pi_seq=pi_seq), received))
                pi_seq += len(part)
    out.sort(key=lambda m: m[2])
    return out


def _neutral(mean: list[float]) -> float:
    # Phase currents at 0, -120 and +120 degrees (unity power factor): the magnitude of their sum.
    re = mean[0] - 0.5 * (mean[1] + mean[2])
    im = math.sqrt(3) / 2 * (mean[2] - mean[1])
    return math.hypot(re, im)


def ingest(core: Any, messages: Iterable[tuple[str, bytes, float]], now: bool = False) -> int:
    """Hand ``messages`` to a server's ingest core in order; returns the records stored (new).

    ``now``: every message is received at the server's present moment, as when a Pi that was cut off
    drains its buffer; else at the time in the message (a replay of the day as it happened). A server
    whose alarm engine runs on the wall clock needs ``now``: a day of arrivals in the past would look
    to it like a transformer whose batches are all overdue.
    """
    new = 0
    for topic, payload, received in messages:
        outcome = core.handle(topic, payload, None if now else received)
        new += int(getattr(outcome, "new", 0) or 0)
    return new
