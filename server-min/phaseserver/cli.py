"""The server's command line: ``python -m phaseserver VERB`` and ``phasekit server VERB`` are this.

Verbs of the core (other areas add theirs to ``VERBS``: a module with
``register(subparsers)``):

    run --config server.toml        run everything the file describes until SIGTERM/SIGINT
    check server.toml               check the file (and that the store opens); print the plan
    migrate --config server.toml    apply missing schema steps and exit
    dead-letters --config FILE      list what ingest could not store (newest first)
    stats --config FILE             ingest counters per transformer
    backup --config FILE OUT        a consistent backup (SQLite online backup; PostgreSQL pg_dump -Fc)
    restore --config FILE IN        put a backup in place (server stopped; PostgreSQL: an empty database)

The one thing to know: exit status 0 is success, 1 the job ran and failed,
2 a usage or configuration error (the message names file, line and key).
The flags of the first server (``--host``, ``--db``, ...) are gone: the
settings live in one TOML file (docs/server.md); using them says so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from phaseserver.errors import ServerError

__all__ = ("main", "build_parser", "add_verbs", "dispatch", "VERBS", "EXAMPLES")

EXAMPLES = """examples:
  phasekit server check /etc/phasekit/server.toml
  phasekit server run --config /etc/phasekit/server.toml
  python -m phaseserver run --config server.toml
  phasekit server dead-letters --config server.toml --limit 20
  phasekit server backup --config server.toml /var/backups/phasekit/server-$(date +%F).db
