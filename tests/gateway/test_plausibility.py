"""phasegate.plausibility: what one node's claims can make the Pi do (issue 13, item 5).

Readings against physics and the PZEM-004T datasheet, the energy counter,
the transformer meter's residual (dynamics and level), and without a meter the
influence bound, checked by an independent recomputation of the balancer's
objective: no more than ``influence_moves`` moves of other houses a day rest
on one node's claims above its envelope, whatever it claims.
"""

import json
import math
import random

import pytest

from phasecore import balancer, codes
from phasegate.errors import ConfigError
from phasegate.plausibility import Guard, GuardConfig
from phasekit.sim.bus_nodes import SimNode

T0 = 1_700_006_400  # a midnight
ROT = (1 + 0j, complex(-0.5, -math.sqrt(3) / 2), complex(-0.5, math.sqrt(3) / 2))


def reading(amps=5.0, volts=230.0, pf=0.95, energy=1000, hz=50.0, phase=0, status=0, power=None):
    """A reading as a PZEM-004T node sends it (phasecore.msg fields), consistent unless told otherwise."""
    p = volts * amps * pf if power is None else power
    return {
        "voltage_dV": round(volts * 10),
        "current_mA": round(amps * 1000),
        "power_dW": round(p * 10),
        "energy_Wh": energy,
        "frequency_dHz": round(hz * 10),
        "pf_centi": round(pf * 100),
        "phase": phase,
        "status": status,
    }


def codes_of(findings, code):
    return [f for f in findings if f[1] == code]


# ---------------------------------------------------------------------- physics and the datasheet


@pytest.mark.parametrize(
    "bad, check",
    [
        (dict(volts=150.0), "VOLTAGE"),
        (dict(volts=290.0), "VOLTAGE"),
        (dict(hz=55.0), "FREQUENCY"),
        (dict(amps=105.0), "CURRENT"),
        (dict(amps=10.0, power=1000.0), "POWER"),  # 230 V x 10 A x 0.95 = 2185 W, not 1000
        (dict(amps=1.0, pf=0.0, power=200.0), "POWER"),  # pf 0 with real power
        (dict(energy=1_000_000), "ENERGY_JUMP"),  # 999 kWh in 10 s
    ],
)
def test_a_reading_that_breaks_physics_is_not_used_and_reported(bad, check):
    g = Guard()
    assert g.reading(7, reading(), T0)
    assert not g.reading(7, reading(**bad), T0 + 10)
    (finding,) = codes_of(g.take_findings(), codes.EV_READING_IMPLAUSIBLE)
    assert finding == (7, codes.EV_READING_IMPLAUSIBLE, codes.PLAUSIBILITY_CHECKS.index(check), False)


def test_power_within_the_pzem_accuracy_passes():
    g = Guard()
    # +-0.5 % V and I, +-1 % P, pf rounded to 0.01: all at once, the worst way round.
    amps, volts, pf = 20.0, 230.0, 0.95
    p = volts * 1.005 * amps * 1.005 * (pf + 0.005) * 1.01
    assert g.reading(3, reading(amps=amps, volts=volts, pf=pf, power=p), T0)
    assert g.reading(3, reading(amps=0.01, pf=0.0, power=0.0, energy=1001), T0 + 10)  # no load: pf 0
    assert g.reading(3, reading(amps=8.0, power=-230 * 8 * 0.95, energy=1002), T0 + 20)  # export, signed
    assert g.take_findings() == []


def test_the_energy_counter_may_not_go_back_without_a_reset_event():
    g = Guard()
    assert g.reading(4, reading(energy=5000), T0)
    assert not g.reading(4, reading(energy=4990), T0 + 10)
    f = g.take_findings()
    assert codes_of(f, codes.EV_ENERGY_BACKWARDS) == [(4, codes.EV_ENERGY_BACKWARDS, 10, True)]
    assert codes_of(f, codes.EV_READING_IMPLAUSIBLE)[0][2] == codes.PLAUSIBILITY_CHECKS.index("ENERGY_BACKWARDS")
    assert g.reading(4, reading(energy=4991), T0 + 20)  # on from the new value
    # A meter the node saw go silent and come back may start again from 0; once.
    g.node_event(4, codes.EV_METER_BACK)
    assert g.reading(4, reading(energy=3), T0 + 30)
    assert not g.reading(4, reading(energy=1), T0 + 40)
    # A 32-bit counter that wraps is not a step back.
    assert g.reading(5, reading(energy=2**32 - 5), T0)
    assert g.reading(5, reading(energy=2), T0 + 60)


