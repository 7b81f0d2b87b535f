"""Operator commands end to end: sealed by the operator, carried by Mosquitto, verified by the Pi.

A genuine command moves the node (through the Pi's sealed link and the
node's ack); a command sealed with another site's key, one replayed from the
broker, one for another transformer and one past its deadline move nothing.
"""

import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from hostile import VALUES, assert_typed, dumps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import msg
from phasegate.controller import read_pause_state
from phasegate.operator import OperatorGate, OperatorRefused, operator_key, reset_state, seal_command
from phasekit.sim.bus_nodes import SimBus, SimNode
from phasekit.testing.broker import LocalBroker
from phasekit.testing.gateway import phasekit_popen, uplink_table, write_config

SITE_KEY = bytes(range(32))
OTHER_SITE_KEY = bytes(range(1, 33))
T_NOW = 1_800_000_000


def _cmd(op=msg.OP_MOVE, deadline=T_NOW + 60, **kw):
    fields = {"id": 1, "op": op, "deadline_s": deadline}
    fields.update(kw)
    return fields


def _gate(tmp_path, **kw):
    path = tmp_path / "operators.json"
    if not path.exists():
        reset_state(path, 0)  # the installer's step (phasekit gateway operator-reset)
    return OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], path, nodes=[7], **kw)


def test_gate_accepts_a_genuine_command_once_and_refuses_everything_else(tmp_path):
    key, iv = operator_key(SITE_KEY, "ops-1")
    good = seal_command(key, iv, "ops-1", 5, "s1", "tx1", 7, _cmd(phase=2))
    gate = _gate(tmp_path)
    assert gate.open(good, T_NOW) == (7, _cmd(phase=2))

    def refused(payload, now=T_NOW, g=gate):
        with pytest.raises(OperatorRefused) as e:
            g.open(payload, now)
        return e.value.reason

    assert refused(good) == "replay"
    # A restarted Pi remembers: the window was persisted before the command was returned.
    assert refused(good, g=_gate(tmp_path)) == "replay"
    fkey, fiv = operator_key(OTHER_SITE_KEY, "ops-1")
    assert refused(seal_command(fkey, fiv, "ops-1", 6, "s1", "tx1", 7, _cmd(phase=2))) == "bad_tag"
    assert refused(seal_command(key, iv, "ops-1", 7, "s1", "tx2", 7, _cmd(phase=2))) == "bad_tag"  # other Pi
    assert refused(seal_command(key, iv, "ops-1", 8, "s1", "tx1", 9, _cmd(phase=2))) == "unknown_node"
    assert refused(seal_command(key, iv, "intruder", 9, "s1", "tx1", 7, _cmd(phase=2))) == "unknown_operator"
    assert refused(seal_command(key, iv, "ops-1", 10, "s1", "tx1", 7, _cmd(phase=2, deadline=T_NOW - 1))) == "expired"
    assert refused(b"\x83\x01\x07\x40") == "malformed"
    assert refused(b"\xff" * 20) == "malformed"
    # The node in the AAD cannot be changed in transit: re-wrap the sealed object for another node.
    from phasecore import cbor

    _, _, sealed = cbor.loads(seal_command(key, iv, "ops-1", 11, "s1", "tx1", 7, _cmd(phase=1)))
    reset_state(tmp_path / "op2.json", 0)
    gate2 = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], tmp_path / "op2.json", nodes=[7, 8])
    assert refused(cbor.dumps([1, 8, sealed]), g=gate2) == "bad_tag"


