"""Uplink benchmark (issue 4's targets): bytes a month on a cellular SIM, and drain rate after an outage.

    phasekit bench uplink [--quick] [--json]

Prints tables, asserts nothing; exit status 1 if a target is missed.

(a) Volume. The real uplink (``phasegate.uplink``) runs against a local
Mosquitto with mutual TLS (``phasekit.testing.broker``) through a counting TCP proxy
(``phasekit.testing.netproxy``), so every byte of TLS (handshake, records, tags),
MQTT (CONNECT, PUBLISH, PUBACK, PINGREQ) and payload is counted where it
leaves and enters the Pi's socket, both directions (a SIM bills both). One
hour of a 100-node transformer is simulated on the uplink's clock: readings
every minute from a generated feeder's busiest evening hour
(``phasekit.feeder.generate``, seeded), every node's heartbeat every 5 minutes
(the controller's heartbeat rounds), a summary per period, two moves (event +
ack) and one Pi event. In interval mode nodes' heartbeats go every 6 hours:
the hour gets a sixth of one such batch (measured alone, once). The hour's bytes are scaled to 30 days; added to
that: one reconnect a day (TLS handshake, CONNECT, retained status; measured
once) and the MQTT pings the cadence implies (none when a message goes out at
least once per keepalive; a ping's cost is measured with a 1 s keepalive).
IP and TCP headers are not in the TLS byte count; the last column estimates
them (52 bytes per segment, one segment per ``recv`` at the proxy, and as many
pure ACKs), since a SIM bills IP bytes.

(b) Drain. The buffer is filled with a backlog (100 nodes x N minutes of raw
readings, or a day of interval aggregates) while the broker is down; then the
broker starts and the uplink drains. The rate is records per second from the
uplink's connect to an empty buffer (every batch acknowledged); "PUBLISH/s"
counts MQTT messages (batches). The server (``phaseserver``) is subscribed
throughout; its column is records stored per second, to the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from phasecore import msg
from phasegate.store import Store
from phasegate.uplink import STATE_NODE_HEARTBEAT_SENT, Uplink, UplinkConfig
from phasekit.testing.broker import LocalBroker
from phasekit.testing.netproxy import TcpProxy
from phaseuplink import records

TARGET_MB_MONTH = 10.0
TARGET_DRAIN_PER_S = 5000
NODES = 100
MONTH_HOURS = 30 * 24
RECONNECTS_PER_MONTH = 30
SEGMENT_OVERHEAD = 52  # IPv4 20 + TCP 20 + timestamps option 12
T0 = 1767268800  # 2026-01-01T12:00:00Z: aligned to every period used here
EVENING = 18 * 60  # the feeder's 18:00-19:00, its busiest hour

# A buffer row as ``phaseuplink.records`` builds it: (kind, topic, payload, src, seq, created_s).
Row = tuple[str, str, bytes, int, int | None, int]
# Proxy counts: (bytes up, bytes down, chunks up, chunks down); scaled per hour they become floats.
Counts = tuple[float, ...]


class Clock:
    """The uplink's clock, set by the benchmark."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ the simulated site


