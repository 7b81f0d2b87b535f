"""The node's settings schema (both interpreters): config.json validated with the file and the key named.

``phasenode.settings`` is what ``phasekit provision`` and the node both check
a config with; a bad value gives a ``ConfigError`` (a ``PersistError``, a
``PhasecoreError``, a ``ValueError``) whose message starts with the file and
the key. Reading and writing the file is ``phasenode.persist``'s (test_persist).
"""

import json

from phasecore.codes import PHASE_A, PHASE_B, PHASE_C
from phasecore.errors import PhasecoreError
from phasenode import persist as P
from phasenode import settings as S
from phasenode.errors import NodeError, PersistError
from portable import raises

GOOD = {
    "format": 1,
    "node": {"id": "feeder7-n042", "address": 42},
    "key": {"file": "node.key", "generation": 3},
    "board": "esp32-devkitc-max485",
    "home_phase": "B",
    "limits": {"overcurrent_ma": 32000},
    "relay": {"dead_time_ms": 3000, "max_per_day": 8},
}


def _copy(obj):
    return json.loads(json.dumps(obj))


def _bad(path, value, key):
    obj = _copy(GOOD)
    parts = path.split(".")
    d = obj
    for p in parts[:-1]:
        d = d[p]
    if value is _DELETE:
        del d[parts[-1]]
    else:
        d[parts[-1]] = value
    e = raises(S.ConfigError, S.validate_config, obj)
    assert e.file == "config.json" and e.key == key, (path, value, str(e))
    assert str(e).startswith("config.json: " + key + ": "), str(e)
    assert isinstance(e, PhasecoreError) and isinstance(e, ValueError)
    return e


_DELETE = object()


def test_config_errors_name_file_and_key():
    _bad("format", 2, "format")
    _bad("format", _DELETE, "format")
    _bad("node.id", "", "node.id")
    _bad("node.id", "a/b", "node.id")
    _bad("node.id", "x" * 33, "node.id")
    _bad("node.id", 7, "node.id")
    _bad("node.address", 0, "node.address")
    _bad("node.address", 248, "node.address")
    _bad("node.address", True, "node.address")
    _bad("node.address", _DELETE, "node.address")
    _bad("node.port", 1, "node.port")
    _bad("key.file", "../etc/key", "key.file")
    _bad("key.file", ".key", "key.file")
    _bad("key.generation", -1, "key.generation")
    _bad("key", "node.key", "key")
    _bad("board", None, "board")
    _bad("home_phase", "D", "home_phase")
    _bad("home_phase", 1, "home_phase")
    _bad("limits.overcurrent_ma", 500, "limits.overcurrent_ma")
    _bad("limits.overcurrent_a", 40, "limits.overcurrent_a")
    _bad("limits.undervoltage_dv", 2600, "limits.undervoltage_dv")  # above overvoltage 2530
    _bad("relay.dead_time_ms", 5, "relay.dead_time_ms")
    _bad("relay.max_per_hour", 9, "relay.max_per_hour")  # above max_per_day 8
    _bad("relay.dwell_s", 9, "relay.dwell_s")
    _bad("relay", [], "relay")
    _bad("extra", 1, "extra")
    e = _bad("relay.min_dwell_s", 0, "relay.min_dwell_s")
    assert "1..86400" in str(e)
    raises(S.ConfigError, S.validate_config, [1, 2])


def test_config_app_settings_are_validated_with_file_and_key():
    from phasenode.app import Settings

    cfg = S.validate_config(_copy(GOOD))
    assert cfg.app == dict((name, default) for name, _lo, _hi, default in S.APP_SETTINGS)
    obj = _copy(GOOD)
    obj["app"] = {"sample_ms": 1500, "lora_polled": 1}
    cfg = S.validate_config(obj)
    assert cfg.app["sample_ms"] == 1500 and cfg.app["lora_polled"] == 1 and cfg.app["heartbeat_s"] == 900
    s = Settings.from_config(cfg)
    assert s.sample_ms == 1500 and s.as_dict() == cfg.app
    for name, lo, hi, _default in S.APP_SETTINGS:
        for v in (lo - 1, hi + 1, True, "5"):
            obj["app"] = {name: v}
            e = raises(S.ConfigError, S.validate_config, obj)
            assert e.file == "config.json" and e.key == "app." + name, (name, v, str(e))
    obj["app"] = {"poll_rate": 3}
    assert raises(S.ConfigError, S.validate_config, obj).key == "app.poll_rate"
    obj["app"] = {"lora_report_min_s": 400, "lora_report_max_s": 300}
    assert raises(S.ConfigError, S.validate_config, obj).key == "app.lora_report_min_s"
    obj["app"] = [1]
    e = raises(S.ConfigError, S.validate_config, obj)
    assert e.key == "app" and str(e).startswith("config.json: app: ")


def test_home_phase_letters_are_the_wire_phases():
    for letter, phase in (("A", PHASE_A), ("B", PHASE_B), ("C", PHASE_C)):
        obj = _copy(GOOD)
        obj["home_phase"] = letter
        assert S.validate_config(obj).home_phase == phase
    for bad in ("-", "a", "ABC", "", None, 0, ["A"]):
        obj = _copy(GOOD)
        obj["home_phase"] = bad
        assert raises(S.ConfigError, S.validate_config, obj).key == "home_phase"


def test_config_errors_are_node_and_persist_errors_and_persist_still_names_them():
    e = raises(S.ConfigError, S.validate_config, {"format": 2})
    assert isinstance(e, PersistError) and isinstance(e, NodeError) and isinstance(e, PhasecoreError)
    assert S.ConfigError is P.ConfigError and S.CONFIG_FILE == P.CONFIG_FILE == "config.json"


def test_release_key_is_64_hex_digits_or_absent():
    cfg = S.validate_config(_copy(GOOD))
    assert cfg.release_key is None  # no key: the node refuses updates over its link
    obj = _copy(GOOD)
    obj["release_key"] = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100"
    key = S.validate_config(obj).release_key
    assert len(key) == 32 and key[:2] == b"\x00\x11" and key[-1] == 0
    for bad in ("00" * 31, "00" * 33, "zz" * 32, " 0" * 32, "+f" + "00" * 31, 42, [1]):
        e = _bad("release_key", bad, "release_key")
        assert "hex" in str(e), (bad, str(e))


def test_ota_confirm_deadline_is_an_app_setting():
    cfg = S.validate_config(_copy(GOOD))
    assert cfg.app["ota_confirm_s"] == 900
    _bad("app", {"ota_confirm_s": 10}, "app.ota_confirm_s")