def test_pause_and_resume_are_for_the_transformer_only_and_bound_to_it(tmp_path):
    key, iv = operator_key(SITE_KEY, "ops-1")
    gate = _gate(tmp_path)

    def refused(payload, g=gate):
        with pytest.raises(OperatorRefused) as e:
            g.open(payload, T_NOW)
        return e.value.reason

    pause = seal_command(key, iv, "ops-1", 1, "s1", "tx1", 0, _cmd(msg.OP_PAUSE))
    assert gate.open(pause, T_NOW) == (0, _cmd(msg.OP_PAUSE))
    assert gate.open(seal_command(key, iv, "ops-1", 2, "s1", "tx1", 0, _cmd(msg.OP_RESUME)), T_NOW)[0] == 0
    assert refused(pause) == "replay"
    # Node commands to node 0, and PAUSE/RESUME to a node, are refused typed.
    for seq, op in enumerate((msg.OP_LOCK, msg.OP_UNLOCK, msg.OP_REPORT), start=3):
        assert refused(seal_command(key, iv, "ops-1", seq, "s1", "tx1", 0, _cmd(op))) == "wrong_scope"
    assert refused(seal_command(key, iv, "ops-1", 6, "s1", "tx1", 0, _cmd(phase=2))) == "wrong_scope"
    for seq, op in ((7, msg.OP_PAUSE), (8, msg.OP_RESUME)):
        assert refused(seal_command(key, iv, "ops-1", seq, "s1", "tx1", 7, _cmd(op))) == "wrong_scope"
    assert gate.counters["wrong_scope"] == 6
    # A pause sealed for another transformer (or site) fails the tag here, and this one's fails there.
    assert refused(seal_command(key, iv, "ops-1", 9, "s1", "tx2", 0, _cmd(msg.OP_PAUSE))) == "bad_tag"
    assert refused(seal_command(key, iv, "ops-1", 10, "s2", "tx1", 0, _cmd(msg.OP_PAUSE))) == "bad_tag"
    reset_state(tmp_path / "tx2.json", 0)
    other = OperatorGate(SITE_KEY, "s1", "tx2", ["ops-1"], tmp_path / "tx2.json", nodes=[7])
    assert refused(pause, g=other) == "bad_tag"
    # The node in the payload cannot be rewritten: a pause's sealed object re-wrapped as for node 7, and back.
    from phasecore import cbor

    _, _, sealed = cbor.loads(seal_command(key, iv, "ops-1", 11, "s1", "tx1", 0, _cmd(msg.OP_PAUSE)))
    assert refused(cbor.dumps([1, 7, sealed])) == "bad_tag"
    _, _, sealed = cbor.loads(seal_command(key, iv, "ops-1", 12, "s1", "tx1", 7, _cmd(msg.OP_LOCK)))
    assert refused(cbor.dumps([1, 0, sealed])) == "bad_tag"
    # A restarted Pi still refuses the replay of the pause.
    assert refused(pause, g=_gate(tmp_path)) == "replay"


def test_a_missing_or_damaged_state_file_closes_the_gate_until_a_reset_with_a_new_generation(tmp_path):
    key, iv = operator_key(SITE_KEY, "ops-1")
    path = tmp_path / "operators.json"
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], path, nodes=[7])  # never initialised
    good = seal_command(key, iv, "ops-1", 5, "s1", "tx1", 7, _cmd(phase=2))
    with pytest.raises(OperatorRefused) as e:
        gate.open(good, T_NOW)
    assert e.value.reason == "no_state" and "missing" in str(e.value)
    reset_state(path, 0)
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], path, nodes=[7])
    assert gate.open(good, T_NOW)[0] == 7
    # Damage: a flipped digit keeps valid JSON, the CRC does not match; truncation; garbage; deletion.
    text = path.read_text()
    for damaged in (text.replace('"ops-1": 5', '"ops-1": 4'), text[:-7], "\x00" * 40, None):
        if damaged is None:
            path.unlink()
        else:
            path.write_text(damaged)
        g = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], path, nodes=[7])
        with pytest.raises(OperatorRefused) as e:
            g.open(good, T_NOW)  # the replay would otherwise be accepted again
        assert e.value.reason == "no_state"
    # The administrator re-initialises with a new generation: old keys' commands fail the tag.
    assert reset_state(path, 1) is None
    with pytest.raises(ValueError, match="higher"):
        reset_state(path, 1)
    g = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], path, nodes=[7])
    with pytest.raises(OperatorRefused) as e:
        g.open(good, T_NOW)
    assert e.value.reason == "bad_tag"
    key1, iv1 = operator_key(SITE_KEY, "ops-1", 1)
    assert key1 != key
    assert g.open(seal_command(key1, iv1, "ops-1", 1, "s1", "tx1", 7, _cmd(phase=2)), T_NOW)[0] == 7