class Site:
    """100 nodes' readings, minute by minute, from a generated feeder day (seeded)."""

    def __init__(self, nodes: int = NODES, seed: int = 7):
        from phasekit.feeder.generate import generate

        self.feeder = generate(nodes, seed=seed)
        self.nodes = nodes
        self.seq = [70000 + 1000 * a for a in range(nodes)]
        self.energy = [100000 + 37311 * a for a in range(nodes)]
        self.volt = [2300 + (a * 7) % 60 for a in range(nodes)]

    def minute(self, m: int, t: float) -> list[Row]:
        """The records a controller buffers for minute ``m`` of the day, stamped from ``t``."""
        f = self.feeder
        out: list[Row] = []
        for a in range(self.nodes):
            kw = abs(float(f.load_kw[a, m]))  # the PZEM-004T sees no direction
            pf = max(0.3, min(1.0, float(f.pf[a, m])))
            self.volt[a] = max(2200, min(2450, self.volt[a] + (a * 31 + m * 17) % 5 - 2))
            v = self.volt[a] / 10.0
            self.energy[a] += int(round(kw * 1000 / 60))
            phase = int(f.phase[a])
            status = msg.ST_NOT_SWITCHABLE if phase == 3 else 0
            values = [
                self.volt[a],
                min(100000, int(kw * 1e6 / (v * pf))),
                min(300000, int(kw * 1e4)),
                self.energy[a] & 0xFFFFFFFF,
                499 + (m + a) % 3,
                int(round(pf * 100)),
                phase % 3,
                status,
            ]
            self.seq[a] += 1
            out.append(records.reading(a + 1, self.seq[a], t + 0.02 * a, values))
        return out

    def heartbeats(self, t: float, k: int) -> list[Row]:
        """Every node's answer to the controller's heartbeat round ``k`` (every 5 minutes)."""
        out: list[Row] = []
        for a in range(self.nodes):
            self.seq[a] += 1
            fields = {
                "uptime_s": 86400 * 3 + 300 * k + a,
                "fw": "0.1.0",
                "boots": 4,
                "time_s": int(t),
                "tx": 4400 + 6 * k + a,
                "rx": 4390 + 6 * k + a,
                "rx_bad": a % 3,
                "moves": a % 5,
                "refusals": 0,
                "heap_free": 61000 - 16 * a,
                "phase": int(self.feeder.phase[a]) % 3,
                "status": 0,
            }
            out.append(records.heartbeat(t + 0.02 * a, fields, a + 1, self.seq[a]))
        return out

    def move(self, t: float, addr: int, cid: int) -> list[Row]:
        """A move of node ``addr`` (command ``cid``): its ack and its event."""
        self.seq[addr - 1] += 2
        seq = self.seq[addr - 1]
        cmd = {"id": cid, "op": msg.OP_MOVE, "deadline_s": int(t) + 30, "phase": 2}
        return [
            records.ack(t, cmd, {"id": cid, "outcome": msg.ACK_DONE, "phase": 2}, addr=addr, seq=seq - 1),
            records.event(t, {"code": 4, "value": 0, "value2": 2}, addr=addr, seq=seq),
        ]


def summary(t: float, period: int) -> Row:
    """The controller's summary of the period ending at ``t`` (fixed figures)."""
    return records.summary(
        t,
        {
            "time_s": int(t),
            "period_s": period,
            "i_dA": [1812, 1790, 1845],
            "i_n_dA": 41,
            "cuf_pm": 34,
            "cuf_max_pm": 80,
            "v_dV": [2310, 2306, 2299],
            "nodes": [98, 1, 1, 0],
            "moves": 1,
            "frequency_dHz": 500,
            "backlog": 0,
        },
    )


# ------------------------------------------------------------------ helpers


def broker_config(broker: LocalBroker, port: int, **kw: Any) -> UplinkConfig:
    """The uplink's config for ``broker`` reached on ``port`` (the proxy's or the broker's), plus ``kw``."""
    return UplinkConfig(
        broker.host,
        port,
        site="feeder-12",
        transformer="tx-0457",
        ca=str(broker.tls.ca),
        cert=str(broker.tls.client_cert),
        key=str(broker.tls.client_key),
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        **kw,
    )


async def settle(uplink: Uplink) -> None:
    """Let the uplink act on a clock change and wait until nothing is in flight."""
    uplink.wake()
    quiet = 0
    deadline = time.monotonic() + 30
    while quiet < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        quiet = quiet + 1 if uplink.inflight == 0 else 0


def snapshot(proxy: TcpProxy) -> Counts:
    """The proxy's counts now."""
    return (proxy.up.bytes, proxy.down.bytes, proxy.up.chunks, proxy.down.chunks)


def delta(a: Counts, b: Counts) -> Counts:
    """``b - a``, count by count."""
    return tuple(y - x for x, y in zip(a, b))


# ------------------------------------------------------------------ (a) volume


