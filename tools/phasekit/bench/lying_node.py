"""Lying node: one node reports false currents all day; what it makes the Pi and its balancer do (issue 13).

A 55-house street (``phasekit feeder generate``; ``--ieee DIR`` adds the IEEE
European LV feeder) is replayed minute by minute as the transformer Pi runs
it: every node's full reading goes through the plausibility guard
(``phasegate.plausibility``) before the balancer, the meter's phase currents
go to the guard each round, and a plan made without a meter is vetted by it
(``phasekit.balance.replay.run_guarded``). The guard first learns the nodes'
envelopes from ``--warmup-days`` honest days of the same street; then, on
the next day, one node lies from midnight to midnight (``replay.Liar``): it
refuses to be moved, so every move its claims cause is another house's, and it
sits on the phase with the least current as built, so moves it attracts away
from its phase hurt most. Strategies: ``inflate`` (its true current plus
``--amps``, ramped in over 30 minutes) and ``envelope`` (just under what the
guard trusts it with: the most it can claim unnoticed).

Every figure is on the *true* currents. Columns: the current unbalance factor
(CUF, mean of the day's minutes) as built, with honest nodes, with the liar
and the guard, and with the liar and the balancer alone; moves of the day;
moves of other houses the guard attributed to the liar's claims above its
envelope (meterless: the bound is ``influence_moves``); moves that *rest on
the lie* (ground truth the replay has and the Pi has not: with the liar's
true current in place of its claims, and with a meter the residual that
truth implies, the move would not lower the balancer's objective by
``min_move_gain_a``), with the guard and with the balancer alone; moves that
made the true neutral current worse over the next 15 minutes (honest day,
liar with the guard, liar alone); when the liar was quarantined and why; and
the honest day's quarantines (false positives; must be 0 or explained).

Targets (exit status 1 when one is missed): without a meter, CUF with the
liar and the guard at most as built, at most ``influence_moves`` moves
attributed to the liar, and an ``inflate`` liar quarantined within
``--quarantine-within-min`` (after its second attributed move, once its
24-hour mean is beyond the site's envelope); with a meter, no move resting on
the lie and the liar quarantined within ``--quarantine-within-min``; no
quarantine on any honest day.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from phasecore import codes

EXAMPLE = """example:
  phasekit bench lying-node --seeds 1,2,3 --warmup-days 3
  phasekit bench lying-node --quick
