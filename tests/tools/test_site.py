"""``phasekit site run`` at CI size: every tier's real code, every fault of the default plan, the summary asserted.

A site of 10 houses (7 nodes in process and 2 on the MicroPython unix port on
one RS-485 line, one on LoRa through a LoRa gateway process), the real
transformer Pi (``phasekit gateway run``), Mosquitto
with the site PKI, the server; six hours of a generated street in about 30
wall seconds, with all five faults of the default plan packed into them. The
run is the real command in its own process; the test reads its JSON summary:

- nothing lost: every reading a node put on the line is buffered by the Pi
  and stored by the server, once, or its loss is explained by a named fault;
- every alarm raised is cleared (a refused command stays on record: it is an
  audit fact, not a condition), and the silent node's alarm is raised and cleared;
- the forged command is refused by the Pi (and audited, where the server
  keeps an audit log);
- no relay left its limits (dwell, budgets, dead time, never two phases).

Then Ctrl-C: a run interrupted in the middle of its day ends every process
it started, leaves databases that pass SQLite's integrity check, and a second
run in the same folder starts cleanly and finishes.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phasekit.testing.broker import BrokerError, mosquitto_binary

try:
    mosquitto_binary()
    HAVE_MOSQUITTO = True
except BrokerError:
    HAVE_MOSQUITTO = False

pytestmark = pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto is not installed (scripts/bootstrap as root)")

PLAN = """
[[fault]]
kind = "node_silent"
at = "01:00"
for_min = 15

[[fault]]
kind = "relay_stuck"
at = "01:30"
repair_after_min = 60
retry_after_min = 20

[[fault]]
kind = "forged_command"
at = "03:00"

[[fault]]
kind = "broker_down"
at = "03:30"
for_min = 30

