"""Operator commands through the server: sealing, the counter that never repeats, ack tracking, and the whole path.

End to end (the last test): an operator asks the real server process over
HTTP for a move; the server seals it and publishes it to Mosquitto; the
real gateway process's operator gate accepts it and moves a simulated bus
node; the node's sealed ack goes back up the Pi's uplink to the server's
ingest; the server's tracker matches it and the API shows DONE. A replay of
the captured command and a forgery are refused by the Pi, and the server
audits both refusals.
"""

import json
import socket
import subprocess
import time

import httpx
import paho.mqtt.client as mqtt
import pytest
from api_env import PASSWORD, SITE_KEY, ApiEnv

from phasecore import cbor, codes, cose, msg
from phasegate.operator import OperatorGate, reset_state
from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import gateway_toml, phasekit_popen, python_popen, write_config
from phaseserver import audit, commands
from phaseserver.auth.manage import Actor, Manager
from phaseserver.auth.passwords import Hasher
from phaseserver.errors import CommandError
from phaseserver.store import open_store
from phaseuplink import operator, records
from server_support import wait_until

CLI = Actor("cli:test", None, None, None, "cli")


# ---- pieces ---------------------------------------------------------------------------------


def test_fields_for_each_op_follow_the_command_schema():
    f = commands.build_fields("move", {"phase": "C"}, 1000, 5)
    assert f == {"id": 5, "op": msg.OP_MOVE, "deadline_s": 1000, "phase": 2}
    assert commands.build_fields("lock", {}, 1000, 5)["reason"] > 0
    assert commands.build_fields("set_limits", {"i_max_mA": 16000, "max_per_day": 4}, 1000, 5)["i_max_mA"] == 16000
    for op, params in (
        ("move", {}),
        ("move", {"phase": "N"}),
        ("set_limits", {}),
        ("set_limits", {"v_min_dV": 2500, "v_max_dV": 2000}),
        ("unlock", {"phase": "A"}),
        ("reboot", {}),
    ):
        with pytest.raises(CommandError):
            commands.build_fields(op, params, 1000, 5)


def _settings(tmp_path, **kw):
    key_file = tmp_path / "server-1.key"
    if not key_file.exists():
        key_file.write_text(operator.format_key_file(*operator.operator_key(SITE_KEY, "server-1")))
    return commands.CommandSettings("server-1", str(key_file), str(tmp_path / "server-1.seq"), **kw)


def test_pause_and_resume_fields_are_bare():
    assert commands.build_fields("pause", {}, 1000, 5) == {"id": 5, "op": msg.OP_PAUSE, "deadline_s": 1000}
    assert commands.build_fields("resume", {}, 1000, 5) == {"id": 5, "op": msg.OP_RESUME, "deadline_s": 1000}
    for params in ({"phase": "A"}, {"i_max_mA": 1000}):
        with pytest.raises(CommandError, match="takes no"):
            commands.build_fields("pause", params, 1000, 5)


def test_the_counter_never_repeats_across_restarts_or_a_restored_file(tmp_path):
    s = _settings(tmp_path)
    first = commands.Sealer(s)
    used = [first.next_seq() for _ in range(20)]
    again = commands.Sealer(s)  # a restart: continues above the persisted block
    assert again.next_seq() > max(used)
    # The counter file restored from an old backup: the database's floor keeps it above what was used.
    (tmp_path / "server-1.seq").unlink()
    restored = commands.Sealer(s, floor=max(used) + 1)
    assert restored.next_seq() > max(used)
    (tmp_path / "server-1.seq").write_text("phasekit-server-seq 99 00000000\n")
    with pytest.raises(CommandError, match="refusing to guess"):
        commands.Sealer(s)


def test_what_the_server_seals_the_gate_accepts_for_that_node_only(tmp_path):
    sealer = commands.Sealer(_settings(tmp_path))
    fields = commands.build_fields("move", {"phase": "B"}, 2_000_000_000, 1)
    seq = sealer.next_seq()
    payload = sealer.seal(seq, "s1", "tx1", 7, fields)
    reset_state(tmp_path / "ops.json", 0)  # the installer's step (phasekit gateway operator-reset)
    reset_state(tmp_path / "ops2.json", 0)
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["server-1"], tmp_path / "ops.json", nodes=[7, 8])
    assert gate.open(payload, 1_999_999_500) == (7, fields)  # deadline at most 900 s ahead (MAX_AHEAD_S)
    _, _, sealed = cbor.loads(payload)
    assert cose.decode(sealed).uhdr[cose.HDR_KID] == b"server-1"
    other = OperatorGate(SITE_KEY, "s1", "tx2", ["server-1"], tmp_path / "ops2.json")
    with pytest.raises(ValueError, match="bad_tag"):
        other.open(payload, 1_999_999_500)