def test_a_state_file_that_cannot_be_written_closes_the_gate(tmp_path):
    key, iv = operator_key(SITE_KEY, "ops-1")
    folder = tmp_path / "ro"
    folder.mkdir()
    reset_state(folder / "operators.json", 0)
    gate = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], folder / "operators.json", nodes=[7])
    (folder / "operators.json.tmp").mkdir()  # the atomic write's temporary file cannot be created
    with pytest.raises(OperatorRefused) as e:
        gate.open(seal_command(key, iv, "ops-1", 5, "s1", "tx1", 7, _cmd(phase=2)), T_NOW)
    assert e.value.reason == "no_state"
    (folder / "operators.json.tmp").rmdir()
    with pytest.raises(OperatorRefused) as e:
        gate.open(seal_command(key, iv, "ops-1", 6, "s1", "tx1", 7, _cmd(phase=2)), T_NOW)
    assert e.value.reason == "no_state"  # closed until an administrator resets it


def test_deadlines_are_bounded_and_a_refused_far_deadline_cannot_be_replayed_later(tmp_path):
    from phasegate.operator import MAX_AHEAD_S

    key, iv = operator_key(SITE_KEY, "ops-1")
    gate = _gate(tmp_path)
    far = seal_command(key, iv, "ops-1", 5, "s1", "tx1", 7, _cmd(phase=2, deadline=T_NOW + MAX_AHEAD_S + 1))
    with pytest.raises(OperatorRefused) as e:
        gate.open(far, T_NOW)
    assert e.value.reason == "too_far"
    with pytest.raises(OperatorRefused) as e:
        gate.open(far, T_NOW + 60)  # later, when it would be within the bound: its seq is spent
    assert e.value.reason == "replay"
    ok = seal_command(key, iv, "ops-1", 6, "s1", "tx1", 7, _cmd(phase=2, deadline=T_NOW + MAX_AHEAD_S))
    assert gate.open(ok, T_NOW)[0] == 7


def test_oversized_and_hostile_payloads_are_refused_typed_and_fast(tmp_path):
    import time as _time

    from phasecore import cbor, cose

    gate = _gate(tmp_path)
    t0 = _time.perf_counter()
    with pytest.raises(OperatorRefused) as e:
        gate.open(b"\x5a" + (100 << 20).to_bytes(4, "big") + b"\x00" * (100 << 20), T_NOW)
    assert e.value.reason == "too_large" and _time.perf_counter() - t0 < 0.5
    key, iv = operator_key(SITE_KEY, "ops-1")
    sealed = cbor.loads(seal_command(key, iv, "ops-1", 5, "s1", "tx1", 7, _cmd(phase=2)))[2]
    hostile = [1 << 20000, -1, 0, 248, True, None, 1.5, "x" * 500, b"", [], {}, cbor.Tag(16, [])]
    for node in hostile:
        for payload in ([1, node, sealed], [node, 7, sealed], [1, 7, node], [1, 7, sealed, node], node):
            data = cbor.dumps(payload)
            if len(data) > 1024:
                data = data[:1024]
            with pytest.raises(OperatorRefused) as e:
                gate.open(data, T_NOW)
            assert len(str(e.value)) < 400
    # COSE with a hostile kid or Partial IV (a list kid used to raise TypeError: unhashable).
    for kid in ([1], {1: 2}, 1 << 8000, "ops-1", None):
        obj = cbor.dumps([cbor.dumps({1: 11}), {4: kid, 6: b"\x01"}, b"\x00" * 16])
        with pytest.raises(OperatorRefused) as e:
            gate.open(cbor.dumps([1, 7, obj]), T_NOW)
        assert e.value.reason in ("unknown_operator", "malformed", "too_large") and len(str(e.value)) < 400
    assert cose.ALG_AES_CCM_16_64_256 == 11


def _config(tmp_path, port, broker):
    return write_config(
        tmp_path,
        SITE_KEY,
        """
[site]
id = "s1"
transformer = "tx1"
key_file = "site.key"

[bus]
port = "%s"
nodes = [7]
reply_timeout_ms = 100
poll_period_s = 0.5

[balancer]
enabled = false

[store]
path = "buffer.db"

"""
        % port
        + uplink_table(broker, operators=["ops-1"]),
    )


