"""The frontier, the budget-constrained oracle, the deployable baselines, week-long feeders and the equipping plan.

Small scale on purpose: a few houses, a day or two, low oracle effort.
"""

import itertools
import json

import numpy as np
import pytest

from phasecore import balancer as bal
from phasekit import cli
from phasekit.balance import equip, frontier, oracle
from phasekit.balance import replay as sim
from phasekit.feeder import format as ff
from phasekit.feeder.generate import generate
from phasekit.feeder.resample import resample


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-days")
    ff.write(generate(12, seed=4, days=2), folder)
    return folder


def _brute(costs, start, budget, day_start):
    best = np.inf
    for combo in itertools.product(range(3), repeat=len(costs)):
        n, prev, ok = 0, start, True
        for b, p in enumerate(combo):
            if b and day_start[b]:
                n = 0
            n += p != prev
            prev = p
            ok = ok and n <= budget
        if ok:
            best = min(best, sum(costs[b][p] for b, p in enumerate(combo)))
    return best


def test_each_house_gets_the_exact_best_path_within_its_daily_budget():
    rng = np.random.default_rng(3)
    for _ in range(60):
        nb = int(rng.integers(1, 7))
        costs = rng.random((nb, 3))
        day_start = np.zeros(nb, bool)
        day_start[:: int(rng.integers(1, 4))] = True
        budget = int(rng.integers(0, 3))
        start = int(rng.integers(3))
        path, total = oracle._best_path(costs, start, budget, day_start)
        assert abs(total - _brute(costs, start, budget, day_start)) < 1e-9
        assert abs(costs[np.arange(nb), path].sum() - total) < 1e-9


def test_the_budget_oracle_keeps_its_budget_and_more_budget_never_does_worse(two_days):
    day = sim.Day(ff.load(two_days))
    prev = None
    last = np.inf
    for per_day in (1, 3, 96):
        info = {}
        a, c = oracle.budget_oracle(day, per_day, effort=0.5, starts=[] if prev is None else [prev], info=info)
        full = np.concatenate([day.assign0()[:, None], a], axis=1)
        for d in range(2):
            seg = full[:, d * 1440 : (d + 1) * 1440 + 1]
            assert (np.diff(seg, axis=1) != 0).sum(axis=1).max() <= per_day
        assert (np.diff(a, axis=1) != 0)[:, np.arange(a.shape[1] - 1) % 15 != 14].sum() == 0  # 15-minute blocks
        assert c <= last + 1e-9 and abs(sim.Result("x", day, a, []).neutral.mean() - c) < 1e-9
        assert info["starts"] and info["best"] == c
        last, prev = c, a


def test_day_ahead_static_never_sees_the_day_it_is_judged_on(two_days):
    f = ff.load(two_days)
    day = sim.Day(f)
    assert oracle.day_ahead_static(sim.Day(generate(6, seed=1)))[0] is None  # one day: no day ahead
    a, c = oracle.day_ahead_static(day, effort=0.1)
    assert (a[:, :1440] == day.assign0()[:, None]).all()  # day 1: nothing measured yet
    assert (a[:, 1440:] == a[:, 1440:1441]).all()  # day 2: one assignment
    f2 = ff.load(two_days)
    f2.load_kw[:, 1440:] = f2.load_kw[:, 1440:][::-1]  # rewrite day 2
    a2, _ = oracle.day_ahead_static(sim.Day(f2), effort=0.1)
    assert (a2[:, 1440] == a[:, 1440]).all()


def test_the_frontier_keeps_the_limits_and_reports_each_strategy(two_days):
    day = sim.Day(ff.load(two_days))
    sweep = frontier.run(day, (1, 8), effort=0.1)
    assert [r["budget"] for r in sweep["budgets"]] == [1, 8]
    for r in sweep["budgets"]:
        assert r["limit_violations"] == []
        for name in ("phasekit", "greedy", "reference"):
            s = r[name]
            assert s["switches_per_house_day_max"] <= r["budget"]
            assert "interruption_s_per_house_day_mean" in s and "reduction_a" in s
    assert [d["budget"] for d in sweep["dominates_greedy"]] == [1, 8]
    ss = frontier.run(day, (24,), kind=bal.SOLID_STATE, effort=0.1)
    gap = ss["budgets"][0]["phasekit"]
    assert gap["interruption_s_per_house_day_mean"] <= 0.010 * gap["switches_per_house_day_mean"] * 12 / 10 + 1e-9
    assert frontier.budget_config(4).as_dict() == dict(
        bal.Config().as_dict(),
        ss_min_dwell_s=3600,
        ss_moves_per_day=4,
        ss_follow_reading=0,
        ss_min_move_gain_a=2.0,
        ss_min_gain_a=2.0,
        ss_persist_rounds=2,
        ss_budget_gain_a=1.0,
    )


