"""``phasekit bench balance-suite`` (phasekit.balance.suite): the balancing benchmark over a suite, run small."""

import json

import pytest

from phasekit import cli
from phasekit.feeder import format as ff
from phasekit.feeder import ieee_eulv
from phasekit.feeder.generate import generate


def run_suite(argv):
    """``phasekit bench balance-suite ARGV`` in this process; its exit status."""
    return cli.main(["bench", "balance-suite"] + argv)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A feeder folder standing in for the converted IEEE feeder (any feeder folder will do)."""
    folder = tmp_path_factory.mktemp("suite") / "ieee-like"
    ff.write(generate(18, seed=3), folder)
    return folder


def test_quick_suite_runs_every_group_and_summarises_it(real, capsys):
    rc = run_suite(
        ["--ieee", str(real), "--quick", "--sizes", "15,22", "--oracle-effort", "0.05", "--jobs", "2", "--json"]
    )
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert rc == 0
    names = [(r["group"], r["name"], r["houses"]) for r in report["rows"]]
    assert names == [
        ("ieee", "ieee-like", 18),
        ("streets", "r15-1", 15),
        ("streets", "r22-1", 22),
        ("generated", "g15-7", 15),
        ("generated", "g22-7", 22),
    ]
    for r in report["rows"]:
        a = r["neutral_a"]
        assert a["dynamic_oracle"] <= a["static_oracle"] + 1e-9 < a["as_built"] + 1e-9
        built, pk, st = a["as_built"], a["phasekit"], a["static_oracle"]
        assert r["share_static"] == pytest.approx((built - pk) / (built - st))
        assert r["limit_violations"] == 0 and r["switches"][1] <= 4 and not r["oracle_cut"]
    groups = [(s["group"], s["houses"], s["feeder_days"]) for s in report["summary"]]
    assert groups == [
        ("ieee", 18, 1),
        ("streets", 15, 1),
        ("streets", 22, 1),
        ("generated", 15, 1),
        ("generated", 22, 1),
    ]
    assert report["notes"] == []
    assert "5 feeder-days" in out.err


def test_the_same_suite_gives_the_same_numbers(real, capsys):
    args = ["--ieee", str(real), "--quick", "--sizes", "12", "--oracle-effort", "0.05", "--jobs", "1", "--json"]
    run_suite(args)
    first = json.loads(capsys.readouterr().out)
    run_suite(args)
    second = json.loads(capsys.readouterr().out)
    for a, b in zip(first["rows"], second["rows"]):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_the_foresight_diagnostic_runs_through_the_suite(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", "http://127.0.0.1:9/pandapower.zip")
    args = [
        "--cache",
        str(tmp_path),
        "--quick",
        "--sizes",
        "12",
        "--oracle-effort",
        "0.05",
        "--jobs",
        "1",
        "--foresight",
        "15",
    ]
    assert run_suite(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    (summary,) = report["summary"]
    assert row["foresight_min"] == [15, None] and row["switches_foresight"][1] <= 4
    assert summary["share_foresight_mean"] == row["share_foresight"]
    assert summary["fall_20_foresight"] == [row["fall_20_foresight"]] * 2 and row["fall_20_foresight"] <= 1
    assert run_suite(args) == 0
    assert "the balancer planning on the true future (--foresight 15)" in capsys.readouterr().out


def test_offline_without_a_cache_runs_the_generated_group_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", "http://127.0.0.1:9/pandapower.zip")
    rc = run_suite(["--cache", str(tmp_path), "--quick", "--sizes", "12", "--oracle-effort", "0.05"])
    out = capsys.readouterr()
    assert rc == 0
    assert "IEEE feeder and real-shape streets left out: cannot download http://127.0.0.1:9/" in out.out
    assert "generated  g12-7" in out.out and "streets" not in out.out.split("share =")[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--ieee", "/nonexistent/feeder"], "--ieee: "),
        (["--sizes", "55,x"], "--sizes: expected numbers"),
        (["--sizes", "0"], "every size must be 1..5000"),
        (["--jobs", "0"], "--jobs must be positive"),
        (["--oracle-effort", "inf"], "--oracle-effort must be above 0 and at most 100"),
        (["--set", "moves_per_dya=1"], "unknown key(s) moves_per_dya"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    assert run_suite(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
