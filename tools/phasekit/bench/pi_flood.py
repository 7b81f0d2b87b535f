"""Pi under a flood (issue 13's target): 10,000 worst-kind messages on each input, nothing genuine lost.

The real gateway process polls sealed simulated nodes over a pty RS-485 line
and holds its MQTT/TLS session with Mosquitto while the command topic gets
``--messages`` publishes of the worst kinds (forged sealed commands, hostile
CBOR, payloads of ``--oversize-kb``, replays), a node with a stolen key
answers every poll with an alarm event, one line is noisy and one corrupts;
a LoRa relay's buffer takes ``--relay-frames`` forged frames from one
address. Targets: the gateway keeps polling and exits cleanly, buffers every
genuine reading (at most the one reply per node in flight at the stop),
stays under 200 MB resident (VmHWM from /proc), a genuine operator command
after the flood still moves its node, and the relay keeps every genuine
row and its own. Exit status 1 if one is missed. The harness is
``phasekit.testing.pi_flood``; ``tests/gateway/test_pi_flood.py`` runs it CI-sized.
"""

from __future__ import annotations

import argparse
import json
import tempfile

from phasekit.testing.pi_flood import RSS_LIMIT_MB, run
from phasekit.testing.processes import say

EXAMPLE = """examples:
  phasekit bench pi-flood
  phasekit bench pi-flood --messages 2000 --oversize-kb 128 --relay-frames 2000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench pi-flood``."""
    p.add_argument("--messages", type=int, default=10000, help="publishes on the command topic (default 10000)")
    p.add_argument("--oversize-kb", type=int, default=1024, help="size of the oversized payloads, KiB (default 1024)")
    p.add_argument("--relay-frames", type=int, default=10000, help="forged frames at the LoRa relay (default 10000)")
    p.add_argument("--workdir", help="keep logs and databases here (default: a temporary folder, removed)")
    p.add_argument("--json", action="store_true", help="also print all results as one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.workdir:
        res = run(args.workdir, args.messages, args.oversize_kb * 1024, args.relay_frames, say=say)
    else:
        with tempfile.TemporaryDirectory(prefix="pi-flood-") as work:
            res = run(work, args.messages, args.oversize_kb * 1024, args.relay_frames, say=say)
    refused = res["refused"]
    rows = [
        (
            "command-topic messages published",
            "%d (%d KiB oversized every 5th)" % (res["messages"], args.oversize_kb),
            "",
            None,
        ),
        ("publish time / until the Pi was quiet", "%.1f s / %.1f s" % (res["publish_s"], res["flood_s"]), "", None),
        ("gateway CPU during the flood (one core)", "%.0f %%" % res["gateway_cpu_pct_flood"], "", None),
        ("refused by the gate", ", ".join("%s %d" % kv for kv in sorted(refused.items())), "", None),
        ("oversized ones that reached the Pi", "%d" % res["oversize_seen_by_pi"], "0", res["oversize_seen_by_pi"] == 0),
        (
            "polls of each honest node during the flood",
            "%d (%d periods)" % (res["polls_during_flood"], res["polls_expected"]),
            ">= half the periods",
            res["polls_during_flood"] >= max(1, res["polls_expected"] // 2),
        ),
        (
            "honest readings buffered / sent",
            "%d / %d" % (res["honest_readings_buffered"], res["honest_readings_sent"]),
            "all (1 in flight per node)",
            all(m <= 1 for m in res["missing_per_node"].values()),
        ),
        (
            "gateway RSS max sampled / VmHWM",
            "%.1f / %.1f MB" % (res["rss_max_mb"], res["rss_hwm_mb"]),
            "< %d MB" % RSS_LIMIT_MB,
            res["rss_hwm_mb"] < RSS_LIMIT_MB,
        ),
        (
            "exit code / crashes / tracebacks",
            "%d / %d / %d" % (res["exit_code"], res["crashes"], res["tracebacks"]),
            "0 / 0 / 0",
            res["exit_code"] == 0 and res["crashes"] == 0 and res["tracebacks"] == 0,
        ),
        (
            "genuine command before / after the flood moved",
            "%s / %s" % (res["genuine_before_flood_moved"], res["genuine_after_flood_moved"]),
            "yes / yes",
            res["genuine_before_flood_moved"] and res["genuine_after_flood_moved"],
        ),
        (
            "stolen-key node polls (alarm events) / noisy line polls",
            "%d / %d" % (res["thief_polls"], res["noise_polls"]),
            "",
            None,
        ),
        (
            "relay: forged frames, rate",
            "%d at %.0f frames/s" % (res["relay_frames"], res["relay_frames_per_s"]),
            "",
            None,
        ),
        (
            "relay: genuine kept / sent, own record kept",
            "%d / %d, %d" % (res["relay_genuine_kept"], res["relay_genuine_sent"], res["relay_own_kept"]),
            "all, 1",
            res["relay_genuine_kept"] == res["relay_genuine_sent"] and res["relay_own_kept"] == 1,
        ),
    ]
    print("%-52s %-44s %-26s %s" % ("measure", "value", "target", "met"))
    for name, value, target, ok in rows:
        print("%-52s %-44s %-26s %s" % (name, value, target, "" if ok is None else ("yes" if ok else "NO")))
    if args.json:
        print(json.dumps(res, sort_keys=True))
    return 0 if all(ok for _, _, _, ok in rows if ok is not None) else 1
