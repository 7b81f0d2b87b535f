"""The server's TOML file, its command line, and docs/server.md: what the doc says is what the code does.

- The file: every error names file, line, table and key; cross-checks too; an
  empty file is the embedded default; numbers are finite and bounded.
- The command line: ``phasekit server`` and ``python -m phaseserver`` are one
  CLI; the first server's flags point to ``--config``; ``run`` stops cleanly on
  SIGTERM with exit status 0.
- docs/server.md section 2 has one table per config table, one row per key,
  with the schema's default, and no other key; its TOML examples load; the
  unit and example files it installs exist and point back to it.
"""

import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from doccheck import check_defaults
from phaseserver import config
from phaseserver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "server.md"
DEPLOY = ROOT / "server-min" / "deploy"


def write(tmp_path, text, name="server.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, message",
    [
        ("[ingest]\nsourc = 'mqtt'\n", r"server.toml:2: \[ingest\] unknown key 'sourc'"),
        ("[storage]\nengine = 'mysql'\n", r"server.toml:2: \[storage\] engine = 'mysql': expected one of"),
        ("[ingest]\nmax_records = 0\n", r":2: \[ingest\] max_records = 0: expected 1..100000"),
        ("[ingest]\nreconnect_min_s = nan\n", r"expected a finite number"),
        ("[ingest]\nkeepalive_s = 1.5\n", r"expected int, got float"),
        ("[clock]\nspeed = 20000\n", r"\[clock\] speed = 20000: expected 1..10000"),
        ("[nonsense]\n", r"unknown table \[nonsense\]"),
        ("[storage]\nengine = 'postgres'\n", r"server.toml:1: \[storage\]: engine = \"postgres\" needs 'dsn'"),
        ("[ingest]\ntls = true\n", r"\[ingest\]: tls = true needs 'ca'"),
        ("[ingest]\nsource='amqp'\ntls=false\nshared_group='g'\n", r"shared_group is MQTT's"),
        ("[storage]\nretention_raw_days = 800\n", r"retention_hourly_days: hourly roll-ups"),
        ("[storage]\nengine = 'postgres'\n[ingest]\ntls = true\n", r"server.toml:1: \[storage\]: engine"),
        ("[ingest]\nmax_records = 30000\ntls=false\n", r"commit_max_records: must hold at least one whole batch"),
        ("[ingest]\nclient_id = 'a/b'\n", r"client_id = 'a/b': expected 1-32 letters"),
        ("[server]\nname = '" + "x" * 500 + "'\n", r"\.\.\.\(502 characters\)"),
    ],
)
def test_errors_name_file_line_table_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, text))


def test_an_empty_file_is_the_embedded_default(tmp_path):
    cfg = config.load(write(tmp_path, "[ingest]\nca = 'ca.crt'\n"))
    assert cfg.table("storage")["engine"] == "sqlite"
    assert cfg.resolve(cfg.table("storage")["path"]) == tmp_path / "phaseserver.db"
    assert cfg.table("ingest")["source"] == "mqtt" and cfg.table("ingest")["port"] == 8883
    assert cfg.clock().is_wall


def test_site_clock_from_the_file(tmp_path):
    cfg = config.load(write(tmp_path, "[ingest]\nsource='none'\n[clock]\nspeed = 60\nepoch_s = 1700000000\n"))
    c = cfg.clock()
    a = c.now()
    time.sleep(0.05)
    assert 1700000000 <= a < 1700000000 + 60 and c.now() - a >= 60 * 0.05 * 0.9
    assert c.wall_delay(60) == pytest.approx(1.0)


