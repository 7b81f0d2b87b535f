"""``phasekit bench balance-suite|uplink|bus|node|relay|lora|gateway``: the benchmark scripts of bench/, from the phasekit command.

Each sub-verb runs one script exactly as ``python bench/SCRIPT.py ARGS``
would (``runpy``, as ``__main__``), with every argument after the
benchmark's name passed on unchanged, so ``phasekit bench bus --help``
prints the script's own options and its exit status is the verb's. The
scripts stay the one place their options are defined.

Public: ``SCRIPTS``, ``register``.
"""

import argparse
import runpy
import sys

from phasekit.micropython import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"

# (sub-verb, script in bench/, one-line summary)
SCRIPTS = (
    ("balance-suite", "balance_suite.py", "balancing over a suite of feeders: IEEE, real-shape streets, held-out generated"),
    ("uplink", "uplink.py", "MQTT/TLS uplink: bytes a month on a SIM, drain rate after an outage"),
    ("bus", "bus.py", "RS-485 polling round over 100 nodes at 115200 and 9600 baud"),
    ("node", "node.py", "node firmware on the MicroPython unix port: heap, growth, poll latency, .mpy size"),
    ("relay", "relay_safety.py", "relay safety: randomized sequences with power cuts, checked by an oracle"),
    ("lora", "lora.py", "LoRa at 100 nodes a minute: polled schedule vs class-A receive windows"),
    ("gateway", "gateway.py", "gateway at 100 nodes: nothing lost across SIGKILLs and a broker outage; CPU"),
)


def register(verbs):
    for name, script, summary in SCRIPTS:
        # prefix_chars="+": this parser treats "--nodes", "-n" and "--help" as plain
        # arguments, so they all reach the script's own argparse untouched.
        p = verbs.add_parser(name, help=summary, description="%s (bench/%s; its options: --help)" % (summary, script),
                             add_help=False, prefix_chars="+")
        p.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
        p.set_defaults(func=_run, bench_script=script, bench_name=name)


def _run(args):
    path = BENCH_DIR / args.bench_script
    if not path.is_file():
        from phasekit.cli import UsageError

        raise UsageError("%s not found beside the phasekit tools: run from a checkout" % path)
    saved = sys.argv
    sys.argv = ["phasekit bench %s" % args.bench_name] + list(args.args)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        return _status(e.code)
    finally:
        sys.argv = saved
    return 0


def _status(code):
    # sys.exit semantics: None is success, an int is the status, anything else is printed and means 1.
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
