"""``phasekit gateway``: run or check a transformer Pi (or a LoRa gateway Pi) from its TOML file.

``run`` starts everything the file describes (phasegate.app) and runs until
SIGTERM or Ctrl-C; ``check`` validates the file, the site key and the meter
profile without touching a port, and prints what ``run`` would start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from phasekit.commands import Subparsers

if TYPE_CHECKING:
    from phaseconf import Settings

EXAMPLES = """examples:
  phasekit gateway check /etc/phasekit/gateway.toml
  phasekit gateway run /etc/phasekit/gateway.toml --log-level info
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gateway",
        help="run or check a transformer / LoRa gateway Pi",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="gateway_verb", metavar="ACTION")
    verbs.required = True
    run = verbs.add_parser(
        "run",
        help="run the gateway until stopped",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="the gateway TOML file (see gateway/deploy/gateway.example.toml)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=_run)
    check = verbs.add_parser("check", help="validate the config, key and meter profile; print the plan")
    check.add_argument("config")
    check.set_defaults(func=_check)


def _load(path: str) -> Settings:
    from phasegate import config
    from phasekit.errors import UsageError

    try:
        return config.load(path)
    except config.ConfigError as e:
        raise UsageError(str(e)) from None


def _run(args: argparse.Namespace) -> int:
    from phasegate import app

    _load(args.config)  # a bad file is a usage error (exit 2), before any port is opened
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return app.run(args.config)


def _check(args: argparse.Namespace) -> int:
    from phasegate import registry
    from phasegate.app import meter_profile
    from phasegate.meter import MeterProfileError
    from phasekit.errors import UsageError

    cfg = _load(args.config)
    site = cfg.table("site")
    if site["key_file"]:
        try:
            registry.load_site_key(str(cfg.resolve(site["key_file"])))
        except registry.RegistryError as e:
            raise UsageError("%s: [site] key_file: %s" % (args.config, e)) from None
    if cfg.has("uplink"):
        up = cfg.table("uplink")
        for key in ("ca", "cert", "key"):
            if up[key] and not cfg.resolve(up[key]).is_file():
                raise UsageError("%s: [uplink] %s: %s does not exist" % (args.config, key, cfg.resolve(up[key])))
    lines = ["site %s, transformer %s" % (site["id"], site["transformer"])]
    if cfg.has("bus"):
        b = cfg.table("bus")
        lines.append(
            "RS-485 bus %s at %d baud: %d nodes, poll every %s s"
            % (b["port"], b["baud"], len(b["nodes"]), b["poll_period_s"])
        )
    if cfg.has("lora"):
        t = cfg.table("lora")
        lines.append("LoRa (%s) SF%d at %d Hz: %d nodes" % (t["driver"], t["sf"], t["freq_hz"], len(t["nodes"])))
    if cfg.has("meter"):
        m = cfg.table("meter")
        try:
            profile = meter_profile(cfg)
        except (MeterProfileError, OSError) as e:
            raise UsageError("%s: [meter] profile: %s" % (args.config, e)) from None
        lines.append("transformer meter %s (profile %s) over %s" % (profile.name, m["profile"], m["transport"]))
    else:
        lines.append("no transformer meter: balancing on node readings only")
    if cfg.has("uplink"):
        u = cfg.table("uplink")
        lines.append("uplink mqtt%s://%s:%d" % ("s" if u["tls"] else "", u["host"], u["port"]))
    else:
        lines.append("no uplink: autonomous, buffering to %s" % cfg.resolve(cfg.table("store")["path"]))
    if cfg.has("lora_gateway"):
        lines.append("LoRa gateway mode: forwarding for %d routes" % len(cfg.table("lora_gateway")["routes"]))
    print("%s: OK" % args.config)
    for line in lines:
        print("  " + line)
    return 0
