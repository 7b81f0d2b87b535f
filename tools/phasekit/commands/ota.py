"""``phasekit ota push|status|cancel``: firmware roll-outs to a transformer Pi's nodes (docs/ota.md).

``push`` checks the bundle as a node would (with ``--release-key``, the
signature too), refuses nodes on LoRa, and leaves the roll-out for the
gateway (``phasegate.ota``) in its OTA folder beside the store; ``status``
reads the roll-out's state file there; ``cancel`` asks the gateway to stop.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from phasekit.commands import Subparsers
from phasekit.errors import UsageError

EXAMPLES = """examples:
  phasekit ota push dist/phasenode-0.2.0.pkb --config /etc/phasekit/gateway.toml --canary 2 --wave 10 \\
      --release-key secrets/release.key.pub
  phasekit ota status --config /etc/phasekit/gateway.toml
  phasekit ota cancel --config /etc/phasekit/gateway.toml
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "ota",
        help="firmware roll-outs to a Pi's nodes: push a signed bundle, follow it, cancel it",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="ota_verb", metavar="VERB")
    verbs.required = True
    push = verbs.add_parser("push", help="start a roll-out of BUNDLE (canaries first, then waves)")
    push.add_argument("bundle", metavar="BUNDLE", help="a signed bundle (phasekit release build + sign)")
    push.add_argument("--config", required=True, metavar="TOML", help="the gateway's configuration file")
    push.add_argument("--canary", type=int, default=1, help="nodes updated first, alone (default 1)")
    push.add_argument("--wave", type=int, default=10, help="nodes per wave after the canaries (default 10)")
    push.add_argument("--nodes", help="comma-separated node addresses (default: every [bus] node)")
    push.add_argument(
        "--chunks-per-gap",
        type=int,
        default=160,
        help="chunks sent in one gap between polling rounds, at most (default 160: about 5 s at 115200 baud)",
    )
    push.add_argument("--health-s", type=float, default=1800.0, help="a node must confirm the new version within")
    push.add_argument("--release-key", metavar="KEY.pub|HEX", help="check the signature before pushing")
    push.add_argument("--replace", action="store_true", help="replace a roll-out that is still running")
    push.set_defaults(func=_push)
    st = verbs.add_parser("status", help="each node's version, progress and last error")
    st.add_argument("--config", required=True, metavar="TOML")
    st.add_argument("--json", action="store_true", help="the state file as it is")
    st.set_defaults(func=_status)
    c = verbs.add_parser("cancel", help="stop the running roll-out (activated nodes finish their trial)")
    c.add_argument("--config", required=True, metavar="TOML")
    c.set_defaults(func=_cancel)


def _folder(config: str) -> tuple[Path, object]:
    from phasegate import config as gconfig
    from phasegate.errors import ConfigError

    try:
        cfg = gconfig.load(config)
    except (ConfigError, OSError) as e:
        raise UsageError(str(e)) from None
    return Path(cfg.resolve(cfg.table("store")["path"])).parent / "ota", cfg


def _push(args: argparse.Namespace) -> int:
    from phasegate import ota
    from phasekit import release

    folder, cfg = _folder(args.config)
    bus_nodes = list(cfg.table("bus")["nodes"]) if cfg.has("bus") else []  # type: ignore[attr-defined]
    lora_nodes = list(cfg.table("lora")["nodes"]) if cfg.has("lora") else []  # type: ignore[attr-defined]
    if args.nodes:
        try:
            nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
        except ValueError:
            raise UsageError("--nodes %r: expected addresses like 3,7,12" % args.nodes) from None
    else:
        nodes = bus_nodes
    key = release.read_public_key(args.release_key) if args.release_key else None
    try:
        checked = release.check(args.bundle, key)
    except release.ReleaseError as e:
        print("phasekit ota: %s" % e, file=sys.stderr)
        return 1
    if not checked.ok:
        print("phasekit ota: %s refused: %s" % (args.bundle, checked.problem), file=sys.stderr)
        return 1
    if not checked.head.signature:
        print("phasekit ota: %s is not signed (phasekit release sign): every node would refuse it" % args.bundle)
        return 1
    on_lora = [a for a in nodes if a in lora_nodes]
    if on_lora:
        print(
            "phasekit ota: nodes %s are on LoRa: %s"
            % (", ".join(map(str, on_lora)), ota.lora_refusal(checked.head.total)),
            file=sys.stderr,
        )
        return 1
    unknown = [a for a in nodes if a not in bus_nodes]
    if unknown or not nodes:
        raise UsageError("nodes %s are not on this Pi's [bus]" % (unknown or "(none)"))
    try:
        plan = ota.request_push(
            folder,
            args.bundle,
            nodes,
            replace=args.replace,
            canary=args.canary,
            wave=args.wave,
            chunks_per_gap=args.chunks_per_gap,
            health_s=args.health_s,
        )
    except ota.OtaError as e:
        print("phasekit ota: %s" % e, file=sys.stderr)
        return 1
    print(
        "ota: roll-out of %s (%d bytes, id %08x%s) to %d nodes, %d canaries first, waves of %d; "
        "the gateway takes it up within seconds (phasekit ota status --config %s)"
        % (
            plan["version"],
            plan["size"],
            plan["id"],
            ", signature checked" if key else "",
            len(nodes),
            min(args.canary, len(nodes)),
            args.wave,
            args.config,
        )
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    import json

    from phasegate import ota

    folder, _cfg = _folder(args.config)
    try:
        plan = ota.read_plan(folder)
    except ota.OtaError as e:
        print("phasekit ota: %s" % e, file=sys.stderr)
        return 1
    pending = (folder / ota.REQUEST_FILE).exists()
    if plan is None:
        print("ota: no roll-out yet%s" % (" (one is waiting for the gateway to take it up)" if pending else ""))
        return 0
    if args.json:
        print(json.dumps(plan, indent=1, sort_keys=True))
        return 0
    total = max(1, (plan["size"] + plan["chunk"] - 1) // plan["chunk"])
    print(
        "roll-out of %s (id %08x, %d bytes): %s%s; started %s"
        % (
            plan["version"],
            plan["id"],
            plan["size"],
            plan["state"],
            " (%s)" % plan["reason"] if plan.get("reason") else "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(plan["created"])),
        )
    )
    if pending:
        print("a new request waits for the gateway to take it up")
    print("%5s  %-10s  %-18s  %8s  %s" % ("node", "state", "firmware", "progress", "last error"))
    for addr in plan["order"]:
        n = plan["nodes"][str(addr)]
        progress = "%d%%" % min(100, 100 * n.get("next", 0) // total)
        if n["state"] in ("ready", "activating", "done"):
            progress = "100%"
        print("%5d  %-10s  %-18s  %8s  %s" % (addr, n["state"], n.get("fw") or "?", progress, n.get("error") or ""))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from phasegate import ota

    folder, _cfg = _folder(args.config)
    ota.request_cancel(folder)
    print("ota: cancel requested; the gateway stops the roll-out within seconds")
    return 0
