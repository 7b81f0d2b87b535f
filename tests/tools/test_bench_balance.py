"""The balancing benchmark end to end on a small generated feeder, the oracles, the limit check."""

import json
import time

import numpy as np
import pytest

from phasecore import balancer as bal
from phasekit import cli
from phasekit.balance import benchmark as bench_balance
from phasekit.balance import oracle, timing
from phasekit.balance import replay as sim
from phasekit.feeder import format as ff
from phasekit.feeder.generate import generate


@pytest.fixture(scope="module")
def small_feeder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feeder")
    ff.write(generate(24, seed=5), folder)
    return folder


def test_cli_json_has_every_strategy_and_keeps_the_limits(small_feeder, capsys, tmp_path):
    png = tmp_path / "day.png"
    rc = cli.main(
        [
            "bench",
            "balance",
            str(small_feeder),
            "--json",
            "--oracle-effort",
            "0.2",
            "--no-micropython",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert rc in (0, 1)  # 1 = some target missed; the table says which
    for name in bench_balance.STRATEGIES:
        assert sorted(report[name]) == sorted(bench_balance.KEYS), name
        r = report[name]
        assert 0 <= r["share_above_20"] <= r["share_above_10"] <= 1
        assert r["cuf_p95"] >= 0 and r["neutral_mean_a"] >= 0
    assert report["as_built"]["switches_total"] == 0
    # The oracles are yardsticks: nobody beats the dynamic oracle, the static one beats as built.
    assert report["dynamic_oracle"]["neutral_mean_a"] <= report["static_oracle"]["neutral_mean_a"] + 1e-9
    assert report["static_oracle"]["neutral_mean_a"] < report["as_built"]["neutral_mean_a"]
    assert report["static_oracle"]["switches_per_house_day_max"] <= 1
    search = report["meta"]["oracle_search"]
    assert search["effort"] == 0.2 and not search["static"]["cut_by_deadline"]
    assert len(search["static"]["chains"][0]) == oracle.CHAINS
    meta = report["meta"]
    assert meta["limit_violations"] == [] and meta["targets"]["limits_kept"]["met"]
    cfg = bal.Config()
    assert report["phasekit"]["switches_per_house_day_max"] <= cfg.moves_per_day
    assert set(meta["decision_time"]["cpython"]) == {"55", "100", "250"}
    assert (rc == 0) == all(t["met"] for t in meta["targets"].values())
    for name in bench_balance.STRATEGIES:  # 10-minute values beside the per-minute ones
        ten = meta["cuf_10min"][name]
        assert 0 <= ten["share_above_20"] <= 1 and ten["cuf_mean"] >= 0
    assert "share_above_20_fall_10min_values" in meta["targets"]
    assert meta["static_oracle_crossfit"]["neutral_mean_a"] > 0
    assert "crossfit_static_share_of_static_reduction" in meta["targets"]
    assert "phasekit: minute 1440/1440" in out.err  # progress on stderr
    assert png.stat().st_size > 10000


def test_table_output_and_settings(small_feeder, capsys):
    cli.main(
        ["bench", "balance", str(small_feeder), "--oracle-effort", "0.1", "--no-timing", "--set", "moves_per_day=1"]
    )
    out = capsys.readouterr().out
    for label in ("as built", "greedy", "phasekit", "static oracle", "dynamic oracle", "targets:"):
        assert label in out
    assert cli.main(["bench", "balance", str(small_feeder), "--set", "moves_per_dya=1"]) == 2
    assert "unknown key(s) moves_per_dya" in capsys.readouterr().err
    assert cli.main(["bench", "balance", str(small_feeder), "--oracle-effort", "0"]) == 2
    assert "--oracle-effort must be above 0 and at most 100, got 0.0" in capsys.readouterr().err
    for bad in ("inf", "nan", "1e300"):
        assert cli.main(["bench", "balance", str(small_feeder), "--oracle-effort", bad]) == 2
        assert "--oracle-effort must be above 0 and at most 100" in capsys.readouterr().err
    assert cli.main(["bench", "balance", str(small_feeder), "--oracle-cap", "0"]) == 2
    assert "--oracle-cap must be positive" in capsys.readouterr().err


def test_foresight_diagnostic_is_reported_beside_the_strategies(small_feeder, capsys):
    rc = cli.main(
        [
            "bench",
            "balance",
            str(small_feeder),
            "--json",
            "--oracle-effort",
            "0.1",
            "--no-timing",
            "--foresight",
            "15,240",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc in (0, 1)
    ahead = report["meta"]["foresight"]
    assert (ahead["fast_min"], ahead["slow_min"]) == (15, 240)
    assert ahead["limit_violations"] == []
    assert ahead["switches_per_house_day_max"] <= 4
    # A diagnostic, not a strategy: the JSON keys are unchanged.
    assert "phasekit_foresight" not in report
    share = report["meta"]["targets"]["foresight_share_of_static_oracle_reduction"]
    built = report["as_built"]["neutral_mean_a"]
    red = built - report["static_oracle"]["neutral_mean_a"]
    assert share["value"] == pytest.approx((built - ahead["neutral_mean_a"]) / red)
    cli.main(["bench", "balance", str(small_feeder), "--oracle-effort", "0.1", "--no-timing", "--foresight", "15,240"])
    assert "the true mean of each house's next 15 minutes, and of its next 240" in capsys.readouterr().out
    assert bench_balance.parse_foresight("15") == (15, None)
    for bad in ("", "15,x", "0,240", "15,2000", "15,60,240"):
        with pytest.raises(SystemExit) as e:
            cli.main(["bench", "balance", str(small_feeder), "--foresight", bad])
        assert e.value.code == 2
        assert "--foresight" in capsys.readouterr().err


def test_foresight_plans_on_the_true_future_means():
    # future_means is the mean over the next minutes, cut at the day's end.
    x = np.arange(12.0).reshape(2, 6) ** 2
    got = sim.future_means(x, 3)
    for h in range(2):
        for t in range(6):
            ahead = x[h, t + 1 : t + 4] if t < 5 else x[h, 5:6]
            assert got[h, t] == pytest.approx(ahead.mean())
    # The foresight balancer plans on exactly those means, whatever it was fed.
    f = generate(12, seed=2, three_phase_share=0.0, unmetered_share=0.0)
    day = sim.Day(f)
    metered = np.nonzero(f.metered)[0]
    cur = f.load_kw[metered] * 1000.0 / (f.voltage_v * f.pf[metered])
    ip = cur * f.pf[metered]
    b = sim._Foresight(bal.Config(), len(metered), ip, 0.0 * ip, [int(h) for h in metered], 15, 240)
    for h in metered:
        b.add_node(int(h), int(f.phase[h]))
    b.reading(int(metered[0]), 600, 999.0)
    own = (b._fp[0], b._sp[0], b._ep[0])
    b.plan(600, None)
    i = b._slot[int(metered[0])]
    assert b._xp[i] == pytest.approx(sim.future_means(ip, 15)[0, 10])
    # ... and afterwards its own averages go on from where they were.
    assert (b._fp[0], b._sp[0], b._ep[0]) == own
    # The meter's residual (load on no node) is the meter minus the real
    # readings, not minus the future: here every house has a node, so none.
    b = sim._Foresight(bal.Config(), len(metered), ip, 0.0 * ip, [int(h) for h in metered], 15, 240)
    for h in metered:
        b.add_node(int(h), int(f.phase[h]))
    on = {int(h): int(f.phase[h]) for h in metered}
    moved = 0
    for t in range(60):
        meter = [0.0] * 6
        for k, h in enumerate(metered):
            b.reading(int(h), t * 60, float(cur[k, t]), pf=1.0)
            meter[2 * on[int(h)]] += float(cur[k, t])
        for node, _, to in b.plan(t * 60, tuple(meter)):
            on[node] = to
            moved += 1
        assert max(abs(x) for x in b._res) < 1e-6, t
    assert moved  # the check held across moves too
    r = sim.run_phasekit(day, bal.Config(), foresight=(15, 240))
    assert r.name == "phasekit_foresight" and sim.check_limits(r, bal.Config()) == []
    # Without a slow horizon the slow estimate stays the balancer's own.
    b = sim._Foresight(bal.Config(), len(metered), ip, 0.0 * ip, [int(h) for h in metered], 15, None)
    for h in metered:
        b.add_node(int(h), int(f.phase[h]))
        b.reading(int(h), 540, 7.0, pf=1.0)
    b.reading(int(metered[0]), 600, 13.0, pf=1.0)
    b.plan(600, None)
    assert b._xp[i] == pytest.approx(sim.future_means(ip, 15)[0, 10])
    assert b._sp[i] == pytest.approx(7.0 + 60.0 / (3600 + 60) * 6.0)  # its own slow EWMA


def test_a_feeder_where_no_house_can_move_is_benchmarked_not_crashed(tmp_path, capsys):
    ff.write(generate(8, seed=1, not_switchable_share=1.0), tmp_path)
    rc = cli.main(["bench", "balance", str(tmp_path), "--json", "--oracle-effort", "0.1", "--no-timing"])
    report = json.loads(capsys.readouterr().out)
    assert rc in (0, 1)
    built = report["as_built"]["neutral_mean_a"]
    for name in ("phasekit", "static_oracle", "dynamic_oracle"):
        assert report[name]["neutral_mean_a"] == pytest.approx(built) and report[name]["switches_total"] == 0


def test_a_load_the_balancer_refuses_and_a_bad_plot_path_are_usage_errors(tmp_path, capsys):
    # 500 kW on one house's row: a valid feeder file, but no node reads 2000 A.
    (tmp_path / "houses.csv").write_text("house,phase,switchable,metered\nh1,A,1,1\nh2,B,1,1\n")
    (tmp_path / "load_kw.csv").write_text(
        "minute,h1,h2\n" + "".join("%d,%s,1\n" % (m, "500" if m == 7 else "2") for m in range(20))
    )
    assert cli.main(["bench", "balance", str(tmp_path), "--no-timing", "--oracle-effort", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "the balancer refused a reading: minute 7: node 0: current" in err and "Traceback" not in err
    ok = tmp_path / "ok"
    ff.write(generate(6, seed=1), ok)
    assert cli.main(["bench", "balance", str(ok), "--plot", str(tmp_path / "nowhere" / "day.png")]) == 2
    assert "--plot %s: no such folder" % (tmp_path / "nowhere" / "day.png") in capsys.readouterr().err


def test_bad_feeder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "houses.csv").write_text("house,phase,switchable,metered\nh1,Q,1,1\n")
    (tmp_path / "load_kw.csv").write_text("minute,h1\n0,1\n")
    assert cli.main(["bench", "balance", str(tmp_path)]) == 2
    assert "houses.csv:2: house h1: phase 'Q'" in capsys.readouterr().err


def test_one_move_per_day_budget_holds_over_a_replayed_day():
    day = sim.Day(generate(40, seed=9))
    cfg = bal.Config(moves_per_day=1, min_dwell_s=7200, moves_per_round=1)
    r = sim.run_phasekit(day, cfg)
    assert sim.check_limits(r, cfg) == []
    assert r.switches_per_house().max() <= 1
    assert all(day.movable[h] for _, h, _, _ in r.moves)


def test_limit_checker_catches_violations():
    day = sim.Day(generate(10, seed=1))
    h = int(day.mov_idx[0])
    unmovable = int(np.nonzero(~day.movable)[0][0]) if (~day.movable).any() else None
    moves = [(10, h, 0, 1), (20, h, 1, 2), (30, h, 2, 0)]
    if unmovable is not None:
        moves.append((40, unmovable, 0, 1))
    r = sim.Result("x", day, day.assign0(), moves)
    bad = sim.check_limits(r, bal.Config(min_dwell_s=3600, moves_per_day=2, moves_per_round=1))
    assert any("dwell" in b for b in bad)
    assert any("within 24 h" in b for b in bad)
    if unmovable is not None:
        assert any("not movable" in b for b in bad)


def test_limit_checker_catches_the_multi_share_the_warm_up_and_a_wrong_from_phase():
    day = sim.Day(generate(10, seed=1, three_phase_share=0.0, unmetered_share=0.0, not_switchable_share=0.0))
    cfg = bal.Config(min_dwell_s=60, moves_per_day=4, moves_per_round=10, multi_share=0.45, warmup_s=600)
    cap = int(0.45 * 10)
    on = {int(h): int(p) for h, p in zip(day.mov_idx, day.assign0())}

    def there_and_back(houses, t1, t2):
        out = []
        for h in houses:
            out += [(t1, h, on[h], (on[h] + 1) % 3), (t2, h, (on[h] + 1) % 3, on[h])]
        return sorted(out)

    houses = [int(h) for h in day.mov_idx]
    ok = sim.Result("x", day, day.assign0(), there_and_back(houses[:cap], 100, 200))
    assert sim.check_limits(ok, cfg) == []
    too_many = sim.Result("x", day, day.assign0(), there_and_back(houses[: cap + 1], 100, 200))
    assert any("moved twice or more within 24 h, limit %d" % cap in b for b in sim.check_limits(too_many, cfg))
    early = sim.Result("x", day, day.assign0(), [(10, houses[0], on[houses[0]], (on[houses[0]] + 1) % 3)])
    assert any("warm-up" in b for b in sim.check_limits(early, cfg))
    wrong = sim.Result("x", day, day.assign0(), [(100, houses[0], (on[houses[0]] + 1) % 3, on[houses[0]])])
    assert any("but is on %d" % on[houses[0]] in b for b in sim.check_limits(wrong, cfg))


def test_oracles_find_the_exact_optimum_on_small_instances():
    for seed in (1, 2, 3):
        f = generate(9, seed=seed, three_phase_share=0.0, unmetered_share=0.0, not_switchable_share=0.0)
        day = sim.Day(f)
        sl = slice(17 * 60, 19 * 60)
        exact_a, exact = oracle.brute_force(day, sl)
        base, w = oracle._prepare(day, sl)
        start, start_cost = oracle.local_search(base, w, day.assign0())
        _, annealed, _, _, _ = oracle._anneal_search(base, w, start, start_cost, np.random.default_rng(0))
        _, iterated, cut = oracle._ils(base, w, [day.assign0()], oracle.ROUNDS_PER_BLOCK, np.random.default_rng(0))
        assert annealed == pytest.approx(exact, rel=1e-9), (seed, annealed, exact)
        assert iterated == pytest.approx(exact, rel=1e-9), (seed, iterated, exact)
        assert not cut


def test_oracles_do_fixed_work_so_the_same_feeder_gives_the_same_yardstick():
    day = sim.Day(generate(30, seed=6))
    runs = []
    for _ in range(2):
        info = {}
        a, cost = oracle.static_oracle(day, effort=0.2, seed=3, info=info)
        runs.append((a.tolist(), cost, info))
    assert runs[0] == runs[1]
    info = runs[0][2]
    assert len(info["chains"]) == 1 and len(info["chains"][0]) == oracle.CHAINS
    assert info["steps_per_chain"] == int(oracle.STEPS_PER_HOUSE * 0.2 * len(day.mov_idx))
    assert info["rounds"] == int(oracle.ROUNDS_STATIC * 0.2)
    assert not info["cut_by_deadline"]
    # A chain starts from the best so far: its result never goes up.
    assert all(b <= a + 1e-9 for a, b in zip(info["chains"][0], info["chains"][0][1:]))
    # The oracle keeps the better of its two searches.
    cost = runs[0][1]
    assert cost == pytest.approx(min(info["iterated_local_search"][0], info["annealing_then_local_search"][0]))
    assert cost == pytest.approx(sim.static_result(day, "s", np.array(runs[0][0])).neutral.mean())
    d1 = oracle.dynamic_oracle(day, effort=0.05, seed=1, warm=runs[0][0])
    d2 = oracle.dynamic_oracle(day, effort=0.05, seed=1, warm=runs[0][0])
    assert (d1[0] == d2[0]).all() and d1[1] == d2[1]


def test_a_search_cut_by_its_deadline_says_so_and_still_returns_a_valid_assignment():
    day = sim.Day(generate(30, seed=6))
    ab = sim.run_as_built(day).neutral.mean()
    for search in (oracle.static_oracle, oracle.dynamic_oracle, oracle.crossfit_static):
        info = {}
        a, cost = search(day, effort=5.0, deadline_s=0.0, info=info)
        assert info["cut_by_deadline"], search.__name__
        assert cost <= ab + 1e-9  # the local search before the annealing already ran
        assert a.shape[0] == len(day.mov_idx)


def test_the_cap_also_cuts_the_annealing_before_its_first_proposal():
    # Finding where a chain's three draws start runs through them once; a
    # deadline already past stops that too, instead of drawing 3 x 10^8 numbers.
    day = sim.Day(generate(20, seed=8))
    base, w = oracle._prepare(day)
    start, start_cost = oracle.local_search(base, w, day.assign0())
    a, c, cut = oracle.anneal(
        base, w, start, 10**8, 0.5 * start_cost, np.random.default_rng(0), deadline=time.perf_counter() - 1.0
    )
    assert cut and c == pytest.approx(start_cost)


def test_annealing_never_returns_worse_than_its_start():
    day = sim.Day(generate(20, seed=8))
    base, w = oracle._prepare(day)
    start, start_cost = oracle.local_search(base, w, day.assign0())
    for seed in range(3):
        a, c, cut = oracle.anneal(base, w, start, 3000, 0.5 * start_cost, np.random.default_rng(seed))
        assert c <= start_cost + 1e-9 and not cut
        assert c == pytest.approx(oracle._cost(base, w, a)[0])


def test_annealing_draws_its_proposals_in_chunks_as_one_whole_draw_would(monkeypatch):
    # The proposals come a chunk at a time (bounded memory); the chain must be
    # the one the seed gave when they were drawn whole, whatever the chunk size,
    # and the generator must be left where the whole draws leave it.
    m, steps = 7, 3001
    draws = oracle._ChunkedDraws(np.random.default_rng(4), m, steps)
    whole = np.random.default_rng(4)
    houses = whole.integers(0, m, size=steps)
    turns = whole.integers(1, 3, size=steps)
    log_u = np.log(whole.random(steps))
    got = [draws.next(s) for s in range(0, steps, oracle._CHUNK)]
    assert (np.concatenate([g[0] for g in got]) == houses).all()
    assert (np.concatenate([g[1] for g in got]) == turns).all()
    assert (np.concatenate([g[2] for g in got]) == log_u).all()

    day = sim.Day(generate(20, seed=8))
    base, w = oracle._prepare(day)
    start, start_cost = oracle.local_search(base, w, day.assign0())
    runs = []
    for chunk in (oracle._CHUNK, 64):
        monkeypatch.setattr(oracle, "_CHUNK", chunk)
        rng = np.random.default_rng(2)
        a, c, _ = oracle.anneal(base, w, start, 3001, 0.5 * start_cost, rng)
        runs.append((a.tolist(), c, rng.random()))
    assert runs[0] == runs[1]
    after_whole = np.random.default_rng(2)
    after_whole.integers(0, w.shape[1], size=3001)
    after_whole.integers(1, 3, size=3001)
    after_whole.random(3001)
    assert runs[0][2] == after_whole.random()


def test_static_oracle_is_no_worse_than_as_built_and_dynamic_no_worse_than_static():
    day = sim.Day(generate(30, seed=4))
    a, cost = oracle.static_oracle(day, effort=0.2)
    ab = sim.run_as_built(day).neutral.mean()
    assert cost <= ab + 1e-9
    assert sim.static_result(day, "s", a).neutral.mean() == pytest.approx(cost)
    ad, dcost = oracle.dynamic_oracle(day, effort=0.2, warm=a)
    assert dcost <= cost + 1e-9
    assert sim.Result("d", day, ad, []).neutral.mean() == pytest.approx(dcost)


def test_decision_time_is_measured_on_both_interpreters():
    out = timing.measure(sizes=(20,), use_micropython=True)
    for impl in ("cpython", "micropython"):
        s = out[impl][20]
        assert s["rounds"] == timing.TIMED and s["repeats"] == timing.REPEATS
        assert 0 < s["plan_median_ms"] <= s["plan_max_ms"]
        assert s["plan_median_ms"] <= s["round_median_ms"] + 1e-9


def test_decision_time_keeps_the_fastest_run():
    slow = {"plan_us": [1250, 1300, 1200], "round_us": [1500, 1600, 1400]}
    fast = {"plan_us": [840, 900, 4000], "round_us": [1000, 1100, 5000]}
    s = timing._fastest([slow, fast, slow])
    assert s["plan_median_ms"] == pytest.approx(0.9) and s["plan_max_ms"] == pytest.approx(4.0)
    assert s["round_median_ms"] == pytest.approx(1.1) and s["repeats"] == 3


def test_the_table_has_every_strategy_decision_times_and_the_share_of_the_oracles(tmp_path, capsys):
    # What ``phasekit demo`` printed before the demo became the whole site (phasekit site run).
    ff.write(generate(20, seed=3), tmp_path / "f20")
    assert cli.main(["bench", "balance", str(tmp_path / "f20"), "--oracle-effort", "0.1"]) in (0, 1)
    out = capsys.readouterr()
    for label in ("as built", "phasekit", "static oracle", "dynamic oracle", "decision time", "MicroPython"):
        assert label in out.out


def test_cuf_of_10min_values_aggregates_before_the_ratio():
    # 20 minutes: phases at 30/30/30 A, except a 5-minute 60 A spike on A in the first block.
    mag = np.full((3, 20), 30.0)
    mag[0, 2:7] = 60.0
    c = sim.cuf_of_10min_values(mag)
    assert c.shape == (2,) and c[1] == 0.0
    a = np.sqrt((5 * 60.0**2 + 5 * 30.0**2) / 10)  # RMS of phase A over the block
    mean = (a + 60.0) / 3
    assert c[0] == pytest.approx((a - mean) / mean)
    per_minute = np.abs(mag - mag.mean(axis=0)).max(axis=0) / mag.mean(axis=0)
    assert (per_minute > 0.2).sum() == 5 and c[0] > 0.2  # the spike lasts long enough to count
    mag[0, 2:7] = 30.0
    mag[0, 3] = 60.0  # a one-minute kettle: above 20 % that minute, not over the 10 minutes
    per_minute = np.abs(mag - mag.mean(axis=0)).max(axis=0) / mag.mean(axis=0)
    assert sim.cuf_of_10min_values(mag)[0] < 0.2 < per_minute[3]
    assert sim.cuf_of_10min_values(mag[:, :9]).shape == (0,)


def _small_day(loads=None, seed=2):
    f = generate(8, seed=seed, three_phase_share=0.0, unmetered_share=0.0, not_switchable_share=0.0)
    if loads is not None:
        f.load_kw = loads(f.load_kw)
        f.pf = np.full_like(f.pf, 0.95)
    return sim.Day(f)


def test_crossfit_static_equals_the_static_oracle_when_every_minute_is_alike():
    day = _small_day(lambda kw: np.repeat(kw.mean(axis=1, keepdims=True), kw.shape[1], axis=1))
    _, static = oracle.static_oracle(day, effort=0.2)
    a, cross = oracle.crossfit_static(day, effort=0.2)
    assert cross == pytest.approx(static, rel=1e-9)
    assert sim.Result("c", day, a, []).neutral.mean() == pytest.approx(cross)


def test_crossfit_static_never_judges_a_minute_with_an_assignment_that_saw_it():
    day = _small_day(lambda kw: kw)
    a, _ = oracle.crossfit_static(day, block_min=30, effort=0.2)
    even = (np.arange(day.T) // 30) % 2 == 0
    # Each half uses one assignment, fitted on the other half.
    assert (a[:, even] == a[:, even][:, :1]).all() and (a[:, ~even] == a[:, ~even][:, :1]).all()
    # Rewriting the even blocks' loads leaves the assignment used on them unchanged.
    rng = np.random.default_rng(7)

    def scramble(kw):
        kw = kw.copy()
        kw[:, even] = rng.permutation(kw[:, even], axis=0) * 3.0
        return kw

    scrambled = _small_day(scramble)
    b, _ = oracle.crossfit_static(scrambled, block_min=30, effort=0.2)
    assert (b[:, even] == a[:, even]).all()
    assert not (b[:, ~even] == a[:, ~even]).all()  # ...while the odd blocks' one follows the new loads
