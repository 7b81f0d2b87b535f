"""``phasekit provision``: make one node's config and key, ready for ``phasekit deploy --config``.

Writes into ``--out`` (default ``nodes/NODE_ID``) the two files the firmware
reads at boot, in the format ``phasenode.settings`` documents and validated by
it: ``config.json`` (node id and link address, key generation, board, home
phase, limits, relay rules) and ``node.key`` (the node's 32-byte secret,
``phasecore.keys.node_secret(site_key, address, generation)``, HKDF-SHA256 of
the site key; docs/security.md). The site key is read from a file (64 hex
digits, the transformer Pi's format), used in memory and never printed or
written anywhere else; only the node's own secret leaves this command.

A replaced or wiped node gets ``--generation`` one higher than before: the
same (address, generation) with a fresh sequence counter would repeat AES-CCM
nonces (docs/security.md, "Key generations"). Existing files are not
overwritten without ``--force``.

``phasekit provision --new-site-key FILE`` makes a site key (CSPRNG, mode 0600).
"""

import os
import secrets
import sys
from pathlib import Path

KEY_FILE = "node.key"

EXAMPLES = """examples:
  phasekit provision --new-site-key secrets/site.key
  phasekit provision --site-key secrets/site.key --address 42 --node-id feeder7-n042 \\
      --board esp32-devkitc-max485 --home-phase B --limit overcurrent_ma=32000 --out nodes/n042
  phasekit deploy --config nodes/n042 --port /dev/ttyUSB0
"""


def _usage(msg):
    from phasekit.cli import UsageError

    return UsageError(msg)


def read_site_key(path):
    """The 32-byte site key from ``path``: 64 hex digits, whitespace ignored (as the Pi reads it)."""
    try:
        text = Path(path).read_text(encoding="ascii")
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise _usage("site key %s: cannot read (%s)" % (path, type(e).__name__)) from None
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise _usage("site key %s: not hex (expected 64 hex digits)" % path) from None
    if len(key) != 32:
        raise _usage("site key %s: %d bytes, expected 32" % (path, len(key)))
    if mode & 0o077:
        print("phasekit provision: warning: site key %s is readable by group or others (mode %o); chmod 600"
              % (path, mode & 0o777), file=sys.stderr)
    return key


def new_site_key(path):
    """Write a fresh site key (64 hex digits) to ``path`` with mode 0600; refuses to overwrite."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _usage("%s exists: a site key is never overwritten (every node of the site depends on it)"
                     % path) from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_bytes(32).hex() + "\n")


def _pairs(items, what):
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _usage("--%s %r: expected NAME=VALUE" % (what, item))
        try:
            out[name] = int(value, 0)
        except ValueError:
            raise _usage("--%s %s: %r is not an integer" % (what, name, value)) from None
    return out


def build_config(node_id, address, board_name, home_phase, generation=0, limits=None, relay=None):
    """The config.json object (not yet validated)."""
    cfg = {
        "format": 1,
        "node": {"id": node_id, "address": address},
        "key": {"file": KEY_FILE, "generation": generation},
        "board": board_name,
        "home_phase": home_phase,
    }
    if limits:
        cfg["limits"] = dict(limits)
    if relay:
        cfg["relay"] = dict(relay)
    return cfg


def provision(site_key, out_dir, node_id, address, board_name, home_phase, generation=0, limits=None, relay=None,
              force=False):
    """Validate, derive and write config.json + node.key into ``out_dir``; returns the NodeConfig."""
    from phasecore import keys
    from phasecore.errors import CryptoError
    from phasenode import persist, settings

    obj = build_config(node_id, address, board_name, home_phase, generation, limits, relay)
    out = Path(out_dir)
    try:
        cfg = settings.validate_config(obj, str(out / settings.CONFIG_FILE))
    except settings.ConfigError as e:
        raise _usage(str(e)) from None
    existing = [n for n in (settings.CONFIG_FILE, KEY_FILE) if (out / n).exists()]
    if existing and not force:
        raise _usage("%s already holds %s: use --force to replace them (and a new --generation if that node "
                     "has run: re-using a key generation repeats nonces)" % (out, ", ".join(existing)))
    try:
        secret = keys.node_secret(site_key, address, generation)
    except CryptoError as e:
        raise _usage(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    store = persist.Store(str(out))
    store.write_secret(KEY_FILE, secret)
    (out / KEY_FILE).chmod(0o600)
    store.save_config(obj)
    return cfg


def register(sub):
    import argparse

    p = sub.add_parser("provision", help="make a node's config.json and node.key from the site key",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-site-key", metavar="FILE", help="only create a new site key in FILE (mode 0600) and stop")
    p.add_argument("--site-key", metavar="FILE", help="the site key file (64 hex digits), as the transformer Pi's")
    p.add_argument("--address", type=int, help="node link address 1..247 (the bus/LoRa address)")
    p.add_argument("--node-id", help="node name, 1..32 of A-Z a-z 0-9 . _ -")
    p.add_argument("--board", help="board name (boards/NAME.json) or path")
    p.add_argument("--home-phase", choices=("A", "B", "C"), help="the phase the house is wired to")
    p.add_argument("--generation", type=int, default=0, help="key generation 0..65535 (+1 for a replaced node)")
    p.add_argument("--limit", action="append", metavar="NAME=VALUE",
                   help="node limit, e.g. overcurrent_ma=32000 (repeatable; see phasenode.settings)")
    p.add_argument("--relay", action="append", metavar="NAME=VALUE",
                   help="relay rule, e.g. dead_time_ms=3000 (repeatable; see phasenode.relay)")
    p.add_argument("--out", metavar="DIR", help="output folder (default nodes/NODE_ID)")
    p.add_argument("--force", action="store_true", help="replace an existing config.json/node.key in --out")
    p.set_defaults(func=_main)


def _main(args):
    if args.new_site_key:
        new_site_key(args.new_site_key)
        print("provision: new site key in %s (mode 0600): back it up offline, never commit it" % args.new_site_key)
        return 0
    missing = [o for o, v in (("--site-key", args.site_key), ("--address", args.address),
                              ("--node-id", args.node_id), ("--board", args.board),
                              ("--home-phase", args.home_phase)) if v is None]
    if missing:
        raise _usage("provision needs %s" % ", ".join(missing))
    from phasekit.commands.deploy import _resolve_board

    _path, board = _resolve_board(args.board)
    site_key = read_site_key(args.site_key)
    out = args.out or os.path.join("nodes", args.node_id)
    cfg = provision(site_key, out, args.node_id, args.address, board.name, args.home_phase, args.generation,
                    _pairs(args.limit, "limit"), _pairs(args.relay, "relay"), args.force)
    print("provision: %s, address %d, key generation %d, board %s, home phase %s -> %s/ (config.json, %s)"
          % (cfg.node_id, cfg.address, cfg.key_generation, board.name, args.home_phase, out, KEY_FILE))
    print("provision: next: phasekit deploy --config %s --port PORT" % out)
    return 0
