"""The shipped example gateway config validates, so the install guide's first step works."""

from pathlib import Path

from phasegate.config import load

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "deploy" / "gateway.example.toml"


def test_example_config_is_valid():
    cfg = load(EXAMPLE)
    assert cfg.table("bus")["nodes"] == [1, 2, 3, 4, 5]
    assert cfg.table("meter")["profile"] == "sdm630"
    assert cfg.has("uplink") and cfg.table("uplink")["tls"] is True