def test_budgets_cli_prints_the_frontier_as_json_and_draws_it(two_days, capsys, tmp_path):
    png = tmp_path / "frontier.png"
    rc = cli.main(
        ["bench", "balance", str(two_days), "--budgets", "1,4", "--json", "--oracle-effort", "0.05", "--plot", str(png)]
    )
    sweep = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and sweep["kind"] == "mechanical" and len(sweep["budgets"]) == 2
    assert png.stat().st_size > 1000
    for bad in ("0,1", "4,2", "x", "1,1"):
        with pytest.raises(SystemExit):
            cli.main(["bench", "balance", str(two_days), "--budgets", bad])


def test_a_week_of_the_generator_keeps_each_houses_habits():
    week = generate(10, seed=2, days=3)
    assert week.n_days == 3 and week.load_kw.shape == (10, 3 * 1440)
    one = generate(10, seed=2, day=1)
    same = (np.abs(week.load_kw[:, 1440:2880] - one.load_kw) < 1e-9).all(axis=1)
    assert same.sum() >= 8  # every house but one whose car charged past midnight
    assert (week.phase == one.phase).all()
    with pytest.raises(ValueError):
        generate(10, days=8)


def test_a_week_of_real_shapes_replays_each_households_day_with_jitter():
    src = generate(6, seed=9)
    week = resample(src, 8, seed=3, days=4, jitter_min=30, other_day_share=0.0)
    assert week.n_minutes == 4 * 1440
    one = resample(src, 8, seed=3)
    assert (week.phase == one.phase).all()
    for h in range(8):
        day = one.load_kw[h]
        for d in range(4):
            seg = week.load_kw[h, d * 1440 : (d + 1) * 1440]
            assert any(np.array_equal(seg, np.roll(day, s)) for s in range(-30, 31))
    assert not np.array_equal(resample(src, 8, seed=3, days=2).load_kw, resample(src, 8, seed=4, days=2).load_kw)
    for kw in ({"days": 0}, {"days": 2, "jitter_min": -1}, {"days": 2, "other_day_share": 1.5}):
        with pytest.raises(ValueError):
            resample(src, 8, **kw)
    with pytest.raises(ValueError):
        resample(week, 8, days=2)  # a week is built from one day


def test_the_switch_column_round_trips(tmp_path):
    f = ff.assign_switch(generate(20, seed=1), 0.5, 1)
    assert 0 < int(f.switch.sum()) <= int(f.switchable.sum())
    assert not (f.switch.astype(bool) & ~f.switchable).any()
    ff.write(f, tmp_path / "f")
    assert (ff.load(tmp_path / "f").switch == f.switch).all()
    (tmp_path / "f" / "houses.csv").write_text("house,phase,switchable,metered,switch\nh1,A,1,1,triac\n")
    with pytest.raises(ff.FeederFormatError, match="houses.csv:2: house h1: switch 'triac'"):
        ff.load(tmp_path / "f")


def test_plan_equip_ranks_single_phase_houses_and_compares_with_random(capsys, tmp_path):
    f = generate(16, seed=6)
    ranked = equip.rank(f)
    assert {r["index"] for r in ranked} == {h for h in range(16) if f.phase[h] != 3}
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    e = equip.equip(f, [ranked[0]["index"]])
    assert e.metered.sum() == 1 and e.switchable.sum() == 1
    ff.write(f, tmp_path / "f")
    assert cli.main(["plan", "equip", str(tmp_path / "f"), "--shares", "0.5,1.0", "--draws", "2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["share"] for r in plan["shares"]] == [0.5, 1.0]
    assert len(plan["shares"][0]["random_reduction_a"]) == 2
    assert cli.main(["plan", "equip", str(tmp_path / "f"), "--shares", "0,2"]) == 2
