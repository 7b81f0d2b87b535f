"""Decision time of the balancer per round, on CPython and on the MicroPython unix port.

For each size (55, 100, 250 nodes) a generated feeder's evening (the busiest
hours, when plans are searched hardest) is written as a stream of rounds, and
``phasekit/balance/timing_worker.py`` replays it under each interpreter in a
subprocess, timing ``plan()`` and the whole round (all readings + plan). The
figures are medians and maxima over the timed rounds, in milliseconds, from
the fastest of ``REPEATS`` runs (by the median of ``plan()``): on a shared
machine a whole run can land slow (one 250-node CPython run here took 1.25 ms
a round against 0.84 in the runs before and after), and noise only ever adds
time, so the fastest run is the one closest to the code's own cost (as
``timeit`` takes the minimum of its repeats).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

import phasecore
from phasecore import balancer as bal
from phasekit.feeder.generate import generate
from phasekit.testing import micropython

SCRIPT = Path(__file__).resolve().parent / "timing_worker.py"
SHARED = Path(phasecore.__file__).resolve().parent.parent  # the folder that holds phasecore/
SIZES = (55, 100, 250)
START_MINUTE = 17 * 60
WARM = 20
TIMED = 60
REPEATS = 3

# One size's figures: plan_median_ms, plan_max_ms, round_median_ms, round_max_ms, rounds, repeats.
Summary = dict[str, float]
# An interpreter's figures by node count, or {"error": why it was not measured}.
PerSize = dict[int, Summary] | dict[str, str]


def write_stream(
    n_nodes: int, path: str | os.PathLike[str], config: bal.Config | None = None, seed: int = 11, kind: int = 0
) -> None:
    """Write the timing stream for a feeder of ``n_nodes`` houses, all with nodes of switch ``kind``."""
    f = generate(n_nodes, seed=seed, unmetered_share=0.0)
    cfg = config or bal.Config()
    span = slice(START_MINUTE, START_MINUTE + WARM + TIMED)
    share = np.where(f.phase == 3, 1.0 / 3.0, 1.0)[:, None]
    current = (f.load_kw * 1000.0 / (f.voltage_v * f.pf) * share)[:, span]
    pf = f.pf[:, span]
    ip, iq = f.components()
    meters = np.zeros((6, current.shape[1]))
    for p in range(3):
        m = (f.phase == p) | (f.phase == 3)
        meters[2 * p] = ip[m][:, span].sum(axis=0)
        meters[2 * p + 1] = iq[m][:, span].sum(axis=0)
    # Start every node warmed up: the stream begins warmup_s before the timed part.
    spec = {
        "config": cfg.as_dict(),
        "nodes": [[k, int(f.phase[k]), bool(f.switchable[k]), kind] for k in range(n_nodes)],
        "warm": WARM,
        "start_minute": START_MINUTE,
        "rounds": [
            [
                [round(float(x), 3) for x in current[:, t]],
                [round(float(x), 3) for x in pf[:, t]],
                [round(float(x), 3) for x in meters[:, t]],
            ]
            for t in range(current.shape[1])
        ],
    }
    Path(path).write_text(json.dumps(spec))


def _fastest(runs: list[dict[str, Any]]) -> Summary:
    """The summary of the run with the lowest median ``plan()`` time."""
    best = min((_summary(r) for r in runs), key=lambda s: s["plan_median_ms"])
    best["repeats"] = len(runs)
    return best


def _summary(raw: dict[str, Any]) -> Summary:
    # raw: the worker's JSON line (plan_us, round_us: sorted times in microseconds).
    plan = raw["plan_us"]
    rnd = raw["round_us"]
    return {
        "plan_median_ms": statistics.median(plan) / 1000.0,
        "plan_max_ms": max(plan) / 1000.0,
        "round_median_ms": statistics.median(rnd) / 1000.0,
        "round_max_ms": max(rnd) / 1000.0,
        "rounds": len(plan),
    }


def measure(
    sizes: Iterable[int] = SIZES,
    config: bal.Config | None = None,
    use_micropython: bool = True,
    progress: Callable[[str], object] | None = None,
    kind: int = 0,
) -> dict[str, PerSize]:
    """{"cpython": {n: summary}, "micropython": {n: summary} or {"error": why}}; nodes of switch ``kind``."""
    cpython: dict[int, Summary] = {}
    mpy: dict[int, Summary] = {}
    mpy_error: str | None = None
    # The balancer's config may ask for a warm-up longer than the stream gives; time with warm-up 0
    # so that every timed round searches its candidates, the worst case.
    cfg = bal.Config(**dict((config or bal.Config()).as_dict(), warmup_s=0))
    with tempfile.TemporaryDirectory(prefix="phasekit-timing-") as tmp:
        for n in sizes:
            path = Path(tmp) / ("stream-%d.json" % n)
            write_stream(n, path, cfg, kind=kind)
            if progress:
                progress("decision time: %d nodes on CPython" % n)
            runs: list[dict[str, Any]] = []
            for _ in range(REPEATS):
                proc = subprocess.run(
                    [sys.executable, str(SCRIPT), str(path)],
                    capture_output=True,
                    text=True,
                    env={"PYTHONPATH": str(SHARED), "PATH": "/usr/bin:/bin"},
                    timeout=300,
                )
                if proc.returncode != 0:
                    raise RuntimeError("timing under CPython failed:\n" + proc.stderr)
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            cpython[n] = _fastest(runs)
            if not use_micropython:
                continue
            if progress:
                progress("decision time: %d nodes on MicroPython" % n)
            runs = []
            try:
                for _ in range(REPEATS):
                    proc = micropython.run([SCRIPT, path], heapsize="32M", timeout=600)
                    if proc.returncode != 0:
                        raise RuntimeError("timing under MicroPython failed:\n" + proc.stdout + proc.stderr)
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except micropython.MicroPythonNotFound as e:
                mpy_error = str(e)
                use_micropython = False
                continue
            mpy[n] = _fastest(runs)
    out: dict[str, PerSize] = {"cpython": cpython, "micropython": mpy if mpy_error is None else {"error": mpy_error}}
    if not use_micropython and not out["micropython"]:
        out["micropython"] = {"error": "not measured"}
    return out
