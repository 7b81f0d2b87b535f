"""Gateway config: defaults filled in, every error names file, line and key."""

import pytest

from phasegate.config import ConfigError, load

GOOD = """\
[site]
id = "s1"
transformer = "t1"
key_file = "site.key"

[bus]
port = "/dev/ttyUSB0"
nodes = [1, 2, 3]

[store]
path = "buffer.db"
"""


def write(tmp_path, text):
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    return p


def test_good_file_gets_defaults_and_relative_paths_resolve(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.table("bus")["baud"] == 115200
    assert cfg.table("bus")["nodes"] == [1, 2, 3]
    assert not cfg.has("meter")
    assert cfg.resolve(cfg.table("store")["path"]) == tmp_path / "buffer.db"


def test_bad_value_names_file_line_table_and_key(tmp_path):
    text = GOOD.replace("nodes = [1, 2, 3]", "nodes = [1, 2, 3]\nbaud = 12345")
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    assert "gateway.toml:9: [bus] baud = 12345: expected one of 9600" in str(e.value)


def test_typo_in_key_is_an_error_not_a_default(tmp_path):
    with pytest.raises(ConfigError, match=r":9: \[bus\] unknown key 'baudrate'"):
        load(write(tmp_path, GOOD.replace("nodes = [1, 2, 3]", "nodes = [1, 2, 3]\nbaudrate = 9600")))


def test_missing_required_key_points_at_its_table(tmp_path):
    with pytest.raises(ConfigError, match=r":1: \[site\] missing required key 'key_file'"):
        load(write(tmp_path, GOOD.replace('key_file = "site.key"\n', "")))


def test_unknown_table_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown table \[sever\]"):
        load(write(tmp_path, GOOD + "\n[sever]\nx = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, GOOD + "\n[bus\n"))


def test_bool_is_not_a_number_and_node_ids_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="expected int, got a boolean"):
        load(write(tmp_path, GOOD.replace("nodes = [1, 2, 3]", "nodes = [1, 2, 3]\nretries = true")))
    with pytest.raises(ConfigError, match="node address 300 outside"):
        load(write(tmp_path, GOOD.replace("[1, 2, 3]", "[1, 300]")))


def test_meter_transport_needs_its_address(tmp_path):
    with pytest.raises(ConfigError, match=r"\[meter\] transport = 'tcp' needs 'host'"):
        load(write(tmp_path, GOOD + '\n[meter]\nprofile = "sdm630"\ntransport = "tcp"\n'))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


# Every table present, so every key of the schema can be tried in place.
ALL = (
    GOOD
    + """
[meter]
profile = "sdm630"
port = "/dev/ttyUSB1"

[balancer]

[uplink]
host = "broker"
tls = false

[scada]

[lora]
driver = "sim"
nodes = [9]

[plausibility]

[relay]
nodes = [10]

[clock]
"""
)


def _numeric_keys():
    from phasegate.config import SCHEMA

    for table, keys in SCHEMA.items():
        for key, (typ, _, check) in keys.items():
            types = typ if isinstance(typ, tuple) else (typ,)
            if int in types or float in types:
                yield table, key, types, check


def _with(tmp_path, table, key, value):
    text = (
        ALL
        if table != "lora_gateway"
        else ALL + '\n[lora_gateway]\nid = "g"\nroutes = [{site = "a", transformer = "b", nodes = [9]}]\n'
    )
    text = text.replace("[%s]\n" % table, "[%s]\n%s = %s\n" % (table, key, value), 1)
    return write(tmp_path, text)


def test_every_numeric_key_refuses_nan_infinity_and_huge_values_and_has_a_check(tmp_path):
    load(write(tmp_path, ALL))  # the base file itself is good
    seen = 0
    for table, key, types, check in _numeric_keys():
        assert check is not None, "[%s] %s has no range" % (table, key)
        for bad in ("nan", "inf", "-inf", "1e300", "10000000000000000000000", "-10000000000000000000000"):
            with pytest.raises(ConfigError, match=r"\[%s\] %s = " % (table, key)):
                load(_with(tmp_path, table, key, bad))
        if float not in types:
            # Checked in the type it is used in: a fraction where an int is used is refused.
            with pytest.raises(ConfigError, match="expected int"):
                load(_with(tmp_path, table, key, "1.5"))
        seen += 1
    assert seen >= 40


def test_a_fractional_summary_period_is_refused_not_truncated_to_zero(tmp_path):
    with pytest.raises(ConfigError, match=r"\[uplink\] summary_period_s = 0.5: expected int"):
        load(_with(tmp_path, "uplink", "summary_period_s", "0.5"))


def test_liveness_thresholds_are_cross_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"\[bus\] stale_after_s \(300\) must be below offline_after_s \(60\)"):
        load(
            write(
                tmp_path,
                GOOD.replace("nodes = [1, 2, 3]", "nodes = [1, 2, 3]\nstale_after_s = 300\noffline_after_s = 60"),
            )
        )


def test_hostile_files_give_config_errors_only(tmp_path):
    for text in (
        GOOD + "\n[balancer]\nperiod_s = " + "9" * 5000 + "\n",  # an int CPython cannot print
        GOOD + "\n[x]\ny = " + "[" * 5000 + "]" * 5000 + "\n",  # nesting deeper than tomllib's recursion
        "a = 1\n" * 300000,  # larger than a settings file is
        GOOD.replace('"s1"', '"' + "s" * 100000 + '"'),
        GOOD + '\n[uplink]\nhost = "h"\noperators = [' + ", ".join(['"o%d"' % i for i in range(1000)]) + "]\n",
    ):
        with pytest.raises(ConfigError) as e:
            load(write(tmp_path, text))
        assert len(str(e.value)) < 600


def test_mqtt_version_is_5_or_3_1_1_and_3_1_1_sends_no_packet_limit(tmp_path):
    from phasegate.uplink import UplinkConfig

    with pytest.raises(ConfigError, match=r"\[uplink\] mqtt_version = '4'"):
        load(_with(tmp_path, "uplink", "mqtt_version", '"4"'))
    assert UplinkConfig.from_config(load(write(tmp_path, ALL))).max_packet_bytes is not None
    old = UplinkConfig.from_config(load(_with(tmp_path, "uplink", "mqtt_version", '"3.1.1"')))
    assert old.mqtt_version == "3.1.1" and old.max_packet_bytes is None


def test_the_bus_back_off_is_configurable_and_reaches_the_bus(tmp_path):
    from phasegate.bus import Bus

    bus = Bus.from_config(load(write(tmp_path, ALL)).table("bus"))
    assert (bus.backoff_after, bus.backoff_rounds) == (3, 4)  # the defaults
    bus = Bus.from_config(load(_with(tmp_path, "bus", "backoff_rounds", "1")).table("bus"))
    assert bus.backoff_rounds == 1
    with pytest.raises(ConfigError, match=r"\[bus\] backoff_rounds = 0"):
        load(_with(tmp_path, "bus", "backoff_rounds", "0"))
