"""The alarm engine on both real stores (SQLite, and PostgreSQL from tests/server/conftest.py), fed real uplink
batches through the ingest core (decode, validate, commit, then the engine hears the committed batch): every
alarm type raised and cleared from the data, one active alarm per (object, type) updated in place, the
lifecycle with who, when and a comment, propagation, tenancy, and a restart that keeps what it knew."""

import time

import pytest

from phasecore import codes
from phaseserver.alarms.engine import AlarmEngine, AlarmNotFound, AlarmStateError, worst
from phaseserver.alarms.rules import (
    AUTH_FAILURES,
    BACKLOG,
    CRITICAL,
    MAJOR,
    METER_IMPLAUSIBLE,
    MINOR,
    NODE_SILENT,
    OVERCURRENT,
    PI_OFFLINE,
    RELAY_FAULT,
    UNBALANCE,
    WARNING,
)
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.clock import Clock
from phaseserver.ingest.core import IngestCore
from phaseserver.store import open_store
from phaseuplink import records
from uplink_batches import PiBatches, reading_values

T0 = 1_700_000_000


class Harness:
    """A database, a clock we move, one Pi's batches, and the engine."""

    def __init__(self, config, **settings):
        self.t = [float(T0)]
        self.clock = Clock(wall=lambda: self.t[0])
        self.store = open_store(config, self.clock)
        self.db = self.store.db
        for tenant in ("utility-a", "utility-b"):
            self.db.execute("INSERT INTO tenant (id, name, created_s) VALUES (?, ?, 0)", (tenant, tenant))
        self.db.execute("INSERT INTO site (id, tenant_id, first_seen_s) VALUES ('s1', 'utility-a', 0)")
        self.db.execute("INSERT INTO site (id, tenant_id, first_seen_s) VALUES ('s2', 'utility-b', 0)")
        self.settings = AlarmSettings(**settings)
        self.core = IngestCore(self.store, self.clock)
        self.restart()
        self.pi = PiBatches("s1", "t1")
        self.seq = {}

    def restart(self):
        """A new engine on the same database (a server restart), listening to the ingest core."""
        self.engine = AlarmEngine(self.db, self.settings, self.clock)
        self.engine.start()
        self.core.listeners[:] = [self.engine.on_committed]

    def at(self, t):
        self.t[0] = float(T0 + t)

    def feed(self, items, pi=None):
        topic, payload = (pi or self.pi).batch(items)
        out = self.core.handle(topic, payload, self.clock.now())
        assert out.kind in ("stored", "duplicate") and not out.invalid, out

    def status(self, t, online):
        self.at(t)
        assert self.core.handle(*self.pi.status(online), self.clock.now()).kind == "status"

    def readings(self, t, addrs, **values):
        """One polling round at site time T0 + t, delivered at once."""
        self.at(t)
        items = []
        for a in addrs:
            self.seq[a] = self.seq.get(a, 0) + 1
            items.append(records.reading(a, self.seq[a], T0 + t, reading_values(**values)))
        return self.feed(items)

    def sweep(self, t):
        self.at(t)
        return self.engine.sweep()

    def active(self, typ=None, tenant=None):
        return [a for a in self.engine.store.active(tenant) if typ is None or a["type"] == typ]

    def all(self, typ):
        return [a for a in self.engine.store.query(None, "all") if a["type"] == typ]


@pytest.fixture
def make_h(engine, server_config):
    """``make_h(**alarm_settings)``: a harness on a fresh database of the test's engine (both run)."""
    made = []

    def make(**settings):
        made.append(Harness(server_config(engine), **settings))
        return made[-1]

    yield make
    for x in made:
        x.store.close()


@pytest.fixture
def h(make_h):
    return make_h(delivery_grace_s=5)


def test_silent_node_raised_at_its_gap_in_data_time_and_cleared_by_its_next_reading(h):
    for t in range(0, 101, 10):
        h.readings(t, [1, 2, 3])
    for t in range(110, 220, 10):
        h.readings(t, [1, 2])
        assert h.active(NODE_SILENT) == [], t
    h.readings(220, [1, 2])  # the stream is 120 s past node 3's last reading
    (a,) = h.active(NODE_SILENT)
    assert a["object"] == "s1/t1/3" and a["object_kind"] == "node" and a["node"] == 3
    assert a["raised_s"] == T0 + 220 and a["since_s"] == T0 + 100 and a["severity"] == MAJOR
    assert a["detail"]["gap_s"] == 120 and a["detail"]["mode"] == "raw" and a["tenant_id"] == "utility-a"
    h.readings(230, [1, 2])  # still silent: no second alarm, no update
    assert h.all(NODE_SILENT) == [h.engine.store.get(a["id"])]
    h.readings(240, [1, 2, 3])
    assert h.active(NODE_SILENT) == []
    b = h.engine.store.get(a["id"])
    assert b["cleared_s"] == T0 + 240 and b["cleared_by"] == "system" and b["state"] == "cleared"
    assert [e["what"] for e in h.engine.store.history(a["id"])] == ["raised", "cleared"]
    # A second silence is a new episode.
    for t in range(250, 400, 10):
        h.readings(t, [1, 2])
    (c,) = h.active(NODE_SILENT)
    assert c["id"] != a["id"] and c["since_s"] == T0 + 240