def test_a_frequency_far_from_every_other_nodes_is_implausible():
    g = Guard()
    for a in (1, 2, 3):
        assert g.reading(a, reading(hz=50.0), T0)
    assert g.reading(4, reading(hz=50.3), T0 + 1)  # within 0.6 Hz: the PZEM-004T's 0.5 % and a margin
    assert not g.reading(5, reading(hz=51.5), T0 + 1)
    assert g.take_findings()[0][2] == codes.PLAUSIBILITY_CHECKS.index("FREQUENCY_DISAGREES")


def test_a_node_that_says_its_meter_failed_is_not_used_nor_punished():
    g = Guard()
    for i in range(10):
        assert not g.reading(6, reading(amps=0.0, power=500.0, status=codes.ST_METER), T0 + 10 * i)
    assert g.take_findings() == [] and not g.quarantined


def test_repeated_implausible_readings_quarantine_the_node():
    g = Guard(GuardConfig(strikes=3, strike_window_s=900, quarantine_s=3600))
    bad = reading(amps=10.0, power=100.0)
    assert not g.reading(9, bad, T0)
    assert not g.reading(9, dict(bad, energy=1001), T0 + 100)
    assert not g.is_quarantined(9)
    assert not g.reading(9, dict(bad, energy=1002), T0 + 200)
    assert g.quarantined[9] == (T0 + 200 + 3600, codes.Q_IMPLAUSIBLE)
    f = g.take_findings()
    assert codes_of(f, codes.EV_NODE_QUARANTINED) == [(9, codes.EV_NODE_QUARANTINED, codes.Q_IMPLAUSIBLE, True)]
    assert g.take_transitions() == ([9], [])
    assert not g.reading(9, reading(energy=1003), T0 + 300), "quarantined: not for balancing, even when plausible"
    g.tick(T0 + 200 + 3600)
    assert not g.quarantined and g.take_transitions() == ([], [9])
    assert codes_of(g.take_findings(), codes.EV_NODE_RELEASED) == [
        (9, codes.EV_NODE_RELEASED, codes.Q_IMPLAUSIBLE, False)
    ]
    assert g.reading(9, reading(energy=1004), T0 + 4000)


def test_strikes_spread_wider_than_the_window_do_not_add_up():
    g = Guard(GuardConfig(strikes=3, strike_window_s=900))
    for k in range(10):
        g.reading(2, reading(amps=10.0, power=100.0, energy=1000 + k), T0 + 1000 * k)
    assert not g.quarantined
    assert len(codes_of(g.take_findings(), codes.EV_READING_IMPLAUSIBLE)) == 10


# ---------------------------------------------------------------------- the transformer meter


def _meter_site(g, rounds, liar=None, lie=None, seed=1, unmetered_sd=2.0):
    """Eight houses on phase A with steps and an unmetered load; the meter sees the truth each minute."""
    rng = random.Random(seed)
    loads = [rng.uniform(0.5, 3) for _ in range(8)]
    unmetered = 5.0
    energy = [1000.0] * 8
    for k in range(rounds):
        t = T0 + 60 * k
        for h in range(8):
            if rng.random() < 0.1:
                loads[h] = rng.choice((0.5, 1.0, 2.0, 9.0, 12.0))  # kettles, showers, ovens
        unmetered = max(0.0, unmetered + rng.gauss(0, unmetered_sd))
        for h in range(8):
            claim = lie(k, loads[h]) if h == liar else loads[h]
            energy[h] += 230 * claim / 60
            g.reading(h + 1, reading(amps=claim, pf=1.0, energy=int(energy[h])), t)
        g.meter_round(t, (sum(loads) + unmetered, 0.0, 0.0))
        g.tick(t)


def test_honest_nodes_pass_the_meters_dynamics_and_level_tests():
    for seed in range(5):
        g = Guard()
        _meter_site(g, 1440, seed=seed)
        assert not g.quarantined, (seed, g.quarantined)