async def simulate_hour(
    tmp: str, broker: LocalBroker, proxy: TcpProxy, site: Site, name: str, **cfgkw: Any
) -> dict[str, Any]:
    """One hour of the site through the uplink; bytes of the hour, the connect and a heartbeat."""
    cfg = broker_config(broker, proxy.port, heartbeat_s=3600, keepalive_s=1200, **cfgkw)
    # The uplink starts so that its hourly heartbeat falls at minute 32:30 of the hour,
    # away from every period's end and every raw batch, where it can be measured alone.
    hb_t = T0 + 32 * 60 + 30
    clock = Clock(hb_t - 3600)
    store = Store(os.path.join(tmp, "hour-%s.db" % name))
    # Interval mode sends nodes' heartbeats every 6 h: none falls in this hour; one such
    # batch is measured alone after it, and a sixth of it counted per hour.
    store.replace((), (), {STATE_NODE_HEARTBEAT_SENT: T0 - 60})
    uplink = Uplink(store, cfg, clock=clock)
    stop = asyncio.Event()
    proxy.reset_counts()
    task = asyncio.create_task(uplink.run(stop))
    while not uplink.connected:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the retained status' PUBACK
    await settle(uplink)
    connect = snapshot(proxy)
    proxy.reset_counts()
    period = cfg.period_s
    stats0 = dict(uplink.stats)
    heartbeat: Counts | None = None
    publishes: list[float] = []  # clock times of outgoing batches, for the keepalive
    for m in range(60):
        t = T0 + 60 * m + 1
        clock.t = t
        items = site.minute(EVENING + m, t)
        if (60 * m) % period == 0 and m:
            items.append(summary(t + 4, period))  # the controller's summary of the period just ended
        if m in (17, 43):
            items += site.move(t + 8, 10 + m, 1000 + m)
        if m == 30:
            items.append(records.event(t + 9, {"code": 37, "value": 212, "severity": 1}))
        if m % 5 == 0:
            items += site.heartbeats(t + 20, m // 5)
        store.put_many(items)
        before = uplink.stats["batches"]
        await settle(uplink)
        if uplink.stats["batches"] > before:
            publishes.append(t)
        if m == 32:  # the hourly heartbeat, alone
            clock.t = hb_t
            a = snapshot(proxy)
            await settle(uplink)
            heartbeat = delta(a, snapshot(proxy))
            publishes.append(clock.t)
    # Close the hour: the last period's aggregates (after the grace) and the last raw batch.
    clock.t = T0 + 3600 + cfg.grace_s + 1
    store.put_many([summary(T0 + 3600 + 4, period)])
    await settle(uplink)
    publishes.append(clock.t)
    hour = snapshot(proxy)
    stats: dict[str, float] = {k: uplink.stats[k] - stats0.get(k, 0) for k in uplink.stats}
    assert heartbeat is not None  # measured at minute 32
    node_hb: Counts = (0, 0, 0, 0)
    if cfg.mode == "interval":
        store.replace((), (), {STATE_NODE_HEARTBEAT_SENT: clock.t - cfg.node_heartbeat_s})
        hb_before, s_before = snapshot(proxy), dict(uplink.stats)
        await settle(uplink)
        node_hb = delta(hb_before, snapshot(proxy))
        per_hour = 3600 / cfg.node_heartbeat_s
        hour = tuple(h + n * per_hour for h, n in zip(hour, node_hb))
        for k in ("batches", "published", "payload_bytes"):
            stats[k] += (uplink.stats[k] - s_before[k]) * per_hour
    stop.set()
    await task
    store.close()
    gaps = [b - a for a, b in zip([T0] + publishes, publishes)]
    # paho sends a PINGREQ after keepalive_s without traffic: that many per silent gap.
    return {
        "hour": hour,
        "connect": delta(heartbeat, connect),
        "heartbeat": heartbeat,
        "stats": stats,
        "node_heartbeats": node_hb,
        "max_gap_s": max(gaps),
        "pings_per_hour": sum(int(g // cfg.keepalive_s) for g in gaps),
    }


async def measure_ping(tmp: str, broker: LocalBroker, proxy: TcpProxy) -> dict[str, float]:
    """Bytes of one PINGREQ/PINGRESP exchange (TLS records included)."""
    cfg = broker_config(broker, proxy.port, keepalive_s=1, heartbeat_s=10**6)
    store = Store(os.path.join(tmp, "ping.db"))
    uplink = Uplink(store, cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    while not uplink.connected:
        await asyncio.sleep(0.01)
    await settle(uplink)
    await asyncio.sleep(0.3)
    proxy.reset_counts()
    await asyncio.sleep(4.2)
    up, down, up_chunks, down_chunks = snapshot(proxy)
    stop.set()
    await task
    store.close()
    pings = max(1, up_chunks)
    return {"pings": up_chunks, "up": up / pings, "down": down / pings, "total": (up + down) / pings}


def month_of(res: dict[str, Any], ping: dict[str, float]) -> dict[str, float]:
    """A month of the measured hour: MB through TLS, with the pings, and with TCP/IP headers estimated."""
    up, down, upc, downc = res["hour"]
    c_up, c_down, c_upc, c_downc = res["connect"]
    tls = (up + down) * MONTH_HOURS + (c_up + c_down) * RECONNECTS_PER_MONTH
    pings = res["pings_per_hour"] * MONTH_HOURS * ping["total"]
    segments = (upc + downc) * MONTH_HOURS + (c_upc + c_downc) * RECONNECTS_PER_MONTH
    ip = 2 * segments * SEGMENT_OVERHEAD  # each segment's headers, and a pure ACK's
    return {"tls_mb": (tls + pings) / 1e6, "ip_mb": (tls + pings + ip) / 1e6, "pings_mb": pings / 1e6}


SCENARIOS = (
    # name, label, uplink config
    ("raw-60", "raw, batches every 1 min", {"mode": "raw", "raw_batch_s": 60}),
    ("raw-300", "raw, batches every 5 min", {"mode": "raw", "raw_batch_s": 300}),
    ("raw-300-plain", "raw, 5 min, no zlib", {"mode": "raw", "raw_batch_s": 300, "compress": False}),
    ("int-300", "interval 5 min", {"mode": "interval", "period_s": 300}),
    ("int-900", "interval 15 min (default)", {"mode": "interval", "period_s": 900}),
    ("int-900-plain", "interval 15 min, no zlib", {"mode": "interval", "period_s": 900, "compress": False}),
    ("int-3600", "interval 60 min", {"mode": "interval", "period_s": 3600}),
)
QUICK = ("raw-300", "int-900")


async def volume(tmp: str, quick: bool) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """The ping's cost and every scenario's hour and month (``--quick``: two scenarios)."""
    results: dict[str, dict[str, Any]] = {}
    with LocalBroker(os.path.join(tmp, "broker-a")) as broker, TcpProxy(broker.host, broker.port) as proxy:
        ping = await measure_ping(tmp, broker, proxy)
        for name, label, kw in SCENARIOS:
            if quick and name not in QUICK:
                continue
            res = await simulate_hour(tmp, broker, proxy, Site(), name, **kw)
            res.update(month_of(res, ping), label=label)
            results[name] = res
    return ping, results


# ------------------------------------------------------------------ (b) drain


class ServerThread:
    """phaseserver (``phasekit.testing.server``) in a thread, as it runs in production, into a SQLite file."""

    def __init__(self, broker: LocalBroker, db: str) -> None:
        from phasekit.testing.server import ServerThread as _Thread
        from phasekit.testing.server import mqtt_config

        self._thread = _Thread(mqtt_config(broker, db, "bench-server"))

    @property
    def records(self) -> int:
        return int(self._thread.stats["records"])

    def close(self) -> None:
        self._thread.close()


def fill_raw(store: Store, minutes: int) -> None:
    """Buffer ``minutes`` minutes of the site's readings (the evening, a day ago)."""
    site = Site()
    t0 = int(time.time()) - 86400
    for m in range(minutes):
        store.put_many(site.minute((EVENING + m) % 1440, t0 + 60 * m))


def fill_interval(store: Store, days: int) -> None:
    """Buffer ``days`` days of 15-minute aggregates of every node."""
    t0 = int(time.time()) - 86400 * (days + 1)
    fields, _ = records.aggregate(
        900, [(1, [2300, 5000, 10000, 123456, 500, 95, 1, 0]), (15, [2310, 7000, 15000, 123700, 500, 96, 1, 0])], 123400
    )
    for k in range(96 * days):
        store.put_many([records.interval(a, t0 + 900 * k, fields) for a in range(1, NODES + 1)])


async def drain(tmp: str, label: str, fill: Callable[[Store], None], **cfgkw: Any) -> dict[str, Any]:
    """Fill a buffer with ``fill`` while the broker is down, start the broker, time the drain."""
    with LocalBroker(os.path.join(tmp, "broker-" + label.replace(" ", "_")), persistence=True) as broker:
        server = ServerThread(broker, os.path.join(tmp, "server-%s.db" % label.replace(" ", "_")))
        store = Store(os.path.join(tmp, "drain-%s.db" % label.replace(" ", "_")), max_rows=10**7)
        fill(store)
        n = len(store)
        broker.stop()  # the outage: the backlog is in the buffer, the broker is away
        cfg = broker_config(broker, broker.port, raw_batch_s=0.001, heartbeat_s=10**6, **cfgkw)
        uplink = Uplink(store, cfg)
        stop = asyncio.Event()
        task = asyncio.create_task(uplink.run(stop))
        await asyncio.sleep(0.2)
        broker.start()
        t_broker = time.perf_counter()
        while not uplink.connected:
            await asyncio.sleep(0.001)
        t_connect = time.perf_counter()
        while len(store):
            await asyncio.sleep(0.002)
        t_empty = time.perf_counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = server.records
            if stored >= n:
                break
            await asyncio.sleep(0.005)
        t_server = time.perf_counter()
        stop.set()
        await task
        store.close()
        server.close()
        dt = t_empty - t_connect
        return {
            "label": label,
            "records": n,
            "batches": uplink.stats["batches"],
            "seconds": dt,
            "from_broker_start_s": t_empty - t_broker,
            "records_per_s": n / dt,
            "publish_per_s": uplink.stats["batches"] / dt,
            "server_records": stored,
            "server_per_s": stored / (t_server - t_connect),
            "payload_bytes": uplink.stats["payload_bytes"],
        }


async def drains(tmp: str, quick: bool) -> list[dict[str, Any]]:
    """The drain of each backlog (``--quick``: the short one only)."""
    out = [await drain(tmp, "raw 100 nodes x 10 min", lambda s: fill_raw(s, 10), mode="raw")]
    if not quick:
        out.append(await drain(tmp, "raw 100 nodes x 10 h", lambda s: fill_raw(s, 600), mode="raw"))
        out.append(await drain(tmp, "interval 100 nodes x 1 day", lambda s: fill_interval(s, 1), mode="interval"))
    return out


# ------------------------------------------------------------------ report


def report(ping: dict[str, float], vol: dict[str, dict[str, Any]], drained: Sequence[dict[str, Any]]) -> None:
    """Print both tables."""
    print("(a) Uplink volume, 100 nodes at 1-minute readings, measured through TLS to Mosquitto, scaled to 30 days")
    print(
        "    (+ %d reconnects a month, + the keepalive pings the cadence needs; target < %.0f MB a month)"
        % (RECONNECTS_PER_MONTH, TARGET_MB_MONTH)
    )
    print()
    head = "%-26s %8s %8s %9s %9s %9s %8s %9s %9s %6s" % (
        "mode",
        "PUBLISH",
        "records",
        "payload",
        "TLS up",
        "TLS down",
        "B/rec",
        "MB/month",
        "+TCP/IP",
        "ok",
    )
    print(head)
    print(
        "%-26s %8s %8s %9s %9s %9s %8s %9s %9s"
        % ("", "/hour", "/hour", "B/hour", "B/hour", "B/hour", "", "(TLS)", "(est.)")
    )
    print("-" * len(head))
    for _name, r in vol.items():
        up, down, _, _ = r["hour"]
        recs = r["stats"]["published"]
        print(
            "%-26s %8d %8d %9d %9d %9d %8.1f %9.2f %9.2f %6s"
            % (
                r["label"],
                r["stats"]["batches"],
                recs,
                r["stats"]["payload_bytes"],
                up,
                down,
                (up + down) / max(recs, 1),
                r["tls_mb"],
                r["ip_mb"],
                "yes" if r["ip_mb"] < TARGET_MB_MONTH else "no",
            )
        )
    any_r = next(iter(vol.values()))
    c_up, c_down, _, _ = any_r["connect"]
    h_up, h_down, _, _ = any_r["heartbeat"]
    print()
    print(
        "one connect (TLS 1.3 handshake with client certificate, CONNECT/CONNACK, retained status): "
        "%d B up + %d B down" % (c_up, c_down)
    )
    print(
        "one heartbeat batch with its PUBACK: %d B up + %d B down; one keepalive ping exchange: %.0f B"
        % (h_up, h_down, ping["total"])
    )
    d = vol.get("int-900")
    if d:
        n_up, n_down, _, _ = d["node_heartbeats"]
        print(
            "interval mode: one batch of the 100 nodes' latest heartbeats, every 6 h: %d B up + %d B down"
            " (in the table as a sixth per hour)" % (n_up, n_down)
        )
    d = vol.get("int-900")
    if d:
        per_ping_month = ping["total"] * 3600 / 300 * MONTH_HOURS / 1e6
        print(
            "keepalive: the default (1200 s) outlasts the 900 s gap between messages, so no pings; a carrier "
            "that drops idle TCP after 5 min needs keepalive_s = 240-300: at most +%.2f MB a month" % per_ping_month
        )
    print()
    print(
        "(b) Drain after an outage (broker started with the backlog in the buffer; Pi rate = records acknowledged"
        " and deleted per second from connect to empty buffer)"
    )
    print()
    head = "%-28s %8s %8s %9s %11s %10s %12s %12s" % (
        "backlog",
        "records",
        "PUBLISH",
        "drain ms",
        "records/s",
        "PUBLISH/s",
        "server rec/s",
        "from start s",
    )
    print(head)
    print("-" * len(head))
    for r in drained:
        print(
            "%-28s %8d %8d %9.0f %11.0f %10.1f %12.0f %12.2f"
            % (
                r["label"],
                r["records"],
                r["batches"],
                r["seconds"] * 1000,
                r["records_per_s"],
                r["publish_per_s"],
                r["server_per_s"],
                r["from_broker_start_s"],
            )
        )
    print()
    print(
        "A record is one reading, aggregate, summary, event or ack; a PUBLISH is one MQTT message (a batch of up"
        " to 1000 records)."
    )
    print(
        "Target: %d messages/s, read as records/s (a batch of records is what a message carries)."
        " The drain is timed from the MQTT session being up (after the TLS handshake) to the last batch's PUBACK"
        ' and delete; a 1,000-record backlog lasts a few round trips, so its rate is coarse. "from start" is'
        " the whole recovery: broker start to empty buffer, with the reconnect back-off (0.05-0.2 s here) and"
        " the TLS handshake." % TARGET_DRAIN_PER_S
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench uplink``."""
    parser.add_argument("--quick", action="store_true", help="two volume scenarios and the short drain only")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON object")


def main(args: argparse.Namespace) -> int:
    """Measure and print; 1 if a target is missed."""

    async def run() -> tuple[dict[str, float], dict[str, dict[str, Any]], list[dict[str, Any]]]:
        with tempfile.TemporaryDirectory(prefix="phasekit-bench-uplink-") as tmp:
            ping, vol = await volume(tmp, args.quick)
            drained = await drains(tmp, args.quick)
            return ping, vol, drained

    ping, vol, drained = asyncio.run(run())
    report(ping, vol, drained)
    if args.json:
        print(json.dumps({"ping": ping, "volume": vol, "drain": drained}, sort_keys=True, default=list))
    default = vol["int-900"]
    ok = default["ip_mb"] < TARGET_MB_MONTH and all(r["records_per_s"] >= TARGET_DRAIN_PER_S for r in drained)
    return 0 if ok else 1