class _Published:
    def __init__(self, fail=False):
        self.messages = []
        self.fail = fail

    def __call__(self, topic, payload):
        if self.fail:
            raise CommandError("broker away")
        self.messages.append((topic, payload))


@pytest.fixture()
def env(tmp_path):
    e = ApiEnv(tmp_path)
    yield e
    e.close()


def _service(env, tmp_path, publish, **kw):
    wall = kw.pop("wall", time.time)
    s = _settings(tmp_path, **kw)
    return commands.CommandService(env.db, commands.Sealer(s, commands.CommandService.floor(env.db, "server-1")),
                                   publish, s, wall)  # fmt: skip


def _ack_record(env, c, outcome, phase, seq=500, addr=None):
    """What the Pi's uplink sends for the node's answer to command ``c`` (its deadline carried)."""
    cmd = {"id": 9, "op": commands.OPS[c.op], "deadline_s": c.deadline_s}
    if c.op == "move":
        cmd.update(phase=c.fields["phase"], expect_phase=(c.fields["phase"] + 1) % 3)
    ack = None if outcome is None else {"id": 9, "outcome": outcome, "phase": phase}
    rec = records.ack(int(c.requested_s) + 2, cmd, ack, addr=None if ack is None else (addr or c.node),
                      seq=None if ack is None else seq)  # fmt: skip
    out = env.server.ingest.handle("phasekit/s1/tx1/ack", _batch([rec]), time.time())
    assert out.new == 1, out


def _batch(items):
    from phasekit.testing import batches

    return batches.encode(items)


def test_request_records_audits_publishes_and_tracks_the_nodes_answer(env, tmp_path):
    pub = _Published()
    svc = _service(env, tmp_path, pub)
    c = svc.request("t1", "user:o1", "10.1.1.1", "s1", "tx1", 3, "move", {"phase": "B"})
    assert c.state == "sent" and c.sent_s is not None
    ((topic, payload),) = pub.messages
    assert topic == "phasekit/s1/tx1/command" and operator.split_payload(payload)[0] == 3
    entry = audit.search(env.db, "t1", action="command.request")[0]
    assert entry.object == "node:s1/tx1/3" and entry.actor == "user:o1" and entry.source == "10.1.1.1"
    assert entry.public()["after"]["params"] == {"phase": "B"}
    # A second command with the same op in the same second gets another deadline: acks stay unambiguous.
    c2 = svc.request("t1", "user:o1", "10.1.1.1", "s1", "tx1", 4, "move", {"phase": "A"})
    assert c2.deadline_s != c.deadline_s
    assert svc.poll() == 0  # nothing came back yet
    _ack_record(env, c, msg.ACK_DONE, 1, addr=4)  # an ack from another node does not match
    assert svc.poll() == 0
    _ack_record(env, c, msg.ACK_DONE, 1)
    _ack_record(env, c2, msg.ACK_REFUSED, 0, seq=501)
    assert svc.poll() == 2
    done, refused = svc.get("t1", c.id), svc.get("t1", c2.id)
    assert done.state == "done" and done.ack == {"outcome": "DONE", "reason": None, "phase": "B"}
    assert refused.state == "refused"
    assert svc.get("t2", c.id) is None  # another tenant's
    assert [x.id for x in svc.list("t1", "s1", "tx1")] == [c2.id, c.id]


