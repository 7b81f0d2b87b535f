"""Relay safety under fire: randomized command / lock-out / clock / power-cut sequences, checked.

Issue 3's target: zero unsafe relay states in 100,000 randomized sequences.
The sequences and the independent oracle that checks them after every step
are ``phasekit.testing.relay_oracle`` (its docstring lists every rule
checked). Prints: sequences, steps, moves executed, refusals by reason,
power cuts, soft resets, unsafe states found (must be 0), time taken. Exit
status 1 if any check failed (the first few failures are printed with their
seed).
"""

import argparse
import os
import shutil
import tempfile

EXAMPLE = """examples:
  phasekit bench relay -n 100000          the issue's run (about 10 minutes)
  phasekit bench relay -n 2000 --seed 7   a quick look
  phasekit bench relay -n 100000 --kind solid-state   the solid-state phase selector's run
"""


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench relay``."""
    ap.add_argument("-n", "--sequences", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40, help="actions per sequence")
    ap.add_argument("--root", help="folder for the state files (default: a temporary one in /dev/shm)")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ap.add_argument(
        "--kind",
        choices=("mechanical", "solid-state"),
        default="mechanical",
        help="the relay controller: mechanical relays (default) or a solid-state phase selector",
    )


def main(args: argparse.Namespace) -> int:
    """Run the sequences and print the totals; 1 if any unsafe state was found."""
    from phasecore import codes
    from phasekit.testing.relay_oracle import run

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = args.root or tempfile.mkdtemp(prefix="phasekit-relay-bench-", dir=base)
    try:
        totals, refusals, failures = run(args.sequences, args.seed, args.steps, root, not args.quiet, kind=args.kind)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    total = totals["sequences"] + totals["unsafe"]
    rows = [
        ("sequences", "%d (seed %d, %d actions each)" % (total, args.seed, args.steps)),
        ("actions run", "%d" % totals["steps"]),
        ("move attempts (accepted commands)", "%d" % totals["attempts"]),
        ("moves executed (house changed phase)", "%d" % totals["moves"]),
        ("moves aborted (welded contact sensed)", "%d" % totals["aborts"]),
        ("power cuts (incl. mid-move, mid-save)", "%d" % totals["cuts"]),
        ("soft resets", "%d" % totals["soft"]),
        ("state files corrupted", "%d" % totals["lost"]),
    ]
    for i, name in enumerate(codes.REASON_NAMES[: codes.RELAY_REASONS]):
        if i:
            rows.append(("refused: %s" % name, "%d" % refusals[i]))
    if args.kind == "solid-state":
        rows.append(("longest supply gap of a transfer", "%d ms" % totals["max_gap_ms"]))
    rows.append(("unsafe states found", "%d" % totals["unsafe"]))
    rows.append(("time taken", "%.1f s (%.0f sequences/s)" % (totals["seconds"], total / max(totals["seconds"], 1e-9))))
    w = max(len(r[0]) for r in rows)
    print("relay safety (%s): randomized command / lock-out / clock / power-cut sequences" % args.kind)
    for k, v in rows:
        print("  %-*s  %s" % (w, k, v))
    for f in failures:
        print("FAIL " + f)
    return 1 if totals["unsafe"] else 0