def test_silence_by_the_clock_when_the_whole_stream_stops(h):
    for t in range(0, 101, 10):
        h.readings(t, [1, 2, 3])
    # Batches came every 10 s: after 10 + 5 s (grace) without one, the clock advances the data time.
    assert h.engine.rules.next_due(h.clock.now()) == T0 + 100 + 10 + 5 + 120
    assert h.sweep(234) == 0
    h.sweep(235)
    assert sorted(a["node"] for a in h.active(NODE_SILENT)) == [1, 2, 3]


def test_a_pi_that_batches_readings_does_not_make_its_nodes_look_silent(h):
    # raw mode with raw_batch_s = 300: readings every 10 s, delivered every 300 s.
    for start in range(0, 1500, 300):
        h.at(start + 300)
        items = []
        for t in range(start, start + 300, 10):
            for a in (1, 2, 3) if start < 900 or t < 1000 else (1, 2):
                h.seq[a] = h.seq.get(a, 0) + 1
                items.append(records.reading(a, h.seq[a], T0 + t, reading_values()))
        h.feed(items)
        for s in range(start + 300, start + 600, 20):
            h.sweep(s)
        if start < 900:
            assert h.active(NODE_SILENT) == [], start
    # Node 3's last reading was at 990; the batch of [1200, 1500) shows the others past 990 + 120.
    (a,) = h.active(NODE_SILENT)
    assert a["node"] == 3 and a["since_s"] == T0 + 990


def test_interval_mode_gap_is_the_aggregation_period_and_lora_nodes_get_longer(h):
    def aggregate(addr, start):
        f = {"period_s": 900, "n": 15, "seq_span": 14, "phase": 0, "status": 0, "i_mean_mA": 1000, "i_max_mA": 1200}
        f.update(v_min_dV=2290, v_max_dV=2310, de_Wh=250, pf_mean_centi=95)
        return records.interval(addr, T0 + start, f)

    for start in (0, 900):
        h.at(start + 930)  # the Pi files each aggregate 30 s after its period ends
        h.feed([aggregate(a, start) for a in (1, 2)])
    h.at(2730)
    h.feed([aggregate(1, 1800)])  # node 2 missed the period [1800, 2700)
    (a,) = h.active(NODE_SILENT)
    assert a["node"] == 2 and a["detail"] == {"gap_s": 900, "last_seen_s": T0 + 1800, "mode": "interval 900 s"}

    # A LoRa node (its heartbeat carries an RSSI) reporting raw readings: 3 x 300 s.
    pi = PiBatches("s1", "t2")
    h.at(0)
    h.feed([records.heartbeat(T0, {"uptime_s": 5, "fw": "phasenode 0.1", "rssi_dBm": -97}, 9, 1)], pi)
    for t in range(0, 960, 60):  # node 9 last heard at 60
        h.at(t)
        nine = [records.reading(9, t + 2, T0 + t, reading_values())] if t <= 60 else []
        h.feed([records.reading(8, t + 1, T0 + t, reading_values())] + nine, pi)
    assert not [x for x in h.active(NODE_SILENT) if x["transformer"] == "t2"]
    h.at(960)
    h.feed([records.reading(8, 2000, T0 + 960, reading_values())], pi)
    (b,) = [x for x in h.active(NODE_SILENT) if x["transformer"] == "t2"]
    assert b["node"] == 9 and b["detail"]["gap_s"] == 900 and b["detail"]["mode"] == "raw, LoRa"