"""

T0 = 1_700_006_400  # a UTC midnight: day boundaries of the guard fall on the feeder's
STRATEGIES = ("inflate", "envelope")
WORSE_WINDOW_MIN = 15


def pick_liar(day: Any) -> int:
    """The movable house with the least load on the phase with the least current as built."""
    f = day.feeder
    mag, _, _ = day.metrics(day.assign0())
    light = int(np.argmin(mag.mean(axis=1)))
    load = np.abs(day.ip).mean(axis=1)
    candidates = [int(h) for h in day.mov_idx if f.phase[h] == light]
    return min(candidates, key=lambda h: float(load[h]))


def worsening_moves(result: Any, window: int = WORSE_WINDOW_MIN) -> int:
    """Moves after which the true neutral current over the next ``window`` minutes is higher than without them."""
    day = result.day
    rot = day.rot
    tp, tq = day.phase_totals(result.assign)
    neutral = sum(rot[p] * (tp[p] - 1j * tq[p]) for p in range(3))  # (T,) complex, with every move
    worse = 0
    for t, h, frm, to in result.moves:
        if t >= day.T:
            continue
        stop = min(day.T, t + window)
        with_it = neutral[t:stop]
        # The same minutes with this one house left where it was.
        without = with_it + (day.ip[h, t:stop] - 1j * day.iq[h, t:stop]) * (rot[frm] - rot[to])
        if float(np.abs(with_it).mean()) > float(np.abs(without).mean()) + 1e-9:
            worse += 1
    return worse


def experiment(
    feeder_of: Callable[[int], Any],
    warmup_days: int,
    strategy: str,
    amps: float,
    meter: bool,
    guard_config: Any = None,
) -> dict[str, Any]:
    """One street, one strategy, with or without a meter: the figures of one table row."""
    from phasegate.plausibility import Guard
    from phasekit.balance import replay

    started = time.perf_counter()
    guard = Guard(guard_config)
    counters: dict[int, float] = {}
    warm_quarantines = 0
    for d in range(warmup_days):
        f = feeder_of(d)
        f.has_meter = meter
        _, run = replay.run_guarded(replay.Day(f), guard, day_index=d, t0=T0, counters=counters)
        warm_quarantines += len(run.quarantined)
    state = guard.state()
    f = feeder_of(warmup_days)
    f.has_meter = meter
    day = replay.Day(f)
    as_built = replay.run_as_built(day)

    def fresh() -> Guard:
        g = Guard(guard_config)
        g.restore(state)
        return g

    honest, honest_run = replay.run_guarded(day, fresh(), day_index=warmup_days, t0=T0, counters=dict(counters))
    liar = replay.Liar(pick_liar(day), strategy, amps)
    lying, lying_run = replay.run_guarded(
        day, fresh(), liar=liar, day_index=warmup_days, t0=T0, counters=dict(counters)
    )
    alone, alone_run = replay.run_guarded(
        day, fresh(), liar=liar, day_index=warmup_days, t0=T0, counters=dict(counters), guarded=False
    )
    q = lying_run.quarantined.get(liar.house)
    return {
        "feeder": f.name,
        "meter": meter,
        "strategy": strategy,
        "liar": liar.house,
        "cuf_as_built": as_built.summary()["cuf_mean"],
        "cuf_honest": honest.summary()["cuf_mean"],
        "cuf_liar_guarded": lying.summary()["cuf_mean"],
        "cuf_liar_alone": alone.summary()["cuf_mean"],
        "moves_honest": len(honest.moves),
        "moves_liar_guarded": len(lying.moves),
        "moves_liar_alone": len(alone.moves),
        "attributed_to_liar": lying_run.attributed.get(liar.house, 0),
        "resting_on_lie": len(lying_run.resting_on_lie),
        "resting_on_lie_alone": len(alone_run.resting_on_lie),
        "vetoed": lying_run.vetoed,
        "worse_honest": worsening_moves(honest),
        "worse_liar_guarded": worsening_moves(lying),
        "worse_liar_alone": worsening_moves(alone),
        "quarantined_min": None if q is None else q[0],
        "quarantine_reason": None if q is None else codes.QUARANTINE_REASONS[q[1]],
        "others_quarantined": sorted(h for h in lying_run.quarantined if h != liar.house),
        "honest_quarantined": sorted(honest_run.quarantined),
        "warmup_quarantines": warm_quarantines,
        "influence_moves": guard.config.influence_moves,
        "seconds": time.perf_counter() - started,
    }


def misses(row: dict[str, Any], within_min: int) -> list[str]:
    """The targets a row misses (module docstring)."""
    out = []
    if row["honest_quarantined"]:
        out.append("honest nodes quarantined: %s" % row["honest_quarantined"])
    late = row["quarantined_min"] is None or row["quarantined_min"] > within_min
    if not row["meter"]:
        if row["cuf_liar_guarded"] > row["cuf_as_built"] + 1e-9:
            out.append("CUF with the liar %.3f above as built %.3f" % (row["cuf_liar_guarded"], row["cuf_as_built"]))
        if row["attributed_to_liar"] > row["influence_moves"]:
            out.append(
                "%d moves attributed to the liar, bound %d" % (row["attributed_to_liar"], row["influence_moves"])
            )
        if row["strategy"] == "inflate" and late:
            out.append("liar not quarantined within %d min" % within_min)
    else:
        if row["resting_on_lie"]:
            out.append("%d moves rest on the lie" % row["resting_on_lie"])
        if late:
            out.append("liar not quarantined within %d min" % within_min)
    return out


def _fmt_min(m: int | None) -> str:
    return "-" if m is None else "%02d:%02d" % divmod(m, 60)


def print_table(rows: list[dict[str, Any]], within_min: int) -> None:
    head = (
        "feeder",
        "meter",
        "lie",
        "liar",
        "CUF built",
        "honest",
        "liar+guard",
        "liar alone",
        "moves h/g/a",
        "attributed",
        "on the lie g/a",
        "worse h/g/a",
        "quarantined",
        "honest FP",
        "target",
    )
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        miss = misses(r, within_min)
        print(
            " | ".join(
                (
                    r["feeder"],
                    "yes" if r["meter"] else "no",
                    r["strategy"],
                    str(r["liar"]),
                    "%.3f" % r["cuf_as_built"],
                    "%.3f" % r["cuf_honest"],
                    "%.3f" % r["cuf_liar_guarded"],
                    "%.3f" % r["cuf_liar_alone"],
                    "%d/%d/%d" % (r["moves_honest"], r["moves_liar_guarded"], r["moves_liar_alone"]),
                    "%d (bound %d)" % (r["attributed_to_liar"], r["influence_moves"]),
                    "%d/%d" % (r["resting_on_lie"], r["resting_on_lie_alone"]),
                    "%d/%d/%d" % (r["worse_honest"], r["worse_liar_guarded"], r["worse_liar_alone"]),
                    "%s %s" % (_fmt_min(r["quarantined_min"]), r["quarantine_reason"] or ""),
                    str(len(r["honest_quarantined"])),
                    "met" if not miss else "MISSED: " + "; ".join(miss),
                )
            )
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--houses", type=int, default=55, help="houses of the generated street (default 55)")
    p.add_argument("--seeds", default="1,2,3", help="street seeds, comma-separated (default 1,2,3)")
    p.add_argument("--warmup-days", type=int, default=3, help="honest days the guard learns from first (default 3)")
    p.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="liar strategies: inflate, envelope (default both)"
    )
    p.add_argument("--amps", type=float, default=30.0, help="what an inflating liar adds, A (default 30)")
    p.add_argument("--meter", choices=("both", "no", "yes"), default="both", help="transformer meter (default both)")
    p.add_argument("--ieee", metavar="DIR", help="also the IEEE European LV feeder folder (its one day, repeated)")
    p.add_argument(
        "--quarantine-within-min",
        type=int,
        default=720,
        help="the stated time to quarantine, minutes after the lie starts (default 720)",
    )
    p.add_argument("--quick", action="store_true", help="one seed, one warm-up day, inflate only")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def main(args: argparse.Namespace) -> int:
    from phasekit.feeder import format as feeder_format
    from phasekit.feeder.generate import generate

    logging.getLogger("phasegate").setLevel(logging.ERROR)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    strategies = [s for s in args.strategies.split(",") if s]
    warmup = args.warmup_days
    if args.quick:
        seeds, strategies, warmup = seeds[:1], ["inflate"], min(warmup, 1)
    meters = {"both": (False, True), "no": (False,), "yes": (True,)}[args.meter]

    def street(seed: int) -> Callable[[int], Any]:
        return lambda d: generate(args.houses, seed, day=d)

    def ieee(d: int) -> Any:
        return feeder_format.load(args.ieee)  # one day: the warm-up days repeat it

    streets: list[tuple[str, Callable[[int], Any]]] = [("street-%d" % s, street(s)) for s in seeds]
    if args.ieee:
        streets.append(("ieee-eulv", ieee))
    rows = []
    for name, feeder_of in streets:
        for meter in meters:
            for strategy in strategies:
                row = experiment(feeder_of, warmup, strategy, args.amps, meter)
                row["feeder"] = name
                rows.append(row)
                print(
                    "%s meter=%s %s: %.0f s" % (name, "yes" if meter else "no", strategy, row["seconds"]),
                    file=sys.stderr,
                )
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, args.quarantine_within_min)
    return 1 if any(misses(r, args.quarantine_within_min) for r in rows) else 0
