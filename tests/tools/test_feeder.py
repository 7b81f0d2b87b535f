"""Feeder folder format (reader, validator, writer) and the seeded generator."""

import json

import numpy as np
import pytest

from phasekit.feeder import format as ff
from phasekit.feeder.generate import generate

HOUSES = "house,phase,switchable,metered\nh1,A,1,1\nh2,B,0,1\nh3,ABC,0,1\nh4,C,0,0\n"
LOADS = "minute,h1,h2,h3,h4\n0,1.0,0.5,3.0,-0.2\n1,1.1,0.4,3.3,-0.3\n2,0.9,0.6,2.7,0.1\n"


def make(tmp_path, houses=HOUSES, loads=LOADS, pf=None, meta=None):
    (tmp_path / "houses.csv").write_text(houses)
    (tmp_path / "load_kw.csv").write_text(loads)
    if pf is not None:
        (tmp_path / "pf.csv").write_text(pf)
    if meta is not None:
        (tmp_path / "feeder.json").write_text(meta)
    return tmp_path


def error(tmp_path, **kw):
    with pytest.raises(ff.FeederFormatError) as e:
        ff.load(make(tmp_path, **kw))
    return str(e.value)


def test_reads_a_minimal_feeder_with_defaults(tmp_path):
    f = ff.load(make(tmp_path))
    assert f.houses == ["h1", "h2", "h3", "h4"]
    assert list(f.phase) == [0, 1, 3, 2]
    assert list(f.switchable) == [True, False, False, False]
    assert list(f.metered) == [True, True, True, False]
    assert f.load_kw.shape == (4, 3) and f.load_kw[3, 0] == -0.2
    assert (f.pf == ff.DEFAULT_PF).all() and f.voltage_v == 230.0 and f.has_meter
    assert list(f.movable()) == [True, False, False, False]


def test_physical_model_of_components(tmp_path):
    f = ff.load(make(tmp_path, meta='{"nominal_voltage_v": 240}'))
    ip, iq = f.components()
    # h1: 1 kW at 240 V, pf 0.95 -> I = 1000/(240*0.95); ip = I*pf = 1000/240.
    assert ip[0, 0] == pytest.approx(1000.0 / 240.0)
    assert iq[0, 0] == pytest.approx(1000.0 / (240.0 * 0.95) * np.sqrt(1 - 0.95**2))
    # h3 is three-phase: each phase carries a third.
    assert ip[2, 0] == pytest.approx(3000.0 / 240.0 / 3.0)
    # h4 exports: negative current.
    assert ip[3, 0] < 0 and iq[3, 0] < 0


def test_columns_may_come_in_any_order_and_pf_and_meta_are_read(tmp_path):
    houses = "metered,house,switchable,phase,note\n1,h1,1,a,x\n1,h2,0,B,y\n1,h3,0,abc,z\n0,h4,0,C,w\n"
    loads = "minute,h4,h3,h2,h1\n10,0,0,0,1\n11,0,0,0,2\n"
    pf = "minute,h1,h2,h3,h4\n10,0.9,0.9,0.9,0.9\n11,1,0.8,0.8,0.8\n"
    f = ff.load(
        make(
            tmp_path,
            houses=houses,
            loads=loads,
            pf=pf,
            meta='{"transformer_meter": false, "name": "t", "nominal_voltage_v": 220}',
        )
    )
    assert list(f.minutes) == [10, 11] and list(f.load_kw[0]) == [1.0, 2.0]
    assert f.pf[0, 1] == 1.0 and f.pf[1, 1] == 0.8
    assert not f.has_meter and f.name == "t" and f.voltage_v == 220.0


@pytest.mark.parametrize(
    "houses,needle",
    [
        ("house,phase,switchable\nh1,A,1\n", "houses.csv:1: missing column 'metered'"),
        ("house,phase,switchable,metered\nh1,D,1,1\n", "houses.csv:2: house h1: phase 'D' is not A, B, C or ABC"),
        ("house,phase,switchable,metered\nh1,A,1,1\nh1,B,1,1\n", "houses.csv:3: house 'h1' repeats (first on line 2)"),
        (
            "house,phase,switchable,metered\nh1,ABC,1,1\n",
            "houses.csv:2: house h1: a three-phase house cannot be switchable",
        ),
        ("house,phase,switchable,metered\nh1,A,1,0\n", "houses.csv:2: house h1: switchable but not metered"),
        ("house,phase,switchable,metered\nh1,A,2,1\n", "houses.csv:2: house h1: switchable '2' is not 0 or 1"),
        ("house,phase,switchable,metered\nh1,A,1\n", "houses.csv:2: 3 cells, the header has 4"),
        ("house,phase,switchable,metered\n", "houses.csv: no houses"),
    ],
)
def test_houses_errors_name_file_and_line(tmp_path, houses, needle):
    loads = "minute,h1\n0,1\n"
    assert needle in error(tmp_path, houses=houses, loads=loads)


