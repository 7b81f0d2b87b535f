"""The Pi under a flood of its worst inputs, CI-sized (``phasekit bench pi-flood`` runs it at full scale).

Real Mosquitto, the real gateway process, sealed simulated nodes on a pty:
hostile and oversized operator commands on the command topic, a node with a
stolen key flooding alarm events over the bus, a noisy and a corrupting
line, forged frames at a LoRa relay. The Pi keeps polling, buffers every
genuine reading, stays under 200 MB resident, exits cleanly, and a genuine
operator command after the flood still moves its node.
"""

from phasekit.testing.pi_flood import RSS_LIMIT_MB, run


def test_the_pi_keeps_serving_and_loses_no_genuine_record_under_a_flood(tmp_path):
    r = run(tmp_path, messages=1500, oversize_bytes=128 * 1024, relay_frames=1500)
    assert r["exit_code"] == 0 and r["crashes"] == 0 and r["tracebacks"] == 0, r
    # Polling went on through the flood: each honest node polled at least every other period.
    assert r["polls_during_flood"] >= max(1, r["polls_expected"] // 2), r
    # Every reading an honest node sent was buffered; only a reply in flight at the stop may be missing.
    assert all(m <= 1 for m in r["missing_per_node"].values()), r
    assert r["honest_readings_buffered"] >= 30, r
    assert r["rss_hwm_mb"] < RSS_LIMIT_MB, r
    assert r["genuine_before_flood_moved"] and r["genuine_after_flood_moved"], r
    # Every flood message was refused and counted (300 of each kind that reached the Pi), each one
    # a dead letter; the alarms are journaled once per reason and minute, the rest counted.
    refused = r["refused"]
    assert sum(v for k, v in refused.items() if k != "accepted") == 1200 and refused["accepted"] == 2, r
    assert refused["bad_tag"] == 300 and refused["replay"] == 300, r
    assert r["dead_letters"]["command"] == 1200 and r["controller"]["operator_refusals_unjournaled"] >= 1190, r
    # The oversized ones never reached the Pi: the broker honours its MQTT 5 Maximum Packet Size.
    assert r["oversize_seen_by_pi"] == 0, r
    assert r["dead_letters_listed"], r
    assert r["relay_genuine_kept"] == r["relay_genuine_sent"] and r["relay_own_kept"] == 1, r