def test_no_answer_no_ack_send_failures_and_other_tenants(env, tmp_path):
    now = [time.time()]
    svc = _service(env, tmp_path, _Published(), ttl_s=60, grace_s=30, wall=lambda: now[0])
    c = svc.request("t1", "user:o1", "x", "s1", "tx1", 2, "unlock", {})
    _ack_record(env, c, None, None)  # the Pi's record of a command the node never answered
    svc.poll()
    assert svc.get("t1", c.id).state == "no_ack"
    c = svc.request("t1", "user:o1", "x", "s1", "tx1", 2, "report", {})
    now[0] += 89
    svc.poll()
    assert svc.get("t1", c.id).state == "sent"
    now[0] += 2
    svc.poll()
    assert svc.get("t1", c.id).state == "timeout"
    failing = _service(env, tmp_path, _Published(fail=True))
    c = failing.request("t1", "user:o1", "x", "s1", "tx1", 2, "lock", {})
    assert c.state == "send_failed" and "broker away" in c.detail
    with pytest.raises(commands.NotFound):
        svc.request("t1", "user:o1", "x", "s2", "tx2", 2, "lock", {})  # t2's transformer
    with pytest.raises(commands.NotFound):
        svc.request("t1", "user:o1", "x", "s1", "tx1", 99, "lock", {})  # no such node


def test_a_pause_is_sealed_for_the_transformer_opens_at_its_pi_and_is_done_by_the_pis_own_ack(env, tmp_path):
    pub = _Published()
    svc = _service(env, tmp_path, pub)
    c = svc.request("t1", "user:o1", "10.1.1.1", "s1", "tx1", 0, "pause", {})
    assert c.state == "sent" and c.node == 0 and c.public()["params"] == {}
    entry = audit.search(env.db, "t1", action="command.request")[0]
    assert entry.object == "transformer:s1/tx1" and entry.public()["after"]["op"] == "pause"
    ((_, payload),) = pub.messages
    reset_state(tmp_path / "ops.json", 0)
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["server-1"], tmp_path / "ops.json", nodes=[2, 3])
    node, fields = gate.open(payload, c.deadline_s - 60)
    assert node == 0 and fields["op"] == msg.OP_PAUSE and fields["deadline_s"] == c.deadline_s
    # The Pi carries it out itself and journals an ack of its own (src 0: phasegate.journal.Journal.pi_ack).
    assert svc.poll() == 0
    ack = {"id": fields["id"], "outcome": msg.ACK_DONE, "phase": msg.PHASE_NONE}
    rec = records.ack(int(c.requested_s) + 1, fields, ack, addr=0)
    assert env.server.ingest.handle("phasekit/s1/tx1/ack", _batch([rec]), time.time()).new == 1
    assert svc.poll() == 1
    done = svc.get("t1", c.id)
    assert done.state == "done" and done.ack["outcome"] == "DONE"
    # Scope: pause/resume only for the transformer, node commands only for a node; another tenant's: not found.
    with pytest.raises(CommandError, match="whole transformer"):
        svc.request("t1", "user:o1", "x", "s1", "tx1", 3, "resume", {})
    with pytest.raises(CommandError, match="needs a node"):
        svc.request("t1", "user:o1", "x", "s1", "tx1", 0, "lock", {})
    with pytest.raises(commands.NotFound):
        svc.request("t1", "user:o1", "x", "s2", "tx2", 0, "pause", {})
    r = svc.request("t1", "user:o1", "x", "s1", "tx1", 0, "resume", {})
    expected = commands.build_fields("resume", {}, r.deadline_s, r.seq)
    assert gate.open(pub.messages[-1][1], r.deadline_s - 60) == (0, expected)


def test_refusals_reported_by_the_pi_are_audited_once(env, tmp_path):
    svc = _service(env, tmp_path, _Published())
    t = int(time.time())
    for i, reason in enumerate(("replay", "bad_tag")):
        ev = {"code": codes.EV_OPERATOR_REFUSED, "value": operator.REFUSAL_REASONS.index(reason), "time_s": t,
              "severity": 2}  # fmt: skip
        env.server.ingest.handle("phasekit/s1/tx1/alarm", _batch([records.event(t + i, ev)]), time.time())
    svc.poll()
    svc.poll()
    refused = audit.search(env.db, "t1", action="command.refused_at_pi")
    assert sorted(e.public()["after"]["reason"] for e in refused) == ["bad_tag", "replay"]
    assert {e.actor for e in refused} == {"pi:s1/tx1"} and {e.object for e in refused} == {"transformer:s1/tx1"}
    assert audit.search(env.db, "t2", action="command.refused_at_pi") == []