def test_steps_the_meter_does_not_see_quarantine_the_node():
    g = Guard()
    rng = random.Random(7)
    fake = [0.0]

    def invent(k, real):
        if rng.random() < 0.15:
            fake[0] = rng.choice((0.0, 6.0, 12.0))  # steps of its own, nowhere in the meter
        return real + fake[0]

    _meter_site(g, 600, liar=3, lie=invent)
    assert g.quarantined.get(4, (0, None))[1] == codes.Q_METER_DYNAMICS
    assert list(g.quarantined) == [4]


def test_a_constant_offset_is_found_by_the_level_test_and_nobody_else_is():
    g = Guard(GuardConfig(level_window_s=7200))
    _meter_site(g, 720, liar=5, lie=lambda k, real: real + 25.0)
    assert g.quarantined.get(6, (0, None))[1] == codes.Q_METER_LEVEL
    assert list(g.quarantined) == [6]


def test_a_deficit_two_nodes_can_explain_blames_neither():
    g = Guard(GuardConfig(level_window_s=3600))
    for k in range(600):
        t = T0 + 60 * k
        g.reading(1, reading(amps=30.0, pf=1.0, energy=1000 + k), t)
        g.reading(2, reading(amps=30.0, pf=1.0, energy=1000 + k), t)
        g.reading(3, reading(amps=1.0, pf=1.0, energy=1000 + k), t)
        g.meter_round(t, (41.0, 0.0, 0.0))  # 20 A less than claimed: either could be lying
    assert not g.quarantined


# ---------------------------------------------------------------------- influence without a meter


def _objective_gain(b, now_s, kept, j, clipped, cap):
    """Move ``kept[j]``'s gain in sqrt(J), recomputed here from the balancer's estimates, in plan order,
    with node ``clipped``'s estimates cut to ``cap`` A."""
    nodes, res, rfl = b.estimate_inputs(now_s)
    w, wc = b.config.slow_weight, b.config.fluct_weight
    before = {n: f for n, f, _ in kept}  # the balancer already holds the plan's phases
    big_f = sum(complex(res[4 * p], -res[4 * p + 1]) * ROT[p] for p in range(3))
    big_s = sum(complex(res[4 * p + 2], -res[4 * p + 3]) * ROT[p] for p in range(3))
    big_c = sum(rfl[p] * ROT[p] for p in range(3))
    est = {}
    for n, ph, fp, fq, sp, sq, fl, counted in nodes:
        ph = before.get(n, ph)
        if not counted or ph > 2:
            continue
        zf, zs = complex(fp, -fq), complex(sp, -sq)
        if n == clipped:
            zf *= min(1.0, cap / abs(zf)) if abs(zf) > 0 else 1.0
            zs *= min(1.0, cap / abs(zs)) if abs(zs) > 0 else 1.0
        est[n] = (zf, zs, fl)
        big_f += zf * ROT[ph]
        big_s += zs * ROT[ph]
        big_c += fl * ROT[ph]

    def cost(a, c, e):
        return math.sqrt((abs(a) ** 2 + w * abs(c) ** 2) / (1 + w) + wc * abs(e) ** 2)

    for i, (n, frm, to) in enumerate(kept[: j + 1]):
        zf, zs, fl = est[n]
        d = ROT[to] - ROT[frm]
        if i == j:
            return cost(big_f, big_s, big_c) - cost(big_f + zf * d, big_s + zs * d, big_c + fl * d)
        big_f, big_s, big_c = big_f + zf * d, big_s + zs * d, big_c + fl * d
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(6))
def test_one_nodes_claims_above_its_envelope_move_at_most_influence_moves_houses_a_day(seed):
    """The bound, checked against an independent recomputation of the balancer's objective."""
    rng = random.Random(seed)
    cfg = balancer.Config(persist_rounds=1, warmup_s=0, min_dwell_s=0, moves_per_round=3, moves_per_day=6)
    b = balancer.Balancer(cfg, capacity=40)
    g = Guard(GuardConfig(influence_moves=2, quarantine_s=10**6))
    houses = list(range(1, 31))
    liar = 1
    phase = {h: (0 if h <= 12 else rng.choice((1, 2))) for h in houses}
    for h in houses:
        b.add_node(h, phase[h], switchable=h != liar)
    energy = dict.fromkeys(houses, 1000.0)
    resting_on_liar = []
    moves_total = 0
    for k in range(1440):
        now = 60 * k
        t = T0 + now
        for h in houses:
            if h == liar:
                amps = rng.choice((60.0, 80.0, 95.0)) if rng.random() < 0.5 else 40.0  # any plausible current
            else:
                amps = rng.uniform(0.5, 4.0)
            energy[h] += 230 * amps / 60
            if g.reading(h, reading(amps=amps, energy=int(energy[h]), phase=phase[h]), t) and not g.is_quarantined(h):
                b.reading(h, now, g.balance_a(h, amps, t), 0.95, phase[h])
        moves = b.plan(now, None)
        cap = g.trusted_a(liar)  # what the guard trusts the liar with in this plan
        kept = g.vet(b, now, moves, t)
        if liar in b.nodes():
            for j, (node, _frm, _to) in enumerate(kept):
                if _objective_gain(b, now, kept, j, liar, cap) < cfg.min_move_gain_a:
                    resting_on_liar.append((k, node))
        for node, _frm, to in kept:
            phase[node] = to
        moves_total += len(kept)
        g.tick(t)
        entered, _ = g.take_transitions()
        if liar in entered:
            b.remove_node(liar)
    assert moves_total > 0, "the liar did attract moves"
    # Moves of other houses that rest on the liar's claims above its envelope: at most 2 in the day.
    assert 1 <= len(resting_on_liar) <= 2, resting_on_liar
    assert g.attributed(liar, T0 + 86400) == len(resting_on_liar)
    assert liar in g.quarantined, "at its limit, and its day mean beyond the site's envelope"