@pytest.mark.parametrize(
    "loads,needle",
    [
        ("time,h1,h2,h3,h4\n0,1,1,1,1\n", "load_kw.csv:1: the first column must be 'minute'"),
        ("minute,h1,h2,h3\n0,1,1,1\n", "load_kw.csv:1: no column for house 'h4'"),
        ("minute,h1,h2,h3,h4,h9\n0,1,1,1,1,1\n", "load_kw.csv:1: column 'h9' is not a house"),
        ("minute,h1,h2,h3,h4\n0,1,1,1,1\n2,1,1,1,1\n", "load_kw.csv:3: minute 2 does not follow 0"),
        ("minute,h1,h2,h3,h4\n0,1,1,abc,1\n", "load_kw.csv:2: column h3: 'abc' is not a valid value"),
        ("minute,h1,h2,h3,h4\n0,1,1,nan,1\n", "load_kw.csv:2: column h3: 'nan'"),
        ("minute,h1,h2,h3,h4\nx,1,1,1,1\n", "load_kw.csv:2: minute 'x' is not an integer"),
        ("minute,h1,h2,h3,h4\n", "load_kw.csv: no data rows"),
    ],
)
def test_load_errors_name_file_line_and_column(tmp_path, loads, needle):
    assert needle in error(tmp_path, loads=loads)


def test_pf_errors(tmp_path):
    pf = "minute,h1,h2,h3,h4\n0,1,1,1,1\n1,1,1.2,1,1\n2,1,1,1,1\n"
    assert "pf.csv:3: column h2: '1.2' is not a valid value (outside (0, 1])" in error(tmp_path, pf=pf)
    pf = "minute,h1,h2,h3,h4\n0,1,1,1,1\n"
    assert "minutes differ from load_kw.csv" in error(tmp_path, pf=pf)


def test_meta_errors(tmp_path):
    assert "feeder.json:2: unknown key 'voltage'" in error(tmp_path, meta='{\n "voltage": 230\n}')
    assert "nominal_voltage_v = 5" in error(tmp_path, meta='{"nominal_voltage_v": 5}')
    assert "transformer_meter = 'yes'" in error(tmp_path, meta='{"transformer_meter": "yes"}')
    assert "not valid JSON" in error(tmp_path, meta='{"a": ')


def test_missing_files_and_folder(tmp_path):
    with pytest.raises(ff.FeederFormatError, match="not a folder"):
        ff.load(tmp_path / "nope")
    (tmp_path / "houses.csv").write_text(HOUSES)
    with pytest.raises(ff.FeederFormatError, match="load_kw.csv: missing"):
        ff.load(tmp_path)


def test_generator_is_seeded_and_days_differ():
    a = generate(30, seed=7)
    b = generate(30, seed=7)
    assert np.array_equal(a.load_kw, b.load_kw) and np.array_equal(a.pf, b.pf)
    assert list(a.phase) == list(b.phase)
    c = generate(30, seed=7, day=1)
    assert list(c.phase) == list(a.phase) and list(c.metered) == list(a.metered)  # same street
    assert not np.array_equal(c.load_kw, a.load_kw)  # another day
    d = generate(30, seed=8)
    assert not np.array_equal(d.load_kw, a.load_kw)


def test_generated_feeder_has_what_the_benchmark_needs():
    f = generate(250, seed=3)
    assert f.load_kw.shape == (250, 1440)
    assert (f.phase == 3).sum() >= 1  # a few three-phase houses ...
    assert not f.switchable[f.phase == 3].any()  # ... that never move
    assert (~f.metered).sum() >= 1  # houses seen only by the meter
    assert not (f.switchable & ~f.metered).any()
    assert (f.load_kw[:, 11 * 60 : 14 * 60] < 0).any()  # rooftop solar exports at midday
    assert ((f.pf > 0) & (f.pf <= 1)).all()
    counts = [int((f.phase == p).sum()) for p in range(3)]
    assert max(counts) > min(counts)  # built unbalanced
    mean_kw = f.load_kw.mean()
    assert 0.2 < mean_kw < 1.5, mean_kw  # household scale, not a factory


def test_write_then_load_round_trips(tmp_path):
    f = generate(12, seed=2)
    ff.write(f, tmp_path, meta={"seed": 2})
    g = ff.load(tmp_path)
    assert g.houses == f.houses and list(g.phase) == list(f.phase)
    assert list(g.switchable) == list(f.switchable) and list(g.metered) == list(f.metered)
    assert np.allclose(g.load_kw, f.load_kw, atol=5e-4) and np.allclose(g.pf, f.pf, atol=5e-4)
    assert json.loads((tmp_path / "feeder.json").read_text())["seed"] == 2