def test_the_api_route_checks_role_tenant_and_input(tmp_path):
    with LocalBroker(tmp_path / "broker") as broker:
        e = ApiEnv(tmp_path, broker=broker)
        try:
            with e.client() as c:
                assert e.api.commands.publish.wait_connected(10)
                url = "/api/v1/transformers/s1/tx1/commands"
                body = {"node": 3, "op": "move", "phase": "B"}
                assert c.post(url, json=body, headers=e.bearer(c, "v1")).status_code == 403
                assert c.post(url, json=body, headers=e.bearer(c, "o2")).status_code == 404
                assert c.post(url, json=dict(body, node=0), headers=e.bearer(c, "o1")).status_code == 422
                assert c.post(url, json={"node": 3, "op": "move"}, headers=e.bearer(c, "o1")).status_code == 422
                r = c.post(url, json=body, headers=e.bearer(c, "o1"))
                assert r.status_code == 202 and r.json()["state"] == "sent", r.text
                cid = r.json()["id"]
                assert c.get("/api/v1/commands/%d" % cid, headers=e.bearer(c, "v1")).json()["op"] == "move"
                assert c.get("/api/v1/commands/%d" % cid, headers=e.bearer(c, "v2")).status_code == 404
                r = c.post(url, json={"node": 3, "op": "set_limits", "limits": {"i_max_mA": 20000}},
                           headers=e.key("operator1"))  # fmt: skip
                assert r.status_code == 202 and r.json()["params"] == {"i_max_mA": 20000}
                # The transformer's balancer: pause and resume with no node (or node 0), operators only.
                assert c.post(url, json={"op": "pause"}, headers=e.bearer(c, "v1")).status_code == 403
                assert c.post(url, json={"op": "pause", "node": 3}, headers=e.bearer(c, "o1")).status_code == 422
                assert c.post(url, json={"op": "lock"}, headers=e.bearer(c, "o1")).status_code == 422
                r = c.post(url, json={"op": "pause"}, headers=e.bearer(c, "o1"))
                assert r.status_code == 202 and r.json()["node"] == 0 and r.json()["state"] == "sent", r.text
                r = c.post(url, json={"op": "resume", "node": 0}, headers=e.bearer(c, "o1"))
                assert r.status_code == 202 and r.json()["op"] == "resume", r.text
        finally:
            e.close()


