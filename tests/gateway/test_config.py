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