"""

# Other areas' verbs: modules with register(subparsers) whose parsers set_defaults(server_func=handler),
# handler(args) -> exit status, raising ServerError for a failure; one per line.
VERBS: tuple[str, ...] = (
    "phaseserver.admin",  # server-api: user, key, tenant, site, audit
)

_OLD_FLAGS = ("--host", "--db", "--ca", "--cert", "--key", "--no-tls", "--client-id", "--topic", "--port")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the server's TOML file (docs/server.md)")


def build_parser(prog: str = "phaseserver") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="phasekit operations server: ingest, storage, API, alarms (docs/server.md).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbs(parser)
    return parser


def add_verbs(parser: argparse.ArgumentParser) -> None:
    """The core's verbs (and those of ``VERBS``) on ``parser`` (phasekit's ``server`` verb reuses this)."""
    parser.set_defaults(func=dispatch)
    sub = parser.add_subparsers(dest="server_verb", metavar="VERB")
    sub.required = True
    run = sub.add_parser("run", help="run the server until SIGTERM or SIGINT", epilog=EXAMPLES)
    _config_arg(run)
    run.set_defaults(server_func=_run)
    check = sub.add_parser("check", help="check a config file and that its store opens; print the plan")
    check.add_argument("config", metavar="CONFIG")
    check.add_argument("--no-connect", action="store_true", help="check the file only, open nothing")
    check.set_defaults(server_func=_check)
    mig = sub.add_parser("migrate", help="apply the missing schema steps and exit")
    _config_arg(mig)
    mig.set_defaults(server_func=_migrate)
    dl = sub.add_parser("dead-letters", help="list what ingest could not store, newest first")
    _config_arg(dl)
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--tenant", default=None, help="only this tenant's (default: all)")
    dl.add_argument("--json", action="store_true", help="one JSON object per line")
    dl.set_defaults(server_func=_dead_letters)
    st = sub.add_parser("stats", help="ingest counters per transformer")
    _config_arg(st)
    st.set_defaults(server_func=_stats)
    bk = sub.add_parser("backup", help="a consistent backup of the store into OUT")
    _config_arg(bk)
    bk.add_argument("out", metavar="OUT")
    bk.set_defaults(server_func=_backup)
    rs = sub.add_parser("restore", help="put the backup IN in place of the store (server stopped)")
    _config_arg(rs)
    rs.add_argument("backup", metavar="IN")
    rs.set_defaults(server_func=_restore)
    for name in VERBS:
        importlib.import_module(name).register(sub)


def _load(path: str) -> Any:
    from phaseserver import config

    return config.load(path)


def _run(args: argparse.Namespace) -> int:
    from phaseserver.app import run_forever

    return run_forever(_load(args.config))


def _check(args: argparse.Namespace) -> int:
    from phaseserver.store import open_store

    cfg = _load(args.config)
    st, ing, srv = cfg.table("storage"), cfg.table("ingest"), cfg.table("server")
    lines = ["config %s: ok" % cfg.path]
    if st["engine"] == "sqlite":
        lines.append("storage: SQLite %s" % cfg.resolve(st["path"]))
    else:
        lines.append("storage: PostgreSQL (%s)" % st["dsn"].split("password")[0].strip())
    lines.append(
        "retention: raw %d days, hourly %s, daily %s"
        % (
            st["retention_raw_days"],
            "%d days" % st["retention_hourly_days"] if st["retention_hourly_days"] else "for ever",
            "%d days" % st["retention_daily_days"] if st["retention_daily_days"] else "for ever",
        )
    )
    if ing["source"] == "none":
        lines.append("ingest: none")
    else:
        for key in ("ca", "cert", "key"):
            if ing["tls"] and ing[key] and not cfg.resolve(ing[key]).is_file():
                raise ServerError("%s: %s does not exist" % (cfg.where("ingest", key), cfg.resolve(ing[key])))
        shared = " shared group %s" % ing["shared_group"] if ing["shared_group"] else ""
        lines.append(
            "ingest: %s %s:%d%s as %s%s"
            % (ing["source"], ing["host"], ing["port"], " (TLS)" if ing["tls"] else "", ing["client_id"], shared)
        )
    lines.append("http: %s" % ("%s:%d" % (srv["http_host"], srv["http_port"]) if srv["http_port"] else "off"))
    if not args.no_connect:
        store = open_store(cfg, migrate=False)
        try:
            from phaseserver.store.migrate import applied, migrations

            done = applied(store.db)
            missing = [m.version for m in migrations(store.engine) if m.version not in done]
            lines.append(
                "store: reachable; schema steps applied %d%s"
                % (len(done), ", missing %s (applied at start)" % missing if missing else "")
            )
        finally:
            store.close()
    print("\n".join(lines))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from phaseserver.store import open_store

    store = open_store(_load(args.config), migrate=False)
    try:
        done = store.migrate()
    finally:
        store.close()
    print("applied: %s" % (", ".join("%04d" % v for v in done) if done else "nothing (up to date)"))
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from phaseserver.store import open_store

    store = open_store(_load(args.config))
    try:
        rows = store.dead_letters(args.tenant, limit=max(1, min(args.limit, 10000)))
    finally:
        store.close()
    for d in rows:
        if args.json:
            out = d._asdict()
            out["payload_prefix"] = d.payload_prefix.hex()
            print(json.dumps(out))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.received_s))
            print(
                "#%d %s %s %s (%d bytes): %s | %s"
                % (d.id, when, d.source, d.topic, d.payload_len, d.reason, d.payload_prefix[:32].hex())
            )
    if not rows and not args.json:
        print("no dead letters")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from phaseserver.store import open_store

    store = open_store(_load(args.config))
    try:
        fleet = store.fleet(None)
        print("%-20s %-20s %-8s %10s %10s %10s %8s" % ("site", "transformer", "status", "records", "duplicates",
                                                       "invalid", "nodes"))  # fmt: skip
        for row in fleet:
            c = store.counters(None, row.site, row.transformer)
            print(
                "%-20s %-20s %-8s %10d %10d %10d %8d"
                % (
                    row.site[:20],
                    row.transformer[:20],
                    row.status or "-",
                    c.get("records", 0),
                    c.get("duplicates", 0),
                    c.get("invalid_records", 0) + c.get("invalid_batches", 0),
                    row.nodes,
                )
            )
        unknown = store.counters(None, "", "")
        if unknown:
            print("input naming no known transformer: %s" % unknown)
    finally:
        store.close()
    return 0


def _backup(args: argparse.Namespace) -> int:
    from phaseserver.store import open_store

    store = open_store(_load(args.config))
    try:
        store.backup(args.out)
    finally:
        store.close()
    print("backup written: %s" % args.out)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from phaseserver import backup

    cfg = _load(args.config)
    st = cfg.table("storage")
    if st["engine"] == "sqlite":
        backup.sqlite_restore(args.backup, cfg.resolve(st["path"]))
    else:
        from phaseserver.store import open_database

        db = open_database(cfg)
        try:
            if db.scalar("SELECT to_regclass('schema_migration')") is not None:
                raise ServerError("restore: the database of [storage] dsn is not empty; restore into a new one")
        finally:
            db.close()
        dsn = st["dsn"]
        password = cfg.secret("storage", "password_file")
        if password:
            dsn = "%s password='%s'" % (dsn, password.replace("\\", "\\\\").replace("'", "\\'"))
        backup.pg_restore(dsn, args.backup)
    print("restored from %s" % args.backup)
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen verb; a ``ServerError`` is printed and becomes exit status 2 (configuration) or 1."""
    from phaseserver.errors import ConfigError

    try:
        return int(args.server_func(args) or 0)
    except ConfigError as e:
        print("%s: error: %s" % (args.prog_name, e), file=sys.stderr)
        return 2
    except ServerError as e:
        print("%s: error: %s" % (args.prog_name, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None, prog: str = "phaseserver") -> int:
    """Run one verb; returns the exit status (errors are printed, never raised)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _OLD_FLAGS:
        print(
            "%s: error: the command line flags %s are gone; the settings are one TOML file now. Write a\n"
            "server.toml ([ingest] host, port, ca, cert, key, client_id; [storage] path) and run\n"
            "  %s run --config server.toml\n(docs/server.md lists every key)" % (prog, argv[0], prog),
            file=sys.stderr,
        )
        return 2
    args = build_parser(prog).parse_args(argv)
    args.prog_name = prog
    return dispatch(args)