def test_generator_refuses_bad_arguments():
    with pytest.raises(ValueError):
        generate(0)
    with pytest.raises(ValueError, match="unknown generator option"):
        generate(10, pv=1)


def _ieee_folder(src, profiles="Load Profiles"):
    """A two-load folder laid out as the IEEE PES European_LV_CSV archive."""
    (src / profiles).mkdir(parents=True)
    (src / "Loads.csv").write_text(
        "#  Loads ,,,,,,,,,\n#  Model 1 is constant PQ,,,,,,,,,\n"
        "Name,numPhases,Bus,phases,kV,Model,Connection,kW,PF,Yearly\n"
        "LOAD1,1,34,A,0.23,1,wye,1,0.95,Shape_1\nLOAD2,1,47,C,0.23,1,wye,1,0.9,Shape_2\n"
    )
    (src / "LoadShapes.csv").write_text(
        "Name,npts,minterval,File,useactual\nShape_1,1440,1,Load_profile_1.csv,TRUE\n"
        "Shape_2,1440,1,Load_profile_2.csv,TRUE\n"
    )
    for k in (1, 2):
        rows = ["time,mult"] + [
            "%02d:%02d:00,%.3f" % ((m + 1) // 60, (m + 1) % 60, 0.05 * k + m / 1440.0) for m in range(1440)
        ]
        (src / profiles / ("Load_profile_%d.csv" % k)).write_text("\n".join(rows) + "\n")
    return src


def test_ieee_european_lv_folder_converts(tmp_path):
    from phasekit.feeder import ieee_eulv

    src = _ieee_folder(tmp_path / "European_LV_CSV")
    f = ieee_eulv.convert(src)
    assert f.houses == ["LOAD1", "LOAD2"] and list(f.phase) == [0, 2]
    assert f.load_kw.shape == (2, 1440) and f.load_kw[1, 0] == pytest.approx(0.1)
    assert f.pf[1, 5] == 0.9 and f.movable().all() and f.has_meter
    # A profile of the wrong length is named.
    (src / "Load Profiles" / "Load_profile_2.csv").write_text("time,mult\n00:01:00,1\n")
    with pytest.raises(ff.FeederFormatError, match="Load_profile_2.csv: 1 points, expected 1440"):
        ieee_eulv.convert(src)


def _sdist(tmp_path, extra=()):
    """A zip laid out as pandapower 2.14.11's source archive, with the IEEE folder inside."""
    import zipfile

    src = _ieee_folder(tmp_path / "src", profiles="Load_Profiles")
    path = tmp_path / "pandapower-2.14.11.zip"
    prefix = "pandapower-2.14.11/pandapower/test/test_files/European_LV_CSV/"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pandapower-2.14.11/setup.py", "")
        for f in sorted(src.rglob("*.csv")):
            z.write(f, prefix + f.relative_to(src).as_posix())
        for name, data in extra:
            z.writestr(prefix + name, data)
    return path


def _pin(monkeypatch, path):
    import hashlib

    from phasekit.feeder import ieee_eulv

    monkeypatch.setattr(ieee_eulv, "ARCHIVE_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())


def test_ieee_fetch_from_a_local_archive_converts_and_names_its_source(tmp_path, monkeypatch):
    from phasekit.feeder import ieee_eulv

    archive = _sdist(tmp_path, extra=[("../../escape.csv", "x"), ("Load_Profiles/../../up.csv", "x")])
    _pin(monkeypatch, archive)
    out = tmp_path / "ieee-eulv"
    f = ieee_eulv.fetch(out, archive=archive)
    assert f.houses == ["LOAD1", "LOAD2"] and list(f.phase) == [0, 2]
    g = ff.load(out)
    assert g.houses == f.houses and np.allclose(g.load_kw, f.load_kw, atol=5e-4)
    readme = (out / "README.md").read_text()
    assert "IEEE PES" in readme and ieee_eulv.ARCHIVE_SHA256 in readme
    assert ieee_eulv.ARCHIVE_SHA256 in json.loads((out / "feeder.json").read_text())["source"]
    # Members that climb out of the folder are never written anywhere.
    assert not list(tmp_path.rglob("escape.csv")) and not list(tmp_path.rglob("up.csv"))


def test_ieee_fetch_refuses_an_archive_that_is_not_the_pinned_one(tmp_path):
    from phasekit.feeder import ieee_eulv

    archive = _sdist(tmp_path)  # same layout, different bytes than the pinned archive
    out = tmp_path / "out"
    with pytest.raises(ff.FeederFormatError, match="expected " + ieee_eulv.ARCHIVE_SHA256):
        ieee_eulv.fetch(out, archive=archive)
    assert not out.exists()
    with pytest.raises(ff.FeederFormatError, match="no such file"):
        ieee_eulv.fetch(out, archive=tmp_path / "missing.zip")


def test_ieee_fetch_names_a_broken_archive(tmp_path, monkeypatch):
    from phasekit.feeder import ieee_eulv

    junk = tmp_path / "pandapower-2.14.11.zip"
    junk.write_bytes(b"not a zip at all")
    _pin(monkeypatch, junk)
    with pytest.raises(ff.FeederFormatError, match="not a readable zip"):
        ieee_eulv.fetch(tmp_path / "out", archive=junk)
    import zipfile

    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("pandapower-2.14.11/setup.py", "")
    _pin(monkeypatch, junk)
    with pytest.raises(ff.FeederFormatError, match="no pandapower-2.14.11/.*European_LV_CSV/ folder"):
        ieee_eulv.fetch(tmp_path / "out", archive=junk)


def test_ieee_fetch_cli_reports_errors_in_one_line(tmp_path, capsys):
    from phasekit.cli import main

    bad = tmp_path / "pandapower-2.14.11.zip"
    bad.write_bytes(b"x")
    assert main(["feeder", "fetch-ieee-eulv", str(tmp_path / "out"), "--archive", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phasekit feeder fetch-ieee-eulv: ") and "sha256" in err[0]


def test_resample_draws_real_households_onto_new_wiring():
    from phasekit.feeder.resample import resample

    src = generate(12, seed=4)
    f = resample(src, 30, seed=5)
    assert f.n_houses == 30 and f.load_kw.shape == (30, src.n_minutes) and f.has_meter == src.has_meter
    # Every household is a source household, the first 12 unshifted and each used once
    # before any repeats; a repeat is the same day shifted by 30 min to 3 h.
    seen = []
    for k, hid in enumerate(f.houses):
        j = src.houses.index(hid.split("-", 1)[1])
        seen.append(j)
        if k < src.n_houses:
            assert np.array_equal(f.load_kw[k], src.load_kw[j])
        else:
            shifts = [s for s in range(-180, 181) if np.array_equal(f.load_kw[k], np.roll(src.load_kw[j], s))]
            assert shifts and all(30 <= abs(s) <= 180 for s in shifts)
        assert (f.phase[k] == 3) == (src.phase[j] == 3)
        assert f.metered[k] == src.metered[j] and f.switchable[k] == src.switchable[j]
    assert sorted(seen[:12]) == list(range(12))
    # Seeded: the same seed gives the same street, another seed another wiring.
    g = resample(src, 30, seed=5)
    assert g.houses == f.houses and np.array_equal(g.phase, f.phase)
    assert not np.array_equal(resample(src, 30, seed=6).phase, f.phase)


def test_resample_refuses_bad_arguments():
    from phasekit.feeder.resample import resample

    src = generate(5, seed=1)
    for bad in (0, -1, 5001, 2.5):
        with pytest.raises(ValueError, match="n_houses"):
            resample(src, bad)
    with pytest.raises(ValueError, match="seed"):
        resample(src, 5, seed="x")


def test_resample_cli_writes_a_valid_feeder(tmp_path, capsys):
    from phasekit.cli import main

    ff.write(generate(8, seed=2), tmp_path / "src")
    assert (
        main(["feeder", "resample", str(tmp_path / "src"), str(tmp_path / "out"), "--houses", "20", "--seed", "3"]) == 0
    )
    f = ff.load(tmp_path / "out")
    assert f.n_houses == 20 and json.loads((tmp_path / "out" / "feeder.json").read_text())["seed"] == 3
    assert main(["feeder", "resample", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 1
    assert "phasekit feeder resample: " in capsys.readouterr().err


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on localhost serving tmp_path/www."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_ieee_fetch_downloads_with_progress_and_bounds(tmp_path, monkeypatch, http_folder):
    from phasekit.feeder import ieee_eulv

    www, base = http_folder
    archive = _sdist(tmp_path)
    (www / archive.name).write_bytes(archive.read_bytes())
    _pin(monkeypatch, archive)
    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", base + archive.name)
    said = []
    f = ieee_eulv.fetch(tmp_path / "out", progress=said.append)
    assert f.n_houses == 2 and said and said[0].startswith("downloading pandapower-2.14.11.zip")
    # A server sending more than the archive can be is cut off, and nothing is written.
    monkeypatch.setattr(ieee_eulv, "_MAX_ARCHIVE", 100)
    with pytest.raises(ff.FeederFormatError, match="bytes"):
        ieee_eulv.fetch(tmp_path / "big")
    assert not (tmp_path / "big").exists()
    # An unreachable archive names the way out.
    monkeypatch.setattr(ieee_eulv, "ARCHIVE_URL", base + "gone.zip")
    with pytest.raises(ff.FeederFormatError, match="cannot download .*--archive"):
        ieee_eulv.fetch(tmp_path / "gone")