def test_pi_offline_after_its_delay_cleared_online_and_silences_held_back(h):
    for t in range(0, 61, 10):
        h.readings(t, [1, 2])
    h.status(61, False)
    assert h.sweep(120) == 0  # 59 s: within pi_offline_delay_s
    h.sweep(121)
    (a,) = h.active(PI_OFFLINE)
    assert a["object"] == "s1/t1" and a["severity"] == CRITICAL and a["since_s"] == T0 + 61
    h.sweep(1000)
    assert h.active(NODE_SILENT) == []  # the Pi's alarm says why nothing comes
    h.status(1001, True)
    h.sweep(1002)
    assert h.active(PI_OFFLINE) == []
    # A reboot (offline, online within the delay) raises nothing.
    h.status(2000, False)
    h.sweep(2001)
    h.status(2030, True)
    h.sweep(2100)
    assert len(h.all(PI_OFFLINE)) == 1
    assert h.engine.on_status("s1", "t1", "rebooting") == 0


def summary(t, i_dA, cuf_pm=50, **extra):
    f = {"time_s": T0 + t, "period_s": 900, "i_dA": i_dA, "cuf_pm": cuf_pm, "nodes": [3, 0, 0, 0], "moves": 0}
    f.update(extra)
    return records.summary(T0 + t, f)


def test_overcurrent_updated_in_place_and_cleared_with_hysteresis(make_h):
    h = make_h(ratings={"s1/t1": 200})
    h.at(900)
    h.feed([summary(900, [2100, 1500, 1400])])
    (a,) = h.active(OVERCURRENT)
    assert a["severity"] == MAJOR and a["value"] == 210.0 and a["detail"]["rating_a"] == 200
    h.at(1800)
    h.feed([summary(1800, [2500, 1500, 1400])])  # over 1.2 x rating: critical, same alarm
    (b,) = h.active(OVERCURRENT)
    assert b["id"] == a["id"] and b["severity"] == CRITICAL and b["max_severity"] == CRITICAL and b["updates"] == 1
    h.at(2700)
    h.feed([summary(2700, [1900, 1500, 1400])])  # 190 A: under the rating, inside the hysteresis band
    assert h.active(OVERCURRENT)[0]["id"] == a["id"]
    h.at(3600)
    h.feed([summary(3600, [1790, 1500, 1400])])  # under 90 % of the rating
    assert h.active(OVERCURRENT) == []
    assert [e["what"] for e in h.engine.store.history(a["id"])] == ["raised", "updated", "cleared"]
    h.at(3700)
    h.feed([summary(1800, [2500, 1500, 1400])])  # an old summary arriving late says nothing about now
    assert h.active(OVERCURRENT) == []


def test_unbalance_needs_its_duration_and_the_neutral_counts_too(make_h):
    h = make_h(unbalance_for_s=1800, neutral_a=80)
    h.at(900)
    h.feed([summary(900, [1500, 1000, 900], cuf_pm=260)])
    assert h.active(UNBALANCE) == []  # 900 s over threshold, 1800 s needed
    h.at(1800)
    h.feed([summary(1800, [1500, 1000, 900], cuf_pm=150, i_n_dA=900)])  # neutral 90 A > 80 A
    (a,) = h.active(UNBALANCE)
    assert a["severity"] == MINOR and a["since_s"] == T0 and a["detail"]["i_n_a"] == 90.0
    h.at(2700)
    h.feed([summary(2700, [1500, 1000, 900], cuf_pm=450)])  # over twice the threshold: major
    assert h.active(UNBALANCE)[0]["severity"] == MAJOR
    h.at(3600)
    h.feed([summary(3600, [1500, 1000, 900], cuf_pm=100, i_n_dA=700)])
    assert h.active(UNBALANCE) == []


def test_relay_that_did_not_switch_is_latched_until_a_verified_move(h):
    ev = records.event
    h.at(10)
    h.feed([ev(T0 + 10, {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 0, "node": 5, "severity": 2})])
    h.at(11)
    h.feed([ev(T0 + 11, {"code": codes.EV_NODE_SUSPENDED, "value": 86400, "node": 5})])
    (a,) = h.active(RELAY_FAULT)
    assert a["object"] == "s1/t1/5" and a["detail"]["event"] == "NODE_SUSPENDED" and a["updates"] == 1
    h.sweep(100000)
    assert len(h.active(RELAY_FAULT)) == 1  # no clock clears it
    h.at(100001)
    h.feed([ev(T0 + 100001, {"code": codes.EV_MOVE_VERIFIED, "value": 1, "node": 5})])
    assert h.active(RELAY_FAULT) == []


