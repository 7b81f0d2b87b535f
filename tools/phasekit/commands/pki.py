"""``phasekit pki``: the site's certificates for the MQTT/TLS uplink, and the broker configuration that enforces them.

``init`` makes the site CA, ``issue`` a certificate for the broker, a
transformer Pi, a server instance, an operator or a LoRa gateway, ``revoke``
one (the CRL is rewritten), ``list`` shows them, ``mosquitto`` writes the
broker's listener, ACL, CA, CRL and key. The work is ``phasekit.pki``; this
module only parses arguments and prints. Private keys are written with mode
600 and never printed (docs/pki.md).
"""

from __future__ import annotations

import argparse
import datetime

from phasekit.commands import Subparsers
from phasekit.errors import UsageError

EXAMPLES = """examples:
  phasekit pki init pki --site feeder-12
  phasekit pki issue pki broker --dns mqtt.example.net --ip 192.0.2.10
  phasekit pki issue pki pi --site feeder-12 --transformer tx-0457
  phasekit pki issue pki server --name ops-a
  phasekit pki issue pki lora-gateway --name gw-hill
  phasekit pki list pki
  phasekit pki revoke pki pi:feeder-12:tx-0457 --reason key-compromise
  phasekit pki mosquitto pki --out broker-conf --install-dir /etc/mosquitto/phasekit
"""


