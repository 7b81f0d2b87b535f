"""``phasekit bench NAME``: the benchmarks, each a module with ``add_arguments(parser)`` and ``main(args)``.

One table names them all. A benchmark prints its tables (progress on
stderr) and returns its exit status: 0, or 1 when a target it measures is
missed. Where a benchmark compares against a reference, the reference runs
in the same process, so ratios are not skewed by the machine's load.
"""

from __future__ import annotations

import argparse
import importlib

from phasekit.commands import Subparsers

# (name, module, one-line summary)
BENCHES = (
    ("core", "phasekit.bench.core", "core speed, bytes on the wire, .mpy size and heap (CPython and MicroPython)"),
    ("balance", "phasekit.balance.benchmark", "balancing a feeder day against baselines and oracles"),
    (
        "balance-suite",
        "phasekit.balance.suite",
        "balancing over a suite of feeders: IEEE, real-shape streets, held-out generated",
    ),
    (
        "node",
        "phasekit.bench.node",
        "node firmware on the MicroPython unix port: heap, growth, poll latency, .mpy size",
    ),
    ("relay", "phasekit.bench.relay", "relay safety: randomized sequences with power cuts, checked by an oracle"),
    ("bus", "phasekit.bench.bus", "RS-485 polling round over 100 nodes at 115200 and 9600 baud"),
    ("lora", "phasekit.bench.lora", "LoRa at 100 nodes a minute: polled schedule vs class-A receive windows"),
    ("uplink", "phasekit.bench.uplink", "MQTT/TLS uplink: bytes a month on a SIM, drain rate after an outage"),
    (
        "gateway-faults",
        "phasekit.bench.gateway_faults",
        "gateway at 100 nodes: nothing lost across SIGKILLs, a broker outage and line noise",
    ),
    ("gateway-cpu", "phasekit.bench.gateway_cpu", "gateway at 100 nodes: CPU and memory of the controller process"),
    (
        "lying-node",
        "phasekit.bench.lying_node",
        "one node reporting false currents all day: true unbalance, moves it causes, time to quarantine",
    ),
    (
        "pi-flood",
        "phasekit.bench.pi_flood",
        "gateway under 10,000 worst-kind messages per input: keeps serving, < 200 MB, nothing genuine lost",
    ),
    (
        "server-ingest",
        "phasekit.bench.server_ingest",
        "server ingest: records/s into PostgreSQL and SQLite (decode included) vs plain INSERT; the flood",
    ),
    (
        "server-storage",
        "phasekit.bench.server_storage",
        "server storage: bytes per reading raw and rolled up, 30 days of a 100-node transformer, query p99",
    ),
    (
        "ed25519",
        "phasekit.bench.ed25519",
        "release signature check on the node: Ed25519 verify time and heap, CPython and MicroPython, ESP32 estimate",
    ),
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its table", description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="bench", metavar="BENCH")
    verbs.required = True
    for name, module_name, summary in BENCHES:
        module = importlib.import_module(module_name)
        b = verbs.add_parser(
            name,
            help=summary,
            description=(module.__doc__ or "").split("\n\n")[0],
            epilog=getattr(module, "EXAMPLE", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(b)
        b.set_defaults(func=module.main)
