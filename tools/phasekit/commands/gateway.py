"""``phasekit gateway``: run or check a transformer Pi (or a LoRa gateway Pi) from its TOML file.

``run`` starts everything the file describes (phasegate.app) and runs until
SIGTERM or Ctrl-C; ``check`` validates the file, the site key and the meter
profile without touching a port, and prints what ``run`` would start;
``dead-letters`` lists the messages from outside the Pi could not handle
(kept in its buffer file, bounded); ``operator-reset`` re-initialises the
operator gate's replay state under a new operator key generation, after it
was lost or damaged (the gate refuses every operator command until then).
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
  phasekit gateway dead-letters /etc/phasekit/gateway.toml --limit 20
  phasekit gateway operator-reset /etc/phasekit/gateway.toml --generation 1
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
    dead = verbs.add_parser("dead-letters", help="list messages from outside that the Pi could not handle")
    dead.add_argument("config")
    dead.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    dead.set_defaults(func=_dead_letters)
    reset = verbs.add_parser(
        "operator-reset",
        help="re-initialise the operator replay state under a new operator key generation",
        description="Run with the gateway stopped, then hand every operator a key file of the new generation "
        "(phasekit operator key --generation N). Refused if the state is readable at that generation or above.",
    )
    reset.add_argument("config")
    reset.add_argument("--generation", type=int, required=True, help="the new operator key generation, 0..65535")
    reset.set_defaults(func=_operator_reset)


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


def _dead_letters(args: argparse.Namespace) -> int:
    import sqlite3
    import time

    from phasegate.app import store_path
    from phasekit.errors import UsageError

    path = store_path(_load(args.config))
    if not path.exists():
        raise UsageError("%s: no buffer file yet (%s)" % (args.config, path))
    # Read-only: the gateway may be running (WAL lets readers in).
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute(
            "SELECT id, t_s, source, error, size, payload, suppressed FROM dead_letter ORDER BY id DESC LIMIT ?",
            (max(0, args.limit),),
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise UsageError("%s: cannot read dead letters: %s" % (path, e)) from None
    finally:
        db.close()
    print("%d dead letters (newest first) in %s" % (len(rows), path))
    for rid, t_s, source, error, size, payload, suppressed in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_s))
        more = " (+%d more counted)" % suppressed if suppressed else ""
        print("#%d %s %s, %d bytes%s: %s" % (rid, when, source, size, more, error))
        if payload:
            print("    %s%s" % (bytes(payload[:48]).hex(), "..." if len(payload) > 48 else ""))
    return 0


def _operator_reset(args: argparse.Namespace) -> int:
    from phasegate.app import operator_state_path
    from phasegate.operator import StateError, reset_state
    from phasekit.errors import UsageError

    path = operator_state_path(_load(args.config))
    try:
        old = reset_state(path, args.generation)
    except (StateError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(
        "operator state %s re-initialised at generation %d (was %s); give every operator a new key file:"
        % (path, args.generation, "missing or damaged" if old is None else "generation %d" % old)
    )
    print("  phasekit operator key --site-key SITE_KEY --operator ID --generation %d --out ID.key" % args.generation)
    return 0