def test_the_guards_objective_is_the_balancers():
    rng = random.Random(3)
    b = balancer.Balancer(balancer.Config(warmup_s=0, persist_rounds=1), capacity=20)
    for h in range(1, 13):
        b.add_node(h, h % 3)
    for k in range(30):
        for h in range(1, 13):
            b.reading(h, 60 * k, rng.uniform(0, 20), rng.uniform(0.8, 1.0))
        b.plan(60 * k, None)
    nodes, res, rfl = b.estimate_inputs(60 * 29)
    w, wc = b.config.slow_weight, b.config.fluct_weight
    big_f = sum(complex(fp, -fq) * ROT[ph] for _, ph, fp, fq, *_ in nodes)
    big_s = sum(complex(sp, -sq) * ROT[ph] for _, ph, _, _, sp, sq, *_ in nodes)
    big_c = sum(fl * ROT[ph] for _, ph, _, _, _, _, fl, _ in nodes)
    j = (abs(big_f) ** 2 + w * abs(big_s) ** 2) / (1 + w) + wc * abs(big_c) ** 2
    assert abs(math.sqrt(j) - b.estimated_unbalance_a) < 1e-6 * max(1.0, b.estimated_unbalance_a)


def test_the_envelope_is_learnt_from_history_and_grows_by_the_margin_a_day():
    cfg = GuardConfig(envelope_margin=0.25, envelope_slack_a=2.0, learn_days=1)
    g = Guard(cfg)
    assert g.trusted_a(1) == cfg.prior_fast_a  # nothing learnt: the prior
    e = 1000
    for k in range(2 * 1440):
        e += 1
        g.reading(1, reading(amps=4.0, energy=e), T0 + 60 * k)
    assert g.trusted_a(1) == pytest.approx(4.0 * 1.25 + 2.0, rel=0.02)
    # A day at 40 A enters the history clipped to the day's envelope: 7 A today means at most 10.75 A tomorrow.
    for k in range(2 * 1440, 3 * 1440 + 1):
        e += 10
        g.reading(1, reading(amps=40.0, energy=e), T0 + 60 * k)
    assert g.trusted_a(1) <= (4.0 * 1.25 + 2.0) * 1.25 + 2.0 + 0.1


# ---------------------------------------------------------------------- state and configuration


