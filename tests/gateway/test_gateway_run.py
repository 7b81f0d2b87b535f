"""`phasekit gateway run` as an installer starts it: a process, a TOML file, nodes on a serial line.

The nodes are sealed stand-ins on the far end of a pty (phasekit.sim.bus_nodes);
the gateway is the real command in its own process, stopped with SIGTERM as
systemd stops it. Afterwards its SQLite buffer holds every reading it accepted.
"""

import signal
import sqlite3
import time
from pathlib import Path

from phasecore import msg
from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.gateway import phasekit_popen, write_config

ROOT = Path(__file__).resolve().parents[2]
SITE_KEY = bytes(range(32))


def _write_config(tmp_path, port, nodes, extra=""):
    return write_config(
        tmp_path,
        SITE_KEY,
        """
[site]
id = "test-site"
transformer = "tx-1"
key_file = "site.key"

[bus]
port = "%s"
baud = 115200
nodes = %r
reply_timeout_ms = 100
poll_period_s = 0.5
stale_after_s = 5
offline_after_s = 20

[balancer]
period_s = 1
min_dwell_s = 0
persist_rounds = 1

[store]
path = "buffer.db"
%s
"""
        % (port, nodes, extra),
    )


def _phasekit(*args):
    return phasekit_popen(*args, text=True)


def _readings(db):
    con = sqlite3.connect(str(db))
    try:
        return con.execute("SELECT sender, seq FROM outbox WHERE kind = 'reading' ORDER BY id").fetchall()
    finally:
        con.close()


def test_gateway_run_polls_nodes_buffers_readings_and_stops_cleanly_on_sigterm(tmp_path):
    nodes = [SimNode(a, SITE_KEY, phase=msg.PHASE_A, current_mA=6000) for a in (1, 2, 3)]
    with SimBus(nodes) as sim:
        cfg = _write_config(tmp_path, sim.port, [1, 2, 3])
        proc = _phasekit("gateway", "run", str(cfg))
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                not (tmp_path / "buffer.db").exists() or len(_readings(tmp_path / "buffer.db")) < 12
            ):
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    rows = _readings(tmp_path / "buffer.db")
    assert len(rows) >= 12, out
    by_node = {}
    for sender, seq in rows:
        by_node.setdefault(sender, []).append(seq)
    assert sorted(by_node) == [1, 2, 3]
    for seqs in by_node.values():  # in order, each exactly once
        assert seqs == sorted(set(seqs))
    assert "gateway test-site/tx-1: 3 nodes on bus" in out
    # The registry saved its state beside the buffer, with the Pi's counter.
    assert (tmp_path / "registry.json").exists() and (tmp_path / "pi-seq.txt").exists()


def test_gateway_run_with_a_bad_config_exits_2_naming_the_line(tmp_path):
    cfg = _write_config(tmp_path, "/dev/null", [1], extra="[bogus]\nx = 1\n")
    proc = _phasekit("gateway", "run", str(cfg))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown table [bogus]" in out and "gw.toml:" in out


def test_gateway_check_prints_the_plan_and_refuses_a_missing_key(tmp_path):
    cfg = _write_config(tmp_path, "/dev/ttyUSB0", [1, 2])
    proc = _phasekit("gateway", "check", str(cfg))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "RS-485 bus /dev/ttyUSB0 at 115200 baud: 2 nodes" in out
    assert "no uplink: autonomous" in out
    (tmp_path / "site.key").unlink()
    proc = _phasekit("gateway", "check", str(cfg))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "key_file" in out