[[fault]]
kind = "pi_kill"
at = "04:30"
"""


def _site(tmp_path, *args, timeout=240):
    cmd = [sys.executable, "-m", "phasekit.cli", "site", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def _feeder(tmp_path):
    out = tmp_path / "feeder"
    if not out.exists():
        p = subprocess.run(
            [sys.executable, "-m", "phasekit.cli", "feeder", "generate", str(out), "--houses", "10", "--seed", "4"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
    return out


def test_a_ci_sized_site_survives_every_fault_of_the_default_plan(tmp_path):
    (tmp_path / "plan.toml").write_text(PLAN)
    feeder = _feeder(tmp_path)
    t0 = time.monotonic()
    p = _site(
        tmp_path,
        str(feeder),
        "--minutes",
        "360",
        "--lora",
        "1",
        "--faults",
        "plan.toml",
        "--json",
        "summary.json",
        "--dir",
        "site",
        "--quiet",
    )
    wall = time.monotonic() - t0
    out = p.stdout + p.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert not s["interrupted"], out[-3000:]
    assert s["site"]["nodes"] == {"cpython": 7, "micropython": 2, "lora": 1}
    # Nothing lost: every reading produced is buffered and stored, once, or a named fault explains it.
    r = s["records"]
    assert r["produced"] > 300, r
    assert r["not_buffered_unexplained"] == 0, r
    assert r["buffered_not_stored"] == 0, r
    # Buffered in the last moments before the Pi's final stop: committed in its buffer, sent at its next start.
    assert r["waiting_in_pi_buffer"] <= 10, r
    assert r["stored_once"] and r["stored"] == r["buffered"] - r["buffered_not_stored"] - r["waiting_in_pi_buffer"], r
    assert r["produced"] - r["buffered"] == sum(x["count"] for x in r["lost"]), r
    # Every fault happened.
    events = {e["event"] for e in s["fault_log"]}
    assert {"silent", "back", "welded", "repaired", "retry", "forged", "down", "up", "killed", "restarted"} <= events
    # Every alarm raised is cleared; the silent node's and the stuck relay's among them.
    alarms = s["alarms"]
    # A condition of the street (unbalance, overcurrent) may hold at the end; every fault's alarm is cleared.
    open_ = [
        a
        for a in alarms
        if a.get("cleared_s") is None and not a.get("latched") and a["type"] not in ("unbalance", "overcurrent")
    ]
    assert not open_, open_
    silent = s["silent_node"]
    assert silent and silent[0]["alarm"] and silent[0]["raised_after_s"] > 0, silent
    assert silent[0].get("cleared_after_return_s") is not None, silent
    stuck = [e["node"] for e in s["fault_log"] if e["event"] == "welded"][0]
    assert any(a["type"] == "relay_fault" and a["node"] == stuck for a in alarms), (alarms, s["commands"], out[-3000:])
    # The forged command: refused by the Pi, and in the server's audit log where it keeps one.
    c = s["commands"]
    assert c["forged"] == 1 and c["refused_by_pi"] >= 1, c
    assert any(x["reason"] == "bad_tag" for x in c["refusals"]), c
    assert c["audited"] is True or (c["audited"] is None and s["server"]["kind"] == "ingest"), c
    # No relay outside its limits.
    assert s["relay_limits"]["ok"], s["relay_limits"]
    assert s["relay_limits"]["two_phases_closed_seen"] == 0
    assert s["resources"]["rss_mb_peak"] < 1024
    assert (tmp_path / "site" / "day.png").stat().st_size > 10000
    assert wall < 150, wall


def _processes_under(folder):
    """Pids of processes whose command line names ``folder`` (the site's children all do)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if str(folder) in cmd or cwd.startswith(str(folder)):
            out.append((int(d.name), cmd[:120]))
    return out


def test_ctrl_c_ends_everything_and_a_second_run_starts_cleanly(tmp_path):
    feeder = _feeder(tmp_path)
    site = tmp_path / "site"
    cmd = [
        sys.executable,
        "-m",
        "phasekit.cli",
        "site",
        "run",
        str(feeder),
        "--dir",
        str(site),
        "--quiet",
        "--pi-on-disk",
        "--minutes",
        "600",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        seen = ""
        assert p.stdout is not None
        while "fault: node" not in seen and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen += line
        assert "fault: node" in seen, seen[-2000:]  # in the middle of the day, a fault under way
        assert _processes_under(site), "the site's processes should be running"
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, rest[-2000:])
    time.sleep(0.5)
    assert _processes_under(site) == [], _processes_under(site)
    for db in (site / "server" / "server.db", site / "pi" / "buffer.db"):
        if db.exists():
            con = sqlite3.connect(db)
            try:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db
            finally:
                con.close()
    # A second run in the same folder starts cleanly and finishes.
    p2 = _site(
        tmp_path,
        str(feeder),
        "--dir",
        str(site),
        "--quiet",
        "--faults",
        "none",
        "--minutes",
        "60",
        "--json",
        "again.json",
        "--no-plot",
    )
    assert p2.returncode in (0, 1), p2.stderr[-3000:]
    s = json.loads((tmp_path / "again.json").read_text())
    assert not s["interrupted"] and s["records"]["stored"] > 0, s["records"]
    assert _processes_under(site) == []


# ---- the parts without processes: fast --------------------------------------------------------------


def test_the_demo_reads_the_cached_ieee_feeder_without_the_network(tmp_path, monkeypatch):
    from phasekit.feeder import format as ff
    from phasekit.feeder import ieee_eulv
    from phasekit.feeder.generate import generate
    from phasekit.site.run import SiteOptions, SiteRun

    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", "http://127.0.0.1:9/pandapower.zip")
    ff.write(generate(20, seed=4), tmp_path / "ieee-eulv")
    said = []
    run = SiteRun(SiteOptions(cache=str(tmp_path), folder=tmp_path / "site"))
    run.say = said.append
    feeder = run._load_feeder()
    assert feeder.n_houses == 20
    assert any("from %s" % (tmp_path / "ieee-eulv") in x for x in said), said
    assert not any("fetching" in x for x in said)


def test_offline_the_demo_says_so_and_runs_a_generated_street(tmp_path, monkeypatch):
    from phasekit.feeder import ieee_eulv
    from phasekit.site.run import SiteOptions, SiteRun

    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", "http://127.0.0.1:9/pandapower.zip")
    said = []
    run = SiteRun(SiteOptions(cache=str(tmp_path / "cache"), folder=tmp_path / "site"))
    run.say = said.append
    (tmp_path / "site").mkdir()
    feeder = run._load_feeder()
    assert feeder.n_houses == 55
    assert any("could not fetch the IEEE feeder" in x and "generated 55-house street" in x for x in said), said
    assert not (tmp_path / "cache" / "ieee-eulv").exists()  # nothing half-written into the cache


def test_nodes_lines_and_the_polling_period_follow_the_street(tmp_path):
    from phasekit.feeder.generate import generate
    from phasekit.site.run import SiteOptions, SiteRun, lines_for, polling_period_s, silence_gap_s

    assert [lines_for(n) for n in (1, 20, 21, 55, 100)] == [1, 1, 2, 3, 4]
    # A round with room to spare; 2 minutes past the longest polling interval before a node is silent.
    assert polling_period_s(55, 720, 3) == 360 and polling_period_s(10, 720, 1) == 180
    assert silence_gap_s(360, 720) == 120 + 360 + 216
    run = SiteRun(SiteOptions(folder=tmp_path, houses=12, micropython=2))
    specs, houses = run._specs(generate(30, seed=1))
    assert len(specs) == 12 and sum(s.kind == "micropython" for s in specs) == 2
    assert [s.addr for s in specs] == list(range(1, 13))
    assert len(houses) >= 12