def test_state_survives_a_restart_and_a_damaged_file_is_refused(tmp_path):
    path = tmp_path / "plausibility.json"
    g = Guard(path=path)
    e = 1000
    for k in range(3000):
        e += 1
        g.reading(1, reading(amps=3.0, energy=e), T0 + 60 * k)
    g._quarantine(2, codes.Q_INFLUENCE, T0)
    g.save()
    h = Guard(path=path)
    assert h.quarantined == g.quarantined and h.trusted_a(1) == g.trusted_a(1)
    assert h.nodes[1].e == e
    assert not h.reading(1, reading(energy=e - 5), T0 + 60 * 3000)  # the counter is remembered
    path.write_text(json.dumps({"format": 1, "nodes": {"1": {"hist": [[1, 2]], "day": 0}}}))
    with pytest.raises(ConfigError, match="bad entry for node"):
        Guard(path=path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        Guard(path=path)


@pytest.mark.parametrize(
    "kw",
    [
        dict(v_min_v=float("nan")),
        dict(supply_a=float("inf")),
        dict(strikes=2.5),
        dict(strikes=True),
        dict(influence_moves=0),
        dict(v_min_v=260.0, v_max_v=250.0),
        dict(nonsense=1),
        dict(quarantine_s="1 day"),
    ],
)
def test_bad_settings_are_refused_by_name(kw):
    with pytest.raises(ConfigError, match="plausibility"):
        GuardConfig(**kw)


# ---------------------------------------------------------------------- in the controller, real frames


class InconsistentNode(SimNode):
    """A node (a stolen key, new firmware) whose power does not match its voltage and current."""

    def reading_payload(self):
        from phasecore import msg, seal

        body = msg.encode_reading(2314, 40000, 5000, 1234567, 500, 95, self.phase, 0)  # 40 A and 500 W
        return seal.seal_raw(msg.READING, body, self.sender)


def test_the_controller_quarantines_a_node_whose_readings_break_physics(tmp_path):
    import asyncio

    from phasegate.bus import Bus, SerialLine
    from phasegate.controller import Controller
    from phasegate.registry import Registry
    from phasekit.sim.bus_nodes import SimBus

    key = bytes(range(32))
    nodes = [InconsistentNode(1, key, phase=0)] + [SimNode(a, key, phase=0, current_mA=5000) for a in range(2, 7)]
    events = []

    class Journal:
        def received(self, m, t):
            pass

        def command(self, fields, ack, t):
            pass

        def pi_event(self, addr, code, value, alarm, t):
            events.append((addr, code, value, alarm))

        def summary(self, fields, t):
            pass

    class Clock:
        t = 1000.0

        def monotonic(self):
            return self.t

        def wall(self):
            return T0 + self.t

    async def main():
        with SimBus(nodes) as sim:
            bus = Bus(SerialLine(sim.port, 115200), list(range(1, 7)), reply_timeout_s=0.1, retries=1)
            reg = Registry(key, list(range(1, 7)), tmp_path / "seq.txt", tmp_path / "reg.json")
            clock = Clock()
            ctl = Controller(
                reg,
                balancer.Balancer(balancer.Config(persist_rounds=1, warmup_s=0, min_dwell_s=0, min_gain_a=0.5)),
                {"bus": bus},
                journal=Journal(),
                clock=clock,
                guard=Guard(GuardConfig(), path=tmp_path / "plausibility.json"),
            )
            async with bus:
                for _ in range(4):
                    clock.t += 10
                    for addr, reply in await bus.poll_round():
                        ctl.on_reply(addr, reply)
                await ctl.balance_round()
                if ctl.moving:
                    await asyncio.gather(*ctl.moving.values())
            return ctl, sim

    ctl, sim = asyncio.run(asyncio.wait_for(main(), 60))
    assert 1 in ctl.guard.quarantined and 1 not in ctl.balancer.nodes()
    assert (1, codes.EV_NODE_QUARANTINED, codes.Q_IMPLAUSIBLE, True) in events
    assert [e for e in events if e[1] == codes.EV_READING_IMPLAUSIBLE][0][2] == codes.PLAUSIBILITY_CHECKS.index("POWER")
    assert sim.nodes[1].commands == [], "never commanded"
    assert ctl.stats["moves_planned"] > 0, "the honest houses are balanced"
    assert json.loads((tmp_path / "plausibility.json").read_text())["nodes"]["1"]["q"][1] == codes.Q_IMPLAUSIBLE
