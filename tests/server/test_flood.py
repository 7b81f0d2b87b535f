"""Poison and flood (issue 13), at CI size: the worst messages on every subscribed topic, genuine batches among them.

``phasekit.testing.flood`` publishes, with a stolen Pi's credentials, PER_TOPIC
messages of the worst kinds (huge integers, deep nesting, max-size payloads,
zip bombs, refused records compressed small, millions of records declared) on
each of the server's topics while a genuine Pi sends its readings. The real
server process keeps serving (genuine batches are stored while the flood is
still being worked through), stays under 200 MB resident (measured from /proc),
dead-letters every flood message (except the command topic's, skipped), stores
nothing of the flood, and stores every genuine record.
``phasekit bench server-ingest --flood 10000`` runs the same at full size.
"""

import os

from phasekit.testing import flood

PER_TOPIC = int(os.environ.get("PHASEKIT_FLOOD_PER_TOPIC", "150"))


def test_a_flood_of_the_worst_messages_on_every_topic_costs_no_genuine_record(tmp_path):
    r = flood.run(tmp_path, PER_TOPIC, genuine_batches=20)
    print("flood:", r)
    assert r["server_alive"] and r["tracebacks"] == 0
    assert r["flood_messages"] == PER_TOPIC * len(flood.TOPIC_KINDS)
    assert r["dead_letters"] == r["expected_dead_letters"]
    assert r["flood_records_stored"] == 0
    assert r["genuine_stored"] == r["genuine_records"] == 2000
    assert r["genuine_stored_while_flooded"] > 0  # served while the flood was still being worked through
    assert r["peak_rss_mb"] < 200, r["peak_rss_mb"]