def _phasekit(*args):
    p = phasekit_popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_operator_move_through_mosquitto_moves_the_node_and_forgeries_and_replays_do_not(tmp_path):
    node = SimNode(7, SITE_KEY, phase=msg.PHASE_A, current_mA=5000)
    with LocalBroker(tmp_path / "broker") as broker, SimBus([node]) as sim:
        cfg = _config(tmp_path, sim.port, broker)
        r = _phasekit("gateway", "operator-reset", str(cfg), "--generation", "0")
        assert r.returncode == 0, r.stderr
        gw = phasekit_popen("gateway", "run", str(cfg), text=True)
        try:
            assert _wait(lambda: node.polls >= 3), "the gateway never polled the node"
            time.sleep(1.0)  # subscribed to its command topic
            r = _phasekit(
                "operator",
                "key",
                "--site-key",
                str(tmp_path / "site.key"),
                "--operator",
                "ops-1",
                "--out",
                str(tmp_path / "ops.key"),
            )
            assert r.returncode == 0, r.stderr
            assert SITE_KEY.hex() not in r.stdout + r.stderr
            tls = broker.tls
            send = [
                "operator",
                "send",
                "--key-file",
                str(tmp_path / "ops.key"),
                "--operator",
                "ops-1",
                "--site",
                "s1",
                "--transformer",
                "tx1",
                "--node",
                "7",
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--ca",
                str(tls.ca),
                "--cert",
                str(tls.client_cert),
                "--tls-key",
                str(tls.client_key),
            ]
            # Capture what goes over the broker so it can be replayed verbatim.
            seen = []
            spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spy")
            spy.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
            spy.on_message = lambda c, u, m: seen.append(bytes(m.payload))
            spy.connect(broker.host, broker.port)
            spy.subscribe("phasekit/s1/tx1/command", qos=1)
            spy.loop_start()
            time.sleep(0.3)
            r = _phasekit(*send, "move", "C")
            assert r.returncode == 0, r.stderr
            assert _wait(lambda: node.phase == msg.PHASE_C), "the node did not move"
            moves = [c for c in node.commands if c["op"] == msg.OP_MOVE]
            assert len(moves) == 1 and moves[0]["expect_phase"] == msg.PHASE_A
            assert _wait(lambda: seen)
            # Replay the captured command, and send one sealed under another site's key.
            spy.publish("phasekit/s1/tx1/command", seen[0], qos=1).wait_for_publish(5)
            fkey, fiv = operator_key(OTHER_SITE_KEY, "ops-1")
            forged = seal_command(fkey, fiv, "ops-1", 99, "s1", "tx1", 7, _cmd(phase=0, deadline=int(time.time()) + 60))
            spy.publish("phasekit/s1/tx1/command", forged, qos=1).wait_for_publish(5)
            time.sleep(2.0)
            spy.loop_stop()
            spy.disconnect()
            assert [c for c in node.commands if c["op"] == msg.OP_MOVE] == moves, "a replay or forgery moved it"
            assert node.phase == msg.PHASE_C
            # The transformer's balancer: pause takes no --node (sealed for node 0, the Pi itself).
            r = _phasekit(*send, "pause")
            assert r.returncode != 0 and "no --node" in r.stderr
            no_node = [a for i, a in enumerate(send) if a != "--node" and send[i - 1] != "--node"]
            r = _phasekit(*no_node, "pause")
            assert r.returncode == 0 and "to the balancer" in r.stdout, r.stderr
            assert _wait(lambda: (tmp_path / "balancer.json").exists())
            assert read_pause_state(tmp_path / "balancer.json")[0] is True
            r = _phasekit(*no_node, "lock")
            assert r.returncode != 0 and "needs a node" in r.stderr
        finally:
            gw.send_signal(signal.SIGTERM)
            out, _ = gw.communicate(timeout=20)
    assert gw.returncode == 0, out
    assert "operator ops-1: MOVE for node 7 accepted" in out
    assert "refused (replay)" in out and "refused (bad_tag)" in out
    assert "operator ops-1: PAUSE for node 0 accepted" in out and "balancer paused by an operator" in out


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(value=VALUES, raw=st.binary(max_size=200))
def test_any_payload_gives_only_a_refusal(tmp_path, value, raw):
    gate = _gate(tmp_path)
    for payload in (dumps(value), dumps([1, 7, dumps(value)]), dumps([1, 7, dumps([b"", value, b"\x00" * 9])]), raw):
        assert_typed(gate.open, OperatorRefused, payload, T_NOW)