# ---- the whole path ---------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_to_node_and_back_through_the_real_gateway(tmp_path):
    node = SimNode(7, SITE_KEY, phase=msg.PHASE_A, current_mA=5000)
    http_port = _free_port()
    with LocalBroker(tmp_path / "broker") as broker, SimBus([node]) as sim:
        gw_cfg = write_config(
            tmp_path,
            SITE_KEY,
            gateway_toml(
                sim.port, [7], broker, site="s1", transformer="tx1",
                bus={"reply_timeout_ms": 100, "poll_period_s": 0.5}, balancer={"enabled": False},
                uplink={"operators": ["server-1"], "mode": "raw", "raw_batch_s": 0.5},
            ),
        )  # fmt: skip
        reset_state(tmp_path / "operators.json", 0)  # the installer's step (phasekit gateway operator-reset)
        from api_env import commands_table

        from phaseserver import config as server_config

        tls = broker.tls
        cfg = server_config.write(
            tmp_path / "server.toml",
            {
                "server": {"http_port": http_port, "log_level": "info"},
                "storage": {"path": "server.db"},
                "ingest": {"host": broker.host, "port": broker.port, "ca": str(tls.ca), "cert": str(tls.client_cert),
                           "key": str(tls.client_key), "client_id": "e2e-ingest", "reconnect_min_s": 0.1},
                "auth": {"cookie_secure": False, "argon2_time_cost": 1, "argon2_memory_kib": 8192,
                         "argon2_parallelism": 1},
                "commands": commands_table(tmp_path, broker, poll_s=0.2),
            },
        )  # fmt: skip
        log = open(tmp_path / "server.log", "w")
        server = python_popen(
            "-m", "phaseserver", "run", "--config", str(cfg.path), stdout=log, stderr=subprocess.STDOUT
        )
        gw_log = open(tmp_path / "gw.log", "w")
        gw = phasekit_popen("gateway", "run", str(gw_cfg), stdout=gw_log)
        store = None
        base = "http://127.0.0.1:%d" % http_port
        try:
            assert wait_until(lambda: server.poll() is not None or _up(base), 30) and server.poll() is None, (
                tmp_path / "server.log"
            ).read_text()[-3000:]
            store = open_store(cfg, migrate=False)  # a second connection to the running server's file
            db = store.db
            assert wait_until(
                lambda: db.fetchone("SELECT 1 FROM node WHERE site = 's1' AND transformer = 'tx1' AND addr = 7"), 30
            ), (tmp_path / "server.log").read_text()[-3000:]
            m = Manager(db, Hasher(1, 8192, 1), time.time)
            m.add_tenant(CLI, "t1", "Utility One")
            m.assign_site(CLI, store, "s1", "t1")
            for name, role in (("o1", "operator"), ("v1", "viewer"), ("a1", "auditor")):
                m.add_account(CLI, name, "t1", role, PASSWORD)
            seen = []
            spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy")
            spy.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
            spy.on_message = lambda c, u, msg_: seen.append(bytes(msg_.payload))
            spy.connect(broker.host, broker.port)
            spy.subscribe("phasekit/s1/tx1/command", qos=1)
            spy.loop_start()
            with httpx.Client(base_url=base, timeout=10) as http:

                def login(name):
                    r = http.post("/api/v1/auth/token", json={"name": name, "password": PASSWORD})
                    assert r.status_code == 200, r.text
                    return {"Authorization": "Bearer " + r.json()["access_token"]}

                op, viewer, auditor = login("o1"), login("v1"), login("a1")
                url = "/api/v1/transformers/s1/tx1/commands"
                assert http.post(url, json={"node": 7, "op": "move", "phase": "C"}, headers=viewer).status_code == 403
                t0 = time.monotonic()
                r = http.post(url, json={"node": 7, "op": "move", "phase": "C"}, headers=op)
                assert r.status_code == 202 and r.json()["state"] == "sent", r.text
                cid = r.json()["id"]

                def state():
                    return http.get("/api/v1/commands/%d" % cid, headers=viewer).json()

                assert wait_until(lambda: state()["state"] != "sent", 30), state()
                took = time.monotonic() - t0
                final = state()
                assert final["state"] == "done", (final, (tmp_path / "gw.log").read_text()[-2000:])
                assert final["ack"] == {"outcome": "DONE", "reason": None, "phase": "C"}
                assert node.phase == msg.PHASE_C
                # Replay the captured command, and send a forgery under another site's key: the Pi refuses
                # both, reports them on its uplink, and the server audits each refusal.
                assert wait_until(lambda: seen, 5)
                spy.publish("phasekit/s1/tx1/command", seen[0], qos=1).wait_for_publish(5)
                fkey, fiv = operator.operator_key(bytes(range(1, 33)), "server-1")
                forged = operator.seal_command(fkey, fiv, "server-1", 10**6, "s1", "tx1", 7,
                                               {"id": 1, "op": msg.OP_MOVE, "deadline_s": int(time.time()) + 60,
                                                "phase": 0})  # fmt: skip
                spy.publish("phasekit/s1/tx1/command", forged, qos=1).wait_for_publish(5)

                def refusals():
                    r = http.get("/api/v1/audit", params={"action": "command.refused_at_pi"}, headers=auditor)
                    return sorted(e["after"]["reason"] for e in r.json()["entries"])

                assert wait_until(lambda: refusals() == ["bad_tag", "replay"], 30), refusals()
                assert [c_["op"] for c_ in node.commands if c_["op"] == msg.OP_MOVE] == [msg.OP_MOVE]
                trail = http.get("/api/v1/audit", params={"object": "node:s1/tx1/7"}, headers=auditor).json()
                assert [e["action"] for e in trail["entries"]] == ["command.request"]
                assert trail["entries"][0]["actor"] == "user:o1"
            spy.loop_stop()
            spy.disconnect()
            print("API call to DONE shown by the API: %.2f s" % took)
            (tmp_path / "e2e.json").write_text(json.dumps({"api_to_done_s": took}))
        finally:
            if store is not None:
                store.close()
            for p in (gw, server):
                p.terminate()
            for p in (gw, server):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()
            gw_log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]


def _up(base):
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
