"""``phasekit bench lying-node`` at CI size: one street, one day after one honest day, with and without a meter.

The full run (55 houses, seeds 1-3, three warm-up days, both strategies) is
``phasekit bench lying-node``; this one keeps its targets on a smaller street.
"""

import pytest

from phasekit.bench import lying_node
from phasekit.cli import build_parser
from phasekit.feeder.generate import generate


@pytest.mark.parametrize("meter", [False, True])
def test_one_lying_node_moves_at_most_the_bound_and_is_quarantined(meter):
    row = lying_node.experiment(lambda d: generate(40, 2, day=d), 1, "inflate", 30.0, meter)
    assert lying_node.misses(row, 720) == [], row
    assert row["honest_quarantined"] == []
    if meter:
        assert row["quarantine_reason"] in ("METER_LEVEL", "METER_DYNAMICS")
    else:
        assert row["attributed_to_liar"] <= row["influence_moves"]
        assert row["cuf_liar_guarded"] <= row["cuf_as_built"]
        assert row["cuf_liar_alone"] > row["cuf_liar_guarded"], "the guard is what keeps it down"


def test_the_bench_is_registered_and_parses():
    args = build_parser().parse_args(["bench", "lying-node", "--quick", "--json"])
    assert args.func is lying_node.main and args.quick and args.json
