"""The Pi's state files at a trust boundary: hostile contents give only the gateway's typed errors.

The registry state (generations and replay-window tops), the Pi's sequence
counter and the operator gate's state are read back at every start; a
damaged card or a hand edit can put anything in them. Each is replaced by
hostile JSON or bytes (huge integers, deep nesting, every JSON type in every
field); opening raises only ``GatewayError`` subclasses with short messages
(and the operator gate, instead of raising, closes itself: ``no_state``).
"""

import json

from hostile import assert_typed, variants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import balancer
from phasegate.controller import Controller, read_pause_state, write_pause_state
from phasegate.errors import GatewayError
from phasegate.operator import OperatorGate, OperatorRefused, reset_state
from phasegate.registry import CounterFile, Registry

SITE_KEY = bytes(range(32))
SAMPLES = ["HUGE", "-HUGE", 10**30, -1, 0.5, "x" * 5000, "", None, True, [], {}, [[[[1]]]], {"9" * 5000: 1}]


def _text(obj):
    return json.dumps(obj).replace('"-HUGE"', "-" + "9" * 5000).replace('"HUGE"', "9" * 5000)


def _registry(tmp_path):
    return Registry(SITE_KEY, [1, 2], tmp_path / "pi-seq.txt", tmp_path / "registry.json")


def _open_all(tmp_path):
    assert_typed(_registry, GatewayError, tmp_path)
    gate = assert_typed(OperatorGate, GatewayError, SITE_KEY, "s", "t", ["ops"], tmp_path / "operators.json")
    if isinstance(gate, OperatorGate):
        r = assert_typed(gate.open, OperatorRefused, b"\x83\x01\x01\x40", 1.0)
        assert isinstance(r, OperatorRefused)


def _prime(tmp_path):
    _registry(tmp_path).save_state()
    reset_state(tmp_path / "operators.json", 3)


def test_every_type_in_every_field_of_the_registry_and_operator_state(tmp_path):
    _prime(tmp_path)
    for name in ("registry.json", "operators.json"):
        path = tmp_path / name
        original = path.read_text()
        good = json.loads(original)
        bads = variants(good, SAMPLES) + SAMPLES
        if isinstance(good.get("nodes"), dict):
            bads += [dict(good, nodes=n) for n in variants(good["nodes"], SAMPLES)]
            bads += [
                dict(good, nodes={k: v})
                for k in ("1", "9" * 5000, "-1", "x")
                for v in variants(good["nodes"]["1"], SAMPLES)
            ]
        if isinstance(good.get("tops"), dict):
            bads += [dict(good, tops={"ops": v}) for v in SAMPLES]
        for bad in bads:
            path.write_text(_text(bad))
            _open_all(tmp_path)
        path.write_text(original)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=3000), which=st.sampled_from(["registry.json", "operators.json", "pi-seq.txt"]))
def test_arbitrary_bytes_in_any_state_file(tmp_path, data, which):
    for name in ("registry.json", "operators.json", "pi-seq.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    _prime(tmp_path)
    (tmp_path / which).write_bytes(data)
    _open_all(tmp_path)


def test_a_hostile_pause_state_gives_a_typed_error_and_a_paused_balancer(tmp_path):
    path = tmp_path / "balancer.json"
    write_pause_state(path, False, None)
    good = json.loads(path.read_text())
    texts = [_text(b) for b in variants(good, SAMPLES) + SAMPLES if b != good]
    texts += ["[" * 100000 + "]" * 100000, "\x00\xff" * 100, '{"format": 1, "since_s": ' + "9" * 5000 + "}"]
    for text in texts:
        path.write_text(text)
        assert_typed(read_pause_state, GatewayError, path)
        ctl = Controller(_registry(tmp_path), balancer.Balancer(balancer.Config()), {}, pause_path=path)
        assert ctl.paused, text[:80]
    write_pause_state(path, True, 5)
    assert read_pause_state(path) == (True, 5)


def test_deep_nesting_and_huge_numbers(tmp_path):
    _prime(tmp_path)
    for name in ("registry.json", "operators.json"):
        for text in ("[" * 100000 + "]" * 100000, '{"format": 1, "nodes": {"1": {"generation": ' + "9" * 5000 + "}}}"):
            (tmp_path / name).write_text(text)
            _open_all(tmp_path)
        for n in ("registry.json", "operators.json", "pi-seq.txt"):
            (tmp_path / n).unlink(missing_ok=True)
        _prime(tmp_path)
    for text in ("phasekit-pi-seq 1 " + "9" * 5000 + " 00000000\n", "phasekit-pi-seq 1 -5 00000000\n"):
        (tmp_path / "pi-seq.txt").write_text(text)
        assert_typed(CounterFile(tmp_path / "pi-seq.txt").load, GatewayError)