def test_meter_flagged_implausible_clears_after_good_readings(h):
    h.at(0)
    h.feed([records.event(T0, {"code": codes.EV_IMPLAUSIBLE_READING, "value": 1}, addr=4, seq=77)])
    (a,) = h.active(METER_IMPLAUSIBLE)
    assert a["object"] == "s1/t1/4" and a["detail"]["why"] == "IMPLAUSIBLE_READING"
    h.readings(10, [4], status=codes.ST_METER)
    for t in range(20, 320, 10):
        h.readings(t, [4])
        assert len(h.active(METER_IMPLAUSIBLE)) == 1, t
    h.readings(320, [4])  # 300 s of good readings since the last bad one
    assert h.active(METER_IMPLAUSIBLE) == []
    assert len(h.all(METER_IMPLAUSIBLE)) == 1


def test_authentication_failures_counted_in_a_window_and_cleared_when_quiet(h):
    def fail(t, seq):
        h.at(t)
        h.feed([records.event(T0 + t, {"code": codes.EV_AUTH_FAILED, "severity": 1}, addr=6, seq=seq)])

    fail(0, 1)
    fail(700, 2)  # the first is out of the 600 s window by now
    assert h.active(AUTH_FAILURES) == []
    fail(800, 3)
    h.at(900)
    refused = {"code": codes.EV_OPERATOR_REFUSED, "value": 3, "severity": 2}  # the Pi's gate: bad tag
    h.feed([records.event(T0 + 900, refused)])
    (a,) = h.active(AUTH_FAILURES)
    assert a["object"] == "s1/t1" and a["value"] == 3 and a["detail"]["event"] == "OPERATOR_REFUSED"
    h.sweep(900 + 1799)
    assert len(h.active(AUTH_FAILURES)) == 1
    h.sweep(900 + 1800)
    assert h.active(AUTH_FAILURES) == []


def test_backlog_from_the_pi_heartbeat_with_hysteresis(h):
    def beat(t, backlog):
        h.at(t)
        h.feed([records.pi_heartbeat(T0 + t, {"uptime_s": t, "fw": "phasegate 0.1", "backlog": backlog, "dropped": 0})])

    beat(0, 20000)
    (a,) = h.active(BACKLOG)
    assert a["severity"] == WARNING and a["detail"]["source"] == "Pi heartbeat"
    beat(3600, 150000)
    assert h.active(BACKLOG)[0]["severity"] == MINOR
    beat(7200, 9500)
    assert len(h.active(BACKLOG)) == 1
    beat(10800, 8000)
    assert h.active(BACKLOG) == []
    h.at(10900)
    h.feed([summary(10800, [1000, 1000, 1000], backlog=12000)])
    assert h.active(BACKLOG)[0]["detail"]["source"] == "summary"


def test_lifecycle_acknowledge_clear_tenancy_and_re_raise(h):
    for t in range(0, 250, 10):
        h.readings(t, [1, 2] if t > 100 else [1, 2, 3])
    (a,) = h.active(NODE_SILENT)
    with pytest.raises(AlarmNotFound):
        h.engine.acknowledge(a["id"], "utility-b", "bob", "not mine")
    h.at(300)
    before, after = h.engine.acknowledge(a["id"], "utility-a", "alice", "crew sent")
    assert before["acked_s"] is None and before["state"] == "active"
    assert after["acked_s"] == T0 + 300 and after["acked_by"] == "alice" and after["ack_comment"] == "crew sent"
    assert after["state"] == "active_acked"
    with pytest.raises(AlarmStateError, match="alice"):
        h.engine.acknowledge(a["id"], "utility-a", "carol")
    h.at(310)
    before, after = h.engine.clear(a["id"], "utility-a", "alice", "fuse replaced")
    assert (
        after["cleared_by"] == "alice"
        and after["clear_comment"] == "fuse replaced"
        and after["state"] == "cleared_acked"
    )
    with pytest.raises(AlarmStateError):
        h.engine.clear(a["id"], "utility-a", "alice")
    hist = h.engine.store.history(a["id"])
    assert [(e["what"], e["actor"], e["comment"]) for e in hist] == [
        ("raised", "system", None),
        ("acknowledged", "alice", "crew sent"),
        ("cleared", "alice", "fuse replaced"),
    ]
    # The node is still silent: the next sweep raises it again, as a new episode.
    h.sweep(320)
    (b,) = h.active(NODE_SILENT)
    assert b["id"] != a["id"]
    # Tenancy: utility-b sees none of it; the system administrator (None) sees all.
    assert h.active(tenant="utility-b") == [] and h.engine.store.query("utility-b", "all") == []
    assert len(h.engine.store.query("utility-a", "all")) == 2
    assert h.engine.store.get(b["id"], "utility-b") is None


