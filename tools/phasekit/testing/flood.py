"""The poison-and-flood experiment (issue 13): the worst messages on every subscribed topic, genuine batches among them.

``run(folder, per_topic)`` starts Mosquitto (mutual TLS) and a real server
process (``python -m phaseserver run``, SQLite or PostgreSQL), then publishes,
with a Pi's credentials (the broker's ACL lets a stolen Pi publish under its
own prefix), ``per_topic`` messages of the worst kinds on each topic the
server subscribes to (every record kind, ``status``, ``command`` and a kind
that does not exist), cycling through:

- huge integers: records whose fields are CBOR bignums of thousands of digits;
- deep nesting: an array nested as deep as the payload allows;
- max-size payloads: ``max_payload_bytes`` of incompressible bytes behind a batch header;
- zip bombs: 50 MB of zeros, about 50 kB compressed;
- refused records compressed small: a batch of the most records the cap allows,
  each breaking its schema, a few hundred bytes compressed; and one declaring
  millions of records.

The flood is published at the broker's pace for the server: at most
``window`` messages ahead of what the server has handled (the broker would
otherwise hold gigabytes for it; its memory is the broker's configuration's
business, not the server's). Meanwhile a genuine Pi (another transformer) publishes batches of readings at
a steady pace. The server's resident memory is sampled from /proc every 20 ms.
The run ends when every genuine record is stored and every flood message is
accounted for (dead-lettered, or skipped for the command topic); it returns
the numbers: messages and bytes sent, peak RSS, genuine records stored (and
how many already while the flood was still being worked through), seconds.
Tests run it at a CI size; ``phasekit bench server-ingest --flood`` at full size.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from phasekit.testing.batches import encode, readings, topic
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import server_toml, wait_subscribed
from phasekit.testing.processes import Children, proc_status, say
from phaseuplink import records
from phaseuplink.tls import mqtt_client

__all__ = ("run", "worst_payloads", "TOPIC_KINDS")

TOPIC_KINDS = (*records.KINDS, "status", "command", "nonsense")
_SITE = "s1"
_ATTACKED = "t-stolen"
_GENUINE = "t-genuine"


def _head(mt: int, n: int) -> bytes:
    if n < 24:
        return bytes([mt << 5 | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([mt << 5 | ai]) + n.to_bytes(size, "big")
    raise ValueError("too large")


def worst_payloads(kind: str, max_payload: int, max_records: int) -> list[bytes]:
    """The flood's payloads for one topic kind (one of each worst kind)."""
    t0 = int(time.time())
    header = b"\x83\x01" + _head(0, t0)
    if kind in ("status", "command", "nonsense"):
        return [os.urandom(max_payload), b"\xff" * 70, zlib.compress(b"\x00" * (50 << 20), 9)]
    bignum = b"\xc2" + _head(2, 8000) + b"\x7f" * 8000  # ~19,000 decimal digits
    # 8 records whose src, seq and all 8 reading fields are bignums: ~19,000 digits each.
    huge = header + _head(4, 8) + (b"\x84" + bignum + bignum + b"\x00" + b"\x88" + bignum + b"\x00" * 7) * 8
    deep = b"\x81" * (max_payload - 1) + b"\x00"
    noise = header + _head(4, max_records) + os.urandom(max_payload - len(header) - 5)
    bomb = zlib.compress(b"\x00" * (50 << 20), 9)
    bad_record = b"\x84\x01\x01\x00\x82\x01\x02"  # a reading body that breaks the schema
    refused = zlib.compress(header + _head(4, max_records) + bad_record * max_records, 9)
    millions = zlib.compress(header + _head(4, 3_000_000) + bad_record * 3_000_000, 9)
    return [p[:max_payload] for p in (huge, deep, noise, bomb, refused, millions)]


