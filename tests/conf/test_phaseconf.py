"""phaseconf: a settings file checked once against its schema; every error names file, line, table and key."""

import math

import pytest

import phaseconf
from phaseconf import REQUIRED, SettingsError, integer, number, one_of, positive

SCHEMA = {
    "site": {"id": (str, REQUIRED, phaseconf.ident), "rating_a": ((int, float), 400, positive)},
    "bus": {
        "baud": (int, 115200, one_of(9600, 115200)),
        "retries": (int, 1, integer(0, 5)),
        "period_s": ((int, float), 10, number(0.1, 86400, " s")),
        "enabled": (bool, True, None),
    },
}


def load(tmp_path, text, **kw):
    p = tmp_path / "x.toml"
    p.write_text(text)
    return phaseconf.load(p, SCHEMA, **kw)


def test_defaults_filled_and_relative_paths_resolve(tmp_path):
    s = load(tmp_path, '[site]\nid = "s1"\n', required=("site",))
    assert s.table("site") == {"id": "s1", "rating_a": 400}
    assert not s.has("bus") and s.resolve("a.db") == tmp_path / "a.db"
    assert s.line("site", "id") == 2


@pytest.mark.parametrize(
    "line,message",
    [
        ("rating_a = nan", "x.toml:3: [site] rating_a = nan: expected a finite number"),
        ("rating_a = inf", "x.toml:3: [site] rating_a = inf: expected a finite number"),
        ("rating_a = -inf", "expected a finite number"),
        ("rating_a = 0", "expected a positive number"),
        ("rating_a = 1e300", "expected a positive number"),
        ("rating_a = true", "expected int or float, got a boolean"),
        ('rating_a = "400"', "expected int or float, got str"),
    ],
)
def test_numbers_are_finite_bounded_and_typed(tmp_path, line, message):
    with pytest.raises(SettingsError) as e:
        load(tmp_path, '[site]\nid = "s1"\n%s\n' % line)
    assert message in str(e.value)


def test_integer_ranges_and_choices(tmp_path):
    with pytest.raises(SettingsError, match=r"x.toml:2: \[bus\] retries = 6: expected 0..5"):
        load(tmp_path, "[bus]\nretries = 6\n")
    with pytest.raises(SettingsError, match=r"retries = 1.5: expected int, got float"):
        load(tmp_path, "[bus]\nretries = 1.5\n")
    with pytest.raises(SettingsError, match=r"baud = 12345: expected one of 9600, 115200"):
        load(tmp_path, "[bus]\nbaud = 12345\n")
    with pytest.raises(SettingsError, match=r"period_s = 0.01: expected 0.1..86400 s"):
        load(tmp_path, "[bus]\nperiod_s = 0.01\n")


def test_unknown_names_missing_keys_and_tables(tmp_path):
    with pytest.raises(SettingsError, match=r":2: \[bus\] unknown key 'bauds'; known: baud, enabled"):
        load(tmp_path, "[bus]\nbauds = 9600\n")
    with pytest.raises(SettingsError, match=r"unknown table \[sever\]"):
        load(tmp_path, "[sever]\nx = 1\n")
    with pytest.raises(SettingsError, match=r":1: \[site\] missing required key 'id'"):
        load(tmp_path, "[site]\n")
    with pytest.raises(SettingsError, match=r"missing table \[site\]"):
        load(tmp_path, "[bus]\n", required=("site",))
    with pytest.raises(SettingsError, match="not valid TOML"):
        load(tmp_path, "[bus\n")
    with pytest.raises(SettingsError, match="cannot read"):
        phaseconf.load(tmp_path / "nope.toml", SCHEMA)


def test_quoted_values_are_cut(tmp_path):
    with pytest.raises(SettingsError) as e:
        load(tmp_path, '[site]\nid = "%s"\n' % ("x" * 5000))
    assert len(str(e.value)) < 300 and "(5002 characters)" in str(e.value)


def test_the_caller_names_its_error_class(tmp_path):
    class MyConfigError(ValueError):
        pass

    with pytest.raises(MyConfigError):
        load(tmp_path, "[bus]\nretries = 9\n", error=MyConfigError)


def test_checks_alone():
    assert positive(1e-9) is None and positive(math.nan) and positive(True)
    assert integer(0, 3)(3) is None and integer(0, 3)(True)
    assert one_of(1, 2)(True) and one_of(True, False)(1)