def test_propagation_node_transformer_site(h):
    h.at(10)
    ev = records.event
    h.feed([ev(T0 + 10, {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 0, "node": 5, "severity": 2})])
    h.feed([records.event(T0 + 10, {"code": codes.EV_IMPLAUSIBLE_READING}, addr=4, seq=1)])
    h.feed([records.pi_heartbeat(T0 + 10, {"uptime_s": 1, "fw": "x", "backlog": 99999, "dropped": 0})])
    other = PiBatches("s1", "t2")
    h.feed([records.event(T0 + 10, {"code": codes.EV_IMPLAUSIBLE_READING}, addr=1, seq=1)], other)
    w = worst(h.active(tenant="utility-a"))
    relay = h.active(RELAY_FAULT)[0]
    assert w["s1/t1/5"].severity == MAJOR and w["s1/t1/4"].severity == MINOR
    assert w["s1/t1"] == (MAJOR, relay["id"], RELAY_FAULT, 3)
    assert w["s1/t2"].severity == MINOR and w["s1/t2"].alarms == 1
    assert w["s1"] == (MAJOR, relay["id"], RELAY_FAULT, 4)
    assert "s2" not in w


def test_a_restart_keeps_silences_and_sees_the_end_of_active_alarms(make_h):
    h = make_h()
    for t in range(0, 101, 10):
        h.readings(t, [1, 2, 3])
    h.engine.save()
    h.restart()
    h.sweep(110)
    assert h.active(NODE_SILENT) == []  # the broker's queued batches come first: no silence yet
    for t in range(110, 300, 10):
        h.readings(t, [1, 2])
    (a,) = h.active(NODE_SILENT)
    assert a["node"] == 3 and a["since_s"] == T0 + 100
    h.restart()  # again, now with an active alarm
    h.readings(300, [1, 2, 3])
    assert h.active(NODE_SILENT) == [] and h.engine.store.get(a["id"])["cleared_by"] == "system"


def test_a_failed_transaction_loses_no_alarm_change(make_h):
    h = make_h()
    h.at(10)
    h.db.execute("DROP INDEX alarm_one_active")
    h.db.execute("ALTER TABLE alarm RENAME TO alarm_away")  # the engine's write fails: the table is gone
    h.feed([records.event(T0 + 10, {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 0, "node": 5, "severity": 2})])
    assert h.engine.stats["errors"] == 1
    h.db.execute("ALTER TABLE alarm_away RENAME TO alarm")
    h.db.execute("CREATE UNIQUE INDEX alarm_one_active ON alarm (object, type) WHERE cleared_s IS NULL")
    h.sweep(20)  # the next transaction applies what the failed one lost
    (a,) = h.active(RELAY_FAULT)
    assert a["object"] == "s1/t1/5" and a["raised_s"] == T0 + 20


def test_the_built_server_runs_the_alarms(tmp_path, server_config):
    """phaseserver.app.build attaches the alarms (EXTENSIONS): batches through the server's own ingest core
    raise an alarm, its loop sweeps, and its dispatcher signs and delivers the webhook."""
    from test_notify_webhook import SECRET, Receiver

    from server_support import ServerThread, wait_until

    (tmp_path / "hook.secret").write_bytes(SECRET + b"\n")
    with Receiver() as hook:
        cfg = server_config(
            "sqlite",
            alarms={"node_gap_s": 2, "sweep_s": 0.2, "delivery_grace_s": 0.5},
            notify={"webhook_url": hook.url, "webhook_secret_file": str(tmp_path / "hook.secret")},
        )
        with ServerThread(cfg) as st:
            server = st.server
            assert server.alarms.started and any(type(e).__name__ == "AlarmService" for e in server.extensions)
            pi = PiBatches("s1", "t1")
            for seq in range(1, 5):  # a few rounds: the engine learns the transformer's rhythm
                now = int(server.clock.now())
                server.ingest.handle(*pi.batch([records.reading(3, seq, now, reading_values())]))
                time.sleep(0.2)
            # The bus goes quiet: only the engine's own sweep on the clock can raise it.
            assert wait_until(lambda: server.alarms.store.find_active("s1/t1/3", NODE_SILENT) is not None, 10)
            assert wait_until(lambda: len(hook.requests) == 1, 10)
            assert b'"transition":"raised"' in hook.requests[0][1]
            service = next(e for e in server.extensions if type(e).__name__ == "AlarmService")
            text = service.render()
            assert 'phaseserver_alarms_active{type="node_silent",severity="3"} 1' in text
            assert 'phaseserver_alarm_transitions_total{what="raised"} 1' in text
            assert wait_until(lambda: 'phaseserver_notifications_total{outcome="sent"} 1' in service.render(), 5)