def _client(broker: LocalBroker, client_id: str) -> Any:
    c = mqtt_client(client_id, ca=broker.tls.ca, cert=broker.tls.client_cert, key=broker.tls.client_key)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def run(
    folder: str | Path,
    per_topic: int,
    genuine_batches: int = 40,
    engine: str = "sqlite",
    dsn: str = "",
    max_payload: int = 256 * 1024,
    timeout_s: float = 1800,
    window: int = 2000,
) -> dict[str, Any]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    max_records = 2000
    plan = []
    for kind in TOPIC_KINDS:
        payloads = worst_payloads(kind, max_payload, max_records)
        t = topic(_SITE, _ATTACKED, kind)
        plan.append((t, payloads))
    expected_dead = sum(per_topic for kind in TOPIC_KINDS if kind != "command")
    genuine_items = readings(50, int(time.time()) - 6 * 3600, genuine_batches * 2, seed=7)
    genuine = [encode(genuine_items[i : i + 100]) for i in range(0, len(genuine_items), 100)]
    with LocalBroker(folder / "broker", max_queued=10**7) as broker, Children() as children:
        cfg = server_toml(broker, folder, "flood-server", max_payload_bytes=max_payload, max_records=max_records)
        text = cfg.read_text().replace("[storage]\n", "[storage]\ndead_letter_max_rows = 10000000\n")
        if engine == "postgres":
            text = text.replace('path = "%s"' % (folder / "server.db"), 'engine = "postgres"\ndsn = "%s"' % dsn)
        cfg.write_text(text)
        log = open(folder / "server.log", "a")
        server = children.start(["-m", "phaseserver", "run", "--config", str(cfg)], log)
        wait_subscribed(folder / "server.log", 1, proc=server)
        from phaseserver import config as _config
        from phaseserver.store import open_store

        view = open_store(_config.load(cfg))
        counter = open_store(_config.load(cfg))  # the flood thread's own connection
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set() and server.poll() is None:
                try:
                    peak[0] = max(peak[0], proc_status(server.pid).get("VmRSS", 0.0))
                except OSError:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flood_client = _client(broker, "pi-stolen")
        pi_client = _client(broker, "pi-genuine")
        sent = {"flood": 0, "flood_bytes": 0, "genuine": 0}
        t_start = time.monotonic()

        def handled() -> int:
            return int(counter.db.scalar("SELECT COUNT(*) FROM dead_letter", (), 0))

        def flood() -> None:
            infos = []
            dead_sent = 0
            for i in range(per_topic):
                for t, payloads in plan:
                    p = payloads[i % len(payloads)]
                    infos.append(flood_client.publish(t, p, qos=1))
                    sent["flood"] += 1
                    sent["flood_bytes"] += len(p)
                    dead_sent += not t.endswith("/command")
                if len(infos) > 500:
                    for info in infos:
                        info.wait_for_publish(120)
                    infos = []
                    # At most `window` messages ahead of the server: the broker (whose memory is its own
                    # configuration's business, not the server's) does not pile up gigabytes meanwhile.
                    while dead_sent - handled() > window and server.poll() is None:
                        time.sleep(0.05)
            for info in infos:
                info.wait_for_publish(120)

        def pi() -> None:
            gap = 0.05
            for p in genuine:
                pi_client.publish(topic(_SITE, _GENUINE, "reading"), p, qos=1).wait_for_publish(120)
                sent["genuine"] += 1
                time.sleep(gap)

        threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=pi, daemon=True)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout_s)
        t_published = time.monotonic() - t_start
        say("flood: %d messages (%.1f MB) and %d genuine batches published in %.1f s"
            % (sent["flood"], sent["flood_bytes"] / 1e6, sent["genuine"], t_published))  # fmt: skip
        genuine_during = view.count_rows("reading", _SITE, _GENUINE)
        deadline = time.monotonic() + timeout_s
        dead = 0
        while time.monotonic() < deadline and server.poll() is None:
            stored = view.count_rows("reading", _SITE, _GENUINE)
            dead = int(view.db.scalar("SELECT COUNT(*) FROM dead_letter", (), 0))
            if stored >= len(genuine_items) and dead >= expected_dead:
                break
            time.sleep(0.25)
        t_done = time.monotonic() - t_start
        sampling.set()
        sampler.join(2)
        alive = server.poll() is None
        hwm = proc_status(server.pid).get("VmHWM", 0.0) if alive else 0.0
        stored = view.count_rows("reading", _SITE, _GENUINE)
        flood_rows = view.count_rows("reading", _SITE, _ATTACKED)
        view.close()
        counter.close()
        for c in (flood_client, pi_client):
            c.disconnect()
            c.loop_stop()
        children.end(server)
        log.close()
        server_log = (folder / "server.log").read_text(errors="replace")
    return {
        "per_topic": per_topic,
        "topics": len(TOPIC_KINDS),
        "flood_messages": sent["flood"],
        "flood_mb": sent["flood_bytes"] / 1e6,
        "expected_dead_letters": expected_dead,
        "dead_letters": dead,
        "flood_records_stored": flood_rows,
        "genuine_records": len(genuine_items),
        "genuine_stored": stored,
        "genuine_stored_while_flooded": genuine_during,
        "peak_rss_mb": max(peak[0], hwm),
        "publish_s": t_published,
        "done_s": t_done,
        "server_alive": alive,
        "tracebacks": server_log.count("Traceback"),
    }
