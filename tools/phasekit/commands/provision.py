"""``phasekit provision``: make one node's config and key, ready for ``phasekit deploy --config``.

What is written and why the site key never leaves: ``phasekit.node.provision``.
"""

from __future__ import annotations

import argparse
import os

from phasekit.commands import Subparsers
from phasekit.errors import UsageError
from phasekit.node import deploy, provision

EXAMPLES = """examples:
  phasekit provision --new-site-key secrets/site.key
  phasekit provision --site-key secrets/site.key --address 42 --node-id feeder7-n042 \\
      --board esp32-devkitc-max485 --home-phase B --limit overcurrent_ma=32000 \\
      --release-key secrets/release.key.pub --out nodes/n042
  phasekit deploy --config nodes/n042 --port /dev/ttyUSB0
"""


def _usage(msg: str) -> UsageError:
    return UsageError(msg)


def _pairs(items: list[str] | None, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _usage("--%s %r: expected NAME=VALUE" % (what, item))
        try:
            out[name] = int(value, 0)
        except ValueError:
            raise _usage("--%s %s: %r is not an integer" % (what, name, value)) from None
    return out


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "provision",
        help="make a node's config.json and node.key from the site key",
        description=provision.__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--new-site-key", metavar="FILE", help="only create a new site key in FILE (mode 0600) and stop")
    p.add_argument("--site-key", metavar="FILE", help="the site key file (64 hex digits), as the transformer Pi's")
    p.add_argument("--address", type=int, help="node link address 1..247 (the bus/LoRa address)")
    p.add_argument("--node-id", help="node name, 1..32 of A-Z a-z 0-9 . _ -")
    p.add_argument("--board", help="board name (boards/NAME.json) or path")
    p.add_argument("--home-phase", choices=("A", "B", "C"), help="the phase the house is wired to")
    p.add_argument("--generation", type=int, default=0, help="key generation 0..65535 (+1 for a replaced node)")
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="node limit, e.g. overcurrent_ma=32000 (repeatable; see phasenode.settings)",
    )
    p.add_argument(
        "--relay",
        action="append",
        metavar="NAME=VALUE",
        help="relay rule, e.g. dead_time_ms=3000 (repeatable; see phasenode.relay)",
    )
    p.add_argument(
        "--release-key",
        metavar="KEY.pub|HEX",
        help="the release public key (phasekit release key) the node checks firmware updates against; "
        "without it the node refuses every update",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default nodes/NODE_ID)")
    p.add_argument("--force", action="store_true", help="replace an existing config.json/node.key in --out")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.new_site_key:
        provision.new_site_key(args.new_site_key)
        print("provision: new site key in %s (mode 0600): back it up offline, never commit it" % args.new_site_key)
        return 0
    missing = [
        o
        for o, v in (
            ("--site-key", args.site_key),
            ("--address", args.address),
            ("--node-id", args.node_id),
            ("--board", args.board),
            ("--home-phase", args.home_phase),
        )
        if v is None
    ]
    if missing:
        raise _usage("provision needs %s" % ", ".join(missing))
    _path, board = deploy.resolve_board(args.board)
    site_key = provision.read_site_key(args.site_key)
    release_key = None
    if args.release_key:
        from phasekit import release

        release_key = release.read_public_key(args.release_key)
    out = args.out or os.path.join("nodes", args.node_id)
    cfg = provision.provision(
        site_key,
        out,
        args.node_id,
        args.address,
        board.name,
        args.home_phase,
        args.generation,
        _pairs(args.limit, "limit"),
        _pairs(args.relay, "relay"),
        args.force,
        release_key,
    )
    print(
        "provision: %s, address %d, key generation %d, board %s, home phase %s -> %s/ (config.json, %s)"
        % (cfg.node_id, cfg.address, cfg.key_generation, board.name, args.home_phase, out, provision.KEY_FILE)
    )
    if release_key is None:
        print("provision: no --release-key: this node will refuse firmware updates over its link")
    print("provision: next: phasekit deploy --config %s --port PORT" % out)
    return 0
