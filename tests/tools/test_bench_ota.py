"""phasekit bench ota at CI size: randomized update runs with power cuts and Pi restarts, and the checker itself.

``phasekit.testing.ota_rig`` runs the real node updater, boot selector,
session and relay controller against the real Pi engine in virtual time,
cutting the node's power at random flash writes (a quarter of the runs with
FAT-like torn writes) and killing the Pi at random requests. Every run must
end with the node on the old or the new version, verified, never a mix, no
relay moved, and the outcome expected for its bundle. The rig is shown to
catch a node that breaks the rules (a checker that cannot fail proves
nothing).
"""

import logging
import subprocess
import sys

import pytest

from phasekit.testing import ota_rig


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def test_randomized_update_runs_end_on_one_whole_version_and_never_move_a_relay():
    tot = ota_rig.run(40, seed=1000)
    assert not tot.failures, tot.failures[:3]
    assert tot.runs == 40 and tot.on.get("new", 0) > 10 and tot.on.get("old", 0) > 5, tot.on
    assert set(tot.on) <= {"new", "old"}
    assert tot.node_cuts > 10 and tot.pi_restarts > 10, (tot.node_cuts, tot.pi_restarts)
    assert tot.max_outage_ms <= ota_rig.DEAD_TIME_MS + 100  # a reboot's outage: the dead time and one tick


def test_each_kind_of_tampering_and_of_bad_version_ends_as_expected():
    # Seeds picked so that each kind occurs (the runs' own draws), checked here by kind.
    seen_tamper, seen_bad = set(), set()
    seed = 5000
    while (len(seen_tamper) < len(ota_rig.TAMPER) or len(seen_bad) < len(ota_rig.BAD)) and seed < 5400:
        r = ota_rig.Run(seed, p_tamper=0.5, p_bad=0.5).go()
        assert not r["problems"], (seed, r)
        if r["tamper"]:
            seen_tamper.add(r["tamper"])
            assert r["on"] == "old"
        if r["bad"]:
            seen_bad.add(r["bad"])
            assert r["on"] == "old" and "rolled back" in r["error"]
        seed += 1
    assert seen_tamper == set(ota_rig.TAMPER) and seen_bad == set(ota_rig.BAD)


def test_the_rig_catches_a_node_that_installs_without_verifying(monkeypatch):
    from phasenode import ota as node_ota

    # A node that accepts every file as it comes: a tampered file is installed and booted.
    monkeypatch.setattr(node_ota.Updater, "_file_done", lambda self, i: None)
    monkeypatch.setattr(node_ota.Updater, "_verify_files", lambda self: True)
    problems = []
    for seed in range(7000, 7400):
        run = ota_rig.Run(seed, p_tamper=1.0)
        if run.tamper != "file":
            continue
        problems = run.go()["problems"]
        break
    assert any("mix" in p or "expected the old one" in p for p in problems), problems


def test_the_rig_catches_a_node_that_moves_a_relay_on_update(monkeypatch):
    from phasenode import ota as node_ota

    real = node_ota.Updater.tick

    def tick(self, now_ms):
        real(self, now_ms)
        r = self.relay
        if r is not None and self.confirmed and not r.busy:
            # An updater that switches the house behind the relay controller's back (it must never).
            r._pins[0].value(0)
            r._pins[1].value(1)

    monkeypatch.setattr(node_ota.Updater, "tick", tick)
    for seed in range(8000, 8050):
        r = ota_rig.Run(seed, p_tamper=0.0, p_bad=0.0).go()
        if r["problems"]:
            assert any("other than the house's phase" in p or "not A" in p for p in r["problems"]), r
            return
    raise AssertionError("no run noticed the relay moving")


def test_phasekit_bench_ota_runs_its_parts_and_reports_every_target(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "phasekit.cli",
            "bench",
            "ota",
            "--runs",
            "6",
            "--tamper-trials",
            "2",
            "--skip-delivery",
            "--skip-signature",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    out = p.stdout
    assert "tampered bundles fed to the node's updater" in out and "MISSED" not in out
    assert "randomized update runs" in out and "runs with a problem (mix, relay move, wrong outcome) 0 ok" in out
