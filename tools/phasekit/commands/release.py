"""``phasekit release key|build|sign|show``: the release key and signed firmware bundles (docs/ota.md).

The library is ``phasekit.release``; the bundle format ``phasecore.ota``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from phasekit.commands import Handler, Subparsers

if TYPE_CHECKING:
    from phasecore.ota import Head

EXAMPLES = """examples:
  phasekit release key secrets/release.key
  phasekit release build dist/phasenode-0.2.0.pkb --version 0.2.0 --min-version 0.1.0
  phasekit release sign dist/phasenode-0.2.0.pkb --key secrets/release.key
  phasekit release show dist/phasenode-0.2.0.pkb --release-key secrets/release.key.pub
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "release",
        help="release key, firmware bundles and their signature",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="release_verb", metavar="VERB")
    verbs.required = True
    k = verbs.add_parser("key", help="make the Ed25519 release key pair (KEY mode 0600, KEY.pub the public key)")
    k.add_argument("key", metavar="KEY", help="private key file to create (kept off the Pi; never overwritten)")
    k.set_defaults(func=_guarded(_key))
    b = verbs.add_parser("build", help="compile the node firmware into an unsigned bundle")
    b.add_argument("out", metavar="BUNDLE", help="bundle file to write")
    b.add_argument("--version", required=True, help="the bundle's version, MAJOR.MINOR.PATCH")
    b.add_argument(
        "--min-version",
        help="the oldest running version it may replace, and the floor for later updates "
        "(default: the checkout's phasenode.version.MIN_VERSION)",
    )
    b.add_argument("--target", choices=("esp32", "host"), default="esp32", help="chips, or the virtual board")
    b.add_argument("--time", type=int, help="build time to record (Unix seconds; default SOURCE_DATE_EPOCH or none)")
    b.set_defaults(func=_guarded(_build))
    s = verbs.add_parser("sign", help="sign a bundle's manifest with the release key")
    s.add_argument("bundle", metavar="BUNDLE")
    s.add_argument("--key", required=True, metavar="KEY", help="the release private key")
    s.add_argument("--out", metavar="FILE", help="write the signed bundle here (default: in place)")
    s.set_defaults(func=_guarded(_sign))
    v = verbs.add_parser("show", help="describe a bundle and check it as a node would")
    v.add_argument("bundle", metavar="BUNDLE")
    v.add_argument("--release-key", metavar="KEY.pub|HEX", help="check the signature against this public key")
    v.set_defaults(func=_guarded(_show))


def _guarded(fn: Handler) -> Handler:
    # A key or bundle that cannot be made or trusted: its message and exit 1, no traceback.
    def run(args: argparse.Namespace) -> int:
        from phasekit.release import ReleaseError

        try:
            return fn(args)
        except ReleaseError as e:
            print("phasekit release: %s" % e, file=sys.stderr)
            return 1

    return run


def _key(args: argparse.Namespace) -> int:
    from phasecore import ota
    from phasekit import release

    public = release.generate_key(args.key)
    print("release: private key in %s (mode 0600): keep it off the Pi, back it up offline" % args.key)
    print("release: public key %s (in %s.pub), key id %s" % (public.hex(), args.key, ota.key_id(public).hex()))
    print("release: provision nodes with: phasekit provision ... --release-key %s.pub" % args.key)
    return 0


def _print(head: Head) -> None:
    from phasekit import release

    for name, value in release.describe(head):
        print("  %-24s %s" % (name, value))


def _build(args: argparse.Namespace) -> int:
    from phasekit import release

    head = release.build(args.out, args.version, args.min_version, args.target, args.time)
    print("release: built %s (unsigned)" % args.out)
    _print(head)
    return 0


def _sign(args: argparse.Namespace) -> int:
    from phasekit import release

    head = release.sign(args.bundle, args.key, args.out)
    print("release: signed %s" % (args.out or args.bundle))
    _print(head)
    return 0


def _show(args: argparse.Namespace) -> int:
    from phasecore.codes import OTA_REASON_NAMES
    from phasekit import release

    key = release.read_public_key(args.release_key) if args.release_key else None
    c = release.check(args.bundle, key)
    print("bundle %s" % args.bundle)
    _print(c.head)
    if c.problem is not None:
        print("  %-24s REFUSED: %s (%s)" % ("check", c.problem, OTA_REASON_NAMES.get(c.problem.reason)))
        return 1
    print(
        "  %-24s %s" % ("check", "signature and every file verified" if key else "every file verified (no key given)")
    )
    return 0