def register(sub: Subparsers) -> None:
    from phasekit.pki import CA_DAYS, DEFAULT_DAYS, REASONS

    p = sub.add_parser(
        "pki",
        help="site CA and certificates for the MQTT/TLS uplink, Mosquitto config and ACL",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="pki_verb", metavar="ACTION")
    verbs.required = True

    i = verbs.add_parser("init", help="make the site CA in an empty folder")
    i.add_argument("dir", metavar="DIR", help="the PKI folder to create (mode 700)")
    i.add_argument("--site", required=True, help="the site id ([site] id of the gateways), e.g. feeder-12")
    i.add_argument("--ca-days", type=int, default=CA_DAYS, help="CA lifetime in days (default %d)" % CA_DAYS)
    i.set_defaults(func=_init)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--days",
        type=int,
        help="lifetime in days (default by role: %s)" % ", ".join("%s %d" % kv for kv in sorted(DEFAULT_DAYS.items())),
    )
    common.add_argument("--csr", metavar="FILE", help="sign this request (PEM, EC P-256) instead of making a key")
    common.add_argument("--out", metavar="FOLDER", help="write the bundle here (default DIR/issued/SERIAL)")
    s = verbs.add_parser(
        "issue",
        help="issue a certificate and key for one identity",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("dir", metavar="DIR", help="the PKI folder")
    roles = s.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    r = roles.add_parser("broker", parents=[common], help="the broker's server certificate")
    r.add_argument(
        "--dns",
        action="append",
        default=[],
        metavar="HOST",
        help="a DNS name clients connect to (repeatable; the first is the CN)",
    )
    r.add_argument("--ip", action="append", default=[], metavar="IP", help="an IP address clients connect to")
    r = roles.add_parser("pi", parents=[common], help="a transformer Pi: its own uplink topics only")
    r.add_argument("--site", help="the Pi's [site] id (default: the PKI's site)")
    r.add_argument("--transformer", required=True, help="the Pi's [site] transformer")
    for role, what in (
        ("server", "a server instance: reads the uplink, publishes commands"),
        ("operator", "an operator: publishes commands only"),
    ):
        r = roles.add_parser(role, parents=[common], help=what)
        r.add_argument("--name", required=True, help="the instance's name, e.g. ops-a")
        g = r.add_mutually_exclusive_group()
        g.add_argument(
            "--site",
            action="append",
            default=[],
            dest="sites",
            metavar="SITE",
            help="a site it serves (repeatable; default: the PKI's site)",
        )
        g.add_argument("--all-sites", action="store_true", help="every site on this broker")
    r = roles.add_parser("lora-gateway", parents=[common], help="a LoRa gateway relay: its relay topics only")
    r.add_argument("--site", help="the gateway's [site] id (default: the PKI's site)")
    r.add_argument("--name", required=True, help="the gateway's [site] transformer, e.g. gw-hill")
    s.set_defaults(func=_issue)

    v = verbs.add_parser("revoke", help="revoke a certificate (by serial) or every certificate of a CN")
    v.add_argument("dir", metavar="DIR", help="the PKI folder")
    v.add_argument("target", metavar="SERIAL|CN", help="a serial (hex, 8 digits or more) or a CN from 'pki list'")
    v.add_argument("--reason", choices=REASONS, default="unspecified")
    v.set_defaults(func=_revoke)

    t = verbs.add_parser("list", help="every certificate issued: serial, role, identity, expiry, revoked")
    t.add_argument("dir", metavar="DIR", help="the PKI folder")
    t.set_defaults(func=_list)

    m = verbs.add_parser("mosquitto", help="write the broker's listener config, ACL, CA, CRL, certificate and key")
    m.add_argument("dir", metavar="DIR", help="the PKI folder")
    m.add_argument("--out", required=True, metavar="CONFDIR", help="folder to write (files replaced)")
    m.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    m.add_argument("--bind", metavar="ADDRESS", help="listen on this address only (default: every address)")
    m.add_argument(
        "--install-dir",
        metavar="PATH",
        help="where the files will live on the broker host, as written into phasekit.conf (default: CONFDIR)",
    )
    m.add_argument("--broker", metavar="CN", help="which broker certificate, when several are valid")
    m.set_defaults(func=_mosquitto)


def _fail(e: Exception) -> UsageError:
    return UsageError(str(e))


def _init(args: argparse.Namespace) -> int:
    from phasekit.pki import Pki, PkiError

    try:
        pki = Pki.init(args.dir, args.site, ca_days=args.ca_days)
    except PkiError as e:
        raise _fail(e) from None
    print("made the CA of site %s in %s, valid until %s" % (pki.site, pki.folder, _date(pki.ca_not_after())))
    print("  CA certificate: %s (give it to every Pi, server and the broker)" % pki.ca_cert)
    print("  CA key: %s (mode 600; keep this folder offline and backed up)" % (pki.folder / "private" / "ca.key"))
    return 0


def _issue(args: argparse.Namespace) -> int:
    from phasekit.pki import ALL_SITES, Identity, Pki, PkiError

    try:
        pki = Pki(args.dir)
        if args.role == "broker":
            identity = Identity.broker(args.dns, args.ip)
        elif args.role == "pi":
            identity = Identity.pi(args.site or pki.site, args.transformer)
        elif args.role == "lora-gateway":
            identity = Identity.lora_gateway(args.site or pki.site, args.name)
        else:
            sites = [ALL_SITES] if args.all_sites else (args.sites or [pki.site])
            identity = (Identity.server if args.role == "server" else Identity.operator)(args.name, sites)
        csr = None
        if args.csr:
            try:
                with open(args.csr, "rb") as f:
                    csr = f.read(1 << 16)
            except OSError as e:
                raise PkiError("certificate request %s: cannot read (%s)" % (args.csr, type(e).__name__)) from None
        issued = pki.issue(identity, days=args.days, csr=csr, out=args.out)
    except PkiError as e:
        raise _fail(e) from None
    rec = issued.record
    print("issued %s %s, serial %s, valid until %s" % (rec.role, rec.cn, rec.serial_hex, _date(rec.not_after)))
    print("  certificate: %s" % issued.cert)
    if issued.key is not None:
        print("  key: %s (mode 600)" % issued.key)
    print("  CA: %s" % issued.ca)
    older = [r for r in pki.records() if r.cn == rec.cn and r.serial != rec.serial and r.revoked_at is None]
    if older:
        print(
            "  %d older certificate(s) of %s stay valid until revoked or expired: %s"
            % (len(older), rec.cn, ", ".join(r.serial_hex for r in older))
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from phasekit.pki import Pki, PkiError

    try:
        done = Pki(args.dir).revoke(args.target, args.reason)
    except PkiError as e:
        raise _fail(e) from None
    for r in done:
        print("revoked %s %s (%s)" % (r.serial_hex, r.cn, r.reason))
    print(
        "CRL rewritten; run 'phasekit pki mosquitto' again, install the files and restart Mosquitto "
        "(a reload refuses new connections, a restart also drops the open ones)"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    import datetime

    from phasekit.pki import Pki, PkiError

    try:
        pki = Pki(args.dir)
    except PkiError as e:
        raise _fail(e) from None
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = [("SERIAL", "ROLE", "IDENTITY (CN)", "SCOPE", "EXPIRES", "REVOKED")]
    for r in pki.records():
        # An index entry revoked without a reason (hand-edited) lists as RFC 5280's default, "unspecified".
        reason = r.reason or "unspecified"
        revoked = _date(r.revoked_at) + " " + reason if r.revoked_at else ("expired" if r.not_after <= now else "-")
        scope = ",".join(r.identity.sites) or ("-" if r.role != "broker" else r.identity.label)
        rows.append((r.serial_hex, r.role, r.cn, scope, _date(r.not_after), revoked))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("site %s, CA valid until %s, %d certificate(s)" % (pki.site, _date(pki.ca_not_after()), len(rows) - 1))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _mosquitto(args: argparse.Namespace) -> int:
    from phasekit.pki import Pki, PkiError

    try:
        files = Pki(args.dir).mosquitto(
            args.out, port=args.port, bind=args.bind, install_dir=args.install_dir, broker=args.broker
        )
    except PkiError as e:
        raise _fail(e) from None
    print("wrote the Mosquitto listener of %s (port %d) to %s:" % (files.broker.cn, args.port, files.conf.parent))
    for p in (files.conf, files.acl, files.ca, files.crl, files.cert, files.key):
        print("  %s%s" % (p.name, " (mode 600)" if p == files.key else ""))
    print("ACL users: %d (%s)" % (len(files.users), ", ".join(files.users) or "none yet"))
    return 0


def _date(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")
