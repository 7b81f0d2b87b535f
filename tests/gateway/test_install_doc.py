"""docs/install-gateway.md stays true: its key reference is phasegate.config.SCHEMA, its examples load, its steps run.

- Section 7 has one table per config table, one row per key, each default
  as the schema has it, and names no key the schema does not have.
- Every ```toml block in the guide uses only known tables and keys; a whole
  file (one with [site]) passes ``config.load``.
- The counter-restore one-liner of section 5 really moves a counter file's bound.
- The files the guide tells the installer to copy exist, and point back to it.
"""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from doccheck import check_defaults, sh_blocks
from phasegate import config
from phasegate.registry import CounterFile

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "install-gateway.md"
ROUTES = "lora_gateway.routes"


def reference():
    """{table: {key: default cell}} from section 7."""
    text = GUIDE.read_text()
    sec = text[text.index("\n## 7. ") : text.index("\n## 8. ")]
    out = {}
    for part in re.split(r"^### ", sec, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        m = re.fullmatch(r"\[\[?([a-z_.]+)\]\]?", title.strip())
        assert m, "reference heading %r is not a [table]" % title
        rows = {}
        for key, default in re.findall(r"^\| `([a-z_0-9]+)` \| ([^|]+?) \|", body, re.M):
            assert key not in rows, (m.group(1), key)
            rows[key] = default
        out[m.group(1)] = rows
    return out


def toml_blocks():
    return re.findall(r"^```toml\n(.*?)^```", GUIDE.read_text(), re.S | re.M)


def route_keys():
    """The keys a route table takes, from the validator's own message."""
    problem = config.SCHEMA["lora_gateway"]["routes"][2]([{"site": "s", "transformer": "t", "nodes": [1], "x": 1}])
    return set(re.search(r"known: (.*)$", problem).group(1).split(", "))


def route_required(key):
    base = {"site": "s", "transformer": "t", "nodes": [1], "pi_dst": 200}
    del base[key]
    return config.SCHEMA["lora_gateway"]["routes"][2]([base]) is not None


def test_every_table_of_the_schema_has_its_section():
    assert set(reference()) == set(config.SCHEMA) | {ROUTES}


@pytest.mark.parametrize("table", sorted(config.SCHEMA))
def test_every_key_and_no_other_with_its_default(table):
    check_defaults(table, reference()[table], config.SCHEMA[table])


def test_route_keys_and_which_are_required():
    rows = reference()[ROUTES]
    assert set(rows) == route_keys()
    for key, cell in rows.items():
        assert (cell == "required") == route_required(key), (key, cell)


def test_toml_examples_use_known_keys_and_whole_files_load(tmp_path):
    blocks = toml_blocks()
    assert len(blocks) >= 2
    loaded = 0
    for i, text in enumerate(blocks):
        data = tomllib.loads(text)
        for table, values in data.items():
            assert table in config.SCHEMA, (i, table)
            assert set(values) <= set(config.SCHEMA[table]), (i, table, set(values) - set(config.SCHEMA[table]))
            for route in values.get("routes", []) if table == "lora_gateway" else []:
                assert set(route) <= route_keys(), (i, route)
        if "site" in data:
            path = tmp_path / ("example%d.toml" % i)
            path.write_text(text)
            cfg = config.load(path)
            assert cfg.has("bus") or cfg.has("lora")
            loaded += 1
    assert loaded >= 2  # the transformer Pi and the LoRa gateway Pi


def test_counter_restore_command_moves_the_bound(tmp_path):
    lines = [line for block in sh_blocks(GUIDE) for line in block.splitlines() if "CounterFile" in line]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0].split("&&", 1)[1])
    code = argv[argv.index("-c") + 1]
    margin = int(re.search(r"c\.load\(\) \+ (\d+)", code).group(1))
    assert margin >= 1000000
    counter = tmp_path / "pi-seq.txt"
    CounterFile(counter).save(123456)
    code = code.replace("/var/lib/phasekit/pi-seq.txt", str(counter))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert CounterFile(counter).load() == 123456 + margin


def test_the_files_the_guide_installs_exist_and_point_back():
    text = GUIDE.read_text()
    for rel in ("gateway/deploy/gateway.example.toml", "gateway/deploy/phasekit-gateway.service"):
        assert "/opt/phasekit/" + rel in text, rel
        assert "docs/install-gateway.md" in (ROOT / rel).read_text(), rel
    assert "docs/install-gateway.md" in (ROOT / "gateway" / "phasegate" / "config.py").read_text()
    unit = (ROOT / "gateway" / "deploy" / "phasekit-gateway.service").read_text()
    # What the guide says about the unit is what the unit does.
    for fact in (
        "User=phasekit",
        "ReadWritePaths=/var/lib/phasekit",
        "RestartSec=5",
        "ExecStart=/opt/phasekit/.venv/bin/phasekit gateway run /etc/phasekit/gateway.toml",
    ):
        assert fact in unit, fact
    for group in ("dialout", "spi", "gpio"):
        assert group in unit and group in text
