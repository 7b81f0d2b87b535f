"""Time the balancer's rounds; the same file runs under CPython and MicroPython.

    micropython timing_worker.py STREAM.json      (MICROPYPATH must hold shared/)
    python      timing_worker.py STREAM.json      (PYTHONPATH must hold shared/)

STREAM.json (written by ``phasekit.balance.timing``) holds the nodes, the
balancer config and a stream of rounds (readings of every node, the meter).
The first ``warm`` rounds only warm the estimates up; the rest are timed. For
each timed round it measures ``plan()`` alone and the whole round (every
node's ``reading()`` plus ``plan()``), and prints one JSON line with the
sorted times in microseconds and the interpreter's name. Using one file on
both interpreters keeps the two measurements comparable.
"""

import json
import sys

try:
    from time import ticks_diff, ticks_us  # type: ignore[attr-defined]  # MicroPython's time has them
except ImportError:  # CPython
    from time import perf_counter_ns

    def ticks_us() -> int:
        return perf_counter_ns() // 1000

    def ticks_diff(a: int, b: int) -> int:
        return a - b


from phasecore import balancer as bal


# Annotations here stay to names that exist on MicroPython (it parses them and never evaluates them).
def main(path: str) -> None:
    with open(path) as f:
        spec = json.load(f)
    cfg = bal.Config(**spec["config"])
    nodes = spec["nodes"]
    b = bal.Balancer(cfg, capacity=len(nodes))
    for node in nodes:
        # [id, phase, switchable] or [id, phase, switchable, switch kind]
        b.add_node(node[0], node[1], node[2], node[3] if len(node) > 3 else 0)
    ids = [n[0] for n in nodes]
    count = len(ids)
    plan_us = []
    round_us = []
    moves = 0
    warm = spec["warm"]
    minute = spec["start_minute"]
    for k, (currents, pfs, meter) in enumerate(spec["rounds"]):
        now = (minute + k) * 60
        t0 = ticks_us()
        for j in range(count):
            b.reading(ids[j], now, currents[j], pfs[j])
        t1 = ticks_us()
        plan = b.plan(now, meter)
        t2 = ticks_us()
        moves += len(plan)
        if k >= warm:
            plan_us.append(ticks_diff(t2, t1))
            round_us.append(ticks_diff(t2, t0))
    plan_us.sort()
    round_us.sort()
    impl = sys.implementation.name
    print(json.dumps({"interpreter": impl, "nodes": count, "plan_us": plan_us, "round_us": round_us, "moves": moves}))


if __name__ == "__main__":
    main(sys.argv[1])