def test_the_two_command_lines_are_one_and_check_prints_the_plan(tmp_path):
    path = write(tmp_path, "[ingest]\nsource = 'none'\n[storage]\npath = 'x.db'\n")
    for cmd in ([sys.executable, "-m", "phaseserver"], [sys.executable, "-m", "phasekit.cli", "server"]):
        p = subprocess.run([*cmd, "check", str(path)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "storage: SQLite %s" % (tmp_path / "x.db") in p.stdout and "store: reachable" in p.stdout
        bad = write(tmp_path, "[ingest]\nhots = 'x'\n", "bad.toml")
        p = subprocess.run([*cmd, "check", str(bad)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "bad.toml:2: [ingest] unknown key 'hots'" in p.stderr


def test_the_first_servers_flags_point_to_the_config_file():
    p = subprocess.run(
        [sys.executable, "-m", "phaseserver", "--host", "broker", "--db", "x.db"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "--config" in p.stderr and "server.toml" in p.stderr


def test_run_serves_until_sigterm_and_exits_cleanly(tmp_path):
    path = write(tmp_path, "[ingest]\nsource = 'none'\n[server]\nhttp_port = 0\n[storage]\npath = 's.db'\n")
    p = subprocess.Popen(
        [sys.executable, "-m", "phaseserver", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "s.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert "running" in out and "Traceback" not in out


# ---------------------------------------------------------------- docs/server.md


def reference():
    """{table: {key: default cell}} from section 2."""
    text = DOC.read_text()
    sec = text[text.index("\n## 2. ") : text.index("\n## 3. ")]
    out = {}
    for part in re.split(r"^### ", sec, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        m = re.fullmatch(r"\[([a-z_.]+)\]", title.strip())
        if not m:
            continue
        out[m.group(1)] = dict(re.findall(r"^\| `([a-z_0-9]+)` \| ([^|]+?) \|", body, re.M))
    return out


def test_every_table_with_keys_has_its_reference_section():
    documented = reference()
    assert {t for t, keys in config.SCHEMA.items() if keys} <= set(documented)


@pytest.mark.parametrize("table", sorted(t for t, keys in config.SCHEMA.items() if keys))
def test_every_key_and_no_other_with_its_default(table):
    check_defaults(table, reference()[table], config.SCHEMA[table])


def test_toml_examples_use_known_keys_and_load(tmp_path):
    blocks = re.findall(r"^```toml\n(.*?)^```", DOC.read_text(), re.S | re.M)
    assert len(blocks) >= 2
    for i, text in enumerate(blocks):
        for table, values in tomllib.loads(text).items():
            assert table in config.SCHEMA and set(values) <= set(config.SCHEMA[table]), (i, table)
        path = tmp_path / ("example%d.toml" % i)
        path.write_text(text)
        (tmp_path / "rabbit.password").write_text("secret\n")
        assert config.load(path)


def test_the_installed_files_exist_point_back_and_load(tmp_path):
    text = DOC.read_text()
    unit = (DEPLOY / "phaseserver.service").read_text()
    for rel in ("server-min/deploy/phaseserver.service", "server-min/deploy/server.example.toml"):
        assert rel in text, rel
        assert "docs/server.md" in (ROOT / rel).read_text(), rel
    for fact in (
        "User=phaseserver",
        "ReadWritePaths=/var/lib/phaseserver",
        "RestartSec=5",
        "ExecStart=/opt/phasekit/.venv/bin/phasekit server run --config /etc/phasekit/server.toml",
        "ExecStartPre=/opt/phasekit/.venv/bin/phasekit server check --no-connect /etc/phasekit/server.toml",
    ):
        assert fact in unit, fact
        assert fact.split("=", 1)[0] in text, fact
    example = tmp_path / "server.toml"
    example.write_text((DEPLOY / "server.example.toml").read_text())
    cfg = config.load(example)
    assert cfg.table("storage")["path"] == "/var/lib/phaseserver/phaseserver.db"
    check = [sys.executable, "-m", "phaseserver", "check", "--no-connect", str(example)]
    p = subprocess.run(check, capture_output=True, text=True)
    assert p.returncode == 1 and "[ingest] ca: %s does not exist" % (tmp_path / "pki" / "ca.crt") in p.stderr
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        (tmp_path / "pki" / name).write_text("-----BEGIN-----\n")
    p = subprocess.run(check, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "ingest: mqtt mqtt.example.net:8883 (TLS) as phaseserver-1" in p.stdout
